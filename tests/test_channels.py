"""GA4 default channel group: expected groups worked out by hand from Google's published rules
(../shared/REFERENCES.md), including the cases where rule order decides; Google's site lists from its
source-category sheet (closedloop_nb/rules/ga4_source_categories.csv)."""

from __future__ import annotations

import pandas as pd
import pytest

from closedloop_nb.channels import UNASSIGNED, ChannelRules, RulesError, assign_channels, group_channels

# (source, medium, campaign, click id type) -> group, and why
GA4_CASES = [
    ("(direct)", "(none)", None, None, "Direct"),
    ("(direct)", "(not set)", None, None, "Direct"),
    # rule 2 comes before Paid Search
    ("google", "cpc", "summer_cross-network", None, "Cross-network"),
    # campaign matches the shopping regex, medium is paid
    ("google", "cpc", "spring_shopping", None, "Paid Shopping"),
    ("amazon", "ppc", None, None, "Paid Shopping"),
    ("google", "cpc", "brand", None, "Paid Search"),
    ("bing", "paid_search", None, None, "Paid Search"),
    # cpm matches the paid regex (.*cp.*), and Paid Search (rule 4) precedes Display (rule 7)
    ("google", "cpm", None, None, "Paid Search"),
    ("facebook", "cpc", None, None, "Paid Social"),
    ("linkedin", "paidsocial", None, None, "Paid Social"),
    ("youtube", "cpv", None, None, "Paid Video"),
    ("google", "display", None, None, "Display"),
    ("criteo", "banner", None, None, "Display"),
    ("criteo", "cpm", None, None, "Display"),
    ("taboola", "retargeting", None, None, "Paid Other"),
    ("ebay", "referral", None, None, "Organic Shopping"),
    # "_shop": the character before "shop" is not a letter, so the shopping regex matches (rule 9 < 14)
    ("newsletter", "email", "black_friday_shop", None, "Organic Shopping"),
    # "workshop": 'k' before "shop" is a letter other than e, so no shopping match
    ("newsletter", "email", "workshop_invite", None, "Email"),
    ("t.co", "referral", None, None, "Organic Social"),
    ("forum", "social-network", None, None, "Organic Social"),
    ("vimeo", "referral", None, None, "Organic Video"),
    ("partner", "video", None, None, "Organic Video"),
    ("google", "organic", None, None, "Organic Search"),
    ("somesearch", "organic", None, None, "Organic Search"),
    ("partner.com", "referral", None, None, "Referral"),
    ("partner.com", "app", None, None, "Referral"),
    ("newsletter", "email", None, None, "Email"),
    ("e-mail", "newsletter", None, None, "Email"),
    ("awin", "affiliate", None, None, "Affiliates"),
    ("spotify", "audio", None, None, "Audio"),
    ("twilio", "sms", None, None, "SMS"),
    ("app", "web-push", None, None, "Mobile Push Notifications"),
    ("firebase", "in_app", None, None, "Mobile Push Notifications"),
    ("foo", "bar", None, None, UNASSIGNED),
    # matching ignores case
    ("Google", "CPC", None, None, "Paid Search"),
    # Google's rules do not read click ids: a gclid on a direct touch leaves it Direct
    ("(direct)", "(none)", None, "gclid", "Direct"),
    ("m.facebook.com", "referral", None, "fbclid", "Organic Social"),
]


# The click-id rule set (ga4-click-ids): click ids mark paid touches whatever the UTM medium says
CLICK_ID_CASES = [
    ("(direct)", "(none)", None, "gclid", "Paid Search"),
    ("google", "organic", None, "gclid", "Paid Search"),
    ("(direct)", "(none)", None, "wbraid", "Paid Search"),
    ("(direct)", "(none)", None, "msclkid", "Paid Search"),
    ("linkedin.com", "referral", None, "li_fat_id", "Paid Social"),
    # fbclid is left out of the set (Facebook adds it to organic link clicks too)
    ("m.facebook.com", "referral", None, "fbclid", "Organic Social"),
    ("google", "cpc", "x_cross-network", "gclid", "Cross-network"),
    # a display medium is already paid: the gclid does not turn it into search
    ("google", "display", None, "gclid", "Display"),
    # dclid: Display & Video 360's click id, medium cpm -> Display (no search site as source)
    ("(direct)", "(none)", None, "dclid", "Display"),
    # without a click id the set is Google's
    ("(direct)", "(none)", None, None, "Direct"),
]

# The six (source, medium) pairs issue 19 found in the wrong group with the old short site lists; each
# source is in Google's source-category list (rules/ga4_source_categories.csv) under the category named.
ISSUE_PAIRS = [
    ("uk.search.yahoo.com", "cpc", None, None, "Paid Search"),      # SEARCH, medium paid
    ("cn.bing.com", "referral", None, None, "Organic Search"),       # SEARCH: rule 12 before Referral
    ("news.ycombinator.com", "referral", None, None, "Organic Social"),  # SOCIAL
    ("m.facebook.com", "referral", None, "fbclid", "Organic Social"),    # SOCIAL; click ids not read
    ("search.aol.com", "referral", None, None, "Organic Search"),     # SEARCH
    ("shopping.yahoo.com", "referral", None, None, "Organic Shopping"),  # SHOPPING: rule 9
]

# 50 (source, medium, campaign) triples and the channel Google's published definition gives them
# (support.google.com/analytics/answer/9756891; rules in the order of ../shared/REFERENCES.md, rule
# numbers below), with site-list membership from Google's source-category list. "paid" is the regex
# ^(.*cp.*|ppc|retargeting|paid.*)$ on the medium; "shop" is ^(.*(([^a-df-z]|^)shop|shopping).*)$ on
# the campaign.
GOOGLE_TABLE = [
    ("(direct)", "(none)", None, "Direct"),                       # 1
    ("(direct)", "(not set)", None, "Direct"),                    # 1
    ("(direct)", "referral", None, "Referral"),                   # not 1 (medium), 13
    ("google", "cpc", "brand_cross-network", "Cross-network"),    # 2 before 4
    ("(direct)", "(none)", "x_cross-network", "Direct"),          # 1 before 2
    ("amazon.com", "cpc", None, "Paid Shopping"),                 # 3: SHOPPING list, paid
    ("google", "cpc", "summer_shopping", "Paid Shopping"),        # 3: campaign contains shopping
    ("google", "ppc", "shop_spring", "Paid Shopping"),            # 3: shop at the start
    ("google", "cpc", "workshop_leads", "Paid Search"),           # 'k' before shop is in a-d/f-z: 4
    ("google", "cpc", "eshop_sale", "Paid Shopping"),             # 'e' before shop is allowed: 3
    ("uk.search.yahoo.com", "cpc", None, "Paid Search"),          # 4: SEARCH list, paid
    ("Bing", "PaidSearch", None, "Paid Search"),                  # 4, case ignored, paid.*
    ("duckduckgo", "retargeting", None, "Paid Search"),           # 4: retargeting is paid
    ("facebook.com", "paid_social", None, "Paid Social"),         # 5: SOCIAL list, paid.*
    ("linkedin", "cpc", None, "Paid Social"),                     # 5
    ("t.co", "ppc", None, "Paid Social"),                         # 5
    ("youtube", "cpv", None, "Paid Video"),                       # 6: VIDEO list, .*cp.*
    ("vimeo.com", "paid_video", None, "Paid Video"),              # 6
    ("google", "display", None, "Display"),                       # display is not paid: 7
    ("criteo", "banner", None, "Display"),                        # 7
    ("criteo", "cpm", None, "Display"),                           # paid but no listed site; 7 before 8
    ("google", "cpm", None, "Paid Search"),                       # cpm is paid; 4 before 7
    ("taboola", "cpc", None, "Paid Other"),                       # 8
    ("newsletter", "paid_email", None, "Paid Other"),             # 8 before Email (14)
    ("ebay.co.uk", "referral", None, "Organic Shopping"),         # 9: SHOPPING list
    ("newsletter", "email", "black-friday-shop", "Organic Shopping"),  # 9: '-' before shop; 9 before 14
    ("Google Shopping", "organic", None, "Organic Shopping"),     # 9 before 12
    ("news.ycombinator.com", "referral", None, "Organic Social"),  # 10: SOCIAL list
    ("instagram.com", "referral", None, "Organic Social"),        # 10
    ("partner-forum.com", "social-media", None, "Organic Social"),  # 10: medium
    ("reddit", "sm", None, "Organic Social"),                     # 10
    ("youtube.com", "referral", None, "Organic Video"),           # 11: VIDEO list
    ("webinar-host.com", "video_embed", None, "Organic Video"),   # 11: medium contains video
    ("cn.bing.com", "referral", None, "Organic Search"),          # 12: SEARCH list, before 13
    ("google", "organic", None, "Organic Search"),                # 12
    ("my-search.com", "organic", None, "Organic Search"),         # 12: medium organic
    ("search.aol.com", "referral", None, "Organic Search"),       # 12
    ("g2.com", "referral", None, "Referral"),                     # 13
    ("partner.example", "link", None, "Referral"),                # 13
    ("launcher", "app", None, "Referral"),                        # 13
    ("newsletter", "email", None, "Email"),                       # 14: medium
    ("email", "newsletter", None, "Email"),                       # 14: source
    ("crm", "e_mail", None, "Email"),                             # 14
    ("awin", "affiliate", None, "Affiliates"),                    # 15
    ("spotify", "audio", None, "Audio"),                          # 16
    ("twilio", "sms", None, "SMS"),                               # 17: medium
    ("sms", "text", None, "SMS"),                                 # 17: source
    ("onesignal", "web-push", None, "Mobile Push Notifications"),  # 18: ends with push
    ("firebase", "in_app", None, "Mobile Push Notifications"),    # 18: source firebase
    ("q3_promo", "blast", None, UNASSIGNED),                      # no rule
]


def _frame(cases):
    return pd.DataFrame(
        [c[:4] for c in cases], columns=["source", "medium", "campaign", "click_id_type"]
    )


@pytest.mark.parametrize("source,medium,campaign,click,expected", GA4_CASES)
def test_ga4_default_channel_group(source, medium, campaign, click, expected):
    df = _frame([(source, medium, campaign, click)])
    assert group_channels(df).channel.iloc[0] == expected


def test_all_cases_at_once_match_one_by_one():
    """Evaluating many distinct combinations together gives the same answers as one at a time."""
    result = group_channels(_frame(GA4_CASES))
    assert result.channel.astype(str).tolist() == [c[4] for c in GA4_CASES]


def test_unassigned_touches_are_counted_with_their_combinations():
    df = _frame([("foo", "bar", None, None)] * 3 + [("google", "cpc", None, None)])
    result = group_channels(df)
    assert result.n_unassigned == 3
    assert result.unassigned_combos.iloc[0][["source", "medium", "touches"]].tolist() == ["foo", "bar", 3]
    counts = result.counts.set_index("channel")
    assert counts.loc[UNASSIGNED, "touches"] == 3
    assert counts["touches"].sum() == 4


def test_google_table_of_fifty_triples():
    assert len(GOOGLE_TABLE) == 50
    df = pd.DataFrame([c[:3] for c in GOOGLE_TABLE], columns=["source", "medium", "campaign"])
    got = group_channels(df).channel.astype(str).tolist()
    wrong = [(c, g) for c, g in zip(GOOGLE_TABLE, got, strict=True) if c[3] != g]
    assert wrong == []


@pytest.mark.parametrize("source,medium,campaign,click,expected", ISSUE_PAIRS)
def test_pairs_the_short_lists_got_wrong(source, medium, campaign, click, expected):
    assert group_channels(_frame([(source, medium, campaign, click)])).channel.iloc[0] == expected


def test_the_shipped_list_is_googles_whole_list():
    rules = ChannelRules.default()
    names = ("search_sites", "social_sites", "shopping_sites", "video_sites")
    sizes = {k: len(rules.lists[k]) for k in names}
    # counts of Google's sheet as /work/shared/data/README.md records them
    assert sizes == {"search_sites": 129, "social_sites": 592, "shopping_sites": 52, "video_sites": 46}
    assert rules.click_ids == {}


@pytest.mark.parametrize("source,medium,campaign,click,expected", CLICK_ID_CASES)
def test_click_id_rule_set_extends_the_default(source, medium, campaign, click, expected):
    rules = ChannelRules.named("ga4-click-ids")
    assert rules.extends == "ga4-default" and rules.rules == ChannelRules.default().rules
    assert group_channels(_frame([(source, medium, campaign, click)]), rules).channel.iloc[0] == expected


def test_a_users_file_can_extend_the_click_id_set_and_replace_the_site_list(tmp_path):
    (tmp_path / "sites.csv").write_text("source,source_category\nmy-engine.example,SOURCE_CATEGORY_SEARCH\n")
    path = tmp_path / "rules.yaml"
    path.write_text("extends: ga4-click-ids\nsource_categories: sites.csv\n"
                    "click_ids: {fbclid: {source: facebook, medium: paid_social}}\n")
    rules = ChannelRules.from_yaml(path)
    df = _frame([("my-engine.example", "cpc", None, None), ("google", "cpc", None, None),
                 ("(direct)", "(none)", None, "fbclid")])
    # google is no longer a search site in the user's list: Paid Other; fbclid now marks paid (facebook
    # is not in the user's social list either, so Paid Other too)
    assert group_channels(df, rules).channel.astype(str).tolist() == ["Paid Search", "Paid Other",
                                                                     "Paid Other"]


def test_bad_source_category_file_is_refused_naming_the_row(tmp_path):
    path = tmp_path / "sites.csv"
    path.write_text("source,source_category\nexample.com,SOURCE_CATEGORY_NEWS\n")
    with pytest.raises(RulesError, match="row 1"):
        ChannelRules.default(source_categories=path)


def test_click_id_corrections_are_counted():
    df = _frame([("(direct)", "(none)", None, "gclid"), ("google", "cpc", None, "gclid")])
    counts = group_channels(df, ChannelRules.named("ga4-click-ids")).counts.set_index("channel")
    assert counts.loc["Paid Search", "touches"] == 2
    assert counts.loc["Paid Search", "via_click_id"] == 1


def test_missing_source_and_medium_are_not_set():
    df = pd.DataFrame({"source": [None], "medium": [None]})
    assert group_channels(df).channel.iloc[0] == UNASSIGNED


def test_assign_channels_returns_a_copy_with_the_column():
    df = _frame([("google", "organic", None, None)])
    out = assign_channels(df)
    assert out["channel"].tolist() == ["Organic Search"] and "channel" not in df


def test_override_file_extends_the_defaults(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "extends: ga4-default\n"
        "lists: {partners: [partner-agency.co.uk, reseller.com]}\n"
        "rules:\n"
        "  - channel: Partners\n"
        "    all: [{field: source, in_list: partners}]\n"
    )
    custom = ChannelRules.from_yaml(rules)
    df = _frame([("partner-agency.co.uk", "referral", None, None), ("g2.com", "referral", None, None)])
    assert group_channels(df, custom).channel.astype(str).tolist() == ["Partners", "Referral"]
    assert custom.channels[0] == "Partners" and "Referral" in custom.channels


def test_override_file_can_replace_the_defaults(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - {channel: Paid, field: medium, matches: '^(cpc|ppc)$'}\n"
        "  - {channel: Everything else, not: {field: medium, equals: cpc}}\n"
    )
    out = group_channels(_frame([("google", "cpc", None, None), ("x", "email", None, None)]),
                         ChannelRules.from_yaml(rules))
    assert out.channel.astype(str).tolist() == ["Paid", "Everything else"]


@pytest.mark.parametrize(
    "rule,message",
    [
        ("{channel: X, field: medium, resembles: cpc}", "rule 1 (X): unknown operator 'resembles'"),
        ("{channel: X, field: referrer, equals: a}", "unknown field 'referrer'"),
        ("{channel: X, field: source, in_list: nope}", "unknown list 'nope'"),
        ("{channel: X, field: source, matches: '('}", "bad regular expression"),
        ("{field: source, equals: a}", "rule 1 has no 'channel'"),
    ],
)
def test_bad_rules_fail_when_loaded_naming_the_rule(tmp_path, rule, message):
    path = tmp_path / "rules.yaml"
    path.write_text(f"rules:\n  - {rule}\n")
    with pytest.raises(RulesError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ChannelRules.from_yaml(path)


def test_rules_reproduce_the_generators_intended_channels(sample):
    """The synthetic data draws touches from per-channel templates (including paid clicks whose UTM
    tags were lost): the rules must put every touch back in the channel it was drawn for."""
    touches = sample.tables["touchpoints"]
    got = group_channels(touches, ChannelRules.named("ga4-click-ids")).channel.astype(str)
    assert (got.to_numpy() == touches["channel"].astype(str).to_numpy()).all()

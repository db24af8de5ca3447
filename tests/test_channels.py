"""GA4 default channel group: expected groups worked out by hand from Google's published rules
(../shared/REFERENCES.md), including the cases where rule order decides."""

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
    # click ids mark paid touches whatever the UTM medium says
    ("(direct)", "(none)", None, "gclid", "Paid Search"),
    ("google", "organic", None, "gclid", "Paid Search"),
    ("(direct)", "(none)", None, "msclkid", "Paid Search"),
    ("facebook", "referral", None, "fbclid", "Paid Social"),
    ("google", "cpc", "x_cross-network", "gclid", "Cross-network"),
    # a display medium is already paid: the gclid does not turn it into search
    ("google", "display", None, "gclid", "Display"),
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


def test_click_id_corrections_are_counted():
    df = _frame([("(direct)", "(none)", None, "gclid"), ("google", "cpc", None, "gclid")])
    counts = group_channels(df).counts.set_index("channel")
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
    got = group_channels(touches).channel.astype(str)
    assert (got.to_numpy() == touches["channel"].astype(str).to_numpy()).all()

"""Journeys derived from one wide build equal a fresh build with the same settings: path table,
reconciliation and every touch, on the sample and on hand-made journeys built for the edge cases
(a touch exactly at the lookback bound, journeys emptied by dropping direct, repeats that meet only
once direct is dropped, non-converting journeys, a visitor matched to people of two segments)."""

from __future__ import annotations

import importlib

import pandas as pd
import pytest

from closedloop_nb.journey_derive import wide_journeys
from closedloop_nb.journeys import build_journeys

ex = importlib.import_module("closedloop_nb.explorer")


def _touches(j) -> pd.DataFrame:
    t = j.touches.sort_values(["journey_id", "ts", "touch_id"]).reset_index(drop=True)
    return t[[c for c in t.columns if c != "source_medium"]]


def _assert_same(derived, fresh) -> None:
    pd.testing.assert_frame_equal(derived.paths, fresh.paths)
    pd.testing.assert_frame_equal(derived.reconciliation, fresh.reconciliation)
    a, b = _touches(derived), _touches(fresh)
    pd.testing.assert_frame_equal(a[b.columns], b)


def _fresh(tables, conversion, s: ex.Settings):
    """A build on the tables as the explorer narrows them for the setting (its level column too)."""
    return build_journeys(ex._narrowed(tables, s, ex.Cache(), build=True), conversion=conversion,
                          lookback_days=s.lookback_days, level=s.level, drop_direct=s.drop_direct,
                          collapse_repeats=s.collapse_repeats, progress=False)


@pytest.fixture(scope="module")
def tables(sample):
    return sample.tables


@pytest.mark.parametrize("conversion", ["lead", "opportunity"])
@pytest.mark.parametrize("options", [
    {"lookback_days": 30, "drop_direct": True},
    {"lookback_days": 7, "drop_direct": True, "collapse_repeats": True},
    {"level": "campaign", "collapse_repeats": True},
    {"level": "source_medium", "lookback_days": 365},
])
def test_a_derived_setting_is_the_fresh_build_on_the_sample(tables, conversion, options):
    wide = wide_journeys(tables, conversion, lookback_days=365)
    s = ex.Settings(**options)
    derived = wide.derive(lookback_days=s.lookback_days, level=s.level, drop_direct=s.drop_direct,
                          collapse_repeats=s.collapse_repeats)
    _assert_same(derived, _fresh(tables, conversion, s))


@pytest.mark.parametrize("narrowing", [
    {"segment": "SMB", "level": "keyword"},
    {"date_from": "2024-03-01", "date_to": "2024-08-31", "drop_direct": True, "collapse_repeats": True},
])
def test_a_segment_or_date_range_is_the_build_on_the_narrowed_tables(tables, narrowing):
    cache = ex.Cache()
    s = ex.Settings(**narrowing)
    for conversion in ("lead", "opportunity", "order"):
        _assert_same(ex._journeys(tables, s, cache, conversion), _fresh(tables, conversion, s))
    # the sample has visitors matched to people on both sides of the narrowing: their people's
    # journeys were rebuilt, the case the derivation cannot filter its way to
    people = cache.credits[("people", s.date_from, s.date_to, s.segment, "lead", ex.LOOKBACK_MAX)][0]
    assert people.rebuilt is not None and len(people.rebuilt.people) >= 1


def _ts(day: float) -> pd.Timestamp:
    return pd.Timestamp("2024-06-01", tz="UTC") + pd.Timedelta(days=day)


@pytest.fixture
def hand() -> dict[str, pd.DataFrame]:
    """Four people and two anonymous visitors; p1's lead at day 0, p2's at day 0, p4's at day 10.

    * p1: Email at exactly -30 d (on the bound), Email 1 µs before it (outside), then Paid, Direct,
      Paid (repeats only once direct goes), Direct after the lead (after the conversion).
    * p2: Direct only in the last 30 days, Organic 40 days before: emptied by a 30-day lookback
      with direct dropped.
    * p3: a matched visitor with no lead (non-converting, its touches older than any lookback).
    * p4 (Enterprise) shares visitor v5 with p1 (SMB), matched to p1 first: under the Enterprise
      segment v5 is p4's.
    * v8, v9: anonymous, with repeats around a direct touch, one touch long before.
    """
    rows = [("t01", "v1", -30, "Email"), ("t02", "v1", -30.0000001, "Email"),
            ("t03", "v1", -5, "Paid Search"),
            ("t04", "v1", -4, "Direct"), ("t05", "v1", -3, "Paid Search"), ("t06", "v1", 2, "Direct"),
            ("t07", "v2", -20, "Direct"), ("t08", "v2", -10, "Direct"), ("t09", "v2", -40, "Organic Search"),
            ("t10", "v3", -400, "Referral"), ("t11", "v3", -1, "Referral"),
            ("t12", "v5", -2, "Social"), ("t13", "v5", 8, "Social"), ("t14", "v6", 9, "Email"),
            ("t15", "v8", -300, "Display"), ("t16", "v8", -2, "Display"), ("t17", "v8", -1, "Direct"),
            ("t18", "v8", 0, "Display"), ("t19", "v9", 1, "Direct")]
    tp = pd.DataFrame(rows, columns=["touch_id", "visitor_id", "day", "channel"])
    tp["timestamp"] = [_ts(d) for d in tp.pop("day")]
    tp["source"] = tp["channel"].str.lower()
    tp["medium"] = ["cpc" if c == "Paid Search" else None for c in tp["channel"]]
    tp["campaign"] = ["spring" if c in ("Email", "Social") else None for c in tp["channel"]]
    tp["keyword"] = None
    identities = pd.DataFrame({"visitor_id": ["v1", "v2", "v3", "v5", "v5", "v6"],
                               "person_id": ["p1", "p2", "p3", "p1", "p4", "p4"],
                               "matched_at": [_ts(d) for d in (0, 0, -1, -2, 5, 9)]})
    leads = pd.DataFrame({"person_id": ["p1", "p2", "p4"], "created_at": [_ts(0), _ts(0), _ts(10)],
                          "segment": ["SMB", "SMB", "Enterprise"]})
    deals = pd.DataFrame({"deal_id": ["d1"], "person_id": ["p4"], "created_at": [_ts(10)], "amount": [500.0],
                          "stage": ["open"], "won": [False], "closed_at": [pd.NaT]})
    deals["closed_at"] = deals["closed_at"].dt.tz_localize("UTC")
    return {"touchpoints": tp, "identities": identities, "leads": leads, "deals": deals}


@pytest.mark.parametrize("conversion", ["lead", "opportunity"])
@pytest.mark.parametrize("options", [
    {"lookback_days": 30},
    {"lookback_days": 30, "drop_direct": True},
    {"lookback_days": 30, "drop_direct": True, "collapse_repeats": True},
    {"lookback_days": 1, "collapse_repeats": True, "level": "campaign"},
    {"lookback_days": 30, "drop_direct": True, "segment": "Enterprise"},
    {"lookback_days": 365, "collapse_repeats": True, "segment": "SMB", "level": "source_medium"},
    {"lookback_days": 30, "date_from": "2024-06-05", "drop_direct": True, "collapse_repeats": True},
    # v8's anonymous journey (-300, -2, -1 direct, 0 days) cut by the date bound: -1 and 0 stay
    {"lookback_days": 30, "date_from": "2024-05-31", "collapse_repeats": True},
    {"lookback_days": 30, "date_from": "2024-05-31", "drop_direct": True, "level": "campaign"},
    {"lookback_days": 30, "date_to": "2024-06-01", "segment": "SMB"},  # v9 (06-02 00:00) outside
])
def test_hand_made_edge_cases_derive_as_they_build(hand, conversion, options):
    s = ex.Settings(**options)
    _assert_same(ex._journeys(hand, s, ex.Cache(), conversion), _fresh(hand, conversion, s))


def test_hand_made_edge_cases_by_hand(hand):
    cache = ex.Cache()
    s = ex.Settings(lookback_days=30, drop_direct=True, collapse_repeats=True)
    j = ex._journeys(hand, s, cache, "lead")
    paths = j.paths.set_index("path")
    # p1: the Email on the bound stays, the one a microsecond older goes; Paid, (Direct), Paid is one
    # Paid; then Social on v5, p1's (matched to p1 first)
    assert paths.loc["Email > Paid Search > Social", "total_conversions"] == 1
    assert paths.loc["Email", "total_conversions"] == 1  # p4: v6's Email (v5's later touch is p1's)
    # p2: only direct in the window, dropped: no journey, counted as unattributed in the window
    recon = j.reconciliation.set_index(["item", "bucket"])["n"]
    assert recon[("conversions", "in")] == 3
    assert recon[("conversions", "with a journey")] == 2  # p1, and p4 (Social, Email)
    assert recon[("conversions", "unattributed: no touches in the lookback window")] == 1
    # non-converting: p3's two Referral touches (the first older than any lookback) collapse to one,
    # v8's Display, Display, (Direct), Display to one once its Direct goes; v9 (Direct only) is none
    assert paths.loc["Referral", "total_null"] == 1
    assert paths.loc["Display", "total_null"] == 1
    assert int(paths["total_null"].sum()) == 2


def test_a_lookback_beyond_the_wide_build_is_refused(hand):
    wide = wide_journeys(hand, "lead", lookback_days=30)
    with pytest.raises(ValueError, match="longer than the wide build"):
        wide.derive(lookback_days=31)


def test_a_level_the_touchpoints_lack_names_the_column(hand):
    from closedloop_nb.errors import DataValidationError

    wide = wide_journeys({**hand, "touchpoints": hand["touchpoints"].drop(columns="keyword")}, "lead")
    with pytest.raises(DataValidationError, match="keyword"):
        wide.derive(level="keyword")


def test_a_control_change_derives_instead_of_building(tables, monkeypatch):
    """After the first draw (one wide build per conversion), lookback, journey options, level and
    segment changes build no journeys beyond the narrowed people's few rebuilt ones."""
    import closedloop_nb.journey_derive as jd

    app = ex.Explorer(tables, ex.Settings(models=("first_touch",)), background=False)
    calls = []
    real = jd.build_journeys
    monkeypatch.setattr(jd, "build_journeys", lambda src, **kw: calls.append(len(src["touchpoints"]))
                        or real(src, **kw))
    for name, value in (("lookback_days", 30), ("drop_direct", True), ("collapse_repeats", True),
                        ("level", "campaign"), ("segment", "SMB")):
        app.controls[name].value = value
        assert "Cannot" not in app.status.value
    assert all(n < len(tables["touchpoints"]) / 100 for n in calls)  # only the rebuilt people's touches
    direct = build_journeys(ex._narrowed(tables, app.settings, ex.Cache(), build=True), lookback_days=30,
                            drop_direct=True, collapse_repeats=True, level="campaign", progress=False)
    from closedloop_nb.attribution.compare import compare_models

    want = compare_models(direct.paths, ["first_touch"], progress=False)
    got = app.views.credit.sort_values("channel").reset_index(drop=True)
    want = want.sort_values("channel").reset_index(drop=True)
    pd.testing.assert_series_equal(got["conversions"], want["conversions"], check_dtype=False)


def test_a_date_bound_cutting_an_anonymous_journey_keeps_its_touches_inside(hand):
    """v8's journey (Display -300 d, Display -2 d, Direct -1 d, Display 0 d) under a date range from
    day -1: only Direct, Display stay (Display alone once direct is dropped); v9 (Direct, day 1)
    stays whole. The arrays group the journeys kept whole and regroup the one the bound cuts."""
    j = ex._journeys(hand, ex.Settings(lookback_days=30, date_from="2024-05-31"), ex.Cache(), "lead")
    paths = j.paths.set_index("path")["total_null"]
    assert paths.get("Direct > Display") == 1 and paths.get("Display > Display > Direct > Display") is None
    j = ex._journeys(hand, ex.Settings(lookback_days=30, date_from="2024-05-31", drop_direct=True),
                     ex.Cache(), "lead")
    assert j.paths.set_index("path")["total_null"].get("Display") == 1


@pytest.mark.parametrize("narrowing", [{"segment": "SMB"}, {"date_from": "2024-03-01", "segment": "SMB"}])
def test_lead_sources_under_a_narrowing_are_lead_credits_of_the_narrowed_tables(tables, narrowing):
    """The lead sources come from the lead journeys' converting touches alone (no journeys derived
    for the plain setting): each lead's first touch, whatever the journey options say."""
    from closedloop_nb.metrics import lead_credits

    cache = ex.Cache()
    s = ex.Settings(drop_direct=True, collapse_repeats=True, level="campaign", **narrowing)
    got = ex._lead_sources(tables, s, cache)
    want = lead_credits(ex._narrowed(tables, s, ex.Cache(), build=True), "lead_source", lookback_days=90,
                        level="campaign")
    key = ["person_id"]
    pd.testing.assert_frame_equal(got.sort_values(key).reset_index(drop=True)[want.columns],
                                  want.sort_values(key).reset_index(drop=True), check_dtype=False)
    assert ("lead", *replace_plain(s)) not in cache.journeys


def replace_plain(s):
    from dataclasses import replace

    return replace(s, drop_direct=False, collapse_repeats=False).journey_key()[1:]


@pytest.mark.parametrize("among", [{"b", "c"}, ["a", None], pd.Series(["a"], dtype="string"), []])
def test_isin_is_pandas_isin(among):
    values = pd.Series(["a", "b", None, "c"])
    want = values.isin(list(among) if isinstance(among, set) else among).to_numpy()
    assert (ex._isin(values, among) == want).all()


@pytest.mark.parametrize("conversion", ["lead", "opportunity"])
@pytest.mark.parametrize("options, before", [
    ({"drop_direct": True}, {}),
    ({"drop_direct": True, "collapse_repeats": True}, {}),
    ({"level": "campaign", "collapse_repeats": True}, {}),
    ({"level": "campaign", "drop_direct": True}, {}),  # not derivable from campaign paths: from the touches
    ({"level": "campaign", "drop_direct": True, "collapse_repeats": True}, {"drop_direct": True}),
])
def test_journey_options_grouped_from_the_plain_paths_are_the_fresh_build(tables, conversion, options,
                                                                          before):
    wide = wide_journeys(tables, conversion, lookback_days=365)
    s = ex.Settings(**options)
    # the groupings made before (the plain one, as the first draw; drop direct without collapsing)
    wide.derive(lookback_days=s.lookback_days, level=s.level)
    wide.derive(lookback_days=s.lookback_days, level=s.level, **before)
    assert (s.level, False, False) in wide.anonymous()._groups
    derived = wide.derive(lookback_days=s.lookback_days, level=s.level, drop_direct=s.drop_direct,
                          collapse_repeats=s.collapse_repeats)
    _assert_same(derived, _fresh(tables, conversion, s))

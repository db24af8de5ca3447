"""Buying committees by account (``unit="account"``): a deal's journey holds the touches of everyone
at the deal's account, still one journey per deal with its value counted once; and the summary of
whose touches made the journeys (what notebook 03 reports)."""

from __future__ import annotations

import pandas as pd
import pytest

from closedloop_nb.errors import DataValidationError
from closedloop_nb.journeys import UnitSummary, build_journeys
from closedloop_nb.metrics import deal_credits
from closedloop_nb.validation import validate_tables

T0 = pd.Timestamp("2024-01-01T00:00:00Z")


def day(n: float) -> str:
    return (T0 + pd.Timedelta(days=n)).isoformat()


def account_tables(contacts: bool = False, account: bool = True) -> dict[str, pd.DataFrame]:
    """Account A1 has three people: P1 (the deal's person), P2 and P3, none of them a contact of D1 in
    deal_contacts; P4 is at A2 with deal D2. Each touched the site once, through their own channel,
    before the deals were created (day 10)."""
    tp = pd.DataFrame([("v1", day(1), "Email"), ("v2", day(2), "Paid Search"), ("v3", day(3), "Display"),
                       ("v4", day(4), "Referral"), ("v5", day(5), "Social")],
                      columns=["visitor_id", "timestamp", "channel"]).assign(source="x", medium="y")
    ident = pd.DataFrame([(f"v{i}", f"P{i}", day(i)) for i in range(1, 6)],
                         columns=["visitor_id", "person_id", "matched_at"]).assign(method="form")
    leads = pd.DataFrame({"person_id": ["P1", "P2", "P3", "P4", "P5"],
                          "created_at": [day(i) for i in range(1, 6)],
                          "account_id": ["A1", "A1", "A1", "A2", None]})
    deals = pd.DataFrame({"deal_id": ["D1", "D2"], "person_id": ["P1", "P4"],
                          "account_id": ["A1", "A2"] if account else [None, None],
                          "created_at": [day(10), day(10)], "amount": [900.0, 100.0], "currency": ["GBP"] * 2,
                          "stage": ["closed_won"] * 2, "won": [True] * 2, "closed_at": [day(20)] * 2})
    tables = {"touchpoints": tp, "identities": ident, "leads": leads, "deals": deals}
    if contacts:  # D1's only contact is its own person
        tables["deal_contacts"] = pd.DataFrame({"deal_id": ["D1"], "person_id": ["P1"], "is_primary": [True]})
    return validate_tables(tables).tables


def paths_of(journeys):
    return {r.path: (r.total_conversions, r.total_null) for r in journeys.paths.itertuples()}


def shares(credits: pd.DataFrame) -> dict[tuple[str, str], float]:
    return {(r.deal_id, r.channel): r.share for r in credits.itertuples()}


def test_a_deal_is_credited_over_the_touches_of_everyone_at_its_account():
    t = account_tables(contacts=True)
    by_account = deal_credits(t, "linear", unit="account")
    # D1: linear over P1's, P2's and P3's touches (P2 and P3 are no contacts of D1, only at A1);
    # D2: its account has P4 alone; P5 (no account) counts for no deal
    assert shares(by_account) == pytest.approx({("D1", "Email"): 1 / 3, ("D1", "Paid Search"): 1 / 3,
                                                ("D1", "Display"): 1 / 3, ("D2", "Referral"): 1.0})
    assert by_account.groupby("deal_id")["share"].sum().to_dict() == pytest.approx({"D1": 1.0, "D2": 1.0})
    # the same tables by contacts (D1's only contact is P1) or by person: P1's touch alone
    for unit in ("deal_contacts", "person", "auto"):
        assert shares(deal_credits(t, "linear", unit=unit)) == {("D1", "Email"): 1.0, ("D2", "Referral"): 1.0}


def test_each_deal_is_one_journey_with_its_value_once():
    j = build_journeys(account_tables(), conversion="closed_won", unit="account")
    assert paths_of(j) == {"Email > Paid Search > Display": (1, 0), "Referral": (1, 0), "Social": (0, 1)}
    assert j.paths["total_conversion_value"].sum() == 1000.0  # 900 + 100, not 900 once per person
    recon = j.reconciliation.set_index(["item", "bucket"])
    assert recon.loc[("conversions", "in"), "n"] == 2 and recon.loc[("conversions", "in"), "value"] == 1000.0


def test_a_deal_without_an_account_keeps_its_own_person():
    j = build_journeys(account_tables(account=False), conversion="closed_won", unit="account")
    assert paths_of(j) == {"Email": (1, 0), "Referral": (1, 0), "Paid Search": (0, 1), "Display": (0, 1),
                           "Social": (0, 1)}


def test_the_unit_summary_counts_deals_that_gained_touches_from_others():
    t = account_tables(contacts=True)
    by_account = build_journeys(t, conversion="opportunity", unit="account").unit_summary()
    assert by_account == UnitSummary("opportunity", "account", deals=2, deals_with_journey=2,
                                     deals_with_other_contacts=1)
    assert by_account.sentence().startswith(
        "Deal journeys (opportunity) use the touches of everyone at the deal's account (unit account): "
        "1 of 2 deals gained touches from contacts other than the deal's person")
    # auto with a deal_contacts table is deal_contacts; D1's only contact is its person: nothing gained
    assert build_journeys(t, conversion="opportunity").unit_summary() == UnitSummary(
        "opportunity", "deal_contacts", 2, 2, 0)
    assert build_journeys(account_tables(), conversion="opportunity").unit_summary().unit == "person"
    lead = build_journeys(t, conversion="lead").unit_summary()
    assert (lead.unit, lead.deals) == ("person", 0) and "deal conversions only" in lead.sentence()


def test_a_deal_with_no_person_counts_every_touch_as_gained():
    t = account_tables()
    t["deals"].loc[t["deals"]["deal_id"] == "D1", "person_id"] = None
    s = build_journeys(t, conversion="opportunity", unit="account").unit_summary()
    assert (s.deals_with_journey, s.deals_with_other_contacts) == (2, 1)


def test_account_unit_only_for_deals_and_needs_account_columns():
    t = account_tables()
    with pytest.raises(ValueError, match="unit='account' applies to deal conversions"):
        build_journeys(t, conversion="lead", unit="account")
    with pytest.raises(ValueError, match="unit must be one of"):
        build_journeys(t, conversion="closed_won", unit="company")
    t["leads"] = t["leads"].drop(columns="account_id")
    with pytest.raises(DataValidationError, match="<leads DataFrame>, column 'account_id': missing column"):
        build_journeys(t, conversion="closed_won", unit="account")


def test_account_unit_through_a_run_workspace(tmp_path):
    import closedloop_nb as cl

    for name, frame in account_tables().items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
    ws = cl.open_workspace(tmp_path, cache_dir=tmp_path / "ws")
    assert shares(deal_credits(ws, "linear", unit="account")) == pytest.approx(
        {("D1", "Email"): 1 / 3, ("D1", "Paid Search"): 1 / 3, ("D1", "Display"): 1 / 3,
         ("D2", "Referral"): 1.0})
    summary = ws.journeys(conversion="opportunity", unit="account").unit_summary()
    assert summary == UnitSummary("opportunity", "account", 2, 2, 1)
    # read back from the stored journeys by another workspace on the same file: the same unit
    again = cl.open_workspace(tmp_path, cache_dir=tmp_path / "ws")
    assert again.journeys(conversion="opportunity", unit="account").unit_summary() == summary


@pytest.fixture(scope="module")
def spark():
    pyspark = pytest.importorskip("pyspark", reason="the spark extra is part of .[dev]")
    session = (pyspark.sql.SparkSession.builder.master("local[2]").appName("closedloop-tests")
               .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "4").getOrCreate())
    yield session
    session.stop()


@pytest.mark.parametrize("unit", ["account", "deal_contacts", "person"])
def test_spark_runs_the_same_committee_sql(spark, unit):
    t = account_tables(contacts=True)
    on_spark = build_journeys(t, conversion="closed_won", unit=unit, engine="spark", spark=spark)
    on_duckdb = build_journeys(t, conversion="closed_won", unit=unit)
    pd.testing.assert_frame_equal(on_spark.paths, on_duckdb.paths, check_dtype=False)
    pd.testing.assert_frame_equal(on_spark.reconciliation, on_duckdb.reconciliation, check_dtype=False)
    assert on_spark.unit_summary() == on_duckdb.unit_summary()


def test_the_deal_unit_summary_describes_the_journeys_deals_are_credited_over(tmp_path):
    import closedloop_nb as cl
    from closedloop_nb.journeys import deal_unit_summary

    t = account_tables()
    # journeys ending at leads are one person's each: the summary is of the deal journeys
    assert deal_unit_summary(t, conversion="lead", unit="account") == UnitSummary(
        "opportunity", "account", 2, 2, 1)
    assert deal_unit_summary(t, conversion="closed_won").conversion == "closed_won"
    no_deals = deal_unit_summary({k: v for k, v in t.items() if k != "deals"})
    assert no_deals.deals == 0
    assert no_deals.sentence() == "No deals reach opportunity: there are no deal journeys."
    for name, frame in t.items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
    ws = cl.open_workspace(tmp_path, cache_dir=tmp_path / "ws")
    assert deal_unit_summary(ws, conversion="lead", lookback_days=90, unit="account") == UnitSummary(
        "opportunity", "account", 2, 2, 1)

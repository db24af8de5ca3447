"""Loader round trips: hand-made exports in the shape each vendor produces, through the shipped
mappings, into canonical tables with the values worked out by hand."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pandas as pd
import pytest

from closedloop_nb import ChannelRules, Mapping, list_mappings, load_dataset, load_hubspot, load_salesforce
from closedloop_nb.errors import DataValidationError
from closedloop_nb.privacy import MissingHashKeyError, hash_identifiers
from closedloop_nb.schema import TABLES

EXPORTS = Path(__file__).parent / "data" / "exports"
T = pd.Timestamp


def hashed(email: str, key: bytes = b"test-key") -> str:
    """The keyed hash, computed independently of the package."""
    return hmac.new(key, email.strip().lower().encode(), hashlib.sha256).hexdigest()[:32]


def test_every_shipped_mapping_loads_and_targets_a_canonical_table():
    names = list_mappings()
    assert {"ga4_bigquery", "salesforce_lead", "hubspot_deals", "chartmogul_mrr"} <= set(names)
    for name in names:
        assert Mapping.load(name).table in TABLES


def test_ga4_bigquery_export(hash_key):
    ds = load_dataset(
        {"touchpoints": EXPORTS / "ga4_events.csv", "identities": EXPORTS / "ga4_events.csv"},
        mappings={"touchpoints": "ga4_bigquery", "identities": "ga4_identities"},
        channel_rules=ChannelRules.named("ga4-click-ids"),  # the untagged gclid session is a paid click
    )
    t = ds.tables["touchpoints"]
    # page_view and the generate_lead conversion are not touches: filtered by the mapping and counted
    info = [p for p in ds.report.problems if p.severity == "info" and p.table == "touchpoints"]
    assert info[0].n_rows == 2 and info[0].rows == (2, 4)
    assert ds.report.counts["touchpoints"]["rows_filtered"] == 2
    assert t["timestamp"].tolist() == [
        T("2024-01-01T00:00:00Z"), T("2024-01-02T00:00:00Z"), T("2024-01-03T00:00:00.5Z"),
        T("2024-01-03T00:01:40Z"),
    ]
    assert t["interaction_type"].tolist() == ["session"] * 4
    assert t["source"].tolist() == ["google", "(direct)", "newsletter", "(direct)"]
    assert t["click_id_type"].tolist()[0] == "gclid" and pd.isna(t["click_id_type"].iloc[1])
    # the untagged session with a gclid is Paid Search; no UTM and no click id is Direct
    assert t["channel"].tolist() == ["Paid Search", "Direct", "Email", "Paid Search"]
    ident = ds.tables["identities"]
    assert ident[["visitor_id", "person_id", "method"]].values.tolist() == [
        ["111.222", hashed("ann@example.com"), "login"]]


def test_salesforce_exports(hash_key):
    ds = load_salesforce(EXPORTS / "salesforce_lead.csv", EXPORTS / "salesforce_opportunity.csv",
                         EXPORTS / "salesforce_opportunity_history.csv", timezone="Europe/London")
    leads = ds.tables["leads"]
    assert leads["person_id"].tolist() == [hashed("ann@example.com"), hashed("bob@example.com")]
    assert leads["created_at"].tolist() == [T("2024-01-02T00:05:00Z"), T("2024-01-05T09:30:00Z")]
    deals = ds.tables["deals"]
    # ids in their 18-character form (all digits: suffix AAA). Ann's lead converted into 006...1;
    # 006...2 reaches nobody: kept (it counts in revenue), its person empty, nothing rejected
    assert deals["deal_id"].tolist() == ["006000000000001AAA", "006000000000002AAA"]
    assert deals["person_id"].iloc[0] == hashed("ann@example.com") and pd.isna(deals["person_id"].iloc[1])
    assert deals[["amount", "stage"]].values.tolist() == [[12000.0, "closed_won"], [5000.0, "proposal"]]
    assert deals["won"].iloc[0] == True and pd.isna(deals["won"].iloc[1])  # noqa: E712
    # CloseDate is date-only, in the org's zone: midnight in London in February is midnight UTC
    assert deals["closed_at"].iloc[0] == T("2024-02-15T00:00:00Z")
    assert ds.report.counts["deals"]["rows_rejected"] == 0
    hist = ds.tables["stage_history"]
    # Prospecting and Qualification both map to 'opportunity': the earliest entry counts
    assert hist[["stage", "entered_at"]].values.tolist() == [
        ["opportunity", T("2024-01-10T12:00:00Z")], ["proposal", T("2024-01-25T12:00:00Z")],
        ["closed_won", T("2024-02-15T17:00:00Z")]]
    folded = [p for p in ds.report.problems if p.table == "stage_history" and p.severity == "collapsed"]
    assert folded[0].rows == (2,)
    # the file's 4 rows: 3 kept + 1 folded (not "3 in, 0 collapsed")
    counts = ds.report.counts["stage_history"]
    assert (counts["rows_in"], counts["rows_kept"], counts["rows_collapsed"]) == (4, 3, 1)


def test_hubspot_exports(hash_key):
    ds = load_hubspot(EXPORTS / "hubspot_contacts.csv", EXPORTS / "hubspot_deals.csv",
                      timezone="Europe/London")
    leads = ds.tables["leads"].set_index("person_id")
    ann, cy = hashed("ann@example.com"), hashed("cy@example.com")
    # 09:00 in London in June is BST (UTC+1): 08:00 UTC
    assert leads.loc[cy, "created_at"] == T("2024-06-03T08:00:00Z")
    assert leads.loc[ann, "mql_at"] == T("2024-01-04T10:00:00Z") and pd.isna(leads.loc[cy, "mql_at"])
    deals = ds.tables["deals"].set_index("deal_id")
    assert deals.loc["9001", "person_id"] == ann  # first associated contact (101)
    # both associated contacts are the deal's committee; 555 is not in the contacts export: rejected
    committee = ds.tables["deal_contacts"][["deal_id", "person_id"]].values.tolist()
    assert committee == [["9001", ann], ["9002", cy]]
    assert deals.loc["9001", "won"] == True  # noqa: E712
    assert deals.loc["9001", "closed_at"] == T("2024-02-15T09:00:00Z")
    # an open deal's Close Date is only a forecast: dropped, and won is unknown
    assert deals.loc["9002", "stage"] == "proposal"
    assert pd.isna(deals.loc["9002", "closed_at"]) and pd.isna(deals.loc["9002", "won"])


def test_hubspot_without_time_zone_is_refused(hash_key):
    ds = load_hubspot(EXPORTS / "hubspot_contacts.csv")
    assert any("no time zone" in p.reason for p in ds.report.errors)


def test_chartmogul_mrr_movements():
    ds = load_dataset({"subscriptions": EXPORTS / "chartmogul_activities.csv"},
                      mappings={"subscriptions": "chartmogul_mrr"})
    s = ds.tables["subscriptions"]
    assert s["month"].tolist() == [T("2024-01-01"), T("2024-03-01"), T("2024-06-01")]
    assert s["movement"].tolist() == ["new", "expansion", "churn"]
    assert s["mrr"].tolist() == [100.0, 150.0, 0.0]  # cents to pounds
    assert s["mrr_delta"].tolist() == [100.0, 50.0, -150.0]


def test_no_raw_identifier_survives_loading(hash_key):
    ds = load_salesforce(EXPORTS / "salesforce_lead.csv", timezone="UTC")
    text = ds.tables["leads"].to_csv()
    assert "example.com" not in text.lower()


def test_pii_without_a_key_says_how_to_set_one(monkeypatch, tmp_path):
    monkeypatch.delenv("CLOSEDLOOP_HASH_KEY", raising=False)
    monkeypatch.setenv("CLOSEDLOOP_HASH_KEY_FILE", str(tmp_path / "absent"))
    with pytest.raises(MissingHashKeyError, match="CLOSEDLOOP_HASH_KEY"):
        load_salesforce(EXPORTS / "salesforce_lead.csv", timezone="UTC")


def test_hash_key_from_a_file_outside_the_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("CLOSEDLOOP_HASH_KEY", raising=False)
    (tmp_path / "key").write_text("file-key\n")
    monkeypatch.setenv("CLOSEDLOOP_HASH_KEY_FILE", str(tmp_path / "key"))
    out = hash_identifiers(pd.Series(["A@B.com", None, " "]), "email")
    assert out.iloc[0] == hashed("a@b.com", b"file-key")
    assert out.iloc[1:].isna().all()


def test_phone_numbers_normalise_before_hashing():
    out = hash_identifiers(pd.Series(["+44 20 7946 0000", "+44-20-7946-0000"]), "phone", key=b"k")
    assert out.iloc[0] == out.iloc[1]


def test_mapping_naming_a_missing_export_column_is_refused(tmp_path):
    path = tmp_path / "deals.csv"
    path.write_text("Record ID,Deal Stage,Create Date\n1,closedwon,2024-01-01 10:00\n")
    with pytest.raises(DataValidationError, match=r"column 'Amount'.*hubspot_deals"):
        load_dataset({"deals": path}, mappings={"deals": "hubspot_deals"})


def test_canonical_csv_round_trip(synthetic, sample, tmp_path):
    """Tables written as CSV (ISO timestamps with offsets) load back equal to the Parquet originals."""
    for name, frame in synthetic.frames().items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False, date_format="%Y-%m-%dT%H:%M:%S.%f%z")
    back = load_dataset(tmp_path)
    for name, frame in sample.tables.items():
        pd.testing.assert_frame_equal(back.tables[name], frame, check_dtype=False, obj=name)


def test_parquet_directory_loads(synthetic, sample, tmp_path):
    synthetic.write(tmp_path)
    back = load_dataset(tmp_path)
    for name, frame in sample.tables.items():
        pd.testing.assert_frame_equal(back.tables[name], frame, obj=name)

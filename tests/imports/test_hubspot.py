"""HubSpot import: every associated contact, amounts with symbols and separators (a decimal comma only
when the config says so), custom pipeline stages through the config, stage history from date-entered
columns."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pandas as pd
import pytest

from closedloop_nb.errors import DataValidationError
from closedloop_nb.imports import import_source

HS = Path(__file__).parents[1] / "data" / "exports" / "crm" / "hubspot"
T = pd.Timestamp
CONFIG = {"stages": {"partner-signed": "closed_won"}}


def hashed(email: str) -> str:
    return hmac.new(b"test-key", email.strip().lower().encode(), hashlib.sha256).hexdigest()[:32]


def test_a_deal_reaches_its_first_associated_contact_present_and_keeps_all_of_them(hash_key):
    res = import_source("hubspot", HS, timezone="Europe/London", config={**CONFIG, "decimal": ","})
    deals = res.tables["deals"].set_index("deal_id")
    # 9001's contacts are 33;40;52 and 33 is not in the contacts export: 40 (Ann) is its person
    assert deals.loc["9001", "person_id"] == hashed("ann@example.com")
    dc = res.tables["deal_contacts"]
    assert dc[dc["deal_id"] == "9001"]["person_id"].tolist() == [
        hashed("ann@example.com"),
        hashed("bo@example.com"),
    ]
    gone = [p for p in res.report.problems if p.table == "deal_contacts" and p.severity == "rejected"]
    assert [(p.rows, p.reason) for p in gone] == [((1,), "person_id not found in leads.person_id")]
    # 9004 has no associated contact: kept, no person
    assert pd.isna(deals.loc["9004", "person_id"]) and deals.loc["9004", "stage"] == "closed_lost"


def test_amounts_with_symbols_and_a_configured_decimal_comma(hash_key):
    res = import_source("hubspot", HS, timezone="Europe/London", config={**CONFIG, "decimal": ","})
    deals = res.tables["deals"].set_index("deal_id")
    # with decimal "," the dot groups thousands: $12,000.00 would be 12 -> the config is per export
    assert deals.loc["9003", "amount"] == 1200.5 and deals.loc["9003", "stage"] == "closed_won"


def test_an_ambiguous_amount_is_refused_with_its_row_never_misread(hash_key):
    res = import_source("hubspot", HS, timezone="Europe/London", config=CONFIG)
    deals = res.tables["deals"].set_index("deal_id")
    assert deals.loc["9001", "amount"] == 12000.0 and deals.loc["9004", "amount"] == 2500.0
    assert "9003" not in deals.index
    bad = [p for p in res.report.problems if p.table == "deals" and p.severity == "rejected"]
    assert [(p.column, p.rows) for p in bad] == [("amount", (3,))]
    assert (
        bad[0].reason == "not a number: '1.200,50 (ambiguous; set decimal)'"
    )
    c = res.report.counts["deals"]
    assert (c["rows_in"], c["rows_kept"], c["rows_rejected"]) == (4, 3, 1)


def test_unmapped_custom_stages_are_named_and_a_bad_map_refused(hash_key):
    res = import_source("hubspot", HS, timezone="Europe/London", config={"decimal": ","})
    assert pd.isna(res.tables["deals"].set_index("deal_id").loc["9003", "stage"])
    assert "stages not mapped (stage left empty; add them under stages: in the config): 'partner-signed'" in (
        " ".join(res.notes)
    )
    with pytest.raises(DataValidationError, match="stage map value 'signed' is not one of"):
        import_source(
            "hubspot", HS, timezone="Europe/London", config={"stages": {"partner-signed": "signed"}}
        )


def test_stage_history_from_date_entered_columns(hash_key):
    res = import_source("hubspot", HS, timezone="Europe/London", config={**CONFIG, "decimal": ","})
    hist = res.tables["stage_history"]
    assert hist[["deal_id", "stage", "entered_at"]].values.tolist() == [
        ["9001", "opportunity", T("2026-01-10T12:00:00Z")],
        ["9001", "closed_won", T("2026-02-15T09:00:00Z")],
        ["9002", "opportunity", T("2026-01-12T10:00:00Z")],
        ["9004", "opportunity", T("2026-01-20T10:00:00Z")],
    ]
    for name, c in res.report.counts.items():
        assert (
            c["rows_in"] == c["rows_kept"] + c["rows_rejected"] + c["rows_collapsed"] + c["rows_filtered"]
        ), name


def test_internal_property_names_work_as_headers(tmp_path, hash_key):
    (tmp_path / "contacts.csv").write_text(
        "hs_object_id,email,createdate\n7,z@example.com,2026-01-01 10:00\n"
    )
    (tmp_path / "deals.csv").write_text(
        "hs_object_id,dealstage,amount,deal_currency_code,createdate,closedate,associations.contacts\n"
        "70,closedwon,500,USD,2026-01-02 10:00,2026-01-05 10:00,7\n"
    )
    res = import_source("hubspot", tmp_path, timezone="UTC")
    deals = res.tables["deals"]
    assert deals[["deal_id", "person_id", "amount", "won"]].values.tolist() == [
        ["70", hashed("z@example.com"), 500.0, True]
    ]

"""Offline-conversion uploads: Google Ads' click-conversion file and Meta's offline events, for won deals
whose journeys carry the platform's click id. Expected rows worked out by hand from the data below; the
Meta hashes are the examples of Meta's customer-information parameter reference (see
tests/data/exports/marketing/README.md)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from closedloop_nb.cli import main
from closedloop_nb.exports import meta_email_hash, meta_phone_hash, offline_conversions
from closedloop_nb.imports import import_source
from closedloop_nb.validation import load_dataset

MARKETING = Path(__file__).parent / "data" / "exports" / "marketing"
T = pd.Timestamp
# Meta's documented examples: John_Smith@gmail.com and the US number (650)555-1212 -> 16505551212
META_EM = "62a14e44f765419d10fea99367361a727c12365e2520f32218d505ed9aa0f62f"
META_PH = "e323ec626319ca94ee8bff2e4c87cf613be6ea19919ed1364124e16807ab3176"


@pytest.fixture
def data_dir(tmp_path, hash_key):
    """GA4 corpus touches (gclid Cj0KCQ_B1 for crm-000123), plus an fbclid and a wbraid click, and deals."""
    web = import_source("ga4", MARKETING / "ga4").tables
    extra = pd.DataFrame({
        "touch_id": ["m-1", "w-1"], "visitor_id": ["9009.1", "9010.1"],
        "timestamp": [T("2024-01-10T12:00Z"), T("2024-01-05T08:00Z")], "source": ["facebook", "(direct)"],
        "medium": ["paid_social", "(none)"], "click_id": ["IwAR_meta1", "WB9"],
        "click_id_type": ["fbclid", "wbraid"], "interaction_type": ["session", "session"]})
    touches = pd.concat([web["touchpoints"], extra], ignore_index=True)
    ident = pd.concat([web["identities"], pd.DataFrame({
        "visitor_id": ["9009.1", "9010.1"], "person_id": ["crm-000900", "crm-000901"],
        "matched_at": [T("2024-01-10T12:05Z"), T("2024-01-05T08:05Z")], "method": ["form", "form"]})])
    people = ["crm-000123", "crm-000456", "crm-000900", "crm-000901"]
    leads = pd.DataFrame({"person_id": people, "created_at": [T("2024-01-01T10:05Z")] * 4})
    deals = pd.DataFrame({
        "deal_id": ["D-1", "D-2", "D-3", "D-4", "D-5", "D-6"],
        "person_id": ["crm-000123", "crm-000456", "crm-000900", "crm-000901", "crm-000123", "crm-000123"],
        "created_at": [T("2024-01-15T00:00Z")] * 6,
        "amount": [12000.0, 5000.0, 800.0, 300.0, 700.0, 100.0],
        "currency": ["EUR", "EUR", "GBP", "EUR", "EUR", "USD"],
        "stage": ["closed_won", "closed_won", "closed_won", "closed_won", "closed_lost", "closed_won"],
        "closed_at": [T("2024-02-15T17:00Z"), T("2024-02-01T00:00Z"), T("2024-01-20T09:00Z"),
                      T("2024-01-06T00:00Z"), T("2024-02-01T00:00Z"), T("2024-06-01T00:00Z")],
        "won": [True, True, True, True, False, True]})
    out = tmp_path / "data"
    out.mkdir()
    for name, df in {"touchpoints": touches, "identities": ident, "leads": leads, "deals": deals}.items():
        df.to_parquet(out / f"{name}.parquet", index=False)
    return out


def test_google_ads_upload_rows_and_summary(data_dir):
    rows, summary = offline_conversions(load_dataset(data_dir).tables, "google-ads",
                                        conversion_name="Closed won (CRM)")
    # D-1: crm-000123's journey has gclid Cj0KCQ_B1 (2024-01-01), 45 days before the close
    assert rows.columns.tolist() == ["Google Click ID", "Conversion Name", "Conversion Time",
                                     "Conversion Value", "Conversion Currency"]
    assert rows.values.tolist() == [["Cj0KCQ_B1", "Closed won (CRM)", "2024-02-15 17:00:00", 12000.0, "EUR"]]
    assert rows.attrs["preamble"] == ["Parameters:TimeZone=+0000"]
    # won deals D-1, D-2, D-3, D-4, D-6 (D-5 was lost); D-2 has no click, D-3 only an fbclid, D-6 closed
    # 152 days after the gclid; D-4's wbraid goes through Google's API only
    assert (summary.conversions, summary.sendable) == (5, 1)
    assert summary.value_by_currency == {"EUR": 12000.0}
    assert summary.skipped["with only a gbraid/wbraid click (upload through the API)"] == 1
    assert summary.skipped["without a gclid click in the 90 days before"] == 3


def test_since_leaves_out_older_conversions(data_dir):
    rows, summary = offline_conversions(load_dataset(data_dir).tables, "google-ads", since="2024-02-01")
    # D-3 (Jan 20) and D-4 (Jan 6) closed before; D-1 is still sent
    assert rows["Google Click ID"].tolist() == ["Cj0KCQ_B1"]
    assert summary.skipped["before 2024-02-01 00:00 UTC (--since)"] == 2


def test_google_ads_time_in_the_accounts_zone(data_dir):
    rows, _ = offline_conversions(load_dataset(data_dir).tables, "google-ads", timezone="America/New_York")
    assert rows["Conversion Time"].tolist() == ["2024-02-15 12:00:00"]  # 17:00 UTC is 12:00 EST in February
    assert rows.attrs["preamble"] == ["Parameters:TimeZone=America/New_York"]


def test_meta_upload_hashes_contacts_as_meta_documents(data_dir, tmp_path):
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("Record ID,Email,Phone Number\ncrm-000900, John_Smith@gmail.com,(650)555-1212\n")
    rows, summary = offline_conversions(load_dataset(data_dir).tables, "meta", contacts=contacts,
                                        contact_id_column="Record ID", country_code="1")
    assert rows.to_dict("records") == [{
        "event_name": "Purchase", "event_time": 1705741200,  # 2024-01-20 09:00 UTC
        "action_source": "system_generated", "event_id": "D-3", "em": META_EM, "ph": META_PH,
        "fbc": "fb.1.1704888000000.IwAR_meta1",  # the fbclid's click time, 2024-01-10 12:00 UTC, in ms
        "value": 800.0, "currency": "GBP"}]
    assert summary.value_by_currency == {"GBP": 800.0}
    assert "John_Smith" not in rows.to_csv()


def test_meta_contacts_linked_by_the_keyed_hash_of_their_email(data_dir, tmp_path, hash_key):
    """Contacts without an id column join people whose person_id is the keyed hash of the e-mail."""
    tables = dict(load_dataset(data_dir).tables)
    from closedloop_nb.privacy import hash_identifiers

    person = hash_identifiers(pd.Series(["john_smith@gmail.com"]), "email", key=hash_key).iloc[0]
    tables["deals"] = tables["deals"].assign(person_id=tables["deals"]["person_id"].replace(
        {"crm-000900": person}))
    tables["identities"] = tables["identities"].assign(person_id=tables["identities"]["person_id"].replace(
        {"crm-000900": person}))
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("Email\nJohn_Smith@gmail.com\n")
    rows, _ = offline_conversions(tables, "meta", contacts=contacts, hash_key=hash_key)
    assert rows["em"].tolist() == [META_EM] and rows["ph"].isna().all()


def test_meta_phone_normalisation():
    assert meta_phone_hash("+1 (650) 555-1212") == META_PH
    assert meta_phone_hash("001 650 555 1212") == META_PH
    assert meta_phone_hash("650-555-1212") is None  # national, no country code: not guessed
    assert meta_email_hash("  JOHN_SMITH@gmail.com ") == META_EM


def test_command_writes_the_upload_and_prints_the_summary(data_dir, tmp_path, capsys):
    out = tmp_path / "google.csv"
    code = main(["export", "offline-conversions", "--platform", "google-ads", str(data_dir),
                 "--conversion", "closed_won", "--conversion-name", "Closed won", "--out", str(out)])
    assert code == 0
    assert out.read_text().splitlines() == [
        "Parameters:TimeZone=+0000",
        "Google Click ID,Conversion Name,Conversion Time,Conversion Value,Conversion Currency",
        "Cj0KCQ_B1,Closed won,2024-02-15 17:00:00,12000.00,EUR"]
    printed = capsys.readouterr().out
    assert "1 of 5 closed_won conversions can be sent (12,000.00 EUR)" in printed


def test_command_refuses_a_folder_without_tables(tmp_path, capsys):
    assert main(["export", "offline-conversions", "--platform", "meta", str(tmp_path), "--out",
                 str(tmp_path / "x.csv")]) == 1
    assert "closedloop export offline-conversions:" in capsys.readouterr().err

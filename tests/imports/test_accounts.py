"""People's accounts (``leads.account_id``), so that deal journeys can gather everyone at a deal's account
(``unit="account"``): Salesforce's Lead.ConvertedAccountId / Contact.AccountId, HubSpot's associated
company, Pipedrive's organization. Expected values are read off the corpus files by hand."""

from __future__ import annotations

import csv
import hashlib
import hmac
import shutil
from pathlib import Path

import pandas as pd

from closedloop_nb.imports import import_source
from closedloop_nb.journeys import build_journeys
from closedloop_nb.validation import validate_tables

CRM = Path(__file__).parents[1] / "data" / "exports" / "crm"


def hashed(email: str) -> str:
    return hmac.new(b"test-key", email.strip().lower().encode(), hashlib.sha256).hexdigest()[:32]


def accounts(result) -> dict[str, str | None]:
    leads = result.tables["leads"]
    pairs = zip(leads["person_id"], leads["account_id"], strict=True)
    return {p: (None if pd.isna(a) else a) for p, a in pairs}


def test_salesforce_people_carry_their_account(hash_key):
    res = import_source("salesforce", CRM / "salesforce", timezone="America/Mexico_City", encoding="cp1252")
    got = accounts(res)
    # converted leads: ConvertedAccountId (15 characters, written in the 18-character form);
    # contacts: AccountId; Ann's lead is not converted and she is no contact: no account
    assert got[hashed("jose.nunez@acme.mx")] == "0015e00000acme1AAA"
    assert got[hashed("maria@andes.co")] == "0015e00000andesAAA"
    assert got[hashed("bob@lima.pe")] == "0015e00000lima1AAA"
    assert got[hashed("cy@direct.com")] == "0015e00000drct1AAA"
    assert got[hashed("pilar@acme.mx")] == got[hashed("luis@acme.mx")] == "0015e00000acme1AAA"
    assert got[hashed("ann@open.com")] is None
    # deals carry the same ids, so opp01 (Acme) reaches José, Pilar and Luis by account
    deals = res.tables["deals"].set_index("deal_id")
    acme = deals.loc["0065e00000opp01AAA", "account_id"]
    assert sorted(p for p, a in got.items() if a == acme) == sorted(
        hashed(e) for e in ("jose.nunez@acme.mx", "pilar@acme.mx", "luis@acme.mx"))


def test_salesforce_account_journeys_over_the_imported_tables(hash_key):
    # the imported tables plus one web touch for each Acme person (José, Pilar, Luis) on 1 January
    res = import_source("salesforce", CRM / "salesforce", timezone="America/Mexico_City", encoding="cp1252")
    people = {"jose.nunez@acme.mx": "Email", "pilar@acme.mx": "Paid Search", "luis@acme.mx": "Display"}
    t0 = pd.Timestamp("2026-01-01T00:00:00Z")
    tables = {k: v for k, v in res.tables.items() if k not in ("touchpoints", "identities")}
    tables["touchpoints"] = pd.DataFrame({
        "visitor_id": [f"v{i}" for i in range(3)],
        "timestamp": [t0 + pd.Timedelta(hours=i) for i in range(3)],
        "channel": list(people.values()), "source": "x", "medium": "y"})
    tables["identities"] = pd.DataFrame({
        "visitor_id": [f"v{i}" for i in range(3)], "person_id": [hashed(e) for e in people],
        "matched_at": t0, "method": "form"})
    t = validate_tables(tables).tables
    def acme_journeys(**options):
        paths = build_journeys(t, conversion="opportunity", unit="account", **options).paths
        return paths.set_index("path")["total_conversions"].get("Email > Paid Search > Display")

    # opp01 (created 15 January) holds the three touches; opp02 (23 February) none, since the
    # people's next journey starts after their previous conversion, unless restarting is off
    assert acme_journeys() == 1
    assert acme_journeys(restart_after_conversion=False) == 2


def test_hubspot_contacts_and_deals_carry_the_associated_company(tmp_path, hash_key):
    # HubSpot's contact property associatedcompanyid ("Associated Company ID": the primary company,
    # https://developers.hubspot.com/changelog/2019-01-24-update-the-associatedcompanyid-contact-property-
    # will-become-read-only-on-april-26th) and a deals export with its "Associated Company IDs"
    folder = tmp_path / "hubspot"
    shutil.copytree(CRM / "hubspot", folder)
    add = {"contacts": ("Associated Company ID", {"40": "1001", "52": "1001", "61": ""}),
           "deals": ("Associated Company IDs", {"9001": "1001;1002", "9002": "", "9003": "1003",
                                                "9004": ""})}
    for kind, (header, values) in add.items():
        path = next(folder.glob(f"*-{kind}-*.csv"))
        rows = list(csv.reader(path.open(encoding="utf-8", newline="")))
        rows[0].append(header)
        for r in rows[1:]:
            r.append(values[r[0]])
        with path.open("w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows(rows)
    res = import_source("hubspot", folder, timezone="Europe/London", config={"decimal": ","})
    assert accounts(res) == {hashed("ann@example.com"): "1001", hashed("bo@example.com"): "1001",
                             hashed("cy@example.com"): None}
    deals = res.tables["deals"].set_index("deal_id")["account_id"]
    # a deal's first associated company (9001 has two)
    assert {d: (None if pd.isna(a) else a) for d, a in deals.items()} == {
        "9001": "1001", "9002": None, "9003": "1003", "9004": None}


def test_pipedrive_persons_carry_their_organization(hash_key):
    res = import_source("pipedrive", CRM / "pipedrive", config={"stages": {"1": "opportunity"}})
    # persons.csv: Ann (7, and 10 folded into her) at 70, Bo at 71, Cy at 72
    assert accounts(res) == {hashed("ann@example.com"): "70", hashed("bo@example.com"): "71",
                             hashed("cy@example.com"): "72"}

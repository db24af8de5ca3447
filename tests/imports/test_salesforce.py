"""Salesforce import: a Data Loader / report-export folder in Windows-1252, four currencies, Spanish stages,
converted leads whose ConvertedOpportunityId is the null-id placeholder. Expected rows are worked out by
hand from the files (see tests/data/exports/crm/README.md)."""

from __future__ import annotations

import csv
import hashlib
import hmac
import shutil
from pathlib import Path

import pandas as pd
import pytest

from closedloop_nb.cli import main
from closedloop_nb.errors import DataValidationError
from closedloop_nb.imports import import_source
from closedloop_nb.imports.salesforce import case_safe_id

SF = Path(__file__).parents[1] / "data" / "exports" / "crm" / "salesforce"
TZ = "America/Mexico_City"  # UTC-6 all year since 2022
T = pd.Timestamp


def hashed(email: str) -> str:
    return hmac.new(b"test-key", email.strip().lower().encode(), hashlib.sha256).hexdigest()[:32]


@pytest.fixture(scope="module")
def result():
    mp = pytest.MonkeyPatch()
    mp.setenv("CLOSEDLOOP_HASH_KEY", "test-key")
    yield import_source("salesforce", SF, timezone=TZ, encoding="cp1252")
    mp.undo()


def test_case_safe_ids_match_salesforces_documented_examples():
    # a0D30000001n7Pi -> ...EAI and 0019000000B98de -> ...AAB are worked through step by step in the
    # pages cited in tests/data/exports/crm/README.md
    assert case_safe_id("a0D30000001n7Pi") == "a0D30000001n7PiEAI"
    assert case_safe_id("0019000000B98de") == "0019000000B98deAAB"
    # the 18-character form is the same record, also once a spreadsheet has changed its case
    assert case_safe_id("a0D30000001n7PiEAI") == case_safe_id("A0D30000001N7PIEAI") == "a0D30000001n7PiEAI"
    # XyZaB: X (bit 0), Z (bit 2), B (bit 4) upper-case -> 21 -> 'V'
    assert case_safe_id("0035e00000XyZaB") == "0035e00000XyZaBAAV"
    # 00Q5e: Q (bit 2) -> 4 -> 'E' (the lead ids CampaignMember.csv writes in 18 characters)
    assert case_safe_id("00Q5e00000lead3") == "00Q5e00000lead3EAA"
    assert case_safe_id("000000000000000AAA") is None and case_safe_id("000000000000000") is None
    assert case_safe_id("") is None and case_safe_id(None) is None


def test_every_opportunity_is_kept_and_reaches_people_in_the_documented_order(result):
    deals = result.tables["deals"].set_index("deal_id")
    # ids all digits and lower case: checksum AAA
    assert list(deals.index) == [f"0065e00000opp0{i}AAA" for i in range(1, 9)]
    assert result.report.counts["deals"] == {
        **result.report.counts["deals"],
        "rows_in": 8,
        "rows_kept": 8,
        "rows_rejected": 0,
    }
    person = deals["person_id"]
    assert person["0065e00000opp01AAA"] == hashed("jose.nunez@acme.mx")  # primary contact role (15-char id)
    assert person["0065e00000opp02AAA"] == hashed("pilar@acme.mx")  # its only known contact role
    assert person["0065e00000opp03AAA"] == hashed("maria@andes.co")  # account: lead converted into it
    assert person["0065e00000opp04AAA"] == person["0065e00000opp08AAA"] == hashed("bob@lima.pe")
    assert person["0065e00000opp05AAA"] == hashed("cy@direct.com")  # ConvertedOpportunityId, 18 vs 15
    # no account / an account nobody is at: kept, no person
    assert person[["0065e00000opp06AAA", "0065e00000opp07AAA"]].isna().all()
    notes = " ".join(result.notes)
    assert "converted lead 1, contact role 4, Opportunity.ContactId 0, account 1, nobody 2" in notes
    assert "3 converted leads carry the null-id placeholder" in notes


def test_won_revenue_per_currency_equals_the_files():
    with open(SF / "Opportunity.csv", encoding="cp1252", newline="") as fh:
        rows = list(csv.DictReader(fh))
    expected: dict[str, float] = {}
    for r in rows:
        if r["Won"] == "TRUE":
            expected[r["Opportunity Currency"]] = expected.get(r["Opportunity Currency"], 0) + float(
                r["Amount"]
            )
    assert expected == {"MXN": 150000.0, "COP": 25000000.0, "USD": 14000.0, "PEN": 30000.0}
    mp = pytest.MonkeyPatch()
    mp.setenv("CLOSEDLOOP_HASH_KEY", "test-key")
    try:
        deals = import_source("salesforce", SF, timezone=TZ, encoding="cp1252").tables["deals"]
    finally:
        mp.undo()
    won = deals[deals["won"].fillna(False).astype(bool)].groupby("currency")["amount"].sum().to_dict()
    assert won == expected


def test_the_command_writes_every_opportunity(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLOSEDLOOP_HASH_KEY", "test-key")
    out = tmp_path / "D"
    code = main(
        ["import", "salesforce", str(SF), "--timezone", TZ, "--encoding", "cp1252", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    deals = pd.read_parquet(out / "deals.parquet")
    assert len(deals) == 8 and deals["currency"].value_counts().to_dict() == {
        "USD": 3,
        "MXN": 2,
        "PEN": 2,
        "COP": 1,
    }
    assert (out / "deal_contacts.parquet").is_file() and (out / "import_report.json").is_file()
    # the report names the four currencies rather than adding them up
    text = (out / "import_report.txt").read_text("utf-8")
    assert "several currencies in one table (COP 25,000,000.00; MXN 230,000.00; PEN 72,000.50; USD" in text


def test_stages_without_a_map_follow_isclosed_iswon_and_the_forecast_category(result):
    deals = result.tables["deals"].set_index("deal_id")
    assert deals["stage"].tolist() == [
        "closed_won",
        "proposal",
        "closed_won",
        "closed_lost",
        "closed_won",
        "opportunity",
        "closed_won",
        "closed_won",
    ]
    assert deals["won"].tolist()[:4] == [True, pd.NA, True, False]
    notes = " ".join(result.notes)
    assert "'Firmas' -> closed_won (IsClosed, IsWon)" in notes
    assert "'Perdida' -> closed_lost (IsClosed, not IsWon)" in notes
    assert "'Presentación Propuesta' -> opportunity (ForecastCategory Pipeline)" in notes
    # a stage only the history has: its ForecastCategory
    assert "'Prospección' -> opportunity (ForecastCategory Pipeline)" in notes


def test_a_stage_map_in_the_config_wins(hash_key):
    res = import_source(
        "salesforce",
        SF,
        timezone=TZ,
        encoding="cp1252",
        config={"stages": {"Negociación": "opportunity", "firmas": "closed_won"}},
    )
    deals = res.tables["deals"].set_index("deal_id")
    assert deals.loc["0065e00000opp02AAA", "stage"] == "opportunity"
    assert "'Negociación' -> opportunity (config)" in " ".join(res.notes)
    with pytest.raises(DataValidationError, match="stage map value 'won' is not one of opportunity"):
        import_source("salesforce", SF, timezone=TZ, encoding="cp1252", config={"stages": {"Firmas": "won"}})


def test_dates_naive_report_form_and_date_only_are_local_time(result):
    deals = result.tables["deals"].set_index("deal_id")
    # '2/23/26 08:55 PM' in Mexico City (UTC-6) is 02:55 UTC the next day
    assert deals.loc["0065e00000opp02AAA", "created_at"] == T("2026-02-24T02:55:00Z")
    # a close date is midnight in the org's zone; open deals have none (CloseDate is a forecast)
    assert deals.loc["0065e00000opp03AAA", "closed_at"] == T("2026-03-02T06:00:00Z")
    assert pd.isna(deals.loc["0065e00000opp02AAA", "closed_at"])
    leads = result.tables["leads"].set_index("person_id")
    assert leads.loc[hashed("jose.nunez@acme.mx"), "created_at"] == T("2026-01-05T15:20:00Z")
    assert "Opportunity.csv: dates read as month/day/year, as '1/15/26 10:30 AM'" in " ".join(result.notes)


def test_people_are_leads_and_contacts_folded_by_person(result):
    leads = result.tables["leads"]
    expected = {
        hashed(e)
        for e in [
            "jose.nunez@acme.mx",
            "maria@andes.co",
            "bob@lima.pe",
            "ann@open.com",
            "cy@direct.com",
            "pilar@acme.mx",
            "luis@acme.mx",
        ]
    }
    assert set(leads["person_id"]) == expected and len(leads) == 7
    c = result.report.counts["leads"]
    # 5 leads + 6 contacts read; the 4 contacts leads were converted into fold into those leads
    assert (c["rows_in"], c["rows_kept"], c["rows_collapsed"], c["rows_rejected"]) == (11, 7, 4, 0)


def test_contact_roles_become_the_deals_buying_committee(result):
    dc = result.tables["deal_contacts"]
    first = dc[dc["deal_id"] == "0065e00000opp01AAA"].sort_values("role")
    assert first[["person_id", "role", "is_primary"]].values.tolist() == [
        [hashed("jose.nunez@acme.mx"), "Decision Maker", True],
        [hashed("pilar@acme.mx"), "Economic Buyer", False],
        [hashed("luis@acme.mx"), "Technical Buyer", False],
    ]
    c = result.report.counts["deal_contacts"]
    assert (c["rows_in"], c["rows_kept"], c["rows_rejected"]) == (7, 6, 1)
    gone = [p for p in result.report.problems if p.table == "deal_contacts" and p.severity == "rejected"]
    assert gone[0].rows == (5,) and gone[0].reason == "person_id not found in leads.person_id"


def test_opportunity_history_counts_every_row_of_the_file(result):
    hist = result.tables["stage_history"]
    assert hist[hist["deal_id"] == "0065e00000opp01AAA"][["stage", "entered_at"]].values.tolist() == [
        ["opportunity", T("2026-01-15T16:30:00Z")],
        ["proposal", T("2026-02-01T16:00:00Z")],
        ["closed_won", T("2026-02-23T18:00:00Z")],
    ]
    c = result.report.counts["stage_history"]
    assert (c["rows_in"], c["rows_kept"], c["rows_collapsed"]) == (6, 5, 1)
    assert c["rows_in"] == c["rows_kept"] + c["rows_rejected"] + c["rows_collapsed"] + c["rows_filtered"]


def test_campaign_responses_are_offline_touches_of_their_people(result):
    t = result.tables["touchpoints"]
    assert t[["timestamp", "source", "medium", "campaign", "interaction_type"]].values.tolist() == [
        [T("2026-01-02T06:00:00Z"), "trade show", "offline", "Expo Lima 2026", "offline"],
        [T("2026-01-20T06:00:00Z"), "webinar", "offline", "Webinar Fintech Enero", "offline"],
    ]
    ident = result.tables["identities"]
    assert ident["person_id"].tolist() == [hashed("bob@lima.pe"), hashed("pilar@acme.mx")]
    assert ident["method"].tolist() == ["crm_import", "crm_import"]
    c = result.report.counts["touchpoints"]
    assert (c["rows_in"], c["rows_kept"], c["rows_filtered"]) == (3, 2, 1)  # 'Sent', not responded


def test_every_table_adds_up(result):
    for name, c in result.report.counts.items():
        assert (
            c["rows_in"] == c["rows_kept"] + c["rows_rejected"] + c["rows_collapsed"] + c["rows_filtered"]
        ), name


def _copy(tmp_path: Path, **replace: str) -> Path:
    folder = tmp_path / "sf"
    shutil.copytree(SF, folder)
    for name, (old, new) in ((k, v.split("=>")) for k, v in replace.items()):
        path = folder / f"{name}.csv"
        text = path.read_bytes().decode("cp1252").replace(old, new)
        path.write_bytes(text.encode("cp1252"))
    return folder


def test_windows_1252_without_an_encoding_is_refused_with_the_option_to_pass(hash_key):
    with pytest.raises(
        DataValidationError,
        match=r"Account.csv: not UTF-8: byte 0xe9 at line 2; .*--encoding "
        r"cp1252",
    ):
        import_source("salesforce", SF, timezone=TZ)


def test_ambiguous_dates_are_refused_without_a_date_format(tmp_path, hash_key):
    folder = tmp_path / "sf"
    folder.mkdir()
    (folder / "Opportunity.csv").write_text(
        "Id,StageName,Amount,CurrencyIsoCode,CloseDate,CreatedDate,IsClosed,IsWon\n"
        "0065e00000opp01,Closed Won,10,USD,2/3/26,1/2/26,1,1\n"
        "0065e00000opp02,Closed Won,20,USD,4/5/26,3/4/26,1,1\n"
    )
    with pytest.raises(DataValidationError) as err:
        import_source("salesforce", folder, timezone=TZ)
    assert str(err.value) == (
        f"{folder / 'Opportunity.csv'}, column 'created_at', rows 1, 2: ambiguous date "
        "'1/2/26': month/day or day/month? No value in the file tells; set date_format: "
        "MDY (or DMY) in the import config"
    )
    res = import_source("salesforce", folder, timezone=TZ, config={"date_format": "DMY"})
    assert res.tables["deals"]["closed_at"].tolist() == [T("2026-03-02T06:00:00Z"), T("2026-05-04T06:00:00Z")]


def test_a_currency_code_that_is_not_iso_4217_is_rejected_with_its_row(tmp_path, hash_key):
    folder = _copy(tmp_path, Opportunity='"30000","PEN"=>"30000","S/."')
    res = import_source("salesforce", folder, timezone=TZ, encoding="cp1252")
    bad = [p for p in res.report.problems if p.table == "deals" and p.severity == "rejected"]
    assert [(p.column, p.rows, p.reason) for p in bad] == [
        ("currency", (8,), "not an ISO 4217 currency code: 'S/.' (three letters, e.g. USD, EUR, MXN)")
    ]


def test_an_opportunitystage_export_declares_custom_stages(tmp_path, hash_key):
    folder = _copy(tmp_path)
    (folder / "OpportunityStage.csv").write_bytes(
        "MasterLabel,IsActive,IsClosed,IsWon,ForecastCategory,DefaultProbability\r\n"
        "Negociación,true,false,false,Pipeline,30\r\n".encode("cp1252")
    )
    res = import_source("salesforce", folder, timezone=TZ, encoding="cp1252")
    assert res.tables["deals"].set_index("deal_id").loc["0065e00000opp02AAA", "stage"] == "opportunity"
    assert "'Negociación' -> opportunity (OpportunityStage: ForecastCategory Pipeline)" in " ".join(res.notes)


def test_the_command_reads_a_yaml_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLOSEDLOOP_HASH_KEY", "test-key")
    config = tmp_path / "import.yaml"
    config.write_text("stages:\n  Negociación: opportunity\ndate_format: MDY\n", "utf-8")
    out = tmp_path / "D"
    argv = [
        "import",
        "salesforce",
        str(SF),
        "--timezone",
        TZ,
        "--encoding",
        "cp1252",
        "--config",
        str(config),
    ]
    assert main([*argv, "--out", str(out)]) == 0, capsys.readouterr().err
    deals = pd.read_parquet(out / "deals.parquet").set_index("deal_id")
    assert deals.loc["0065e00000opp02AAA", "stage"] == "opportunity"
    assert "dates read as month/day/year (date_format)" in (out / "import_report.txt").read_text("utf-8")


def test_campaign_responses_grouped_by_the_configs_channel_rules(tmp_path, hash_key):
    rules = tmp_path / "channels.yaml"
    rules.write_text(
        "extends: ga4-default\nrules:\n"
        "  - channel: Events\n"
        "    all: [{field: medium, equals: offline}, {field: source, in: [trade show, webinar]}]\n"
    )
    res = import_source(
        "salesforce", SF, timezone=TZ, encoding="cp1252", config={"channel_rules": str(rules)}
    )
    assert res.tables["touchpoints"]["channel"].tolist() == ["Events", "Events"]


def test_an_export_without_its_key_column_is_refused_in_words(tmp_path, hash_key):
    folder = tmp_path / "sf"
    folder.mkdir()
    (folder / "Opportunity.csv").write_text(
        "Name,StageName,CreatedDate\nAcme,Closed Won,2026-01-01T00:00:00Z\n"
    )
    with pytest.raises(DataValidationError) as err:
        import_source("salesforce", folder, timezone=TZ)
    assert str(err.value) == (
        f"{folder / 'Opportunity.csv'}, column 'Id': the Opportunity export has no "
        "Id / Opportunity ID column; the file has: Name, StageName, CreatedDate"
    )

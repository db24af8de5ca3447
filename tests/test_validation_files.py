"""A table built from several files (an import's leads from Salesforce's Lead and Contact exports):
every problem names the file its rows came from, with the rows numbered within that file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from closedloop_nb.imports import import_source
from closedloop_nb.loaders import FILE, ROW
from closedloop_nb.validation import validate_tables

SF = Path(__file__).parent / "data" / "exports" / "crm" / "salesforce"


def two_files(frame_a: pd.DataFrame, frame_b: pd.DataFrame) -> pd.DataFrame:
    """Two exports' rows as an import hands them to validation: their file and row in that file."""
    a = frame_a.assign(**{FILE: "exports/Lead.csv", ROW: range(1, len(frame_a) + 1)})
    b = frame_b.assign(**{FILE: "exports/Contact.csv", ROW: range(1, len(frame_b) + 1)})
    return pd.concat([a, b], ignore_index=True)


def where(report, column):
    return [(p.file, p.rows, p.n_rows, p.severity) for p in report.problems if p.column == column]


def test_row_problems_name_each_rows_own_file_and_row():
    leads = two_files(
        pd.DataFrame({"person_id": ["p1", "p2", "p3"],
                      "created_at": ["2024-01-02T10:00:00Z", "soon", "2024-01-03T10:00:00Z"]}),
        pd.DataFrame({"person_id": ["p4", "p5"], "created_at": ["later", "2024-01-05T10:00:00Z"]}))
    ds = validate_tables({"leads": leads})
    # row 2 of the Lead export and row 1 of the Contact export, each named where it is
    assert where(ds.report, "created_at") == [("exports/Lead.csv", (2,), 1, "rejected"),
                                              ("exports/Contact.csv", (1,), 1, "rejected")]
    assert ds.report.counts["leads"]["rows_rejected"] == 2 and len(ds.tables["leads"]) == 3


def test_a_key_repeated_across_the_files_names_both_copies():
    leads = two_files(pd.DataFrame({"person_id": ["p1", "p2"], "created_at": ["2024-01-02T10:00:00Z"] * 2}),
                      pd.DataFrame({"person_id": ["p3", "p2"], "created_at": ["2024-02-02T10:00:00Z"] * 2}))
    ds = validate_tables({"leads": leads})
    assert where(ds.report, "person_id") == [("exports/Lead.csv", (2,), 1, "rejected"),
                                             ("exports/Contact.csv", (2,), 1, "rejected")]


def test_orphans_and_their_money_are_counted_per_file():
    leads = pd.DataFrame({"person_id": ["p1"], "created_at": ["2024-01-02T10:00:00Z"]})
    deals = two_files(
        pd.DataFrame({"deal_id": ["d1", "d2"], "person_id": ["p1", "ghost"], "amount": [10.0, 20.0],
                      "created_at": ["2024-01-03T10:00:00Z"] * 2}),
        pd.DataFrame({"deal_id": ["d3"], "person_id": ["nobody"], "amount": [300.0],
                      "created_at": ["2024-01-04T10:00:00Z"]}))
    ds = validate_tables({"leads": leads, "deals": deals})
    orphans = [(p.file, p.rows, p.value) for p in ds.report.problems if p.table == "deals"]
    assert orphans == [("exports/Lead.csv", (2,), 20.0), ("exports/Contact.csv", (1,), 300.0)]


def test_a_whole_table_problem_names_every_file():
    leads = two_files(pd.DataFrame({"person_id": ["p1"]}), pd.DataFrame({"person_id": ["p2"]}))
    report = validate_tables({"leads": leads}).report
    [missing] = [p for p in report.problems if p.column == "created_at"]
    assert missing.severity == "error" and missing.file == "exports/Lead.csv, exports/Contact.csv"


def test_ids_generated_from_rows_of_two_files_do_not_collide():
    # orders without an order id get one from their file and row: row 1 of two files is two orders
    a = pd.DataFrame({"customer_id": ["c1"], "timestamp": ["2024-01-02T10:00:00Z"], "amount": [5.0]})
    orders = pd.concat([a.assign(**{FILE: "in/shop.csv", ROW: [1]}),
                        a.assign(**{FILE: "in/marketplace.csv", ROW: [1]})], ignore_index=True)
    ds = validate_tables({"orders": orders})
    assert sorted(ds.tables["orders"]["order_id"]) == ["marketplace:1", "shop:1"]
    assert ds.report.counts["orders"]["rows_kept"] == 2


def test_rows_are_numbered_within_their_file_when_the_frame_gives_no_row_numbers():
    leads = pd.DataFrame({"person_id": ["p1", "p2", "p3"],
                          "created_at": ["2024-01-02T10:00:00Z", "2024-01-02T10:00:00Z", "soon"],
                          FILE: ["a.csv", "a.csv", "b.csv"]})
    assert where(validate_tables({"leads": leads}).report, "created_at") == [("b.csv", (1,), 1, "rejected")]


def test_touches_no_rule_groups_are_reported_per_file():
    touches = pd.concat([
        pd.DataFrame({"visitor_id": ["v1", "v2"], "timestamp": ["2024-01-02T10:00:00Z"] * 2,
                      "source": ["google", "mystery"], "medium": ["cpc", "smoke"],
                      FILE: "events_1.csv", ROW: [1, 2]}),
        pd.DataFrame({"visitor_id": ["v3"], "timestamp": ["2024-01-03T10:00:00Z"], "source": ["riddle"],
                      "medium": ["fog"], FILE: "events_2.csv", ROW: [1]})], ignore_index=True)
    ds = validate_tables({"touchpoints": touches})
    unassigned = [(p.file, p.rows, p.n_rows, "riddle" in p.reason) for p in ds.report.problems
                  if p.column == "channel"]
    assert unassigned == [("events_1.csv", (2,), 1, False), ("events_2.csv", (1,), 1, True)]
    assert ds.tables["touchpoints"]["channel"].tolist() == ["Paid Search", "Unassigned", "Unassigned"]


def test_a_salesforce_import_names_the_lead_and_the_contact_export(tmp_path, hash_key):
    folder = tmp_path / "sf"
    shutil.copytree(SF, folder)
    for name, row, bad in (("Lead.csv", 4, "pronto"), ("Contact.csv", 6, "luego")):
        lines = (folder / name).read_bytes().split(b"\r\n" if b"\r\n" in (folder / name).read_bytes()
                                                   else b"\n")
        fields = lines[row].split(b",")
        header = lines[0].split(b",")
        fields[header.index(b'"CREATEDDATE"')] = b'"' + bad.encode() + b'"'
        lines[row] = b",".join(fields)
        (folder / name).write_bytes(b"\n".join(lines))
    res = import_source("salesforce", folder, timezone="America/Mexico_City", encoding="cp1252")
    dates = [(Path(p.file).name, p.rows, p.reason) for p in res.report.problems
             if p.table == "leads" and p.column == "created_at"]
    assert sorted(dates) == [("Contact.csv", (6,), "not a timestamp (ISO 8601 expected): 'luego'"),
                             ("Lead.csv", (4,), "not a timestamp (ISO 8601 expected): 'pronto'")]

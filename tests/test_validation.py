"""The bad-input corpus: every broken file is refused or its bad rows counted, with file, column,
rows and reason in the message."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from closedloop_nb import DataValidationError, load_dataset, validate_tables
from closedloop_nb.errors import Problem

BAD = Path(__file__).parent / "data" / "bad"


def load(table: str, name: str, with_leads: bool = False, **kw) -> tuple:
    source = {table: BAD / name}
    if with_leads:
        source["leads"] = BAD / "leads.csv"
    ds = load_dataset(source, **kw)
    problems = [p for p in ds.report.problems if p.table == table]
    return ds, problems


def only(problems: list[Problem], severity: str) -> Problem:
    found = [p for p in problems if p.severity == severity]
    assert len(found) == 1, problems
    return found[0]


def test_missing_required_column_is_fatal_and_named():
    ds, problems = load("deals", "deals_missing_column.csv")
    p = only(problems, "error")
    assert p.column == "amount"
    assert "missing required column" in p.reason
    assert "deals_missing_column.csv" in p.message()
    assert "deals" not in ds.tables
    with pytest.raises(DataValidationError, match="column 'amount'"):
        ds.report.raise_for_errors()


def test_column_of_wrong_type_is_fatal():
    _, problems = load("deals", "deals_wrong_type.csv", with_leads=True)
    p = only(problems, "error")
    assert p.column == "amount"
    assert "wrong type" in p.reason and "'ten thousand'" in p.reason


def test_non_numeric_amount_rejects_that_row_only():
    ds, problems = load("deals", "deals_non_numeric.csv", with_leads=True)
    p = only(problems, "rejected")
    assert (p.column, p.rows, p.n_rows) == ("amount", (3,), 1)
    assert "not a number" in p.reason and "£1.5k" in p.reason
    assert ds.tables["deals"]["deal_id"].tolist() == ["D1", "D2"]
    assert ds.report.counts["deals"]["rows_rejected"] == 1


def test_negative_amount_is_rejected_and_its_value_counted():
    ds, problems = load("deals", "deals_negative.csv", with_leads=True)
    p = only(problems, "rejected")
    assert (p.column, p.rows, p.reason) == ("amount", (2,), "negative amount")
    assert p.message() == f"{BAD / 'deals_negative.csv'}, column 'amount', row 2: negative amount"
    counts = ds.report.counts["deals"]
    # money is counted unsigned: the rejected -250 is 250 of money on rejected rows
    assert counts["value_in"] == 1000 + 250 + 300
    assert counts["value_kept"] == 1300 and counts["value_rejected"] == 250
    assert counts["value_in"] == counts["value_kept"] + counts["value_rejected"]


def test_duplicate_ids_with_different_values_reject_every_copy():
    ds, problems = load("deals", "deals_duplicate_ids.csv", with_leads=True)
    p = only(problems, "rejected")
    assert p.column == "deal_id" and p.rows == (1, 3)
    assert "duplicate deal_id" in p.reason and "D1" in p.reason
    assert ds.tables["deals"]["deal_id"].tolist() == ["D2"]


def test_exact_duplicate_rows_are_folded_and_counted():
    df = pd.DataFrame({"person_id": ["P1", "P1"], "created_at": ["2024-01-01T00:00:00Z"] * 2})
    ds = validate_tables({"leads": df})
    p = only(ds.report.problems, "collapsed")
    assert p.rows == (2,)
    assert len(ds.tables["leads"]) == 1
    assert ds.report.counts["leads"]["rows_collapsed"] == 1


def test_deal_pointing_at_unknown_person_is_rejected():
    ds, problems = load("deals", "deals_orphan.csv", with_leads=True)
    p = only(problems, "rejected")
    assert (p.column, p.rows) == ("person_id", (2,))
    assert p.reason == "person_id not found in leads.person_id"
    assert p.value == 1200
    assert ds.tables["deals"]["deal_id"].tolist() == ["D1"]


def test_unparseable_timestamp_rejects_the_row():
    ds, problems = load("touchpoints", "touchpoints_unparseable.csv")
    p = only(problems, "rejected")
    assert (p.column, p.rows) == ("timestamp", (2,))
    assert "'yesterday afternoon'" in p.reason
    ts = ds.tables["touchpoints"]["timestamp"]
    assert str(ts.dtype) == "datetime64[us, UTC]"
    # the +01:00 offset is honoured: 11:00 at +01:00 is 10:00 UTC
    assert ts.iloc[1] == pd.Timestamp("2024-01-06T10:00:00Z")


def test_naive_timestamps_need_a_time_zone():
    _, problems = load("touchpoints", "touchpoints_naive.csv")
    p = only(problems, "error")
    assert p.column == "timestamp" and "no time zone" in p.reason and "timezone=" in p.reason


def test_naive_timestamps_with_an_explicit_time_zone_are_converted_to_utc():
    ds, problems = load("touchpoints", "touchpoints_naive.csv", timezone="America/New_York")
    assert not [p for p in problems if p.severity in ("error", "rejected")]
    # 10:00 in New York in January (EST, UTC-5) is 15:00 UTC
    assert ds.tables["touchpoints"]["timestamp"].iloc[0] == pd.Timestamp("2024-01-05T15:00:00Z")


def test_naive_timestamp_among_aware_ones_is_rejected():
    _, problems = load("touchpoints", "touchpoints_mixed_tz.csv")
    p = only(problems, "rejected")
    assert (p.column, p.rows) == ("timestamp", (2,))
    assert "no time zone" in p.reason


def test_empty_file_is_refused():
    with pytest.raises(DataValidationError, match=r"leads_empty.csv: empty file"):
        load("leads", "leads_empty.csv")


def test_non_utf8_file_is_refused_with_line_and_byte():
    with pytest.raises(DataValidationError) as info:
        load("leads", "leads_non_utf8.csv")
    msg = str(info.value)
    assert "leads_non_utf8.csv" in msg and "not UTF-8" in msg
    assert "byte 0xe9 at line 3" in msg


def test_unknown_enumeration_value_is_rejected_with_the_valid_choices():
    _, problems = load("subscriptions", "subscriptions_bad_movement.csv")
    p = only(problems, "rejected")
    assert (p.column, p.rows) == ("movement", (2,))
    assert "'upgrade'" in p.reason and "expansion" in p.reason


def test_missing_required_value_is_rejected():
    df = pd.DataFrame({"visitor_id": ["v1", None], "timestamp": ["2024-01-01T00:00:00Z"] * 2,
                       "source": ["google"] * 2, "medium": ["cpc"] * 2})
    ds = validate_tables({"touchpoints": df})
    p = only(ds.report.problems, "rejected")
    assert (p.column, p.rows, p.reason) == ("visitor_id", (2,), "missing value")


def test_rejecting_a_parent_row_makes_its_children_orphans():
    leads = pd.DataFrame({"person_id": ["P1", "P2"],
                          "created_at": ["2024-01-01T00:00:00Z", "bad"]})
    deals = pd.DataFrame({"deal_id": ["D1", "D2"], "person_id": ["P1", "P2"],
                          "created_at": ["2024-02-01T00:00:00Z"] * 2, "amount": [10.0, 20.0]})
    ds = validate_tables({"leads": leads, "deals": deals})
    assert ds.tables["deals"]["deal_id"].tolist() == ["D1"]
    assert ds.report.counts["deals"]["value_rejected"] == 20.0


def test_every_row_is_accounted_for():
    ds, _ = load("deals", "deals_duplicate_ids.csv", with_leads=True)
    for c in ds.report.counts.values():
        assert c["rows_in"] == c["rows_kept"] + c["rows_rejected"] + c["rows_collapsed"] + c["rows_filtered"]


def test_report_renders_as_text_and_html():
    ds, _ = load("deals", "deals_negative.csv", with_leads=True)
    assert "negative amount" in ds.report.to_text()
    html = ds.report._repr_html_()
    assert "<table" in html and "negative amount" in html
    assert "1 rows rejected" in repr(ds.report)


def test_local_time_skipped_by_a_clock_change_is_rejected_not_lost():
    # 2024-03-31 01:30 does not exist in London: clocks went from 01:00 to 02:00 GMT->BST
    df = pd.DataFrame({"person_id": ["P1", "P2"],
                       "created_at": ["2024-03-31 00:30:00", "2024-03-31 01:30:00"]})
    ds = validate_tables({"leads": df}, timezone="Europe/London")
    p = only(ds.report.problems, "rejected")
    assert (p.column, p.rows) == ("created_at", (2,)) and "clock change" in p.reason
    assert ds.tables["leads"]["created_at"].tolist() == [pd.Timestamp("2024-03-31T00:30:00Z")]


def test_a_date_without_a_time_takes_the_given_time_zone():
    # "2024-02-15" ends in "-15", which is not a UTC offset: the day starts at midnight in London
    # (UTC+0 in February) and in New York (UTC-5), not at midnight UTC in both
    leads = pd.DataFrame({"person_id": ["p1", "p2"],
                          "created_at": ["2024-02-15", "2024-02-15T10:00:00-05:00"]})
    london = validate_tables({"leads": leads}, timezone="Europe/London").tables["leads"]["created_at"]
    new_york = validate_tables({"leads": leads}, timezone="America/New_York").tables["leads"]["created_at"]
    assert london.iloc[0] == pd.Timestamp("2024-02-15T00:00:00Z")
    assert new_york.iloc[0] == pd.Timestamp("2024-02-15T05:00:00Z")
    assert london.iloc[1] == new_york.iloc[1] == pd.Timestamp("2024-02-15T15:00:00Z")

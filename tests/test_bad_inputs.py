"""Issue 16's input probes: every broken file in tests/data/bad/ ends in a refusal naming file, column,
rows and reason, a counted problem in the validation report, or a correct result; never a traceback.

Each test states the exact outcome: the message, the counts, and the exit code of `closedloop
validate` (run in-process through `cli.main`, which is what the console script calls; one test runs
the real script to check that no traceback reaches the terminal).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from closedloop_nb import DataValidationError, load_dataset, validate_tables
from closedloop_nb.attribution import PathTable, read_paths
from closedloop_nb.cli import main
from closedloop_nb.safe_csv import write_csv
from closedloop_nb.validation import InputLimits

BAD = Path(__file__).parent / "data" / "bad"
EXPORTS = Path(__file__).parent / "data" / "exports"


def validate(name: str, *extra: str, capsys) -> tuple[int, str, str]:
    """`closedloop validate tests/data/bad/<name> --table <prefix>`: exit code, stdout, stderr."""
    code = main(["validate", str(BAD / name), "--table", name.split("_")[0], *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


def problems(ds, severity: str | None = None) -> list:
    return [p for p in ds.report.problems if severity is None or p.severity == severity]


def reconciles(counts: dict) -> bool:
    return counts["rows_in"] == (counts["rows_kept"] + counts["rows_rejected"] + counts["rows_collapsed"]
                                 + counts["rows_filtered"])


# --- files cut short or malformed ---------------------------------------------------------------


def test_csv_cut_mid_row_rejects_the_cut_row(capsys):
    code, _, err = validate("deals_cut_mid_row.csv", capsys=capsys)
    assert code == 1
    assert (f"{BAD / 'deals_cut_mid_row.csv'}, row 3: row has fewer fields than the header's 5 (the file may "
            "be cut short, or a delimiter is missing); row left out") in err
    ds = load_dataset({"deals": BAD / "deals_cut_mid_row.csv"})
    assert ds.tables["deals"]["deal_id"].tolist() == ["D1", "D2"]
    c = ds.report.counts["deals"]
    assert (c["rows_in"], c["rows_kept"], c["rows_rejected"]) == (3, 2, 1) and reconciles(c)
    assert not [p for p in problems(ds, "warning") if "line break" in p.reason]  # the cut row was left out


def test_complete_last_row_without_line_break_is_flagged(tmp_path):
    path = tmp_path / "deals.csv"
    path.write_text("deal_id,person_id,created_at,amount\nD1,P1,2024-01-05T10:00:00Z,1000\n"
                    "D2,P1,2024-01-06T10:00:00Z,12")  # "12" may be "1200" cut short
    ds = load_dataset({"deals": path})
    (p,) = problems(ds, "warning")
    assert (p.rows, p.n_rows) == ((2,), 1) and "may be cut short" in p.reason
    assert len(ds.tables["deals"]) == 2


def test_row_with_an_extra_field_is_rejected_and_the_rows_after_keep_their_numbers(capsys):
    code, _, err = validate("deals_extra_field.csv", capsys=capsys)
    assert code == 1 and "deals_extra_field.csv, row 2: row has more fields than the header's 5" in err
    ds = load_dataset({"deals": BAD / "deals_extra_field.csv"})
    assert ds.tables["deals"]["deal_id"].tolist() == ["D1", "D3"]
    assert reconciles(ds.report.counts["deals"])


def test_truncated_parquet_is_refused_without_a_traceback(capsys):
    code, _, err = validate("deals_truncated.parquet", capsys=capsys)
    assert code == 1
    assert err.startswith(f"error: {BAD / 'deals_truncated.parquet'}: not a readable Parquet file "
                          "(truncated or corrupt?)")
    assert "Traceback" not in err


def test_the_console_script_prints_no_traceback_for_broken_files():
    script = Path(sys.executable).parent / "closedloop"
    for name in ("deals_truncated.parquet", "deals_cut_mid_row.csv", "touchpoints_duplicate_header.csv"):
        out = subprocess.run([str(script), "validate", str(BAD / name), "--table", name.split("_")[0]],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 1 and "Traceback" not in out.stderr and name in out.stderr


# --- header problems ----------------------------------------------------------------------------


def test_duplicated_header_column_is_refused_naming_both_positions(capsys):
    code, _, err = validate("touchpoints_duplicate_header.csv", capsys=capsys)
    assert code == 1
    assert (f"{BAD / 'touchpoints_duplicate_header.csv'}, column 'campaign': the header names this column 2 "
            "times (columns 5, 7) with different values") in err


def test_duplicated_header_column_with_equal_copies_is_kept_once(tmp_path):
    path = tmp_path / "leads.csv"
    path.write_text("person_id,created_at,person_id\nP1,2024-01-02T09:00:00Z,P1\n")
    ds = load_dataset({"leads": path})
    (p,) = problems(ds, "warning")
    assert p.column == "person_id" and "kept once" in p.reason
    assert ds.tables["leads"]["person_id"].tolist() == ["P1"]


def test_misspelled_optional_column_is_named_with_the_right_name(capsys):
    code, out, _ = validate("touchpoints_misspelled_column.csv", capsys=capsys)
    assert code == 0
    assert ("column 'campaing': not a column of touchpoints, ignored: did you mean 'campaign'?") in out


def test_misspelled_required_column_gets_a_hint():
    df = pd.DataFrame({"deal_id": ["D1"], "person_id": ["P1"], "created_at": ["2024-01-05T10:00:00Z"],
                       "amonut": ["10"]})
    (p,) = problems(validate_tables({"deals": df}), "error")
    assert p.column == "amount" and "(is 'amonut' a misspelling of it?)" in p.reason


def test_semicolon_delimited_file_is_read_with_its_delimiter(capsys):
    code, out, _ = validate("deals_semicolon.csv", capsys=capsys)
    assert code == 0 and "semicolon-delimited file: read with ';' as the delimiter" in out
    ds = load_dataset({"deals": BAD / "deals_semicolon.csv"})
    assert ds.tables["deals"]["amount"].tolist() == [1000.5, 1200.0]


# --- numbers ------------------------------------------------------------------------------------


def test_decimal_commas_are_refused_row_by_row_and_comma_thousands_read(capsys):
    code, _, err = validate("deals_decimal_comma.csv", capsys=capsys)
    assert code == 1
    assert "column 'amount', rows 1, 2: ambiguous decimal or thousands separators ('1.000,50', '1,5')" in err
    ds = load_dataset({"deals": BAD / "deals_decimal_comma.csv"})
    assert ds.tables["deals"]["amount"].tolist() == [1234.5, 250.0]  # "1,234.50" is unambiguous


def test_infinite_and_overflowing_amounts_are_rejected_and_totals_stay_finite(capsys):
    code, _, err = validate("deals_non_finite.csv", capsys=capsys)
    assert code == 1
    assert "column 'amount', rows 1, 2: not a finite number ('inf', '1e309')" in err
    assert ("column 'amount', rows 3, 4: implausible amount: above 1,000,000,000,000 in absolute value "
            "(max_amount)") in err
    ds = load_dataset({"deals": BAD / "deals_non_finite.csv"})
    c = ds.report.counts["deals"]
    assert (c["value_in"], c["value_kept"], c["rows_kept"]) == (500.0, 500.0, 1)


def test_without_an_amount_limit_an_overflowing_total_is_refused():
    ds = load_dataset({"deals": BAD / "deals_non_finite.csv"}, limits=InputLimits(max_amount=None))
    (p,) = problems(ds, "error")
    assert p.column == "amount" and "total overflows" in p.reason
    assert "deals" not in ds.tables


# --- dates, ids and text ------------------------------------------------------------------------


def test_implausible_years_are_rejected_by_a_configurable_window(capsys):
    code, _, err = validate("leads_implausible_years.csv", capsys=capsys)
    assert code == 1
    assert ("column 'created_at', rows 1, 2, 3, 4: implausible date (year 1, 1900, 2200, 9999): outside "
            "1990-01-01 to 2100-01-01 (date_window)") in err
    wide = load_dataset({"leads": BAD / "leads_implausible_years.csv"},
                        limits=InputLimits(date_window=("1800-01-01", "2300-01-01")))
    (p,) = problems(wide, "rejected")
    assert p.rows == (1, 4)
    code, _, _ = validate("leads_implausible_years.csv", "--date-window", "none", capsys=capsys)
    assert code == 0


@pytest.mark.parametrize("typed", ["with a zone", "naive, with a timezone given"])
def test_implausible_years_in_typed_timestamps_are_rejected_too(tmp_path, typed):
    # Parquet and database exports carry timestamps as timestamps, not text: a 1900 placeholder there
    # is as implausible as in a CSV (the window once applied to text only)
    when = pd.to_datetime(["1900-01-01 00:00", "2200-03-01 09:00", "2024-01-02 09:00", "2024-02-03 10:00"])
    zoned = typed == "with a zone"
    frame = pd.DataFrame({"person_id": ["P1", "P2", "P3", "P4"],
                          "created_at": when.tz_localize("UTC") if zoned else when})
    frame.to_parquet(tmp_path / "leads.parquet", index=False)
    ds = load_dataset({"leads": tmp_path / "leads.parquet"}, timezone=None if zoned else "Europe/London")
    (p,) = problems(ds, "rejected")
    assert (p.column, p.rows) == ("created_at", (1, 2))
    assert "implausible date (year 1900, 2200)" in p.reason
    assert ds.tables["leads"]["person_id"].tolist() == ["P3", "P4"]


def test_null_placeholders_are_missing_ids_and_touch_ids_are_generated_for_them_too(capsys):
    code, _, err = validate("touchpoints_null_ids.csv", capsys=capsys)
    assert code == 1
    assert ("column 'visitor_id', rows 1, 2, 3, 4: missing value (a placeholder for a missing id, 'NULL', "
            "'null', 'NaN')") in err
    ds = load_dataset({"touchpoints": BAD / "touchpoints_null_ids.csv"})
    # a NULL touch id and an empty one are treated alike: both generated from the row
    ids = ds.tables["touchpoints"]["touch_id"].tolist()
    assert ids == ["touchpoints_null_ids:5", "touchpoints_null_ids:6"]


def test_path_separator_in_names_is_replaced_and_counted(capsys):
    code, out, _ = validate("touchpoints_path_separator.csv", capsys=capsys)
    assert code == 0
    assert ("column 'channel', rows 1, 2: '>' separates the steps of path tables: replaced by '›' "
            "(e.g. 'Search › Paid'; kept)") in out
    ds = load_dataset({"touchpoints": BAD / "touchpoints_path_separator.csv"})
    assert ds.tables["touchpoints"]["channel"].tolist() == ["Search › Paid", "Search › Paid", "Email"]
    assert ds.tables["touchpoints"]["campaign"].tolist()[0] == "Brand › EU"
    with pytest.raises(ValueError, match="hold '>'"):
        PathTable.from_sequences([["Search > Paid", "Email"]], [1])


def test_deal_credits_work_with_a_path_separator_in_channel_names():
    import closedloop_nb.metrics as m
    from closedloop_nb.synth import generate

    frames = generate(1500, seed=3).frames()
    t = frames["touchpoints"]
    t["channel"] = t["channel"].astype(object).where(t["channel"] != "Paid Search", "Search > Paid")
    tables = validate_tables(frames).tables
    credits = m.deal_credits(tables, "linear")
    assert "Search › Paid" in set(credits["channel"])
    assert credits.groupby("deal_id")["share"].sum().round(9).eq(1).all()


def test_long_text_is_cut_at_a_configurable_limit_and_counted(capsys):
    code, out, _ = validate("touchpoints_long_campaign.csv", capsys=capsys)
    assert code == 0
    assert "column 'campaign', row 1: text longer than 1,000 characters: cut to 1,000" in out
    ds = load_dataset({"touchpoints": BAD / "touchpoints_long_campaign.csv"})
    assert ds.tables["touchpoints"]["campaign"].str.len().tolist() == [1000, 5]
    short = load_dataset({"touchpoints": BAD / "touchpoints_long_campaign.csv"},
                         limits=InputLimits(max_text_length=4))
    (p,) = [p for p in problems(short, "warning") if p.column == "campaign"]
    assert p.rows == (1, 2) and short.tables["touchpoints"]["campaign"].tolist() == ["spri", "shor"]


def test_a_megabyte_campaign_name_is_cut(tmp_path):
    path = tmp_path / "touchpoints.csv"
    path.write_text("visitor_id,timestamp,source,medium,campaign\n"
                    f"v1,2024-01-05T10:00:00Z,google,cpc,{'x' * 1_000_000}\n")
    ds = load_dataset(path.parent)
    assert ds.tables["touchpoints"]["campaign"].str.len().tolist() == [1000]


def test_an_over_long_id_is_rejected_not_cut():
    df = pd.DataFrame({"person_id": ["P" * 1001, "P2"], "created_at": ["2024-01-02T09:00:00Z"] * 2})
    ds = validate_tables({"leads": df})
    (p,) = problems(ds, "rejected")
    assert (p.column, p.rows, p.reason) == ("person_id", (1,), "id longer than 1,000 characters")


# --- privacy, money, messages -------------------------------------------------------------------


def test_reasons_never_echo_contact_details(capsys):
    code, out, err = validate("leads_contact_details.csv", capsys=capsys)
    assert code == 1
    assert "not a timestamp (ISO 8601 expected): 'call [phone]'" in out
    assert "duplicate person_id with different values (e.g. [email])" in out
    assert "example.com" not in out + err and "7946" not in out + err


def test_money_kept_never_exceeds_money_in():
    ds = load_dataset({"orders": BAD / "orders_refund.csv"})
    c = ds.report.counts["orders"]
    assert (c["value_in"], c["value_kept"], c["value_rejected"]) == (200.0, 160.0, 40.0)


def test_unmatched_channel_warning_names_its_rows(capsys):
    code, out, _ = validate("touchpoints_unmatched_channel.csv", capsys=capsys)
    assert code == 0
    assert ("column 'channel', rows 2, 4: no channel rule matched (e.g. weird-source / zzz; other-site / "
            "qqq): grouped as Unassigned (kept)") in out


def test_missing_hash_key_is_a_clear_refusal(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("CLOSEDLOOP_HASH_KEY", raising=False)
    monkeypatch.setenv("CLOSEDLOOP_HASH_KEY_FILE", str(tmp_path / "no-key"))
    with pytest.raises(DataValidationError, match="hubspot_contacts.csv: cannot hash its direct identifiers "
                                                  r"\(mapping hubspot_contacts\): .*CLOSEDLOOP_HASH_KEY"):
        load_dataset({"leads": EXPORTS / "hubspot_contacts.csv"}, mappings={"leads": "hubspot_contacts"})
    code = main(["validate", str(EXPORTS / "hubspot_contacts.csv"), "--table", "leads",
                 "--mapping", "hubspot_contacts"])
    assert code == 1 and "cannot hash its direct identifiers" in capsys.readouterr().err


# --- path tables and CSV outputs ----------------------------------------------------------------


def test_header_only_path_table_is_refused(capsys):
    code = main(["attribute", str(BAD / "paths_header_only.csv"), "--models", "linear"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == (f"error: {BAD / 'paths_header_only.csv'}: the path table has no rows (a header "
                           "only): no paths to attribute")


def test_non_finite_path_counts_are_refused(tmp_path):
    path = tmp_path / "paths.csv"
    path.write_text("path,total_conversions,total_conversion_value,total_null\nA,1,inf,0\nB,1,5,0\n")
    with pytest.raises(ValueError, match=r"'total_conversion_value'.*rows \[1\].*finite"):
        read_paths(path)


def test_csv_outputs_neutralise_formula_prefixes(tmp_path, capsys):
    code = main(["attribute", str(BAD / "paths_formula_names.csv"), "--models", "linear"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    channels = [line.split(",")[1] for line in lines[1:]]
    assert channels[:2] == ["'+cmd", "'-2"] and channels[-2:] == ["'@SUM(1+1)", "Email"]
    assert lines[3].startswith('linear,"\'=HYPERLINK(')
    out = tmp_path / "x.csv"
    write_csv(pd.DataFrame({"path": ["\tx > =y", "\rz"], "total_conversions": [-1, 2]}), out)
    back = pd.read_csv(out)
    assert back["path"].tolist() == ["'\tx > =y", "'\rz"] and back["total_conversions"].tolist() == [-1, 2]


# --- every file of the corpus -------------------------------------------------------------------


CORPUS = sorted(p.name for p in BAD.iterdir()
                if p.suffix in (".csv", ".parquet") and not p.name.startswith("paths"))


@pytest.mark.parametrize("name", CORPUS)
def test_every_corpus_file_is_refused_cleanly_or_reconciles(name):
    table = name.split("_")[0].split(".")[0]
    try:
        ds = load_dataset({table: BAD / name})
    except DataValidationError as exc:
        assert str(BAD / name) in str(exc)
        return
    for counts in ds.report.counts.values():
        assert reconciles(counts)
        if "value_in" in counts:
            assert counts["value_kept"] <= counts["value_in"]


def test_paths_on_a_truncated_table_file_is_refused(tmp_path, capsys):
    import shutil

    from closedloop_nb.config import SAMPLE_DIR

    for f in SAMPLE_DIR.glob("*.parquet"):
        shutil.copy(f, tmp_path / f.name)
    data = (tmp_path / "touchpoints.parquet").read_bytes()
    (tmp_path / "touchpoints.parquet").write_bytes(data[: len(data) // 2])
    code = main(["paths", str(tmp_path), "--out", str(tmp_path / "paths.csv")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"'{tmp_path / 'touchpoints.parquet'}'" in err and "damaged or truncated table file" in err

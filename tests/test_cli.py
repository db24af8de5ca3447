"""The `closedloop` console script, run as users run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd

from closedloop_nb.schema import TABLES

BAD = Path(__file__).parent / "data" / "bad"
SCRIPT = Path(sys.executable).parent / "closedloop"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


def test_help_lists_the_subcommands():
    out = run("--help")
    assert out.returncode == 0
    assert "synth" in out.stdout and "validate" in out.stdout


def test_synth_writes_every_table_and_the_ground_truth(tmp_path):
    out = run("synth", "--visitors", "3000", "--seed", "5", "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    for name in set(TABLES) - {"deal_contacts", "fx_rates"}:  # optional tables synth does not generate
        frame = pd.read_parquet(tmp_path / f"{name}.parquet")
        # every required column, in the schema's order (optional columns the generator has no values
        # for, such as spend.impressions or touchpoints.ad_group, may be left out)
        assert set(TABLES[name].required) <= set(frame.columns)
        assert list(frame.columns) == [c for c in TABLES[name].names if c in frame.columns]
    truth = pd.read_parquet(tmp_path / "ground_truth.parquet")
    assert {"channel", "incremental_effect", "expected_leads", "expected_revenue"} <= set(truth.columns)
    assert (tmp_path / "ground_truth.json").is_file()
    # and the written data validates, with only the deliberately unusable rows rejected
    check = run("validate", str(tmp_path), "--allow-rejects")
    assert check.returncode == 0, check.stderr
    assert "negative amount" in check.stdout


def test_validate_bad_file_exits_nonzero_naming_file_column_rows_and_reason():
    out = run("validate", str(BAD / "deals_negative.csv"), "--table", "deals")
    assert out.returncode == 1
    assert "deals_negative.csv, column 'amount', row 2: negative amount" in out.stderr


def test_validate_unreadable_file_exits_nonzero():
    out = run("validate", str(BAD / "leads_non_utf8.csv"), "--table", "leads")
    assert out.returncode == 1
    assert "leads_non_utf8.csv" in out.stderr and "not UTF-8" in out.stderr


def test_validate_table_from_file_name_and_writes_html(tmp_path):
    report = tmp_path / "q.html"
    out = run("validate", str(BAD / "leads.csv"), "--report", str(report))
    assert out.returncode == 0, out.stderr
    assert "<table" in report.read_text()


def test_validate_with_a_mapping_and_time_zone(monkeypatch):
    exports = Path(__file__).parent / "data" / "exports"
    out = run("validate", str(exports / "hubspot_deals.csv"), "--table", "deals",
              "--mapping", "hubspot_deals", "--timezone", "Europe/London")
    # the deal export alone has no person link: its deals are kept (they count in revenue), none rejected
    assert out.returncode == 0, out.stderr
    assert "No problems found." in out.stdout and "15000.0" in out.stdout


def test_validate_unknown_table_name_is_a_usage_error(tmp_path):
    path = tmp_path / "stuff.csv"
    path.write_text("a\n1\n")
    out = run("validate", str(path))
    assert out.returncode == 2 and "--table" in out.stderr


def test_attribute_writes_a_tidy_csv(tmp_path):
    import gzip

    src = tmp_path / "paths.csv.gz"
    with gzip.open(src, "wt") as f:
        f.write('path,total_conversions,total_conversion_value,total_null\n'
                '"Paid Search > Email",5,500,5\nEmail,1,100,9\n"Paid Search",2,150,8\n')
    out = tmp_path / "credit.csv"
    res = run("attribute", str(src), "--models", "first_touch,markov", "--order", "2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["model", "channel", "conversions", "value"]
    # first touch by hand: Paid Search first on 7 conversions (650), Email on 1 (100)
    ft = frame[frame.model == "first_touch"].set_index("channel")
    assert ft.loc["Paid Search", "conversions"] == 7 and ft.loc["Email", "value"] == 100
    assert frame.groupby("model")["conversions"].sum().tolist() == [8, 8]


def test_attribute_with_intervals_and_bad_model(tmp_path):
    src = tmp_path / "paths.csv"
    src.write_text('path,total_conversions,total_null\n"A > B",5,5\nB,1,9\n')
    res = run("attribute", str(src), "--models", "linear", "--ci", "--n-boot", "30")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "model,channel,conversions,value,lower,upper"
    bad = run("attribute", str(src), "--models", "linear,oracle")
    assert bad.returncode == 2 and "oracle" in bad.stderr


def test_paths_then_attribute(tmp_path):
    from closedloop_nb.config import SAMPLE_DIR

    out = tmp_path / "paths.csv.gz"
    res = run("paths", str(SAMPLE_DIR), "--conversion", "closed_won", "--lookback", "90", "--out", str(out))
    assert res.returncode == 0, res.stderr
    paths = pd.read_csv(out)
    assert list(paths.columns) == ["path", "total_conversions", "total_conversion_value", "total_null"]
    assert "unattributed" in res.stderr  # the reconciliation is printed
    credit = run("attribute", str(out), "--models", "linear")
    assert credit.returncode == 0, credit.stderr
    bad = run("paths", str(SAMPLE_DIR), "--conversion", "signup")
    assert bad.returncode == 1 and "closed_won" in bad.stderr

"""The presentation layer: formats from the column's meaning, nothing from the data runs or leaks."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pandas as pd
import pytest

from closedloop_nb import present as p
from closedloop_nb.metrics.periods import compare

IMG = "<img src=x onerror=alert(1)>"


@pytest.mark.parametrize(("value", "kind", "currency", "text"), [
    (530200.0, "money", "GBP", "£530,200"),
    (-875.4, "money", "GBP", "−£875"),
    (1234.6, "money", "NOK", "NOK 1,235"),
    (0.58, "percent", "", "58%"),
    (-0.0042, "percent", "", "−0.4%"),
    (0.4, "count", "", "< 1"),
    (12.6, "count", "", "13"),
    (9.6412, "ratio", "", "9.64"),
    (np.nan, "money", "GBP", "—"),
    (None, "ratio", "", "—"),
])
def test_figures_are_formatted_by_their_meaning(value, kind, currency, text):
    assert p.fmt(value, kind, currency) == text


def test_kinds_come_from_column_names():
    assert [p.kind_of(c) for c in ("revenue", "cac", "roi", "mql_rate_lower", "customers", "roas", "campaign",
                                   "median_days_from_lead")] == \
        ["money", "money", "percent", "percent", "count", "ratio", "text", "days"]


def perf() -> pd.DataFrame:
    return pd.DataFrame({"leads": [40.0, 12.0, 52.0], "customers": [5.2, 1.0, 6.2],
                         "revenue": [50_000.0, 9_000.0, 59_000.0], "spend": [4_000.0, 0.0, 4_000.0],
                         "roi": [11.5, np.nan, 13.75]},
                        index=pd.Index(["Paid Search", f"{IMG} ann@example.com", "Total"], name="channel"))


def test_table_escapes_masks_and_explains_empty_cells():
    html = p.table(perf(), "GBP", min_cell=0).to_html()
    assert IMG not in html and "ann@example.com" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "[email]" in html
    assert "£50,000" in html and "1,150%" in html and "—" in html
    assert "ROI: no spend is recorded for it" in html      # the footnote says why the cell is empty
    assert "border-top: 2px solid #888" in html            # the total row is set apart


def test_currency_codes_from_the_data_are_escaped():
    html = p.table(perf(), "<script>x</script>", min_cell=0).to_html()
    assert "<script>x" not in html and "&lt;script&gt;x&lt;/script&gt; 50,000" in html


def test_phone_numbers_in_text_cells_are_masked():
    df = pd.DataFrame({"campaign": ["call +44 20 7946 0958 now"], "revenue": [10.0]}, index=["a"])
    html = p.table(df, min_cell=0).to_html()
    assert "7946" not in html and "[phone]" in html


def test_small_cells_hide_the_count_and_the_money_resting_on_it():
    html = p.table(perf(), "GBP", min_cell=3).to_html()
    # the second row rests on one customer: neither the count nor its revenue is shown
    assert "£9,000" not in html and "&lt; 3" in html and "fewer than 3 deals" in html
    # ... unless more distinct deals stand behind the credited share
    support = pd.DataFrame({"customers": [9, 4, 13]}, index=perf().index)
    assert "£9,000" in p.table(perf(), "GBP", min_cell=3, support=support).to_html()


def test_wide_tables_are_refused():
    wide = pd.DataFrame(np.ones((2, 8)), columns=[f"c{i}" for i in range(8)])
    with pytest.raises(ValueError, match="at most 7 columns"):
        p.table(wide)


def test_round_to_interval_keeps_the_digits_the_interval_supports():
    assert p.round_to_interval(208_464_228.0, 150_000_000.0, 260_000_000.0) == 208_000_000.0
    assert p.round_to_interval(1.2345, 1.0, 1.5) == pytest.approx(1.23)


def month(now: dict, before: dict) -> pd.DataFrame:
    keys = ["revenue", "marketing_revenue", "roi", "pipeline", "leads", "cac", "customers", "spend"]
    return compare(pd.Series({k: now.get(k, np.nan) for k in keys}),
                   pd.Series({k: before.get(k, np.nan) for k in keys}))


def test_tiles_show_six_figures_with_their_change_escaped():
    mom = month({"revenue": 120_000, "marketing_revenue": 90_000, "roi": 2.0, "pipeline": 300_000,
                 "leads": 150, "cac": 1_000, "customers": 12, "spend": 12_000},
                {"revenue": 100_000, "marketing_revenue": 80_000, "roi": 1.5, "pipeline": 250_000,
                 "leads": 130, "cac": 1_200, "customers": 10, "spend": 12_000})
    html = p.tiles_from_month(mom, "<b>GBP</b>")
    assert html.count("class='cl-tile'") == 6 and "<b>GBP" not in html
    one = p.tiles_from_month(mom, "GBP")
    assert "£120,000" in one and "+£20,000 on last month (+20%)" in one
    # leads change 20 with a Poisson interval: 20 +/- 1.96 * sqrt(280) = -13 to +53
    assert "−13 to +53" in one
    assert "+50 percentage points on last month (150% then)" in one       # ROI 150% -> 200%


def test_a_month_with_few_deals_does_not_headline_one_deals_amount():
    mom = month({"revenue": 48_000, "marketing_revenue": 48_000, "customers": 1, "leads": 30, "pipeline": 0},
                {"revenue": 10_000, "customers": 2})
    html = p.tiles_from_month(mom, "GBP", min_cell=3)
    assert "£48,000" not in html and "&lt; 3 deals" in html
    text = p.month_in_three_sentences(mom, pd.DataFrame(), pd.DataFrame(), "2024-06", "GBP", 3)
    assert "£48,000" not in text and text.count("<p") == 3


def test_a_month_without_deals_says_so():
    mom = month({"revenue": 0, "marketing_revenue": 0, "customers": 0, "leads": 3, "pipeline": 0},
                {"revenue": 5_000, "customers": 4})
    text = p.month_in_three_sentences(mom, pd.DataFrame(), pd.DataFrame(), "2024-06", "GBP", 3)
    assert "No deals closed in June 2024" in text and "The month before, deals closed £5,000." in text
    assert "£0" in p.tiles_from_month(mom, "GBP")          # nothing to withhold when nothing was won


def test_revenue_change_splits_into_volume_and_deal_size():
    now = pd.DataFrame({"revenue": [450.0, 80.0], "customers": [3.0, 1.0]}, index=["A", "B"])
    before = pd.DataFrame({"revenue": [200.0, 0.0], "customers": [2.0, 0.0]}, index=["A", "B"])
    split = p.revenue_change_by_channel(now, before)
    # A: +1 customer at last month's 100 average = 100 volume; the other 150 is larger deals
    assert split.loc["A", ["change", "volume", "deal_size"]].tolist() == [250.0, 100.0, 150.0]
    assert split.loc["B", ["volume", "deal_size"]].tolist() == [80.0, 0.0]   # all new deals
    assert list(split.index) == ["A", "B"]


def test_the_three_sentences_name_the_largest_mover_escaped():
    now = pd.DataFrame({"revenue": [450.0, 80.0, 530.0], "customers": [3.0, 1.0, 4.0]},
                       index=[IMG, "B", "Total"])
    before = pd.DataFrame({"revenue": [200.0, 0.0, 200.0], "customers": [2.0, 0.0, 2.0]},
                          index=[IMG, "B", "Total"])
    mom = month({"revenue": 530, "marketing_revenue": 530, "customers": 4, "pipeline": 900, "leads": 20},
                {"revenue": 200, "customers": 2, "pipeline": 600})
    html = p.month_in_three_sentences(mom, now, before, "2024-06", "GBP", min_cell=3)
    assert IMG not in html and "largest mover was &lt;img" in html and "mostly from larger deals" in html
    assert "up £330 on the month before (165%)" in html


def test_pseudonyms_are_stable_and_carry_nothing_of_the_id(hash_key):
    a = p.pseudonymise(pd.Series(["ann@example.com", "bob", "ann@example.com"]), "P")
    assert a.iloc[0] == a.iloc[2] != a.iloc[1] and all(x.startswith("P-") and len(x) == 10 for x in a)
    assert "ann" not in "".join(a)
    assert p.pseudonymise(pd.Series(["ann@example.com"]), "P").iloc[0] == a.iloc[0]


def test_a_failed_notebook_shows_a_short_notice_and_keeps_its_traceback(tmp_path):
    from closedloop_nb.report import _render_html

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    ok = nbformat.v4.new_code_cell("1", outputs=[nbformat.v4.new_output(
        "execute_result", data={"text/plain": "contact ann@example.com"}, execution_count=1)])
    bad = nbformat.v4.new_code_cell("boom()", outputs=[nbformat.v4.new_output(
        "error", ename="ValueError", evalue="bad row for ann@example.com",
        traceback=["Traceback (most recent call last)", "File /srv/secret/closedloop_nb/x.py"])])
    nb.cells = [nbformat.v4.new_markdown_cell("# Report"), nbformat.v4.new_markdown_cell("## Channels"), ok,
                nbformat.v4.new_markdown_cell("## Budget"), bad, nbformat.v4.new_markdown_cell("## After")]
    path = tmp_path / "05.ipynb"
    nbformat.write(nb, path)
    _render_html(path, tmp_path / "05.html", "t")
    page = (tmp_path / "05.html").read_text()
    assert "This report is incomplete" in page and "Budget" in page
    assert "Traceback" not in page and "/srv/secret" not in page and "ValueError" not in page
    assert "ann@example.com" not in page and "After" not in page.split("This report is incomplete")[1]
    kept = json.loads(path.read_text())
    error = kept["cells"][4]["outputs"][0]
    assert error["traceback"][0].startswith("Traceback") and error["evalue"] == "bad row for [email]"
    assert "ann@example.com" not in path.read_text()
    assert "@page{size:A4" in page


def test_the_sentences_state_credited_money_to_three_significant_figures():
    # a model's split is an estimate: -29,621.4 is stated as -29,600 beside -55,100, never to the pound
    now = pd.DataFrame({"revenue": [0.0, 10_378.6, 10_378.6], "customers": [0.0, 2.0, 2.0]},
                       index=["A", "B", "Total"])
    before = pd.DataFrame({"revenue": [55_100.0, 40_000.0, 95_100.0], "customers": [3.0, 2.0, 5.0]},
                          index=["A", "B", "Total"])
    mom = month({"revenue": 86_500, "marketing_revenue": 86_500, "customers": 4, "pipeline": 530_200,
                 "leads": 150, "spend": 8_128.6}, {"revenue": 185_600, "customers": 9, "pipeline": 314_400})
    text = p.month_in_three_sentences(mom, now, before, "2024-12", "GBP", min_cell=3)
    assert "In December 2024 deals closed £86,500 of revenue, down £99,100" in text
    assert "largest mover was A, −£55,100 (£55,100 to £0)" in text and "next was B at −£29,600" in text
    assert "29,621" not in text
    assert "New pipeline was £530,200 (up 69% on last month), from 150 new leads and £8,129 of" in text


def test_the_data_quality_tables_count_rows_and_money_per_table_in_its_currency():
    from closedloop_nb.errors import Problem
    from closedloop_nb.validation import ValidationReport

    report = ValidationReport(
        problems=[Problem("deals", "/srv/clients/acme/deals.csv", "amount", "negative amount", "rejected",
                          n_rows=2, rows=(4, 9), value=250.0)],
        counts={"deals": {"rows_in": 10, "rows_kept": 8, "rows_rejected": 2, "rows_collapsed": 0,
                          "rows_filtered": 0, "value_in": 1250.0, "value_kept": 1000.0,
                          "value_rejected": 250.0},
                "spend": {"rows_in": 5, "rows_kept": 5, "rows_rejected": 0, "rows_collapsed": 0,
                          "rows_filtered": 0},            # in two currencies: no money totals
                "leads": {"rows_in": 1200, "rows_kept": 1200, "rows_rejected": 0, "rows_collapsed": 0,
                          "rows_filtered": 0}})
    tables = {"deals": pd.DataFrame({"currency": ["EUR"] * 8}),
              "spend": pd.DataFrame({"currency": ["EUR", "USD"]}),
              "leads": pd.DataFrame({"person_id": ["a"]})}
    html = p.quality_tables(report, tables)
    # rows: 10 + 5 + 1,200 in, as whole numbers with separators, a total row
    assert ">1,215<" in html and ">1,213<" in html and "Total" in html
    # money: deals in euros; spend in two currencies shows "—" with the reason; leads have no money
    assert "€1,250" in html and "€250" in html and "several currencies" in html
    assert html.count("<tr") == 5 + 3      # header, 3 tables, total; header, deals, spend (no leads)
    problems = p.problems_table(report, tables).to_html()
    assert "deals.csv" in problems and "/srv/clients" not in problems and "€250" in problems


def test_table_states_each_rows_money_in_its_own_currency():
    df = pd.DataFrame({"value": [10.0, 20.0]}, index=pd.Index(["a", "b"], name="table"))
    html = p.table(df, {"a": "GBP", "b": "USD"}, min_cell=0).to_html()
    assert "£10" in html and "$20" in html

"""The report in one currency: the sample batch's closed-loop report with ``reporting_currency`` and
the sample ``fx_rates`` file gives the GBP figures converted at the file's rates (checked by hand), and
money in several currencies without rates is never summed (05 shows each currency's headline and
stops)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from closedloop_nb import open_workspace
from closedloop_nb.config import PROJECT_DIR, SAMPLE_DIR
from closedloop_nb.report import ParameterError, check_parameters, notebooks, run_batch

RATES = PROJECT_DIR / "data" / "fx" / "gbp_rates_2024.csv"


def _eur(month: str) -> float:
    rates = pd.read_csv(RATES)
    (rate,) = rates[(rates["to_currency"] == "EUR") & (rates["date"] == f"{month}-01")]["rate"]
    return float(rate)


def test_the_sample_report_in_euros_is_the_pound_figures_at_the_files_rates(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_WORKSPACE_DIR", str(tmp_path / "ws"))
    (run,) = run_batch([PROJECT_DIR / "parameters" / "sample_eur.yaml"], out_dir=tmp_path / "reports",
                       only=["05"], progress=False)
    assert run.status == "ok", run.error
    got = json.loads((tmp_path / "reports" / "sample_eur" / "headlines.json").read_text())
    # the pound figures, by hand from the validated sample (one currency, GBP)
    gbp = open_workspace(SAMPLE_DIR, cache_dir=tmp_path / "ws")
    assert gbp.currencies() == ["GBP"]
    deals, spend = gbp["deals"], gbp["spend"]
    won = deals[deals["won"].fillna(False).astype(bool)]
    closed = won["closed_at"].dt.strftime("%Y-%m")
    revenue = {mo: float(won.loc[closed == mo, "amount"].sum()) for mo in ("2024-11", "2024-12")}
    spent = float(spend.loc[spend["date"].dt.strftime("%Y-%m") == "2024-12", "cost"].sum())
    assert revenue["2024-12"] > 0 and spent > 0
    dec, nov = _eur("2024-12"), _eur("2024-11")
    assert dec != nov  # so that the month of each rate matters below
    assert got["revenue"] == pytest.approx(revenue["2024-12"] * dec, abs=0.01)
    assert got["spend"] == pytest.approx(spent * dec, abs=0.01)
    assert got["roas"] == pytest.approx(revenue["2024-12"] / spent, abs=1e-4)  # a ratio: no currency
    change = revenue["2024-12"] * dec - revenue["2024-11"] * nov
    assert got["revenue_change"] == pytest.approx(change, abs=0.01)
    # the opportunities of the month, each at its deal's rate (close date, or creation while open)
    stages = gbp["stage_history"]
    opened = stages[(stages["stage"] == "opportunity")
                    & (stages["entered_at"].dt.strftime("%Y-%m") == "2024-12")]
    by_id = deals.set_index("deal_id")
    when = by_id["closed_at"].fillna(by_id["created_at"]).dt.strftime("%Y-%m")
    rate = opened["deal_id"].map(when).map(_eur)
    assert got["pipeline_value"] == pytest.approx(float((opened["amount"] * rate).sum()), abs=0.01)
    html = (tmp_path / "reports" / "sample_eur" / "05_closed_loop_report.html").read_text()
    assert "€" in html and "£" not in html and "Every money figure is in EUR" in html


def test_the_money_parameters_are_checked_before_anything_runs():
    nbs = notebooks()
    check_parameters({"data_dir": "data/sample", "reporting_currency": "EUR", "fx_rates": str(RATES),
                      "only_currency": "gbp"}, nbs)
    for params, message in (({"reporting_currency": "US$"}, "'reporting_currency' is 'US\\$'"),
                            ({"fx_rates": "data/fx/none.csv"}, "'fx_rates' is 'data/fx/none.csv'"),
                            ({"only_currency": "pounds"}, "'only_currency' is 'pounds'")):
        with pytest.raises(ParameterError, match=message):
            check_parameters({"data_dir": "data/sample", **params}, nbs)


def test_money_in_two_currencies_without_rates_is_reported_per_currency_never_summed(tmp_path, monkeypatch):
    monkeypatch.setenv("CLOSEDLOOP_WORKSPACE_DIR", str(tmp_path / "ws"))
    data = tmp_path / "data"
    shutil.copytree(SAMPLE_DIR, data)
    for name in ("deals", "spend", "orders", "subscriptions"):
        frame = pd.read_parquet(data / f"{name}.parquet")
        frame.loc[frame.index % 4 == 0, "currency"] = "USD"
        frame.to_parquet(data / f"{name}.parquet", index=False)
    param = tmp_path / "mixed.yaml"
    param.write_text(f"run: mixed\ndata_dir: {data}\ncalibration_end: '2024-09-30'\nreport_month: '2024-12'\n"
                     "model: shapley_model\n")
    # (03 and 04 carry on in one currency's slice: one_currency, tested in test_money_workspace.py)
    (run,) = run_batch([param], out_dir=tmp_path / "reports", only=["05"], progress=False)
    status = {n["notebook"]: n["status"] for n in run.notebooks}
    # 05, the stakeholder report, shows each currency's headline for the month and stops there
    assert status["05_closed_loop_report.ipynb"] == "failed"
    assert "never added together" in run.error and "only_currency" in run.error
    report = (tmp_path / "reports" / "mixed" / "05_closed_loop_report.html").read_text()
    ws = open_workspace(data, cache_dir=tmp_path / "ws")
    won = ws["deals"][ws["deals"]["won"].fillna(False).astype(bool)]
    won = won[won["closed_at"].dt.strftime("%Y-%m") == "2024-12"]
    for code, amount in won.groupby("currency")["amount"].sum().items():
        assert f"<th>{code}</th>" in report and f"{amount:,.0f}" in report
    assert f"{won['amount'].sum():,.0f}" not in report  # the sum of both is nowhere


def test_rates_without_a_reporting_currency_are_refused_before_anything_runs():
    with pytest.raises(ParameterError, match="'fx_rates' needs a 'reporting_currency'"):
        check_parameters({"data_dir": "data/sample", "fx_rates": str(RATES)}, notebooks())


def _cell(notebook: str, starts: str) -> str:
    import nbformat

    nb = nbformat.read(PROJECT_DIR / "notebooks" / notebook, as_version=4)
    (source,) = [c.source for c in nb.cells if c.cell_type == "code" and starts in c.source]
    return source


def test_the_loading_cells_of_02_to_04_carry_on_in_one_currency(tmp_path, monkeypatch):
    """The cells as written, run in this process on money in two currencies without rates."""
    import closedloop_nb as cl
    import closedloop_nb.metrics as m
    from closedloop_nb import present as p
    from closedloop_nb.config import resolve

    monkeypatch.setenv("CLOSEDLOOP_WORKSPACE_DIR", str(tmp_path / "ws"))
    data = tmp_path / "data"
    shutil.copytree(SAMPLE_DIR, data)
    deals = pd.read_parquet(data / "deals.parquet")
    deals.loc[deals.index % 4 == 0, "currency"] = "USD"
    deals.to_parquet(data / "deals.parquet", index=False)
    shown = []
    for notebook in ("02_journeys.ipynb", "03_attribution.ipynb", "04_churn_clv.ipynb"):
        ns = {"cl": cl, "m": m, "p": p, "resolve": resolve, "data_dir": str(data), "timezone": "",
              "reporting_currency": "", "fx_rates": "", "only_currency": "", "conversion": "lead",
              "lookback_days": 90}
        exec(_cell(notebook, "cl.open_workspace("), ns)  # noqa: S102 - the notebook's own cell
        assert ns["money"].mixed and ns["ws"].currencies() == ["GBP"], notebook
        assert ns.get("currency", "GBP") == "GBP" and m.currency_of(ns["ws"]) == "GBP"
        shown.append(ns["money"]._repr_html_())
    assert all("Every money figure below is in GBP only" in h and "<th>USD</th>" in h for h in shown)

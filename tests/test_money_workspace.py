"""Money in the run workspace: conversion to one reporting currency at build (checked against hand
computations and against ``money.convert``), rows without a rate counted, unusable rates refused by
name, and money in several currencies without rates never summed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import closedloop_nb.metrics as m
from closedloop_nb import open_workspace
from closedloop_nb.errors import DataValidationError
from closedloop_nb.money import MixedCurrencyError, convert, fx_dates, one_currency, per_currency_totals
from closedloop_nb.synth import generate

MONTHLY = """date,currency,rate
2026-01-01,MXN,0.05
2026-02-01,MXN,0.06
2026-03-01,MXN,0.055
2026-03-01,COP,0.00025
"""


def _write(folder: Path, files: dict[str, str]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, text in files.items():
        (folder / f"{name}.csv").write_text(text)
        out[name] = folder / f"{name}.csv"
    return out


def _hand_made(folder: Path, rates: str = MONTHLY) -> dict[str, Path]:
    return _write(folder, {
        "deals": (
            "deal_id,created_at,amount,currency,stage,closed_at,won\n"
            "d1,2026-01-10T00:00:00Z,1000,MXN,closed_won,2026-02-14T10:00:00Z,true\n"   # February's rate
            "d2,2026-01-20T00:00:00Z,1000,MXN,opportunity,,\n"                          # open: January's
            "d3,2026-02-01T00:00:00Z,50,USD,closed_won,2026-02-02T00:00:00Z,true\n"     # already in USD
            "d4,2026-01-05T00:00:00Z,2000000,COP,closed_lost,2026-03-03T00:00:00Z,false\n"
            "d5,2026-01-05T00:00:00Z,300,EUR,closed_won,2026-03-09T00:00:00Z,true\n"    # no EUR rate
            "d6,2026-01-05T00:00:00Z,40,,closed_won,2026-03-09T00:00:00Z,true\n"        # no currency
        ),
        "stage_history": (
            "deal_id,stage,entered_at,amount\n"
            "d1,opportunity,2026-01-10T00:00:00Z,900\n"
            "d1,closed_won,2026-02-14T10:00:00Z,1000\n"
            "d5,opportunity,2026-01-05T00:00:00Z,300\n"
        ),
        "orders": (
            "order_id,customer_id,timestamp,amount,currency\n"
            "o1,c1,2026-02-28T23:30:00Z,200,MXN\n"
            "o2,c1,2026-03-01T00:30:00Z,200,MXN\n"
        ),
        "subscriptions": (
            "customer_id,month,movement,mrr_delta,mrr,currency\n"
            "c1,2026-01-01,new,500,500,MXN\n"
            "c1,2026-02-01,expansion,100,600,MXN\n"
        ),
        "spend": (
            "date,channel,campaign,cost,currency\n"
            "2026-01-31,Paid Search,x,100,MXN\n"
            "2026-02-01,Paid Search,x,100,USD\n"
        ),
        "fx_rates": rates,
    })


def test_every_money_column_converts_at_its_date_as_computed_by_hand(tmp_path):
    items = _hand_made(tmp_path / "in")
    ws = open_workspace(items, cache_dir=tmp_path / "ws", reporting_currency="usd")
    assert ws.reporting_currency == "USD" and ws.currencies() == ["USD"]
    deals = ws["deals"].set_index("deal_id")
    # 1000 MXN won on 14 Feb at 0.06; 1000 MXN open since 20 Jan at 0.05; 50 USD as is; 2,000,000 COP
    # lost on 3 March at 0.00025
    assert deals["amount"].round(9).to_dict() == {"d1": 60.0, "d2": 50.0, "d3": 50.0, "d4": 500.0}
    assert deals["original_amount"].tolist() == [1000.0, 1000.0, 50.0, 2_000_000.0]
    assert deals["original_currency"].tolist() == ["MXN", "MXN", "USD", "COP"]
    assert deals["fx_rate"].tolist() == [0.06, 0.05, 1.0, 0.00025]
    assert set(deals["currency"]) == {"USD"}
    # stage amounts at their deal's rate; the stage of the rejected deal goes with it (an orphan)
    assert ws["stage_history"]["amount"].round(9).tolist() == [54.0, 60.0]
    # an order late on 28 Feb (UTC) at February's rate, one early on 1 March at March's
    assert ws["orders"]["amount"].round(9).tolist() == [12.0, 11.0]
    subs = ws["subscriptions"]
    assert subs["mrr_delta"].round(9).tolist() == [25.0, 6.0]
    assert subs["mrr"].round(9).tolist() == [25.0, 36.0]
    assert ws["spend"]["cost"].round(9).tolist() == [5.0, 100.0]
    # the rows without a rate are rejected and counted, each reason naming what is missing
    counts = ws.report.counts["deals"]
    assert (counts["rows_in"], counts["rows_kept"], counts["rows_rejected"]) == (6, 4, 2)
    for table, c in ws.report.counts.items():
        assert c["rows_in"] == (c["rows_kept"] + c["rows_rejected"] + c["rows_collapsed"]
                                + c["rows_filtered"]), table
    reasons = {p.rows: p.reason for p in ws.report.problems
               if p.table == "deals" and p.severity == "rejected"}
    assert "no EUR to USD rate in fx_rates for 2026-03" in reasons[(5,)]
    assert "no currency recorded" in reasons[(6,)]
    assert ws.report.counts["stage_history"]["rows_rejected"] == 1
    # the same conversion in pandas (money.convert, the reference) on the rows that have rates
    raw = pd.read_csv(items["deals"], parse_dates=["created_at", "closed_at"]).iloc[:4]
    rates = pd.read_csv(items["fx_rates"], parse_dates=["date"])
    peer = convert(raw, fx_dates("deals", raw), rates, "USD", ["amount"])
    np.testing.assert_allclose(peer["amount"], deals["amount"])


def test_daily_rates_carry_over_a_weekend_but_not_a_fortnight(tmp_path):
    daily = "date,currency,rate\n2026-02-06,MXN,0.060\n2026-02-09,MXN,0.061\n"
    items = _write(tmp_path / "in", {
        "orders": ("order_id,customer_id,timestamp,amount,currency\n"
                   "o1,c1,2026-02-07T12:00:00Z,100,MXN\n"     # Saturday: Friday's rate
                   "o2,c1,2026-02-09T12:00:00Z,100,MXN\n"     # Monday's own
                   "o3,c1,2026-02-20T12:00:00Z,100,MXN\n"     # 11 days after the last rate: none
                   "o4,c1,2026-02-05T12:00:00Z,100,MXN\n"),   # before the first rate: none
        "fx_rates": daily,
    })
    ws = open_workspace(items, cache_dir=tmp_path / "ws", reporting_currency="USD")
    orders = ws["orders"]
    assert orders["order_id"].tolist() == ["o1", "o2"]
    assert orders["amount"].round(9).tolist() == [6.0, 6.1]
    (missing,) = [p for p in ws.report.problems if p.severity == "rejected"]
    assert missing.rows == (3, 4) and missing.column == "currency"
    assert "2026-02-05, 2026-02-20 (or up to 7 days before)" in missing.reason
    # money.convert agrees: same rates where there are some, the same rows lacking one
    raw = pd.read_csv(items["orders"], parse_dates=["timestamp"])
    rates = pd.read_csv(items["fx_rates"], parse_dates=["date"])
    np.testing.assert_allclose(convert(raw.iloc[:2], raw["timestamp"].iloc[:2], rates, "USD",
                                       ["amount"])["amount"], orders["amount"])
    with pytest.raises(Exception, match="2026-02-05, 2026-02-20"):
        convert(raw, raw["timestamp"], rates, "USD", ["amount"])


@pytest.mark.parametrize(("rates", "message"), [
    ("date,currency,rate\n2026-01-01,MXN,-0.05\n", r"fx_rates.csv, column 'rate', row 1: .*negative rate"),
    ("date,currency,rate\n2026-01-01,MXN,0\n", r"fx_rates.csv, column 'rate', row 1: .*a rate of 0"),
    ("date,currency,rate\n2026-01-01,MXX,0.05\n", r"column 'currency', row 1: .*not an ISO 4217"),
    ("date,currency,rate\nJanuary,MXN,0.05\n", r"column 'date', row 1"),
    ("date,currency,rate\n2026-01-01,MXN,0.05\n2026-01-01,MXN,0.06\n", r"rows 1, 2: .*duplicate"),
    ("date,currency,rate\n2026-01-01,USD,1.1\n2026-01-01,MXN,0.05\n",
     r"row 1: .*from USD to itself must be 1"),
    ("date,currency,rate,to_currency\n2026-01-01,MXN,0.05,USD\n2026-01-01,MXN,0.05,\n",
     r"rows 1, 2: .*two rates for one currency on one day"),
    ("date,currency,rate,to_currency\n2026-01-01,MXN,0.046,EUR\n",
     r"column 'to_currency': .*no rates to USD"),
    ("date,currency,rate,to_currency\n2026-01-01,MXN,0.05,DOLLAR\n", r"row 1: .*'DOLLAR'"),
])
def test_unusable_rates_are_an_error_naming_file_column_and_rows(tmp_path, rates, message):
    items = _write(tmp_path / "in", {"orders": "order_id,customer_id,timestamp,amount,currency\n"
                                               "o1,c1,2026-01-07T12:00:00Z,100,MXN\n", "fx_rates": rates})
    with pytest.raises(DataValidationError, match=message):
        open_workspace(items, cache_dir=tmp_path / "ws", reporting_currency="USD")
    # without a reporting currency the same rates are only a table (nothing is converted)
    ws = open_workspace(items, cache_dir=tmp_path / "ws")
    assert ws.reporting_currency is None and ws["orders"]["amount"].tolist() == [100.0]


def test_money_to_convert_without_any_rates_is_refused_and_a_bad_code_too(tmp_path):
    items = _write(tmp_path / "in", {"orders": "order_id,customer_id,timestamp,amount,currency\n"
                                               "o1,c1,2026-01-07T12:00:00Z,100,MXN\n"})
    with pytest.raises(DataValidationError, match=r"MXN \(1 rows\) is to be reported in USD, but there is no "
                                                  "fx_rates table"):
        open_workspace(items, cache_dir=tmp_path / "ws", reporting_currency="USD")
    # money already in the reporting currency needs no rates
    ws = open_workspace(items, cache_dir=tmp_path / "ws", reporting_currency="MXN")
    assert ws["orders"]["fx_rate"].tolist() == [1.0]
    with pytest.raises(ValueError, match="'US\\$' is not an ISO 4217"):
        open_workspace(items, cache_dir=tmp_path / "ws", reporting_currency="US$")
    with pytest.raises(ValueError, match="without a reporting_currency"):
        open_workspace(items, cache_dir=tmp_path / "ws", fx_rates=items["orders"])


def test_the_workspace_key_holds_the_currency_and_the_rates(tmp_path):
    items = _hand_made(tmp_path / "in")
    plain = open_workspace(items, cache_dir=tmp_path / "ws")
    usd = open_workspace(items, cache_dir=tmp_path / "ws", reporting_currency="USD")
    again = open_workspace(items, cache_dir=tmp_path / "ws", reporting_currency="USD")
    assert len({plain.key, usd.key}) == 2 and again.key == usd.key and not again.built
    other = tmp_path / "other_rates.csv"
    other.write_text(MONTHLY.replace("0.06", "0.07"))
    changed = open_workspace(items, cache_dir=tmp_path / "ws", reporting_currency="USD", fx_rates=other)
    assert changed.key != usd.key and changed.built
    assert changed["deals"].set_index("deal_id").loc["d1", "amount"] == pytest.approx(70.0)


# -- a mixed-currency workspace: one currency everywhere with rates, never a sum without ----------------

def _rate(month: pd.Timestamp) -> float:
    """GBP -> USD in the test's rates: 1.20 in January 2023, one cent more every month after."""
    return round(1.20 + 0.01 * ((month.year - 2023) * 12 + month.month - 1), 2)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mixed")
    frames = generate(5_000, seed=3).frames()
    for name in ("deals", "orders", "subscriptions", "spend"):
        frame = frames[name].copy()
        frame["currency"] = np.where(np.arange(len(frame)) % 3 == 0, "USD", "GBP")
        frames[name] = frame
    data = root / "data"
    data.mkdir()
    for name, frame in frames.items():
        frame.to_parquet(data / f"{name}.parquet", index=False)
    months = pd.date_range("2023-01-01", "2026-12-01", freq="MS")
    rates = root / "rates.csv"
    pd.DataFrame({"date": months.strftime("%Y-%m-%d"), "currency": "GBP",
                  "rate": [_rate(mo) for mo in months]}).to_csv(rates, index=False)
    return {"data": data, "rates": rates, "cache": root / "ws"}


def _month(when: pd.Series) -> pd.Series:
    stamp = pd.to_datetime(when)
    if isinstance(stamp.dtype, pd.DatetimeTZDtype):
        stamp = stamp.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamp.dt.to_period("M").dt.to_timestamp()


def test_with_rates_a_mixed_workspace_is_in_one_currency_everywhere(mixed):
    ws = open_workspace(mixed["data"], cache_dir=mixed["cache"], reporting_currency="USD",
                        fx_rates=mixed["rates"])
    plain = open_workspace(mixed["data"], cache_dir=mixed["cache"])
    assert plain.currencies() == ["GBP", "USD"] and ws.currencies() == ["USD"]
    when = {"deals": lambda d: d["closed_at"].fillna(d["created_at"]), "orders": lambda d: d["timestamp"],
            "subscriptions": lambda d: d["month"], "spend": lambda d: d["date"]}
    for name, column in (("deals", "amount"), ("orders", "amount"), ("subscriptions", "mrr"),
                         ("spend", "cost")):
        before, after = plain[name], ws[name]
        assert len(before) == len(after) and set(after["currency"]) == {"USD"}, name
        rate = np.where(before["currency"] == "USD", 1.0, _month(when[name](before)).map(_rate))
        np.testing.assert_allclose(after[column], before[column] * rate, err_msg=name)
        np.testing.assert_allclose(after[f"original_{column}"], before[column])
    assert m.currency_of(ws) == "USD"
    choice = one_currency(ws)
    assert not choice.mixed and choice.tables is ws and choice.currency == "USD"
    assert list(per_currency_totals(ws).index) == ["USD"]
    # journeys carry deal value: won journeys' value is the converted amount of the won deals
    won = ws["deals"][ws["deals"]["won"].fillna(False).astype(bool)]
    journeys = ws.journeys(conversion="closed_won", lookback_days=90)
    rec = journeys.reconciliation.set_index(journeys.reconciliation.columns[0])
    total = float(rec["value"].iloc[0])
    assert total == pytest.approx(float(won["amount"].sum()))
    assert total != pytest.approx(float(plain["deals"][plain["deals"]["won"].fillna(False).astype(bool)]
                                        ["amount"].sum()))


def test_without_rates_money_in_several_currencies_is_never_summed(mixed):
    ws = open_workspace(mixed["data"], cache_dir=mixed["cache"])
    with pytest.raises(ValueError, match="several currencies"):
        m.currency_of(ws)
    deals = ws["deals"]
    won = deals[deals["won"].fillna(False).astype(bool)]
    by_hand = won.groupby("currency")["amount"].sum()
    totals = per_currency_totals(ws)
    assert list(totals.index) == ["GBP", "USD"]
    np.testing.assert_allclose(totals["won_revenue"], by_hand.loc[["GBP", "USD"]])
    spent = ws["spend"].groupby("currency")["cost"].sum()
    np.testing.assert_allclose(totals["spend"], spent.loc[["GBP", "USD"]])
    choice = one_currency(ws)
    pick = by_hand.idxmax()
    assert choice.mixed and choice.currency == pick and "never added up" in choice.note
    assert f"in {pick} only" in choice.note and "reporting_currency" in choice.note
    part = choice.tables
    for name in ("deals", "orders", "subscriptions", "spend"):
        assert set(part[name]["currency"]) == {pick}, name
    assert set(part["stage_history"]["deal_id"]) <= set(part["deals"]["deal_id"])
    assert m.currency_of(part) == pick
    # the slice's revenue metric is that currency's won revenue alone
    assert won[won["currency"] == pick]["amount"].sum() == pytest.approx(part["deals"].loc[
        part["deals"]["won"].fillna(False).astype(bool), "amount"].sum())
    journeys = part.journeys(conversion="closed_won", lookback_days=90)
    rec = journeys.reconciliation.set_index(journeys.reconciliation.columns[0])
    assert float(rec["value"].iloc[0]) == pytest.approx(by_hand.loc[pick])
    other = one_currency(ws, only="usd" if pick == "GBP" else "gbp")
    assert other.currency != pick and set(other.tables["deals"]["currency"]) == {other.currency}
    with pytest.raises(MixedCurrencyError, match="only_currency"):
        choice.refuse("the closed-loop report")
    with pytest.raises(ValueError, match="the money is in GBP, USD"):
        one_currency(ws, only="EUR")
    assert "<table" in choice._repr_html_() and "never added together" in choice._repr_html_()


def test_only_currency_must_be_a_currency_of_the_money(tmp_path):
    items = _hand_made(tmp_path / "in")
    ws = open_workspace(items, cache_dir=tmp_path / "ws", reporting_currency="USD")
    assert one_currency(ws, only="usd").tables is ws
    with pytest.raises(ValueError, match="only_currency 'GBP': the money is in USD"):
        one_currency(ws, only="GBP")


def test_rates_in_the_folder_without_a_reporting_currency_convert_nothing_and_say_so(tmp_path):
    ws = open_workspace(_hand_made(tmp_path / "in"), cache_dir=tmp_path / "ws")
    assert ws.reporting_currency is None and "fx_rate" not in ws["deals"]
    assert ws.currencies() == ["COP", "EUR", "MXN", "USD", "(no currency)"]
    choice = one_currency(ws)
    assert "no reporting_currency is set to convert it into" in choice.note
    # the MXN deals carry the most won revenue (1,000 MXN against 50 USD and 300 EUR): its slice
    assert choice.currency == "MXN" and choice.tables["deals"]["deal_id"].tolist() == ["d1", "d2"]
    assert choice.tables["stage_history"]["deal_id"].tolist() == ["d1", "d1"]
    unknown = one_currency(ws, only="(no currency)").tables
    assert unknown["deals"]["deal_id"].tolist() == ["d6"] and len(unknown["orders"]) == 0

"""Money: ISO 4217 codes, totals that never add two currencies, conversion with fx_rates at the right date."""

from __future__ import annotations

import pandas as pd
import pytest

from closedloop_nb.money import (
    MissingRateError,
    MixedCurrencyError,
    convert,
    currency_codes,
    fx_dates,
    rate_frequency,
    require_single_currency,
    to_reporting_currency,
    totals_by_currency,
)
from closedloop_nb.validation import validate_tables

T = pd.Timestamp


def test_iso_4217_codes():
    codes = currency_codes()
    assert {"MXN", "COP", "USD", "PEN", "EUR", "GBP", "JPY", "CLF"} <= codes
    assert not {"US$", "S/.", "EURO", "usd", "RMB"} & codes


def test_totals_are_per_currency_and_a_single_total_refuses_several():
    d = pd.DataFrame({"amount": [100.0, 50.0, 20.0, 5.0], "currency": ["USD", "MXN", "usd", None]})
    assert totals_by_currency(d, "amount").values.tolist() == [
        ["(no currency)", 5.0],
        ["MXN", 50.0],
        ["USD", 120.0],
    ]
    with pytest.raises(
        MixedCurrencyError, match=r"won revenue is in 3 currencies \(MXN, USD, \(no currency\)\)"
    ):
        require_single_currency(d, what="won revenue")
    assert require_single_currency(d.iloc[[0, 2]]) == "USD"
    assert require_single_currency(d.drop(columns="currency")) is None


def _deals() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "deal_id": ["d1", "d2", "d3", "d4"],
            "amount": [1000.0, 1000.0, 50.0, 2_000_000.0],
            "currency": ["MXN", "MXN", "USD", "COP"],
            "created_at": pd.to_datetime(["2026-01-10", "2026-01-20", "2026-02-01", "2026-01-05"], utc=True),
            "closed_at": pd.to_datetime(["2026-02-14", None, "2026-02-02", "2026-03-03"], utc=True),
        }
    )


def test_deals_convert_at_the_close_date_and_pipeline_at_creation():
    deals = _deals()
    assert fx_dates("deals", deals).tolist() == [
        T("2026-02-14"),
        T("2026-01-20"),
        T("2026-02-02"),
        T("2026-03-03"),
    ]
    monthly = pd.DataFrame(
        {
            "date": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"]),
            "currency": ["MXN", "MXN", "COP"],
            "rate": [0.05, 0.06, 0.00025],
        }
    )
    assert rate_frequency(monthly) == "monthly"
    out = convert(deals, fx_dates("deals", deals), monthly, "USD", ["amount"])
    # won d1 at February's rate, open d2 at January's (its creation), USD unchanged, COP at March's
    assert out["amount"].round(6).tolist() == [60.0, 50.0, 50.0, 500.0]
    assert out["currency"].unique().tolist() == ["USD"]
    assert out["original_currency"].tolist() == ["MXN", "MXN", "USD", "COP"]


def test_daily_rates_carry_over_weekends_but_a_missing_rate_is_named():
    deals = _deals().iloc[[0, 2]]
    daily = pd.DataFrame(
        {
            "date": pd.to_datetime(["2026-02-12", "2026-02-13"]),
            "currency": ["MXN", "MXN"],
            "rate": [0.058, 0.059],
        }
    )
    assert rate_frequency(daily) == "daily"
    # Saturday 14 February takes Friday's rate
    assert convert(deals, fx_dates("deals", deals), daily, "USD", ["amount"])["amount"].tolist() == [
        59.0,
        50.0,
    ]
    with pytest.raises(
        MissingRateError,
        match=r"no exchange rate for COP -> USD on 2026-03-03 \(1 rows\); "
        r"MXN -> USD on 2026-01-20 \(1 rows\)",
    ):
        convert(_deals(), fx_dates("deals", _deals()), daily, "USD", ["amount"])
    far = daily.assign(date=pd.to_datetime(["2026-01-01", "2026-01-02"]))
    with pytest.raises(MissingRateError, match="MXN -> USD on 2026-02-14"):  # a rate 6 weeks old is no rate
        convert(deals, fx_dates("deals", deals), far, "USD", ["amount"])


def test_tables_in_several_currencies_need_rates_to_be_summed():
    tables = {"deals": _deals(), "leads": pd.DataFrame({"person_id": ["p"]})}
    with pytest.raises(MixedCurrencyError, match=r"\(COP, MXN, USD\)"):
        to_reporting_currency(tables, None, None)
    one = {"deals": _deals().iloc[[2]]}
    assert to_reporting_currency(one, None, None)["deals"] is one["deals"]
    rates = pd.DataFrame(
        {
            "date": pd.to_datetime(["2026-01-01", "2026-02-01", "2026-03-01"]),
            "currency": ["MXN", "MXN", "COP"],
            "rate": [0.05, 0.06, 0.00025],
        }
    )
    out = to_reporting_currency(tables, rates, "USD")
    assert out["deals"]["amount"].sum() == pytest.approx(660.0) and out["leads"] is tables["leads"]


def test_validation_rejects_non_iso_codes_and_names_the_currencies_of_a_mixed_table():
    deals = pd.DataFrame(
        {
            "deal_id": ["a", "b", "c"],
            "person_id": [None, None, None],
            "created_at": ["2026-01-01T00:00:00Z"] * 3,
            "amount": [10.0, 20.0, 5.0],
            "currency": ["usd", "MXN", "US$"],
        }
    )
    ds = validate_tables({"deals": deals})
    assert ds.tables["deals"]["currency"].tolist() == ["USD", "MXN"]
    rejected = [p for p in ds.report.problems if p.severity == "rejected"]
    assert [(p.column, p.rows, p.reason) for p in rejected] == [
        ("currency", (3,), "not an ISO 4217 currency code: 'US$' (three letters, e.g. USD, EUR, MXN)")
    ]
    warning = [p for p in ds.report.problems if p.severity == "warning"]
    assert warning[0].reason.startswith("several currencies in one table (MXN 20.00; USD 10.00)")
    # no money total adds the two: value_in is left empty for a mixed table
    assert "value_in" not in ds.report.counts["deals"]


def test_a_deal_without_a_person_is_kept():
    deals = pd.DataFrame(
        {
            "deal_id": ["a"],
            "person_id": [None],
            "created_at": ["2026-01-01T00:00:00Z"],
            "amount": [10.0],
            "currency": ["USD"],
        }
    )
    ds = validate_tables(
        {"deals": deals, "leads": pd.DataFrame({"person_id": ["p"], "created_at": ["2026-01-01T00:00:00Z"]})}
    )
    assert len(ds.tables["deals"]) == 1 and ds.report.ok


def test_fx_rates_is_a_canonical_table():
    rates = pd.DataFrame(
        {"date": ["2026-01-01", "2026-01-01"], "currency": ["MXN", "XYZ"], "rate": [0.05, 1.0]}
    )
    ds = validate_tables({"fx_rates": rates})
    assert ds.tables["fx_rates"]["currency"].tolist() == ["MXN"]
    assert ds.tables["fx_rates"]["date"].tolist() == [T("2026-01-01")]


def test_a_deal_that_reaches_nobody_counts_in_revenue_under_no_touches(sample):
    from closedloop_nb.metrics import NO_TOUCHES, channel_performance, deal_credits

    tables = dict(sample.tables)
    deals = tables["deals"].copy()
    won = deals.index[deals["won"].fillna(False).astype(bool)][0]
    deals.loc[won, "person_id"] = None
    tables["deals"] = deals
    for model in ("lead_source", "linear"):
        credits = deal_credits(tables, model)
        mine = credits[credits["deal_id"] == deals.loc[won, "deal_id"]]
        assert mine[["channel", "share"]].values.tolist() == [[NO_TOUCHES, 1.0]], model
    perf = channel_performance(tables, deal_credits(tables, "lead_source"))
    total = deals.loc[deals["won"].fillna(False).astype(bool), "amount"].sum()
    assert perf.loc["Total", "revenue"] == pytest.approx(total)
    assert perf.drop(index="Total")["revenue"].sum() == pytest.approx(total)


def test_rejected_money_in_a_mixed_table_is_not_summed():
    deals = pd.DataFrame(
        {
            "deal_id": ["a", "a", "b"],
            "created_at": ["2026-01-01T00:00:00Z"] * 3,
            "amount": [10.0, 20.0, 5.0],
            "currency": ["USD", "MXN", "USD"],
        }
    )
    ds = validate_tables({"deals": deals})
    dup = [p for p in ds.report.problems if p.severity == "rejected"]
    assert dup[0].n_rows == 2 and pd.isna(dup[0].value)  # never "30" of USD and MXN together

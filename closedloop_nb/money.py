"""Money in several currencies: ISO 4217 codes, sums that never add two currencies, and conversion.

Every money column of the canonical tables (``deals.amount``, ``orders.amount``,
``subscriptions.mrr``/``mrr_delta``, ``spend.cost``) is in the currency its row's ``currency`` column
names. This module is what metrics and notebooks call before they add money up:

* :func:`totals_by_currency` sums a column per currency (the safe default: one row per currency);
* :func:`single_currency` / :func:`require_single_currency` return the one currency of some rows, or
  refuse with :class:`MixedCurrencyError` naming the currencies found;
* :func:`convert` and :func:`to_reporting_currency` convert with an ``fx_rates`` table (date,
  currency, rate to the reporting currency; daily or monthly) at each row's date: a deal's close date
  (its creation date while it is open), an order's timestamp, a subscription's month, a spend day. A
  rate that is missing is a :class:`MissingRateError` naming the currency and dates, never a silent 1.0.
  A run workspace converts at build instead (``open_workspace(..., reporting_currency=, fx_rates=)``,
  :func:`closedloop_nb.ingest.convert_money`, in SQL), so every table and journey read from it is in
  one currency;
* :func:`one_currency` is what a report calls first: all of its money in one currency, or, in several
  without rates, one currency's slice with a note and :func:`per_currency_totals` (never a sum).

Currency codes are the ISO 4217 list as the ``pycountry`` package ships it (from Debian's
``iso-codes``, which follows the ISO 4217 maintenance agency's list).

Examples
--------
>>> import pandas as pd
>>> deals = pd.DataFrame({"amount": [100.0, 50.0, 20.0], "currency": ["USD", "MXN", "USD"]})
>>> totals_by_currency(deals, "amount")["amount"].tolist()
[50.0, 120.0]
>>> require_single_currency(deals, what="won revenue")
Traceback (most recent call last):
...
closedloop_nb.money.MixedCurrencyError: won revenue is in 2 currencies (MXN, USD): ...
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd

from closedloop_nb.errors import Problem

__all__ = [
    "MONEY_COLUMNS",
    "MissingRateError",
    "MixedCurrencyError",
    "OneCurrency",
    "TOTAL_COLUMNS",
    "convert",
    "currencies_in",
    "currency_codes",
    "fx_dates",
    "mixed_currency_problem",
    "one_currency",
    "per_currency_totals",
    "rate_frequency",
    "require_single_currency",
    "single_currency",
    "to_reporting_currency",
    "totals_by_currency",
]

#: Money columns of each canonical table (in the row's ``currency``; ``stage_history.amount`` is in
#: its deal's currency and is converted with the deal, not here).
MONEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "deals": ("amount",),
    "orders": ("amount",),
    "subscriptions": ("mrr_delta", "mrr"),
    "spend": ("cost",),
}

#: Label of rows whose currency is not recorded (they are never added to a known currency).
UNKNOWN = "(no currency)"


class MixedCurrencyError(ValueError):
    """Money in several currencies was about to be added up; ``currencies`` lists them."""

    def __init__(self, what: str, currencies: list[str], hint: str | None = None):
        self.currencies = currencies
        hint = hint or (
            "report it per currency (totals_by_currency), or convert it with an fx_rates table and a "
            "reporting_currency (to_reporting_currency)"
        )
        super().__init__(
            f"{what} is in {len(currencies)} currencies ({', '.join(currencies)}): two currencies are "
            f"never added together; {hint}"
        )


class MissingRateError(ValueError):
    """Rows need an exchange rate the ``fx_rates`` table does not have; ``missing`` lists them."""

    def __init__(self, missing: pd.DataFrame, reporting_currency: str):
        self.missing = missing
        parts = []
        for cur, group in missing.groupby("currency", sort=True):
            days = sorted(pd.to_datetime(group["date"]).dt.strftime("%Y-%m-%d").unique())
            shown = ", ".join(days[:5]) + (f" and {len(days) - 5} more" if len(days) > 5 else "")
            parts.append(f"{cur} -> {reporting_currency} on {shown} ({len(group)} rows)")
        super().__init__(
            "no exchange rate for "
            + "; ".join(parts)
            + ": add them to fx_rates (a missing rate is never taken as 1)"
        )


@lru_cache(maxsize=1)
def currency_codes() -> frozenset[str]:
    """The ISO 4217 alphabetic codes (active currencies and funds, X-codes included).

    Examples
    --------
    >>> {"MXN", "COP", "USD", "PEN"} <= currency_codes(), "US$" in currency_codes()
    (True, False)
    """
    import pycountry

    return frozenset(c.alpha_3 for c in pycountry.currencies)


def currencies_in(frame: pd.DataFrame, currency_col: str = "currency") -> list[str]:
    """The currencies of ``frame``'s rows, sorted; rows without one show as ``(no currency)``.

    A frame without a currency column has one unnamed currency: ``[]``.
    """
    if currency_col not in frame or len(frame) == 0:
        return []
    codes = frame[currency_col].astype("string")
    found = sorted(codes.dropna().str.upper().unique())
    if codes.isna().any() and found:
        found.append(UNKNOWN)
    return found


def single_currency(frame: pd.DataFrame, currency_col: str = "currency") -> str | None:
    """The one currency of ``frame`` (``None`` when none is recorded), or ``None`` if there are several.

    Use :func:`require_single_currency` to refuse instead.
    """
    found = currencies_in(frame, currency_col)
    return found[0] if len(found) == 1 else None


def require_single_currency(
    frame: pd.DataFrame, currency_col: str = "currency", what: str = "this money"
) -> str | None:
    """The one currency of ``frame``'s rows (``None`` when not recorded); refuses several.

    Raises
    ------
    MixedCurrencyError
        When the rows are in two or more currencies (rows without a currency beside rows with one
        count as another currency).
    """
    found = currencies_in(frame, currency_col)
    if len(found) > 1:
        raise MixedCurrencyError(what, found)
    return found[0] if found else None


def totals_by_currency(
    frame: pd.DataFrame,
    value_cols: str | Iterable[str],
    by: str | list[str] | None = None,
    currency_col: str = "currency",
) -> pd.DataFrame:
    """Sums of ``value_cols`` per currency (and per ``by``): the one safe way to total mixed money.

    Returns
    -------
    pandas.DataFrame
        ``[*by, currency, *value_cols]``, one row per group and currency, sorted. Rows without a
        currency are totalled under ``(no currency)``; a frame without a currency column gives one
        group per ``by`` with ``currency`` empty.

    Examples
    --------
    >>> d = pd.DataFrame({"channel": ["a", "a", "b"], "amount": [1.0, 2.0, 3.0],
    ...                   "currency": ["USD", "PEN", "USD"]})
    >>> totals_by_currency(d, "amount", by="channel").values.tolist()
    [['a', 'PEN', 2.0], ['a', 'USD', 1.0], ['b', 'USD', 3.0]]
    """
    cols = [value_cols] if isinstance(value_cols, str) else list(value_cols)
    keys = [] if by is None else ([by] if isinstance(by, str) else list(by))
    work = frame[[*keys, *cols]].copy()
    if currency_col in frame:
        codes = frame[currency_col].astype("string").str.upper()
        work["currency"] = codes.fillna(UNKNOWN if codes.notna().any() else "").to_numpy()
    else:
        work["currency"] = ""
    out = work.groupby([*keys, "currency"], sort=True, dropna=False)[cols].sum().reset_index()
    return out


def mixed_currency_problem(
    frame: pd.DataFrame, table: str, file: str, currency_col: str = "currency", value_col: str | None = None
) -> Problem | None:
    """A warning naming the currencies of a table that holds several (with each one's total), or None."""
    found = currencies_in(frame, currency_col)
    if len(found) < 2 or table == "fx_rates":  # rates are per currency by design: nothing is summed
        return None
    detail = ", ".join(found)
    if value_col and value_col in frame and pd.api.types.is_numeric_dtype(frame[value_col]):
        sums = totals_by_currency(frame, value_col, currency_col=currency_col)
        detail = "; ".join(f"{r.currency} {getattr(r, value_col):,.2f}" for r in sums.itertuples())
    n_missing = int(frame[currency_col].isna().sum())
    extra = f"; {n_missing} rows have no currency" if n_missing else ""
    return Problem(
        table,
        file,
        currency_col,
        f"several currencies in one table ({detail}){extra}: amounts are never added across "
        "currencies; reports show them per currency unless an fx_rates table converts them to "
        "a reporting_currency",
        "warning",
    )


def fx_dates(table: str, frame: pd.DataFrame) -> pd.Series:
    """The date each row of a canonical table converts at (naive, normalised to the day).

    ``deals``: the close date, or the creation date while the deal is open (pipeline);
    ``orders``: the order's timestamp;
    ``subscriptions``: the month; ``spend``: the day.
    """
    if table == "deals":
        when = frame["closed_at"].where(frame["closed_at"].notna(), frame["created_at"])
    elif table == "orders":
        when = frame["timestamp"]
    elif table == "subscriptions":
        when = frame["month"]
    elif table == "spend":
        when = frame["date"]
    else:
        raise KeyError(f"table {table!r} holds no money; money tables: {', '.join(MONEY_COLUMNS)}")
    when = pd.to_datetime(when)
    if isinstance(when.dtype, pd.DatetimeTZDtype):
        when = when.dt.tz_convert("UTC").dt.tz_localize(None)
    return when.dt.normalize()


def rate_frequency(rates: pd.DataFrame) -> Literal["monthly", "daily"]:
    """``monthly`` when every rate date is a first of the month, with one date per month; else ``daily``."""
    days = pd.to_datetime(rates["date"])
    months = days.dt.to_period("M")
    per_currency = rates.assign(_m=months).groupby("currency")["_m"]
    if (days.dt.day == 1).all() and not per_currency.apply(lambda m: m.duplicated().any()).any():
        return "monthly"
    return "daily"


def convert(
    values: pd.DataFrame,
    dates: pd.Series,
    rates: pd.DataFrame,
    reporting_currency: str,
    value_cols: Iterable[str],
    currency_col: str = "currency",
    max_gap_days: int = 7,
) -> pd.DataFrame:
    """Convert ``value_cols`` of ``values`` into ``reporting_currency`` at each row's date.

    Parameters
    ----------
    values
        Rows with money columns and a currency column.
    dates
        The date of each row (see :func:`fx_dates`), aligned with ``values``.
    rates
        An ``fx_rates`` table: ``date``, ``currency``, ``rate`` (units of the reporting currency per
        unit of ``currency``). Monthly rates (dated the first of the month) apply to the whole month;
        daily rates apply from their day, for at most ``max_gap_days`` (weekends, holidays).
    reporting_currency
        ISO code of the currency to report in; its own rows keep their values (rate 1).

    Returns
    -------
    pandas.DataFrame
        ``values`` with ``value_cols`` converted, ``currency`` set to ``reporting_currency``, and
        ``original_currency`` and ``fx_rate`` added.

    Raises
    ------
    MissingRateError
        When a row's currency has no rate for its date; ``missing`` lists those rows.

    Examples
    --------
    >>> rates = pd.DataFrame({"date": pd.to_datetime(["2026-01-01", "2026-02-01"]),
    ...                       "currency": ["MXN", "MXN"], "rate": [0.05, 0.06]})
    >>> deals = pd.DataFrame({"amount": [100.0, 100.0, 7.0], "currency": ["MXN", "MXN", "USD"]})
    >>> when = pd.Series(pd.to_datetime(["2026-01-20", "2026-02-03", "2026-02-03"]))
    >>> convert(deals, when, rates, "USD", ["amount"])["amount"].round(2).tolist()
    [5.0, 6.0, 7.0]
    """
    cols = list(value_cols)
    reporting_currency = reporting_currency.upper()
    out = values.reset_index(drop=True).copy()
    codes = (
        out[currency_col].astype("string").str.upper()
        if currency_col in out
        else pd.Series(pd.NA, index=out.index, dtype="string")
    )
    day = pd.to_datetime(pd.Series(dates).reset_index(drop=True))
    if isinstance(day.dtype, pd.DatetimeTZDtype):
        day = day.dt.tz_convert("UTC").dt.tz_localize(None)
    day = day.dt.normalize()
    rate = pd.Series(np.nan, index=out.index)
    rate[(codes == reporting_currency).fillna(False).to_numpy(bool)] = 1.0
    todo = (codes != reporting_currency).fillna(True).to_numpy(bool)
    if todo.any() and len(rates):
        rate[todo] = _look_up(codes[todo], day[todo], rates, max_gap_days).to_numpy()
    missing = rate.isna().to_numpy()
    if missing.any():
        lacking = pd.DataFrame(
            {
                "currency": codes[missing].fillna(UNKNOWN).to_numpy(),
                "date": day[missing].to_numpy(),
                "row": np.flatnonzero(missing) + 1,
            }
        )
        raise MissingRateError(lacking, reporting_currency)
    for c in cols:
        out[c] = out[c].astype("float64") * rate.to_numpy()
    out["original_currency"] = codes.to_numpy()
    out["fx_rate"] = rate.to_numpy()
    out[currency_col] = reporting_currency
    return out


def _look_up(codes: pd.Series, day: pd.Series, rates: pd.DataFrame, max_gap_days: int) -> pd.Series:
    """The rate of each (currency, day): same month for monthly rates, latest within the gap for daily."""
    table = rates.assign(
        currency=rates["currency"].astype(str).str.upper().astype(object),
        date=pd.to_datetime(rates["date"]).dt.normalize(),
    )
    want = pd.DataFrame(
        {"currency": codes.astype(object).to_numpy(), "date": day.to_numpy(), "_i": np.arange(len(codes))}
    )
    if rate_frequency(table) == "monthly":
        table = table.assign(_m=table["date"].dt.to_period("M"))
        want = want.assign(_m=want["date"].dt.to_period("M"))
        got = want.merge(table[["currency", "_m", "rate"]], on=["currency", "_m"], how="left")
        return got.sort_values("_i")["rate"].reset_index(drop=True)
    ok = want["date"].notna() & want["currency"].notna()
    left = want[ok].sort_values("date")
    right = table[["currency", "date", "rate"]].dropna().sort_values("date")
    left, right = (
        left.assign(currency=left["currency"].astype(str)),
        right.assign(currency=right["currency"].astype(str)),
    )
    got = pd.merge_asof(
        left, right, on="date", by="currency", direction="backward", tolerance=pd.Timedelta(days=max_gap_days)
    )
    result = pd.Series(np.nan, index=range(len(codes)))
    result[got["_i"].to_numpy()] = got["rate"].to_numpy()
    return result


def to_reporting_currency(
    tables: Mapping[str, pd.DataFrame], fx_rates: pd.DataFrame | None, reporting_currency: str | None
) -> Mapping[str, pd.DataFrame]:
    """The money tables of ``tables`` in one currency, ready to be summed.

    Tables already in one currency need nothing: when every money table is in ``reporting_currency``
    (or in one currency and no reporting currency is asked for) ``tables`` comes back as it is.
    Otherwise each money table is converted with :func:`convert` at its :func:`fx_dates`, and the
    result is a :class:`collections.ChainMap` of the converted tables over ``tables``: only the money
    tables are read (a run workspace's touchpoints are never materialised).

    Raises
    ------
    MixedCurrencyError
        Money in several currencies and no ``fx_rates`` (or no ``reporting_currency``) to convert it.
    MissingRateError
        A rate needed for a row is missing.
    """
    present = {name: tables[name] for name in MONEY_COLUMNS if name in tables}
    found = sorted({c for df in present.values() for c in currencies_in(df)})
    if not found or (
        len(found) == 1 and (reporting_currency is None or found[0] == reporting_currency.upper())
    ):
        return tables
    if fx_rates is None or reporting_currency is None:
        raise MixedCurrencyError("the money of these tables", found)
    converted = {}
    for name, df in present.items():
        cols = [c for c in MONEY_COLUMNS[name] if c in df]
        converted[name] = convert(df, fx_dates(name, df), fx_rates, reporting_currency, cols)
    return ChainMap(converted, tables)  # type: ignore[arg-type]


# -- reports on money in several currencies ---------------------------------------------------------

#: The per-currency figures of :func:`per_currency_totals`.
TOTAL_COLUMNS = ("won_deals", "won_revenue", "open_pipeline", "spend", "order_revenue", "net_new_mrr")


def _in_period(when: pd.Series, period: str | None) -> pd.Series:
    if period is None:
        return pd.Series(True, index=when.index)
    stamp = pd.to_datetime(when)
    if isinstance(stamp.dtype, pd.DatetimeTZDtype):
        stamp = stamp.dt.tz_convert("UTC").dt.tz_localize(None)
    return (stamp.dt.strftime("%Y-%m" if len(period) == 7 else "%Y") == period).fillna(False)


def per_currency_totals(tables: Mapping[str, pd.DataFrame], period: str | None = None) -> pd.DataFrame:
    """The headline money of ``tables`` per currency, never summed across currencies.

    One row per currency (``(no currency)`` for rows without one): deals won and their revenue (by
    close date), the open pipeline (by creation date), spend, order revenue and net new MRR (the sum
    of the MRR movements), each over ``period`` (``YYYY-MM`` or ``YYYY``) or over all the data.

    Examples
    --------
    >>> deals = pd.DataFrame({"amount": [100.0, 50.0, 20.0], "currency": ["USD", "MXN", "USD"],
    ...                       "won": [True, True, None], "created_at": pd.to_datetime(["2026-01-02"] * 3),
    ...                       "closed_at": pd.to_datetime(["2026-01-05", "2026-01-09", None])})
    >>> per_currency_totals({"deals": deals})[["won_deals", "won_revenue", "open_pipeline"]].values.tolist()
    [[1.0, 50.0, 0.0], [1.0, 100.0, 20.0]]
    """
    parts: list[pd.DataFrame] = []

    def add(name: str, frame: pd.DataFrame, value: str, column: str, count: bool = False) -> None:
        if not len(frame):
            return
        sums = totals_by_currency(frame, value).set_index("currency")[value].rename(column)
        parts.append(sums.to_frame())
        if count:
            parts.append(totals_by_currency(frame.assign(_n=1.0), "_n").set_index("currency")["_n"]
                         .rename("won_deals").to_frame())

    deals = tables["deals"] if "deals" in tables else None
    if deals is not None and len(deals):
        won = deals[(deals["won"] == True).fillna(False).to_numpy(bool)]  # noqa: E712 (nullable booleans)
        add("deals", won[_in_period(won["closed_at"], period)], "amount", "won_revenue", count=True)
        open_ = deals[deals["closed_at"].isna().to_numpy()]
        add("deals", open_[_in_period(open_["created_at"], period)], "amount", "open_pipeline")
    for name, value, column, when in (("spend", "cost", "spend", "date"),
                                      ("orders", "amount", "order_revenue", "timestamp"),
                                      ("subscriptions", "mrr_delta", "net_new_mrr", "month")):
        if name in tables and len(tables[name]):
            frame = tables[name]
            add(name, frame[_in_period(frame[when], period).to_numpy()], value, column)
    if not parts:
        return pd.DataFrame(columns=list(TOTAL_COLUMNS), index=pd.Index([], name="currency"))
    out = pd.concat(parts, axis=1).T.groupby(level=0).sum().T
    out = out.reindex(columns=list(TOTAL_COLUMNS)).fillna(0.0)
    out.index.name = "currency"
    order = sorted(out.index, key=lambda c: (c in (UNKNOWN, ""), c))
    return out.loc[order]


class OneCurrency:
    """The money a report shows, in one currency: what :func:`one_currency` returns.

    Attributes
    ----------
    currency
        ISO code every money figure of ``tables`` is in (``""`` when none is recorded).
    tables
        The workspace (or tables) to report on: all of it when its money is in one currency
        (converted or as recorded), else the slice in ``currency`` (:meth:`Workspace.in_currency`).
    currencies
        Every currency of the money tables, sorted.
    totals
        :func:`per_currency_totals` of all the money, one row per currency.
    note
        Sentences saying which currency the figures are in and what was left out (plain text).
    period
        The period ``totals`` cover (``None``: all the data).
    """

    def __init__(self, currency: str, tables: Any, currencies: list[str], totals: pd.DataFrame, note: str,
                 period: str | None = None):
        self.currency, self.tables, self.currencies, self.totals, self.note, self.period = (
            currency, tables, currencies, totals, note, period)

    @property
    def mixed(self) -> bool:
        """Whether the money is in several currencies (so ``tables`` is one currency's slice)."""
        return len(self.currencies) > 1

    def refusal(self, what: str = "this report") -> OneCurrency:
        """What to show in place of a report that needs one currency: each currency's totals, and
        the two ways to a report in one (rates, or one currency's report)."""
        when = f" for {self.period}" if self.period else ""
        found = ", ".join(self.currencies)
        note = (f"The money here is in {len(self.currencies)} currencies ({found}) and no fx_rates table "
                f"converts it, so {what} does not add it up: each currency's figures{when} are below, side "
                "by side. To report all of it in one currency, run with reporting_currency and "
                "fx_rates (a rates file); for one currency's report, run with only_currency.")
        return OneCurrency(self.currency, self.tables, self.currencies, self.totals, note, self.period)

    def refuse(self, what: str = "this report") -> None:
        """Raise :class:`MixedCurrencyError` when the money is in several currencies."""
        if self.mixed:
            raise MixedCurrencyError(
                f"{what}'s money", self.currencies,
                "each currency's totals are shown above; run with reporting_currency and fx_rates (a rates "
                "file) to report all of it in one currency, or with only_currency for one currency's report")

    def _repr_html_(self) -> str:
        import html

        text = f"<p>{html.escape(self.note)}</p>"
        if not self.mixed:
            return text
        shown = self.totals.rename(columns=lambda c: c.replace("_", " "))
        return (f"<p><strong>Several currencies, never added together.</strong></p>{text}"
                + shown.to_html(float_format="{:,.0f}".format, escape=True))

    def __repr__(self) -> str:
        return f"<OneCurrency {self.currency or '(none)'} of {', '.join(self.currencies) or 'none'}>"


def _slice(tables: Any, currency: str) -> Any:
    if hasattr(tables, "in_currency"):
        return tables.in_currency(currency)
    out = dict(tables)
    for name in MONEY_COLUMNS:
        if name in out and "currency" in out[name]:
            codes = out[name]["currency"].astype("string").str.upper()
            keep = codes.isna() if currency == UNKNOWN else (codes == currency)
            out[name] = out[name][keep.fillna(False).to_numpy(bool)].reset_index(drop=True)
    if "deals" in out:
        for name in ("stage_history", "deal_contacts"):
            if name in out:
                keep = out[name]["deal_id"].isin(out["deals"]["deal_id"])
                out[name] = out[name][keep].reset_index(drop=True)
    return out


def one_currency(tables: Any, only: str | None = None, period: str | None = None) -> OneCurrency:
    """What a report on ``tables`` (a workspace, or a dict of tables) shows its money in.

    * Money in one currency (recorded so, or converted at the workspace's build with
      ``reporting_currency`` and ``fx_rates``): all of ``tables``, in that currency.
    * Money in several and no rates: never a sum. ``only`` names the currency to report (a run per
      currency); without it, the one with the most won revenue (then spend), and the note says the
      other currencies' money is left out, with every currency's totals (:func:`per_currency_totals`
      over ``period``) beside it.

    Examples
    --------
    >>> deals = pd.DataFrame({"deal_id": ["a", "b"], "amount": [100.0, 50.0], "currency": ["USD", "MXN"],
    ...                       "won": [True, True], "created_at": pd.to_datetime(["2026-01-02"] * 2),
    ...                       "closed_at": pd.to_datetime(["2026-01-05", "2026-01-09"])})
    >>> choice = one_currency({"deals": deals})
    >>> choice.currency, choice.currencies, choice.tables["deals"]["amount"].tolist()
    ('USD', ['MXN', 'USD'], [100.0])
    """
    if hasattr(tables, "currencies"):
        found = tables.currencies()
    else:
        found = sorted({c for n in MONEY_COLUMNS if n in tables for c in currencies_in(tables[n])},
                       key=lambda c: (c == UNKNOWN, c))
    totals = per_currency_totals(tables, period)
    when = f" in {period}" if period else ""
    only = (only or "").strip()
    only = only if only == UNKNOWN else only.upper()
    converted = getattr(tables, "reporting_currency", None)
    if len(found) <= 1:
        code = found[0] if found else ""
        if only and only != code:
            raise ValueError(f"only_currency {only!r}: the money is in {code or 'no recorded currency'}")
        if converted:
            note = (f"Every money figure is in {code}, converted with the fx_rates table at each row's "
                    "date (the amounts as recorded are kept in the original_* columns).")
        else:
            note = f"Every money figure is in {code}." if code else "No currency is recorded for the money."
        return OneCurrency(code, tables, found, totals, note, period)
    if only:
        if only not in found:
            raise ValueError(f"only_currency {only!r}: the money is in {', '.join(found) or 'no currency'}")
        pick = only
    else:
        ranked = totals.reindex(found).fillna(0.0)
        pick = sorted(found, key=lambda c: (-ranked.loc[c, "won_revenue"], -ranked.loc[c, "spend"],
                                            c == UNKNOWN, c))[0]
    others = [c for c in found if c != pick]
    unused = "fx_rates" in tables and not converted  # rates there, but no reporting_currency asked
    why = "no reporting_currency is set to convert it into" if unused else "no fx_rates table converts it"
    note = (f"The money here is in {len(found)} currencies ({', '.join(found)}) and {why}, so it is never "
            f"added up. Every money figure below is in {pick} only"
            f"{' (the currency with the most won revenue)' if not only else ''}: deals, spend, orders and "
            f"MRR in {', '.join(others)} are left out of them (touches and leads all count). Each currency's "
            f"totals{when} are in the table. To report all of it in one currency, run with "
            "reporting_currency and fx_rates; for another currency's figures, run with only_currency.")
    return OneCurrency(pick, _slice(tables, pick), found, totals, note, period)

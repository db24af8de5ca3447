"""The presentation layer: stakeholder tables, headline tiles and sentences, safe to forward.

Everything a report shows from the data goes through here, so three promises hold in one place:

* **formats from the column's meaning** (:data:`KINDS`): money with the currency symbol and thousands
  separators, percentages, counts as whole numbers, ratios at a fixed precision; "—" where a figure
  does not apply, with a footnote saying why; the ``Total`` row set apart; at most
  :data:`MAX_COLUMNS` columns (the rest belong in the analysts' notebooks);
* **nothing from the data runs in the reader's browser**: every value (channel and campaign names,
  currency codes, ids) is HTML-escaped where it reaches a page, and values that look like e-mail
  addresses or phone numbers are masked (:func:`closedloop_nb.privacy.mask_contact_details`);
* **small cells are not disclosed**: counts of deals or customers below ``min_cell`` (and the money
  figures resting on them) are shown as "< 3", so no single deal's amount can be read off a table.

Examples
--------
>>> import pandas as pd
>>> df = pd.DataFrame({"revenue": [530200.0, 0.0], "roi": [0.58, float("nan")], "customers": [12.4, 0.0]},
...                   index=pd.Index(["Paid Search", "<b>x</b>"], name="channel"))
>>> html = table(df, "GBP").to_html()
>>> "£530,200" in html and "58%" in html and "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x" not in html
True
"""

from __future__ import annotations

import hashlib
import hmac
import html
import math
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.privacy import mask_contact_details

__all__ = ["DASH", "KINDS", "MAX_COLUMNS", "Html", "Tile", "clean_text", "currency_symbol", "fmt", "kind_of",
           "label", "month_in_three_sentences", "month_name", "problems_table", "prose", "pseudonymise",
           "quality_tables", "revenue_change_by_channel", "ranked", "report_currency", "round_money",
           "round_to_interval", "table", "table_currencies", "tiles", "tiles_from_month", "with_intervals"]

DASH = "—"
MAX_COLUMNS = 7

#: What each column means, by name; :func:`kind_of` also reads suffixes (``_rate``, ``_lower``...).
KINDS: dict[str, str] = {
    **dict.fromkeys(("revenue", "pipeline", "spend", "value", "amount", "cost_per_lead",
                     "cost_per_opportunity", "cac", "marketing_revenue", "mrr", "arr", "mrr_end",
                     "mrr_start", "net_new_mrr", "new", "expansion", "contraction", "churn", "reactivation",
                     "clv", "ltv", "arpa", "cost", "negative_value", "revenue_now", "revenue_new",
                     "spend_now", "spend_new", "spend_min", "spend_max", "value_in", "value_kept",
                     "value_rejected", "expected_spend", "naive_ltv", "total_conversion_value"), "money"),
    **dict.fromkeys(("roi", "share", "pct_change", "lead_to_customer", "win_rate", "mql_rate", "sql_rate",
                     "opportunity_rate", "within_1_month", "within_3_months", "probability", "monthly_churn",
                     "base_rate"), "percent"),
    **dict.fromkeys(("leads", "mqls", "sqls", "opportunities", "customers", "deals", "won", "periods",
                     "touches", "deals_negative", "deals_credited", "people", "rows_in", "rows_kept",
                     "rows_rejected", "rows_collapsed", "rows_filtered", "n", "of", "n_rows",
                     "total_conversions", "total_null", "conversions", "churned", "customers_start",
                     "customers_new", "customers_lost", "journeys", "rank", "best_rank", "worst_rank",
                     "spread", "n_train", "n_test", "churners_train", "churners_test", "tenure",
                     "horizon_months"), "count"),
    **dict.fromkeys(("roas", "marketing_roas", "marginal_roas", "elasticity", "negative_share",
                     "hazard_ratio", "rate_ratio", "dropout_ratio", "clv_to_cac", "ltv_to_cac", "tvd",
                     "brier", "roc_auc", "estimate", "std_error", "lower_95", "upper_95"), "ratio"),
    **dict.fromkeys(("p_value", "ph_p_value", "purchase_p", "dropout_a_p", "dropout_b_p"), "p"),
    **dict.fromkeys(("expected_months", "mean", "expected_purchases"), "number"),
    **dict.fromkeys(("days", "median_days", "mean_days"), "days"),
}

#: Why a figure is empty, by column, for the footnote under a table.
WHY_EMPTY: dict[str, str] = {
    "roi": "no spend is recorded for it, so there is no return to state",
    "roas": "no spend is recorded for it, so there is no return to state",
    "marketing_roas": "no spend is recorded",
    "cost_per_lead": "no spend recorded, or no leads",
    "cost_per_opportunity": "no spend recorded, or no opportunities",
    "cac": "no spend recorded, or no customers won",
    "pct_change": "the month before had nothing to compare with",
    "value_in": "the table's amounts are in several currencies, which are never added together",
    "clv_to_cac": "no spend recorded for the channel, so no acquisition cost",
    "naive_ltv": "no customer of the channel has churned yet, so a constant-churn lifetime is unbounded",
    "lower": "too few draws or customers for an interval",
    "roi_lower": "no interval without spend",
}

#: Column headings for stakeholders.
LABELS: dict[str, str] = {"cac": "CAC", "roi": "ROI", "roas": "ROAS", "mrr": "MRR", "arr": "ARR",
                          "cost_per_lead": "cost per lead", "pct_change": "change %", "mqls": "MQLs",
                          "sqls": "SQLs", "mql_rate": "MQL rate", "marketing_roas": "marketing ROAS",
                          "lead_to_customer": "lead to customer", "clv": "CLV"}

#: Money columns whose figure rests on a count column: hidden with it when the count is small.
RESTS_ON: dict[str, str] = {"revenue": "customers", "cac": "customers", "roi": "customers",
                            "roas": "customers", "pipeline": "opportunities",
                            "cost_per_opportunity": "opportunities", "value": "deals",
                            **dict.fromkeys(("mrr", "arr", "new", "expansion", "contraction", "churn",
                                             "reactivation", "clv", "arpa"), "customers")}

#: Symbols of common currencies (others are written as their escaped ISO code).
SYMBOLS = {"GBP": "£", "USD": "$", "EUR": "€", "JPY": "¥", "INR": "₹", "AUD": "A$", "CAD": "C$",
           "CHF": "CHF "}


class Html(str):
    """A string of HTML this module built (every data value in it escaped): shown as HTML by Jupyter."""

    def _repr_html_(self) -> str:
        return str(self)


def clean_text(value: Any) -> str:
    """A data value as text safe to show: e-mail addresses and phone numbers masked (not escaped).

    >>> clean_text("spring ann@example.com")
    'spring [email]'
    """
    return mask_contact_details(str(value))[0]


def label(value: Any) -> str:
    """A data value as HTML: masked, then escaped (``<img src=x>`` shows as text, never runs)."""
    return html.escape(clean_text(value), quote=True)


def currency_symbol(currency: str) -> str:
    """The symbol for ``currency``, or the (masked) code itself as a prefix; plain text, not escaped."""
    code = clean_text(currency or "").strip()
    return SYMBOLS.get(code.upper(), f"{code} " if code else "")


def kind_of(column: Any) -> str:
    """``money``, ``percent``, ``count``, ``ratio``, ``number``, ``days`` or ``text`` for a column name.

    >>> kind_of("revenue"), kind_of("mql_rate_lower"), kind_of("rows_kept"), kind_of("expected_months")
    ('money', 'percent', 'count', 'number')
    """
    name = str(column[-1] if isinstance(column, tuple) else column).lower()
    for suffix in ("_lower", "_upper"):
        name = name.removesuffix(suffix)
    if name in KINDS:
        return KINDS[name]
    if name.endswith(("_rate", "_share", "_pct")):
        return "percent"
    if name.endswith(("_revenue", "_value", "_spend", "_mrr", "_cost")):
        return "money"
    if "days" in name.split("_"):
        return "days"
    return "text"


def fmt(value: Any, kind: str, currency: str = "", digits: int = 2) -> str:
    """One figure as plain text in its kind's format (``—`` when missing).

    >>> fmt(530200, "money", "GBP"), fmt(-875.4, "money", "EUR"), fmt(0.581, "percent"), fmt(12.6, "count")
    ('£530,200', '−€875', '58%', '13')
    >>> fmt(0.4, "count"), fmt(-0.0042, "percent"), fmt(-0.2, "money", "GBP"), fmt(0.0003, "percent")
    ('< 1', '−0.4%', '£0', '< 0.1%')
    >>> fmt(22.87, "percent"), fmt(0.005, "percent"), fmt(0.995, "percent"), fmt(0.00996, "percent")
    ('2,287%', '0.5%', '100%', '1%')
    >>> fmt(9.6412, "ratio"), fmt(None, "money"), fmt(1234.6, "money", "NOK"), fmt(6.36, "number")
    ('9.64', '—', 'NOK 1,235', '6.4')
    >>> fmt(Decimal(1537), "count"), fmt(0.1578, "ratio", digits=4), fmt(1476504.2, "ratio")
    ('1,537', '0.1578', '1,476,504')
    >>> fmt(0.00002, "p"), fmt(0.1044, "p")
    ('< 0.001', '0.104')
    """
    if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
        return DASH
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, Decimal):  # DuckDB's sums of integers
        value = float(value)
    if isinstance(value, str) or not isinstance(value, (int, float, np.number)):
        return clean_text(value)
    v = float(value)
    if not math.isfinite(v):
        return DASH
    a = abs(v)
    if kind == "money":
        body = f"{currency_symbol(currency)}{a:,.0f}"
    elif kind == "percent":
        body = f"{a * 100:,.0f}%" if a >= 0.01 or a == 0 else f"{a:.1%}" if a >= 0.001 else "< 0.1%"
        body = "1%" if body == "1.0%" else body  # one decimal under 1% only: 0.996% reads "1%", as 1.2%
    elif kind == "count":
        body = "< 1" if 0 < a < 1 else f"{a:,.0f}"
    elif kind == "days":
        body = f"{a:,.0f}"
    elif kind == "number":
        body = f"{a:,.1f}"
    elif kind == "p":
        return "< 0.001" if a < 0.001 else f"{a:.3f}"
    else:  # ratio: fixed precision; large values need no decimals
        body = f"{a:,.{digits}f}" if a < 1000 else f"{a:,.0f}"
    shown_nonzero = any(ch in "123456789" for ch in body.replace(currency_symbol(currency), ""))
    return ("−" if v < 0 and shown_nonzero else "") + body


def round_to_interval(value: float, lower: float, upper: float) -> float:
    """``value`` rounded to the precision its interval supports (two significant digits of the half-width).

    >>> round_to_interval(208_464.3, 150_000.0, 260_000.0), round_to_interval(1234.5, 1230.0, 1240.0)
    (208000.0, 1234.5)
    """
    half = (upper - lower) / 2
    if not (math.isfinite(half) and half > 0 and math.isfinite(value)):
        return value
    step = 10 ** (math.floor(math.log10(half)) - 1)
    return float(round(value / step) * step)


def round_money(value: float, significant: int = 3) -> float:
    """``value`` to ``significant`` significant digits: how a model's split of money is stated (credited
    revenue per channel is an estimate, not a record; four or five digits would claim more than it knows).

    >>> round_money(-29_621.4), round_money(55_100.0), round_money(812.9), round_money(0.0)
    (-29600.0, 55100.0, 813.0, 0.0)
    """
    if not (isinstance(value, (int, float, np.number)) and math.isfinite(value)) or value == 0:
        return value
    step = 10 ** (math.floor(math.log10(abs(value))) - significant + 1)
    return float(round(value / step) * step)


def month_name(period: Any) -> str:
    """``2024-06`` as ``June 2024`` (other periods as they are).

    >>> month_name("2024-06"), month_name("2024-Q2")
    ('June 2024', '2024-Q2')
    """
    text = str(period)
    if not (len(text) == 7 and text[4] == "-" and text[:4].isdigit() and text[5:].isdigit()):
        return text
    try:
        return pd.Period(text, freq="M").strftime("%B %Y")
    except (ValueError, TypeError):
        return text


def _small(count: Any, min_cell: int) -> bool:
    return bool(min_cell) and isinstance(count, (int, float, np.number, Decimal)) \
        and math.isfinite(float(count)) and 0 < float(count) < min_cell


def table(df: pd.DataFrame, currency: str | Mapping[Any, str] = "", kinds: Mapping[str, str] | None = None, *,
          total: str = "Total", min_cell: int = 3, support: pd.DataFrame | None = None,
          max_columns: int = MAX_COLUMNS, notes: Mapping[str, str] | None = None,
          labels: Mapping[str, str] | None = None, digits: Mapping[str, int] | None = None) -> Any:
    """A stakeholder table: a pandas ``Styler`` formatted from each column's meaning (see module docs).

    Parameters
    ----------
    df
        One row per channel (campaign...) and optionally a ``total`` row; the index becomes the
        first column.
    currency
        ISO code of the money columns (:func:`closedloop_nb.metrics.currency_of`), or one code per
        row (a mapping from the row's index value, e.g. per table of a data-quality summary).
    kinds
        Overrides of :func:`kind_of` by column.
    min_cell
        Counts (and the money resting on them, :data:`RESTS_ON`) between 0 and ``min_cell`` are shown
        as ``< min_cell``; 0 turns it off.
    support
        Distinct records behind each row's counts (``customers``, ``opportunities``, ``deals``
        columns, as :func:`closedloop_nb.metrics.policy.distinct_deals` gives them): when given, a
        cell is small when *fewer than min_cell distinct deals* stand behind it, whatever their
        credited share; otherwise the shown count itself decides.
    max_columns
        Refuses wider tables (a stakeholder table says one thing; details go to notebook 3).
    notes
        Reasons why a column can be empty (default :data:`WHY_EMPTY`); notes under keys that are
        not columns are added as footnotes.
    digits
        Decimal places of ``ratio`` columns, by column (default 2).

    Raises
    ------
    ValueError
        With more than ``max_columns`` columns.
    """
    if df.shape[1] > max_columns:
        raise ValueError(f"a stakeholder table has at most {max_columns} columns; got {df.shape[1]} "
                         f"({', '.join(map(str, df.columns))}): pick the ones that matter, the rest go below")
    kinds = {c: (kinds or {}).get(c, kind_of(c)) for c in df.columns}
    why = {**WHY_EMPTY, **(notes or {})}
    names = {**LABELS, **(labels or {})}
    rows = []
    used_dash: list[str] = []
    small_seen = False
    for key, row in df.iterrows():
        cur = currency.get(key, "") if isinstance(currency, Mapping) else currency
        cells = [label(key)]
        for c in df.columns:
            base = str(c[-1] if isinstance(c, tuple) else c)
            counted = base if kinds[c] == "count" else RESTS_ON.get(base)
            if support is not None and base in support.columns:  # per-cell support (e.g. stages)
                counted = base
            if support is not None and counted in support.columns:
                n = support[counted].get(key, np.nan)
            else:
                n = row[counted] if counted in df.columns else np.nan
            if counted is not None and _small(n, min_cell):
                cells.append(f"&lt; {min_cell}")
                small_seen = True
                continue
            text = fmt(row[c], kinds[c], cur, (digits or {}).get(c, 2))
            if text == DASH and base not in used_dash:
                used_dash.append(base)
            cells.append(html.escape(text))
        rows.append(cells)
    head = [label(names.get(str(df.index.name), str(df.index.name or "")))]
    head += [label(names.get(str(c), str(c).replace("_", " "))) for c in df.columns]
    shown = pd.DataFrame(rows, columns=pd.Index(head))
    foot = [f"{DASH} {names.get(c, c.replace('_', ' '))}: {why[c]}." for c in used_dash if c in why]
    if small_seen:
        foot.append(f"< {min_cell}: fewer than {min_cell} deals or customers stand behind the figure; it is "
                    "not shown so that no single deal or customer can be read off the table.")
    foot += [n for k, n in (notes or {}).items() if k not in df.columns and k not in WHY_EMPTY]
    numeric = [h for h, c in zip(head[1:], df.columns, strict=True) if kinds[c] != "text"]
    text = [h for h, c in zip(head[1:], df.columns, strict=True) if kinds[c] == "text"]
    short = [h for h in head if shown[h].astype(str).str.len().max() <= 24]
    styles = [{"selector": "", "props": "border-collapse:collapse;margin:.5em 0 1.2em;font-size:.95em;"
               "page-break-inside:avoid;break-inside:avoid"},
              {"selector": "th, td", "props": "padding:3px 10px;border-bottom:1px solid #e4e4e4"},
              {"selector": "thead th", "props": "border-bottom:2px solid #888;text-align:right"},
              {"selector": "thead th:first-child", "props": "text-align:left"},
              {"selector": "caption", "props": "caption-side:bottom;text-align:left;font-size:.85em;"
               "color:#555;padding-top:.4em"}]
    is_total = [str(k) == total for k in df.index]
    styler = (shown.style.hide(axis="index").set_table_styles(styles)
              .set_properties(subset=numeric, **{"text-align": "right"})
              .set_properties(subset=[head[0], *text], **{"text-align": "left"})
              .set_properties(subset=short, **{"white-space": "nowrap"})
              .apply(lambda col: ["font-weight:bold;border-top:2px solid #888;background:#f6f6f6" if t else ""
                                  for t in is_total], axis=0)
              .set_table_attributes("class='cl-table'"))
    if text:  # headings of text columns sit over their (left-aligned) text
        styler = styler.set_table_styles({h: [{"selector": "th", "props": "text-align:left"}] for h in text},
                                         overwrite=False)
    if foot:
        styler = styler.set_caption("<br>".join(html.escape(n) for n in foot))
    return styler


def pseudonymise(ids: pd.Series | Iterable[Any], prefix: str = "ID") -> pd.Series:
    """Pseudonymous ids for per-person rows: ``ID-3f9a2c1b``, a keyed hash of each value.

    The key is the project's hash key (:func:`closedloop_nb.privacy.load_hash_key`) when one is set,
    so the same person keeps the same pseudonym from report to report; otherwise a random key of this
    process (stable within one report only). The raw id never reaches the page.

    >>> p = pseudonymise(pd.Series(["ann@example.com", "ann@example.com", "bob"]), "P")
    >>> p.iloc[0] == p.iloc[1] != p.iloc[2], p.iloc[0].startswith("P-"), "ann" in p.iloc[0]
    (True, True, False)
    """
    values = pd.Series(ids) if not isinstance(ids, pd.Series) else ids
    key = _key()

    def one(v: Any) -> str:
        if pd.isna(v):
            return DASH
        return f"{prefix}-" + hmac.new(key, str(v).encode("utf-8"), hashlib.sha256).hexdigest()[:8]

    return values.map(one)


_PROCESS_KEY = secrets.token_bytes(32)


def _key() -> bytes:
    from closedloop_nb.privacy import MissingHashKeyError, load_hash_key

    try:
        return load_hash_key()
    except MissingHashKeyError:
        return _PROCESS_KEY


# ----------------------------------------------------------------------------- tiles and sentences


@dataclass
class Tile:
    """One headline figure: its value, the change on last month and, where it has one, an interval."""

    title: str
    value: str
    change: str = ""
    direction: int = 0  # +1 good, -1 bad, 0 neutral (colour of the change)
    interval: str = ""
    note: str = ""


def tiles(items: Iterable[Tile]) -> Html:
    """The KPI tiles as one HTML block (every text escaped); prints as a grid of boxes."""
    colour = {1: "#1b7f3b", -1: "#b3261e", 0: "#555"}
    cells = []
    for t in items:
        parts = [f"<div class='cl-tile-title'>{html.escape(t.title)}</div>",
                 f"<div class='cl-tile-value'>{html.escape(t.value)}</div>"]
        if t.change:
            parts.append(f"<div class='cl-tile-change' style='color:{colour[t.direction]}'>"
                         f"{html.escape(t.change)}</div>")
        if t.interval:
            parts.append(f"<div class='cl-tile-note'>{html.escape(t.interval)}</div>")
        if t.note:
            parts.append(f"<div class='cl-tile-note'>{html.escape(t.note)}</div>")
        cells.append(f"<div class='cl-tile'>{''.join(parts)}</div>")
    css = "<style>" + "".join((
        ".cl-tiles{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:12px;margin:1em 0;"
        "max-width:900px}",
        ".cl-tile{border:1px solid #d0d7de;border-radius:6px;padding:10px 14px;break-inside:avoid;"
        "page-break-inside:avoid}",
        ".cl-tile-title{font-size:.85em;color:#555;text-transform:uppercase;letter-spacing:.03em}",
        ".cl-tile-value{font-size:1.7em;font-weight:600;margin:.15em 0}",
        ".cl-tile-change{font-size:.95em}.cl-tile-note{font-size:.8em;color:#666}")) + "</style>"
    return Html(f"{css}<div class='cl-tiles' data-tiles='{len(cells)}'>{''.join(cells)}</div>")


def _change(cur: float, prev: float, kind: str, currency: str, good_up: bool = True) -> tuple[str, int]:
    if not (np.isfinite(cur) and np.isfinite(prev)):
        return "no figure for last month", 0
    diff = cur - prev
    if kind == "percent":  # a change of a rate is in percentage points, with last month's rate beside it
        text = (f"{'+' if diff >= 0 else '−'}{abs(diff) * 100:,.0f} percentage points on last month "
                f"({fmt(prev, kind)} then)")
    elif kind == "ratio":
        text = f"{'+' if diff >= 0 else '−'}{abs(diff):.2f} on last month"
    else:
        text = ("+" if diff >= 0 else "") + fmt(diff, kind, currency) + " on last month"
        if prev > 0:
            text += f" ({'+' if diff >= 0 else '−'}{abs(diff / prev):.0%})"
    if diff == 0:
        return "unchanged on last month", 0
    return text, (1 if (diff > 0) == good_up else -1)


def tiles_from_month(mom: pd.DataFrame, currency: str = "", min_cell: int = 3) -> Html:
    """The six KPI tiles of a month from :func:`closedloop_nb.metrics.month_over_month`.

    Revenue, marketing-sourced revenue, ROI, pipeline created, leads and CAC, each with the change on
    last month. Leads carry a 95% interval on their change (counts of independent arrivals vary like a
    Poisson count; the interval says whether the change is more than noise); the money figures are sums
    of the CRM's records, not estimates, so they have none. Revenue and CAC are withheld when fewer
    than ``min_cell`` deals were won (one deal's amount would be the headline).
    """
    cur, prev = mom["current"], mom["previous"]
    won = float(cur.get("customers", np.nan))
    few = bool(min_cell) and np.isfinite(won) and 0 < won < min_cell
    out = []
    for key, title, kind, good_up in (("revenue", "Revenue", "money", True),
                                      ("marketing_revenue", "Marketing-sourced revenue", "money", True),
                                      ("roi", "ROI", "percent", True),
                                      ("pipeline", "Pipeline created", "money", True),
                                      ("leads", "Leads", "count", True),
                                      ("cac", "CAC", "money", False)):
        c, p = float(cur.get(key, np.nan)), float(prev.get(key, np.nan))
        if few and key in ("revenue", "marketing_revenue", "cac", "roi"):
            out.append(Tile(title, f"< {min_cell} deals", note=f"not shown: fewer than {min_cell} deals won"))
            continue
        change, direction = _change(c, p, kind, currency, good_up)
        tile = Tile(title, fmt(c, kind, currency), change, direction)
        if key == "leads" and np.isfinite(c) and np.isfinite(p):
            half = 1.96 * math.sqrt(max(c + p, 1.0))
            d = c - p
            tile.interval = f"95% interval of the change {d - half:+,.0f} to {d + half:+,.0f}"
            tile.interval = tile.interval.replace("-", "−")
        if key == "roi" and not np.isfinite(c):
            tile.note = "no spend recorded this month"
        if key == "cac" and not np.isfinite(c):
            tile.note = "no spend, or no customers won"
        if key == "marketing_revenue" and np.isfinite(c) and float(cur.get("revenue", 0)) > 0:
            tile.note = f"{c / float(cur['revenue']):.0%} of revenue; people with marketing touches"
        out.append(tile)
    return tiles(out)


def revenue_change_by_channel(perf_now: pd.DataFrame, perf_before: pd.DataFrame) -> pd.DataFrame:
    """How the month's revenue change splits over channels, and why each moved.

    Per channel: revenue now and before, the change, and its split into *volume* (more or fewer
    customers, at last month's average deal) and *deal size* (the rest); volume + deal size = change
    exactly. Largest absolute change first; ``Total`` left out.
    """
    idx = perf_now.index.union(perf_before.index).drop("Total", errors="ignore")
    now = perf_now.reindex(idx)[["revenue", "customers"]].fillna(0.0)
    before = perf_before.reindex(idx)[["revenue", "customers"]].fillna(0.0)
    avg_before = (before["revenue"] / before["customers"].where(before["customers"] > 0)).fillna(0.0)
    out = pd.DataFrame({"revenue": now["revenue"], "revenue_before": before["revenue"],
                        "change": now["revenue"] - before["revenue"], "customers": now["customers"],
                        "customers_before": before["customers"]})
    # from no customers last month, the whole change is new deals (volume)
    out["volume"] = np.where(before["customers"] > 0, (now["customers"] - before["customers"]) * avg_before,
                             out["change"])
    out["deal_size"] = out["change"] - out["volume"]
    return out.reindex(out["change"].abs().sort_values(ascending=False).index)


def _who(name: Any) -> str:
    from closedloop_nb.metrics.credits import NO_TOUCHES

    return "deals of people marketing never touched" if name == NO_TOUCHES else clean_text(name)


def month_in_three_sentences(mom: pd.DataFrame, perf_now: pd.DataFrame, perf_before: pd.DataFrame,
                             period: str, currency: str = "", min_cell: int = 3) -> Html:
    """The month in three sentences, from the data: what came in, the largest mover and why, and pipeline.

    Every name in them is masked and escaped (returned as HTML).
    """
    cur, prev = mom["current"], mom["previous"]
    m = lambda v: fmt(v, "money", currency)  # noqa: E731
    split = lambda v: fmt(round_money(v), "money", currency)  # noqa: E731  (a model's split of revenue)
    period = month_name(period)
    won = float(cur.get("customers", 0.0))
    if not won > 0:
        first = f"No deals closed in {period}, so there is no revenue to report."
        before = prev.get("revenue", np.nan)
        second = (f"The month before, deals closed {m(before)}." if np.isfinite(before) and before > 0 else
                  "Nor did any the month before.")
    elif _small(won, min_cell):
        first = (f"In {period} fewer than {min_cell} deals closed, so revenue is not shown: one deal's "
                 "amount would be the headline.")
        second = "With so few deals, no channel's change can be told apart from chance."
    else:
        first = f"In {period} deals closed {m(cur['revenue'])} of revenue"
        if np.isfinite(prev.get("revenue", np.nan)):
            diff = cur["revenue"] - prev["revenue"]
            first += (f", {'up' if diff >= 0 else 'down'} {m(abs(diff))} on the month before"
                      + (f" ({abs(diff) / prev['revenue']:.0%})" if prev["revenue"] > 0 else ""))
        mk = cur.get("marketing_revenue", np.nan)
        if np.isfinite(mk) and cur["revenue"] > 0:
            first += f"; {mk / cur['revenue']:.0%} of it came from people marketing had touched"
        first += "."
        moves = revenue_change_by_channel(perf_now, perf_before)
        moves = moves[moves["change"] != 0]
        if moves.empty:
            second = "No channel's credited revenue changed."
        else:
            top = moves.iloc[0]
            name = _who(moves.index[0])
            why = ("more deals won" if top["volume"] > 0 and abs(top["volume"]) >= abs(top["deal_size"]) else
                   "fewer deals won" if abs(top["volume"]) >= abs(top["deal_size"]) else
                   "larger deals" if top["deal_size"] > 0 else "smaller deals")
            sign = "+" if top["change"] > 0 else ""
            second = (f"The largest mover was {name}, {sign}{split(top['change'])} "
                      f"({split(top['revenue_before'])} to {split(top['revenue'])}), mostly from {why}")
            if len(moves) > 1:
                nxt = moves.iloc[1]
                second += (f"; next was {_who(moves.index[1])} at "
                           f"{'+' if nxt['change'] > 0 else ''}{split(nxt['change'])}")
            second += " (credited revenue, rounded to three significant figures)."
    pipe, leads = cur.get("pipeline", np.nan), cur.get("leads", np.nan)
    third = f"New pipeline was {m(pipe)}"
    if np.isfinite(prev.get("pipeline", np.nan)) and prev["pipeline"] > 0 and np.isfinite(pipe):
        rise = pipe / prev["pipeline"] - 1
        third += f" ({'up' if rise >= 0 else 'down'} {abs(rise):.0%} on last month)"
    third += f", from {fmt(leads, 'count')} new leads"
    spend = cur.get("spend", np.nan)
    third += (f" and {m(spend)} of marketing spend." if np.isfinite(spend) and spend > 0 else
              "; no marketing spend is recorded for the month.")
    return Html("<p class='cl-summary'>" + "</p><p class='cl-summary'>".join(
        html.escape(s) for s in (first, second, third)) + "</p>")


def prose(text: str) -> Html:
    """A sentence built from data as a safe HTML paragraph (masked, escaped)."""
    return Html(f"<p>{label(text)}</p>")


def with_intervals(df: pd.DataFrame, columns: Iterable[str], kind: str | None = None,
                   currency: str = "") -> pd.DataFrame:
    """Each of ``columns`` as one text cell "58% (52% to 63%)" from its ``_lower`` / ``_upper`` columns,
    the estimate rounded to what its interval supports; the bound columns are dropped.

    >>> df = pd.DataFrame({"mql_rate": [0.5812], "mql_rate_lower": [0.52], "mql_rate_upper": [0.634]})
    >>> with_intervals(df, ["mql_rate"])["mql_rate"].tolist()
    ['58% (52% to 63%)']
    """
    out = df.copy()
    for c in columns:
        k = kind or kind_of(c)
        lo, hi = df[f"{c}_lower"], df[f"{c}_upper"]
        out[c] = [DASH if not np.isfinite(v) else
                  f"{fmt(round_to_interval(v, a, b), k, currency)} ({fmt(a, k, currency)} to "
                  f"{fmt(b, k, currency)})" if np.isfinite(a) and np.isfinite(b) else fmt(v, k, currency)
                  for v, a, b in zip(df[c], lo, hi, strict=True)]
        out = out.drop(columns=[f"{c}_lower", f"{c}_upper"])
    return out


def ranked(performance: pd.DataFrame, by: str = "revenue", n: int = 3, paid_only: bool = False,
           columns: Iterable[str] = ("rank", "revenue", "customers", "spend", "roi")) -> pd.DataFrame:
    """The best and worst rows of a channel (campaign) table for :func:`table`: one row per channel,
    ``rank`` first (:func:`closedloop_nb.metrics.best_and_worst` picks them)."""
    from closedloop_nb.metrics.revenue import best_and_worst

    best = best_and_worst(performance, by=by, n=n, paid_only=paid_only)
    level = performance.index.name or "channel"
    return best.reset_index().set_index(level)[list(columns)]


def report_currency(tables: Mapping[str, pd.DataFrame]) -> str:
    """The one currency of a report's money figures: the single place a report checks that amounts are
    not in several currencies (:func:`closedloop_nb.metrics.currency_of` raises if they are). Conversion
    with ``fx_rates`` and the guard against summing currencies belong here when they arrive."""
    from closedloop_nb.metrics.revenue import currency_of

    return currency_of(tables)


# ----------------------------------------------------------------------------- data-quality tables


def table_currencies(tables: Mapping[str, pd.DataFrame]) -> dict[str, str]:
    """The currency of each table that records one (``""`` where it has none, or several): what the
    money of a data-quality table is counted in. Counted in the engine for a workspace.

    >>> table_currencies({"deals": pd.DataFrame({"currency": ["GBP", "GBP"]}),
    ...                   "spend": pd.DataFrame({"currency": ["GBP", "EUR"]}), "leads": pd.DataFrame()})
    {'deals': 'GBP', 'spend': ''}
    """
    out = {}
    for name in list(tables):
        if hasattr(tables, "value_counts"):
            try:
                codes = tables.value_counts(name, "currency").index  # type: ignore[attr-defined]
            except KeyError:
                continue
        else:
            frame = tables[name]
            if "currency" not in frame:
                continue
            codes = frame["currency"].dropna().unique()
        codes = sorted({str(c).upper() for c in codes})
        out[name] = codes[0] if len(codes) == 1 else ""
    return out


def quality_tables(report: Any, tables: Mapping[str, pd.DataFrame] | None = None) -> Html:
    """The rows in, kept, rejected, folded and filtered per table (with a total), then the money on
    those rows per table in its own currency (:class:`closedloop_nb.validation.ValidationReport`)."""
    from closedloop_nb.schema import table_spec

    summary = report.summary
    rows = ["rows_in", "rows_kept", "rows_rejected", "rows_collapsed", "rows_filtered"]
    counts = summary.reindex(columns=rows).fillna(0)
    counts.loc["Total"] = counts.sum()
    names = {"rows_in": "rows in", "rows_kept": "kept", "rows_rejected": "rejected",
             "rows_collapsed": "folded (duplicates)", "rows_filtered": "filtered (by design)"}
    parts = [table(counts, min_cell=0, labels=names).to_html()]

    def has_money(name: str) -> bool:
        try:
            return bool(table_spec(str(name)).value_column)
        except (KeyError, ValueError):
            return "value_in" in summary and bool(np.isfinite(summary.loc[name].get("value_in", np.nan)))

    money = summary.reindex(columns=["value_in", "value_kept", "value_rejected"])
    money = money[[has_money(n) for n in money.index]]
    if len(money):
        currencies = table_currencies(tables) if tables is not None else {}
        parts.append("<p>The money on those rows (amounts as absolute values, each table in its own "
                     "currency):</p>")
        parts.append(table(money, currencies, min_cell=0, labels={
            "value_in": "money in", "value_kept": "kept", "value_rejected": "rejected"}).to_html())
    return Html("".join(parts))


def problems_table(report: Any, tables: Mapping[str, pd.DataFrame] | None = None) -> Any:
    """Every problem found, one row each: the file (its name, never the server's path), the column,
    what happened to the rows, why, how many, the money on them and the first rows concerned."""
    from pathlib import PurePath

    frame = report.to_frame()
    if frame.empty:
        return prose("No problem was found: every row of every table was usable.")
    shown = pd.DataFrame({
        "file": [PurePath(str(f)).name if isinstance(f, str) and f else DASH for f in frame["file"]],
        "column": frame["column"].fillna(DASH).to_numpy(), "outcome": frame["severity"].to_numpy(),
        "reason": frame["reason"].to_numpy(), "n_rows": frame["n_rows"].to_numpy(),
        "value": frame["value"].to_numpy(), "first_rows": frame["rows"].astype(str).to_numpy()},
        index=pd.Index(frame["table"].to_numpy(), name="table"))
    currencies = table_currencies(tables) if tables is not None else {}
    if tables is not None:  # a table without a currency has no money: "—", not a bare 0
        shown.loc[[t not in currencies for t in shown.index], "value"] = np.nan
    if not shown["value"].fillna(0).abs().sum() > 0:
        shown = shown.drop(columns="value")
    return table(shown, currencies, min_cell=0, kinds={"value": "money", "first_rows": "text"},
                 labels={"n_rows": "rows", "first_rows": "first rows", "value": "money on them"},
                 notes={"value": "no money on these rows"})

"""Stripe billing (customers, subscriptions with their items, invoices) to subscriptions and orders.

``closedloop import stripe customers.json subscriptions.json invoices.json --out data/billing``

The inputs are Stripe API objects as the API, the Stripe CLI (``stripe subscriptions list --status all``)
or a list export writes them: a JSON array, a list object (``{"object": "list", "data": [...]}``) or
JSON lines. Files are recognised by name (``customer``, ``subscription``, ``invoice``); two files of one
kind are refused, both named.

* **MRR movements** (``subscriptions``) are computed from each subscription's items: every item's
  price (``unit_amount`` in the currency's minor unit) times its quantity, normalised to a month
  (yearly / 12, quarterly — ``interval_count`` 3 — / 3, weekly x 52 / 12, daily x 365 / 12), less the
  subscription's discount (``percent_off``, or ``amount_off`` per billing period). A subscription
  counts from its start, or from the end of its trial; it stops at ``ended_at``, or at
  ``current_period_end`` when it is set to cancel at period end and that date is past (``as_of``).
  Per customer and month the change in MRR is ``new`` (first MRR), ``expansion``, ``contraction``,
  ``churn`` (to zero) or ``reactivation`` (back from zero).
* **Orders**: paid invoices (``amount_paid``, at ``status_transitions.paid_at``); others are counted as
  filtered.
* **Customers** are the keyed hash of their e-mail address, so they join the CRM's people
  (``stripe:<customer id>`` without one).

Config keys: ``as_of`` (the export's date: scheduled cancellations up to it are churn; default the
latest timestamp in the files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from closedloop_nb.errors import Problem
from closedloop_nb.imports._common import Imported, ImportOptions, input_files
from closedloop_nb.imports._crm import nested, read_records, recognise
from closedloop_nb.loaders import FILE, ROW
from closedloop_nb.privacy import hash_identifiers

__all__ = ["ZERO_DECIMAL", "monthly_amount", "mrr_movements", "read"]

#: Currencies Stripe charges in whole units (no minor unit).
ZERO_DECIMAL = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF".split())

_PER_MONTH = {"month": 1.0, "year": 1 / 12, "week": 52 / 12, "day": 365 / 12}


def _minor(currency: str | None) -> float:
    return 1.0 if (currency or "").upper() in ZERO_DECIMAL else 100.0


def _ts(value: Any) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return pd.Timestamp(int(value), unit="s", tz="UTC")
    return (
        pd.Timestamp(value).tz_convert("UTC") if pd.Timestamp(value).tzinfo else pd.Timestamp(value, tz="UTC")
    )


def _interval(price: dict) -> tuple[str, int]:
    rec = price.get("recurring") or {}
    unit = rec.get("interval") or price.get("interval") or "month"
    count = rec.get("interval_count") or price.get("interval_count") or 1
    return unit, int(count)


def monthly_amount(subscription: dict) -> float:
    """The subscription's MRR in major units: items normalised to a month, less its discount.

    Examples
    --------
    >>> sub = {"currency": "usd", "items": {"data": [
    ...     {"quantity": 1, "price": {"unit_amount": 120000, "recurring": {"interval": "year"}}}]},
    ...     "discount": {"coupon": {"percent_off": 25}}}
    >>> monthly_amount(sub)
    75.0
    """
    currency = subscription.get("currency") or nested(subscription, "items", "data", default=[{}])[0].get(
        "price", {}
    ).get("currency")
    items = nested(subscription, "items", "data", default=None)
    if items is None and subscription.get("plan"):  # older API versions: one plan and a quantity
        items = [{"price": subscription["plan"], "quantity": subscription.get("quantity", 1)}]
    total, per_month_of_period = 0.0, 1.0
    for item in items or []:
        price = item.get("price") or item.get("plan") or {}
        unit, count = _interval(price)
        factor = _PER_MONTH.get(unit, 1.0) / count
        amount = price.get("unit_amount", price.get("amount")) or 0
        total += amount * (item.get("quantity") or 1) * factor
        per_month_of_period = factor
    discounts = subscription.get("discounts")
    discount = subscription.get("discount") or (
        discounts[0] if discounts and isinstance(discounts[0], dict) else None
    )
    coupon = (discount or {}).get("coupon") or {}
    if coupon.get("percent_off"):
        total *= 1 - float(coupon["percent_off"]) / 100
    elif coupon.get("amount_off"):
        total -= float(coupon["amount_off"]) * per_month_of_period
    return round(max(total, 0.0) / _minor(currency), 6)


def _kind(key: str) -> str | None:
    return next((k for k in ("customer", "subscription", "invoice") if k in key), None)


def read(inputs: list[Path], options: ImportOptions) -> Imported:
    """Read Stripe customers, subscriptions and invoices; see the module docstring."""
    files, problems = recognise(input_files(inputs), _kind, "Stripe", "customers, subscriptions or invoices",
                                required=("subscription", "invoice"), inputs=inputs)
    records = {k: read_records(p, options, k) for k, p in files.items()}
    emails = {c.get("id"): c.get("email") for c in records.get("customer", []) if isinstance(c, dict)}
    for kind in ("subscription", "invoice"):
        for obj in records.get(kind, []):
            cust = obj.get("customer")
            if isinstance(cust, dict):  # expanded customer objects carry their e-mail
                emails.setdefault(cust.get("id"), cust.get("email"))
            if kind == "invoice" and obj.get("customer_email") and isinstance(cust, str):
                emails.setdefault(cust, obj["customer_email"])
    person = _people(emails)
    notes = [
        f"customers: {sum(1 for v in person.values() if not v.startswith('stripe:')):,} of "
        f"{len(person):,} joined by the keyed hash of their e-mail"
    ]
    frames: dict[str, pd.DataFrame] = {}
    config = options.config or {}
    if "subscription" in records:
        as_of = _ts(config["as_of"]) if config.get("as_of") else _latest(records)
        frames["subscriptions"], more = mrr_movements(
            records["subscription"], person, as_of, str(files["subscription"])
        )
        notes += more
    if "invoice" in records:
        frames["orders"], found = _orders(records["invoice"], person, str(files["invoice"]))
        problems += found
    return Imported(frames, problems, notes)


def _people(emails: dict[str, str | None]) -> dict[str, str]:
    ids = list(emails)
    hashed = hash_identifiers(pd.Series([emails[i] for i in ids], dtype="string"), "email") if ids else []
    return {i: (h if isinstance(h, str) else f"stripe:{i}") for i, h in zip(ids, list(hashed), strict=True)}


def _customer_id(obj: dict) -> str | None:
    cust = obj.get("customer")
    return cust.get("id") if isinstance(cust, dict) else cust


def _latest(records: dict[str, list[dict]]) -> pd.Timestamp:
    stamps = [
        obj.get(k)
        for objs in records.values()
        for obj in objs
        for k in ("created", "current_period_start", "canceled_at", "ended_at")
        if obj.get(k)
    ]
    return max((_ts(s) for s in stamps), default=pd.Timestamp.now(tz="UTC"))


def _span(sub: dict, as_of: pd.Timestamp) -> tuple[pd.Timestamp | None, pd.Timestamp | None, str | None]:
    """When the subscription's MRR starts and stops, or why it never counts."""
    if sub.get("status") in ("incomplete", "incomplete_expired"):
        return None, None, "never paid (incomplete)"
    start = _ts(sub.get("trial_end")) or _ts(sub.get("start_date")) or _ts(sub.get("created"))
    end = _ts(sub.get("ended_at"))
    if end is None and sub.get("cancel_at_period_end"):
        period_end = _ts(sub.get("current_period_end"))
        if period_end is not None and period_end <= as_of:
            end = period_end
    if end is None and sub.get("status") == "canceled":
        end = _ts(sub.get("canceled_at"))
    if start is None or start > as_of:
        return None, None, "still in its trial"
    if end is not None and end <= start:
        return None, None, "ended before its trial did"
    return start, end, None


def mrr_movements(
    subscriptions: list[dict], person: dict[str, str], as_of: pd.Timestamp, file: str = "<subscriptions>"
) -> tuple[pd.DataFrame, list[str]]:
    """MRR movements per customer and month from Stripe subscription objects (see the module docstring)."""
    events = []
    skipped: dict[str, int] = {}
    for row, sub in enumerate(subscriptions, start=1):
        start, end, why = _span(sub, as_of)
        if why:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        mrr = monthly_amount(sub)
        if mrr == 0:
            skipped["no recurring amount"] = skipped.get("no recurring amount", 0) + 1
            continue
        cid = _customer_id(sub)
        who = person.get(cid, f"stripe:{cid}")
        currency = (
            sub.get("currency")
            or nested(sub, "items", "data", default=[{}])[0].get("price", {}).get("currency")
            or ""
        ).upper() or None
        events.append((who, currency, start.tz_localize(None).to_period("M"), mrr, row))
        if end is not None:
            events.append((who, currency, end.tz_localize(None).to_period("M"), -mrr, row))
    notes = [
        f"subscriptions: {len(subscriptions):,} read, {len({e[4] for e in events}):,} carry MRR"
        + "".join(f"; {n:,} {why}" for why, n in sorted(skipped.items()))
    ]
    cols = ["customer_id", "month", "movement", "mrr_delta", "mrr", "currency", FILE, ROW]
    if not events:
        return pd.DataFrame(columns=cols), notes
    ev = pd.DataFrame(events, columns=["customer_id", "currency", "month", "delta", ROW])
    ev["currency"] = ev["currency"].fillna("")
    per_month = (
        ev.groupby(["customer_id", "currency", "month"], sort=True)
        .agg(delta=("delta", "sum"), row=(ROW, "min"))
        .reset_index()
    )
    rows = []
    for (cust, cur), group in per_month.groupby(["customer_id", "currency"], sort=False):
        mrr, had = 0.0, False
        for g in group.itertuples(index=False):
            new = round(mrr + g.delta, 6)
            if abs(new - mrr) < 1e-9:
                continue
            kind = (
                ("reactivation" if had else "new")
                if mrr == 0
                else "churn"
                if new == 0
                else ("expansion" if new > mrr else "contraction")
            )
            rows.append(
                (
                    cust,
                    g.month.to_timestamp().strftime("%Y-%m-%d"),
                    kind,
                    round(new - mrr, 6),
                    new,
                    cur or None,
                    file,
                    int(g.row),
                )
            )
            mrr, had = new, True
    return pd.DataFrame(rows, columns=cols), notes


def _orders(invoices: list[dict], person: dict[str, str], file: str) -> tuple[pd.DataFrame, list[Problem]]:
    rows, unpaid = [], []
    for row, inv in enumerate(invoices, start=1):
        if inv.get("status") != "paid" or not inv.get("amount_paid"):
            unpaid.append(row)
            continue
        cid = _customer_id(inv)
        currency = (inv.get("currency") or "").upper() or None
        when = _ts(nested(inv, "status_transitions", "paid_at")) or _ts(inv.get("created"))
        rows.append(
            {
                "order_id": inv.get("id"),
                "customer_id": person.get(cid, f"stripe:{cid}"),
                "timestamp": when.isoformat() if when is not None else None,
                "amount": inv["amount_paid"] / _minor(currency),
                "currency": currency,
                FILE: file,
                ROW: row,
            }
        )
    problems = []
    if unpaid:
        problems.append(
            Problem(
                "orders",
                file,
                "status",
                "invoices not paid (draft, open, void, uncollectible, or nothing paid) are not orders",
                "info",
                len(unpaid),
                tuple(unpaid[:10]),
            )
        )
    cols = ["order_id", "customer_id", "timestamp", "amount", "currency", FILE, ROW]
    return pd.DataFrame(rows, columns=cols) if rows else pd.DataFrame(columns=cols), problems

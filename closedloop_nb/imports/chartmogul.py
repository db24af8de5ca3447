"""ChartMogul activities (MRR movements) and customers to the subscriptions table.

``closedloop import chartmogul activities.csv customers.csv --out data/billing``

Activities come from the activities export or API (``date``, ``type`` — ``new_biz``, ``expansion``,
``contraction``, ``churn``, ``reactivation`` —, ``activity-mrr`` and ``activity-mrr-movement`` in cents,
``currency``, ``customer-uuid``, ``customer-external-id``), as CSV or as the API's JSON
(``{"entries": [...]}``). ``customer-external-id`` is the *billing system's* id, which joins no CRM person,
so a customer is, in order:

* the keyed hash of their e-mail, from a customers export (``uuid``, ``external_id``, ``email``), which
  joins them to the CRM's people and the web journeys;
* their external id as it is, when the config says that id *is* the CRM's (``customer_id: external_id``,
  e.g. when billing is keyed by the CRM account id; ``id_format: salesforce`` writes it in Salesforce's
  18-character form);
* otherwise ``chartmogul:<uuid or external id>``, with a note that MRR will not join people.

Files are recognised by name: ``activit`` and ``customer``; two files of one kind are refused, both named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from closedloop_nb.errors import DataValidationError, Problem
from closedloop_nb.imports._common import Imported, ImportOptions, input_files
from closedloop_nb.imports._crm import column, read_export, read_records, recognise
from closedloop_nb.loaders import FILE, ROW
from closedloop_nb.privacy import hash_identifiers

__all__ = ["MOVEMENTS", "read"]

#: ChartMogul activity types -> canonical movements.
MOVEMENTS = {
    "new_biz": "new",
    "new": "new",
    "expansion": "expansion",
    "contraction": "contraction",
    "churn": "churn",
    "reactivation": "reactivation",
}


def _frame(path: Path, options: ImportOptions, table: str) -> pd.DataFrame:
    if path.name.lower().endswith((".json", ".jsonl", ".ndjson")):
        frame = pd.DataFrame(read_records(path, options, table)).astype(object)
        frame[FILE] = str(path)
        frame[ROW] = range(1, len(frame) + 1)
        return frame
    return read_export(path, options, table)


def _kind(key: str) -> str | None:
    return "activities" if "activit" in key else "customers" if "customer" in key else None


def read(inputs: list[Path], options: ImportOptions) -> Imported:
    """Read ChartMogul activities (and customers); see the module docstring."""
    files, problems = recognise(input_files(inputs), _kind, "ChartMogul", "activities or customers",
                                required=("activities",), inputs=inputs)
    config = options.config or {}
    raw = _frame(files["activities"], options, "subscriptions")
    uuid = column(raw, "customer-uuid", "customer_uuid", "customer")
    external = column(raw, "customer-external-id", "customer_external_id")
    customer, note = _customers(raw.index, uuid, external, files.get("customers"), options, config)
    kind = column(raw, "type", "activity-type")
    if kind is None:
        raise DataValidationError(
            [
                Problem(
                    "subscriptions",
                    str(files["activities"]),
                    "type",
                    "missing the activity type column",
                    "error",
                )
            ]
        )
    movement = kind.astype("string").str.strip().str.lower().map(MOVEMENTS)
    keep = movement.notna().to_numpy()
    if (~keep).any():
        rows = raw.loc[~keep, ROW].to_numpy()
        problems.append(
            Problem(
                "subscriptions",
                str(files["activities"]),
                "type",
                "activities that move no MRR (e.g. scheduled changes) are not movements",
                "info",
                len(rows),
                tuple(int(r) for r in rows[:10]),
            )
        )
    cents = 1.0 if config.get("amounts") == "major" else 0.01
    frame = pd.DataFrame(
        {
            "customer_id": customer,
            "month": column(raw, "date", "activity-date"),
            "movement": movement,
            "mrr_delta": pd.to_numeric(column(raw, "activity-mrr-movement", "mrr_movement"), errors="coerce")
            * cents,
            "mrr": pd.to_numeric(column(raw, "activity-mrr", "mrr"), errors="coerce") * cents,
            "currency": column(raw, "currency"),
            FILE: raw[FILE],
            ROW: raw[ROW],
        }
    ).loc[keep]
    return Imported({"subscriptions": frame.reset_index(drop=True)}, problems, [note])


def _customers(
    index: pd.Index,
    uuid: pd.Series | None,
    external: pd.Series | None,
    path: Path | None,
    options: ImportOptions,
    config: dict[str, Any],
) -> tuple[pd.Series, str]:
    if config.get("customer_id") == "external_id":
        if external is None:
            raise DataValidationError(
                [
                    Problem(
                        "config",
                        "customer_id",
                        None,
                        "customer_id: external_id, but the activities have no customer-external-id column",
                        "error",
                    )
                ]
            )
        ids = external.astype("string").str.strip()
        if config.get("id_format") == "salesforce":
            from closedloop_nb.imports.salesforce import case_safe_id

            ids = ids.map(case_safe_id)
        return ids.astype(object), "customers: the external id is the CRM's id (customer_id: external_id)"
    fallback = (uuid if uuid is not None else external).astype("string")
    if path is None:
        return ("chartmogul:" + fallback).astype(object), (
            "customers: no customers export with e-mails, so MRR cannot join the CRM's people (export "
            "customers too, or set customer_id: external_id if the external id is your CRM's id)"
        )
    cust = _frame(path, options, "subscriptions")
    email = column(cust, "email", "Email")
    if email is None:
        raise DataValidationError(
            [
                Problem(
                    "subscriptions", str(path), "email", "the customers export has no email column", "error"
                )
            ]
        )
    hashed = hash_identifiers(email, "email")
    by: dict[str, Any] = {}
    for key_col in ("uuid", "external_id"):
        key = column(cust, key_col, key_col.replace("_", "-"))
        if key is not None:
            by.update(
                {
                    k: h
                    for k, h in zip(key.astype("string"), hashed, strict=True)
                    if pd.notna(k) and pd.notna(h)
                }
            )
    found = fallback.map(by)
    if external is not None:
        found = found.where(found.notna(), external.astype("string").map(by))
    joined = int(found.notna().sum())
    out = found.astype(object).where(found.notna(), ("chartmogul:" + fallback).astype(object))
    return (
        out,
        f"customers: {joined:,} of {len(out):,} activities joined by the keyed hash of the customer's e-mail",
    )

"""HubSpot exports (contacts, deals) to canonical tables.

``closedloop import hubspot contacts.csv deals.csv --timezone Europe/London --out data/crm``

Files are recognised by name: a name containing ``contact`` is the contacts export, ``deal`` the
deals export (HubSpot names them e.g. ``hubspot-crm-exports-all-deals-2026-02-23.csv``); two files of
one kind are refused, both named. Headers may
be the column labels (``Deal Stage``) or the internal property names (``dealstage``).

* **People** (``leads``): keyed by the keyed hash of ``Email`` (``hs:<Record ID>`` without one); their
  ``account_id`` is the associated company (``Associated Company ID`` / ``associatedcompanyid``, or the
  first of ``Associated Company IDs``), and so is a deal's.
* **Deals**: every deal is kept. Its person is the first associated contact present in the contacts
  export (``Associated Contact IDs``, ``;``-separated); every associated contact is a row of
  ``deal_contacts``. Amounts may carry currency symbols and thousands separators (``$12,000.00``);
  a decimal comma is read only with ``decimal: ","`` in the config, and without it an amount such
  as ``1.200,50`` is refused with its row named, never misread.
* **Stages**: the default sales pipeline's internal names and labels are known; ``stages:`` in the
  config maps your own (internal id or label -> ``opportunity``, ``proposal``, ``closed_won``,
  ``closed_lost``). A stage not mapped leaves the deal's stage empty and is named in the notes.
* **Stage history**: every ``hs_date_entered_<stage>`` (or ``Date entered "<Stage> (<Pipeline>)"``)
  column is a ``stage_history`` row; several HubSpot stages of one canonical stage fold into the
  earliest.

Config keys: ``stages``, ``decimal``, ``currency`` (when the export has no currency column),
``date_format``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.errors import DataValidationError, Problem
from closedloop_nb.imports._common import Imported, ImportOptions, input_files
from closedloop_nb.imports._crm import (
    canonical_stage,
    column,
    fold,
    fold_earliest,
    parse_dates,
    parse_money,
    read_export,
    recognise,
)
from closedloop_nb.loaders import AMBIGUOUS_DECIMAL, FILE, ROW
from closedloop_nb.privacy import hash_identifiers

__all__ = ["DEFAULT_STAGES", "read", "read_files"]

#: The default sales pipeline: internal names and labels.
DEFAULT_STAGES: dict[str, str] = {
    "appointmentscheduled": "opportunity",
    "appointment scheduled": "opportunity",
    "qualifiedtobuy": "opportunity",
    "qualified to buy": "opportunity",
    "presentationscheduled": "proposal",
    "presentation scheduled": "proposal",
    "decisionmakerboughtin": "proposal",
    "decision maker bought-in": "proposal",
    "contractsent": "proposal",
    "contract sent": "proposal",
    "closedwon": "closed_won",
    "closed won": "closed_won",
    "closedlost": "closed_lost",
    "closed lost": "closed_lost",
}

_ENTERED_INTERNAL = re.compile(r"^hs_date_entered_(.+)$", re.IGNORECASE)
_ENTERED_LABEL = re.compile(r'^Date entered [“"](.+?)(?: \((.+)\))?[”"]$', re.IGNORECASE)


def _kind(key: str) -> str | None:
    return "contacts" if "contact" in key else "deals" if "deal" in key else None


def read(inputs: list[Path], options: ImportOptions) -> Imported:
    """Read HubSpot contacts and deals exports; see the module docstring."""
    files, skipped = recognise(input_files(inputs), _kind, "HubSpot",
                               "contacts or deals exports (the name should contain 'contacts' or 'deals')",
                               required=("contacts", "deals"), inputs=inputs)
    imported = read_files(files.get("contacts"), files.get("deals"), options)
    imported.problems[:0] = skipped
    return imported


def read_files(
    contacts: Path | None, deals: Path | None, options: ImportOptions, hash_key: bytes | None = None
) -> Imported:
    """Map a contacts export and a deals export (either may be None) onto canonical tables."""
    config = options.config or {}
    frames: dict[str, pd.DataFrame] = {}
    problems: list[Problem] = []
    notes: list[str] = []
    contact_person: dict[str, Any] = {}
    if contacts is not None:
        r = read_export(Path(contacts), options, "leads")
        d, more = parse_dates(
            r,
            {
                "created_at": column(r, "Create Date", "createdate"),
                "mql_at": column(
                    r,
                    "Became a Marketing Qualified Lead Date",
                    "hs_lifecyclestage_marketingqualifiedlead_date",
                    'Date entered "Marketing Qualified Lead (Lifecycle Stage Pipeline)"',
                ),
                "sql_at": column(
                    r,
                    "Became a Sales Qualified Lead Date",
                    "hs_lifecyclestage_salesqualifiedlead_date",
                    'Date entered "Sales Qualified Lead (Lifecycle Stage Pipeline)"',
                ),
            },
            "leads",
            config.get("date_format"),
        )
        notes += more
        rid = column(r, "Record ID", "hs_object_id", "Contact ID")
        rid = (
            rid.astype("string").str.strip()
            if rid is not None
            else pd.Series(pd.NA, index=r.index, dtype="string")
        )
        email = column(r, "Email", "email")
        hashed = (
            hash_identifiers(email, "email", key=hash_key)
            if email is not None
            else pd.Series(pd.NA, index=r.index, dtype="string")
        )
        person = hashed.astype(object).where(hashed.notna(), ("hs:" + rid).astype(object))
        contact_person = {k: v for k, v in zip(rid, person, strict=True) if k is not pd.NA and pd.notna(k)}
        people = pd.DataFrame(
            {
                "person_id": person,
                "created_at": d.get("created_at"),
                "lead_source": column(r, "Original Source", "hs_analytics_source"),
                "mql_at": d.get("mql_at"),
                "sql_at": d.get("sql_at"),
                "segment": column(r, "Segment", "Company size"),
                "account_id": _company(r),
                FILE: r[FILE],
                ROW: r[ROW],
            }
        )
        frames["leads"], found = fold_earliest(
            people, "a second contact with the same e-mail: folded into the earliest")
        problems += found
    if deals is not None:
        deal_frames, found, more = _deals(read_export(Path(deals), options, "deals"), contact_person, config)
        frames.update(deal_frames)
        problems += found
        notes += more
    return Imported(frames, problems, notes)


#: Headers of a record's associated company: the contact property ``associatedcompanyid`` (the primary
#: company, "Associated Company ID" / "Primary Associated Company ID"), and the association column an
#: export with associated records writes ("Associated Company IDs", ``;``-separated: the first is kept).
_COMPANY = ("Associated Company ID", "Primary Associated Company ID", "associatedcompanyid",
            "Associated Company IDs (Primary)", "Associated Company IDs", "associations.companies")


def _company(r: pd.DataFrame) -> pd.Series | None:
    """The record's (first) associated company id, or None when the export has no such column."""
    ids = column(r, *_COMPANY)
    if ids is None:
        return None
    first = ids.astype("string").str.split(r"[;,]").str[0].str.strip()
    return first.mask(first == "").astype(object)


def _stage_lookup(config: dict[str, Any]) -> dict[str, str]:
    lookup = dict(DEFAULT_STAGES)
    for k, v in (config.get("stages") or {}).items():
        lookup[str(k).strip().lower()] = canonical_stage(v, str(k))
    return lookup


def _deals(r: pd.DataFrame, contact_person: dict[str, Any], config: dict[str, Any]):
    notes: list[str] = []
    problems: list[Problem] = []
    lookup = _stage_lookup(config)
    d, more = parse_dates(
        r,
        {"created_at": column(r, "Create Date", "createdate"), "close": column(r, "Close Date", "closedate")},
        "deals",
        config.get("date_format"),
    )
    notes += more
    deal_id = column(r, "Record ID", "hs_object_id", "Deal ID")
    if deal_id is None:
        raise DataValidationError(
            [
                Problem(
                    "deals",
                    str(r[FILE].iloc[0]) if len(r) else "?",
                    "Record ID",
                    "missing the deal id column (Record ID or hs_object_id)",
                    "error",
                )
            ]
        )
    deal_id = deal_id.astype("string").str.strip()
    raw_stage = column(r, "Deal Stage", "dealstage")
    stage = (
        raw_stage.astype("string").str.strip().str.lower().map(lookup)
        if raw_stage is not None
        else pd.Series(None, index=r.index, dtype=object)
    )
    unmapped = (
        sorted(raw_stage[stage.isna() & raw_stage.notna()].astype(str).unique())
        if raw_stage is not None
        else []
    )
    if unmapped:
        notes.append(
            f"deals: stages not mapped (stage left empty; add them under stages: in the config): "
            f"{', '.join(repr(s) for s in unmapped)}"
        )
    amount_text = column(r, "Amount", "amount")
    amount: pd.Series = pd.Series(np.nan, index=r.index, dtype=object)
    if amount_text is not None:
        decimal = config.get("decimal")
        num, bad, ambiguous = parse_money(amount_text, decimal)
        amount = num.astype(object)
        # refused values reach validation as text, so the row is rejected there with its value shown
        amount[ambiguous] = amount_text[ambiguous].astype(str) + AMBIGUOUS_DECIMAL
        amount[bad] = amount_text[bad]
    currency = column(r, "Currency", "Deal currency code", "deal_currency_code")
    if currency is None:
        currency = pd.Series(config.get("currency"), index=r.index, dtype=object)
    closed = stage.isin(["closed_won", "closed_lost"]).to_numpy(bool)
    ids = column(r, "Associated Contact IDs", "Associated Contact", "associations.contacts")
    lists = (
        ids.astype("string").fillna("").str.split(r"[;,]")
        if ids is not None
        else pd.Series([[] for _ in range(len(r))], index=r.index)
    )
    lists = lists.map(lambda items: [i.strip() for i in items if i and i.strip()])
    first = lists.map(lambda items: next((contact_person[i] for i in items if i in contact_person), None))
    deals = pd.DataFrame(
        {
            "deal_id": deal_id,
            "person_id": first,
            "account_id": _company(r),
            "created_at": d["created_at"],
            "amount": amount,
            "currency": currency,
            "stage": stage,
            "closed_at": d["close"].where(closed, None),
            "won": pd.Series(np.where(stage == "closed_won", True, False), index=r.index)
            .astype(object)
            .where(closed, None),
            FILE: r[FILE],
            ROW: r[ROW],
        }
    )
    dc = pd.DataFrame(
        {
            "deal_id": deal_id.repeat(lists.str.len()).to_numpy(),
            "contact": [i for items in lists for i in items],
            FILE: r[FILE].repeat(lists.str.len()).to_numpy(),
            ROW: r[ROW].repeat(lists.str.len()).to_numpy(),
        }
    )
    dc["person_id"] = [contact_person.get(c, f"hs:{c}") for c in dc["contact"]]
    dc["role"] = None
    dc["is_primary"] = None
    n_linked = int(first.notna().sum())
    notes.append(
        f"deals: {n_linked:,} of {len(r):,} reach a contact (the first associated contact present); "
        f"{len(dc):,} deal-contact rows; a deal that reaches nobody is kept"
    )
    frames = {"deals": deals, "deal_contacts": dc.drop(columns="contact")}
    hist = _stage_history(r, deal_id, lookup, config)
    if hist is not None:
        hist["_t"] = pd.to_datetime(hist["entered_at"], errors="coerce", utc=True, format="ISO8601")
        folded, found = fold(
            hist,
            ["deal_id", "stage"],
            ["_t"],
            "stage_history",
            "several HubSpot stages of one canonical stage: folded into the earliest",
        )
        frames["stage_history"] = folded.drop(columns="_t")
        problems += found
    return frames, problems, notes


def _stage_history(
    r: pd.DataFrame, deal_id: pd.Series, lookup: dict[str, str], config: dict[str, Any]
) -> pd.DataFrame | None:
    parts = []
    for col in r.columns:
        m = _ENTERED_INTERNAL.match(str(col)) or _ENTERED_LABEL.match(str(col))
        if not m:
            continue
        stage = lookup.get(m.group(1).strip().lower())
        if stage is None:
            continue
        parsed, _ = parse_dates(r, {"at": r[col]}, "stage_history", config.get("date_format"))
        have = r[col].notna().to_numpy()
        parts.append(
            pd.DataFrame(
                {
                    "deal_id": deal_id[have],
                    "stage": stage,
                    "entered_at": parsed["at"][have],
                    FILE: r[FILE][have],
                    ROW: r[ROW][have],
                }
            )
        )
    if not parts:
        return None
    return pd.concat(parts, ignore_index=True)

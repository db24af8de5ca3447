"""Pipedrive exports (deals, persons, organizations) to canonical tables.

``closedloop import pipedrive deals.csv persons.csv organizations.csv --timezone Europe/Berlin --out crm``

Files are recognised by name (``deal``, ``person``, ``organi``); two files of one kind are refused,
both named. Headers may be the API's field names
(``id``, ``value``, ``currency``, ``status``, ``stage_id``, ``person_id``, ``org_id``, ``add_time``,
``won_time``, ``lost_time``, ``close_time``; times in UTC) or the export's labels with their prefix
(``Deal - Value``, ``Person - Email``; times in the user's time zone: pass ``--timezone``).

* **People** (``leads``): persons, keyed by the keyed hash of their (first) e-mail address
  (``pd:<person id>`` without one).
* **Deals**: every deal is kept; ``status`` won/lost closes it (at ``won_time``/``lost_time``); an open
  deal's stage comes from ``stages:`` in the config (stage name or id -> ``opportunity`` or
  ``proposal``), else from its probability (50% or more: proposal), else ``opportunity``. A deal whose
  person is not in the persons export keeps an empty ``person_id`` (counted in the notes).
* The organization is the deal's ``account_id``, and a person's (``org_id`` of the persons export).

Config keys: ``stages``, ``decimal``, ``currency``, ``date_format``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from closedloop_nb.errors import DataValidationError, Problem
from closedloop_nb.imports._common import Imported, ImportOptions, input_files
from closedloop_nb.imports._crm import column, fold_earliest, parse_dates, parse_money, read_export, recognise
from closedloop_nb.loaders import AMBIGUOUS_DECIMAL, FILE, ROW
from closedloop_nb.privacy import hash_identifiers
from closedloop_nb.schema import DEAL_STAGES

__all__ = ["read"]

_API_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def _kind(key: str) -> str | None:
    return next((k for k, w in (("deals", "deal"), ("persons", "person"), ("organizations", "organi"))
                 if w in key), None)


def read(inputs: list[Path], options: ImportOptions) -> Imported:
    """Read Pipedrive deals, persons and organizations exports; see the module docstring."""
    files, problems = recognise(input_files(inputs), _kind, "Pipedrive", "deals, persons or organizations",
                                required=("deals", "persons"), inputs=inputs)
    config = options.config or {}
    frames: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    person_of: dict[str, Any] = {}
    if "persons" in files:
        r = read_export(files["persons"], options, "leads")
        pid = column(r, "id", "Person - ID", "ID").astype("string").str.strip()
        email = column(r, "email", "Person - Email", "Email")
        first = email.astype("string").str.split(r"[,;]").str[0].str.strip() if email is not None else None
        hashed = (
            hash_identifiers(first, "email")
            if first is not None
            else pd.Series(pd.NA, index=r.index, dtype="string")
        )
        person = hashed.astype(object).where(hashed.notna(), ("pd:" + pid).astype(object))
        person_of = {k: v for k, v in zip(pid, person, strict=True) if pd.notna(k)}
        d, more = parse_dates(
            r,
            {"created_at": _utc_if_api(column(r, "add_time", "Person - Person created", "Person created"))},
            "leads",
            config.get("date_format"),
        )
        notes += more
        people = pd.DataFrame(
            {
                "person_id": person,
                "created_at": d["created_at"],
                "lead_source": column(r, "Person - Source", "Source"),
                "account_id": _org(column(r, "org_id", "Person - Organization ID", "Organization ID",
                                          "Organization - ID")),
                FILE: r[FILE],
                ROW: r[ROW],
            }
        )
        frames["leads"], found = fold_earliest(
            people, "a second person with the same e-mail: folded into the earliest")
        problems += found
    if "deals" in files:
        deals, more = _deals(read_export(files["deals"], options, "deals"), person_of, config)
        frames["deals"] = deals
        notes += more
    if "organizations" in files:
        orgs = read_export(files["organizations"], options, "?")
        notes.append(f"organizations: {len(orgs):,} rows read (a deal's organization is its account_id)")
    return Imported(frames, problems, notes)


def _org(values: pd.Series | None) -> pd.Series | None:
    """Organization ids as text (``70``, not ``70.0``), empty as missing."""
    if values is None:
        return None
    text = values.astype("string").str.strip()
    return text.mask(text == "").astype(object)


def _utc_if_api(values: pd.Series | None) -> pd.Series | None:
    """API times (``YYYY-MM-DD HH:MM:SS``, documented as UTC) get their offset; export labels stay local."""
    if values is None:
        return None
    text = values.astype("string").str.strip()
    api = text.str.match(_API_TIME).fillna(False).to_numpy(bool)
    return values.astype(object).where(~api, (text + "Z").astype(object))


def _deals(
    r: pd.DataFrame, person_of: dict[str, Any], config: dict[str, Any]
) -> tuple[pd.DataFrame, list[str]]:
    notes: list[str] = []
    api = column(r, "add_time") is not None
    times = {
        "created_at": column(r, "add_time", "Deal - Deal created", "Deal created"),
        "won": column(r, "won_time", "Deal - Won time", "Won time"),
        "lost": column(r, "lost_time", "Deal - Lost time", "Lost time"),
        "close": column(r, "close_time", "Deal - Deal closed on", "Deal closed on"),
    }
    if api:
        times = {k: _utc_if_api(v) for k, v in times.items()}
    d, more = parse_dates(r, times, "deals", config.get("date_format"))
    notes += more
    status = column(r, "status", "Deal - Status", "Status")
    status = (
        status.astype("string").str.strip().str.lower()
        if status is not None
        else pd.Series(pd.NA, index=r.index, dtype="string")
    )
    stage_map = {
        str(k).strip().lower(): str(v).strip().lower() for k, v in (config.get("stages") or {}).items()
    }
    bad = sorted(set(stage_map.values()) - set(DEAL_STAGES))
    if bad:
        raise DataValidationError(
            [
                Problem(
                    "config",
                    "stages",
                    None,
                    f"stage map values {bad} are not among {', '.join(DEAL_STAGES)}",
                    "error",
                )
            ]
        )
    raw_stage = column(r, "stage_id", "Deal - Stage", "Stage")
    prob = (
        pd.to_numeric(column(r, "probability", "Deal - Probability", "Probability"), errors="coerce")
        if column(r, "probability", "Deal - Probability", "Probability") is not None
        else None
    )
    mapped = (
        raw_stage.astype("string").str.strip().str.lower().map(stage_map)
        if raw_stage is not None
        else pd.Series(None, index=r.index, dtype=object)
    )
    by_prob = (
        pd.Series(["proposal" if p >= 50 else "opportunity" for p in prob.fillna(0)], index=r.index).where(
            prob.notna(), None
        )
        if prob is not None
        else pd.Series(None, index=r.index, dtype=object)
    )
    stage = mapped.astype(object).where(mapped.notna(), by_prob).where(lambda s: s.notna(), "opportunity")
    stage = stage.where(status != "won", "closed_won").where(status != "lost", "closed_lost")
    closed_at = d["won"].where(status == "won", d["lost"].where(status == "lost", None))
    closed_at = closed_at.where(closed_at.notna() | ~status.isin(["won", "lost"]).fillna(False), d["close"])
    num, unreadable, ambiguous = parse_money(
        column(r, "value", "Deal - Value", "Value"), config.get("decimal")
    )
    amount = num.astype(object)
    text = column(r, "value", "Deal - Value", "Value")
    amount[ambiguous] = text[ambiguous].astype(str) + AMBIGUOUS_DECIMAL
    amount[unreadable] = text[unreadable]
    currency = column(r, "currency", "Deal - Currency", "Currency")
    if currency is None:
        currency = pd.Series(config.get("currency"), index=r.index, dtype=object)
    pid = column(r, "person_id", "Deal - Contact person ID", "Person - ID", "Contact person ID")
    person = (
        pid.astype("string").str.strip().map(person_of)
        if pid is not None
        else pd.Series(None, index=r.index, dtype=object)
    )
    org = column(r, "org_id", "Deal - Organization ID", "Organization - ID", "Organization ID")
    deals = pd.DataFrame(
        {
            "deal_id": column(r, "id", "Deal - ID", "ID"),
            "person_id": person,
            "account_id": _org(org),
            "created_at": d["created_at"],
            "amount": amount,
            "currency": currency,
            "stage": stage,
            "closed_at": closed_at,
            "won": status.map({"won": True, "lost": False}),
            FILE: r[FILE],
            ROW: r[ROW],
        }
    )
    notes.append(
        f"deals: {int(person.notna().sum()):,} of {len(r):,} reach a person in the persons export; "
        "the others are kept without one"
    )
    return deals, notes

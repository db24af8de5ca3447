"""Salesforce exports (Data Loader, Workbench, Bulk API, report exports) to canonical tables.

``closedloop import salesforce FOLDER --timezone America/Mexico_City --encoding cp1252 --out data/crm``

Files are recognised by their object's name (``Lead.csv``, ``opportunity_history.csv``, ...):
``Lead``, ``Contact``, ``Account``, ``Opportunity``, ``OpportunityHistory``,
``OpportunityContactRole``, ``Campaign``, ``CampaignMember`` and, optionally, ``OpportunityStage``; two
files of one object are refused, both named.
Headers are API names in any case (Data Loader writes them upper-case) or the report labels.

What the import decides, and says in its notes:

* **Ids.** 15- and 18-character ids are the same record: every id is written in its 18-character,
  case-safe form (:func:`case_safe_id`); the null-id placeholder ``000000000000000AAA`` is empty.
* **People** (``leads``): every lead and every contact, keyed by the keyed hash of the e-mail
  address (``sf:<id>`` when there is none); a contact a lead was converted into is that lead's
  person. Rows for the same person fold into the earliest (counted as collapsed). A person's
  ``account_id`` is the converted lead's ``ConvertedAccountId``, else the contact's ``AccountId``.
* **Deals**: every opportunity is kept. Its person is, in order: the lead converted into it
  (``Lead.ConvertedOpportunityId``), its contact roles (``OpportunityContactRole``, primary first),
  ``Opportunity.ContactId``, and the account (the lead converted into the account, else its first
  contact). A deal that reaches nobody keeps an empty ``person_id``: it counts in revenue and is
  credited to ``(no touches)``.
* **Stages**: ``stages:`` in the config maps your stage names onto ``opportunity``, ``proposal``,
  ``closed_won``, ``closed_lost``. Salesforce's default names are known; any other stage follows
  ``OpportunityStage`` when exported, else the opportunities in it: ``IsClosed``/``IsWon`` for
  closed stages, ``ForecastCategory`` (Pipeline/Omitted: opportunity; BestCase, Commit, Forecast:
  proposal) or ``Probability`` (50 or more: proposal) for open ones.
* **Buying committees** (``deal_contacts``): one row per contact role.
* **Campaign responses** (``touchpoints`` with ``interaction_type`` ``offline``): campaign members
  who responded, dated ``FirstRespondedDate``, with source = the campaign's type, medium
  ``offline`` and the campaign's name, grouped into channels by the channel rules; each responder's
  ``identities`` row ties the touches to them (method ``crm_import``).
* **Dates**: ISO (with or without offset; naive ones are in ``--timezone``), and report forms such
  as ``02/23/26 08:55 PM``; ``date_format: MDY`` (or ``DMY``) when a file does not show which.

Config keys: ``stages`` (mapping), ``date_format``, ``currency`` (for single-currency orgs whose
export has no ``CurrencyIsoCode``), ``fields`` (``{mql_at: MQL_Date__c, sql_at: ..., segment: ...}``),
``channel_rules`` (a channel rules YAML file for the campaign responses, e.g. ``medium: offline`` ->
Events; without one the GA4 default group leaves them Unassigned).
"""

from __future__ import annotations

from collections.abc import Iterable
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
    parse_bool,
    parse_dates,
    read_export,
    recognise,
)
from closedloop_nb.loaders import FILE, ROW
from closedloop_nb.privacy import hash_identifiers

__all__ = ["NULL_IDS", "OBJECTS", "case_safe_id", "read", "read_objects", "stage_mapping"]

#: Recognised file names (lower-case, punctuation removed) -> Salesforce object.
OBJECTS: dict[str, str] = {
    "lead": "Lead",
    "leads": "Lead",
    "contact": "Contact",
    "contacts": "Contact",
    "account": "Account",
    "accounts": "Account",
    "opportunity": "Opportunity",
    "opportunities": "Opportunity",
    "opportunityhistory": "OpportunityHistory",
    "opportunitycontactrole": "OpportunityContactRole",
    "opportunitycontactroles": "OpportunityContactRole",
    "campaign": "Campaign",
    "campaigns": "Campaign",
    "campaignmember": "CampaignMember",
    "campaignmembers": "CampaignMember",
    "opportunitystage": "OpportunityStage",
}

#: Ids Salesforce writes for "no record" (15- and 18-character forms).
NULL_IDS = frozenset({"000000000000000", "000000000000000AAA"})

#: Stage names of Salesforce's default sales process.
DEFAULT_STAGES: dict[str, str] = {
    "Prospecting": "opportunity",
    "Qualification": "opportunity",
    "Needs Analysis": "opportunity",
    "Value Proposition": "opportunity",
    "Id. Decision Makers": "opportunity",
    "Perception Analysis": "proposal",
    "Proposal/Price Quote": "proposal",
    "Negotiation/Review": "proposal",
    "Closed Won": "closed_won",
    "Closed Lost": "closed_lost",
}

_SUFFIX_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_OPEN_FORECAST = {
    "pipeline": "opportunity",
    "omitted": "opportunity",
    "bestcase": "proposal",
    "best case": "proposal",
    "commit": "proposal",
    "forecast": "proposal",
    "mostlikely": "proposal",
    "most likely": "proposal",
}


# --- ids -------------------------------------------------------------------------------------------


def _suffix(id15: str) -> str:
    """The 3-character checksum: per 5-character chunk, bit i set when character i is upper-case A-Z."""
    out = ""
    for start in (0, 5, 10):
        bits = sum(1 << i for i, ch in enumerate(id15[start : start + 5]) if "A" <= ch <= "Z")
        out += _SUFFIX_CHARS[bits]
    return out


def _restore_case(id18: str) -> str:
    """The 15 characters of an 18-character id with their case as the suffix records it."""
    chars = list(id18[:15].lower())
    for chunk, code in enumerate(id18[15:].upper()):
        bits = _SUFFIX_CHARS.find(code)
        for i in range(5):
            if bits >= 0 and bits >> i & 1:
                chars[chunk * 5 + i] = chars[chunk * 5 + i].upper()
    return "".join(chars)


def case_safe_id(value: Any) -> str | None:
    """The 18-character, case-safe form of a Salesforce id (None for empty and null ids).

    A 15-character id gets its checksum suffix; an 18-character one keeps it, its first 15
    characters recased from the suffix (so an id upper-cased by a spreadsheet still matches).
    Other values are returned stripped, unchanged.

    Examples
    --------
    >>> case_safe_id("a0D30000001n7Pi"), case_safe_id("0019000000B98de")
    ('a0D30000001n7PiEAI', '0019000000B98deAAB')
    >>> case_safe_id("A0D30000001N7PIEAI"), case_safe_id("000000000000000AAA")
    ('a0D30000001n7PiEAI', None)
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    if not text or text in NULL_IDS:
        return None
    if len(text) == 15 and text.isalnum():
        return text + _suffix(text)
    if len(text) == 18 and text.isalnum():
        base = _restore_case(text)
        return base + _suffix(base) if base not in NULL_IDS else None
    return text


def _ids(values: pd.Series | None, index: pd.Index) -> pd.Series:
    """:func:`case_safe_id` of a whole column, vectorised (the suffix bits computed on a byte array)."""
    if values is None:
        return pd.Series(None, index=index, dtype=object)
    text = values.astype("string").str.strip()
    out = pd.Series(None, index=values.index, dtype=object)
    sf = text.str.fullmatch(r"[0-9A-Za-z]{15}|[0-9A-Za-z]{18}").fillna(False).to_numpy(bool)
    other = text.notna().to_numpy() & ~sf & (text.fillna("") != "").to_numpy()
    out[other] = text[other].to_numpy(object)
    if sf.any():
        safe = _case_safe_array(text[sf].to_numpy(str))
        safe = np.where(np.isin(safe, list(NULL_IDS)), None, safe.astype(object))
        out[sf] = safe
    return pd.Series([v if isinstance(v, str) else None for v in out], index=values.index, dtype=object)


_UPPER_BITS = np.array([1, 2, 4, 8, 16])
_SUFFIX_INDEX = np.full(256, -1)
_SUFFIX_INDEX[np.frombuffer(_SUFFIX_CHARS.encode(), np.uint8)] = np.arange(32)
_SUFFIX_BYTES = np.frombuffer(_SUFFIX_CHARS.encode(), np.uint8)


def _case_safe_array(ids: np.ndarray) -> np.ndarray:
    """18-character ids for an array of 15- and 18-character alphanumeric ids (as :func:`case_safe_id`)."""
    base = np.array([s[:15] for s in ids], dtype="S15").view(np.uint8).reshape(-1, 15).copy()
    long = np.char.str_len(ids.astype(str)) == 18
    if long.any():  # recase the 15 characters from the suffix, so upper-cased copies still match
        suffix = np.array([s[15:].upper() for s in ids[long]], dtype="S3").view(np.uint8).reshape(-1, 3)
        bits = _SUFFIX_INDEX[suffix].clip(min=0)
        upper = ((bits[:, :, None] >> np.arange(5)) & 1).reshape(-1, 15).astype(bool)
        chars = base[long]
        letter = ((chars >= 65) & (chars <= 90)) | ((chars >= 97) & (chars <= 122))
        lower = np.where((chars >= 65) & (chars <= 90), chars + 32, chars)
        base[long] = np.where(upper & letter, lower - 32, lower)
    is_upper = ((base >= 65) & (base <= 90)).reshape(-1, 3, 5)
    codes = _SUFFIX_BYTES[(is_upper * _UPPER_BITS).sum(axis=2)]
    full = np.concatenate([base, codes.astype(np.uint8)], axis=1)
    return full.view("S18").ravel().astype(str)


# --- reading ---------------------------------------------------------------------------------------


def read(inputs: list[Path], options: ImportOptions) -> Imported:
    """Read a folder (or files) of Salesforce object exports; see the module docstring."""
    expected = f"object exports (names like {', '.join(sorted(set(OBJECTS.values())))})"
    files, problems = recognise(input_files(inputs), OBJECTS.get, "Salesforce", expected,
                                required=("Lead", "Contact", "Opportunity"), inputs=inputs)
    imported = read_objects(files, options)
    imported.problems[:0] = problems
    return imported


def read_objects(files: dict[str, Path], options: ImportOptions, hash_key: bytes | None = None) -> Imported:
    """Map Salesforce object exports (``{object name: path}``) onto canonical tables."""
    config = options.config or {}
    date_format = config.get("date_format")
    raw: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for obj, path in files.items():
        raw[obj] = read_export(Path(path), options, _TABLE_OF.get(obj, "?"))
        _require_columns(obj, raw[obj])
    problems: list[Problem] = []
    people, contact_person, lead_frame, contacts = _people(raw, config, date_format, hash_key, notes)
    frames: dict[str, pd.DataFrame] = {}
    if people is not None:
        folded, found = fold(
            people,
            ["person_id"],
            ["_t", "_src"],
            "leads",
            "the same person (e-mail, or a contact their lead was converted into) as an "
            "earlier lead or contact: folded into the earliest",
        )
        problems += found
        frames["leads"] = folded.drop(columns=["_t", "_src"])
    if "Opportunity" in raw:
        stages = stage_mapping(
            raw["Opportunity"],
            raw.get("OpportunityHistory"),
            raw.get("OpportunityStage"),
            config.get("stages"),
        )
        notes.append("stages: " + "; ".join(f"{k!r} -> {v} ({why})" for k, (v, why) in stages.items()))
        deals, deal_notes = _deals(
            raw["Opportunity"],
            stages,
            config,
            date_format,
            lead_frame,
            contacts,
            contact_person,
            raw.get("OpportunityContactRole"),
        )
        notes += deal_notes
        frames["deals"] = deals
        if "OpportunityHistory" in raw:
            hist, found, hist_notes = _history(raw["OpportunityHistory"], stages, date_format)
            frames["stage_history"] = hist
            problems += found
            notes += hist_notes
    if "OpportunityContactRole" in raw:
        dc, found = _deal_contacts(raw["OpportunityContactRole"], contact_person)
        frames["deal_contacts"] = dc
        problems += found
    if "CampaignMember" in raw:
        touches, ident, found, touch_notes = _campaign_touches(
            raw["CampaignMember"], raw.get("Campaign"), lead_frame, contact_person, date_format
        )
        frames["touchpoints"], frames["identities"] = _group(touches, config.get("channel_rules")), ident
        problems += found
        notes += touch_notes
    if "Account" in raw:
        notes.append(f"Account: {len(raw['Account']):,} rows read (accounts link deals to people; no table)")
    return Imported(frames, problems, notes)


#: Columns an object's export cannot do without (any of the names).
_REQUIRED: dict[str, list[tuple[str, ...]]] = {
    "Lead": [("Id", "Lead ID")],
    "Contact": [("Id", "Contact ID")],
    "Opportunity": [("Id", "Opportunity ID"), ("StageName", "Stage"), ("CreatedDate", "Created Date")],
    "OpportunityHistory": [
        ("OpportunityId", "Opportunity ID"),
        ("StageName", "To Stage", "Stage"),
        ("CreatedDate", "Created Date", "Last Modified"),
    ],
    "OpportunityContactRole": [("OpportunityId", "Opportunity ID"), ("ContactId", "Contact ID")],
    "CampaignMember": [("CampaignId", "Campaign ID")],
}


def _require_columns(obj: str, raw: pd.DataFrame) -> None:
    lacking = [names for names in _REQUIRED.get(obj, []) if column(raw, *names) is None]
    if lacking:
        have = ", ".join(c for c in raw.columns if c not in (FILE, ROW))
        file = str(raw[FILE].iloc[0]) if len(raw) else "?"
        raise DataValidationError(
            [
                Problem(
                    _TABLE_OF.get(obj, "?"),
                    file,
                    names[0],
                    f"the {obj} export has no {' / '.join(names)} column; the file has: {have}",
                    "error",
                )
                for names in lacking
            ]
        )


_TABLE_OF = {
    "Lead": "leads",
    "Contact": "leads",
    "Opportunity": "deals",
    "OpportunityHistory": "stage_history",
    "OpportunityContactRole": "deal_contacts",
    "CampaignMember": "touchpoints",
    "Campaign": "touchpoints",
    "Account": "?",
    "OpportunityStage": "?",
}


def _dates(
    raw: pd.DataFrame, table: str, date_format: str | None, notes: list[str], **cols: Iterable[str]
) -> dict[str, pd.Series]:
    found = {name: column(raw, *names) for name, names in cols.items()}
    parsed, more = parse_dates(raw, found, table, date_format)
    notes += more
    return {name: parsed.get(name, pd.Series(None, index=raw.index, dtype=object)) for name in cols}


def _person_ids(raw: pd.DataFrame, ids: pd.Series, hash_key: bytes | None) -> pd.Series:
    email = column(raw, "Email", "Email Address")
    if email is None:
        hashed = pd.Series(pd.NA, index=raw.index, dtype="string")
    else:
        hashed = hash_identifiers(email, "email", key=hash_key)
    fallback = "sf:" + ids.astype("string")
    return hashed.astype(object).where(hashed.notna(), fallback.astype(object))


def _people(
    raw: dict[str, pd.DataFrame],
    config: dict[str, Any],
    date_format: str | None,
    hash_key: bytes | None,
    notes: list[str],
):
    """The leads table rows (leads and contacts), the contact -> person map, and the lead frame."""
    fields = config.get("fields") or {}
    parts: list[pd.DataFrame] = []
    lead_frame = contacts = None
    contact_person: dict[str, Any] = {}
    if "Lead" in raw:
        r = raw["Lead"]
        d = _dates(
            r,
            "leads",
            date_format,
            notes,
            created_at=["CreatedDate", "Create Date", "Created Date"],
            mql_at=[fields.get("mql_at", "MQL_Date__c"), "MQL_Date"],
            sql_at=[fields.get("sql_at", "SQL_Date__c"), "SQL_Date"],
            converted_at=["ConvertedDate", "Converted Date"],
        )
        lead_id = _ids(column(r, "Id", "Lead ID"), r.index)
        lead_frame = pd.DataFrame(
            {
                "lead_id": lead_id,
                "person_id": _person_ids(r, lead_id, hash_key),
                "created_at": d["created_at"],
                "mql_at": d["mql_at"],
                "sql_at": d["sql_at"],
                "converted_at": d["converted_at"],
                "lead_source": column(r, "LeadSource", "Lead Source"),
                "segment": column(r, fields.get("segment", "Segment__c"), "Industry"),
                "opp_id": _ids(column(r, "ConvertedOpportunityId", "Converted Opportunity ID"), r.index),
                "contact_id": _ids(column(r, "ConvertedContactId", "Converted Contact ID"), r.index),
                "account_id": _ids(column(r, "ConvertedAccountId", "Converted Account ID"), r.index),
                FILE: r[FILE],
                ROW: r[ROW],
                "_src": 0,
            }
        )
        placeholders = column(r, "ConvertedOpportunityId")
        if placeholders is not None:
            n_null = int(placeholders.astype("string").str.strip().isin(list(NULL_IDS)).sum())
            if n_null:
                notes.append(
                    f"Lead: {n_null:,} converted leads carry the null-id placeholder as "
                    "ConvertedOpportunityId (no opportunity created at conversion)"
                )
        for cid, person in (
            lead_frame.dropna(subset=["contact_id"])
            .sort_values(ROW)[["contact_id", "person_id"]]
            .itertuples(index=False)
        ):
            contact_person.setdefault(cid, person)
        parts.append(lead_frame)
    if "Contact" in raw:
        r = raw["Contact"]
        d = _dates(
            r,
            "leads",
            date_format,
            notes,
            created_at=["CreatedDate", "Create Date", "Created Date"],
            mql_at=[fields.get("mql_at", "MQL_Date__c")],
            sql_at=[fields.get("sql_at", "SQL_Date__c")],
        )
        cid = _ids(column(r, "Id", "Contact ID"), r.index)
        own = _person_ids(r, cid, hash_key)
        person = pd.Series(
            [contact_person.get(c, o) for c, o in zip(cid, own, strict=True)], index=r.index, dtype=object
        )
        contacts = pd.DataFrame(
            {
                "contact_id": cid,
                "person_id": person,
                "created_at": d["created_at"],
                "mql_at": d["mql_at"],
                "sql_at": d["sql_at"],
                "lead_source": column(r, "LeadSource", "Lead Source"),
                "segment": column(r, fields.get("segment", "Segment__c"), "Department"),
                "account_id": _ids(column(r, "AccountId", "Account ID"), r.index),
                FILE: r[FILE],
                ROW: r[ROW],
                "_src": 1,
            }
        )
        for c, p in zip(cid, person, strict=True):
            if c is not None:
                contact_person.setdefault(c, p)
        parts.append(contacts)
    if not parts:
        return None, contact_person, lead_frame, contacts
    cols = ["person_id", "created_at", "lead_source", "mql_at", "sql_at", "segment", "account_id", FILE, ROW,
            "_src"]
    people = pd.concat([p.reindex(columns=cols) for p in parts], ignore_index=True)
    people["_t"] = pd.to_datetime(people["created_at"], errors="coerce", utc=True, format="ISO8601")
    # a person's account: the first known in the order rows fold (a lead converted into the account,
    # else the contact's AccountId), so the row kept carries it even when that row has none
    order = people.sort_values(["_t", "_src", ROW], kind="stable", na_position="last")
    known = order.dropna(subset=["account_id"]).drop_duplicates("person_id")
    people["account_id"] = people["person_id"].map(known.set_index("person_id")["account_id"]).astype(object)
    return people, contact_person, lead_frame, contacts


# --- stages ----------------------------------------------------------------------------------------




def stage_mapping(
    opps: pd.DataFrame,
    history: pd.DataFrame | None = None,
    stage_table: pd.DataFrame | None = None,
    configured: dict[str, Any] | None = None,
) -> dict[str, tuple[str, str]]:
    """Each stage name of the exports -> (canonical stage, why), in the order the stages appear.

    The config's map wins, then Salesforce's default names, then ``OpportunityStage``
    (IsClosed/IsWon/ForecastCategory/DefaultProbability), then the opportunities (or history rows)
    in the stage.
    """
    configured = {
        str(k).strip().lower(): (canonical_stage(v, str(k)), "config") for k, v in (configured or {}).items()
    }
    defaults = {k.lower(): (v, "Salesforce default") for k, v in DEFAULT_STAGES.items()}
    declared = _declared_stages(stage_table)
    names: list[str] = []
    evidence: list[pd.DataFrame] = []
    for frame in (opps, history):
        if frame is None:
            continue
        stage = column(frame, "StageName", "Stage", "To Stage")
        if stage is None:
            continue
        names += [s for s in stage.dropna().astype(str).str.strip().unique() if s not in names]
        evidence.append(
            pd.DataFrame(
                {
                    "stage": stage.astype("string").str.strip(),
                    "closed": parse_bool(column(frame, "IsClosed", "Closed"), frame.index),
                    "won": parse_bool(column(frame, "IsWon", "Won"), frame.index),
                    "forecast": (
                        column(frame, "ForecastCategory", "ForecastCategoryName", "Forecast Category")
                        if column(frame, "ForecastCategory", "ForecastCategoryName", "Forecast Category")
                        is not None
                        else pd.Series(pd.NA, index=frame.index)
                    ).astype("string"),
                    "probability": pd.to_numeric(
                        (
                            column(frame, "Probability", "Probability (%)")
                            if column(frame, "Probability", "Probability (%)") is not None
                            else pd.Series(np.nan, index=frame.index)
                        )
                        .astype("string")
                        .str.rstrip("%"),
                        errors="coerce",
                    ),
                }
            )
        )
    rows = pd.concat(evidence, ignore_index=True) if evidence else pd.DataFrame(columns=["stage"])
    out: dict[str, tuple[str, str]] = {}
    for name in names:
        key = name.lower()
        if key in configured:
            out[name] = configured[key]
        elif key in defaults:
            out[name] = defaults[key]
        elif key in declared:
            out[name] = declared[key]
        else:
            out[name] = _infer_stage(rows[rows["stage"] == name])
    return out


def _declared_stages(stage_table: pd.DataFrame | None) -> dict[str, tuple[str, str]]:
    if stage_table is None:
        return {}
    label = column(stage_table, "MasterLabel", "ApiName", "Label")
    if label is None:
        return {}
    closed = parse_bool(column(stage_table, "IsClosed"), stage_table.index)
    won = parse_bool(column(stage_table, "IsWon"), stage_table.index)
    forecast = column(stage_table, "ForecastCategory", "ForecastCategoryName")
    prob = column(stage_table, "DefaultProbability")
    out = {}
    for i in stage_table.index:
        name = str(label[i]).strip().lower()
        rows = pd.DataFrame(
            {
                "closed": [closed[i]],
                "won": [won[i]],
                "forecast": [None if forecast is None else forecast[i]],
                "probability": [np.nan if prob is None else pd.to_numeric(prob[i], errors="coerce")],
            }
        )
        stage, why = _infer_stage(rows)
        out[name] = (stage, "OpportunityStage: " + why)
    return out


def _infer_stage(rows: pd.DataFrame) -> tuple[str, str]:
    closed = rows["closed"].dropna().astype(bool)
    if len(closed) and closed.mean() >= 0.5:
        won = rows.loc[closed.index[closed], "won"].dropna().astype(bool)
        if len(won):
            return (
                ("closed_won", "IsClosed, IsWon")
                if won.mean() >= 0.5
                else ("closed_lost", "IsClosed, not IsWon")
            )
    forecast = rows["forecast"].dropna().astype(str).str.strip().str.lower()
    if len(forecast):
        top = forecast.mode().iloc[0]
        if top == "closed" and not len(closed):
            return "closed_won", "ForecastCategory Closed"
        if top in _OPEN_FORECAST:
            return _OPEN_FORECAST[top], f"ForecastCategory {forecast.mode().iloc[0].title()}"
    prob = rows["probability"].dropna()
    if len(prob):
        p = float(prob.median())
        if p >= 100 and not len(closed):
            return "closed_won", f"Probability {p:g}%"
        if p <= 0 and not len(closed):
            return "closed_lost", f"Probability {p:g}%"
        return ("proposal", f"Probability {p:g}%") if p >= 50 else ("opportunity", f"Probability {p:g}%")
    return (
        "opportunity",
        "no IsClosed, ForecastCategory or Probability: taken as open (set stages: in the config)",
    )


# --- deals -----------------------------------------------------------------------------------------


def _deals(
    r: pd.DataFrame,
    stages: dict[str, tuple[str, str]],
    config: dict[str, Any],
    date_format: str | None,
    leads: pd.DataFrame | None,
    contacts: pd.DataFrame | None,
    contact_person: dict[str, Any],
    ocr: pd.DataFrame | None,
) -> tuple[pd.DataFrame, list[str]]:
    notes: list[str] = []
    d = _dates(
        r,
        "deals",
        date_format,
        notes,
        created_at=["CreatedDate", "Create Date", "Created Date"],
        close=["CloseDate", "Close Date"],
    )
    deal_id = _ids(column(r, "Id", "Opportunity ID"), r.index)
    account = _ids(column(r, "AccountId", "Account ID"), r.index)
    stage_name = column(r, "StageName", "Stage")
    stage = (
        stage_name.astype("string").str.strip().map(lambda s: stages.get(s, (None, ""))[0])
        if stage_name is not None
        else pd.Series(None, index=r.index)
    )
    closed = parse_bool(column(r, "IsClosed", "Closed"), r.index)
    won = parse_bool(column(r, "IsWon", "Won"), r.index)
    # without IsClosed/IsWon the mapped stage says whether and how the deal closed
    closed = closed.where(closed.notna(), stage.isin(["closed_won", "closed_lost"]).astype("boolean"))
    won = won.where(won.notna(), (stage == "closed_won").astype("boolean"))
    currency = column(r, "CurrencyIsoCode", "Opportunity Currency", "Currency")
    if currency is None:
        currency = pd.Series(config.get("currency"), index=r.index, dtype=object)
        notes.append(
            "Opportunity: no CurrencyIsoCode column; amounts are in "
            + (
                f"{config['currency']} (config currency)"
                if config.get("currency")
                else "an unnamed currency (set currency: in the config)"
            )
        )
    is_closed = closed.fillna(False).to_numpy(bool)
    deals = pd.DataFrame(
        {
            "deal_id": deal_id,
            "account_id": account,
            "created_at": d["created_at"],
            "amount": column(r, "Amount"),
            "currency": currency,
            "stage": stage,
            "closed_at": d["close"].where(is_closed, None),
            "won": won.astype(object).where(is_closed, None),
            FILE: r[FILE],
            ROW: r[ROW],
        }
    )
    person, route = _link_people(
        deals, column(r, "ContactId", "Contact ID"), leads, contacts, contact_person, ocr
    )
    deals.insert(1, "person_id", person)
    counts = route.value_counts()
    order = ["converted lead", "contact role", "Opportunity.ContactId", "account", "nobody"]
    notes.append(
        "deals reach people through: "
        + ", ".join(f"{name} {int(counts.get(name, 0)):,}" for name in order)
        + " (a deal that reaches nobody is kept, credited to (no touches))"
    )
    return deals, notes


def _link_people(
    deals: pd.DataFrame,
    opp_contact: pd.Series | None,
    leads: pd.DataFrame | None,
    contacts: pd.DataFrame | None,
    contact_person: dict[str, Any],
    ocr: pd.DataFrame | None,
) -> tuple[pd.Series, pd.Series]:
    """Each deal's person and the route that found it, in the documented order."""
    person = pd.Series(None, index=deals.index, dtype=object)
    route = pd.Series("nobody", index=deals.index, dtype=object)

    def fill(candidates: pd.Series, name: str) -> None:
        todo = person.isna() & candidates.notna()
        person[todo] = candidates[todo]
        route[todo] = name

    if leads is not None:
        by_opp = (
            leads.dropna(subset=["opp_id"])
            .assign(_t=_when(leads.dropna(subset=["opp_id"])["created_at"]))
            .sort_values(["_t", ROW])
            .drop_duplicates("opp_id")
            .set_index("opp_id")["person_id"]
        )
        fill(deals["deal_id"].map(by_opp), "converted lead")
    if ocr is not None:
        roles = pd.DataFrame(
            {
                "opp": _ids(column(ocr, "OpportunityId", "Opportunity ID"), ocr.index),
                "contact": _ids(column(ocr, "ContactId", "Contact ID"), ocr.index),
                "primary": parse_bool(column(ocr, "IsPrimary", "Primary"), ocr.index).fillna(False),
                ROW: ocr[ROW],
            }
        )
        roles["person"] = roles["contact"].map(contact_person)
        roles = roles.dropna(subset=["opp", "person"]).sort_values(["primary", ROW], ascending=[False, True])
        fill(deals["deal_id"].map(roles.drop_duplicates("opp").set_index("opp")["person"]), "contact role")
    if opp_contact is not None:
        fill(_ids(opp_contact, deals.index).map(contact_person), "Opportunity.ContactId")
    by_account: pd.Series | None = None
    if leads is not None and leads["account_id"].notna().any():
        conv = leads.dropna(subset=["account_id"]).assign(
            _t=_when(leads.dropna(subset=["account_id"])["converted_at"])
        )
        by_account = (
            conv.sort_values(["_t", ROW]).drop_duplicates("account_id").set_index("account_id")["person_id"]
        )
    if contacts is not None and contacts["account_id"].notna().any():
        at = contacts.dropna(subset=["account_id"]).assign(
            _t=_when(contacts.dropna(subset=["account_id"])["created_at"])
        )
        first = at.sort_values(["_t", ROW]).drop_duplicates("account_id").set_index("account_id")["person_id"]
        by_account = first if by_account is None else by_account.combine_first(first)
    if by_account is not None:
        fill(deals["account_id"].map(by_account), "account")
    return person, route


def _when(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")


def _history(
    r: pd.DataFrame, stages: dict[str, tuple[str, str]], date_format: str | None
) -> tuple[pd.DataFrame, list[Problem], list[str]]:
    notes: list[str] = []
    d = _dates(
        r, "stage_history", date_format, notes, entered_at=["CreatedDate", "Created Date", "Last Modified"]
    )
    deal_id = _ids(column(r, "OpportunityId", "Opportunity ID"), r.index)
    stage_name = column(r, "StageName", "To Stage", "Stage")
    stage = stage_name.astype("string").str.strip().map(lambda s: stages.get(s, (s, ""))[0])
    hist = pd.DataFrame(
        {
            "deal_id": deal_id,
            "stage": stage,
            "entered_at": d["entered_at"],
            "amount": column(r, "Amount"),
            FILE: r[FILE],
            ROW: r[ROW],
        }
    )
    hist["_t"] = _when(hist["entered_at"])
    folded, problems = fold(
        hist,
        ["deal_id", "stage"],
        ["_t"],
        "stage_history",
        "later rows for the same deal_id/stage folded into the earliest (OpportunityHistory "
        "has a row per change of stage, amount or close date)",
    )
    return folded.drop(columns="_t"), problems, notes


def _deal_contacts(r: pd.DataFrame, contact_person: dict[str, Any]) -> tuple[pd.DataFrame, list[Problem]]:
    contact = _ids(column(r, "ContactId", "Contact ID"), r.index)
    person = pd.Series(
        [contact_person.get(c, None if c is None else f"sf:{c}") for c in contact],
        index=r.index,
        dtype=object,
    )
    dc = pd.DataFrame(
        {
            "deal_id": _ids(column(r, "OpportunityId", "Opportunity ID"), r.index),
            "person_id": person,
            "role": column(r, "Role"),
            "is_primary": parse_bool(column(r, "IsPrimary", "Primary"), r.index),
            FILE: r[FILE],
            ROW: r[ROW],
        }
    )
    folded, problems = fold(
        dc,
        ["deal_id", "person_id"],
        ["is_primary"],
        "deal_contacts",
        "a second contact role of the same person on the same deal: folded into the primary (or first) one",
        ascending=False,
    )
    return folded, problems


# --- campaign responses ----------------------------------------------------------------------------


def _group(touches: pd.DataFrame, rules: str | None) -> pd.DataFrame:
    """Channels of the offline touches by the config's ``channel_rules`` file (validation applies the
    GA4 default group to touches left without one)."""
    if not rules or touches.empty:
        return touches
    from closedloop_nb.channels import ChannelRules, group_channels

    grouped = group_channels(touches, ChannelRules.from_yaml(rules))
    return touches.assign(channel=grouped.channel.astype(str).to_numpy())


def _campaign_touches(
    r: pd.DataFrame,
    campaigns: pd.DataFrame | None,
    leads: pd.DataFrame | None,
    contact_person: dict[str, Any],
    date_format: str | None,
):
    notes: list[str] = []
    d = _dates(
        r,
        "touchpoints",
        date_format,
        notes,
        responded=["FirstRespondedDate", "First Responded Date"],
        created=["CreatedDate", "Created Date", "Member First Associated"],
    )
    lead_person = (
        {}
        if leads is None
        else leads.dropna(subset=["lead_id"])
        .drop_duplicates("lead_id")
        .set_index("lead_id")["person_id"]
        .to_dict()
    )
    lead_id = _ids(column(r, "LeadId", "Lead ID"), r.index)
    contact_id = _ids(column(r, "ContactId", "Contact ID"), r.index)
    person = pd.Series(
        [
            contact_person.get(c, f"sf:{c}")
            if c is not None
            else (lead_person.get(lead, f"sf:{lead}") if lead else None)
            for c, lead in zip(contact_id, lead_id, strict=True)
        ],
        index=r.index,
        dtype=object,
    )
    campaign_id = _ids(column(r, "CampaignId", "Campaign ID"), r.index)
    name = type_ = pd.Series(None, index=r.index, dtype=object)
    if campaigns is not None:
        cid = _ids(column(campaigns, "Id", "Campaign ID"), campaigns.index)
        names = column(campaigns, "Name", "Campaign Name")
        types = column(campaigns, "Type", "Campaign Type")
        if names is not None:
            name = campaign_id.map(pd.Series(names.to_numpy(), index=cid).groupby(level=0).first())
        if types is not None:
            type_ = campaign_id.map(pd.Series(types.to_numpy(), index=cid).groupby(level=0).first())
    responded = parse_bool(column(r, "HasResponded", "Responded"), r.index)
    if column(r, "HasResponded", "Responded") is None:
        responded = pd.Series(d["responded"].notna().to_numpy(), index=r.index, dtype="boolean")
    keep = responded.fillna(False).to_numpy(bool)
    problems: list[Problem] = []
    if (~keep).any():
        rows = r.loc[~keep, ROW].to_numpy()
        problems.append(
            Problem(
                "touchpoints",
                str(r[FILE].iloc[0]),
                "HasResponded",
                "campaign members who did not respond are not touches",
                "info",
                len(rows),
                tuple(int(x) for x in rows[:10]),
            )
        )
    member_id = _ids(column(r, "Id", "Campaign Member ID"), r.index)
    source = type_.astype("string").str.strip().str.lower().fillna("(not set)")
    touches = pd.DataFrame(
        {
            "touch_id": ("sfcm:" + member_id.astype("string")).astype(object).where(member_id.notna(), None),
            "visitor_id": ("crm:" + person.astype("string")).astype(object).where(person.notna(), None),
            "timestamp": d["responded"].where(d["responded"].notna(), d["created"]),
            "source": source,
            "medium": "offline",
            "campaign": name,
            "interaction_type": "offline",
            FILE: r[FILE],
            ROW: r[ROW],
        }
    ).loc[keep]
    ident = (
        touches.dropna(subset=["visitor_id"])
        .assign(person_id=person[keep].dropna(), _t=_when(touches["timestamp"]))
        .sort_values(["_t", ROW])
        .drop_duplicates("visitor_id")
    )
    ident = pd.DataFrame(
        {
            "visitor_id": ident["visitor_id"],
            "person_id": ident["person_id"],
            "matched_at": ident["timestamp"],
            "method": "crm_import",
            FILE: ident[FILE],
            ROW: ident[ROW],
        }
    )
    notes.append(
        f"CampaignMember: {int(keep.sum()):,} responses as offline touches "
        f"(source = campaign type, medium offline), {len(ident):,} responders linked (identities)"
    )
    return touches.reset_index(drop=True), ident.reset_index(drop=True), problems, notes

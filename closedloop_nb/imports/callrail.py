"""CallRail's calls export in: every call a touch of type ``call``; qualifying calls identify the caller.

``closedloop import callrail CALLS.csv --out DATA_DIR`` reads the calls list as CallRail's API (v3,
"Listing All Calls") names its fields, or with the calls page's export column labels: start time,
duration, answered, first call, caller number, tracking source, medium, campaign, keywords, landing
page, gclid / fbclid / msclkid and UTM fields.

* Each call is a touch (``interaction_type`` ``call``) at its start time. Its source and medium are the
  call's UTM tags when it has them, else CallRail's tracking source and medium (``Google Paid`` / ``CPC``
  -> google / cpc, ``Direct`` -> (direct) / (none), ...). Campaign and keywords are scrubbed of e-mail
  addresses and phone numbers, the landing page of personal data in its query string.
* The caller is a visitor of their own, ``call:<keyed hash of the number>``: the raw number is never
  kept. A call that *qualifies* is also an identity match (method ``call``) of that visitor to the
  person ``<keyed hash of the number>``, which joins a CRM that hashes phone numbers the same way
  (:func:`closedloop_nb.privacy.hash_identifiers` with ``phone``: digits only).

Config keys: ``min_duration`` (seconds a call must last to qualify; default 60), ``first_call_only``
(only a caller's first call qualifies; default false), ``answered_only`` (default false),
``channel_rules`` (a rules file or shipped set name). The caller's name is not read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from closedloop_nb.channels import ChannelRules, group_channels
from closedloop_nb.errors import DataValidationError, Problem
from closedloop_nb.imports._common import Imported, ImportOptions, input_files
from closedloop_nb.imports._web import Scrubbed, click_id_from_url, parse_times
from closedloop_nb.privacy import MissingHashKeyError, hash_identifiers

__all__ = ["COLUMNS", "read"]

#: Field -> the names CallRail's API and its export give it (compared case-insensitively).
COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id", "call id", "call_id"),
    "start_time": ("start_time", "start time", "date", "call start time"),
    "duration": ("duration", "duration (seconds)", "call duration", "duration (s)"),
    "answered": ("answered", "call status"),
    "first_call": ("first_call", "first call", "first-time caller", "first time caller"),
    "caller": ("customer_phone_number", "phone number", "caller number", "customer phone number", "caller"),
    "source": ("source", "tracking source"),
    "medium": ("medium",),
    "campaign": ("campaign",),
    "keywords": ("keywords", "keyword"),
    "landing_page": ("landing_page_url", "landing page", "landing page url"),
    "gclid": ("gclid",),
    "fbclid": ("fbclid",),
    "msclkid": ("msclkid",),
    "utm_source": ("utm_source", "utm source"),
    "utm_medium": ("utm_medium", "utm medium"),
    "utm_campaign": ("utm_campaign", "utm campaign"),
    "utm_term": ("utm_term", "utm term"),
}
#: CallRail's tracking source names -> the source channel grouping understands.
SOURCES: dict[str, str] = {
    "google paid": "google", "google ads": "google", "google organic": "google", "google my business":
    "google", "bing paid": "bing", "bing organic": "bing", "microsoft ads": "bing", "yahoo organic": "yahoo",
    "yahoo paid": "yahoo", "facebook": "facebook", "facebook paid": "facebook", "instagram": "instagram",
    "linkedin": "linkedin", "direct": "(direct)",
}
MEDIA: dict[str, str] = {"direct": "(none)", "cpc": "cpc", "ppc": "ppc", "organic": "organic",
                         "referral": "referral", "social": "social", "email": "email", "display": "display"}
_TRUE = {"true", "yes", "1", "y", "answered", "t"}


def _column(raw: pd.DataFrame, field: str) -> pd.Series:
    lower = {c.strip().lower(): c for c in raw.columns}
    for alias in COLUMNS[field]:
        if alias in lower:
            return raw[lower[alias]]
    return pd.Series(pd.NA, index=raw.index, dtype="string")


def _seconds(values: pd.Series) -> pd.Series:
    """Call durations as seconds: ``185``, ``3:05`` or ``0:03:05``."""
    text = values.astype("string").str.strip()
    out = pd.to_numeric(text, errors="coerce")
    clock = text.str.fullmatch(r"\d+(:\d{1,2}){1,2}").fillna(False)
    for i, v in text[clock].items():
        parts = [int(p) for p in str(v).split(":")]
        out[i] = sum(p * 60 ** k for k, p in enumerate(reversed(parts)))
    return out


def _flag(values: pd.Series) -> pd.Series:
    return values.astype("string").str.strip().str.lower().isin(_TRUE).fillna(False)


def read(inputs: list[Path], options: ImportOptions) -> Imported:
    """Reader of ``closedloop import callrail`` (see the module notes)."""
    config = options.config
    frames, problems, notes = [], [], []
    for path in input_files(inputs):
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""],
                          encoding=options.encoding or "utf-8-sig")
        missing = [f for f in ("start_time", "caller") if _column(raw, f).isna().all()]
        if missing:
            why = "no " + " and no ".join(f"{f} column ({', '.join(COLUMNS[f][:3])})" for f in missing)
            raise DataValidationError([Problem("touchpoints", str(path), None, why, "error")])
        calls = pd.DataFrame({f: _column(raw, f) for f in COLUMNS})
        calls["_file"], calls["_row"] = str(path), np.arange(1, len(raw) + 1)
        frames.append(calls)
    calls = pd.concat(frames, ignore_index=True)
    files = ", ".join(sorted(calls["_file"].unique()))
    calls["timestamp"] = parse_times(calls["start_time"], timezone=options.timezone)
    try:
        person = hash_identifiers(calls["caller"], "phone")
    except MissingHashKeyError as exc:
        raise DataValidationError([Problem("touchpoints", files, "caller", str(exc), "error")]) from None

    source_name = calls["source"].astype("string").str.strip()
    mapped = source_name.str.lower().map(SOURCES)
    source = calls["utm_source"].fillna(mapped).fillna(source_name.str.lower())
    medium_name = calls["medium"].astype("string").str.strip().str.lower()
    medium = calls["utm_medium"].fillna(medium_name.map(MEDIA)).fillna(medium_name)
    direct = source.eq("(direct)").fillna(False)
    medium = medium.mask(direct & medium.isna(), "(none)")
    kind = pd.Series(pd.NA, index=calls.index, dtype=object)
    value = kind.copy()
    for name in ("gclid", "fbclid", "msclkid"):
        fill = kind.isna() & calls[name].notna()
        kind[fill], value[fill] = name, calls.loc[fill, name]
    from_url = calls["landing_page"].map(click_id_from_url)
    fill = kind.isna() & from_url.map(lambda t: t[0] is not None)
    kind[fill] = from_url[fill].map(lambda t: t[0])
    value[fill] = from_url[fill].map(lambda t: t[1])
    ids = calls["id"].astype("string")
    touches = pd.DataFrame({
        "touch_id": ("callrail:" + ids).where(ids.notna()), "visitor_id": ("call:" + person).where(
            person.notna()), "timestamp": calls["timestamp"], "source": source.fillna("(not set)"),
        "medium": medium.fillna("(not set)"), "campaign": calls["utm_campaign"].fillna(calls["campaign"]),
        "keyword": calls["utm_term"].fillna(calls["keywords"]), "landing_page": calls["landing_page"],
        "interaction_type": "call", "click_id": value, "click_id_type": kind,
        "_file": calls["_file"], "_row": calls["_row"]})
    scrub = Scrubbed("touchpoints", files)
    scrub.urls(touches, "landing_page")
    scrub.column(touches, "campaign")
    scrub.column(touches, "keyword")
    problems += scrub.problems()
    notes += scrub.notes()

    # qualifying calls: identity matches of the caller
    duration = _seconds(calls["duration"])
    min_duration = float(config.get("min_duration", 60))
    qualifies = (duration >= min_duration).fillna(False)
    rule = f"lasting at least {min_duration:g} s"
    if config.get("first_call_only"):
        qualifies &= _flag(calls["first_call"])
        rule += ", first calls only"
    if config.get("answered_only"):
        qualifies &= _flag(calls["answered"])
        rule += ", answered only"
    qualifies &= person.notna() & calls["timestamp"].notna()
    matched = pd.DataFrame({"visitor_id": touches["visitor_id"], "person_id": person,
                            "matched_at": calls["timestamp"], "method": "call", "_file": calls["_file"],
                            "_row": calls["_row"]}).loc[qualifies.to_numpy()]
    matched = matched.sort_values("matched_at", kind="stable")
    repeat = matched.duplicated(["visitor_id", "person_id"], keep="first")
    identities = matched.loc[~repeat]
    notes.append(f"{len(calls):,} calls; {int(qualifies.sum()):,} qualify ({rule}): {len(identities):,} "
                 f"callers identified ({int(repeat.sum()):,} repeat calls of a caller already identified)")
    n_anonymous = int(person.isna().sum())
    if n_anonymous:
        problems.append(Problem("touchpoints", files, "caller", "call without a caller number (blocked or "
                                "withheld): no visitor id, rejected", "warning", n_anonymous))
    if config.get("channel_rules"):
        rules = ChannelRules.from_yaml(config["channel_rules"])
        touches["channel"] = group_channels(touches, rules).channel.astype(str).to_numpy()
    out = {"touchpoints": touches, "identities": identities.reset_index(drop=True)}
    return Imported(out, problems, notes)




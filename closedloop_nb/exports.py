"""Closing the loop back: offline-conversion uploads for the ad platforms, from the canonical tables.

``closedloop export offline-conversions --platform google-ads|meta DATA_DIR --conversion closed_won
--out FILE.csv`` finds every conversion (a won deal, an opportunity or a lead) whose journey carries the
platform's click id, and writes the file the platform's offline-conversion import takes, so its bidding
can learn from closed revenue:

* **Google Ads** ("Import conversions from ad clicks", the click-conversion file template): a
  ``Parameters:TimeZone=`` row naming the time zone once (the account's IANA time zone id with
  ``--timezone``, which Google recommends as it follows daylight saving; else the offset ``+0000``), then
  ``Google Click ID, Conversion Name, Conversion Time, Conversion Value, Conversion Currency`` with the
  conversion time as ``yyyy-mm-dd hh:mm:ss`` in that zone. The click is the journey's last gclid in the
  lookback window (90 days: Google refuses older clicks). gbraid / wbraid clicks cannot go in this
  file (Google takes them through its API only); they are counted in the summary.
* **Meta** (Conversions API offline events, one row per event with the API's parameter names):
  ``event_name, event_time`` (Unix seconds), ``action_source`` (``system_generated``), ``event_id``
  (the deal id, for de-duplication), ``em`` and ``ph`` (SHA-256 of the e-mail and phone number
  normalised as Meta requires: e-mail trimmed and lower-cased; phone digits only, leading zeros
  dropped, country code included), ``fbc`` (``fb.1.<click time in ms>.<fbclid>``), ``value``,
  ``currency``. The journey's fbclid gives ``fbc``.

Why Meta needs the CRM's contact file. The canonical tables keep no e-mail address: ``person_id`` is an
HMAC under the project's secret key (:mod:`closedloop_nb.privacy`), which Meta cannot match. Meta's
``em`` is the plain SHA-256 of the normalised address, so the export reads the raw addresses from the
CRM's own contact export at the moment of export (``--contacts FILE``), links each contact to its
person by the same keyed hash (or by an id column that holds the person ids), hashes the address the
way Meta wants and writes only that hash. Raw addresses never enter the canonical tables, the upload
file or the summary. Without ``--contacts`` the Meta file carries ``fbc`` alone (Meta matches on it).

Examples
--------
::

    closedloop export offline-conversions --platform google-ads data/ --conversion closed_won \\
        --conversion-name "Closed won (CRM)" --out uploads/google_ads.csv
    closedloop export offline-conversions --platform meta data/ --contacts exports/hubspot_contacts.csv \\
        --out uploads/meta.csv
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from closedloop_nb.privacy import hash_identifiers

__all__ = ["PLATFORMS", "UploadSummary", "meta_email_hash", "meta_phone_hash", "offline_conversions",
           "write_upload"]

#: Platform -> the click-id types its upload takes, and the ones it takes only through its API.
PLATFORMS: dict[str, dict[str, tuple[str, ...]]] = {
    "google-ads": {"file": ("gclid",), "api_only": ("gbraid", "wbraid")},
    "meta": {"file": ("fbclid",), "api_only": ()},
}
GOOGLE_COLUMNS = ["Google Click ID", "Conversion Name", "Conversion Time", "Conversion Value",
                  "Conversion Currency"]
META_COLUMNS = ["event_name", "event_time", "action_source", "event_id", "em", "ph", "fbc", "value",
                "currency"]
CONVERSIONS = ("closed_won", "opportunity", "lead")
_META_EVENTS = {"closed_won": "Purchase", "opportunity": "Lead", "lead": "Lead"}


@dataclass
class UploadSummary:
    """How many conversions, and how much value, could be sent to the platform."""

    platform: str
    conversion: str
    conversions: int = 0
    sendable: int = 0
    value_by_currency: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def to_text(self) -> str:
        """A few lines for the terminal."""
        value = ", ".join(f"{v:,.2f} {c}" for c, v in sorted(self.value_by_currency.items())) or "no value"
        lines = [f"{self.platform}: {self.sendable:,} of {self.conversions:,} {self.conversion} conversions "
                 f"can be sent ({value})"]
        lines += [f"- {n:,} {why}" for why, n in self.skipped.items() if n]
        return "\n".join(lines)


def meta_email_hash(email: str) -> str:
    """SHA-256 (hex) of an e-mail address normalised as Meta requires (trimmed, lower-case).

    Examples
    --------
    >>> meta_email_hash(" John_Smith@gmail.com")[:12]
    '62a14e44f765'
    """
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()


def meta_phone_hash(phone: str, country_code: str | None = None) -> str | None:
    """SHA-256 of a phone number normalised as Meta requires: digits only, with the country code.

    A number written internationally (``+44 ...`` or ``0044 ...``) keeps its own country code; a
    national one (``020 ...``, ``(650) 555-1212``) loses its leading zeros and gets ``country_code``
    in front. ``None`` when a national number has no country code to go with it.

    Examples
    --------
    >>> meta_phone_hash("(650)555-1212", country_code="1")[:12]
    'e323ec626319'
    """
    text = phone.strip()
    digits = re.sub(r"\D", "", text)
    if not digits:
        return None
    if text.startswith("+"):
        normalised = digits
    elif digits.startswith("00"):
        normalised = digits[2:]
    else:
        if not country_code:
            return None
        normalised = re.sub(r"\D", "", country_code) + digits.lstrip("0")
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def _conversions(tables: dict[str, pd.DataFrame], conversion: str) -> pd.DataFrame:
    """conversion id, person, time, value, currency."""
    if conversion == "lead":
        leads = tables.get("leads")
        if leads is None:
            raise ValueError("the lead conversion needs a leads table")
        return pd.DataFrame({"conversion_id": leads["person_id"].astype(str), "person_id": leads["person_id"],
                             "time": leads["created_at"], "value": np.nan, "currency": None})
    deals = tables.get("deals")
    if deals is None:
        raise ValueError(f"the {conversion} conversion needs a deals table")
    if conversion == "opportunity":
        d = deals
        time = d["created_at"]
    elif conversion == "closed_won":
        won = deals["won"].fillna(False).astype(bool)
        if "stage" in deals:
            won |= deals["stage"].eq("closed_won").fillna(False).astype(bool)
        d = deals.loc[won]
        time = d["closed_at"]
        hist = tables.get("stage_history")
        if hist is not None and len(hist):
            won = hist.loc[hist["stage"] == "closed_won"].set_index("deal_id")["entered_at"]
            time = time.fillna(d["deal_id"].map(won))
    else:
        raise ValueError(f"unknown conversion {conversion!r}; choose one of {', '.join(CONVERSIONS)}")
    return pd.DataFrame({"conversion_id": d["deal_id"].astype(str), "person_id": d["person_id"],
                         "time": time, "value": d["amount"],
                         "currency": d["currency"] if "currency" in d else None})


def _last_clicks(tables: dict[str, pd.DataFrame], conv: pd.DataFrame, kinds: tuple[str, ...],
                 lookback_days: float) -> pd.DataFrame:
    """The last touch with a click id of ``kinds`` in each conversion's lookback window."""
    touches = tables["touchpoints"]
    ident = tables.get("identities")
    with_click = touches["click_id"].notna() & touches["click_id_type"].astype(str).str.lower().isin(kinds)
    t = touches.loc[with_click, ["visitor_id", "timestamp", "click_id", "click_id_type"]]
    if ident is None or not len(t):
        return pd.DataFrame(columns=["conversion_id", "click_id", "click_id_type", "click_time"])
    # a visitor counts for the person it was first matched to (ties: smallest person id), as journeys do
    first = ident.sort_values(["matched_at", "person_id"], kind="stable").drop_duplicates("visitor_id")
    t = t.merge(first[["visitor_id", "person_id"]], on="visitor_id")
    m = conv.merge(t, on="person_id")
    window = (m["timestamp"] <= m["time"]) & (m["timestamp"] >= m["time"] - pd.Timedelta(days=lookback_days))
    m = m.loc[window].sort_values(["conversion_id", "timestamp"], kind="stable")
    last = m.drop_duplicates("conversion_id", keep="last")
    return last.rename(columns={"timestamp": "click_time"})[["conversion_id", "click_id", "click_id_type",
                                                            "click_time"]]


def _contacts(path: str | Path, id_column: str | None, hash_key: bytes | None) -> pd.DataFrame:
    """person key -> e-mail and phone of the CRM's contact export."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    lower = {c.lower().strip(): c for c in raw.columns}
    emails = ("email", "e-mail", "email address", "e-mail address")
    email = next((lower[c] for c in emails if c in lower), None)
    phone = next((lower[c] for c in ("phone", "phone number", "mobile", "mobile phone number", "telephone")
                  if c in lower), None)
    if email is None and id_column is None:
        raise ValueError(f"{path}: no e-mail column (Email, E-mail, Email Address) and no "
                         "--contact-id-column")
    frames = []
    if email is not None:
        frames.append(pd.DataFrame({"key": hash_identifiers(raw[email], "email", key=hash_key),
                                    "email": raw[email], "phone": raw[phone] if phone else None}))
    if id_column is not None:
        if id_column not in raw:
            raise ValueError(f"{path}: no column {id_column!r}; columns: {', '.join(raw.columns)}")
        frames.append(pd.DataFrame({"key": raw[id_column], "email": raw[email] if email else None,
                                    "phone": raw[phone] if phone else None}))
    out = pd.concat(frames, ignore_index=True).dropna(subset=["key"])
    return out.drop_duplicates("key")


def offline_conversions(tables: dict[str, pd.DataFrame], platform: str, conversion: str = "closed_won", *,
                        conversion_name: str | None = None, lookback_days: float = 90,
                        contacts: str | Path | None = None, contact_id_column: str | None = None,
                        country_code: str | None = None, timezone: str | None = None,
                        since: str | pd.Timestamp | None = None,
                        hash_key: bytes | None = None) -> tuple[pd.DataFrame, UploadSummary]:
    """The upload rows for ``platform`` and a summary of what could be sent.

    Parameters
    ----------
    tables
        Validated canonical tables (``touchpoints``, ``identities`` and ``deals`` or ``leads``).
    platform
        ``google-ads`` or ``meta``.
    conversion
        ``closed_won`` (won deals at their close time, valued at their amount), ``opportunity``
        (deals at creation) or ``lead``.
    conversion_name
        Google Ads: the conversion action's name as set up in the account (default: ``conversion``);
        Meta: the event name (default ``Purchase`` for won deals, ``Lead`` otherwise).
    lookback_days
        Only clicks this many days before the conversion count (Google's limit is 90).
    contacts, contact_id_column, country_code
        Meta only: the CRM's contact export with e-mail and phone columns, an optional column of it
        holding the person ids, and the country code of phone numbers written nationally.
    timezone
        Google Ads: write conversion times in this zone (with its offset); UTC by default.
    since
        Only conversions at or after this time (UTC unless it says otherwise): the platforms refuse
        old events (Meta's Conversions API takes events of the last 7 days, 62 for physical stores), so
        a regular export sends what is new since the last one.
    hash_key
        The project's HMAC key, to link contacts to people (from the environment when omitted).
    """
    if platform not in PLATFORMS:
        raise ValueError(f"unknown platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
    conv = _conversions(tables, conversion)
    summary = UploadSummary(platform, conversion, conversions=len(conv))
    no_time = conv["time"].isna()
    conv = conv.loc[~no_time]
    summary.skipped["without a conversion time"] = int(no_time.sum())
    if since is not None:
        start = pd.Timestamp(since)
        start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
        old = conv["time"] < start
        summary.skipped[f"before {start:%Y-%m-%d %H:%M} UTC (--since)"] = int(old.sum())
        conv = conv.loc[~old]
    kinds = PLATFORMS[platform]
    clicks = _last_clicks(tables, conv, kinds["file"] + kinds["api_only"], lookback_days)
    m = conv.merge(clicks, on="conversion_id", how="left")
    api_only = m["click_id_type"].isin(kinds["api_only"])
    summary.skipped[f"with only a {'/'.join(kinds['api_only'])} click (upload through the API)"] = int(
        api_only.sum()) if kinds["api_only"] else 0
    no_click = m["click_id"].isna()
    summary.skipped[f"without a {'/'.join(kinds['file'])} click in the {lookback_days:g} days before"] = int(
        no_click.sum())
    m = m.loc[~no_click & ~api_only].sort_values("time", kind="stable")
    if platform == "google-ads":
        when = m["time"].dt.tz_convert(timezone or "UTC")
        out = pd.DataFrame({"Google Click ID": m["click_id"].to_numpy(),
                            "Conversion Name": conversion_name or conversion,
                            "Conversion Time": when.dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy(),
                            "Conversion Value": m["value"].to_numpy(),
                            "Conversion Currency": m["currency"].to_numpy()})
        out.attrs["preamble"] = [f"Parameters:TimeZone={timezone or '+0000'}"]
    else:
        em = ph = pd.Series([None] * len(m), index=m.index, dtype=object)
        if contacts is not None:
            book = _contacts(contacts, contact_id_column, hash_key).set_index("key")
            email = m["person_id"].map(book["email"])
            phone = m["person_id"].map(book["phone"])
            em = email.map(lambda e: meta_email_hash(e) if isinstance(e, str) and e.strip() else None)
            ph = phone.map(lambda p: meta_phone_hash(p, country_code) if isinstance(p, str) else None)
            no_email = int(em.isna().sum())
            summary.skipped["without an e-mail in the contact file (sent with fbc only)"] = no_email
        epoch = pd.Timestamp(0, tz="UTC")
        click_ms = (m["click_time"] - epoch) // pd.Timedelta(milliseconds=1)
        out = pd.DataFrame({
            "event_name": conversion_name or _META_EVENTS[conversion],
            "event_time": ((m["time"] - epoch) // pd.Timedelta(seconds=1)).to_numpy(),
            "action_source": "system_generated",
            "event_id": m["conversion_id"].to_numpy(),
            "em": em.to_numpy(), "ph": ph.to_numpy(),
            "fbc": ("fb.1." + click_ms.astype(str) + "." + m["click_id"].astype(str)).to_numpy(),
            "value": m["value"].to_numpy(), "currency": m["currency"].to_numpy()})
    summary.sendable = len(out)
    preamble = out.attrs.get("preamble", [])
    out = out.reset_index(drop=True)
    out.attrs["preamble"] = preamble
    values = m.dropna(subset=["value"])
    by_currency = values.groupby(values["currency"].fillna("(no currency)"))["value"].sum()
    summary.value_by_currency = {str(c): float(v) for c, v in by_currency.items()}
    return out, summary


def write_upload(rows: pd.DataFrame, path: str | Path) -> Path:
    """Write upload rows as CSV (UTF-8, comma-separated): the ``Parameters`` line of a Google Ads file
    (``rows.attrs["preamble"]``) first, then the header and the rows."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        for line in rows.attrs.get("preamble", []):
            fh.write(line + "\n")
        rows.to_csv(fh, index=False, quoting=csv.QUOTE_MINIMAL, float_format="%.2f", lineterminator="\n")
    return path

"""What the marketing-side imports share: timestamps as exports write them, landing pages without
personal data, click ids found in URLs, and counting what was scrubbed.

Examples
--------
>>> scrub_url("https://acme.example/demo?email=ann%40example.com&utm_source=x&gclid=Cj0")
('https://acme.example/demo?utm_source=x&gclid=Cj0', 1)
>>> click_id_from_url("https://acme.example/?wbraid=WB1")
('wbraid', 'WB1')
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import pandas as pd

from closedloop_nb.errors import Problem
from closedloop_nb.privacy import mask_contact_details, mask_series

__all__ = ["CLICK_ID_PARAMS", "PERSONAL_PARAMS", "Scrubbed", "click_id_from_url", "parse_times", "scrub_url"]

#: Click-id query parameters, in the order a landing page's click id is looked for.
CLICK_ID_PARAMS: tuple[str, ...] = ("gclid", "gbraid", "wbraid", "dclid", "msclkid", "fbclid", "li_fat_id",
                                    "ttclid")
#: Query parameters that carry personal data by their name: dropped from landing pages.
PERSONAL_PARAMS: frozenset[str] = frozenset({
    "email", "e-mail", "e_mail", "mail", "emailaddress", "email_address", "phone", "tel", "telephone",
    "mobile", "phone_number", "name", "first_name", "last_name", "firstname", "lastname", "fname", "lname",
    "full_name", "fullname", "address", "street", "postcode", "zip", "zipcode", "dob", "birthday",
})


def scrub_url(url: str) -> tuple[str, int]:
    """``url`` with personal data removed from its query string, and how many details were removed.

    Parameters named like personal data (``email``, ``phone``, ``name``, ... see :data:`PERSONAL_PARAMS`)
    are dropped; e-mail addresses and phone numbers inside other values (or the path) are masked by
    :func:`closedloop_nb.privacy.mask_contact_details`. The fragment is dropped.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return mask_contact_details(url)
    removed = 0
    kept = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key.strip().lower() in PERSONAL_PARAMS:
            removed += 1
            continue
        value, n = mask_contact_details(value)
        removed += n
        kept.append((key, value))
    path, n = mask_contact_details(parts.path)
    removed += n
    query = urlencode(kept, safe="[]:/@") if kept else ""
    return urlunsplit((parts.scheme, parts.netloc, path, query, "")), removed


def click_id_from_url(url: str | None) -> tuple[str | None, str | None]:
    """The first click id (:data:`CLICK_ID_PARAMS`) in a URL's query string, as (type, value)."""
    if not isinstance(url, str) or "?" not in url:
        return None, None
    try:
        params = dict(parse_qsl(urlsplit(url).query))
    except ValueError:
        return None, None
    for name in CLICK_ID_PARAMS:
        if params.get(name):
            return name, params[name]
    return None, None


_UTC_TEXT = re.compile(r"\s*(UTC|GMT|Z)$", re.IGNORECASE)
_OFFSET = re.compile(r"[+-]\d{2}:?\d{2}$")


def parse_times(values: pd.Series, *, unit: str | None = None, timezone: str | None = None) -> pd.Series:
    """Timestamps as exports write them, to UTC; what cannot be read becomes NaT.

    Accepts integers (or digit strings) since the epoch in ``unit`` (``us`` for GA4's
    ``event_timestamp``, ``s``, ``ms``), text ending in ``UTC`` (``2024-01-01 00:00:00.123 UTC``, as
    BigQuery writes TIMESTAMP columns), ISO 8601 with an offset, and naive text in ``timezone``.
    """
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    present = values.notna() & (values.astype(str).str.strip() != "")
    if not present.any():
        return out
    text = values[present].astype(str).str.strip()
    digits = text.str.fullmatch(r"-?\d+(\.0+)?")
    if digits.any() and unit:
        nums = pd.to_numeric(text[digits].str.replace(r"\.0+$", "", regex=True), errors="coerce")
        out.loc[nums.index] = pd.to_datetime(nums.astype("int64"), unit=unit, utc=True)
    rest = text[~digits] if unit else text
    if len(rest):
        rest = rest.str.replace(_UTC_TEXT, "+00:00", regex=True)
        aware = rest.str.contains(_OFFSET)
        if aware.any():
            parsed = pd.to_datetime(rest[aware], utc=True, format="mixed", errors="coerce")
            out.loc[rest[aware].index] = parsed
        naive = rest[~aware]
        if len(naive) and timezone:
            parsed = pd.to_datetime(naive, format="mixed", errors="coerce")
            local = parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
            out.loc[naive.index] = local.dt.tz_convert("UTC")
    return out


class Scrubbed:
    """Counts of contact details scrubbed per column, turned into the import report's notes and problems."""

    def __init__(self, table: str, file: str):
        self.table, self.file = table, file
        self.counts: dict[str, int] = {}

    def column(self, df: pd.DataFrame, name: str) -> None:
        """Mask e-mail addresses and phone numbers in ``df[name]`` in place, counting them."""
        if name not in df or not df[name].notna().any():
            return
        masked, n = mask_series(df[name])
        df[name] = masked
        if n:
            self.counts[name] = self.counts.get(name, 0) + n

    def urls(self, df: pd.DataFrame, name: str) -> None:
        """Scrub personal data from the URLs in ``df[name]`` in place, counting it."""
        if name not in df or not df[name].notna().any():
            return
        values = df[name]
        uniq = values.dropna().astype(str).unique()
        lookup = {u: scrub_url(u) for u in uniq}
        present = values.notna()
        n = int(sum(lookup[v][1] for v in values[present].astype(str)))
        out = values.astype(object).copy()
        out[present] = values[present].astype(str).map(lambda u: lookup[u][0]).to_numpy()
        df[name] = out
        if n:
            self.counts[name] = self.counts.get(name, 0) + n

    def problems(self) -> list[Problem]:
        """One warning per scrubbed column, naming how many details were removed."""
        return [Problem(self.table, self.file, col, f"{n} e-mail address(es) / phone number(s) or personal "
                        "query parameter(s) removed at import (replaced by [email] / [phone] or dropped)",
                        "warning")
                for col, n in self.counts.items()]

    def notes(self) -> list[str]:
        """Sentences for the import report."""
        if not self.counts:
            return [f"{self.table}: no e-mail addresses or phone numbers found in free text"]
        parts = ", ".join(f"{col} {n}" for col, n in self.counts.items())
        return [f"{self.table}: personal data scrubbed at import ({parts})"]


def rows_of(mask: np.ndarray | pd.Series, rows: Iterable[int]) -> tuple[int, tuple[int, ...]]:
    """(count, first row numbers) of the rows where ``mask`` holds."""
    picked = [int(r) for r, m in zip(rows, np.asarray(mask, dtype=bool), strict=True) if m]
    return len(picked), tuple(picked[:10])

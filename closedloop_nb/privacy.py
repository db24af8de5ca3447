"""Keyed hashing of direct identifiers (e-mail, phone, name, IP address) at ingest.

The same person's e-mail hashes to the same value in every source, so people still join across the
web analytics export and the CRM, but the raw identifier never travels past the loader. The hash is an
HMAC-SHA256 under a secret key, so it cannot be reversed by hashing a list of known addresses without
the key.

The key comes from the environment variable ``CLOSEDLOOP_HASH_KEY`` or from a file named by
``CLOSEDLOOP_HASH_KEY_FILE`` (default ``~/.config/closedloop/hash_key``), never from notebook parameters,
so it stays out of the repository and out of executed reports.

Examples
--------
>>> import pandas as pd
>>> h = hash_identifiers(pd.Series([" Ann@Example.com", "ann@example.com"]), "email", key=b"k")
>>> h.iloc[0] == h.iloc[1]
True
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from pathlib import Path
from typing import Literal

import pandas as pd

__all__ = ["EMAIL_MARK", "KEY_ENV", "KEY_FILE_ENV", "PHONE_MARK", "MissingHashKeyError", "hash_identifiers",
           "load_hash_key", "mask_contact_details", "mask_series"]

KEY_ENV = "CLOSEDLOOP_HASH_KEY"
KEY_FILE_ENV = "CLOSEDLOOP_HASH_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/closedloop/hash_key")

IdentifierKind = Literal["email", "phone", "name", "ip", "id"]


class MissingHashKeyError(RuntimeError, ValueError):
    """No hashing key is configured but an input carries direct identifiers.

    Also a ``ValueError`` (a problem with the input's setup), so commands that refuse bad input with
    ``except ValueError`` print its message instead of a traceback.
    """


def load_hash_key() -> bytes:
    """The hashing key from the environment or the key file.

    Raises
    ------
    MissingHashKeyError
        When neither is set, with the two ways to set one.
    """
    value = os.environ.get(KEY_ENV)
    if value:
        return value.encode("utf-8")
    path = Path(os.environ.get(KEY_FILE_ENV, str(DEFAULT_KEY_FILE))).expanduser()
    if path.is_file():
        key = path.read_bytes().strip()
        if key:
            return key
    raise MissingHashKeyError(
        "This input has direct identifiers (e-mail, phone, name or IP) that must be hashed at ingest, "
        f"but no key is set. Set the environment variable {KEY_ENV}, or put a secret in {path} "
        f"(or a file named by {KEY_FILE_ENV}); keep it outside the repository and use the same key "
        "for every source you want to join. Example: python -c 'import secrets; "
        f"print(secrets.token_hex(32))' > {path}"
    )


_NON_DIGITS = re.compile(r"\D+")
_SPACES = re.compile(r"\s+")


def _normalise(values: pd.Series, kind: IdentifierKind) -> pd.Series:
    s = values.astype("string").str.strip()
    if kind == "email":
        return s.str.lower()
    if kind == "phone":
        return s.str.replace(_NON_DIGITS, "", regex=True)
    if kind == "name":
        return s.str.lower().str.replace(_SPACES, " ", regex=True)
    return s


def hash_identifiers(
    values: pd.Series, kind: IdentifierKind = "id", key: bytes | None = None, length: int = 32
) -> pd.Series:
    """Replace identifiers by keyed hashes (hex), after normalising them.

    Parameters
    ----------
    values
        The raw identifiers; missing and blank values stay missing.
    kind
        How to normalise first: ``email`` (trim, lower-case), ``phone`` (digits only), ``name``
        (lower-case, single spaces), ``ip`` or ``id`` (trim).
    key
        The HMAC key; :func:`load_hash_key` when omitted.
    length
        Hex characters kept (32 = 128 bits).

    Returns
    -------
    pandas.Series
        Strings of ``length`` hex characters, aligned with ``values``.
    """
    key = key if key is not None else load_hash_key()
    norm = _normalise(values, kind)
    norm = norm.mask(norm == "")
    codes, uniques = pd.factorize(norm, use_na_sentinel=True)
    hashed = [hmac.new(key, u.encode("utf-8"), hashlib.sha256).hexdigest()[:length] for u in uniques]
    out = pd.Series(pd.array([None] * len(values), dtype="string"), index=values.index, name=values.name)
    ok = codes >= 0
    if ok.any():
        out[ok] = pd.array(hashed, dtype="string")[codes[ok]]
    return out


#: Markers that replace contact details found inside free text (campaign names, query strings, ...).
EMAIL_MARK = "[email]"
PHONE_MARK = "[phone]"
_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# A phone number: an optional +, then 9-15 digits in groups split by spaces, dots, dashes or parentheses.
# ISO dates and times (2024-01-31, 2024-01-31 10:00) have fewer digits, and plain amounts have no separators
# of that kind between digit groups of phone lengths.
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d(?:[\d\s().-]{7,20})\d(?![\w.])")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _phone_like(match: re.Match[str]) -> bool:
    text = match.group(0)
    digits = sum(ch.isdigit() for ch in text)
    return 9 <= digits <= 15 and not _ISO_DATE.match(text)


def mask_contact_details(text: str) -> tuple[str, int]:
    """Replace e-mail addresses and phone numbers inside ``text`` by markers.

    Returns the masked text and how many details were replaced. Used at import (campaign names,
    keywords, landing-page query strings) and wherever data values reach a rendered page.

    Examples
    --------
    >>> mask_contact_details("spring-promo ann.lee@example.com call +44 20 7946 0958")
    ('spring-promo [email] call [phone]', 2)
    >>> mask_contact_details("2024-01-31 brand search")
    ('2024-01-31 brand search', 0)
    """
    text, n_email = _EMAIL.subn(EMAIL_MARK, text)
    n_phone = 0

    def phone(match: re.Match[str]) -> str:
        nonlocal n_phone
        if _phone_like(match):
            n_phone += 1
            return PHONE_MARK
        return match.group(0)

    text = _PHONE.sub(phone, text)
    return text, n_email + n_phone


def mask_series(values: pd.Series) -> tuple[pd.Series, int]:
    """:func:`mask_contact_details` over a text column (missing values stay missing); returns the count.

    Examples
    --------
    >>> masked, n = mask_series(pd.Series(["x@y.com", None, "Paid Search"]))
    >>> masked.tolist(), n
    (['[email]', nan, 'Paid Search'], 1)
    """
    present = values.notna()
    if not present.any():
        return values, 0
    texts = values[present].astype(str)
    pairs = [mask_contact_details(t) for t in texts.unique()]
    lookup = {t: p for t, p in zip(texts.unique(), pairs, strict=True)}
    changed = sum(lookup[t][1] for t in texts)
    out = values.copy().astype(object)
    out[present] = texts.map(lambda t: lookup[t][0]).to_numpy()
    return out, int(changed)

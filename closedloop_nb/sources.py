"""Loaders for multi-file CRM exports whose tables link to each other (Salesforce, HubSpot).

Thin wrappers over the importers of :mod:`closedloop_nb.imports` (``closedloop import salesforce``,
``closedloop import hubspot``) for callers who name each file: the exports are mapped, linked (which
person and which contacts a deal belongs to) and validated together, so unknown references and
refused values are counted like any other problem.

Examples
--------
::

    ds = load_hubspot("contacts.csv", "deals.csv", timezone="Europe/London")
    ds.report.summary
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from closedloop_nb.validation import Dataset, validate_tables

__all__ = ["load_hubspot", "load_salesforce"]


def load_salesforce(
    leads: str | Path,
    opportunities: str | Path | None = None,
    opportunity_history: str | Path | None = None,
    timezone: str | None = None,
    hash_key: bytes | None = None,
    *,
    contacts: str | Path | None = None,
    contact_roles: str | Path | None = None,
    encoding: str | None = None,
    config: dict[str, Any] | None = None,
) -> Dataset:
    """Load Salesforce Lead, Opportunity and OpportunityHistory exports as canonical tables.

    A thin wrapper over :mod:`closedloop_nb.imports.salesforce` (``closedloop import salesforce``):
    ids are written in their 18-character form, every opportunity is kept (a deal no lead, contact
    role or account reaches has an empty ``person_id``), and unknown stages follow IsClosed/IsWon.

    Parameters
    ----------
    leads, opportunities, opportunity_history, contacts, contact_roles
        Paths of the Lead, Opportunity, OpportunityHistory, Contact and OpportunityContactRole
        exports (CSV or Parquet) with Salesforce's field API names (any case) or labels as headers.
    timezone
        The org's time zone, for date-only fields such as ``CloseDate`` and naive timestamps.
    hash_key
        Key for hashing e-mail addresses; from the environment when omitted.
    encoding, config
        As for ``closedloop import``: e.g. ``cp1252``; ``{"stages": {...}, "date_format": "MDY"}``.
    """
    from closedloop_nb.imports._common import ImportOptions
    from closedloop_nb.imports.salesforce import read_objects

    named = {"Lead": leads, "Opportunity": opportunities, "OpportunityHistory": opportunity_history,
             "Contact": contacts, "OpportunityContactRole": contact_roles}
    options = ImportOptions.make(timezone=timezone, encoding=encoding, config=config)
    files = {k: Path(v) for k, v in named.items() if v is not None}
    imported = read_objects(files, options, hash_key=hash_key)
    return validate_tables(imported.frames, timezone=timezone, upstream=imported.problems)


def load_hubspot(
    contacts: str | Path,
    deals: str | Path | None = None,
    timezone: str | None = None,
    hash_key: bytes | None = None,
    *,
    encoding: str | None = None,
    config: dict[str, Any] | None = None,
) -> Dataset:
    """Load HubSpot contacts and deals exports as canonical tables.

    A thin wrapper over :mod:`closedloop_nb.imports.hubspot` (``closedloop import hubspot``): a
    deal's person is its first associated contact present in the contacts export, and every
    associated contact is a row of ``deal_contacts``.

    Parameters
    ----------
    contacts, deals
        Paths of the exports (CSV or Parquet) with HubSpot's column labels or internal names as headers.
    timezone
        The portal's time zone: HubSpot exports times without an offset.
    hash_key
        Key for hashing e-mail addresses; from the environment when omitted.
    encoding, config
        As for ``closedloop import``: e.g. ``{"decimal": ",", "stages": {...}}``.
    """
    from closedloop_nb.imports._common import ImportOptions
    from closedloop_nb.imports.hubspot import read_files

    options = ImportOptions.make(timezone=timezone, encoding=encoding, config=config)
    deals_path = Path(deals) if deals is not None else None
    imported = read_files(Path(contacts), deals_path, options, hash_key=hash_key)
    return validate_tables(imported.frames, timezone=timezone, upstream=imported.problems)

"""Loaders for multi-file CRM exports whose tables link to each other (Salesforce, HubSpot).

Each export file goes through its shipped column mapping (``closedloop_nb/mappings/``); what the
mappings cannot express — which person a deal belongs to — is joined here, then everything is
validated together, so orphan deals and unknown stages are counted like any other problem.

Examples
--------
::

    ds = load_hubspot("contacts.csv", "deals.csv", timezone="Europe/London")
    ds.report.summary
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from closedloop_nb.loaders import read_mapped
from closedloop_nb.validation import Dataset, validate_tables

__all__ = ["load_hubspot", "load_salesforce"]


def _link_people(deals: pd.DataFrame, people: pd.DataFrame, deal_key: str, people_key: str) -> pd.DataFrame:
    """Fill ``deals.person_id`` from ``people`` where ``deals[deal_key] == people[people_key]``."""
    link = people.dropna(subset=[people_key]).drop_duplicates(people_key).set_index(people_key)["person_id"]
    return deals.assign(person_id=deals[deal_key].map(link))


def load_salesforce(
    leads: str | Path,
    opportunities: str | Path | None = None,
    opportunity_history: str | Path | None = None,
    timezone: str | None = None,
    hash_key: bytes | None = None,
) -> Dataset:
    """Load Salesforce Lead, Opportunity and OpportunityHistory exports as canonical tables.

    A deal's person is the lead converted into it (``Lead.ConvertedOpportunityId``); opportunities
    no lead converted into are reported as ``person_id`` missing, not dropped silently.

    Parameters
    ----------
    leads, opportunities, opportunity_history
        Paths of the exports (CSV or Parquet) with Salesforce's field API names as headers.
    timezone
        The org's time zone, for date-only fields such as ``CloseDate``.
    hash_key
        Key for hashing e-mail addresses; from the environment when omitted.
    """
    frames, problems = {}, []
    lead_df, found = read_mapped(leads, "leads", "salesforce_lead", hash_key=hash_key)
    problems += found
    frames["leads"] = lead_df.drop(columns=["converted_opportunity_id"])
    if opportunities is not None:
        opp, found = read_mapped(opportunities, "deals", "salesforce_opportunity", hash_key=hash_key)
        problems += found
        frames["deals"] = _link_people(opp, lead_df, "deal_id", "converted_opportunity_id")
    if opportunity_history is not None:
        frames["stage_history"], found = read_mapped(
            opportunity_history, "stage_history", "salesforce_opportunity_history", hash_key=hash_key)
        problems += found
    return validate_tables(frames, timezone=timezone, upstream=problems)


def load_hubspot(
    contacts: str | Path,
    deals: str | Path | None = None,
    timezone: str | None = None,
    hash_key: bytes | None = None,
) -> Dataset:
    """Load HubSpot contacts and deals exports as canonical tables.

    A deal's person is its first associated contact (``Associated Contact IDs``, ``;``-separated).

    Parameters
    ----------
    contacts, deals
        Paths of the exports (CSV or Parquet) with HubSpot's column labels as headers.
    timezone
        The portal's time zone: HubSpot exports times without an offset.
    hash_key
        Key for hashing e-mail addresses; from the environment when omitted.
    """
    frames, problems = {}, []
    people, found = read_mapped(contacts, "leads", "hubspot_contacts", hash_key=hash_key)
    problems += found
    frames["leads"] = people.drop(columns=["contact_record_id"])
    if deals is not None:
        deal_df, found = read_mapped(deals, "deals", "hubspot_deals", hash_key=hash_key)
        problems += found
        first_contact = deal_df["associated_contact_ids"].astype("string").str.split(";").str[0].str.strip()
        deal_df = deal_df.assign(first_contact=first_contact)
        linked = _link_people(deal_df, people, "first_contact", "contact_record_id")
        frames["deals"] = linked.drop(columns=["associated_contact_ids", "first_contact"])
    return validate_tables(frames, timezone=timezone, upstream=problems)

"""The canonical data model: every table, column, dtype, key and meaning, defined once.

Everything else in closedloop-nb reads and writes these tables. A user's own exports are mapped onto
them by :mod:`closedloop_nb.loaders`; :mod:`closedloop_nb.validation` checks them.

Tables
------
touchpoints
    One row per marketing touch of an (anonymous) visitor: a session, an ad click, a call, a chat,
    a form fill, an e-mail click.
identities
    Links an anonymous ``visitor_id`` (a browser/device cookie) to a ``person_id`` once the visitor
    identifies themself (form fill, chat, call, login) or a CRM import links them.
leads
    One row per person known to the CRM, with lifecycle dates (lead, MQL, SQL).
deals
    One row per opportunity, with amount and outcome.
stage_history
    One row per stage a deal entered (opportunity, proposal, closed_won, closed_lost).
orders
    One row per order, for repeat-purchase businesses.
subscriptions
    One row per MRR movement of a subscription customer (ChartMogul style).
spend
    Marketing cost per day, channel and campaign.
deal_contacts
    The buying committee: every contact of a deal with their role (Salesforce contact roles, HubSpot
    associated contacts).
fx_rates
    Exchange rates to the reporting currency, daily or monthly (see :mod:`closedloop_nb.money`).

Conventions
-----------
* Timestamps are timezone-aware UTC (``datetime64[us, UTC]``); naive times are refused unless the
  caller says which time zone they are in.
* Money columns are floats in the currency named by the row's ``currency`` column, an ISO 4217 code
  (:data:`CURRENCY_COLUMNS` lists them); two currencies are never added together (see
  :mod:`closedloop_nb.money`).
* ``person_id`` is the join key across sources: when derived from an e-mail address it is a keyed
  hash of that address (see :mod:`closedloop_nb.privacy`), so no raw identifier travels further.
* ``customer_id`` in ``orders`` and ``subscriptions`` is the ``person_id`` of the buyer (or the
  account id where billing is per account).
* Row numbers in error messages are 1-based data rows of the source file, header excluded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pandas is imported where a frame is built: the command line reads the schema
    import pandas as pd

__all__ = [
    "CHURN_MOVEMENTS",
    "CURRENCY_COLUMNS",
    "DEAL_STAGES",
    "FX_COLUMNS",
    "IDENTITY_METHODS",
    "INTERACTION_TYPES",
    "LEAD_STAGES",
    "MRR_MOVEMENTS",
    "PIPELINE_STAGES",
    "TABLES",
    "Column",
    "ForeignKey",
    "TableSpec",
    "describe",
    "empty_frame",
    "table_spec",
]

DType = Literal["string", "timestamp", "date", "float", "int", "bool"]

#: Lifecycle stages of a lead, in order (dates live in the ``leads`` table).
LEAD_STAGES: tuple[str, ...] = ("lead", "mql", "sql")
#: Stages a deal can enter, as recorded in ``stage_history`` and ``deals.stage``.
DEAL_STAGES: tuple[str, ...] = ("opportunity", "proposal", "closed_won", "closed_lost")
#: The whole closed-loop funnel in order, from lead creation to a won deal.
PIPELINE_STAGES: tuple[str, ...] = ("lead", "mql", "sql", "opportunity", "proposal", "closed_won")
#: Kinds of touch in ``touchpoints.interaction_type``.
INTERACTION_TYPES: tuple[str, ...] = (
    "session",
    "ad_click",
    "call",
    "chat",
    "form",
    "email_click",
    "offline",
)
#: How a visitor was matched to a person in ``identities.method``.
IDENTITY_METHODS: tuple[str, ...] = ("form", "chat", "call", "login", "crm_import")
#: MRR movement types in ``subscriptions.movement`` (ChartMogul's names).
MRR_MOVEMENTS: tuple[str, ...] = ("new", "expansion", "contraction", "churn", "reactivation")
#: Movements that lower MRR.
CHURN_MOVEMENTS: tuple[str, ...] = ("contraction", "churn")


@dataclass(frozen=True)
class Column:
    """One column of a canonical table.

    Parameters
    ----------
    name
        Column name.
    dtype
        Logical type: ``string``, ``timestamp`` (UTC), ``date``, ``float``, ``int`` or ``bool``.
    description
        What the column means.
    required
        Whether an input must provide it (optional columns are added, empty, when missing).
    nullable
        Whether empty values are allowed.
    allowed
        The only values allowed, if the column is an enumeration.
    non_negative
        Whether negative numbers are invalid.
    """

    name: str
    dtype: DType
    description: str
    required: bool = True
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    non_negative: bool = False


@dataclass(frozen=True)
class ForeignKey:
    """``column`` of this table refers to ``ref_column`` of ``ref_table``.

    ``reject`` says whether rows whose value is unknown there are unusable (rejected and counted) or
    only reported as a warning (kept: e.g. identities of visitors whose touches are out of range).
    """

    column: str
    ref_table: str
    ref_column: str
    reject: bool = True


@dataclass(frozen=True)
class TableSpec:
    """The contract of one canonical table: its columns, key and references."""

    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    value_column: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def names(self) -> list[str]:
        """Column names in canonical order."""
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        """Names of the columns an input must provide."""
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        """The :class:`Column` called ``name``."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}; columns: {self.names}")

    def __repr__(self) -> str:
        key = ", ".join(self.key) or "none"
        return f"<TableSpec {self.name}: {len(self.columns)} columns, key ({key})>"


def _c(name: str, dtype: DType, description: str, **kw: object) -> Column:
    return Column(name, dtype, description, **kw)  # type: ignore[arg-type]


_OPT = {"required": False, "nullable": True}

TABLES: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "touchpoints",
            "One row per marketing touch of a visitor (session, ad click, call, chat, form, email).",
            (
                _c("touch_id", "string", "Unique id of the touch; generated from the row when absent.",
                   required=False),
                _c("visitor_id", "string", "Anonymous visitor (cookie/device) id, e.g. GA4 user_pseudo_id."),
                _c("timestamp", "timestamp", "When the touch happened, UTC."),
                _c("source", "string", "Traffic source, e.g. google, (direct), newsletter."),
                _c("medium", "string", "Traffic medium, e.g. cpc, organic, email, (none)."),
                _c("campaign", "string", "Campaign name (utm_campaign).", **_OPT),
                _c("keyword", "string", "Search keyword or ad term (utm_term).", **_OPT),
                _c("ad_group", "string", "Ad group (ad set) of a paid click, e.g. from the Google Ads click "
                   "report joined by gclid.", **_OPT),
                _c("landing_page", "string", "Landing page path or URL.", **_OPT),
                _c("interaction_type", "string", "Kind of touch.", required=False, nullable=True,
                   allowed=INTERACTION_TYPES),
                _c("click_id", "string", "Ad click id (gclid, msclkid, fbclid value), if any.", **_OPT),
                _c("click_id_type", "string", "Which click id: gclid, msclkid, fbclid, ...", **_OPT),
                _c("channel", "string", "Channel group (GA4 default rules unless overridden); filled "
                   "by closedloop_nb.channels when absent.", **_OPT),
            ),
            key=("touch_id",),
        ),
        TableSpec(
            "identities",
            "Links an anonymous visitor id to a person once they identify themselves.",
            (
                _c("visitor_id", "string", "Anonymous visitor id, as in touchpoints."),
                _c("person_id", "string", "Person id, as in leads."),
                _c("matched_at", "timestamp", "When the match was made, UTC."),
                _c("method", "string", "How: form, chat, call, login or crm_import.",
                   allowed=IDENTITY_METHODS),
            ),
            key=("visitor_id", "person_id"),
            foreign_keys=(
                ForeignKey("visitor_id", "touchpoints", "visitor_id", reject=False),
                ForeignKey("person_id", "leads", "person_id", reject=False),
            ),
        ),
        TableSpec(
            "leads",
            "One row per person known to the CRM, with lifecycle dates.",
            (
                _c("person_id", "string", "Person id (keyed hash of the e-mail when derived from it)."),
                _c("created_at", "timestamp", "When the lead was created, UTC."),
                _c("lead_source", "string", "The CRM's own lead-source field, as recorded.", **_OPT),
                _c("mql_at", "timestamp", "When the lead became marketing-qualified, UTC.", **_OPT),
                _c("sql_at", "timestamp", "When the lead became sales-qualified, UTC.", **_OPT),
                _c("segment", "string", "Business segment, e.g. SMB, Mid-Market, Enterprise.", **_OPT),
                _c("account_id", "string", "The account (company) the person belongs to, as in "
                   "deals.account_id: a buying committee by account (journeys with unit='account') is "
                   "everyone with the deal's account_id. CRM imports fill it where the export carries it "
                   "(Salesforce Contact.AccountId / Lead.ConvertedAccountId, HubSpot's associated company, "
                   "Pipedrive's organization).", **_OPT),
            ),
            key=("person_id",),
        ),
        TableSpec(
            "deals",
            "One row per opportunity (deal), with amount and outcome.",
            (
                _c("deal_id", "string", "Deal / opportunity id."),
                _c("person_id", "string", "The person the deal came from (as in leads); empty when the "
                   "deal reaches nobody: kept, counted in revenue, credited to (no touches).", **_OPT),
                _c("account_id", "string", "Account / company id.", **_OPT),
                _c("created_at", "timestamp", "When the opportunity was created, UTC."),
                _c("amount", "float", "Deal value (for subscriptions: first-year contract value).",
                   nullable=True, non_negative=True),
                _c("currency", "string", "ISO 4217 currency code.", required=False, nullable=True),
                _c("stage", "string", "Current stage.", required=False, nullable=True,
                   allowed=DEAL_STAGES),
                _c("closed_at", "timestamp", "When the deal was closed, UTC; empty while open.", **_OPT),
                _c("won", "bool", "True if closed won, False if closed lost, empty while open.", **_OPT),
            ),
            key=("deal_id",),
            foreign_keys=(ForeignKey("person_id", "leads", "person_id"),),
            value_column="amount",
        ),
        TableSpec(
            "stage_history",
            "One row per pipeline stage a deal entered.",
            (
                _c("deal_id", "string", "Deal id, as in deals."),
                _c("stage", "string", "Stage entered.", allowed=DEAL_STAGES),
                _c("entered_at", "timestamp", "When the deal entered the stage, UTC."),
                _c("amount", "float", "Deal amount at that time, in the deal's currency.", required=False,
                   nullable=True, non_negative=True),
            ),
            key=("deal_id", "stage"),
            foreign_keys=(ForeignKey("deal_id", "deals", "deal_id"),),
        ),
        TableSpec(
            "orders",
            "One row per order, for repeat-purchase businesses.",
            (
                _c("order_id", "string", "Order id; generated from the row when absent.",
                   required=False),
                _c("customer_id", "string", "Buyer (a person_id or account id)."),
                _c("timestamp", "timestamp", "When the order was placed, UTC."),
                _c("amount", "float", "Order value.", non_negative=True),
                _c("currency", "string", "ISO 4217 currency code.", required=False, nullable=True),
            ),
            key=("order_id",),
            value_column="amount",
        ),
        TableSpec(
            "subscriptions",
            "One row per MRR movement of a subscription customer (ChartMogul style).",
            (
                _c("customer_id", "string", "Subscriber (a person_id or account id)."),
                _c("month", "date", "Month of the movement (first day of the month)."),
                _c("movement", "string", "new, expansion, contraction, churn or reactivation.",
                   allowed=MRR_MOVEMENTS),
                _c("mrr_delta", "float", "Change in MRR (negative for contraction and churn)."),
                _c("mrr", "float", "MRR after the movement.", non_negative=True),
                _c("currency", "string", "ISO 4217 currency code.", required=False, nullable=True),
            ),
            value_column="mrr_delta",
            notes=("No key: a customer can have two movements of one type in a month.",),
        ),
        TableSpec(
            "spend",
            "Marketing cost per day, channel and campaign.",
            (
                _c("date", "date", "Day the cost was incurred."),
                _c("channel", "string", "Channel group, as in touchpoints.channel."),
                _c("campaign", "string", "Campaign name, as in touchpoints.campaign.", **_OPT),
                _c("cost", "float", "Money spent that day on the channel and campaign.", non_negative=True),
                _c("currency", "string", "ISO 4217 currency code.", required=False, nullable=True),
                # ad platform imports (closedloop import google-ads | meta-ads | microsoft-ads | linkedin-ads)
                _c("ad_group", "string", "Ad group (Meta: ad set) the cost belongs to, where the export "
                   "has one.", **_OPT),
                _c("campaign_id", "string", "The ad platform's campaign id.", **_OPT),
                _c("impressions", "int", "Impressions that day.", **_OPT, non_negative=True),
                _c("clicks", "int", "Clicks that day.", **_OPT, non_negative=True),
                _c("platform", "string", "Ad platform the row was imported from (google-ads, meta-ads, ...).",
                   **_OPT),
            ),
            key=("date", "channel", "campaign", "ad_group"),
            value_column="cost",
        ),
        TableSpec(
            "deal_contacts",
            "The buying committee: one row per contact of a deal (contact roles, associated contacts).",
            (
                _c("deal_id", "string", "Deal id, as in deals."),
                _c("person_id", "string", "A contact of the deal, as in leads."),
                _c("role", "string", "The contact's role on the deal (e.g. Decision Maker), if recorded.",
                   **_OPT),
                _c("is_primary", "bool", "Whether the CRM marks this contact as the deal's primary one.",
                   **_OPT),
            ),
            key=("deal_id", "person_id"),
            foreign_keys=(
                ForeignKey("deal_id", "deals", "deal_id"),
                ForeignKey("person_id", "leads", "person_id"),
            ),
            notes=("deals.person_id stays the deal's primary person; journeys over the committee use "
                   "the union of it and these rows.",),
        ),
        TableSpec(
            "fx_rates",
            "Exchange rates to the reporting currency: one row per date and currency (daily or monthly).",
            (
                _c("date", "date", "Day the rate applies to (monthly rates: the first day of the month)."),
                _c("currency", "string", "ISO 4217 code of the currency converted from."),
                _c("rate", "float", "Units of the reporting currency one unit of ``currency`` buys.",
                   non_negative=True),
                _c("to_currency", "string", "ISO 4217 code of the reporting currency the rate converts to "
                   "(one file can then hold rates to several); empty: to whichever is asked.", **_OPT),
            ),
            key=("date", "currency", "to_currency"),
            notes=("The reporting currency itself needs no row (its rate is 1).",
                   "With a reporting currency, the run workspace converts every money column at the row's "
                   "date and adds the columns of :data:`FX_COLUMNS` (closedloop_nb.ingest.convert_money).",),
        ),
    )
}

#: Columns a conversion to a reporting currency adds to a money table (``original_<c>`` per money column
#: ``c``: ``deals``/``orders`` ``amount``, ``subscriptions`` ``mrr_delta`` and ``mrr``, ``spend`` ``cost``,
#: ``stage_history`` ``amount``); the money columns themselves are then in the reporting currency.
FX_COLUMNS: dict[str, str] = {
    "original_<c>": "The money column ``c`` as recorded, in ``original_currency``.",
    "original_currency": "The currency the row was recorded in (stage_history: its deal's).",
    "fx_rate": "The rate used: units of the reporting currency per unit of ``original_currency`` (1 for "
               "rows already in it; empty for a row without money).",
}

#: Columns holding an ISO 4217 currency code, per table (checked by validation).
CURRENCY_COLUMNS: dict[str, str] = {
    name: "currency" for name, spec in TABLES.items() if "currency" in spec.names
}


def table_spec(name: str) -> TableSpec:
    """The :class:`TableSpec` of canonical table ``name``.

    Examples
    --------
    >>> table_spec("deals").key
    ('deal_id',)
    """
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r}; the canonical tables are: {', '.join(TABLES)}") from None


_PANDAS_DTYPES: dict[str, str] = {
    "string": "string",
    "timestamp": "datetime64[us, UTC]",
    "date": "datetime64[s]",
    "float": "float64",
    "int": "Int64",
    "bool": "boolean",
}


def pandas_dtype(dtype: DType) -> str:
    """The pandas dtype used in memory for a logical column type."""
    return _PANDAS_DTYPES[dtype]


def empty_frame(name: str) -> pd.DataFrame:
    """An empty DataFrame with the columns and dtypes of canonical table ``name``."""
    import pandas as pd

    spec = table_spec(name)
    return pd.DataFrame({c.name: pd.Series(dtype=pandas_dtype(c.dtype)) for c in spec.columns})


def describe(name: str | None = None) -> pd.DataFrame:
    """The data model as a tidy table: one row per (table, column).

    Examples
    --------
    >>> describe("spend").column.tolist()[:5]
    ['date', 'channel', 'campaign', 'cost', 'currency']
    """
    import pandas as pd

    names = [name] if name else list(TABLES)
    rows = []
    for t in names:
        spec = table_spec(t)
        for c in spec.columns:
            rows.append(
                {
                    "table": t,
                    "column": c.name,
                    "dtype": c.dtype,
                    "required": c.required,
                    "nullable": c.nullable,
                    "key": c.name in spec.key,
                    "allowed": ", ".join(c.allowed) if c.allowed else "",
                    "description": c.description,
                }
            )
    return pd.DataFrame(rows)

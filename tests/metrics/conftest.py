"""A closed loop small enough to work out by hand.

=======  ======================================  =============================================
person   touches (2024)                          lead / deal
=======  ======================================  =============================================
A        Email Jan 1, Paid Search Jan 3          lead Jan 4; d1 created Jan 10 at 1000, proposal
                                                 Jan 20 at 1200, won Feb 15 at 1200
B        Paid Search Jan 5                       lead Jan 6; d2 created Feb 2 at 500, lost Mar 1
C        none                                    lead Jan 7; d3 created Jan 8 at 300, won Jan 30
                                                 (no proposal recorded)
=======  ======================================  =============================================

Spend: Paid Search 100 in January and 100 in February; Display 50 in January (spend, no revenue).
Subscriptions: A new 100 in Feb, +20 in Mar; C new 50 in Feb, churned in Apr.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import duckdb
import pandas as pd
import pytest

from closedloop_nb.journeys import build_journeys
from closedloop_nb.validation import validate_tables


def ts(day: str) -> str:
    return f"2024-{day}T12:00:00Z"


def hand_tables() -> dict[str, pd.DataFrame]:
    touches = pd.DataFrame({
        "visitor_id": ["a", "a", "b"], "timestamp": [ts("01-01"), ts("01-03"), ts("01-05")],
        "source": ["newsletter", "google", "google"], "medium": ["email", "cpc", "cpc"]})
    ident = pd.DataFrame({"visitor_id": ["a", "b"], "person_id": ["A", "B"],
                          "matched_at": [ts("01-04"), ts("01-06")], "method": ["form", "form"]})
    leads = pd.DataFrame({"person_id": ["A", "B", "C"], "created_at": [ts("01-04"), ts("01-06"), ts("01-07")],
                          "mql_at": [ts("01-05"), ts("02-01"), None], "sql_at": [ts("01-08"), None, None],
                          "segment": ["SMB", "SMB", "Enterprise"]})
    deals = pd.DataFrame({
        "deal_id": ["d1", "d2", "d3"], "person_id": ["A", "B", "C"],
        "created_at": [ts("01-10"), ts("02-02"), ts("01-08")], "amount": [1200.0, 500.0, 300.0],
        "stage": ["closed_won", "closed_lost", "closed_won"],
        "closed_at": [ts("02-15"), ts("03-01"), ts("01-30")], "won": [True, False, True]})
    history = pd.DataFrame({
        "deal_id": ["d1", "d1", "d1", "d2", "d2", "d3", "d3"],
        "stage": ["opportunity", "proposal", "closed_won", "opportunity", "closed_lost", "opportunity",
                  "closed_won"],
        "entered_at": [ts("01-10"), ts("01-20"), ts("02-15"), ts("02-02"), ts("03-01"), ts("01-08"),
                       ts("01-30")],
        "amount": [1000.0, 1200.0, 1200.0, 500.0, 500.0, 300.0, 300.0]})
    spend = pd.DataFrame({"date": ["2024-01-15", "2024-02-15", "2024-01-20"],
                          "channel": ["Paid Search", "Paid Search", "Display"],
                          "campaign": ["brand", "brand", "banners"], "cost": [100.0, 100.0, 50.0]})
    subs = pd.DataFrame({"customer_id": ["A", "C", "A", "C"],
                         "month": ["2024-02-01", "2024-02-01", "2024-03-01", "2024-04-01"],
                         "movement": ["new", "new", "expansion", "churn"],
                         "mrr_delta": [100.0, 50.0, 20.0, -50.0], "mrr": [100.0, 50.0, 120.0, 0.0]})
    ds = validate_tables({"touchpoints": touches, "identities": ident, "leads": leads, "deals": deals,
                          "stage_history": history, "spend": spend, "subscriptions": subs})
    assert ds.report.ok, ds.report.problems
    return ds.tables


@pytest.fixture(scope="module")
def hand() -> dict[str, pd.DataFrame]:
    return hand_tables()


class StandInWorkspace(Mapping):
    """A stand-in for the run workspace (``closedloop_nb.workspace``, being built in another branch),
    with the contract the metrics rely on: ``con`` (DuckDB, every table a relation named as in the
    schema), ``journeys(conversion, lookback_days, level, **options)`` built once per argument set,
    and a read-only Mapping of the tables as pandas. ``relation="relation"`` or ``"pandas"`` wraps the
    journeys so that they give their touches only as a DuckDB relation, or only as pandas. Reading a
    table listed in ``forbid`` as pandas fails, so a test can tell that no metric pulled it (the
    touchpoints, at scale)."""

    def __init__(self, tables: dict[str, pd.DataFrame], forbid: tuple[str, ...] = ("touchpoints",),
                 relation: str | None = None) -> None:
        self._tables, self._forbid, self._relation = dict(tables), forbid, relation
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        for name, frame in self._tables.items():
            self.con.register(name, frame)
        self.builds: list[tuple] = []
        self._journeys: dict[tuple, Any] = {}

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name in self._forbid:
            raise AssertionError(f"the {name} table was read into pandas")
        return self._tables[name]

    def __contains__(self, name: object) -> bool:
        return name in self._tables

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def journeys(self, conversion: str = "lead", lookback_days: int = 90, level: str = "channel",
                 **options: Any) -> Any:
        key = (conversion, lookback_days, level, tuple(sorted(options.items())))
        if key not in self._journeys:
            self.builds.append(key)
            built = build_journeys(self._tables, conversion=conversion, lookback_days=lookback_days,
                                   level=level, progress=False, **options)
            wrap = {"relation": RelationJourneys, "pandas": PandasJourneys}.get(self._relation or "")
            self._journeys[key] = wrap(built) if wrap else built
        return self._journeys[key]


class RelationJourneys:
    """Journeys that hand out their touches only as a DuckDB relation (``touches_relation()``), the
    interface the metrics would like the journey engine to offer."""

    def __init__(self, journeys: Any) -> None:
        self._built = journeys
        self.paths, self.reconciliation = journeys.paths, journeys.reconciliation

    def path_table(self) -> Any:
        return self._built.path_table()

    def touches_relation(self) -> Any:
        return self._built._engine.con.table("journey_touches")


class PandasJourneys(RelationJourneys):
    """Journeys whose touches come as pandas only (as a Spark build's do)."""

    touches_relation = None

    @property
    def touches(self) -> pd.DataFrame:
        return self._built.touches


@pytest.fixture
def workspace():
    """Make a :class:`StandInWorkspace` of some tables."""
    return StandInWorkspace

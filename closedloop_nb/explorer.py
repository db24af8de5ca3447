"""The interactive explorer: switch conversion, model, lookback, level or segment and see the answer move.

Two layers:

* :func:`compute` (pure): :class:`Settings` in, :class:`Views` out, every view a tidy DataFrame made by
  the package's own functions (:func:`~closedloop_nb.attribution.compare.compare_models`,
  :func:`~closedloop_nb.attribution.compare.rank_flips`, :func:`~closedloop_nb.metrics.deal_credits`,
  :func:`~closedloop_nb.metrics.channel_performance`), so what the explorer shows is what a notebook
  computes. Journeys and deal credits are cached per setting in a :class:`Cache`.
* :class:`Explorer` (thin): ipywidgets controls that build a :class:`Settings`, call :func:`compute`
  and draw the views; bootstrap intervals run in a background thread with a progress bar (the controls
  stay live), and "save as run" writes a parameter file for ``closedloop report``. A change computes
  the views in sight: pipeline & ROI and the drill-down when their tab is shown (``compute(...,
  lazy=True)``).

:func:`explore` returns the widget app in an interactive kernel and the static :class:`Views` (plain
tables and PNG charts, rendered by ``_repr_html_``) in papermill or nbconvert batch runs, so exported
HTML never shows a widget placeholder.

Data: a folder of canonical tables (loaded with :func:`closedloop_nb.load_dataset`), a dict of
validated tables, or a run workspace (a mapping of tables with ``.con`` and ``.journeys(...)``, whose
cached journeys are used when no date range or segment narrows the data).

Date range and segment narrow the people: a date range keeps the people whose lead was created in it
(their deals, touches and orders) and anonymous visitors' touches in it; a segment keeps the people of
that segment (``leads.segment``) and every anonymous visitor.

Examples
--------
>>> from closedloop_nb.synth import generate
>>> from closedloop_nb.validation import validate_tables
>>> tables = validate_tables(generate(1_500, seed=3).frames()).tables
>>> views = compute(tables, Settings(models=("first_touch", "last_touch")))
>>> sorted(views.credit["model"].unique())
['first_touch', 'last_touch']
>>> bool(abs(views.credit.groupby("model")["share"].sum() - 1).max() < 1e-9)
True
"""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["LEVELS", "MODEL_CHOICES", "Cache", "Explorer", "Settings", "Views", "batch_parent",
           "bootstrap_intervals", "compute", "explore", "is_interactive", "save_run"]

#: Levels a step can be named at (``source_medium`` is ``source / medium``, as GA4 shows it).
LEVELS = ("channel", "campaign", "source_medium", "keyword")
#: Conversions offered (journey_sql's names).
CONVERSIONS = ("lead", "mql", "sql", "opportunity", "closed_won", "order")
#: Models offered: every path-table model (``closedloop_nb.attribution.MODELS``) and time decay
#: (journey-table model, uses ``half_life_days``).
MODEL_CHOICES = ("first_touch", "last_touch", "last_non_direct", "linear", "position_based", "j_shaped",
                 "inverse_j_shaped", "markov", "shapley", "shapley_model", "simplified_shapley",
                 "shapley_adjusted", "time_decay")
TOP_PATHS = 15
#: DuckDB memory limit of the journey builds the explorer makes itself (segments, date ranges, tables).
JOURNEY_MEMORY = "1GB"
#: The longest lookback the control offers: each conversion's journeys are built once at it (and with
#: direct touches and repeats kept, every level's step on each touch), and every setting is derived
#: from that wide build in SQL (:mod:`closedloop_nb.journey_derive`) instead of built again.
LOOKBACK_MAX = 365
#: Journeys kept per session (the most recently used; a redraw uses up to three: the conversion's,
#: the deals' and the leads'): at 10M touchpoints each holds ~0.5M converting touches in DuckDB and a
#: path table of up to a million paths, so a session trying many settings would grow past 3 GiB
KEEP_JOURNEYS = 9
#: The tab of the app holding pipeline, revenue and the ROI chart (computed and drawn when shown)
ROI_TAB = 2
#: The tab of the drill-down (computed and drawn when shown; choosing a channel shows it)
DRILL_TAB = 4
#: What a lazy tab says until it is shown for the current setting
LATER = "<p>Drawn when this tab is shown.</p>"


@dataclass(frozen=True)
class Settings:
    """One setting of the explorer's controls (hashable: the cache key)."""

    conversion: str = "lead"
    models: tuple[str, ...] = ("first_touch", "last_touch", "linear", "markov", "shapley")
    lookback_days: int = 90
    half_life_days: float = 7.0
    level: str = "channel"
    date_from: str | None = None
    date_to: str | None = None
    segment: str | None = None
    drop_direct: bool = False
    collapse_repeats: bool = False
    channel: str | None = None  # the drill-down
    n_boot: int = 100

    def journey_key(self) -> tuple:
        return (self.conversion, self.lookback_days, self.level, self.date_from, self.date_to,
                self.segment, self.drop_direct, self.collapse_repeats)

    @property
    def primary_model(self) -> str:
        """The model credited in pipeline, revenue, ROI and the drill-down (the first one chosen)."""
        return self.models[0] if self.models else "linear"


@dataclass
class Views:
    """What the explorer shows for one :class:`Settings`: tidy tables, and charts drawn from them.

    ``performance`` and ``drill`` may be computed when first read (``later`` holds how: the app asks
    for them when their tab is shown, so a control change pays only for the views in sight); copies
    made with :func:`dataclasses.replace` share what either computes."""

    settings: Settings
    credit: pd.DataFrame  # model, channel, conversions, value, share, rank (+ lower/upper when bootstrapped)
    flips: pd.DataFrame  # rank_flips of credit
    paths: pd.DataFrame  # top converting paths
    reconciliation: pd.DataFrame
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    currency: str = ""  # ISO code of the money in ``performance`` ("" when unknown)
    #: the views not computed yet (name -> function giving it) and those computed, shared by copies
    later: dict[str, Callable[[], pd.DataFrame]] = field(default_factory=dict, repr=False)
    done: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def _part(self, name: str) -> pd.DataFrame:
        if name not in self.done:
            self.done[name] = self.later.pop(name)()
        return self.done[name]

    @property
    def performance(self) -> pd.DataFrame:
        """channel_performance under the primary model (computed when first read)."""
        return self._part("performance")

    @property
    def drill(self) -> pd.DataFrame:
        """The chosen channel's deals, their trail and the channel's share (computed when first read)."""
        return self._part("drill")

    def pending(self, name: str) -> bool:
        """Whether ``name`` (``performance``, ``drill``) is still to be computed."""
        return name not in self.done

    def credit_table(self) -> pd.DataFrame:
        """Credit by channel, one column per model (conversions credited), best channel first."""
        wide = self.credit.pivot(index="channel", columns="model", values="conversions")
        wide = wide[[m for m in self.settings.models if m in wide.columns]]
        return wide.loc[wide.mean(axis=1).sort_values(ascending=False).index].round(2)

    def figures(self) -> dict[str, bytes]:
        """The charts as PNG bytes: ``credit`` (bars with intervals) and ``roi`` (revenue vs spend)."""
        return {"credit": credit_png(self.credit), "roi": roi_png(self.performance)}

    def paths_html(self) -> str:
        """The top converting paths through the presentation layer; their value only where the
        conversions carry one (lead, MQL and SQL journeys do not: no column of zeros)."""
        paths = self.paths.set_index("path") if "path" in self.paths else self.paths
        value = "total_conversion_value"
        if value in paths and not paths[value].fillna(0).abs().sum() > 0:
            paths = paths.drop(columns=value)
        return _formatted(paths, self.currency)

    def _repr_html_(self) -> str:
        figs = self.figures()
        s = self.settings
        head = (f"<p><b>Explorer</b> (static): {s.conversion}, lookback {s.lookback_days} d, level "
                f"{s.level}, models {', '.join(s.models)}" + (f", segment {s.segment}" if s.segment else "")
                + "</p>")
        parts = [head, "<h4>Credit by channel</h4>", _img(figs["credit"]),
                 _formatted(self.credit_table()), "<h4>Rank flips between models</h4>",
                 self.flips.to_html(index=False) if len(self.flips) else "<p>No rank flips.</p>",
                 f"<h4>Pipeline, revenue and ROI by channel ({s.primary_model})</h4>",
                 _formatted(self.performance, self.currency), _img(figs["roi"]),
                 "<h4>Top converting paths</h4>", self.paths_html()]
        parts += [f"<p><i>{n}</i></p>" for n in self.notes]
        return "\n".join(parts)


def _currency(tables: Any) -> str:
    """The one currency of the tables' money, or "" (none recorded, or several)."""
    try:
        from closedloop_nb.metrics import currency_of

        return currency_of(tables) or ""
    except Exception:  # noqa: BLE001  (several currencies or no money: figures without a symbol)
        return ""


def _formatted(df: pd.DataFrame, currency: str = "") -> str:
    """A static view's table through the presentation layer (money with its symbol, whole counts,
    "—" where a figure does not apply); credited conversions keep one decimal unless all are whole."""
    if df.empty:
        return "<p>Nothing to show.</p>"
    from closedloop_nb import present

    kinds = {}
    for c in df.columns:
        if present.kind_of(c) == "text" and pd.api.types.is_numeric_dtype(df[c]):
            values = df[c].dropna().astype(float)
            whole = bool(((values - values.round()).abs() < 1e-9).all())
            kinds[c] = "count" if whole else "ratio"
    digits = {c: 1 for c, k in kinds.items() if k == "ratio"}
    return present.table(df, currency, kinds, min_cell=0, max_columns=max(len(df.columns), 1),
                         digits=digits).to_html()


def _img(png: bytes) -> str:
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}"/>'


def credit_png(credit: pd.DataFrame) -> bytes:
    """Bars of each model's share by channel, with intervals when the credit has them."""
    import matplotlib.figure

    from closedloop_nb.attribution.compare import plot_comparison

    with matplotlib.rc_context({"figure.dpi": 80}):
        fig = matplotlib.figure.Figure(figsize=(7, 0.4 * credit["channel"].nunique() + 1.5))
        plot_comparison(credit, ax=fig.add_subplot())
        fig.tight_layout()
        return _png(fig)


def roi_png(performance: pd.DataFrame) -> bytes:
    """Attributed revenue against spend per channel."""
    import matplotlib.figure

    from closedloop_nb.metrics.plots import plot_roi_vs_spend

    with matplotlib.rc_context({"figure.dpi": 80}):
        fig = matplotlib.figure.Figure(figsize=(6, 4.5))
        plot_roi_vs_spend(performance, ax=fig.add_subplot())
        fig.tight_layout()
        return _png(fig)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------
# The pure layer


class Cache:
    """Journeys, deal credits, views and bootstrap intervals, each kept per setting that decides it."""

    def __init__(self, derive: bool = True) -> None:
        #: journeys derived from one wide build per conversion (quick to change, dear to start: what
        #: the app wants); False: each setting's journeys as the workspace caches them, or built (one
        #: static draw in a batch run, whose notebook has built those journeys already)
        self.derive = derive
        self.tables: dict[tuple, Mapping[str, pd.DataFrame]] = {}
        self.journeys: dict[tuple, Any] = {}
        self.wide: dict[str, Any] = {}  # conversion -> WideJourneys, the build every setting derives from
        self.shared: dict = {}  # what the wide builds share (anonymous visitors' journeys, dictionaries)
        self.deal_journeys: dict[tuple, Any] = {}
        self.credits: dict[tuple, pd.DataFrame] = {}
        self.views: dict[Settings, Views] = {}
        self.intervals: dict[tuple, pd.DataFrame] = {}
        self.lock = threading.Lock()
        self.folder: Any = None  # a TemporaryDirectory for narrowed workspace touchpoints, made on demand


def _isin(values: Any, among: Any) -> Any:
    """``pd.Series(values).isin(among)`` as a boolean array, hashed in Arrow: pandas 3's ``isin`` on
    Arrow-backed strings makes a pyarrow scalar of every value of ``among`` in Python (about 1 s per
    150k ids at 10M touchpoints, a dozen calls per narrowing).

    Examples
    --------
    >>> _isin(pd.Series(["a", "b", None]), {"a"}).tolist()
    [True, False, False]
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    def arrow(x: Any) -> Any:
        if isinstance(x, (set, frozenset)):
            x = list(x)
        return pa.array(x if isinstance(x, (pd.Series, pd.Index)) else pd.Series(x, dtype=object),
                        from_pandas=True)

    try:
        a, b = arrow(values), arrow(among)
        if len(a) == 0 or len(b) == 0:
            return np.zeros(len(a), dtype=bool)
        return pc.is_in(a, value_set=b if b.type == a.type else b.cast(a.type)).to_numpy(zero_copy_only=False)
    except (pa.ArrowException, TypeError):  # ids Arrow cannot compare (mixed types): pandas decides
        among = list(among) if isinstance(among, (set, frozenset)) else among
        return pd.Series(values).isin(among).to_numpy()


def _narrowed(data: Mapping[str, pd.DataFrame], s: Settings, cache: Cache,
              build: bool = False) -> Mapping[str, Any]:
    """The tables under the date range and segment of ``s`` (``data`` itself when none applies); for
    a journey ``build`` of them, also with the ``source_medium`` column the level may need.

    On a run workspace the touchpoints are narrowed (for a build) in its DuckDB into a Parquet file of
    the cache's own folder (``tables["touchpoints"]`` is then that file's path, which journey builds
    read); only the people-sized tables come to pandas."""
    key = (s.date_from, s.date_to, s.segment, build and s.level == "source_medium", build)
    if not build and key[:3] == (None, None, None):
        return data
    if key == (None, None, None, False):
        return data
    if key in cache.tables:
        return cache.tables[key]
    workspace = _is_workspace(data)
    t = {name: data[name] for name in data if not (workspace and name == "touchpoints")}
    leads = t["leads"]
    keep = pd.Series(True, index=leads.index)
    if s.segment:
        if "segment" not in leads:
            raise ValueError("a segment was chosen but the leads table has no 'segment' column")
        keep &= leads["segment"].astype("string").eq(s.segment).fillna(False)
    created = leads["created_at"]
    if s.date_from:
        keep &= created >= pd.Timestamp(s.date_from, tz="UTC")
    if s.date_to:
        keep &= created < pd.Timestamp(s.date_to, tz="UTC") + pd.Timedelta(days=1)
    dropped_visitors = pd.Series([], dtype=object)
    if not keep.all():
        people = leads.loc[keep, "person_id"]
        t["leads"] = leads[keep].reset_index(drop=True)
        ident = t["identities"]
        # a visitor of a dropped person leaves with them, unless a kept person shares it
        mine = _isin(ident["person_id"], people)
        gone = ident.loc[~mine, "visitor_id"]
        dropped_visitors = gone[~_isin(gone, ident.loc[mine, "visitor_id"])]
        t["identities"] = ident[mine].reset_index(drop=True)
        for name, col in (("deals", "person_id"),):
            if name in t:
                t[name] = t[name][_isin(t[name][col], people)].reset_index(drop=True)
        if "stage_history" in t and "deals" in t:
            t["stage_history"] = t["stage_history"][_isin(t["stage_history"]["deal_id"],
                                                          t["deals"]["deal_id"])].reset_index(drop=True)
    if workspace or not build:  # the touchpoints are narrowed for a build only (derived journeys filter)
        if workspace and build:
            t["touchpoints"] = _narrowed_touchpoints(data, t["identities"], s, cache)
        cache.tables[key] = t
        return t
    tp = t["touchpoints"]
    if len(dropped_visitors):
        tp = tp[~_isin(tp["visitor_id"], dropped_visitors)].reset_index(drop=True)
    if s.date_from or s.date_to:  # anonymous visitors: their touches in the range
        anon = ~_isin(tp["visitor_id"], t["identities"]["visitor_id"])
        inside = pd.Series(True, index=tp.index)
        if s.date_from:
            inside &= tp["timestamp"] >= pd.Timestamp(s.date_from, tz="UTC")
        if s.date_to:
            inside &= tp["timestamp"] < pd.Timestamp(s.date_to, tz="UTC") + pd.Timedelta(days=1)
        tp = tp[~anon | inside].reset_index(drop=True)
    if build and s.level == "source_medium":
        tp = tp.assign(source_medium=tp["source"].astype("string").fillna("(not set)") + " / "
                       + tp["medium"].astype("string").fillna("(not set)"))
    t["touchpoints"] = tp
    cache.tables[key] = t
    return t


def _narrowed_touchpoints(ws: Any, identities: pd.DataFrame, s: Settings, cache: Cache) -> Path:
    """The workspace's touchpoints of the kept people (``identities``) and of anonymous visitors (in
    the date range, when there is one), with ``source_medium`` for that level: the same rows as the
    pandas narrowing, selected in DuckDB and written to a Parquet file in the cache's folder."""
    inside = ["TRUE"]
    if s.date_from:
        inside.append(f"tp.timestamp >= TIMESTAMPTZ '{pd.Timestamp(s.date_from, tz='UTC').isoformat()}'")
    if s.date_to:
        end = pd.Timestamp(s.date_to, tz="UTC") + pd.Timedelta(days=1)
        inside.append(f"tp.timestamp < TIMESTAMPTZ '{end.isoformat()}'")
    extra = (", coalesce(CAST(tp.source AS VARCHAR), '(not set)') || ' / ' || "
             "coalesce(CAST(tp.medium AS VARCHAR), '(not set)') AS source_medium"
             if s.level == "source_medium" else "")
    path = _folder(cache) / f"touchpoints_{len(cache.tables)}.parquet"
    kept = pd.DataFrame({"visitor_id": identities["visitor_id"].drop_duplicates().to_numpy()})
    name = f"_closedloop_explore_kept_{id(cache)}"
    ws.con.register(name, kept)
    try:
        ws.con.execute(
            f"COPY (SELECT tp.*{extra} FROM touchpoints tp WHERE tp.visitor_id IN (SELECT visitor_id FROM "
            f"{name}) OR (tp.visitor_id NOT IN (SELECT visitor_id FROM identities) AND "
            f"{' AND '.join(inside)})) TO '{str(path).replace(chr(39), chr(39) * 2)}' (FORMAT parquet)")
    finally:
        ws.con.unregister(name)
    return path


def _is_workspace(data: Any) -> bool:
    return hasattr(data, "con") and hasattr(data, "journeys")


def _journeys(data: Mapping[str, pd.DataFrame], s: Settings, cache: Cache, conversion: str | None = None):
    """Journeys ending at ``conversion`` (default: the setting's): derived from the conversion's wide
    build (:func:`_wide`) on the whole data, built on the narrowed tables under a segment or a date
    range."""
    from closedloop_nb.journeys import build_journeys

    conversion = conversion or s.conversion
    key = (conversion, *s.journey_key()[1:])
    store = cache.journeys
    if key in store:
        store[key] = store.pop(key)  # the most recently used last
    else:
        options = {"drop_direct": s.drop_direct, "collapse_repeats": s.collapse_repeats}
        derive = {"lookback_days": s.lookback_days, "level": s.level, **options}
        if not cache.derive:
            if _narrowed(data, s, cache) is data and _is_workspace(data):
                store[key] = data.journeys(conversion=conversion, lookback_days=s.lookback_days,
                                           level=s.level, **options)
            else:
                store[key] = build_journeys(_narrowed(data, s, cache, build=True), conversion=conversion,
                                            lookback_days=s.lookback_days, level=s.level, progress=False,
                                            memory_limit=JOURNEY_MEMORY, **options)
        elif (s.date_from, s.date_to, s.segment) == (None, None, None):
            store[key] = _wide(data, conversion, s.lookback_days, cache).derive(**derive)
        elif not (conversion in DEAL_CONVERSIONS and "deal_contacts" in data):
            wide = _wide(data, conversion, s.lookback_days, cache)
            people, reconcile = _people(data, s, cache, conversion, wide)
            store[key] = wide.derive(**derive, people=people, reconcile=reconcile)
        else:  # a deal's committee under a narrowing: built on the narrowed tables
            # narrowed tables: DuckDB kept to the workspace's own limit (it spills beyond it)
            store[key] = build_journeys(_narrowed(data, s, cache, build=True), conversion=conversion,
                                        lookback_days=s.lookback_days, level=s.level, progress=False,
                                        memory_limit=JOURNEY_MEMORY, **options)
        while len(store) > KEEP_JOURNEYS:  # a setting no longer shown: its derived touches go
            old = store.pop(next(iter(store)))
            for wide in cache.wide.values():
                wide.release(old)
    return store[key]


def _wide(data: Mapping[str, Any], conversion: str, lookback_days: int, cache: Cache) -> Any:
    """``conversion``'s wide build (:func:`closedloop_nb.journey_derive.wide_journeys`), made once per
    conversion at :data:`LOOKBACK_MAX` days (or longer, when a setting asks for more)."""
    from closedloop_nb.journey_derive import wide_journeys

    wide = cache.wide.get(conversion)
    if wide is None or wide.lookback_days < lookback_days:
        cache.wide[conversion] = wide = wide_journeys(data, conversion, max(LOOKBACK_MAX, int(lookback_days)),
                                                      memory_limit=JOURNEY_MEMORY, folder=_folder(cache),
                                                      shared=cache.shared)
    return wide


#: Conversions whose journeys may gather a deal's contacts (narrowed, they are built, not derived).
DEAL_CONVERSIONS = ("opportunity", "proposal", "closed_won")


def _earliest(identities: pd.DataFrame) -> pd.Series:
    """Each visitor's person, the earliest match (ties: the smallest person id), as the build maps."""
    ordered = identities.sort_values(["matched_at", "person_id"], kind="stable")
    return ordered.drop_duplicates("visitor_id").set_index("visitor_id")["person_id"]


def _people(data: Mapping[str, Any], s: Settings, cache: Cache, conversion: str, wide: Any) -> tuple:
    """Who the segment and date range of ``s`` keep, as :meth:`WideJourneys.derive` narrows
    (:class:`~closedloop_nb.journey_derive.People`), and the reconciliation of the narrowed tables.

    The kept people's journeys are the wide build's, except for the few people whom the narrowed
    identities give a visitor the whole data gave someone left out (a visitor matched to several
    people): their journeys are built again, on their own touches only."""
    from closedloop_nb.journey_derive import People, wide_journeys

    tables = _narrowed(data, s, cache)
    key = ("people", s.date_from, s.date_to, s.segment, conversion, wide.lookback_days)
    if key in cache.credits:
        return cache.credits[key]
    narrowed = len(tables["leads"]) < len(data["leads"])
    lo = pd.Timestamp(s.date_from, tz="UTC") if s.date_from else None
    hi = pd.Timestamp(s.date_to, tz="UTC") + pd.Timedelta(days=1) if s.date_to else None
    kept = pd.Index(tables["leads"]["person_id"].unique()) if narrowed else None
    rebuilt = None
    who, mini = _moved_people(data, tables, s, cache) if narrowed else ([], None)
    if who:
        rebuilt = wide_journeys(mini, conversion, wide.lookback_days, memory_limit=JOURNEY_MEMORY,
                                people=who, dictionaries=wide.dictionaries)
    people = People(kept, lo, hi, rebuilt)
    cache.credits[key] = (people, _narrowed_reconciliation(data, tables, conversion, wide, cache))
    return cache.credits[key]


def _moved_people(data: Mapping[str, Any], tables: Mapping[str, Any], s: Settings,
                  cache: Cache) -> tuple[list, dict | None]:
    """The people whom the narrowed identities give a visitor the whole data gave someone else, and
    their tables (their leads, deals, orders, identities and their visitors' touches), once per
    narrowing: every conversion's journeys of them are built on these."""
    key = ("moved", s.date_from, s.date_to, s.segment)
    if key not in cache.credits:
        mine = _earliest(tables["identities"])
        if "earliest" not in cache.credits:
            cache.credits["earliest"] = _earliest(data["identities"])
        moved = mine[cache.credits["earliest"].reindex(mine.index).to_numpy() != mine.to_numpy()]
        who, mini = sorted(set(moved)), None
        if who:
            visitors = mine.index[_isin(mine, who)]
            mini = {"touchpoints": _touches_of(data, visitors),
                    "identities": tables["identities"][_isin(tables["identities"]["visitor_id"], visitors)]}
            for name, col in (("leads", "person_id"), ("deals", "person_id"), ("orders", "customer_id")):
                if name in tables:
                    mini[name] = tables[name][_isin(tables[name][col], who)].reset_index(drop=True)
            if "stage_history" in tables and "deals" in mini:
                mini["stage_history"] = tables["stage_history"][_isin(
                    tables["stage_history"]["deal_id"], mini["deals"]["deal_id"])].reset_index(drop=True)
        cache.credits[key] = (who, mini)
    return cache.credits[key]


def _touches_of(data: Mapping[str, Any], visitors: pd.Index) -> pd.DataFrame:
    """The touchpoints of a few ``visitors`` (in the engine on a workspace)."""
    if not _is_workspace(data):
        tp = data["touchpoints"]
        return tp[_isin(tp["visitor_id"], visitors)].reset_index(drop=True)
    name = f"_closedloop_explore_visitors_{id(visitors)}"
    data.con.register(name, pd.DataFrame({"visitor_id": pd.Series(visitors, dtype=object)}))
    try:
        rel = data.con.sql(f"SELECT * FROM touchpoints WHERE visitor_id IN (SELECT visitor_id FROM {name})")
        return (getattr(rel, "to_arrow_table", None) or rel.arrow)().to_pandas()
    finally:
        data.con.unregister(name)


def _touch_stats(data: Mapping[str, Any], cache: Cache) -> tuple[pd.Series, pd.Index]:
    """Touches per matched visitor, and the people with a touch through any of their matches (once
    per data: what a narrowed build's reconciliation counts)."""
    if "touch_stats" not in cache.credits:
        sql = ("SELECT tp.visitor_id, COUNT(*) AS n FROM touchpoints tp SEMI JOIN identities i "
               "ON tp.visitor_id = i.visitor_id GROUP BY tp.visitor_id")
        if _is_workspace(data):
            rel = data.con.sql(sql)
            counts = (getattr(rel, "to_arrow_table", None) or rel.arrow)().to_pandas()
        else:
            import duckdb

            con = duckdb.connect()
            con.register("touchpoints", data["touchpoints"][["visitor_id"]])
            con.register("identities", data["identities"][["visitor_id"]])
            counts = con.sql(sql).df()
        counts = counts.set_index("visitor_id")["n"]
        ident = data["identities"]
        cache.credits["touch_stats"] = (counts, pd.Index(ident.loc[_isin(ident["visitor_id"], counts.index),
                                                                   "person_id"].unique()))
    return cache.credits["touch_stats"]


def _narrowed_reconciliation(data: Mapping[str, Any], tables: Mapping[str, Any], conversion: str,
                             wide: Any, cache: Cache) -> Callable:
    """The reconciliation a build on the narrowed ``tables`` gives, for derived journeys: the
    conversions in and those whose person has no touches at all counted on the narrowed people-sized
    tables, the touches in from each matched visitor's touch count."""
    import duckdb

    from closedloop_nb import journey_sql as q
    from closedloop_nb.journey_derive import _reconciliation

    con = duckdb.connect()
    for name in ("leads", "deals", "stage_history", "orders"):
        if name in tables:
            con.register(name, tables[name])
    conv = con.sql(q.conversions_sql(conversion)).df()
    counts, touched = _touch_stats(data, cache)
    ident = tables["identities"]
    none = ~(_isin(conv["person_id"], touched) & _isin(conv["person_id"], ident["person_id"]))
    several = int((ident.groupby("visitor_id")["person_id"].nunique() > 1).sum())
    matched = int(counts.reindex(ident["visitor_id"].unique()).fillna(0).sum())

    def total(v: pd.Series) -> float:
        return float(v.sum()) if len(conv) else float("nan")

    offline = "unattributed: no touches at all (offline or unmatched)"
    several_bucket = "visitors matched to several people (counted for the earliest match)"

    def reconcile(db: Any, table: str, null_touches: int, anonymous: int) -> pd.DataFrame:
        replace = {("conversions", "in"): (len(conv), total(conv["value"])),
                   ("conversions", offline): (int(none.sum()), total(conv.loc[none, "value"])),
                   ("identities", several_bucket): (several, None),
                   ("touches", "in"): (matched + anonymous, None)}
        return _reconciliation(wide.base.reconciliation, db, table, null_touches, replace)

    return reconcile


def _folder(cache: Cache) -> Path:
    """The cache's own temporary folder (made on first use, removed with the cache)."""
    import tempfile

    if cache.folder is None:
        cache.folder = tempfile.TemporaryDirectory(prefix="closedloop-explore-")
    return Path(cache.folder.name)


def _model_instance(name: str, s: Settings) -> Any:
    if name == "time_decay":
        from closedloop_nb.attribution import TimeDecay

        return TimeDecay(half_life_days=s.half_life_days)
    return name


def credit_by_model(data: Mapping[str, pd.DataFrame], s: Settings,
                    cache: Cache | None = None) -> pd.DataFrame:
    """Each chosen model's credit by channel on the same journeys (as :func:`compare_models`; time decay
    as :class:`~closedloop_nb.attribution.TimeDecay` fitted on the converting touches with the setting's
    half-life, its weights summed in the engine). Cached per journeys, models and half-life."""
    from closedloop_nb.attribution.compare import compare_models

    cache = cache or Cache()
    key = ("by_model", s.models, s.half_life_days if "time_decay" in s.models else None, *s.journey_key())
    if key in cache.credits:
        return cache.credits[key]
    journeys = _journeys(data, s, cache)
    path_models = [m for m in s.models if m != "time_decay"]
    frames = []
    if path_models:
        frames.append(compare_models(journeys.paths, path_models, progress=False))
    if "time_decay" in s.models:
        c = time_decay_credits(journeys, _narrowed(data, s, cache), s.half_life_days)
        c = c.assign(model="time_decay")
        c["rank"] = c["conversions"].rank(ascending=False, method="min").astype(int)
        frames.append(c[["model", "channel", "conversions", "value", "share", "rank"]])
    if not frames:
        raise ValueError("choose at least one model")
    cache.credits[key] = pd.concat(frames, ignore_index=True)
    return cache.credits[key]


def time_decay_credits(journeys: Any, tables: Mapping[str, Any], half_life_days: float) -> pd.DataFrame:
    """``TimeDecay(half_life_days).fit(journeys.touch_table()).credits_`` (``channel, conversions,
    value, share``) with the touch weights computed and summed in the engine
    (:func:`~closedloop_nb.metrics.credits.journey_weights_sql`): no touch table in pandas."""
    from closedloop_nb.attribution import TimeDecay
    from closedloop_nb.metrics._engine import journey_touches
    from closedloop_nb.metrics.credits import journey_weights_sql

    touches = journey_touches(journeys, tables)
    sql = journey_weights_sql(TimeDecay(half_life_days=half_life_days), touches)
    c = touches.frame(f"WITH w AS ({sql}) SELECT CAST(step AS VARCHAR) AS channel, "
                      "SUM(weight) AS conversions, SUM(weight * value) AS value FROM w GROUP BY step "
                      "ORDER BY channel")
    total = c["conversions"].sum()
    return c.assign(share=c["conversions"] / total if total else 0.0)


def _deal_credits(data: Mapping[str, pd.DataFrame], s: Settings, cache: Cache) -> pd.DataFrame:
    """:func:`~closedloop_nb.metrics.deal_credits` of the primary model, on the cached deal journeys
    (the same steps as ``deal_credits``, which rebuilds the journeys on every call; tests check the two
    agree), so a model change refits without rebuilding."""
    half_life = s.half_life_days if s.primary_model == "time_decay" else None
    key = (s.primary_model, half_life, *s.journey_key()[1:])
    if key not in cache.credits:
        cache.credits[key] = credits_from_journeys(_narrowed(data, s, cache), _journeys(
            data, s, cache, conversion="opportunity"), _model_instance(s.primary_model, s), s.level)
    return cache.credits[key]


def credits_from_journeys(tables: Mapping[str, pd.DataFrame], journeys: Any, model: Any,
                          level: str) -> pd.DataFrame:
    """Per-deal shares (as :func:`~closedloop_nb.metrics.deal_credits` returns them) from journeys
    ending at deal creation that are already built."""
    from closedloop_nb.metrics.credits import credits_on_journeys

    return credits_on_journeys(tables, journeys, model, tables["deals"][["deal_id", "person_id"]],
                               "deal_id", level)


def _lead_sources(data: Mapping[str, pd.DataFrame], s: Settings, cache: Cache) -> pd.DataFrame:
    """Every lead credited to its first touch (``lead_credits(tables, "lead_source")``) from the
    cached lead journeys (the first touch found in the engine: no touch table in pandas)."""
    from closedloop_nb.metrics.credits import NO_TOUCHES

    key = ("lead_source", *s.journey_key()[1:])
    if key not in cache.credits:
        tables = _narrowed(data, s, cache)
        plain = replace(s, drop_direct=False, collapse_repeats=False)  # lead source: the journey as it is
        first_sql = ("SELECT person_id, first(step ORDER BY ts, touch_id) AS step FROM {t} "
                     "WHERE converted = 1 GROUP BY person_id")
        if cache.derive and ("lead", *plain.journey_key()[1:]) not in cache.journeys:
            # only the lead journeys' converting touches: no journeys (and no non-converting paths)
            # derived for a setting nobody looks at
            wide = _wide(data, "lead", s.lookback_days, cache)
            narrowed = (s.date_from, s.date_to, s.segment) != (None, None, None)
            people = _people(data, s, cache, "lead", wide)[0] if narrowed else None
            sql = wide.converting_sql(s.lookback_days, s.level, people=people)
            rel = wide.con.sql(first_sql.format(t=f"({sql})"))
            first = (getattr(rel, "to_arrow_table", None) or rel.arrow)().to_pandas()
        else:
            first = _touch_sql(_journeys(data, plain, cache, conversion="lead"), tables, first_sql)
        first = first.set_index("person_id")["step"]
        leads = tables["leads"][["person_id"]]
        # ids as Python objects: channel_performance's isin of them against the leads then hashes in
        # C (on Arrow-backed ids pandas 3 makes a scalar per lead in Python: 1-2 s at 10M touchpoints)
        cache.credits[key] = leads.assign(**{s.level: leads["person_id"].map(first).fillna(NO_TOUCHES)
                                             .to_numpy()}, share=1.0).reset_index(drop=True)
        cache.credits[key]["person_id"] = pd.Series(cache.credits[key]["person_id"].to_numpy(dtype=object),
                                                    dtype=object)
    return cache.credits[key]


def _touch_sql(journeys: Any, tables: Mapping[str, Any], sql: str) -> pd.DataFrame:
    """``sql`` on the journeys' touches where the build keeps them (``{t}`` names them)."""
    from closedloop_nb.metrics._engine import journey_touches

    return journey_touches(journeys, tables).frame(sql)


def drill_down(data: Mapping[str, pd.DataFrame], s: Settings, channel: str,
               cache: Cache | None = None) -> pd.DataFrame:
    """The deals credited to ``channel`` under the primary model: amount, stage, the channel's share of
    the deal, the credited amount, and the deal's trail of touches (its journey to deal creation).

    Returns
    -------
    pandas.DataFrame
        ``deal_id, person_id, created_at, stage, amount, share, credited, touches, trail``, largest credit
        first.
    """
    cache = cache or Cache()
    tables = _narrowed(data, s, cache)
    credits = _deal_credits(data, s, cache)
    mine = credits[credits[s.level] == channel][["deal_id", "share"]]
    deals = tables["deals"][["deal_id", "person_id", "created_at", "stage", "amount"]]
    out = deals.merge(mine, on="deal_id")
    out["credited"] = out["share"] * out["amount"]
    trail = _touch_sql(_journeys(data, s, cache, conversion="opportunity"), tables,
                       "SELECT journey_id, count(*) AS touches, "
                       "string_agg(step, ' > ' ORDER BY ts, touch_id) AS trail "
                       "FROM {t} WHERE converted = 1 GROUP BY journey_id")
    trail.index = trail["journey_id"].str.split(":", n=1).str[1].to_numpy()
    out["touches"] = out["deal_id"].map(trail["touches"]).fillna(0).astype(int)
    out["trail"] = out["deal_id"].map(trail["trail"]).fillna("(no touches)")
    cols = ["deal_id", "person_id", "created_at", "stage", "amount", "share", "credited", "touches", "trail"]
    return out.sort_values("credited", ascending=False, kind="stable")[cols].reset_index(drop=True)


def compute(data: Mapping[str, pd.DataFrame], settings: Settings, cache: Cache | None = None,
            lazy: bool = False) -> Views:
    """Every view for one setting (cached in ``cache`` when given).

    Parameters
    ----------
    data
        Validated canonical tables (a dict, a :class:`~closedloop_nb.validation.Dataset`'s ``tables``,
        or a run workspace).
    settings
        The controls' values.
    cache
        Reused across calls: a setting seen before is returned at once, and journeys and deal credits
        are shared by settings that differ only in what does not affect them.
    lazy
        Leave ``performance`` and ``drill`` (the deal journeys, deal credits, lead sources) to be
        computed when first read (the app reads them when their tab is shown).
    """
    from closedloop_nb.attribution.compare import rank_flips
    from closedloop_nb.metrics import channel_performance

    cache = cache or Cache()
    if settings in cache.views:
        return cache.views[settings]
    start = time.perf_counter()
    s = settings
    journeys = _journeys(data, s, cache)
    credit = credit_by_model(data, s, cache)
    with cache.lock:
        ci = cache.intervals.get(_interval_key(s))
    if ci is not None:
        credit = _with_intervals(credit, ci)
    flips = rank_flips(credit) if len(s.models) > 1 else pd.DataFrame(
        columns=["channel", "best_rank", "best_model", "worst_rank", "worst_model", "spread"])
    tables = _narrowed(data, s, cache)
    notes: list[str] = []

    def performance() -> pd.DataFrame:
        try:
            credits = _deal_credits(data, s, cache)
            return channel_performance(tables, credits, lead_credits=_lead_sources(data, s, cache))
        except ValueError as exc:  # e.g. full_path or a level the deals cannot be credited at
            notes.append(f"Pipeline and revenue not shown: {exc}")
            return pd.DataFrame()

    paths = (journeys.paths[journeys.paths["total_conversions"] > 0]
             .sort_values("total_conversions", ascending=False).head(TOP_PATHS).reset_index(drop=True))
    drill = (lambda: drill_down(data, s, s.channel, cache)) if s.channel else pd.DataFrame
    views = Views(s, credit, flips, paths, journeys.reconciliation, 0.0, notes, _currency(tables),
                  later={"performance": performance, "drill": drill})
    if not lazy:
        views.performance, views.drill  # noqa: B018  (computed now)
    views.seconds = time.perf_counter() - start
    cache.views[settings] = views
    return views


def _interval_key(s: Settings) -> tuple:
    return (*s.journey_key(), tuple(m for m in s.models if m != "time_decay"), s.n_boot)


def _with_intervals(credit: pd.DataFrame, ci: pd.DataFrame) -> pd.DataFrame:
    cols = ["lower", "upper", "share_lower", "share_upper", "rank_lower", "rank_upper"]
    return credit.merge(ci[["model", "channel", *cols]], on=["model", "channel"], how="left")


def bootstrap_intervals(data: Mapping[str, pd.DataFrame], s: Settings, cache: Cache | None = None,
                        on_step: Callable[[int, int], None] | None = None,
                        cancelled: Callable[[], bool] = lambda: False) -> pd.DataFrame | None:
    """Bootstrap intervals of every chosen path-table model (as ``compare_models(..., ci=True)``),
    one model at a time, calling ``on_step(done, total)`` after each; ``None`` when ``cancelled()``
    turns true between models. Cached per setting in ``cache.intervals``."""
    from closedloop_nb.attribution.compare import compare_models

    cache = cache or Cache()
    key = _interval_key(s)
    with cache.lock:
        if key in cache.intervals:
            return cache.intervals[key]
    models = list(key[-2])
    journeys = _journeys(data, s, cache)
    frames = []
    for i, m in enumerate(models):
        if cancelled():
            return None
        frames.append(compare_models(journeys.paths, [m], ci=True, n_boot=s.n_boot, progress=False))
        if on_step:
            on_step(i + 1, len(models))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "channel"])
    with cache.lock:
        cache.intervals[key] = out
    return out


def save_run(s: Settings, name: str, data_dir: str | Path, directory: str | Path | None = None) -> Path:
    """Write ``s`` as a parameter file ``<directory>/<name>.yaml`` that ``closedloop report`` runs.

    Only the parameters the notebooks declare are written (checked with
    :func:`closedloop_nb.report.check_parameters`); settings no notebook takes yet (level, half-life,
    date range, segment, journey options) are listed in the file's header comment, so the batch run is
    not mistaken for the same view.

    Raises
    ------
    ValueError
        When the name is not a plain file name.
    closedloop_nb.report.ParameterError
        When the file would not be accepted.
    """
    import yaml

    from closedloop_nb.config import PROJECT_DIR
    from closedloop_nb.report import check_parameters, declared_parameters, notebooks

    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ValueError(f"run name {name!r}: use letters, digits, '-', '_' or '.'")
    directory = Path(directory) if directory is not None else PROJECT_DIR / "parameters"
    data_path = Path(data_dir).resolve()
    try:
        data_value = str(data_path.relative_to(PROJECT_DIR))
    except ValueError:
        data_value = str(data_path)
    wanted = {"data_dir": data_value, "conversion": s.conversion, "lookback_days": int(s.lookback_days),
              "models": ",".join(m for m in s.models if m != "time_decay") or "linear",
              "model": s.primary_model, "n_boot": int(s.n_boot)}
    nbs = notebooks()
    declared: dict[str, Any] = {}
    for per_nb in declared_parameters(nbs).values():
        declared.update(per_nb)
    params = {"run": name, **{k: v for k, v in wanted.items() if k in declared}}
    check_parameters(params, nbs, source=name)
    rest = {k: v for k, v in asdict(s).items() if k not in wanted and k not in ("channel", "models")}
    header = ("# Saved from the explorer (cl.explore). Settings no notebook takes as a parameter\n"
              f"# yet, not applied by the batch run: {rest}\n")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(header + yaml.safe_dump(params, sort_keys=False), "utf-8")
    return path


# ---------------------------------------------------------------------------------------------------------
# Interactive or static


#: Programs that run notebooks in batch: a kernel started by one of them is nobody's to look at.
BATCH_RUNNERS = ("papermill", "nbconvert", "nbclient", "pytest", "py.test", "closedloop_nb._report_child")


def is_interactive() -> bool:
    """True in a notebook kernel a person is looking at; False in plain Python and in batch runs
    (``closedloop report``, papermill, nbconvert: the kernel's parent process is theirs, see
    :func:`batch_parent`). ``CLOSEDLOOP_INTERACTIVE=0/1`` overrides."""
    from closedloop_nb.progress import ENV as REPORT_PROGRESS

    forced = os.environ.get("CLOSEDLOOP_INTERACTIVE")
    if forced is not None:
        return forced.strip().lower() in ("1", "true", "yes")
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or type(shell).__name__ != "ZMQInteractiveShell":
        return False
    if REPORT_PROGRESS in os.environ or any(k.startswith("PAPERMILL") for k in os.environ):
        return False  # a kernel of `closedloop report` (its runner sets the progress file)
    try:
        parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True
    return not batch_parent(parent.split("\0"))


def batch_parent(argv: list[str]) -> bool:
    """Whether the command line ``argv`` runs a batch notebook runner (:data:`BATCH_RUNNERS`).

    Only the program is looked at (for a Python interpreter, the module after ``-m`` or the script),
    never its arguments: a JupyterLab serving a folder whose path says ``pytest`` is still JupyterLab.

    Examples
    --------
    >>> batch_parent(["/usr/bin/python3", "-m", "papermill", "in.ipynb", "out.ipynb"])
    True
    >>> batch_parent(["/venv/bin/python", "/venv/bin/jupyter-nbconvert", "--execute", "a.ipynb"])
    True
    >>> batch_parent(["/venv/bin/python", "-m", "jupyterlab", "--ServerApp.root_dir=/tmp/pytest-1/lab"])
    False
    """
    program = _program([a for a in argv if a])
    return any(runner in program for runner in BATCH_RUNNERS)


def _program(argv: list[str]) -> str:
    """The program a command line runs: the module after ``-m`` or the script's file name when it is
    a Python interpreter, else the executable's file name (lower case)."""
    if not argv:
        return ""
    name = Path(argv[0]).name.lower()
    if not name.startswith("python"):
        return name
    args = iter(argv[1:])
    for a in args:
        if a == "-m":
            return next(args, "").lower()
        if a.startswith("-m"):
            return a[2:].lower()
        if a == "-c":
            return "-c"
        if a in ("-X", "-W", "-Q"):
            next(args, None)
        elif not a.startswith("-"):
            return Path(a).name.lower()
    return name


def _as_tables(data: Any) -> tuple[Mapping[str, pd.DataFrame], str | None]:
    """``(tables, data folder or None)`` from a folder, a Dataset, a workspace or a dict of tables."""
    if isinstance(data, (str, Path)):
        from closedloop_nb.config import resolve
        from closedloop_nb.validation import load_dataset

        folder = resolve(data)
        return load_dataset(folder).tables, str(folder)
    if hasattr(data, "tables") and isinstance(data.tables, Mapping):  # a Dataset
        return data.tables, None
    if isinstance(data, Mapping):
        folder = getattr(data, "data_dir", None)
        return data, str(folder) if folder is not None else None
    raise TypeError(f"explore() takes a data folder, a run workspace or a dict of tables, got "
                    f"{type(data).__name__}")


def explore(data: Any, interactive: bool | None = None, data_dir: str | Path | None = None,
            **settings: Any) -> Any:
    """The explorer on ``data``: the widget app when interactive, else the static :class:`Views`.

    Parameters
    ----------
    data
        A data folder, a run workspace or a dict of validated canonical tables.
    interactive
        Force the widget app (True) or the static views (False); default :func:`is_interactive`.
    data_dir
        The data folder, for "save as run" when ``data`` is not one.
    **settings
        Initial :class:`Settings` (``conversion``, ``models`` as a tuple or comma string,
        ``lookback_days``...).

    Examples
    --------
    In a JupyterLab notebook (the app needs a live kernel, so this is not run as a doctest)::

        import closedloop_nb as cl
        cl.explore("data/sample", models="linear,markov")
    """
    tables, folder = _as_tables(data)
    if isinstance(settings.get("models"), str):
        settings["models"] = tuple(m.strip() for m in settings["models"].split(",") if m.strip())
    s = Settings(**settings)
    folder = str(data_dir) if data_dir is not None else folder
    if interactive is None:
        interactive = is_interactive()
    if not interactive:  # one draw: the journeys as they are cached or built, no wide builds
        return compute(tables, s, Cache(derive=False))
    return Explorer(tables, s, data_dir=folder)


class Explorer:
    """The widget app (see the module docs). ``controls`` maps each setting to its widget; ``views`` is
    what is drawn; ``app`` is the ipywidgets box (shown when the Explorer is the cell's value)."""

    def __init__(self, data: Mapping[str, pd.DataFrame], settings: Settings = Settings(),
                 data_dir: str | None = None, parameters_dir: str | Path | None = None,
                 background: bool = True) -> None:
        import ipywidgets as w

        self.data, self.data_dir, self.parameters_dir = data, data_dir, parameters_dir
        self.cache = Cache()
        self.background = background
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._frozen = False
        self.views: Views | None = None
        self.redraw_seconds = 0.0
        segments = ["(all)"]
        if "segment" in data["leads"]:
            segments += sorted(str(v) for v in data["leads"]["segment"].dropna().unique())
        dates = data["leads"]["created_at"]
        lo, hi = (dates.min().date(), dates.max().date()) if len(dates) else (None, None)
        self.controls: dict[str, Any] = {
            "conversion": w.Dropdown(options=CONVERSIONS, value=settings.conversion,
                                     description="Conversion"),
            "models": w.SelectMultiple(options=MODEL_CHOICES, value=settings.models, rows=6,
                                       description="Models"),
            "lookback_days": w.IntSlider(value=settings.lookback_days, min=1, max=LOOKBACK_MAX, step=1,
                                         continuous_update=False, description="Lookback (d)"),
            "half_life_days": w.FloatSlider(value=settings.half_life_days, min=0.5, max=60, step=0.5,
                                            continuous_update=False, description="Half-life (d)"),
            "level": w.Dropdown(options=LEVELS, value=settings.level, description="Level"),
            "date_from": w.DatePicker(value=_date(settings.date_from), description="From"),
            "date_to": w.DatePicker(value=_date(settings.date_to), description="To"),
            "segment": w.Dropdown(options=segments, value=settings.segment or "(all)", description="Segment"),
            "drop_direct": w.Checkbox(value=settings.drop_direct, description="Drop direct"),
            "collapse_repeats": w.Checkbox(value=settings.collapse_repeats, description="Collapse repeats"),
            "channel": w.Dropdown(options=["(none)"], value="(none)", description="Drill into"),
        }
        self.n_boot = settings.n_boot
        self._dates = (lo, hi)
        self.progress = w.IntProgress(value=0, min=0, max=1, description="Intervals")
        self.status = w.HTML()
        self.credit_html = w.HTML().add_class("cl-credit")
        self.credit_png = w.Image(format="png")
        self.flips_html = w.HTML().add_class("cl-flips")
        self.performance_html = w.HTML(LATER).add_class("cl-performance")
        self.roi_png = w.Image(format="png")
        self.paths_html = w.HTML().add_class("cl-paths")
        self.drill_html = w.HTML(LATER).add_class("cl-drill")
        self.run_name = w.Text(value="explorer_run", description="Run name")
        self.save_button = w.Button(description="Save as run", icon="save")
        self.save_status = w.HTML()
        self.save_button.on_click(lambda _: self.save())
        for c in self.controls.values():
            c.observe(lambda _change: self.refresh(), names="value")
        left = w.VBox([*self.controls.values(), self.progress, w.HBox([self.run_name, self.save_button]),
                       self.save_status, self.status])
        tabs = w.Tab(children=[
            w.VBox([self.credit_png, self.credit_html]),
            w.VBox([self.flips_html]),
            w.VBox([self.performance_html, self.roi_png]),
            w.VBox([self.paths_html]),
            w.VBox([self.drill_html]),
        ])
        for i, title in enumerate(["Credit", "Rank flips", "Pipeline & ROI", "Top paths", "Drill-down"]):
            tabs.set_title(i, title)
        self.tabs = tabs
        self._tab_of: dict[int, Views] = {}  # the views each lazy tab (ROI_TAB, DRILL_TAB) shows
        tabs.observe(lambda _change: self._draw_tabs(), names="selected_index")
        self.app = w.HBox([left, tabs])
        self.refresh()
        if lo is not None:  # leads to narrow to (a date range, perhaps a segment)
            # once per data, paid with the first draw instead of the first segment or date range: each
            # matched visitor's touch count (a scan of the touchpoints; the narrowed reconciliation
            # counts with it) and each visitor's earliest person (who a narrowing moves)
            _touch_stats(data, self.cache)
            self.cache.credits["earliest"] = _earliest(data["identities"])

    @property
    def settings(self) -> Settings:
        v = {k: c.value for k, c in self.controls.items()}
        return Settings(conversion=v["conversion"], models=tuple(v["models"]),
                        lookback_days=int(v["lookback_days"]),
                        half_life_days=float(v["half_life_days"]), level=v["level"],
                        date_from=v["date_from"].isoformat() if v["date_from"] else None,
                        date_to=v["date_to"].isoformat() if v["date_to"] else None,
                        segment=None if v["segment"] == "(all)" else v["segment"],
                        drop_direct=bool(v["drop_direct"]), collapse_repeats=bool(v["collapse_repeats"]),
                        channel=None if v["channel"] == "(none)" else v["channel"], n_boot=self.n_boot)

    def refresh(self) -> None:
        """Recompute (cached) and redraw every view for the controls' current values; start the
        background intervals for this setting."""
        if self._frozen:
            return
        start = time.perf_counter()
        s = self.settings
        if not s.models:
            self.status.value = "<b>Choose at least one model.</b>"
            return
        before = self.views
        drilled = before.settings.channel if before is not None else None
        # only the drilled channel changed: credit (with its intervals), rank flips and top paths stay
        # as drawn, and the drill-down alone is drawn
        drill_only = before is not None and replace(before.settings, channel=s.channel) == s
        try:
            views = compute(self.data, s, self.cache, lazy=True)
            if drill_only:
                self.views = self.cache.views[s] = views = replace(views, credit=before.credit)
                self._draw_tabs()
            else:
                self._draw(views)
            if s.channel is not None and s.channel != drilled:  # a channel chosen: its deals shown
                self.tabs.selected_index = DRILL_TAB
        except ValueError as exc:
            self.status.value = f"<b>Cannot show this setting:</b> {exc}"
            return
        self._update_channels(views)
        self.redraw_seconds = time.perf_counter() - start
        self.status.value = f"Redrawn in {self.redraw_seconds:.2f} s"
        if not (drill_only and "lower" in views.credit):
            self._start_intervals(s)

    def _draw(self, views: Views) -> None:
        """Draw ``views``: the credit table, then its chart, rank flips and top paths; pipeline and
        the drill-down (deal journeys, deal credits, lead sources: half a change's work at 10M
        touchpoints) only in the tab shown (:meth:`_draw_tabs`), the others when they are chosen."""
        self.views = views
        self._draw_credit(views)
        flipped = set(views.flips["channel"]) if len(views.flips) else set()
        self.flips_html.value = (views.flips.to_html(index=False) if flipped else "<p>No rank flips.</p>") + (
            "<p>Rank by model (channels whose rank flips marked <b>*</b>):</p>"
            + _ranks(views.credit, flipped).to_html())
        self.paths_html.value = views.paths_html()
        self._draw_tabs()

    def _draw_credit(self, views: Views) -> None:
        """The credit table (with intervals when they are in), then its chart."""
        table = views.credit_table()
        if "lower" in views.credit:
            ci = views.credit.pivot(index="channel", columns="model", values=["lower", "upper"]).round(2)
            for m in table.columns:
                if ("lower", m) in ci:
                    lows, highs = ci[("lower", m)].reindex(table.index), ci[("upper", m)].reindex(table.index)
                    table[m] = [f"{v:.2f} [{lo:.2f}, {hi:.2f}]" for v, lo, hi in zip(
                        table[m], lows, highs, strict=True)]
        self.credit_html.value = table.to_html()  # sent before the chart is drawn
        self.credit_png.value = credit_png(views.credit)

    def _draw_tabs(self) -> None:
        """Pipeline & ROI, or the drill-down, for the views drawn when that tab is shown (computed
        then: a view nobody looks at is not computed on every change); a lazy tab not shown says it
        is drawn when shown instead of keeping an older setting's figures."""
        views, shown = self.views, self.tabs.selected_index
        if views is None:
            return
        for tab in (ROI_TAB, DRILL_TAB):
            if self._tab_of.get(tab) is views:  # already shows these views
                continue
            if tab != shown:  # an older setting's figures: gone until the tab is shown
                if self._tab_of.pop(tab, None) is not None:
                    if tab == ROI_TAB:
                        self.performance_html.value, self.roi_png.value = LATER, b""
                    else:
                        self.drill_html.value = LATER
                continue
            if tab == ROI_TAB:
                perf = views.performance
                self.performance_html.value = (perf.round(2).to_html() if len(perf) else "") + "".join(
                    f"<p>{n}</p>" for n in views.notes)
                self.roi_png.value = roi_png(perf) if len(perf) else b""
            else:
                self.drill_html.value = (views.drill.to_html(index=False, max_rows=200)
                                         if views.settings.channel
                                         else "<p>Choose a channel in 'Drill into'.</p>")
            self._tab_of[tab] = views

    def _update_channels(self, views: Views) -> None:
        drop = self.controls["channel"]
        options = ["(none)", *sorted(views.credit["channel"].unique())]
        if list(drop.options) != options:
            self._frozen = True
            current = drop.value
            drop.options = options
            drop.value = current if current in options else "(none)"
            self._frozen = False

    def _start_intervals(self, s: Settings) -> None:
        self._generation += 1
        generation = self._generation
        models = [m for m in s.models if m != "time_decay"]
        self.progress.max, self.progress.value = max(len(models), 1), 0
        if not models:
            return

        def step(done: int, total: int) -> None:
            if generation == self._generation:
                self.progress.value = done

        def work() -> None:
            ci = bootstrap_intervals(self.data, s, self.cache, on_step=step,
                                     cancelled=lambda: generation != self._generation)
            if ci is None or generation != self._generation:
                return
            self.progress.value = self.progress.max
            views = replace(self.cache.views[s], credit=_with_intervals(
                self.cache.views[s].credit.drop(columns=["lower", "upper", "share_lower", "share_upper",
                                                         "rank_lower", "rank_upper"], errors="ignore"), ci))
            self.cache.views[s] = views
            if generation == self._generation:  # the intervals change the credit alone
                self.views = views
                for tab in [t for t, v in self._tab_of.items() if v.settings == s]:
                    self._tab_of[tab] = views  # what those tabs show is the same
                self._draw_credit(views)

        if self.background:
            self._thread = threading.Thread(target=work, name="closedloop-explore-bootstrap", daemon=True)
            self._thread.start()
        else:
            work()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background intervals; True when they finished."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def save(self) -> Path | None:
        """'Save as run': the current settings as ``parameters/<run name>.yaml``."""
        from closedloop_nb.report import ParameterError

        if self.data_dir is None:
            self.save_status.value = ("<b>Not saved:</b> the data folder is unknown; pass "
                                      "<code>data_dir=</code> to explore().")
            return None
        try:
            path = save_run(self.settings, self.run_name.value.strip(), self.data_dir, self.parameters_dir)
        except (ValueError, ParameterError) as exc:
            self.save_status.value = f"<b>Not saved:</b> {exc}"
            return None
        self.save_status.value = f"Saved {path}: run it with <code>closedloop report {path}</code>"
        return path

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.app)


def _ranks(credit: pd.DataFrame, flipped: set) -> pd.DataFrame:
    wide = credit.pivot(index="channel", columns="model", values="rank")
    wide.index = [f"{c} *" if c in flipped else c for c in wide.index]
    return wide.sort_values(list(wide.columns)[0])


def _date(value: str | None) -> Any:
    return pd.Timestamp(value).date() if value else None

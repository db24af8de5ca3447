"""Journeys under a narrower setting, derived from one wide build instead of built again.

A journey build (:func:`~closedloop_nb.journeys.build_journeys`) stitches every touch to its person
and cuts journeys: at 10M touchpoints that is tens of CPU seconds. The explorer's controls (lookback,
drop direct, collapse repeats, level, segment, date range) only ever *narrow* a build, so each
conversion is built once at the widest setting (:func:`wide_journeys`: the longest lookback, direct
kept, repeats kept, every level's step on each touch) and a setting is derived from it in SQL
(:meth:`WideJourneys.derive`), in the same order the build applies its options:

* lookback: a converting journey keeps its touches with ``ts >= conversion_at - lookback`` (the
  build's own bound, inclusive); non-converting journeys keep all of theirs;
* drop direct: touches whose ``channel`` is ``Direct`` are left out (a journey left empty goes);
* collapse repeats: a touch whose step equals the step of the journey's previous *kept* touch goes
  (the window runs after the filters above, as in the build);
* level: which precomputed step column names the step;
* people (segment, date range): only the touches of the kept people and of anonymous visitors
  (those inside the date range) stay, as :func:`closedloop_nb.explorer` narrows the tables.

The result is a :class:`~closedloop_nb.journeys.Journeys` whose touches are a view in the wide
build's connection: its path table and reconciliation are what a fresh build with those settings
gives (the tests compare the two on the sample and on hand-made journeys).

Examples
--------
>>> from closedloop_nb.synth import generate
>>> from closedloop_nb.validation import validate_tables
>>> from closedloop_nb.journeys import build_journeys
>>> tables = validate_tables(generate(1_500, seed=3).frames()).tables
>>> wide = wide_journeys(tables, "lead", lookback_days=365)
>>> got = wide.derive(lookback_days=30, drop_direct=True).paths
>>> want = build_journeys(tables, lookback_days=30, drop_direct=True, progress=False).paths
>>> bool((got["path"] == want["path"]).all() and (got["total_null"] == want["total_null"]).all())
True
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from closedloop_nb import journey_sql as q
from closedloop_nb.journeys import Journeys, _DuckDB, build_journeys

__all__ = ["LEVEL_STEPS", "WideJourneys", "wide_journeys"]

#: The step a touch takes at each level, as the build names it (``replace(..., '>', '›')``: a step
#: never holds the path separator; ``source_medium`` is ``source / medium`` as GA4 shows it).
LEVEL_STEPS = {
    "channel": "tp.channel",
    "campaign": "tp.campaign",
    "source_medium": "coalesce(CAST(tp.source AS VARCHAR), '(not set)') || ' / ' || "
                     "coalesce(CAST(tp.medium AS VARCHAR), '(not set)')",
    "keyword": "tp.keyword",
}
_NEEDS = {"channel": ("channel",), "campaign": ("campaign",), "source_medium": ("source", "medium"),
          "keyword": ("keyword",)}
_COLUMNS = "journey_id, person_id, visitor_id, touch_id, ts, step, channel, converted, conversion_at, value"
_names = itertools.count()


def _step(expr: str) -> str:
    return f"replace(COALESCE(CAST({expr} AS VARCHAR), '(not set)'), '>', '›')"


@dataclass
class People:
    """Who a narrowed setting keeps (a segment, a date range: see :mod:`closedloop_nb.explorer`).

    Attributes
    ----------
    kept
        The person ids whose touches stay (``None``: every person's).
    touches_from, touches_to
        Anonymous visitors' touches stay when ``touches_from <= ts < touches_to`` (``None``: open).
    rebuilt
        Journeys (a :class:`WideJourneys` at the same lookback) that replace those of the people they
        hold: the people a narrowed identity map gives visitors the wide build gave someone else.
    """

    kept: Any = None
    touches_from: pd.Timestamp | None = None
    touches_to: pd.Timestamp | None = None
    rebuilt: WideJourneys | None = None

    def key(self) -> tuple:
        return (None if self.kept is None else id(self.kept), self.touches_from, self.touches_to,
                None if self.rebuilt is None else id(self.rebuilt))


class _NonConverting:
    """The non-converting touches of a wide build as integer arrays sorted by journey, time and touch
    id: enough to count their paths under any setting in numpy (a few passes over the arrays) instead
    of an ordered string aggregation over millions of journeys in SQL."""

    def __init__(self, con: Any, name: str, levels: tuple[str, ...], dictionaries: dict[str, list[str]],
                 direct: str, where: str = "TRUE") -> None:
        import numpy as np
        import pyarrow.compute as pc

        n = next(_names)
        joins, cols = [], []
        for i, lv in enumerate(levels):  # steps as codes, joined in the engine (no strings come out)
            con.register(f"_cl_dict_{n}_{i}", pd.DataFrame({"s": pd.Series(dictionaries[lv], dtype=object),
                                                             "c": np.arange(len(dictionaries[lv]))}))
            joins.append(f" JOIN _cl_dict_{n}_{i} d{i} ON w.step_{lv} = d{i}.s")
            cols.append(f", d{i}.c AS code_{i}")
        d = direct.replace("'", "''")
        try:
            rel = con.sql(f"SELECT w.journey_id, w.person_id, epoch_us(w.ts) AS ts_us, "
                          f"coalesce(w.channel = '{d}', false) AS direct{''.join(cols)} FROM {name} w"
                          f"{''.join(joins)} WHERE {where} ORDER BY w.journey_id, w.ts, w.touch_id")
            table = (getattr(rel, "to_arrow_table", None) or rel.arrow)()
        finally:
            for i in range(len(levels)):
                con.unregister(f"_cl_dict_{n}_{i}")
        jid = table.column("journey_id").combine_chunks()
        rows = len(jid)
        new = np.ones(rows, dtype=bool)
        if rows > 1:
            new[1:] = pc.not_equal(jid.slice(1), jid.slice(0, rows - 1)).to_numpy(zero_copy_only=False)
        del jid
        self.journey = (np.cumsum(new) - 1).astype(np.int32)
        #: each journey's first touch
        self.starts = np.flatnonzero(new).astype(np.int32)
        del new
        self._groups: dict[tuple, _Groups] = {}
        self._bounds: Any = None
        # compact: only anonymous visitors' touches need their time (a date range bounds them), only
        # people's their person; step codes in the smallest integer that holds the level's dictionary
        person = pc.dictionary_encode(table.column("person_id").combine_chunks())
        self.person_names = person.dictionary.to_numpy(zero_copy_only=False).astype(object)
        #: each touch's person (an index into :attr:`person_names`, -1 anonymous); None: all anonymous
        self.person = (pc.fill_null(person.indices, -1).to_numpy().astype(np.int32)
                       if len(self.person_names) else None)
        anonymous = person.null_count > 0
        del person
        #: each touch's time in µs since the epoch, for anonymous visitors' touches (None: there are none)
        self.ts = table.column("ts_us").to_numpy().astype(np.int64) if anonymous else None
        self.direct = table.column("direct").to_numpy(zero_copy_only=False).astype(bool)
        self.direct_step = direct  # the channel step of a direct touch (its step at the channel level)
        self.codes = {lv: table.column(f"code_{i}").to_numpy().astype(_code_type(len(dictionaries[lv])))
                      for i, lv in enumerate(levels)}

    def __len__(self) -> int:
        return len(self.journey)

    def _people_kept(self, people: People) -> Any:
        """Which of ``person_names`` a narrowing keeps (in the kept people, not rebuilt): a boolean
        array, or ``None`` when it keeps everyone (or the touches carry no persons)."""
        import numpy as np

        if self.person is None or (people.kept is None and people.rebuilt is None):
            return None
        ok = np.ones(len(self.person_names), dtype=bool)
        if people.kept is not None:
            ok &= pd.Index(people.kept).get_indexer(self.person_names) >= 0
        if people.rebuilt is not None:
            ok &= pd.Index(people.rebuilt.people).get_indexer(self.person_names) < 0
        return ok

    def mask(self, people: People) -> Any:
        """Which touches a narrowing keeps: the kept people's (less the rebuilt people's) and the
        anonymous visitors' inside the date range."""
        import numpy as np

        keep = np.ones(len(self), dtype=bool)
        anon = np.ones(len(self), dtype=bool) if self.person is None else self.person < 0
        ok = self._people_kept(people)
        if ok is not None:
            keep &= np.append(ok, True)[np.where(anon, len(ok), self.person)]
        if self.ts is not None and people.touches_from is not None:
            keep &= ~anon | (self.ts >= people.touches_from.value // 1000)
        if self.ts is not None and people.touches_to is not None:
            keep &= ~anon | (self.ts < people.touches_to.value // 1000)
        return keep

    def journeys_kept(self, people: People) -> tuple[Any, Any]:
        """Which journeys a narrowing keeps whole, and which it cuts (anonymous visitors' journeys
        with touches on both sides of a date bound): boolean arrays over journeys (``None``: all
        kept, none cut). A person's journey is kept or dropped whole; an anonymous one is kept when
        all its touches are inside the date range and dropped when none is."""
        import numpy as np

        kept, cut = None, None
        ok = self._people_kept(people)
        if ok is not None:
            kept = np.append(ok, True)[self.person[self.starts]]  # -1 (anonymous): the last, True
        if self.ts is not None and (people.touches_from is not None or people.touches_to is not None):
            if self._bounds is None:  # each journey's first and last touch time (touches are in order)
                ends = np.append(self.starts[1:], len(self.journey)) - 1
                self._bounds = (self.ts[self.starts], self.ts[ends])
            first, last = self._bounds
            inside = np.ones(len(self.starts), dtype=bool)
            outside = np.zeros(len(self.starts), dtype=bool)
            if people.touches_from is not None:
                bound = people.touches_from.value // 1000
                inside &= first >= bound
                outside |= last < bound
            if people.touches_to is not None:
                bound = people.touches_to.value // 1000
                inside &= last < bound
                outside |= first >= bound
            if self.person is not None:  # people's journeys are not bounded by the dates
                anon = self.person[self.starts] < 0
                inside |= ~anon
                outside &= anon
            cut = ~inside & ~outside
            kept = inside if kept is None else kept & inside
        return kept, cut

    def groups(self, level: str, drop_direct: bool, collapse: bool, dictionary: list[str]) -> _Groups:
        """Every journey grouped by its path at ``level`` under the journey options (the last few
        options kept)."""
        key = (level, drop_direct, collapse)
        if key not in self._groups:
            codes = self.codes[level]
            plain, dropped = self._groups.get((level, False, False)), self._groups.get((level, True, False))
            direct = dictionary.index(self.direct_step) if self.direct_step in dictionary else None
            # from the distinct paths of a grouping made before: a journey's path under the options is
            # a function of its path there (collapsing works on the steps; at the channel level a
            # direct touch is known by its step)
            if collapse and drop_direct and dropped is not None and dropped.steps is not None:
                made = dropped.under(None, True, dictionary)
            elif plain is not None and plain.steps is not None and (not drop_direct or level == "channel"):
                made = plain.under(direct if drop_direct else None, collapse, dictionary)
            else:
                part = (self.journey[~self.direct], codes[~self.direct]) if drop_direct else (self.journey,
                                                                                                 codes)
                made = _path_groups([part], dictionary, collapse)
                del part
            if len(self._groups) >= 4:  # the plain grouping is kept: the others derive from it
                old = next((k for k in self._groups if k[1:] != (False, False)), next(iter(self._groups)))
                self._groups.pop(old)
            self._groups[key] = made
        return self._groups[key]

    def paths(self, level: str, drop_direct: bool, collapse: bool, dictionary: list[str],
              people: People) -> tuple[Any, int]:
        """The path table and touch count of the journeys a narrowing keeps: the journeys it keeps
        whole counted from :meth:`groups` (no pass over the touches), those a date bound cuts
        grouped again on their kept touches."""
        import pyarrow as pa

        kept, cut = self.journeys_kept(people)
        table, touches = self.groups(level, drop_direct, collapse, dictionary).table(kept)
        if cut is not None and cut.any():
            sel = cut[self.journey] & self.mask(people)
            if drop_direct:
                sel &= ~self.direct
            extra, more = _null_paths([(self.journey[sel], self.codes[level][sel])], dictionary, collapse)
            table, touches = pa.concat_tables([table, extra]), touches + more  # summed in derive()
        return table, touches

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        arrays = [self.journey, self.person, self.ts, self.direct, *self.codes.values()]
        return sum(a.nbytes for a in arrays if a is not None)


def _code_type(n: int) -> Any:
    """The smallest signed integer type holding codes ``0 .. n - 1``."""
    import numpy as np

    return next(t for t in (np.int8, np.int16, np.int32, np.int64) if n <= np.iinfo(t).max + 1)


def _spelt(dictionary: list[str], codes: Any, starts: Any, lengths: Any, sep: str) -> Any:
    """The paths ``codes[starts[i]:starts[i] + lengths[i]]`` spelt out with ``dictionary`` and joined
    by ``sep`` (an Arrow string array), in Arrow (one list array, one join) rather than a Python join
    per path.

    Examples
    --------
    >>> import numpy as np
    >>> _spelt(["A", "B"], np.array([0, 1, 1, 0]), np.array([0, 3]), np.array([3, 1]), " > ").to_pylist()
    ['A > B > B', 'A']
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    at = np.repeat(np.asarray(starts, dtype=np.int64) - offsets[:-1], lengths) + np.arange(offsets[-1])
    steps = pa.array(dictionary, type=pa.large_string()).take(pa.array(np.asarray(codes)[at]))
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), steps)
    return pc.binary_join(lists, pa.scalar(sep, pa.large_string()))


@dataclass
class _Groups:
    """Non-converting journeys grouped by path: for each journey left with a touch, its journey
    index, its path (a group) and its touch count; the paths spelt out once per group."""

    journey: Any  # journey index (as in the arrays it came from), one per journey with a touch
    group: Any  # its path's group
    lengths: Any  # its touches
    paths: Any  # an Arrow string array, one path per group
    steps: Any = None  # each group's step codes, end to end (``None``: not kept)

    def under(self, drop: int | None, collapse: bool, dictionary: list[str]) -> _Groups:
        """These journeys with the steps coded ``drop`` left out and/or repeats collapsed, grouped
        from the distinct paths (a path's journeys all become the same path) instead of from every
        touch: valid where the dropped touches are known by their step (direct at the channel level)."""
        import numpy as np

        n = len(self.paths)
        lengths = np.zeros(n, dtype=np.int64)
        lengths[self.group] = self.lengths  # each group's path length (its journeys' touches)
        owner = np.repeat(np.arange(n, dtype=np.int32), lengths)
        codes = self.steps
        if drop is not None:
            keep = codes != drop
            owner, codes = owner[keep], codes[keep]
        sub = _path_groups([(owner, codes)], dictionary, collapse)
        new = np.full(n, -1, dtype=np.int64)
        new[sub.journey] = sub.group
        size = np.zeros(n, dtype=np.int32)
        size[sub.journey] = sub.lengths
        to = new[self.group]
        ok = to >= 0  # journeys left with a touch
        return _Groups(self.journey[ok], to[ok].astype(np.int32), size[self.group][ok], sub.paths, sub.steps)

    def table(self, kept: Any = None) -> tuple[Any, int]:
        """The path table (an Arrow table in ChannelAttribution's columns, ``total_null`` only) and
        touch count of the journeys ``kept`` (a boolean array over journey indices; ``None``: all)."""
        import numpy as np
        import pyarrow as pa

        group, lengths = self.group, self.lengths
        if kept is not None:
            sel = kept[self.journey]
            group, lengths = group[sel], lengths[sel]
        counts = np.bincount(group, minlength=len(self.paths))
        present = counts > 0
        nulls = counts[present].astype(np.int64)
        return pa.table({"path": self.paths.filter(pa.array(present)),
                         "total_conversions": np.zeros(len(nulls), dtype=np.int64),
                         "total_conversion_value": np.zeros(len(nulls), dtype=np.float64),
                         "total_null": nulls}), int(lengths.sum())


def _path_groups(parts: list[tuple[Any, Any]], dictionary: list[str], collapse: bool,
                 sep: str = " > ") -> _Groups:
    """Non-converting journeys grouped by path (:class:`_Groups`), from ``(journey, code)`` arrays
    (each sorted by journey and time; journeys of different parts apart: their indices are offset
    part after part).

    Journeys are grouped by a polynomial hash of their step codes and their length, and every
    journey is then checked against its group's first journey, step by step: the grouping is exact
    (on a collision, never seen, two hashes and the length; a second collision raises rather than
    merge two paths)."""
    import numpy as np
    import pyarrow as pa

    journeys, codes, offset = [], [], 0
    for j, c in parts:
        if len(j):
            journeys.append(j.astype(np.int64) - int(j.min()) + offset if offset or len(parts) > 1 else j)
            codes.append(c)
            offset = int(journeys[-1].max()) + 1
    if not journeys:
        e = np.zeros(0, dtype=np.int64)
        return _Groups(e, e, e, pa.array([], type=pa.large_string()))
    j, c = (journeys[0], codes[0]) if len(journeys) == 1 else (np.concatenate(journeys),
                                                                  np.concatenate(codes))
    if collapse:
        keep = np.ones(len(j), dtype=bool)
        keep[1:] = (j[1:] != j[:-1]) | (c[1:] != c[:-1])
        j, c = j[keep], c[keep]
    n = len(j)
    start = np.ones(n, dtype=bool)
    start[1:] = j[1:] != j[:-1]
    starts = np.flatnonzero(start)
    del start
    lengths = np.diff(np.append(starts, n)).astype(np.int32)
    starts = starts.astype(np.int32)  # int32 throughout: a touch count fits, the temporaries halve
    pos = np.arange(n, dtype=np.int32) - np.repeat(starts, lengths)
    width = int(lengths.max())
    v = c.astype(np.uint64) + np.uint64(1)
    for attempt in range(2):  # one 64-bit key, then (on a collision, never seen) two hashes and the length
        with np.errstate(over="ignore"):
            p1 = np.cumprod(np.full(width, 0x9E3779B97F4A7C15, dtype=np.uint64), dtype=np.uint64)
            h1 = np.add.reduceat(v * p1[pos], starts)
            if attempt == 0:
                group = pd.factorize(h1 ^ (lengths.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)))[0]
            else:
                p2 = np.cumprod(np.full(width, 0xC2B2AE3D27D4EB4F, dtype=np.uint64), dtype=np.uint64)
                h2 = np.add.reduceat((v * v + np.uint64(0x165667B19E3779F9)) * p2[pos], starts)
                group = pd.DataFrame({"a": h1, "b": h2, "n": lengths}).groupby(["a", "b", "n"],
                                                                               sort=False).ngroup().to_numpy()
        first = np.empty(int(group.max()) + 1, dtype=np.int64)
        first[group[::-1]] = np.arange(len(group))[::-1]
        # each touch against the same position in its group's first journey
        same = (lengths[first[group]] == lengths).all() and (
            c[np.repeat(starts[first[group]] - starts, lengths) + np.arange(n, dtype=np.int32)] == c).all()
        if same:
            break
    else:
        raise RuntimeError("two non-converting paths share their hashes: report it (they are not merged)")
    at = np.repeat(starts[first].astype(np.int64), lengths[first]) + (
        np.arange(int(lengths[first].sum())) - np.repeat(np.cumsum(lengths[first]) - lengths[first],
                                                         lengths[first]))
    return _Groups(j[starts], group.astype(np.int32), lengths,
                   _spelt(dictionary, c, starts[first], lengths[first], sep), c[at])


def _null_paths(parts: list[tuple[Any, Any]], dictionary: list[str], collapse: bool,
                sep: str = " > ") -> tuple[Any, int]:
    """The path table of non-converting journeys (``total_null`` only) and their touch count, from
    ``(journey, code)`` arrays (see :func:`_path_groups`)."""
    return _path_groups(parts, dictionary, collapse, sep).table()


@dataclass
class WideJourneys:
    """One conversion's journeys at the widest setting, every level's step on each touch.

    Attributes
    ----------
    base
        The wide build itself (a :class:`~closedloop_nb.journeys.Journeys`, level ``channel``).
    con
        The DuckDB connection holding the wide touches: ``conv`` (converting) and ``null`` (not),
        each with the build's columns (``step`` the channel's) plus ``step_<level>`` for every level
        the touchpoints have.
    lookback_days
        The lookback of the wide build: the longest a derived setting can have.
    dictionaries
        Every step of each level in the touchpoints (their codes in the non-converting arrays).
    people
        The people whose journeys these are (for a rebuild of a few people; ``None`` for a whole build).
    """

    base: Journeys
    con: Any
    conv: str
    null: str
    lookback_days: int
    levels: tuple[str, ...]
    dictionaries: dict[str, list[str]]
    people: Any = None
    direct: str = "Direct"
    #: shared by the wide builds of one data (one per conversion): the anonymous visitors' journeys
    #: (the same for every conversion), their path counts per setting, the step dictionaries
    shared: dict = field(default_factory=dict)
    _arrays: _NonConverting | None = None
    _nulls: dict[tuple, tuple[pd.DataFrame, int]] = field(default_factory=dict)
    _derived: list[str] = field(default_factory=list)
    _registered: dict = field(default_factory=dict)
    _sums: dict[tuple, _NullSum] = field(default_factory=dict)

    def non_converting(self) -> _NonConverting:
        """The non-converting journeys of people (matched visitors), as arrays."""
        if self._arrays is None:
            self._arrays = _NonConverting(self.con, self.null, self.levels, self.dictionaries, self.direct,
                                          where="w.person_id IS NOT NULL")
        return self._arrays

    def anonymous(self) -> _NonConverting:
        """The anonymous visitors' journeys (never converting, the same for every conversion), as
        arrays kept once in :attr:`shared`."""
        if "anonymous" not in self.shared:
            self.shared["anonymous"] = _NonConverting(self.con, self.null, self.levels, self.dictionaries,
                                                      self.direct, where="w.person_id IS NULL")
        return self.shared["anonymous"]

    def derive(self, lookback_days: int = 90, level: str = "channel", drop_direct: bool = False,
               collapse_repeats: bool = False, people: People | None = None,
               reconcile: Any = None) -> Journeys:
        """The journeys a build with these settings gives (its ``paths``, ``reconciliation`` and
        touches), from the wide build: SQL filters and one window on the converting touches, numpy
        on the non-converting ones, instead of a build.

        ``people`` narrows to a segment or date range's people (:class:`People`); ``reconcile`` is
        then a callable ``(conv_table, null_touches, anonymous_touches_kept) -> reconciliation``
        (the conversions in differ from the wide build's).

        Raises
        ------
        ValueError
            A lookback longer than the wide build's, or a level the touchpoints do not have.
        """
        import numpy as np
        import pyarrow as pa

        if int(lookback_days) > self.lookback_days:
            raise ValueError(f"lookback {lookback_days} d is longer than the wide build's "
                             f"{self.lookback_days} d")
        if level not in self.levels:
            from closedloop_nb.errors import DataValidationError, Problem

            raise DataValidationError([Problem("touchpoints", "<touchpoints>", _NEEDS.get(level, (level,))[0],
                                               "missing column; journeys need it", "error")])
        people = people or People()
        n = next(_names)
        conv, view = f"_cl_derived_{n}_conv", f"_cl_derived_{n}"
        sql = self._sql(int(lookback_days), level, drop_direct, collapse_repeats, people,
                        self._sources(people))
        # the converting touches are materialised (every metric reads them); the others stay a view
        self.con.execute(f"CREATE TEMP TABLE {conv} AS SELECT * FROM ({sql('conv')})")
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT * FROM {conv} UNION ALL "
                         f"SELECT * FROM ({sql('null')})")
        self._derived.append(conv)
        eng = _DuckDB(con=self.con)
        anon = self.anonymous()
        anon_kept = anon.mask(people)
        anon_key = ("anonymous paths", level, drop_direct, collapse_repeats, people.touches_from,
                    people.touches_to)
        anon_store = self.shared.setdefault("anonymous paths", {})
        if anon_key not in anon_store:
            _bounded(anon_store, anon_key, anon.paths(level, drop_direct, collapse_repeats,
                                                      self.dictionaries[level], people))
        null_key = (level, drop_direct, collapse_repeats, people.key())
        if null_key not in self._nulls:  # non-converting journeys do not depend on the lookback
            nulls, touches = self.non_converting().paths(level, drop_direct, collapse_repeats,
                                                         self.dictionaries[level], people)
            if people.rebuilt is not None:
                other = people.rebuilt.non_converting()
                mine = ~other.direct if drop_direct else np.ones(len(other), dtype=bool)
                extra, more = _null_paths([(other.journey[mine], _recode(other, people.rebuilt, self,
                                                                         level)[mine])],
                                          self.dictionaries[level], collapse_repeats)
                nulls, touches = pa.concat_tables([nulls, extra]), touches + more
            _bounded(self._nulls, null_key, (nulls, touches))
        (anon_paths, anon_touches), (null_paths, null_touches) = anon_store[anon_key], self._nulls[null_key]
        sum_key = (anon_key, null_key)
        if sum_key not in self._sums:  # the non-converting paths summed once, merged per lookback
            _bounded(self._sums, sum_key, _NullSum.of(self.con, anon_paths, null_paths), keep=4)
        paths = self._sums[sum_key].merged(self.con, q.paths_sql("duckdb", touches=conv))
        if reconcile is None:
            recon = _reconciliation(self.base.reconciliation, self.con, conv, null_touches + anon_touches)
        else:
            recon = reconcile(self.con, conv, null_touches + anon_touches, int(anon_kept.sum()))
        return Journeys(paths, recon, eng, _table=view, conversion=self.base.conversion, unit=self.base.unit)

    def converting_sql(self, lookback_days: int = 90, level: str = "channel", drop_direct: bool = False,
                       collapse_repeats: bool = False, people: People | None = None) -> str:
        """SQL of the converting touches :meth:`derive` gives for these settings (in :attr:`con`),
        without the non-converting journeys' paths: for a figure of converting journeys alone (the
        explorer's lead sources)."""
        people = people or People()
        return self._sql(int(lookback_days), level, drop_direct, collapse_repeats, people,
                         self._sources(people))("conv")

    def _sources(self, people: People) -> dict[str, str]:
        """The tables of each part: the wide build's, or (with rebuilt people) the rebuilt people's
        touches registered beside them, once per rebuild."""
        if people.rebuilt is None:
            return {"conv": self.conv, "null": self.null}
        key = ("rebuilt sources", id(people.rebuilt))
        if key not in self._registered:  # the rebuilt people's touches, beside the kept ones
            n, names = next(_names), {}
            for part, table in (("conv", people.rebuilt.conv), ("null", people.rebuilt.null)):
                rel = people.rebuilt.con.sql(f"SELECT * FROM {table}")
                names[part] = f"_cl_rebuilt_touches_{n}_{part}"
                self.con.register(names[part], (getattr(rel, "to_arrow_table", None) or rel.arrow)())
            self._registered[key] = (people.rebuilt, names)  # the rebuild kept alive with its id
        return self._registered[key][1]

    def _sql(self, lookback: int, level: str, drop_direct: bool, collapse: bool, people: People,
             sources: dict[str, str]):
        keep = [f"(converted = 0 OR ts >= conversion_at - INTERVAL {lookback} DAY)"]
        if drop_direct:
            keep.append("(channel IS NULL OR channel <> '" + self.direct.replace("'", "''") + "')")
        narrow = []
        if people.kept is not None or people.rebuilt is not None:
            n = next(_names)
            ok = []
            if people.kept is not None:
                self.con.register(f"_cl_kept_{n}", pd.DataFrame({"person_id": pd.Series(people.kept,
                                                                                        dtype=object)}))
                ok.append(f"person_id IN (SELECT person_id FROM _cl_kept_{n})")
            if people.rebuilt is not None:
                self.con.register(f"_cl_rebuilt_{n}", pd.DataFrame({"person_id": pd.Series(
                    people.rebuilt.people, dtype=object)}))
                ok.append(f"person_id NOT IN (SELECT person_id FROM _cl_rebuilt_{n})")
            narrow.append(f"(person_id IS NULL OR ({' AND '.join(ok)}))")
        for bound, op in ((people.touches_from, ">="), (people.touches_to, "<")):
            if bound is not None:
                narrow.append(f"(person_id IS NOT NULL OR ts {op} TIMESTAMPTZ '{bound.isoformat()}')")
        steps = (f"journey_id, person_id, visitor_id, touch_id, ts, step_{level} AS step, channel, "
                 "converted, conversion_at, value")

        def sql(part: str) -> str:
            filtered = f"SELECT {steps} FROM {getattr(self, part)} WHERE {' AND '.join(keep + narrow)}"
            if sources[part] != getattr(self, part):  # the rebuilt people: their touches as rebuilt
                filtered += f" UNION ALL SELECT {steps} FROM {sources[part]} WHERE {' AND '.join(keep)}"
            if collapse:
                filtered = (f"SELECT * FROM (SELECT *, LAG(step) OVER (PARTITION BY journey_id ORDER BY ts, "
                            f"touch_id) AS prev_step FROM ({filtered})) WHERE prev_step IS NULL OR "
                            "prev_step <> step")
            # the non-converting part says ``converted`` is 0 as a constant: a query on converting
            # touches only (``WHERE converted = 1``: time decay, deal credits, trails) then folds it
            # away instead of running the collapse window over millions of non-converting touches
            columns = _COLUMNS.replace("converted", "0 AS converted") if part == "null" else _COLUMNS
            return f"SELECT {columns} FROM ({filtered})"
        return sql

    def release(self, journeys: Journeys) -> None:
        """Drop the tables of ``journeys`` derived here (a setting no longer shown: its converting
        touches held in DuckDB); journeys derived elsewhere are left alone."""
        conv = f"{journeys.table}_conv"
        if conv in self._derived:
            self.con.execute(f"DROP VIEW IF EXISTS {journeys.table}")
            self.con.execute(f"DROP TABLE IF EXISTS {conv}")
            self._derived.remove(conv)

    def close(self) -> None:
        """Drop the derived tables (the wide build stays)."""
        for name in self._derived:
            self.con.execute(f"DROP TABLE IF EXISTS {name}")
        self._derived.clear()


def _add_paths(con: Any, converting: str, *tables: Any) -> pd.DataFrame:
    """The path table of the converting journeys (the SQL ``converting``) and of the non-converting
    ones (Arrow ``tables``, a path possibly in several rows) added together, sorted by path as
    :func:`~closedloop_nb.journeys.add_paths` sorts a build's: one aggregation in DuckDB
    instead of a pandas group-by on hundreds of thousands of path strings."""
    n = next(_names)
    names = [f"_cl_paths_{n}_{i}" for i in range(len(tables))]
    for name, table in zip(names, tables, strict=True):
        con.register(name, table)
    cols = "path, total_conversions, total_conversion_value, total_null"
    parts = " UNION ALL ".join([f"SELECT {cols} FROM ({converting})"]
                               + [f"SELECT {cols} FROM {t}" for t in names])
    try:
        out = _DuckDB(con=con).frame(
            f"SELECT path, CAST(SUM(total_conversions) AS BIGINT) AS total_conversions, "
            f"CAST(SUM(total_conversion_value) AS DOUBLE) AS total_conversion_value, "
            f"CAST(SUM(total_null) AS BIGINT) AS total_null FROM ({parts}) GROUP BY path ORDER BY path")
    finally:
        for name in names:
            con.unregister(name)
    return out.astype({"total_conversions": "int64", "total_conversion_value": "float64",
                       "total_null": "int64"})


@dataclass
class _NullSum:
    """The non-converting journeys' path table of one setting, summed once (a path once, sorted by
    path as a build's table is): each lookback then merges its few converting paths into it
    (:meth:`merged`) instead of summing and sorting every non-converting path again (~0.35M at 10M
    touchpoints, 0.5 s per conversion and change)."""

    path: Any  # Arrow large_string, distinct, sorted
    null: Any  # total_null per path (int64)

    @classmethod
    def of(cls, con: Any, *tables: Any) -> _NullSum:
        import pyarrow as pa

        n = next(_names)
        names = [f"_cl_nulls_{n}_{i}" for i in range(len(tables))]
        for name, table in zip(names, tables, strict=True):
            con.register(name, table)
        parts = " UNION ALL ".join(f"SELECT path, total_null FROM {t}" for t in names)
        try:
            rel = con.sql(f"SELECT path, CAST(SUM(total_null) AS BIGINT) AS total_null FROM ({parts}) "
                          "GROUP BY path ORDER BY path")
            got = (getattr(rel, "to_arrow_table", None) or rel.arrow)()
        finally:
            for name in names:
                con.unregister(name)
        return cls(got.column("path").combine_chunks().cast(pa.large_string()),
                   got.column("total_null").to_numpy().astype("int64"))

    def merged(self, con: Any, converting: str) -> pd.DataFrame:
        """The whole path table: the converting paths (the SQL ``converting``) added to these, sorted
        by path (one Arrow sort of the distinct paths; no group-by of the non-converting ones)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        rel = con.sql(f"SELECT path, CAST(total_conversions AS BIGINT) AS c, CAST(total_conversion_value "
                      f"AS DOUBLE) AS v, CAST(total_null AS BIGINT) AS z FROM ({converting})")
        conv = (getattr(rel, "to_arrow_table", None) or rel.arrow)()
        cpath = conv.column("path").combine_chunks().cast(pa.large_string())
        c, v, z = (conv.column(k).to_numpy() for k in ("c", "v", "z"))
        n = len(self.path)
        at = pc.index_in(cpath, value_set=self.path) if n else pa.nulls(len(cpath), pa.int32())
        found = at.is_valid().to_numpy(zero_copy_only=False)
        where = at.filter(pa.array(found)).to_numpy(zero_copy_only=False).astype(np.int64)
        conversions, value = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float64)
        null = self.null.copy()
        conversions[where], value[where], null[where] = c[found], v[found], null[where] + z[found]
        new = ~found
        both = pa.concat_arrays([self.path, cpath.filter(pa.array(new))])  # distinct paths
        order = pc.sort_indices(both).to_numpy()  # by bytes, as DuckDB's ORDER BY and a build sort
        out = pa.table({"path": both.take(pa.array(order)),
                        "total_conversions": np.concatenate([conversions, c[new]])[order],
                        "total_conversion_value": np.concatenate([value, v[new]])[order],
                        "total_null": np.concatenate([null, z[new]])[order]})
        return out.to_pandas()


#: path tables of non-converting journeys kept per setting (each wide build, and the anonymous ones)
KEEP_PATHS = 8


def _bounded(store: dict, key: Any, value: Any, keep: int = KEEP_PATHS) -> None:
    """``store[key] = value``, forgetting the oldest entries beyond ``keep``."""
    store[key] = value
    while len(store) > keep:
        store.pop(next(iter(store)))


def _recode(arrays: _NonConverting, owner: WideJourneys, into: WideJourneys, level: str) -> Any:
    """``arrays``' step codes at ``level`` (in ``owner``'s dictionary) in ``into``'s dictionary."""
    import numpy as np

    index = {v: i for i, v in enumerate(into.dictionaries[level])}
    remap = np.array([index[v] for v in owner.dictionaries[level]], dtype=np.int64)
    return remap[arrays.codes[level]] if len(remap) else arrays.codes[level]


def _reconciliation(base: pd.DataFrame, con: Any, conv: str, null_touches: int,
                    replace: dict[tuple[str, str], tuple[float, float | None]] | None = None) -> pd.DataFrame:
    """The build's reconciliation for derived journeys: what does not depend on the options (the
    conversions and touches in, conversions whose person has no touches at all, identities) is the
    wide build's, or ``replace``'s; the rest is counted on the derived touches."""
    out = base.copy()
    n_dtype = out["n"].dtype

    def at(item: str, bucket: str) -> Any:
        return (out["item"] == item) & (out["bucket"] == bucket)

    for (item, bucket), (n, v) in (replace or {}).items():
        out.loc[at(item, bucket), "n"] = n
        if v is not None:
            out.loc[at(item, bucket), "value"] = v
    n_journeys, value, n_touches = con.execute(
        f"SELECT COUNT(*), SUM(v), SUM(k) FROM (SELECT journey_id, MAX(value) AS v, COUNT(*) AS k "
        f"FROM {conv} GROUP BY journey_id)").fetchall()[0]
    n_journeys, n_touches, value = int(n_journeys), int(n_touches or 0), float(value or 0.0)

    def get(item: str, bucket: str, col: str) -> float:
        return float(out.loc[at(item, bucket), col].iloc[0])

    conv_in, value_in = get("conversions", "in", "n"), get("conversions", "in", "value")
    offline = "unattributed: no touches at all (offline or unmatched)"
    none_n, none_value = get("conversions", offline, "n"), get("conversions", offline, "value")
    touches_in = get("touches", "in", "n")
    rows = {("conversions", "with a journey"): (n_journeys, value),
            ("conversions", "unattributed: no touches in the lookback window"): (
                conv_in - n_journeys - none_n, value_in - value - none_value),
            ("touches", "in converting journeys"): (n_touches, None),
            ("touches", "in non-converting journeys"): (null_touches, None)}
    rows[("touches", "not in any journey (before the lookback, after the last conversion, or dropped by "
          "the options)")] = (touches_in - n_touches - null_touches, None)
    for (item, bucket), (n, v) in rows.items():
        mask = at(item, bucket)
        out.loc[mask, "n"] = n
        if v is not None:
            out.loc[mask, "value"] = v
    if conv_in == 0:  # SQL sums over no conversions are NULL, as a build gives them
        for bucket in ("with a journey", "unattributed: no touches in the lookback window", offline):
            out.loc[at("conversions", bucket), ["n", "value"]] = None
        out["n"] = out["n"].astype(object).where(out["n"].notna(), None)
        return out
    out["n"] = out["n"].astype(n_dtype)
    return out


def _wide_source() -> str:
    """The code that decides what a stored wide build holds (its SQL, steps and levels): its hash
    names the stored files, so a change elsewhere in this module (how settings are derived) keeps them."""
    import inspect

    return "\n".join([inspect.getsource(wide_journeys), inspect.getsource(_step), repr(LEVEL_STEPS),
                      repr(_NEEDS), _COLUMNS])


def _stored(ws: Any, base: Journeys) -> Path | None:
    """Where a workspace keeps the wide touches of its build ``base``: beside that build's own cached
    files, under the hash of the code that writes them (``None`` when the workspace does not say where
    it lives)."""
    import hashlib

    path, key, table = getattr(ws, "path", None), getattr(ws, "key", None), base.table
    if path is None or key is None or not (table.startswith("_j") and table.endswith("_journey_touches")):
        return None
    code = hashlib.sha256(_wide_source().encode()).hexdigest()[:12]
    return Path(path).with_name(f"{key}.journeys") / table[2:-len("_journey_touches")] / f"wide-{code}"


def _small_build(tables: dict[str, Any], conversion: str, lookback_days: int) -> Journeys:
    """:func:`~closedloop_nb.journeys.build_journeys` of small tables (a few people's) in an in-memory
    DuckDB: the same steps, without the temporary database file a build at scale spills to."""
    import duckdb

    from closedloop_nb import journeys as jm

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    eng = _DuckDB(con=con)
    items = jm._sources(tables)
    for name, item in items.items():
        eng.register(name, item)
    args = jm.journey_arguments(conversion, lookback_days, "channel")
    paths, recon = jm._run(eng, items, args, "duckdb")
    return Journeys(paths, recon, eng, conversion=conversion, unit=jm.unit_used(args, items))


def wide_journeys(source: Any, conversion: str, lookback_days: int = 365, memory_limit: str = "1GB",
                  folder: str | Path | None = None, people: Any = None,
                  dictionaries: dict[str, list[str]] | None = None,
                  shared: dict | None = None) -> WideJourneys:
    """``conversion``'s journeys at the widest setting (``lookback_days``, direct and repeats kept),
    with every level's step on each touch, ready for :meth:`WideJourneys.derive`.

    ``source`` is a dict of validated tables (built in DuckDB kept to ``memory_limit``) or a run
    workspace (its cached build, read back; the wide touches are written as Parquet beside that
    build's cached files, once per workspace, so the next session reads them; or to ``folder`` when
    the workspace does not say where it lives: its database is never written to).
    ``people`` and ``dictionaries`` are for a rebuild of a few people (:class:`People`): who they are,
    and the whole build's step dictionaries. ``shared`` is a dict kept by the caller for every wide
    build of the same data (see :attr:`WideJourneys.shared`).
    """
    workspace = hasattr(source, "con") and hasattr(source, "journeys")
    if workspace:
        base = source.journeys(conversion=conversion, lookback_days=lookback_days, level="channel")
        con = source.con
    elif people is not None:  # a few people's tables: an in-memory build (no database file to set up)
        base = _small_build(source, conversion, lookback_days)
        con = base._engine.con
    else:
        base = build_journeys(source, conversion=conversion, lookback_days=lookback_days, level="channel",
                              progress=False, memory_limit=memory_limit)
        con = base._engine.con
    have = {r[0] for r in con.execute("DESCRIBE touchpoints").fetchall()}
    levels = tuple(lv for lv, cols in _NEEDS.items() if all(c in have for c in cols))
    shared = {} if shared is None else shared
    n = next(_names)
    names = {"conv": f"_cl_wide_{n}_conv", "null": f"_cl_wide_{n}_null"}
    stored = _stored(source, base) if workspace else None
    if stored is not None and (stored / "dictionaries.json").is_file():  # written by an earlier session
        dictionaries = dictionaries or json.loads((stored / "dictionaries.json").read_text("utf-8"))
        for part in names:
            path = str(stored / f"{part}.parquet").replace("'", "''")
            con.execute(f"CREATE OR REPLACE TEMP VIEW {names[part]} AS SELECT * FROM read_parquet('{path}')")
        return WideJourneys(base, con, names["conv"], names["null"], int(lookback_days), levels, dictionaries,
                            people=people, shared=shared)
    dictionaries = dictionaries or shared.get("dictionaries")
    if dictionaries is None:  # every step of the touchpoints, so a rebuild's steps have a code too
        shared["dictionaries"] = dictionaries = {lv: sorted(r[0] for r in con.execute(
            f"SELECT DISTINCT {_step(LEVEL_STEPS[lv])} FROM touchpoints tp").fetchall()) for lv in levels}
    steps = "".join(f", {_step(LEVEL_STEPS[lv])} AS step_{lv}" for lv in levels)
    tmp = None
    if workspace:
        if stored is None and folder is None:
            raise ValueError("a workspace's wide journeys need a folder for their Parquet files")
        tmp = stored.with_name(f".{stored.name}.{os.getpid()}.tmp") if stored is not None else Path(folder)
        tmp.mkdir(parents=True, exist_ok=True)
    for part, flag in (("conv", 1), ("null", 0)):
        select = (f"SELECT j.*{steps} FROM {base.table} j JOIN touchpoints tp ON j.touch_id = tp.touch_id "
                  f"WHERE j.converted = {flag}")
        if workspace:
            path = str(tmp / f"{names[part] if stored is None else part}.parquet").replace("'", "''")
            con.execute(f"COPY ({select}) TO '{path}' (FORMAT parquet)")
        else:
            con.execute(f"CREATE TEMP TABLE {names[part]} AS {select}")
    if stored is not None:  # kept beside the workspace's journeys: the next session reads them
        (tmp / "dictionaries.json").write_text(json.dumps(dictionaries), "utf-8")
        try:
            os.replace(tmp, stored)
        except OSError:  # another process stored them first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
    if workspace:
        for part in names:
            path = (stored / f"{part}.parquet") if stored is not None else tmp / f"{names[part]}.parquet"
            sql_path = str(path).replace("'", "''")
            con.execute(f"CREATE OR REPLACE TEMP VIEW {names[part]} AS SELECT * FROM "
                        f"read_parquet('{sql_path}')")
    got = con.execute(f"SELECT (SELECT COUNT(*) FROM {names['conv']}) + (SELECT COUNT(*) FROM "
                      f"{names['null']})").fetchall()[0][0]
    want = con.execute(f"SELECT COUNT(*) FROM {base.table}").fetchall()[0][0]
    if got != want:
        raise ValueError(f"touch_id is not unique in the touchpoints ({got:,} joined rows for {want:,} "
                         "journey touches): validate the tables first")
    return WideJourneys(base, con, names["conv"], names["null"], int(lookback_days), levels, dictionaries,
                        people=people, shared=shared)

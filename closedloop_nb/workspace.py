"""The run workspace: one ingest per run, read by every notebook.

:func:`open_workspace` validates the canonical tables of a folder once, in the engine
(:mod:`closedloop_nb.ingest`), into a DuckDB database file in a cache folder, and hands back a
:class:`Workspace`. The file's name is a hash of everything the result depends on: the bytes of the
input files read, the time zone, the channel rules, and the code that validates. Opening it again on
unchanged inputs (the next notebook of a run, a re-run, another run on the same data) reuses the file
and validates nothing; changing one input makes a new file.

Where the files live: ``cache_dir`` if given, else the ``CLOSEDLOOP_WORKSPACE_DIR`` environment
variable (the report runner can point it at its output folder; papermill's kernels inherit it), else
``$XDG_CACHE_HOME/closedloop/workspaces`` (``~/.cache/closedloop/workspaces``).

Several processes may open one workspace at once (the notebooks of a run, runs in parallel on the
same data): the first builds it under a lock file into a temporary name and renames the finished
database into place, so nobody ever reads a half-built one; the others wait for the lock, then read.
The database is opened read-only (many readers at once); each Workspace works in an in-memory DuckDB
connection of its own that attaches it, so callers can create temporary tables and register frames.

Examples
--------
>>> import tempfile
>>> from closedloop_nb.config import SAMPLE_DIR
>>> ws = open_workspace(SAMPLE_DIR, cache_dir=tempfile.mkdtemp())
>>> "deals" in ws, len(ws["deals"]) == ws.report.counts["deals"]["rows_kept"]
(True, True)
>>> ws.con.sql("SELECT COUNT(*) FROM touchpoints").fetchall()[0][0] > 0
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from closedloop_nb.channels import ChannelRules
from closedloop_nb.errors import Problem
from closedloop_nb.schema import TABLES, table_spec
from closedloop_nb.validation import ValidationReport, _find_table_files

__all__ = ["ENV_DIR", "Workspace", "default_cache_dir", "open_workspace", "prune_workspaces"]

#: DuckDB's memory limit while a journey build (or a re-levelled one) runs: at the workspace's own
#: (1 GB by default) a 10M-touchpoint build's sorts spill to disk (37-39 s of CPU) and a re-levelling
#: join 43 s; at 2 GB, 30-34 s and 18 s, but a report run's kernel then peaked at 3.1 GiB; 1.7 GB keeps
#: it at 2.8 GiB, under the 3 GiB a run's processes keep to (benchmarks/RESULTS.md)
JOURNEY_MEMORY_LIMIT = "1.7GB"

#: Journeys with a shorter lookback (and options that allow it: :func:`closedloop_nb.journeys.shortens`)
#: are derived from one build at this lookback, so that the reports' lookbacks (the run's, and the
#: 30-180 days of :func:`closedloop_nb.attribution.compare.sensitivity`) share one build.
WIDE_LOOKBACK_DAYS = 180

#: Environment variable naming the folder workspaces are kept in.
ENV_DIR = "CLOSEDLOOP_WORKSPACE_DIR"
#: Bumped when the layout of the database changes (old files are then not reused).
FORMAT = 1
#: Modules whose code decides what a workspace holds: their source is part of the key.
_CODE = ("schema.py", "loaders.py", "validation.py", "channels.py", "ingest.py", "workspace.py", "money.py")
_JOURNEY_CODE = ("journey_sql.py", "journeys.py")


def default_cache_dir() -> Path:
    """Where workspaces go when no folder is given: ``$CLOSEDLOOP_WORKSPACE_DIR``, else the user's
    cache folder (``$XDG_CACHE_HOME/closedloop/workspaces``, ``~/.cache/...``)."""
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "closedloop" / "workspaces"


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _code_hash(names: tuple[str, ...]) -> str:
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes())
    return digest.hexdigest()


def _rules_hash(rules: ChannelRules | None) -> str:
    if rules is None:
        return "default"
    return hashlib.sha256(json.dumps(dataclasses.asdict(rules), sort_keys=True, default=str).encode()
                          ).hexdigest()


def _key(items: dict[str, Path], timezone: str | None, rules: ChannelRules | None,
         reporting_currency: str | None = None) -> tuple[str, dict]:
    parts = {"format": FORMAT, "code": _code_hash(_CODE), "timezone": timezone or "",
             "channel_rules": _rules_hash(rules), "reporting_currency": reporting_currency or "",
             "inputs": {table: {"name": path.name, "sha256": _file_hash(path)}
                        for table, path in items.items()}}
    blob = json.dumps(parts, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:24], parts


@contextlib.contextmanager
def _locked(path: Path, poll: float = 0.2) -> Iterator[None]:
    """An exclusive lock on ``path`` (``fcntl.flock``; a lock file created exclusively elsewhere)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: a lock file made with O_EXCL
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                time.sleep(poll)
        try:
            yield
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
        return
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _report_to_json(report: ValidationReport) -> str:
    return json.dumps({"problems": [dataclasses.asdict(p) for p in report.problems], "counts": report.counts})


def _report_from_json(text: str) -> ValidationReport:
    data = json.loads(text)
    problems = [Problem(**{**p, "rows": tuple(p["rows"])}) for p in data["problems"]]
    return ValidationReport(problems, data["counts"])


def _build(path: Path, items: dict[str, Path], timezone: str | None, rules: ChannelRules | None,
           parts: dict, chunk_rows: int | None, memory_limit: str,
           reporting_currency: str | None = None) -> None:
    """Ingest into a temporary database beside ``path``, then rename it into place."""
    import duckdb

    from closedloop_nb.ingest import CHUNK_ROWS, ingest

    # builds run under the workspace's lock, so another build's leftovers are a killed build's: gone
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):
        stale.unlink(missing_ok=True)
    for stale in path.parent.glob(f".{path.stem}.*.spill"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    spill = path.with_name(f".{path.stem}.{os.getpid()}.spill")
    try:
        con = duckdb.connect(str(tmp))
        try:
            con.execute(f"SET memory_limit = '{memory_limit}'")
            con.execute("SET enable_progress_bar = false")
            con.execute(f"SET temp_directory = '{str(spill).replace(chr(39), chr(39) * 2)}'")
            report = ingest(items, con, timezone=timezone, channel_rules=rules,
                            chunk_rows=chunk_rows or CHUNK_ROWS, reporting_currency=reporting_currency)
            if "identities" in items and _has(con, "identities"):
                # the person of each visitor: the earliest match (ties: the smallest person_id), as the
                # journeys count it
                con.execute("CREATE TABLE identity_map AS SELECT visitor_id, person_id FROM ("
                            "SELECT visitor_id, person_id, ROW_NUMBER() OVER (PARTITION BY visitor_id "
                            "ORDER BY matched_at, person_id) AS rn FROM identities) WHERE rn = 1")
            con.execute("CREATE TABLE _workspace (name VARCHAR, value VARCHAR)")
            con.execute("INSERT INTO _workspace VALUES ('report', ?), ('key', ?)",
                        [_report_to_json(report), json.dumps(parts, sort_keys=True)])
            con.execute("CHECKPOINT")
        finally:
            con.close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(spill, ignore_errors=True)


def _slug(currency: str) -> str:
    """A file-name-safe tag of a currency slice (``(no currency)`` -> ``nocurrency``)."""
    return "".join(ch for ch in currency if ch.isalnum()) or "nocurrency"


def _has(con: Any, name: str) -> bool:
    return bool(con.execute(f"SELECT COUNT(*) FROM duckdb_tables() WHERE table_name = '{name}'"
                            ).fetchall()[0][0])


def open_workspace(data_dir: str | Path | dict[str, str | Path], *, timezone: str | None = None,
                   channel_rules: ChannelRules | None = None, cache_dir: str | Path | None = None,
                   chunk_rows: int | None = None, memory_limit: str = "1GB",
                   reporting_currency: str | None = None, fx_rates: str | Path | None = None,
                   engine: str | None = None, spark: Any = None) -> Workspace:
    """Validate the canonical tables of ``data_dir`` once, or reuse the workspace that did.

    Parameters
    ----------
    data_dir
        A folder of ``<table>.parquet`` / ``.csv`` files (as ``closedloop synth`` writes), or
        ``{table: path}``.
    timezone
        Time zone of naive timestamps (IANA name).
    channel_rules
        Rules for touches without a channel (GA4 default channel group when omitted).
    cache_dir
        Folder of the workspace files (see :func:`default_cache_dir`).
    chunk_rows
        Rows validated in pandas at a time (:data:`closedloop_nb.ingest.CHUNK_ROWS`).
    memory_limit
        DuckDB's memory limit for building and querying; beyond it DuckDB spills to disk.
    reporting_currency
        ISO 4217 code every money column is converted into at build, with the ``fx_rates`` table
        (:func:`closedloop_nb.ingest.convert_money`: deals at their close date, or creation date while
        open; orders at their date; MRR at its month; spend at its day; the amounts as recorded kept
        in ``original_<column>`` and ``original_currency``), so that every table, journey and metric
        read from the workspace is in that one currency. Rows without a rate are rejected and
        counted in ``ws.report``. ``None``: money stays as recorded (see :meth:`Workspace.in_currency`
        for a table in several).
    fx_rates
        A rates file (CSV or Parquet: ``date``, ``currency``, ``rate``, optionally ``to_currency``)
        used instead of the data folder's ``fx_rates`` table; needs ``reporting_currency``.
    engine
        ``duckdb`` (the default) or ``spark``: a :class:`~closedloop_nb.spark_workspace.SparkWorkspace`
        (ingest, journeys and metrics on Spark; ``data_dir`` may then also name ``s3a://`` folders
        and catalog tables). None: ``$CLOSEDLOOP_ENGINE`` (the report runner sets it from a
        parameter file's ``engine:``), else ``duckdb``.
    spark
        A SparkSession for ``engine="spark"`` (else ``$CLOSEDLOOP_SPARK_MASTER``, local mode).

    Returns
    -------
    Workspace

    Raises
    ------
    DataValidationError
        When a file cannot be read at all (missing, empty, not UTF-8), as ``load_dataset``; with a
        reporting currency, also when rates are needed and absent, or unusable (naming the rows).
        Other fatal problems are in ``ws.report.errors`` (``ws.report.raise_for_errors()``).
    ValueError
        ``reporting_currency`` is no ISO 4217 code, or ``fx_rates`` is given without it.
    """
    engine = (engine or os.environ.get("CLOSEDLOOP_ENGINE") or "duckdb").lower()  # spark: engine dispatch
    if engine == "spark":
        from closedloop_nb.spark_workspace import open_spark_workspace

        if reporting_currency or fx_rates:
            raise ValueError("reporting_currency and fx_rates are not built on Spark yet: run with "
                             "engine duckdb to convert money, or report each currency on its own "
                             "(only_currency)")
        return open_spark_workspace(data_dir, timezone=timezone, channel_rules=channel_rules,
                                    cache_dir=cache_dir, spark=spark)  # type: ignore[return-value]
    if engine != "duckdb":
        raise ValueError(f"engine must be 'duckdb' or 'spark', got {engine!r}")
    if isinstance(data_dir, (str, Path)):
        directory = Path(data_dir)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} is not a directory of canonical tables")
        items = dict(_find_table_files(directory))
        if not items:
            raise FileNotFoundError(
                f"{directory} holds no canonical table files (expected names like "
                f"{', '.join(t + '.parquet' for t in list(TABLES)[:3])}, ...)")
    else:
        items = {table: Path(p) for table, p in data_dir.items()}
    if reporting_currency is not None and not str(reporting_currency).strip():
        reporting_currency = None
    if reporting_currency is not None:
        from closedloop_nb.money import currency_codes

        reporting_currency = str(reporting_currency).strip().upper()
        if reporting_currency not in currency_codes():
            raise ValueError(f"reporting_currency {reporting_currency!r} is not an ISO 4217 currency code "
                             "(three letters, e.g. USD, EUR, GBP)")
    if fx_rates is not None and str(fx_rates).strip():
        if reporting_currency is None:
            raise ValueError(f"fx_rates {fx_rates} was given without a reporting_currency to convert into")
        items = {**items, "fx_rates": Path(fx_rates)}
    missing = [str(p) for p in items.values() if not p.is_file()]
    if missing:
        from closedloop_nb.errors import DataValidationError

        raise DataValidationError([Problem(t, str(p), None, "file not found", "error")
                                   for t, p in items.items() if not p.is_file()])
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        if cache_dir is not None:
            raise
        import tempfile  # no writable home (a locked-down CI runner): the system's temporary folder

        folder = Path(tempfile.gettempdir()) / "closedloop-workspaces"
        folder.mkdir(parents=True, exist_ok=True)
    key, parts = _key(items, timezone, channel_rules, reporting_currency)
    path = folder / f"{key}.duckdb"
    built = False
    if not path.exists():
        with _locked(folder / f"{key}.lock"):
            if not path.exists():  # another process may have built it while we waited
                _build(path, items, timezone, channel_rules, parts, chunk_rows, memory_limit,
                       reporting_currency)
                built = True
    os.utime(path)  # last use, for pruning old workspaces by age
    return Workspace(path, key, built=built, memory_limit=memory_limit)


def prune_workspaces(cache_dir: str | Path | None = None, older_than_days: float = 30) -> list[str]:
    """Delete the workspaces (database, journeys, Parquet copies) not opened for ``older_than_days``.

    A workspace being built (its lock held) is left alone; readers that still have a deleted one
    open keep reading it (the file goes when they close it). Returns the keys deleted.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cutoff = time.time() - older_than_days * 86400
    gone = []
    for db in sorted(folder.glob("*.duckdb")):
        key = db.stem
        if db.stat().st_mtime >= cutoff:
            continue
        with _locked(folder / f"{key}.lock"):
            db.unlink(missing_ok=True)
            for extra in (folder / f"{key}.journeys", folder / f"{key}.parquet",
                          *folder.glob(f"{key}.*.journeys"), *folder.glob(f"{key}.*.parquet")):
                shutil.rmtree(extra, ignore_errors=True)
            (folder / f"{key}.parquet.lock").unlink(missing_ok=True)
        (folder / f"{key}.lock").unlink(missing_ok=True)
        gone.append(key)
    return gone


class TableMapping(Mapping):
    """The validated tables of a workspace by name (``_tables``), each materialised as pandas on first
    use and cached (``_frames``); a subclass says how a table's rows come out as Arrow (``_arrow``)."""

    _tables: Any
    _frames: dict[str, pd.DataFrame]

    def _arrow(self, name: str) -> Any:
        raise NotImplementedError

    def __getitem__(self, name: str) -> pd.DataFrame:
        if name not in self._tables:
            raise KeyError(f"no table {name!r} in this workspace; it has {', '.join(self._tables) or 'none'}")
        if name not in self._frames:
            from closedloop_nb.ingest import to_pandas

            self._frames[name] = to_pandas(self._arrow(name), table_spec(name))
        return self._frames[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def __contains__(self, name: object) -> bool:
        return name in self._tables


class Workspace(TableMapping):
    """A run's validated tables in DuckDB, readable as a ``Mapping[str, pandas.DataFrame]``.

    ``ws["deals"]`` materialises that table as pandas (cached; at scale, materialise only small
    tables, never the touchpoints); ``ws.con`` is a DuckDB connection in which every present table
    is a view named as in :mod:`closedloop_nb.schema` (plus ``identity_map``: the person of each
    visitor, and ``stitched_touches``: every touch with its person), typed as it says (timestamps
    ``TIMESTAMPTZ`` in UTC). Functions taking ``tables: dict[str, DataFrame]`` work on it unchanged.

    Attributes
    ----------
    path
        The database file.
    key
        The hash naming it (inputs, time zone, channel rules, code).
    report
        The :class:`~closedloop_nb.validation.ValidationReport` of the ingest.
    built
        Whether this open built the database (False: reused).
    reporting_currency
        The currency every money column was converted into at build (``open_workspace(...,
        reporting_currency=)``), or None: money as recorded.
    only_currency
        For a slice (:meth:`in_currency`): the one currency whose money it holds; None otherwise.
    """

    def __init__(self, path: Path, key: str, built: bool = False, memory_limit: str = "1GB",
                 only_currency: str | None = None) -> None:
        import duckdb

        self.path = Path(path)
        self.key = key if only_currency is None else f"{key}.{_slug(only_currency)}"
        self.built = built
        self.only_currency = only_currency
        self._memory_limit = memory_limit
        # this reader's own tables (journeys being built, a caller's temporary tables) live in a
        # scratch database file, so that DuckDB's buffer manager keeps them to memory_limit and spills
        # beyond it (in-memory databases do not); the workspace itself is attached read-only
        import tempfile

        self._scratch = tempfile.TemporaryDirectory(prefix="closedloop-ws-")
        self._spill = Path(self._scratch.name)
        self.con = duckdb.connect(str(self._spill / "scratch.duckdb"))
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(f"SET memory_limit = '{memory_limit}'")
        self.con.execute(f"SET temp_directory = '{str(self._spill).replace(chr(39), chr(39) * 2)}'")
        self.con.execute("SET enable_progress_bar = false")
        quoted = str(self.path).replace("'", "''")
        self.con.execute(f"ATTACH '{quoted}' AS ws (READ_ONLY)")
        present = {r[0] for r in self.con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = 'ws'").fetchall()}
        from closedloop_nb.ingest import ORDER

        self._tables = [t for t in ORDER if t in present]  # the order load_dataset's tables come in
        for name in [*self._tables, *(["identity_map"] if "identity_map" in present else [])]:
            self.con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM ws."{name}"{self._only(name)}')
        if "identity_map" in present and "touchpoints" in present:
            self.con.execute("CREATE VIEW stitched_touches AS SELECT tp.*, m.person_id FROM touchpoints tp "
                             "LEFT JOIN identity_map m ON tp.visitor_id = m.visitor_id")
        meta = dict(self.con.execute("SELECT name, value FROM ws._workspace").fetchall())
        self.report: ValidationReport = _report_from_json(meta["report"])
        self.inputs: dict[str, Any] = json.loads(meta["key"])
        #: The currency every money column was converted into at build (None: money as recorded).
        self.reporting_currency: str | None = self.inputs.get("reporting_currency") or None
        self._frames: dict[str, pd.DataFrame] = {}
        self._journeys: dict[Any, Any] = {}

    def _only(self, name: str) -> str:
        """The filter of table ``name``'s view in a one-currency slice (:meth:`in_currency`)."""
        if self.only_currency is None:
            return ""
        from closedloop_nb.money import MONEY_COLUMNS, UNKNOWN

        code = self.only_currency
        same = "currency IS NULL" if code == UNKNOWN else "currency = '" + code.replace("'", "''") + "'"
        if name in MONEY_COLUMNS:
            return f" WHERE {same}"
        if name in ("stage_history", "deal_contacts") and "deals" in self._tables:
            return f" WHERE deal_id IN (SELECT deal_id FROM ws.deals WHERE {same})"
        return ""

    # -- money ------------------------------------------------------------------------------------
    def currencies(self) -> list[str]:
        """The currencies of the money tables' rows, sorted (``(no currency)`` last, when some rows
        have one and others none); one code after a conversion to a reporting currency."""
        from closedloop_nb.money import MONEY_COLUMNS, UNKNOWN

        found: set[str] = set()
        blank = False
        for name in (n for n in MONEY_COLUMNS if n in self._tables):
            for (code,) in self.con.execute(f'SELECT DISTINCT currency FROM "{name}"').fetchall():
                if code is None:
                    blank = True
                else:
                    found.add(str(code).upper())
        return sorted(found) + ([UNKNOWN] if blank and found else [])

    def in_currency(self, currency: str) -> Workspace:
        """This workspace with only the money recorded in ``currency``: the deals (with their stage
        history and contacts), orders, MRR movements and spend in it; touches, leads and identities
        all. Its journeys are cached apart. The way to report money in several currencies when no
        ``fx_rates`` convert it: one slice per currency, never a sum across them.

        Examples
        --------
        >>> import tempfile
        >>> from closedloop_nb.config import SAMPLE_DIR
        >>> ws = open_workspace(SAMPLE_DIR, cache_dir=tempfile.mkdtemp())
        >>> ws.in_currency("GBP").rows("deals") == ws.rows("deals"), ws.in_currency("USD").rows("deals")
        (True, 0)
        """
        from closedloop_nb.money import UNKNOWN

        code = currency if currency == UNKNOWN else str(currency).strip().upper()
        if self.only_currency not in (None, code):
            raise ValueError(f"this workspace holds only {self.only_currency}; it has no {code} slice")
        base = self.key if self.only_currency is None else self.key.rsplit(".", 1)[0]
        return Workspace(self.path, base, built=False, memory_limit=self._memory_limit, only_currency=code)

    # -- Mapping ----------------------------------------------------------------------------------
    def _arrow(self, name: str) -> Any:
        return self.con.sql(f'SELECT * FROM "{name}"').to_arrow_table()

    # -- queries ----------------------------------------------------------------------------------
    def rows(self, name: str) -> int:
        """Number of validated rows of table ``name`` (without materialising it)."""
        if name not in self._tables:
            raise KeyError(f"no table {name!r} in this workspace; it has {', '.join(self._tables)}")
        return int(self.con.execute(f'SELECT COUNT(*) FROM "{name}"').fetchall()[0][0])

    def value_counts(self, name: str, column: str) -> pd.Series:
        """``ws[name][column].value_counts()``, counted in the engine (no table materialised)."""
        if column not in table_spec(name).names:
            raise KeyError(f"table {name!r} has no column {column!r}")
        frame = self.con.sql(f'SELECT "{column}", COUNT(*) AS count FROM "{name}" '
                             f'WHERE "{column}" IS NOT NULL GROUP BY ALL ORDER BY count DESC, "{column}"'
                             ).to_arrow_table().to_pandas()
        return frame.set_index(column)["count"]

    def journeys(self, conversion: str = "lead", lookback_days: int = 90, level: str = "channel",
                 **options: Any):
        """The journeys ending at ``conversion`` (a :class:`~closedloop_nb.journeys.Journeys`, as
        :func:`~closedloop_nb.journeys.build_journeys` returns), built once per distinct set of
        arguments and cached: in this process, and as Parquet files beside the workspace so that the
        next notebook (or run) on the same inputs reads them instead of building them.

        ``options`` are ``build_journeys``'s: ``restart_after_conversion``, ``drop_direct``,
        ``collapse_repeats``, ``max_touches`` (``progress`` and ``memory_limit`` are accepted and
        change nothing), and ``engine="spark"`` (with ``spark``, a session; local mode without) to
        build them on Spark from the workspace's tables written once as Parquet
        (:meth:`to_parquet`); Spark journeys are cached in this process only.
        """
        from closedloop_nb import journeys as jmod

        engine = options.pop("engine", "duckdb")
        spark = options.pop("spark", None)
        options = {k: v for k, v in options.items() if k not in ("progress", "memory_limit")}
        args = jmod.journey_arguments(conversion, lookback_days, level, **options)
        jkey = self._journey_key(args)
        if engine == "spark":
            if ("spark", jkey) not in self._journeys:
                self._journeys[("spark", jkey)] = jmod.build_journeys(
                    self.to_parquet(), engine="spark", spark=spark, **args)
            return self._journeys[("spark", jkey)]
        if engine != "duckdb":
            raise ValueError(f"engine must be 'duckdb' or 'spark', got {engine!r}")
        for other, j in self._journeys.items():  # one materialised touch table at a time: memory
            if other != jkey:
                j._touches = None
        if jkey not in self._journeys:
            folder = self._folder(args)
            if folder.is_dir() and not jmod.stored(folder):  # derived from a build removed since
                shutil.rmtree(folder, ignore_errors=True)
            if not folder.is_dir():
                # a shorter lookback from the wide build at the same level (itself, at another level,
                # the channel build renamed): renaming a shortened build's touches joins through its
                # window, which made DuckDB's join plan spill (at 10M touchpoints 68 s of CPU, not 37)
                wide = self._wide_build(args)
                base = self._channel_build(args) if wide is None and jmod.relevels(args) else None
                anonymous = self._anonymous(args) if wide is None else None
                with _locked(folder.with_name(f"{jkey}.lock")):
                    if not folder.is_dir() and base is not None:  # the channel build, steps renamed
                        jmod.write_relevelled(self.con, base, args, folder, memory_limit=JOURNEY_MEMORY_LIMIT,
                                              anonymous=anonymous)
                    elif not folder.is_dir() and wide is not None:  # the wide build, older touches left out
                        jmod.write_shortened(self.con, wide, args, folder)
                    elif not folder.is_dir():  # the people's journeys (all, with collapse or max_touches)
                        jmod.write_journeys(self.con, args, folder, prefix=f"_j{jkey}",
                                            memory_limit=JOURNEY_MEMORY_LIMIT, anonymous=anonymous)
            self._journeys[jkey] = jmod.read_journeys(self.con, folder, prefix=f"_j{jkey}")
        return self._journeys[jkey]

    def _journey_key(self, args: dict[str, Any]) -> str:
        """The cache key of a journey build: the workspace's, the journey code's hash, the arguments."""
        return hashlib.sha256(json.dumps({"workspace": self.key, "code": _code_hash(_JOURNEY_CODE),
                                          **args}, sort_keys=True).encode()).hexdigest()[:16]

    def _folder(self, args: dict[str, Any]) -> Path:
        return self.path.with_name(f"{self.key}.journeys") / self._journey_key(args)

    def _wide_build(self, args: dict[str, Any]) -> Path | None:
        """The stored build at :data:`WIDE_LOOKBACK_DAYS` with ``args``' other arguments (built now if
        need be), when journeys with ``args`` are derived from it."""
        from closedloop_nb import journeys as jmod

        if not jmod.shortens(args) or args["lookback_days"] >= WIDE_LOOKBACK_DAYS:
            return None
        wide = {**args, "lookback_days": WIDE_LOOKBACK_DAYS}
        self.journeys(**wide)
        return self._folder(wide)

    def _anonymous(self, args: dict[str, Any]) -> Path | None:
        """The stored path table of the anonymous visitors' journeys at ``args``' level and
        ``drop_direct`` (counted now if need be; one per workspace or currency slice, shared by
        every conversion and lookback), when builds with ``args`` add it to their people's paths
        (:func:`journeys.shortens`: without collapse_repeats or max_touches)."""
        from closedloop_nb import journeys as jmod

        if not jmod.shortens(args):
            return None
        have = {r[0] for r in self.con.execute("DESCRIBE touchpoints").fetchall()}
        if args["level"] not in have:  # refused by the build, with its message
            return None
        spec = {"code": _code_hash(_JOURNEY_CODE), "level": args["level"], "drop_direct": args["drop_direct"]}
        name = "anonymous-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        folder = self.path.with_name(f"{self.key}.journeys") / name
        if not (folder / "paths.parquet").is_file():
            with _locked(folder.with_name(f"{name}.lock")):
                if not (folder / "paths.parquet").is_file():
                    jmod.write_anonymous(self.con, args["level"], args["drop_direct"], folder,
                                         memory_limit=JOURNEY_MEMORY_LIMIT)
        return folder

    def _channel_build(self, args: dict[str, Any]) -> Path | None:
        """The stored build with ``args`` at level ``channel``, when there is one and the touchpoints
        have the column ``args["level"]`` names (else the journeys are built, and a missing column
        reported as a build reports it)."""
        folder = self._folder({**args, "level": "channel"})
        have = {r[0] for r in self.con.execute("DESCRIBE touchpoints").fetchall()}
        if not folder.is_dir() or args["level"] not in have:
            return None
        return folder

    def to_parquet(self) -> Path:
        """The validated tables as ``<table>.parquet`` files in a folder beside the workspace
        (written once, under the lock, renamed into place when complete): for Spark, or any tool
        that reads Parquet. Returns the folder."""
        folder = self.path.with_name(f"{self.key}.parquet")
        if not folder.is_dir():
            with _locked(folder.with_name(f"{self.key}.parquet.lock")):
                if not folder.is_dir():
                    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
                    shutil.rmtree(tmp, ignore_errors=True)
                    tmp.mkdir()
                    try:
                        for name in self._tables:
                            target = str(tmp / f"{name}.parquet").replace("'", "''")
                            self.con.execute(f"COPY (SELECT * FROM \"{name}\") TO '{target}' "
                                             "(FORMAT parquet)")
                        os.replace(tmp, folder)
                    finally:
                        shutil.rmtree(tmp, ignore_errors=True)
        return folder

    def close(self) -> None:
        """Close the connection (the database file stays for the next open)."""
        with contextlib.suppress(Exception):
            self.con.close()
        self._scratch.cleanup()

    def __repr__(self) -> str:
        sizes = ", ".join(f"{t}={self.rows(t):,}" for t in self._tables)
        money = (f" in {self.reporting_currency}" if self.reporting_currency else "") + (
            f" ({self.only_currency} money only)" if self.only_currency else "")
        return (f"<Workspace {self.key}{money} ({'built' if self.built else 'reused'}): {sizes}; "
                f"{self.report!r}>")

    def _repr_html_(self) -> str:
        return self.report.to_html()

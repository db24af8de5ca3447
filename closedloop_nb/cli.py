"""The ``closedloop`` command line.

Examples
--------
closedloop synth --visitors 1000000 --out data/synthetic
closedloop validate data/sample
closedloop validate exports/deals.csv --table deals --mapping hubspot_deals --timezone Europe/London
closedloop attribute paths.csv.gz --models last_touch,markov,shapley --order 2 --ci --out credit.csv
closedloop import salesforce exports/sf/ --timezone America/Mexico_City --encoding cp1252 --out data/crm
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from closedloop_nb import __version__
from closedloop_nb.errors import DataValidationError
from closedloop_nb.schema import TABLES

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="closedloop",
        description="Closed-loop marketing reporting: touches -> leads -> pipeline -> revenue.",
    )
    parser.add_argument("--version", action="version", version=f"closedloop-nb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("synth", help="generate synthetic closed-loop data with known ground truth",
                       description="Write every canonical table as Parquet, plus ground_truth.parquet "
                                   "(each channel's true contribution) and ground_truth.json.")
    s.add_argument("--visitors", type=int, default=20_000, help="anonymous visitors (default 20000)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--start", default="2024-01-01", help="first day of the data (default 2024-01-01)")
    s.add_argument("--months", type=int, default=12, help="months of data (default 12)")
    s.add_argument("--clean", action="store_true",
                   help="no unusable rows (by default a few orphan deals, refunds and duplicates)")
    s.add_argument("--regime", default="additive", metavar="NAME",
                   help="how conversion depends on the touches: additive (default), synergy, confounded, "
                        "recency, saturation or zero_effect (closedloop_nb.synth describes each; the ground "
                        "truth is each channel's exact Shapley credit)")
    s.add_argument("--out", required=True, type=Path, help="output directory")

    v = sub.add_parser("validate", help="check input tables and report rows rejected by reason",
                       description="Check canonical tables (a directory of <table>.parquet/.csv "
                                   "files, or one file) against the data model. Exits 1 when a "
                                   "table is unusable or rows were rejected.")
    v.add_argument("path", type=Path, help="a directory of canonical tables, or one file")
    v.add_argument("--table", choices=list(TABLES), help="which table a single file holds "
                   "(default: from its file name)")
    v.add_argument("--mapping", help="column mapping: a shipped name (e.g. hubspot_deals) or a YAML path")
    v.add_argument("--timezone", help="time zone of naive timestamps, e.g. Europe/London")
    v.add_argument("--allow-rejects", action="store_true",
                   help="exit 0 when rows were rejected but every table is usable")
    v.add_argument("--report", type=Path, help="also write the report as HTML to this file")
    v.add_argument("--date-window", metavar="FIRST,END", default="1990-01-01,2100-01-01",
                   help="dates before FIRST or on/after END are rejected as implausible "
                        "(default %(default)s; 'none' to switch off)")
    v.add_argument("--max-amount", default="1e12", help="money values above this are rejected as "
                   "implausible (default %(default)s; 'none' to switch off)")
    v.add_argument("--max-text-length", default="1000", help="text longer than this is cut and counted "
                   "(default %(default)s; 'none' to switch off)")

    a = sub.add_parser("attribute", help="attribute conversions and value in a path table to channels",
                       description="Read a path table in ChannelAttribution's format (path, "
                                   "total_conversions, total_conversion_value, total_null; CSV, "
                                   "gzipped CSV or Parquet) and write one row per model and channel.")
    a.add_argument("paths", type=Path, help="the path table")
    a.add_argument("--models", default="first_touch,last_touch,linear,position_based,markov,shapley",
                   help="comma-separated model names (default: %(default)s)")
    a.add_argument("--order", type=int, default=1, help="Markov chain order, 1 to 4 (default 1)")
    a.add_argument("--ci", action="store_true", help="add 95%% bootstrap intervals (lower, upper)")
    a.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates (default 200)")
    a.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    a.add_argument("--sep", default=">", help="channel separator in paths (default '>')")
    a.add_argument("--out", type=Path, help="write the CSV here (default: standard output)")

    r = sub.add_parser("report", help="run the report notebooks for parameter sets, render HTML",
                       description="Execute every notebook in notebooks/ for each parameter file with "
                                   "papermill, render code-free HTML to reports/<run>/ and write "
                                   "reports/index.html. Exits 1 if any run failed.")
    r.add_argument("params", nargs="+", type=Path, help="parameter files (YAML), one per run")
    r.add_argument("--jobs", type=int, default=1, help="runs in parallel (default 1)")
    r.add_argument("--out", type=Path, help="output folder (default reports/)")
    r.add_argument("--cell-timeout", type=int, default=600, help="seconds per cell (default 600)")
    r.add_argument("--run-timeout", type=int, default=3600,
                   help="seconds per run, all notebooks together (default 3600)")
    r.add_argument("--pdf", action="store_true",
                   help="also print each report page to PDF beside it, with headless Chromium")
    r.add_argument("--notebooks", help="run only these notebooks, by number or name (e.g. 01,02)")
    r.add_argument("--quiet", action="store_true", help="no status lines while the runs execute")
    r.add_argument("--force", action="store_true",
                   help="execute every notebook again, even one whose source, parameters, inputs, package "
                        "code and engine are unchanged since the run's previous outputs (by default those "
                        "are reused)")
    r.add_argument("--engine", choices=("duckdb", "spark"),
                   help="engine of the runs' workspaces (ingest, journeys, metrics), over the parameter "
                        "files' engine: (default duckdb; spark: local mode unless spark_master: names one)")

    i = sub.add_parser("import", help="read a tool's export files into canonical tables (Parquet)",
                       description="Map one tool's export files (a folder of them, recognised by their "
                                   "names, or the files themselves) onto the canonical tables, validate "
                                   "them, and write <table>.parquet plus import_report.json/.txt to --out. "
                                   "Exits 1 when an input is unusable.")
    from closedloop_nb.imports import SOURCES

    i.add_argument("source", choices=sorted(SOURCES), metavar="SOURCE",
                   help="the tool: " + ", ".join(sorted(SOURCES)))
    i.add_argument("inputs", nargs="*", type=Path, help="a folder of export files, or the files")
    i.add_argument("--out", type=Path, help="folder to write the canonical tables to (required)")
    i.add_argument("--timezone", help="time zone of timestamps without an offset, e.g. Europe/London")
    i.add_argument("--encoding", help="text encoding of CSV exports, e.g. cp1252 (default UTF-8)")
    i.add_argument("--config", type=Path, help="import options (YAML): stage map, date format, ...")
    i.add_argument("--print-sql", action="store_true",
                   help="ga4 only: print the BigQuery SQL that extracts the columns the import reads; exit")
    i.add_argument("--dataset", default="my-project.analytics_123456789",
                   help="with --print-sql: the export's dataset, project.analytics_<property id>")

    # closedloop export offline-conversions (closedloop_nb.exports)
    e = sub.add_parser("export", help="write files for other tools: offline-conversion uploads",
                       description="Write files other tools import, from canonical tables.")
    esub = e.add_subparsers(dest="export_what", metavar="WHAT", required=True)
    oc = esub.add_parser("offline-conversions", help="upload file of conversions with their ad click ids",
                         description="Write the offline-conversion upload of an ad platform (Google Ads "
                                     "click-conversion file, Meta Conversions API offline events) for the "
                                     "conversions whose journeys carry the platform's click id, and print "
                                     "how many conversions and how much value could be sent.")
    oc.add_argument("data_dir", type=Path, help="folder of canonical tables")
    oc.add_argument("--platform", required=True, choices=["google-ads", "meta"])
    oc.add_argument("--conversion", default="closed_won", choices=["closed_won", "opportunity", "lead"],
                    help="which conversions to send (default closed_won)")
    oc.add_argument("--conversion-name", help="Google Ads conversion action name / Meta event name")
    oc.add_argument("--lookback", type=float, default=90, help="days a click counts before (default 90)")
    oc.add_argument("--contacts", type=Path, help="meta: the CRM's contact export (e-mail, phone columns)")
    oc.add_argument("--contact-id-column", help="meta: the column of --contacts holding the person ids")
    oc.add_argument("--country-code", help="meta: country code of phone numbers written nationally, e.g. 44")
    oc.add_argument("--timezone", help="google-ads: write conversion times in this zone (default UTC)")
    oc.add_argument("--since", help="only conversions at or after this time, e.g. 2024-03-01 (UTC)")
    oc.add_argument("--out", required=True, type=Path, help="the upload file to write (.csv)")

    j = sub.add_parser("paths", help="build a path table (ChannelAttribution format) from canonical tables",
                       description="Stitch touches to people and cut them into journeys ending at a "
                                   "conversion, then count conversions, value and non-converting "
                                   "journeys per distinct path.")
    j.add_argument("data_dir", type=Path, help="folder of canonical Parquet tables (closedloop synth)")
    j.add_argument("--conversion", default="lead", help="lead, mql, sql, opportunity, proposal, "
                   "closed_won, first_order or order (default lead)")
    j.add_argument("--lookback", type=int, default=90, help="lookback window in days (default 90)")
    j.add_argument("--level", default="channel", help="touch attribute per step (default channel)")
    j.add_argument("--engine", choices=["duckdb", "spark"], default="duckdb")
    j.add_argument("--collapse-repeats", action="store_true", help="merge consecutive repeats")
    j.add_argument("--drop-direct", action="store_true", help="leave out direct touches")
    j.add_argument("--max-touches", type=int, help="keep at most this many touches per journey")
    j.add_argument("--out", type=Path, help="CSV to write (.csv or .csv.gz; default standard output)")
    return parser


def _paths(args: argparse.Namespace) -> int:
    import duckdb

    from closedloop_nb.journeys import build_journeys

    try:
        journeys = build_journeys(args.data_dir, conversion=args.conversion, lookback_days=args.lookback,
                                  level=args.level, engine=args.engine, drop_direct=args.drop_direct,
                                  collapse_repeats=args.collapse_repeats, max_touches=args.max_touches)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except duckdb.Error as exc:  # a truncated or unreadable table file: its first line names the file
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        print(f"error: {first} (a damaged or truncated table file? check it with closedloop validate "
              f"{args.data_dir})", file=sys.stderr)
        return 1
    from closedloop_nb.safe_csv import write_csv  # channel names come from tagging: no formulas

    if args.out:
        write_csv(journeys.paths, args.out)
        print(f"{journeys!r}\nwrote {args.out}", file=sys.stderr)
    else:
        write_csv(journeys.paths, sys.stdout)
    print(journeys.reconciliation.to_string(index=False), file=sys.stderr)
    return 0


def _report(args: argparse.Namespace) -> int:
    from closedloop_nb._report_child import skip_slow_optional_imports
    from closedloop_nb.config import REPORTS_DIR

    skip_slow_optional_imports()  # 1.3 s of CPU in importing nbformat: see the function
    from closedloop_nb.report import BatchStopped, ParameterError, RunLockedError, clock, run_batch

    out = args.out or REPORTS_DIR
    only = [n.strip() for n in args.notebooks.split(",") if n.strip()] if args.notebooks else None
    try:
        results = run_batch(args.params, jobs=args.jobs, out_dir=out, cell_timeout=args.cell_timeout,
                            run_timeout=args.run_timeout, progress=not args.quiet, only=only,
                            engine=args.engine, force=args.force)
    except (ParameterError, RunLockedError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BatchStopped as exc:
        print(f"closedloop report: {exc}", file=sys.stderr)
        return 128 + exc.signum
    for r in results:
        line = f"{r.run}: {r.status} in {clock(r.seconds)} -> {r.directory}"
        print(line if r.status == "ok" else f"{line} ({r.error})")
        for n in r.notebooks:
            mark = "" if n["status"] == "ok" else f"  {n['status']}: {n.get('error', '')}"
            if n.get("reused"):
                mark = f"  reused (inputs unchanged since {n.get('executed_at', '?')})"
            print(f"  {n['notebook'].removesuffix('.ipynb'):<28} {n.get('seconds', 0):>7.1f}s{mark}")
    print(f"index: {Path(out).resolve() / 'index.html'}")
    if getattr(args, "pdf", False):
        from closedloop_nb.pdf import ChromiumNotFoundError, print_reports

        try:
            for r in results:
                print(f"{r.run}: {len(print_reports(r.directory))} PDF(s) in {r.directory}")
        except (ChromiumNotFoundError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    failed = [r.run for r in results if r.status != "ok"]
    if failed:
        print(f"error: {len(failed)} of {len(results)} runs failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _keep_freed_memory() -> None:
    """Let glibc's malloc keep freed memory for the next allocation: by default it hands blocks of
    128 KiB and more back to the system (and the next ones are faulted in again, page by page),
    which cost ``closedloop attribute`` 0.05 s of system time in 18k page faults on the 757k-path
    benchmark table. Blocks up to 32 MiB (glibc's maximum) then come from the heap, which is not
    trimmed; a short-lived command's peak memory grows by ~10%. Not glibc, the user's own
    ``MALLOC_*`` / ``GLIBC_TUNABLES`` settings, or ``main`` called inside a Python session that has
    loaded numpy already (a notebook, tests): left as it is."""
    if (sys.platform != "linux" or "numpy" in sys.modules
            or any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ)):
        return
    import ctypes  # numpy and pyarrow import it anyway

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):  # pragma: no cover - a libc without mallopt (musl has it)
        return
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD


def _attribute(args: argparse.Namespace) -> int:
    # The chains' matrices are small: threaded BLAS only spins (order 2 spent 3x the CPU time in it on
    # a busy machine). Set before numpy loads; a user's own setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # Arrow's default allocator (mimalloc) hands memory back and takes it again in costly page faults:
    # three times the system CPU time of the system allocator here (0.8-1.1 s against 0.3 s on the
    # 757k-path benchmark table) and 100 MiB more at the peak. Set before pyarrow loads.
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    # numpy asks for transparent huge pages for its large arrays; faulting them in (zeroing, compacting)
    # cost 0.25-0.6 s of system time per run here against a steady 0.3 s with ordinary pages.
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    _keep_freed_memory()
    from closedloop_nb.path_text import TextBlocks

    blocks = TextBlocks.start(args.paths, args.sep)  # reads and gunzips the file while numpy imports
    from closedloop_nb.path_codes import Reading

    reading = Reading(args.paths, sep=args.sep, blocks=blocks)  # parses it while the models import
    from closedloop_nb.attribution import MODELS
    from closedloop_nb.path_table import PathTable

    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        print(f"closedloop attribute: unknown model(s) {', '.join(unknown)}; choose from "
              f"{', '.join(MODELS)}", file=sys.stderr)
        try:  # let the reader finish before the interpreter exits
            reading.result()
        except Exception:  # noqa: S110 - the usage error is what to report
            pass
        return 2
    models = [MODELS[m](order=args.order) if m == "markov" else MODELS[m]() for m in names]
    if "markov" in names and args.order >= 3:  # such chains are large (sparse): load SciPy while reading
        import scipy.sparse  # noqa: F401
    try:
        table = PathTable(*reading.result())
    except DataValidationError as exc:  # names the file itself
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: {args.paths}: {exc.args[0] if isinstance(exc, KeyError) else exc}", file=sys.stderr)
        return 1
    target = args.out or sys.stdout
    if args.ci:  # bootstrap intervals: compare_models' table, through pandas
        from closedloop_nb.attribution.compare import compare_models
        from closedloop_nb.safe_csv import write_csv  # channel names come from tagging: no formulas

        result = compare_models(table, models, ci=True, n_boot=args.n_boot, random_state=args.seed,
                                progress=sys.stderr.isatty())
        out = result[["model", "channel", "conversions", "value", "lower", "upper"]]
        write_csv(out, target)
        n_rows = len(out)
    else:  # credits as arrays, written as compare_models' table would be: no pandas to import
        from closedloop_nb.safe_csv import write_rows

        rows = [[model.name, channel, conv, value] for model in models
                for channel, conv, value in zip(table.channels, *(x.tolist() for x in model.credit(table)),
                                                strict=True)]
        write_rows(["model", "channel", "conversions", "value"], rows, target)
        n_rows = len(rows)
    if args.out:
        print(f"{table!r}\nwrote {n_rows} rows to {args.out}", file=sys.stderr)
    return 0


def _synth(args: argparse.Namespace) -> int:
    from closedloop_nb.synth import REGIMES, generate

    if args.regime not in REGIMES:
        print(f"closedloop synth: --regime must be one of {', '.join(REGIMES)}, got {args.regime!r}",
              file=sys.stderr)
        return 2
    t = time.perf_counter()
    data = generate(args.visitors, seed=args.seed, start=args.start, months=args.months,
                    dirty_share=0.0 if args.clean else 0.002, regime=args.regime)
    paths = data.write(args.out)
    print(f"{data!r}\nwrote {len(paths)} files to {args.out} in {time.perf_counter() - t:.1f}s")
    return 0


def _import(args: argparse.Namespace) -> int:
    from closedloop_nb.imports import import_source

    if args.print_sql:
        if args.source != "ga4":
            print("closedloop import: --print-sql applies to ga4 only", file=sys.stderr)
            return 2
        from closedloop_nb.imports.ga4 import bigquery_sql

        print(bigquery_sql(args.dataset), end="")
        return 0
    if not args.inputs or args.out is None:
        print(f"closedloop import {args.source}: give the export files (or their folder) and --out DIR",
              file=sys.stderr)
        return 2

    try:
        result = import_source(args.source, args.inputs, args.out, timezone=args.timezone,
                               encoding=args.encoding, config=args.config)
    except (DataValidationError, FileNotFoundError, ValueError) as exc:
        print(f"closedloop import {args.source}: {exc}", file=sys.stderr)
        return 1
    print(result.to_text())
    print(f"\ntables written to {args.out}")
    return 1 if result.report.errors else 0


def _export(args: argparse.Namespace) -> int:
    from closedloop_nb.exports import offline_conversions, write_upload
    from closedloop_nb.privacy import MissingHashKeyError
    from closedloop_nb.validation import load_dataset

    try:
        ds = load_dataset(args.data_dir)
        rows, summary = offline_conversions(
            ds.tables, args.platform, args.conversion, conversion_name=args.conversion_name,
            lookback_days=args.lookback, contacts=args.contacts, contact_id_column=args.contact_id_column,
            country_code=args.country_code, timezone=args.timezone, since=args.since)
    except (DataValidationError, FileNotFoundError, ValueError, KeyError, MissingHashKeyError) as exc:
        print(f"closedloop export offline-conversions: {exc}", file=sys.stderr)
        return 1
    write_upload(rows, args.out)
    print(summary.to_text())
    print(f"wrote {len(rows):,} rows to {args.out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from closedloop_nb.validation import load_dataset

    path: Path = args.path
    if path.is_dir():
        if args.mapping or args.table:
            print("closedloop validate: --mapping and --table apply to a single file", file=sys.stderr)
            return 2
        source: Path | dict = path
        mappings = None
    else:
        table = args.table or path.name.split(".")[0]
        if table not in TABLES:
            print(f"closedloop validate: cannot tell which table {path.name} holds; pass --table "
                  f"({', '.join(TABLES)})", file=sys.stderr)
            return 2
        source = {table: path}
        mappings = {table: args.mapping} if args.mapping else None
    try:
        limits = _limits(args)
    except ValueError as exc:
        print(f"closedloop validate: {exc}", file=sys.stderr)
        return 2
    try:
        ds = load_dataset(source, mappings=mappings, timezone=args.timezone, limits=limits)
    except (DataValidationError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = ds.report
    print(report.to_text())
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(_html_page(f"Data quality: {path}", report.to_html()), "utf-8")
        print(f"\nreport written to {args.report}")
    bad = [p for p in report.problems
           if p.severity == "error" or (p.severity == "rejected" and not args.allow_rejects)]
    for p in bad:
        print(f"error: {p.message()}", file=sys.stderr)
    return 1 if bad else 0


def _limits(args: argparse.Namespace):
    """The plausibility limits of ``closedloop validate``'s options."""
    from closedloop_nb.validation import InputLimits

    def off(text: str) -> bool:
        return text.strip().lower() in ("none", "off", "")

    window = None
    if not off(args.date_window):
        parts = [p.strip() for p in args.date_window.split(",")]
        if len(parts) != 2:
            raise ValueError(f"--date-window wants FIRST,END (e.g. 1990-01-01,2100-01-01), got "
                             f"{args.date_window!r}")
        window = (parts[0], parts[1])
    try:
        amount = None if off(args.max_amount) else float(args.max_amount)
        length = None if off(args.max_text_length) else int(args.max_text_length)
    except ValueError:
        raise ValueError("--max-amount wants a number and --max-text-length a whole number "
                         "(or none)") from None
    return InputLimits(date_window=window, max_amount=amount, max_text_length=length)


def _html_page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``closedloop`` command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    commands = {"synth": _synth, "validate": _validate, "paths": _paths, "attribute": _attribute,
                "report": _report, "import": _import, "export": _export}
    try:
        return commands[args.command](args)
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

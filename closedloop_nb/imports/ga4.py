"""GA4's BigQuery export in: one touch per session; conversion events as identities and orders.

``closedloop import ga4 FILE_OR_FOLDER... --out DATA_DIR`` reads the export as BigQuery writes it:
newline-delimited JSON (``.json``, ``.jsonl``, ``.ndjson``, optionally gzipped) and Parquet with the
nested records (``event_params`` as a repeated key/value record, ``collected_traffic_source``,
``session_traffic_source_last_click``, ``traffic_source``, ``ecommerce``), Avro when the ``fastavro``
package is installed, and CSV flattened by :func:`bigquery_sql` (or with BigQuery's dotted field paths
as headers). File names ``events_YYYYMMDD*`` and ``events_intraday_YYYYMMDD*`` (wildcard shards) say
which table a file came from: an intraday table's events are dropped for days whose daily table is
also given (the daily table replaces it), and an event read twice is kept once; both are counted.

Touches. One touch per session (``user_pseudo_id``, ``ga_session_id``) at the session's first event,
with the session's source, medium, campaign, term and content taken from, in order:

1. ``session_traffic_source_last_click`` (in the export since July 2024): its ``manual_campaign``
   (UTM tags), else its ``google_ads_campaign`` (google / cpc, campaign and ad group), else its
   ``cross_channel_campaign``;
2. ``collected_traffic_source`` of the session's first event carrying one (``manual_*`` fields; a
   Google Ads click id alone means google / cpc, as GA4 records auto-tagged clicks);
3. the ``source`` / ``medium`` / ``campaign`` / ``term`` / ``content`` event parameters, else the
   session's ``page_referrer``: a search engine's host gives (engine, organic), another site's host
   (host, referral), the site's own host nothing;
4. else (direct) / (none).

``traffic_source`` is the user's *first* source (user scope) and is not used for sessions. Click ids
(gclid, dclid from ``collected_traffic_source``; gclid, gbraid, wbraid, dclid, msclkid, fbclid, ... from
the landing page's query string) are kept. The landing page is the session's first ``page_location``
with personal data removed from its query string; campaign names and keywords are scrubbed of e-mail
addresses and phone numbers; the report counts both.

Conversions. ``generate_lead``, ``form_submit``, ``sign_up``, ``purchase`` and the ``key_events`` of the
config are conversions, not touches: an event with a ``user_id`` links the visitor to that person in
``identities`` (method ``form`` for lead and sign-up events, ``login`` otherwise), and a ``purchase``
becomes an ``orders`` row with ``ecommerce.purchase_revenue`` (``transaction_id`` as the order id).
``user_id`` is an internal id and is kept as the person id; one that looks like an e-mail address or a
phone number (which Google's User-ID policy forbids) is replaced by its keyed hash, with a warning.

Config keys (``--config``): ``key_events`` (more conversion events), ``conversion_events`` (replace the
list), ``own_hosts`` (hosts of your own site, never referrals; the landing pages' hosts by default),
``google_ads_click_report`` (a Google Ads click performance report: touches with its gclids get its
campaign, ad group and keyword; see :func:`closedloop_nb.imports.ads.join_click_report`),
``channel_rules`` (a rules file or shipped set, e.g. ``ga4-click-ids``; GA4's default group otherwise).

Examples
--------
::

    closedloop import ga4 exports/ga4/ --out data/web
    closedloop import ga4 --print-sql --dataset my-project.analytics_123456789
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from closedloop_nb.channels import ChannelRules, group_channels
from closedloop_nb.errors import DataValidationError, Problem
from closedloop_nb.imports._common import Imported, ImportOptions, input_files
from closedloop_nb.imports._web import Scrubbed, click_id_from_url, parse_times
from closedloop_nb.imports.ads import config_click_report, join_click_report
from closedloop_nb.privacy import MissingHashKeyError, hash_identifiers

__all__ = ["CONVERSION_EVENTS", "bigquery_sql", "read", "read_events", "session_touches"]

#: Events that are conversions (never touches).
CONVERSION_EVENTS: tuple[str, ...] = ("generate_lead", "form_submit", "sign_up", "purchase")
_FORM_EVENTS = {"generate_lead", "form_submit", "sign_up"}
_GOOGLE_ADS_CLICK_IDS = ("gclid", "gbraid", "wbraid")

#: The flat columns one event becomes, each with the names it may have in a file (nested records are
#: flattened to BigQuery's dotted paths first; :func:`bigquery_sql` writes the underscore names).
FLAT: dict[str, tuple[str, ...]] = {
    "event_date": ("event_date",),
    "event_timestamp": ("event_timestamp",),
    "event_name": ("event_name",),
    "user_pseudo_id": ("user_pseudo_id",),
    "user_id": ("user_id",),
    "ga_session_id": ("event_params.ga_session_id", "ga_session_id"),
    "page_location": ("event_params.page_location", "page_location"),
    "page_referrer": ("event_params.page_referrer", "page_referrer"),
    "ep_source": ("event_params.source", "source"),
    "ep_medium": ("event_params.medium", "medium"),
    "ep_campaign": ("event_params.campaign", "campaign"),
    "ep_term": ("event_params.term", "term"),
    "ep_content": ("event_params.content", "content"),
    "ep_gclid": ("event_params.gclid", "gclid"),
    "currency": ("event_params.currency", "currency"),
    "value": ("event_params.value", "value"),
    "cts_source": ("collected_traffic_source.manual_source",),
    "cts_medium": ("collected_traffic_source.manual_medium",),
    "cts_campaign": ("collected_traffic_source.manual_campaign_name",),
    "cts_term": ("collected_traffic_source.manual_term",),
    "cts_content": ("collected_traffic_source.manual_content",),
    "cts_gclid": ("collected_traffic_source.gclid",),
    "cts_dclid": ("collected_traffic_source.dclid",),
    "sl_source": ("session_traffic_source_last_click.manual_campaign.source",),
    "sl_medium": ("session_traffic_source_last_click.manual_campaign.medium",),
    "sl_campaign": ("session_traffic_source_last_click.manual_campaign.campaign_name",),
    "sl_term": ("session_traffic_source_last_click.manual_campaign.term",),
    "sl_content": ("session_traffic_source_last_click.manual_campaign.content",),
    "sl_gads_campaign": ("session_traffic_source_last_click.google_ads_campaign.campaign_name",),
    "sl_gads_ad_group": ("session_traffic_source_last_click.google_ads_campaign.ad_group_name",),
    "sl_cc_source": ("session_traffic_source_last_click.cross_channel_campaign.source",),
    "sl_cc_medium": ("session_traffic_source_last_click.cross_channel_campaign.medium",),
    "sl_cc_campaign": ("session_traffic_source_last_click.cross_channel_campaign.campaign_name",),
    "transaction_id": ("ecommerce.transaction_id", "event_params.transaction_id", "transaction_id"),
    "purchase_revenue": ("ecommerce.purchase_revenue", "purchase_revenue"),
    "table_suffix": ("table_suffix", "_table_suffix"),
}

#: Search engines' hosts -> the source GA4 gives their organic traffic.
SEARCH_HOSTS: tuple[tuple[str, str], ...] = (
    (r"(^|\.)google\.[a-z.]+$", "google"), (r"(^|\.)bing\.com$", "bing"), (r"(^|\.)yahoo\.[a-z.]+$", "yahoo"),
    (r"(^|\.)duckduckgo\.com$", "duckduckgo"), (r"(^|\.)baidu\.com$", "baidu"),
    (r"(^|\.)yandex\.[a-z.]+$", "yandex"), (r"(^|\.)ecosia\.org$", "ecosia"), (r"(^|\.)naver\.com$", "naver"),
    (r"(^|\.)seznam\.cz$", "seznam"), (r"(^|\.)ask\.com$", "ask"), (r"(^|\.)aol\.[a-z.]+$", "aol"),
    (r"(^|\.)qwant\.com$", "qwant"), (r"(^|\.)startpage\.com$", "startpage"),
    (r"(^|\.)search\.brave\.com$", "brave"),
)
_SEARCH_RX = [(re.compile(p), name) for p, name in SEARCH_HOSTS]
_EXPORT_FILE = re.compile(r"\.(csv|tsv|json|jsonl|ndjson|parquet|avro)(\.gz)?$")
_TABLE_RX = re.compile(r"events_(intraday_)?(\d{8})", re.IGNORECASE)


# ------------------------------------------------------------------------------------------- reading
#: Each flat column's path in a nested record (BigQuery's field path, the first name of :data:`FLAT`).
_PATHS: list[tuple[str, ...]] = [tuple(names[0].split(".")) for names in FLAT.values()]


def _extract(record: dict[str, Any]) -> list[Any]:
    """The :data:`FLAT` columns of one nested export row (event parameters looked up by key)."""
    params = {}
    for p in record.get("event_params") or ():
        if isinstance(p, dict) and p.get("key") is not None:
            params[p["key"]] = _param_value(p.get("value"))
    out = []
    for path in _PATHS:
        if path[0] == "event_params":
            out.append(params.get(path[1]))
            continue
        v: Any = record
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
            if v is None:
                break
        out.append(v)
    return out


def _param_value(value: Any) -> Any:
    """The set member of an event parameter's value record (string, int, double or float value)."""
    if not isinstance(value, dict):
        return value
    for name in ("string_value", "int_value", "double_value", "float_value"):
        v = value.get(name)
        if v is not None:
            return v
    return None


def _records(path: Path) -> Iterator[dict[str, Any]]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=50_000):
            yield from batch.to_pylist()
    elif name.endswith(".avro"):
        try:
            import fastavro
        except ImportError:
            why = ("reading Avro needs the fastavro package (pip install fastavro); or export the table as "
                   "newline-delimited JSON or Parquet")
            raise DataValidationError([Problem("touchpoints", str(path), None, why, "error")]) from None
        with path.open("rb") as fh:
            yield from fastavro.reader(fh)
    else:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
            text = fh.read()
        stripped = text.lstrip()
        if stripped.startswith("["):  # a JSON array, as the BigQuery console's "download as JSON" writes
            yield from json.loads(stripped)
            return
        for i, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    why = f"line {i} is not JSON: {exc.msg}"
                    problem = Problem("touchpoints", str(path), None, why, "error")
                    raise DataValidationError([problem]) from None


def _arrow_table(path: Path) -> Any:
    """The file as an Arrow table (Parquet; newline-delimited JSON when Arrow can infer one schema for
    it), or None to read it record by record."""
    import pyarrow as pa

    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if name.endswith((".json", ".jsonl", ".ndjson")):
            import pyarrow.json as pj

            with path.open("rb") as fh:
                if fh.read(64).lstrip().startswith(b"["):
                    return None
            return pj.read_json(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    return None


def _arrow_field(array: Any, path: tuple[str, ...]) -> Any:
    import pyarrow as pa

    for key in path:
        if not pa.types.is_struct(array.type) or array.type.get_field_index(key) < 0:
            return None
        array = array.field(key)
    return array


def _frame_from_arrow(table: Any) -> pd.DataFrame:
    """The :data:`FLAT` columns of a nested Arrow table, event parameters picked by key, vectorised."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    root = pa.StructArray.from_arrays([table.column(c).combine_chunks() for c in table.column_names],
                                      names=table.column_names) if n else None
    params: dict[str, Any] = {}
    wanted = {path[1] for path in _PATHS if path[0] == "event_params"}
    if n and "event_params" in table.column_names:
        ep = table.column("event_params").combine_chunks()
        if pa.types.is_list(ep.type) or pa.types.is_large_list(ep.type):
            items = ep.flatten()
            parents = pc.list_parent_indices(ep)
            keys = items.field("key")
            value = items.field("value")
            for key in wanted:
                mask = pc.equal(keys, key)
                if not pc.any(mask).as_py():
                    continue
                rows = pc.filter(parents, mask).to_numpy()
                picked = pc.filter(value, mask)
                col = np.full(n, None, dtype=object)
                got = np.full(len(rows), None, dtype=object)
                for kind in ("string_value", "int_value", "double_value", "float_value"):
                    part = _arrow_field(picked, (kind,))
                    if part is None:
                        continue
                    vals = part.to_pandas().to_numpy(dtype=object)
                    fill = np.array([g is None for g in got]) & pd.notna(vals)
                    got[fill] = vals[fill]
                col[rows] = got
                params[key] = col
    data = {}
    for flat, path in zip(FLAT, _PATHS, strict=True):
        if path[0] == "event_params":
            data[flat] = params.get(path[1], np.full(n, None, dtype=object))
            continue
        arr = _arrow_field(root, path) if root is not None else None
        data[flat] = (arr.to_pandas().astype(object).where(lambda s: s.notna(), None).to_numpy()
                      if arr is not None else np.full(n, None, dtype=object))
    return pd.DataFrame(data, columns=list(FLAT))


def _is_csv(path: Path) -> bool:
    name = path.name.lower().removesuffix(".gz")
    return name.endswith((".csv", ".tsv"))


def _pick(columns: dict[str, Any], names: tuple[str, ...]) -> Any:
    for n in names:
        if n in columns:
            return columns[n]
        underscored = n.replace(".", "_")
        if underscored in columns:
            return columns[underscored]
        if n.startswith("event_params."):
            bare = n.split(".", 1)[1]
            if bare in columns:
                return columns[bare]
    return None


def _frame_from_file(path: Path, options: ImportOptions) -> pd.DataFrame:
    if _is_csv(path):
        sep = "\t" if path.name.lower().removesuffix(".gz").endswith(".tsv") else ","
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], sep=sep,
                          encoding=options.encoding or "utf-8")
        cols = {c: raw[c] for c in raw.columns}
        data = {flat: _pick(cols, names) for flat, names in FLAT.items()}
        df = pd.DataFrame({k: (v if v is not None else pd.Series([None] * len(raw), dtype=object))
                           for k, v in data.items()})
    else:
        table = _arrow_table(path)
        if table is not None:
            df = _frame_from_arrow(table)
        else:
            df = pd.DataFrame([_extract(rec) for rec in _records(path)], columns=list(FLAT), dtype=object)
    df["_file"] = str(path)
    df["_row"] = np.arange(1, len(df) + 1)
    return df


def _table_of(path: Path, suffix: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(is intraday, day YYYYMMDD) of each row: from the ``table_suffix`` column, else the file name."""
    match = _TABLE_RX.search(path.name)
    intraday = pd.Series(bool(match and match.group(1)), index=suffix.index)
    day = pd.Series(match.group(2) if match else None, index=suffix.index, dtype=object)
    given = suffix.notna()
    if given.any():
        text = suffix[given].astype(str)
        intraday[given] = text.str.startswith("intraday_")
        day[given] = text.str.extract(r"(\d{8})")[0]
    return intraday, day


def read_events(inputs: list[Path], options: ImportOptions) -> tuple[pd.DataFrame, list[Problem], list[str]]:
    """Every event of the export files as one flat row (columns :data:`FLAT`), de-duplicated.

    Returns the events with a UTC ``timestamp``, the problems (duplicates and unreadable timestamps,
    counted against ``touchpoints``) and notes.
    """
    files = [f for f in input_files(inputs) if _EXPORT_FILE.search(f.name.lower())]
    if not files:
        where = ", ".join(str(p) for p in inputs)
        raise DataValidationError([Problem("touchpoints", where, None, "no GA4 export files found (expected "
                                           ".json/.jsonl/.ndjson, .parquet, .avro or .csv)", "error")])
    frames, problems, notes = [], [], []
    for path in files:
        df = _frame_from_file(path, options)
        df["_intraday"], df["_day"] = _table_of(path, df["table_suffix"])
        frames.append(df)
    events = pd.concat(frames, ignore_index=True)
    for path, part in zip(files, frames, strict=True):
        if len(part) and (part["event_name"].isna().all() or part["event_timestamp"].isna().all()):
            why = ("no event_name / event_timestamp: not a GA4 BigQuery export (expected its fields, e.g. "
                   "event_timestamp, event_name, user_pseudo_id, event_params)")
            raise DataValidationError([Problem("touchpoints", str(path), None, why, "error")])
    notes.append(f"{len(events):,} events read from {len(files)} file(s)")

    # an intraday table is replaced by the daily table of the same day
    daily_days = set(events.loc[~events["_intraday"], "_day"].dropna())
    stale = events["_intraday"] & events["_day"].isin(daily_days)
    problems += _per_file(events, stale.to_numpy(), "event_timestamp",
                          "intraday event of a day whose daily table is also given (the daily table "
                          "replaces it)")
    events = events.loc[~stale.to_numpy()]
    key = ["user_pseudo_id", "event_timestamp", "event_name", "ga_session_id", "page_location"]
    dup = events.astype({k: str for k in key}).duplicated(subset=key, keep="first").to_numpy()
    problems += _per_file(events, dup, "event_timestamp", "the same event read twice (kept once)")
    events = events.loc[~dup].copy()

    events["timestamp"] = parse_times(events["event_timestamp"], unit="us", timezone=options.timezone)
    bad = events["timestamp"].isna().to_numpy()
    problems += _per_file(events, bad, "event_timestamp", "event_timestamp is not microseconds since the "
                          "epoch nor a timestamp (e.g. 2024-01-01 10:00:00 UTC): event left out")
    events = events.loc[~bad].copy()
    return events, problems, notes


def _per_file(events: pd.DataFrame, mask: np.ndarray, column: str, reason: str,
              severity: str = "info", table: str = "touchpoints") -> list[Problem]:
    out = []
    if not mask.any():
        return out
    sub = events.loc[mask]
    for file, rows in sub.groupby("_file", sort=False)["_row"]:
        ordered = sorted(int(r) for r in rows)
        out.append(Problem(table, str(file), column, reason, severity, len(ordered),  # type: ignore[arg-type]
                           tuple(ordered[:10])))
    return out


# ------------------------------------------------------------------------------------------- sessions
def _referrer_source(referrer: pd.Series, own_hosts: set[str]) -> tuple[pd.Series, pd.Series]:
    sources = pd.Series(None, index=referrer.index, dtype=object)
    media = pd.Series(None, index=referrer.index, dtype=object)
    for i, url in referrer.dropna().items():
        try:
            host = (urlsplit(str(url)).hostname or "").lower()
        except ValueError:
            continue
        host = host.removeprefix("www.")
        if not host or host in own_hosts:
            continue
        for rx, name in _SEARCH_RX:
            if rx.search(host):
                sources[i], media[i] = name, "organic"
                break
        else:
            sources[i], media[i] = host, "referral"
    return sources, media


def session_touches(events: pd.DataFrame,
                    own_hosts: set[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One touch per session of ``events`` (see the module notes for the source order).

    Returns the touches (canonical ``touchpoints`` columns plus ``_file``/``_row`` of the session's
    first event) and the events that belong to a session, with their session's touch id.
    """
    ev = events.dropna(subset=["user_pseudo_id", "ga_session_id"]).copy()
    ev["ga_session_id"] = ev["ga_session_id"].astype(str).str.replace(r"\.0$", "", regex=True)
    ev["touch_id"] = ev["user_pseudo_id"].astype(str) + ":" + ev["ga_session_id"]
    ev = ev.sort_values(["touch_id", "timestamp", "_file", "_row"], kind="stable")
    # a session's source fields: collected only from events carrying one
    has_cts = ev[["cts_source", "cts_medium", "cts_gclid", "cts_dclid"]].notna().any(axis=1)
    for c in [c for c in FLAT if c.startswith("cts_")]:
        ev[c] = ev[c].where(has_cts)
    g = ev.groupby("touch_id", sort=True)
    first = g.first()  # first non-missing value per column, events in time order
    head = g.head(1).set_index("touch_id")
    s = pd.DataFrame(index=first.index)
    s["visitor_id"] = head["user_pseudo_id"].astype(str)
    s["timestamp"] = head["timestamp"]
    s["_file"], s["_row"] = head["_file"], head["_row"]
    # the first event carrying collected_traffic_source decides it (not a mix of several events)
    cts_first = ev.loc[has_cts].groupby("touch_id").head(1).set_index("touch_id")
    cts = cts_first.reindex(s.index)
    landing = first["page_location"]
    if own_hosts is None:
        own_hosts = {(urlsplit(str(u)).hostname or "").lower().removeprefix("www.") for u in landing.dropna()}

    src = pd.Series(None, index=s.index, dtype=object)
    med, camp, term, content, ad_group = (src.copy() for _ in range(5))
    how = pd.Series("(direct)", index=s.index, dtype=object)

    def take(mask: pd.Series, label: str, **values: pd.Series | str) -> None:
        mask = mask & src.isna()
        if not mask.any():
            return
        for target, v in (("source", src), ("medium", med), ("campaign", camp), ("term", term),
                          ("content", content), ("ad_group", ad_group)):
            given = values.get(target)
            if given is None:
                continue
            v[mask] = given[mask] if isinstance(given, pd.Series) else given
        how[mask] = label

    take(first["sl_source"].notna() | first["sl_medium"].notna(), "session_traffic_source_last_click",
         source=first["sl_source"], medium=first["sl_medium"], campaign=first["sl_campaign"],
         term=first["sl_term"], content=first["sl_content"])
    take(first["sl_gads_campaign"].notna(), "session_traffic_source_last_click", source="google",
         medium="cpc", campaign=first["sl_gads_campaign"], ad_group=first["sl_gads_ad_group"])
    take(first["sl_cc_source"].notna(), "session_traffic_source_last_click", source=first["sl_cc_source"],
         medium=first["sl_cc_medium"], campaign=first["sl_cc_campaign"])
    take(cts["cts_source"].notna() | cts["cts_medium"].notna(), "collected_traffic_source",
         source=cts["cts_source"], medium=cts["cts_medium"], campaign=cts["cts_campaign"],
         term=cts["cts_term"], content=cts["cts_content"])
    take(cts["cts_gclid"].notna(), "collected_traffic_source", source="google", medium="cpc")
    take(first["ep_source"].notna() | first["ep_medium"].notna(), "event_params", source=first["ep_source"],
         medium=first["ep_medium"], campaign=first["ep_campaign"], term=first["ep_term"],
         content=first["ep_content"])
    ref_source, ref_medium = _referrer_source(first["page_referrer"], own_hosts)
    take(ref_source.notna(), "page_referrer", source=ref_source, medium=ref_medium)
    s["source"] = src.fillna("(direct)").astype(str).str.strip()
    s["medium"] = med.where(src.notna(), "(none)").fillna("(not set)").astype(str).str.strip()
    s["campaign"], s["keyword"], s["ad_group"], s["_content"] = camp, term, ad_group, content
    s["_source_from"] = how

    # click ids: collected_traffic_source first, then the landing page's query string
    kind = pd.Series(None, index=s.index, dtype=object)
    value = kind.copy()
    for col, name in (("cts_gclid", "gclid"), ("cts_dclid", "dclid"), ("ep_gclid", "gclid")):
        fill = kind.isna() & first[col].notna()
        kind[fill], value[fill] = name, first[col][fill]
    from_url = landing.map(click_id_from_url)
    url_kind = from_url.map(lambda t: t[0])
    url_value = from_url.map(lambda t: t[1])
    fill = kind.isna() & url_kind.notna()
    kind[fill], value[fill] = url_kind[fill], url_value[fill]
    s["click_id"], s["click_id_type"] = value, kind
    s["landing_page"] = landing
    s["interaction_type"] = "session"
    touches = s.reset_index()
    return touches, ev


# ------------------------------------------------------------------------------------------- user ids
_EMAIL_LIKE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
_PHONE_LIKE = re.compile(r"^\+?[\d\s().-]{9,20}$")


def _person_ids(user_id: pd.Series, file: str) -> tuple[pd.Series, list[Problem]]:
    """``user_id`` kept as the person id; e-mail- or phone-like ones replaced by their keyed hash."""
    text = user_id.astype("string").str.strip()
    email = text.str.match(_EMAIL_LIKE).fillna(False).to_numpy(bool)
    digits = text.str.count(r"\d").fillna(0).to_numpy()
    phone = (text.str.match(_PHONE_LIKE).fillna(False).to_numpy(bool) & (digits >= 9) & (digits <= 15)
             & ~email)
    out = text.copy()
    problems = []
    for mask, kind, what in ((email, "email", "an e-mail address"), (phone, "phone", "a phone number")):
        if not mask.any():
            continue
        try:
            out[mask] = hash_identifiers(text[mask], kind).to_numpy()  # type: ignore[arg-type]
        except MissingHashKeyError as exc:
            raise DataValidationError([Problem("identities", file, "user_id", str(exc), "error")]) from None
        problems.append(Problem(
            "identities", file, "user_id", f"user_id looks like {what} on {int(mask.sum())} event(s): "
            "replaced by its keyed hash (Google's User-ID policy forbids personal data as User-ID; send an "
            "internal id instead)", "warning"))
    return out, problems


# ------------------------------------------------------------------------------------------- reader
def read(inputs: list[Path], options: ImportOptions) -> Imported:
    """Reader of ``closedloop import ga4`` (see the module notes)."""
    config = options.config
    conversions = tuple(config.get("conversion_events") or CONVERSION_EVENTS) + tuple(
        config.get("key_events") or ())
    own_hosts = set(config["own_hosts"]) if config.get("own_hosts") else None
    events, problems, notes = read_events(inputs, options)
    files = ", ".join(sorted(events["_file"].unique()))

    no_session = events["ga_session_id"].isna() | events["user_pseudo_id"].isna()
    problems += _per_file(events, no_session.to_numpy(), "ga_session_id",
                          "event without user_pseudo_id or ga_session_id (in no session): no touch")
    touches, in_session = session_touches(events, own_hosts)
    later = in_session.duplicated("touch_id", keep="first").to_numpy()
    is_conv = in_session["event_name"].isin(conversions).to_numpy()
    problems += _per_file(in_session, later & ~is_conv, "event_name",
                          "later event of a session: folded into the session's touch")
    problems += _per_file(in_session, later & is_conv, "event_name",
                          "conversion event: not a touch (identities / orders)")
    n_conv_first = int((~later & is_conv).sum())
    if n_conv_first:
        notes.append(f"{n_conv_first} session(s) began with a conversion event: the session is the touch, "
                     "the event also counts as a conversion")
    how = touches["_source_from"].value_counts()
    notes.append(f"{len(touches):,} session touches; source from " + ", ".join(
        f"{k} {v:,}" for k, v in how.items()))

    scrub = Scrubbed("touchpoints", files)
    scrub.urls(touches, "landing_page")
    scrub.column(touches, "campaign")
    scrub.column(touches, "keyword")
    scrub.column(touches, "ad_group")
    problems += scrub.problems()
    notes += scrub.notes()
    touches = touches.drop(columns=["_source_from", "_content"])
    clicks = config_click_report(config, options)
    if clicks is not None:
        touches, note = join_click_report(touches, clicks)
        notes.append(note)
    if config.get("channel_rules"):
        rules = ChannelRules.from_yaml(config["channel_rules"])
        touches["channel"] = group_channels(touches, rules).channel.astype(str).to_numpy()
        notes.append(f"channels grouped with {rules.name}")
    frames: dict[str, pd.DataFrame] = {"touchpoints": touches}

    # conversions: identities and orders
    conv = events.loc[events["event_name"].isin(conversions)].copy()
    with_user = events.loc[events["user_id"].notna() & events["user_pseudo_id"].notna()].copy()
    if len(with_user):
        with_user["person_id"], found = _person_ids(with_user["user_id"], files)
        problems += found
        with_user["method"] = np.where(with_user["event_name"].isin(_FORM_EVENTS), "form", "login")
        with_user = with_user.sort_values("timestamp", kind="stable")
        pairs = with_user.groupby(["user_pseudo_id", "person_id"], sort=False).head(1)
        ident = pd.DataFrame({"visitor_id": pairs["user_pseudo_id"].astype(str),
                              "person_id": pairs["person_id"], "matched_at": pairs["timestamp"],
                              "method": pairs["method"], "_file": pairs["_file"], "_row": pairs["_row"]})
        frames["identities"] = ident.reset_index(drop=True)
        notes.append(f"{len(with_user):,} events carried a user_id: {len(ident):,} visitor-person links "
                     "in identities")
        person_of_visitor = ident.drop_duplicates("visitor_id").set_index("visitor_id")["person_id"]
    else:
        person_of_visitor = pd.Series(dtype=object)
    n_conv_anon = int((conv["user_id"].isna()).sum())
    notes.append(f"{len(conv):,} conversion events ({', '.join(conversions)}); {n_conv_anon:,} without a "
                 "user_id link no person (the CRM's lead records can, through their own identities)")

    purchases = conv.loc[conv["event_name"] == "purchase"]
    if len(purchases):
        revenue = pd.to_numeric(purchases["purchase_revenue"], errors="coerce")
        revenue = revenue.fillna(pd.to_numeric(purchases["value"], errors="coerce"))
        visitor = purchases["user_pseudo_id"].astype(str)
        customer = visitor.map(person_of_visitor)
        n_anon = int(customer.isna().sum())
        if n_anon:
            problems.append(Problem("orders", files, "customer_id", "purchase by a visitor with no user_id: "
                                    "the visitor id (user_pseudo_id) stands in for the customer (kept)",
                                    "warning", n_anon))
        order_id = purchases["transaction_id"].astype("string")
        order_id = order_id.fillna(visitor + ":" + purchases["event_timestamp"].astype(str))
        frames["orders"] = pd.DataFrame({
            "order_id": order_id, "customer_id": customer.fillna(visitor),
            "timestamp": purchases["timestamp"], "amount": revenue, "currency": purchases["currency"],
            "_file": purchases["_file"], "_row": purchases["_row"]}).reset_index(drop=True)
    return Imported(frames, problems, notes)


# ------------------------------------------------------------------------------------------- SQL
def bigquery_sql(dataset: str = "my-project.analytics_123456789", start: str | None = None,
                 end: str | None = None) -> str:
    """BigQuery SQL that extracts, from ``analytics_<id>.events_*``, the columns this import reads.

    Run it in BigQuery and download the result as CSV (or export it to Cloud Storage); the file imports
    with ``closedloop import ga4 FILE.csv``. ``start`` / ``end`` (``YYYYMMDD``) bound ``_TABLE_SUFFIX``;
    the suffix is written as ``table_suffix`` so intraday rows can be told from daily ones.

    Examples
    --------
    >>> "UNNEST(event_params)" in bigquery_sql("p.analytics_1", "20240101", "20240131")
    True
    """
    def param(key: str, kind: str = "string_value") -> str:
        return f"(SELECT value.{kind} FROM UNNEST(event_params) WHERE key = '{key}') AS {key}"

    def path(p: str) -> str:
        return f"{p} AS {p.replace('.', '_')}"

    params = [param("ga_session_id", "int_value"), param("page_location"), param("page_referrer"),
              param("source"), param("medium"), param("campaign"), param("term"), param("content"),
              param("gclid"), param("currency"),
              "(SELECT COALESCE(value.double_value, value.float_value, CAST(value.int_value AS FLOAT64)) "
              "FROM UNNEST(event_params) WHERE key = 'value') AS value"]
    paths = [p for names in FLAT.values() for p in names
             if p.split(".")[0] in ("collected_traffic_source", "session_traffic_source_last_click")]
    paths += ["ecommerce.transaction_id", "ecommerce.purchase_revenue"]
    where = ""
    if start or end:
        lo, hi = start or "00000000", end or "99999999"
        where = (f"\nWHERE REGEXP_EXTRACT(_TABLE_SUFFIX, r'(\\d{{8}})$') BETWEEN '{lo}' AND '{hi}'")
    cols = ",\n  ".join(["event_date", "event_timestamp", "event_name", "user_pseudo_id", "user_id",
                         *params, *(path(p) for p in paths), "_TABLE_SUFFIX AS table_suffix"])
    return (f"-- closedloop import ga4: one row per event of {dataset}.events_* (daily and intraday)\n"
            f"SELECT\n  {cols}\nFROM `{dataset}.events_*`{where}\n")

"""Ad platforms' campaign performance exports in, the ``spend`` table out; Google Ads clicks onto touches.

``closedloop import google-ads | meta-ads | microsoft-ads | linkedin-ads FILE... --out DATA_DIR`` reads
each platform's standard campaign (or ad group / ad set) performance export by day, as its UI or API
writes it: report-title and date-range lines above the header, total rows and copyright lines below
the data, UTF-16 tab-separated files (Excel-style downloads) as well as UTF-8 comma-separated ones,
thousands separators, ``--`` for none. Each row becomes a ``spend`` row (date, channel, campaign,
campaign id, ad group, cost, currency, impressions, clicks, platform) with its channel given by the
channel rules from the platform's source and medium:

=============  ====================  ===========================================================
platform       source / medium       notes
=============  ====================  ===========================================================
google-ads     google / cpc          Campaign type Display -> display, Video -> youtube / cpv,
                                     Shopping -> google shopping / cpc; Performance Max, Demand
                                     Gen, Smart Shopping -> Cross-network (as Google groups them)
meta-ads       facebook / paid       currency from ``Amount spent (EUR)`` when no Currency column
microsoft-ads  bing / cpc            Audience campaigns -> display
linkedin-ads   linkedin / paid       ``Total Spent`` in the account currency
=============  ====================  ===========================================================

Rows of one day, campaign, ad group and currency (device or network segments) are summed, counted in
the report; two currencies are never added. Campaign and ad group names are scrubbed of e-mail
addresses and phone numbers.

A Google Ads *click performance report* (a file with a Google click id column: gclid, day, campaign,
ad group, keyword) given to ``google-ads`` together with a canonical ``touchpoints`` file (e.g.
``data/web/touchpoints.parquet``) writes those touches back with campaign, ad group and keyword filled
from the click report by gclid, and google / cpc where the touch had no source: paid clicks land in
their campaign and keyword even when UTM tags were lost. :func:`join_click_report` does it in code, and
``closedloop import ga4 --config`` with ``google_ads_click_report: FILE`` at GA4 import.

Config keys: ``channel_rules`` (a rules file or shipped set name), ``source`` / ``medium`` (override the
platform's), ``dayfirst`` (dates like 02/01/2024 are 2 January), ``decimal: ","`` (decimal comma).
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.channels import ChannelRules, group_channels
from closedloop_nb.errors import DataValidationError, Problem
from closedloop_nb.imports._common import Imported, ImportOptions, input_files
from closedloop_nb.imports._web import Scrubbed

__all__ = ["PLATFORMS", "join_click_report", "read_click_report", "read_google_ads", "read_linkedin_ads",
           "read_meta_ads", "read_microsoft_ads", "read_spend_export"]

#: Canonical field -> header names each platform's exports use (compared case-insensitively).
COLUMNS: dict[str, tuple[str, ...]] = {
    "date": ("day", "date", "segments.date", "timeperiod", "gregorian date", "reporting starts",
             "start date (in utc)", "start date", "reporting_starts", "date_start"),
    "campaign": ("campaign", "campaign name", "campaign.name", "campaignname", "campaign_name"),
    "campaign_id": ("campaign id", "campaign.id", "campaignid", "campaign_id"),
    "ad_group": ("ad group", "ad group name", "ad_group.name", "adgroupname", "ad set name", "ad set",
                 "adset_name", "ad_group"),
    "cost": ("cost", "spend", "amount spent", "total spent", "cost (micros)", "metrics.cost_micros",
             "amount_spent", "cost in local currency", "costinlocalcurrency"),
    "currency": ("currency code", "currency", "currencycode", "customer.currency_code", "account currency"),
    "impressions": ("impr.", "impressions", "metrics.impressions", "impr"),
    "clicks": ("clicks", "link clicks", "metrics.clicks", "clicks (all)"),
    "campaign_type": ("campaign type", "advertising channel type", "campaign.advertising_channel_type",
                      "campaigntype"),
}
_CLICK_COLUMNS: dict[str, tuple[str, ...]] = {
    "gclid": ("google click id", "gclid", "click_view.gclid", "click id"),
    "date": ("day", "date", "segments.date", "click date"),
    "campaign": COLUMNS["campaign"],
    "ad_group": COLUMNS["ad_group"],
    "keyword": ("keyword", "keyword text", "click_view.keyword_info.text", "search keyword"),
}

#: platform -> (source, medium) of its traffic, for channel grouping.
PLATFORMS: dict[str, tuple[str, str]] = {
    "google-ads": ("google", "cpc"),
    "meta-ads": ("facebook", "paid_social"),
    "microsoft-ads": ("bing", "cpc"),
    "linkedin-ads": ("linkedin", "paid_social"),
}
_GOOGLE_TYPES = {"display": ("google", "display"), "video": ("youtube", "cpv"),
                 "shopping": ("google shopping", "cpc"), "search": ("google", "cpc")}
#: Campaign types Google's channel group puts in Cross-network ("Cross-network includes Demand Gen,
#: Performance Max and Smart Shopping", [GA4] Default channel group).
_CROSS_NETWORK_TYPES = {"performance max", "performance_max", "demand gen", "demand_gen", "discovery",
                        "smart", "smart shopping", "multi_channel"}
_FOOTER = re.compile(r"^\W*(©|\(c\)|copyright)", re.IGNORECASE)
_TOTAL = re.compile(r"^\s*(total|totals|grand total|summe|gesamt)\b", re.IGNORECASE)
_CURRENCY_IN_HEADER = re.compile(r"\(([A-Z]{3})\)\s*$")


# ------------------------------------------------------------------------------------------- files
def _text(path: Path, encoding: str | None) -> str:
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if encoding:
        return raw.decode(encoding)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        why = f"not UTF-8 text at byte {exc.start}; pass --encoding (e.g. cp1252)"
        raise DataValidationError([Problem("spend", str(path), None, why, "error")]) from None


def _header_index(rows: list[list[str]], fields: dict[str, tuple[str, ...]], need: tuple[str, ...]) -> int:
    def has(names: set[str], f: str) -> bool:
        return any(_norm(alias) in names or _strip_currency(names, alias) for alias in fields[f])

    for i, row in enumerate(rows[:50]):
        names = {_norm(c) for c in row}
        if all(has(names, f) for f in need):
            return i
    return -1


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", str(name).strip().strip('"').lower())


def _strip_currency(names: set[str], alias: str) -> bool:
    return any(_CURRENCY_IN_HEADER.sub("", n.upper()).strip().lower() == alias for n in names)


def _table(path: Path, options: ImportOptions, fields: dict[str, tuple[str, ...]], need: tuple[str, ...],
           table: str) -> tuple[pd.DataFrame, dict[str, str], int, str | None]:
    """The data rows of an export (with ``_row``: 1-based rows after the header) and the column used per
    field; report title lines above the header are skipped, blank and footer lines end the data."""
    text = _text(path, options.encoding)
    lines = text.splitlines()
    sample = "\n".join(lines[:60])
    delimiter = "\t" if sample.count("\t") > sample.count(",") else ";" if sample.count(";") > sample.count(
        ",") else ","
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    at = _header_index(rows, fields, need)
    if at < 0:
        wanted = "; ".join(f"{f}: one of {', '.join(fields[f][:4])}" for f in need)
        why = f"no header row with the columns of this export ({wanted})"
        raise DataValidationError([Problem(table, str(path), None, why, "error")])
    header = [c.strip().strip('"') for c in rows[at]]
    data, footers = [], 0
    for row in rows[at + 1:]:
        if not row or not any(c.strip() for c in row):
            if data:
                break
            continue
        if len(row) == 1 and _FOOTER.match(row[0]):
            footers += 1
            continue
        data.append(row + [""] * (len(header) - len(row)))
    df = pd.DataFrame([r[: len(header)] for r in data], columns=header, dtype=object)
    df["_row"] = np.arange(1, len(df) + 1)
    df["_file"] = str(path)
    used: dict[str, str] = {}
    header_currency = None
    for f, aliases in fields.items():
        for alias in aliases:
            hit = next((c for c in header if _norm(c) == alias), None)
            if hit is None:
                bare = [(c, _CURRENCY_IN_HEADER.sub("", c).strip().lower()) for c in header]
                hit = next((c for c, b in bare if b == alias), None)
                if hit is not None and f == "cost":
                    header_currency = _CURRENCY_IN_HEADER.search(hit).group(1)  # type: ignore[union-attr]
            if hit is not None:
                used[f] = hit
                break
    return df, used, at, header_currency


def _number(values: pd.Series, decimal: str = ".") -> pd.Series:
    text = values.astype("string").str.strip()
    text = text.str.replace(r"[^\d,.\-]", "", regex=True)
    if decimal == ",":
        text = text.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    else:
        text = text.str.replace(",", "", regex=False)
    text = text.mask(text.isin(["", "-", "--"]))
    return pd.to_numeric(text, errors="coerce")


def _dates(values: pd.Series, dayfirst: bool) -> pd.Series:
    text = values.astype("string").str.strip()
    iso = text.str.match(r"^\d{4}-\d{2}-\d{2}")
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    if iso.any():
        out[iso.fillna(False)] = pd.to_datetime(text[iso.fillna(False)].str[:10], format="%Y-%m-%d",
                                                errors="coerce")
    rest = ~iso.fillna(False) & text.notna()
    if rest.any():
        out[rest] = pd.to_datetime(text[rest], format="mixed", dayfirst=dayfirst, errors="coerce")
    return out


# ------------------------------------------------------------------------------------------- spend
def _rules(options: ImportOptions) -> ChannelRules:
    name = options.config.get("channel_rules")
    return ChannelRules.from_yaml(name) if name else ChannelRules.default()


def read_spend_export(path: Path, platform: str,
                      options: ImportOptions) -> tuple[pd.DataFrame, list[Problem]]:
    """One campaign performance export as ``spend`` rows (not yet validated), with its problems."""
    df, used, _, header_currency = _table(path, options, COLUMNS, ("date", "cost"), "spend")
    problems: list[Problem] = []
    decimal = str(options.config.get("decimal", "."))
    file = str(path)
    date = _dates(df[used["date"]], bool(options.config.get("dayfirst", False)))
    first = df[df.columns[0]].astype(str)
    total = first.str.match(_TOTAL) | (date.isna() & df[used["date"]].astype(str).str.strip().eq(""))
    problems += _rows(df, total.to_numpy(), "spend", file, used["date"],
                      "report total row (the platform's sum of the rows above): left out", "info")
    df, date = df.loc[~total.to_numpy()], date[~total.to_numpy()]
    cost = _number(df[used["cost"]], decimal)
    if used["cost"].lower() in ("cost (micros)", "metrics.cost_micros"):
        cost = cost / 1_000_000
    out = pd.DataFrame({"date": date.dt.strftime("%Y-%m-%d").where(date.notna(), df[used["date"]]),
                        "cost": cost.where(cost.notna(), df[used["cost"]].where(
                            ~df[used["cost"]].astype(str).str.strip().isin(["--", ""]), 0.0))})
    for f in ("campaign", "campaign_id", "ad_group"):
        out[f] = df[used[f]].astype("string").str.strip().replace({"": pd.NA, "--": pd.NA}) if f in used \
            else pd.NA
    if "currency" in used:
        out["currency"] = df[used["currency"]].astype("string").str.strip().str.upper()
    else:
        out["currency"] = header_currency or options.config.get("currency")
    for f in ("impressions", "clicks"):
        out[f] = _number(df[used[f]], decimal).round().astype("Int64") if f in used else pd.NA
    source, medium = PLATFORMS[platform]
    source = options.config.get("source", source)
    medium = options.config.get("medium", medium)
    sources = pd.Series(source, index=out.index, dtype=object)
    media = pd.Series(medium, index=out.index, dtype=object)
    campaign_for_rules = out["campaign"].astype(object)
    if "campaign_type" in used:
        kind = df[used["campaign_type"]].astype(str).str.strip().str.lower()
        if platform == "google-ads":
            for name, (s, m) in _GOOGLE_TYPES.items():
                sources[kind == name], media[kind == name] = s, m
            cross = kind.isin(_CROSS_NETWORK_TYPES)
            campaign_for_rules = campaign_for_rules.where(~cross, "cross-network")
        elif platform == "microsoft-ads":
            media[kind.str.contains("audience")] = "display"
    grouped = group_channels(pd.DataFrame({"source": sources, "medium": media,
                                           "campaign": campaign_for_rules}), _rules(options))
    out["channel"] = grouped.channel.astype(str).to_numpy()
    out["platform"] = platform
    out["_file"], out["_row"] = file, df["_row"].to_numpy()
    return out.reset_index(drop=True), problems


def _rows(df: pd.DataFrame, mask: np.ndarray, table: str, file: str, column: str | None, reason: str,
          severity: str) -> list[Problem]:
    if not mask.any():
        return []
    rows = df["_row"].to_numpy()[mask]
    return [Problem(table, file, column, reason, severity, int(mask.sum()),  # type: ignore[arg-type]
                    tuple(int(r) for r in rows[:10]))]


def _sum_segments(spend: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """Rows of one day, channel, campaign, ad group and currency summed (device / network segments)."""
    key = ["date", "channel", "campaign", "ad_group", "currency", "platform"]
    numeric = pd.to_numeric(spend["cost"], errors="coerce")
    ok = numeric.notna() & spend["date"].astype(str).str.match(r"^\d{4}-\d{2}-\d{2}$")
    good, bad = spend.loc[ok].copy(), spend.loc[~ok]
    good["cost"] = numeric[ok]
    filled = good[key].astype(object).where(good[key].notna(), "\0")
    dup = filled.duplicated(keep="first").to_numpy()
    problems = []
    for file, rows in good.loc[dup].groupby("_file")["_row"]:
        problems.append(Problem("spend", str(file), "cost", "row of the same day, campaign, ad group and "
                                "currency as an earlier row (a device or network segment): summed into it",
                                "info", len(rows), tuple(int(r) for r in rows.iloc[:10])))
    agg = {"cost": "sum", "impressions": "sum", "clicks": "sum", "campaign_id": "first", "_file": "first",
           "_row": "first"}
    group_key = [filled[k].rename(k) for k in key]
    summed = good.groupby(group_key, sort=False, dropna=False).agg(
        {k: v for k, v in agg.items() if k in good}).reset_index()
    for k in key:
        summed[k] = summed[k].where(summed[k] != "\0")
    for f in ("impressions", "clicks"):
        has = good[f].notna().groupby(group_key, sort=False, dropna=False).any().to_numpy()
        summed[f] = summed[f].astype("Int64").where(has)
    return pd.concat([summed, bad], ignore_index=True), problems


def _read_platform(inputs: list[Path], options: ImportOptions, platform: str) -> Imported:
    files = input_files(inputs)
    spend_frames, problems, notes = [], [], []
    click_files, touch_files = [], []
    for path in files:
        name = path.name.lower()
        if name.startswith("touchpoints"):
            touch_files.append(path)
            continue
        if platform == "google-ads" and _is_click_report(path, options):
            click_files.append(path)
            continue
        frame, found = read_spend_export(path, platform, options)
        spend_frames.append(frame)
        problems += found
    frames: dict[str, pd.DataFrame] = {}
    if spend_frames:
        spend = pd.concat(spend_frames, ignore_index=True)
        spend, found = _sum_segments(spend)
        problems += found
        scrub = Scrubbed("spend", ", ".join(str(f) for f in files))
        scrub.column(spend, "campaign")
        scrub.column(spend, "ad_group")
        problems += scrub.problems()
        notes += scrub.notes()
        frames["spend"] = spend
        by = spend.groupby(["channel", "currency"], dropna=False)["cost"].sum()
        notes.append(f"{platform}: " + "; ".join(f"{ch} {cost:,.2f} {cur}" for (ch, cur), cost in by.items()))
    notes.append(f"{platform}: read {len(files) - len(click_files) - len(touch_files)} campaign export(s)"
                 + (f", {len(click_files)} click report(s)" if click_files else ""))
    if click_files:
        clicks = pd.concat([read_click_report(p, options) for p in click_files], ignore_index=True)
        notes.append(f"click performance report: {len(clicks):,} clicks with a gclid")
        if not touch_files:
            why = ("a click performance report needs the touches to join onto: give a canonical touchpoints "
                   "file too (e.g. data/web/touchpoints.parquet)")
            raise DataValidationError([Problem("touchpoints", str(click_files[0]), None, why, "error")])
        touches = pd.concat([_read_touches(p) for p in touch_files], ignore_index=True)
        touches, note = join_click_report(touches, clicks)
        notes.append(note)
        frames["touchpoints"] = touches
    if not frames:
        why = f"no {platform} export found among the inputs"
        raise DataValidationError([Problem("spend", ", ".join(map(str, inputs)), None, why, "error")])
    return Imported(frames, problems, notes)


def read_google_ads(inputs: list[Path], options: ImportOptions) -> Imported:
    """Reader of ``closedloop import google-ads`` (campaign performance and click performance reports)."""
    return _read_platform(inputs, options, "google-ads")


def read_meta_ads(inputs: list[Path], options: ImportOptions) -> Imported:
    """Reader of ``closedloop import meta-ads`` (Ads Manager export by day)."""
    return _read_platform(inputs, options, "meta-ads")


def read_microsoft_ads(inputs: list[Path], options: ImportOptions) -> Imported:
    """Reader of ``closedloop import microsoft-ads`` (campaign performance report by day)."""
    return _read_platform(inputs, options, "microsoft-ads")


def read_linkedin_ads(inputs: list[Path], options: ImportOptions) -> Imported:
    """Reader of ``closedloop import linkedin-ads`` (Campaign Manager campaign performance export)."""
    return _read_platform(inputs, options, "linkedin-ads")


# ------------------------------------------------------------------------------------------- clicks
def _is_click_report(path: Path, options: ImportOptions) -> bool:
    try:
        text = _text(path, options.encoding)
    except DataValidationError:
        return False
    head = text[:4000].lower()
    return any(alias in head for alias in _CLICK_COLUMNS["gclid"][:3])


def read_click_report(path: str | Path, options: ImportOptions | None = None) -> pd.DataFrame:
    """A Google Ads click performance report: one row per click with ``gclid``, ``date``, ``campaign``,
    ``ad_group`` and ``keyword`` (names scrubbed of contact details)."""
    options = options or ImportOptions()
    df, used, _, _ = _table(Path(path), options, _CLICK_COLUMNS, ("gclid",), "touchpoints")
    out = pd.DataFrame({f: (df[used[f]].astype("string").str.strip().replace({"": pd.NA, "--": pd.NA})
                            if f in used else pd.Series(pd.NA, index=df.index, dtype="string"))
                        for f in _CLICK_COLUMNS})
    out = out.dropna(subset=["gclid"]).drop_duplicates("gclid")
    for f in ("campaign", "ad_group", "keyword"):
        scrub = Scrubbed("touchpoints", str(path))
        scrub.column(out, f)
    return out.reset_index(drop=True)


def _read_touches(path: Path) -> pd.DataFrame:
    if path.name.lower().endswith(".parquet"):
        return pd.read_parquet(path)
    return pd.read_csv(path, dtype=str)


def join_click_report(touches: pd.DataFrame, clicks: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Fill the campaign, ad group and keyword of touches from a click report, by gclid.

    A touch whose ``click_id`` is a gclid found in ``clicks`` gets the report's campaign, ad group and
    keyword where its own are missing, and google / cpc where its source is missing, ``(direct)`` or
    ``(not set)``; its channel is cleared so validation groups it again. Returns the touches and a note.

    Examples
    --------
    >>> t = pd.DataFrame({"click_id": ["G1"], "click_id_type": ["gclid"], "source": ["(direct)"],
    ...                   "medium": ["(none)"], "campaign": [None], "channel": ["Direct"]})
    >>> c = pd.DataFrame({"gclid": ["G1"], "campaign": ["brand"], "ad_group": ["crm"], "keyword": ["acme"]})
    >>> out, _ = join_click_report(t, c)
    >>> out[["source", "medium", "campaign", "keyword"]].values.tolist()
    [['google', 'cpc', 'brand', 'acme']]
    """
    out = touches.copy()
    for col in ("campaign", "ad_group", "keyword", "channel", "click_id", "click_id_type"):
        if col not in out:
            out[col] = pd.NA
        out[col] = out[col].astype(object)
    lookup = clicks.drop_duplicates("gclid").set_index("gclid")
    is_gclid = out["click_id_type"].astype(str).str.lower().eq("gclid") | out["click_id_type"].isna()
    hit = is_gclid & out["click_id"].isin(lookup.index)
    ids = out.loc[hit, "click_id"]
    for col in ("campaign", "ad_group", "keyword"):
        missing = hit & out[col].isna()
        out.loc[missing, col] = ids[missing[hit].to_numpy()].map(lookup[col]).to_numpy()
    no_source = hit & out["source"].astype(str).isin(["(direct)", "(not set)", "", "nan", "<NA>", "None"])
    out.loc[no_source, "source"], out.loc[no_source, "medium"] = "google", "cpc"
    out.loc[no_source, "click_id_type"] = "gclid"
    out.loc[hit, "channel"] = pd.NA
    n_gclid = int((out["click_id_type"].astype(str).str.lower() == "gclid").sum())
    note = (f"click report joined by gclid: {int(hit.sum()):,} of {n_gclid:,} touches with a gclid found "
            f"({int(no_source.sum()):,} had no source and became google / cpc)")
    return out, note


def config_click_report(config: dict[str, Any], options: ImportOptions) -> pd.DataFrame | None:
    """The click report named by an import config's ``google_ads_click_report`` key, if any."""
    path = config.get("google_ads_click_report")
    return read_click_report(path, options) if path else None

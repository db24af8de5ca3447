"""GA4's BigQuery export (tests/data/exports/marketing/ga4/, built from Google's documented schema; see
the README there): one touch per session with the session's source, conversion events as identities and
orders. Every expected value is worked out by hand from the events written in build_ga4.py."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pandas as pd
import pytest

from closedloop_nb.channels import ChannelRules, group_channels
from closedloop_nb.cli import main
from closedloop_nb.errors import DataValidationError
from closedloop_nb.imports import import_source
from closedloop_nb.imports.ga4 import bigquery_sql

MARKETING = Path(__file__).parents[1] / "data" / "exports" / "marketing"
GA4 = MARKETING / "ga4"
T = pd.Timestamp

# touch id -> (time, source, medium, campaign, keyword, ad group, landing page, click id, type, channel)
EXPECTED_TOUCHES = {
    # UTM tags (session_traffic_source_last_click.manual_campaign); the e-mail in the term is masked, the
    # email= parameter dropped from the landing page
    "1001.1700000000:1704099600": ("2024-01-01T09:00Z", "newsletter", "email", "spring_launch", "[email] crm",
                                   None, "https://acme.example/pricing?utm_source=newsletter&utm_medium=email"
                                   "&utm_campaign=spring_launch", None, None, "Email"),
    # auto-tagged Google Ads click: google_ads_campaign gives google / cpc, campaign and ad group
    "2002.1700000000:1704103200": ("2024-01-01T10:00Z", "google", "cpc", "brand_search", None,
                                   "acme crm brand", "https://acme.example/?gclid=Cj0KCQ_B1", "Cj0KCQ_B1",
                                   "gclid", "Paid Search"),
    # the same visitor's return: cross_channel_campaign (direct) / (none)
    "2002.1700000000:1704189600": ("2024-01-02T10:00Z", "(direct)", "(none)", "(direct)", None, None,
                                   "https://acme.example/checkout", None, None, "Direct"),
    # untagged, no last-click record, referred by www.google.com: google / organic
    "3003.1700000000:1704110400": ("2024-01-01T12:00Z", "google", "organic", None, None, None,
                                   "https://acme.example/blog/closed-loop", None, None, "Organic Search"),
    # direct session whose lead events are conversions, not touches
    "4004.1700000000:1704186000": ("2024-01-02T09:00Z", "(direct)", "(none)", None, None, None,
                                   "https://acme.example/demo", None, None, "Direct"),
    # referral from news.ycombinator.com (a social site in Google's list), from the intraday table
    "5005.1700000000:1704272400": ("2024-01-03T09:00Z", "news.ycombinator.com", "referral", None, None, None,
                                   "https://acme.example/", None, None, "Organic Social"),
    # event-parameter tags; the phone= parameter dropped from the landing page
    "6006.1700000000:1704193200": ("2024-01-02T11:00Z", "partner.example", "referral", "spring_partners",
                                   None, None, "https://acme.example/partners", None, None, "Referral"),
}
COLUMNS = ["timestamp", "source", "medium", "campaign", "keyword", "ad_group", "landing_page", "click_id",
           "click_id_type", "channel"]


def hashed(value: str, key: bytes = b"test-key") -> str:
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def _touch_table(touches: pd.DataFrame) -> dict[str, tuple]:
    out = {}
    for row in touches.itertuples(index=False):
        values = tuple(None if pd.isna(getattr(row, c)) else getattr(row, c) for c in COLUMNS)
        out[row.touch_id] = values
    return out


def _expected() -> dict[str, tuple]:
    return {k: (T(v[0]), *v[1:]) for k, v in EXPECTED_TOUCHES.items()}


@pytest.fixture(scope="module")
def result():
    mp = pytest.MonkeyPatch()
    mp.setenv("CLOSEDLOOP_HASH_KEY", "test-key")
    yield import_source("ga4", GA4)
    mp.undo()


def test_one_touch_per_session_with_the_sessions_source(result):
    assert _touch_table(result.tables["touchpoints"]) == _expected()
    assert set(result.tables["touchpoints"]["interaction_type"]) == {"session"}


def test_conversion_events_are_identities_not_touches(result):
    touch_times = set(result.tables["touchpoints"]["timestamp"])
    # generate_lead (10:05, 09:05), form_submit, sign_up and purchase times are not touch times
    for when in ("2024-01-01T10:05Z", "2024-01-02T09:05Z", "2024-01-02T09:05:01Z", "2024-01-02T11:05Z",
                 "2024-01-02T10:10Z"):
        assert T(when) not in touch_times
    ident = result.tables["identities"].sort_values("visitor_id")
    assert ident[["visitor_id", "person_id", "method"]].values.tolist() == [
        ["2002.1700000000", "crm-000123", "form"],    # internal user_id kept as it is
        ["4004.1700000000", "crm-000456", "form"],
        ["6006.1700000000", hashed("bob@example.com"), "form"],  # e-mail as user_id: hashed as an e-mail
    ]
    assert ident["matched_at"].tolist() == [T("2024-01-01T10:05Z"), T("2024-01-02T09:05Z"),
                                            T("2024-01-02T11:05Z")]
    warned = [p for p in result.report.problems if p.column == "user_id"]
    assert len(warned) == 1 and "e-mail address on 1 event" in warned[0].reason


def test_purchase_is_an_order_with_its_revenue(result):
    orders = result.tables["orders"]
    assert orders[["order_id", "customer_id", "amount", "currency"]].values.tolist() == [
        ["T-1001", "crm-000123", 149.0, "EUR"]]
    assert orders["timestamp"].tolist() == [T("2024-01-02T10:10Z")]


def test_every_event_is_accounted_for(result):
    counts = result.report.counts["touchpoints"]
    # 22 events: 7 sessions kept; 4 intraday copies of day 2, 1 duplicate, 1 outside a session, 4 later
    # events of a session and 5 conversion events filtered
    assert (counts["rows_in"], counts["rows_kept"], counts["rows_filtered"]) == (22, 7, 15)
    info = {p.reason.split(":")[0].split(" (")[0]: p for p in result.report.problems if p.severity == "info"}
    intraday = info["intraday event of a day whose daily table is also given"]
    assert intraday.n_rows == 4 and intraday.file.endswith("events_intraday_20240102.json")
    assert info["the same event read twice"].rows == (2,)


def test_personal_data_scrubbed_and_counted(result):
    scrubbed = {p.column: p.reason for p in result.report.problems if "removed at import" in p.reason}
    assert scrubbed["landing_page"].startswith("2 ") and scrubbed["keyword"].startswith("1 ")
    pages = " ".join(result.tables["touchpoints"]["landing_page"])
    assert "@" not in pages and "%40" not in pages and "7946" not in pages


def test_nested_parquet_reads_like_json(tmp_path, hash_key):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in ("events_20240101.json", "events_20240102.json"):
        rows = [json.loads(line) for line in (GA4 / name).read_text().splitlines()]
        table = pa.Table.from_struct_array(pa.array(rows))
        pq.write_table(table, tmp_path / name.replace(".json", ".parquet"))
    got = _touch_table(import_source("ga4", tmp_path).tables["touchpoints"])
    want = {k: v for k, v in _expected().items() if not k.startswith("5005")}  # day 3 not converted
    assert got == want


def test_flattened_csv_from_the_printed_sql_with_utc_text(hash_key):
    result = import_source("ga4", MARKETING / "ga4_bigquery_sql.csv")
    t = result.tables["touchpoints"]
    # '2024-01-05 08:30:00.000000 UTC'; the wbraid comes from the landing page; no tags -> (direct)
    assert t[["touch_id", "source", "medium", "click_id", "click_id_type", "channel"]].values.tolist() == [
        ["7007.1700000000:1704443400", "(direct)", "(none)", "WB77", "wbraid", "Direct"]]
    assert t["timestamp"].tolist() == [T("2024-01-05T08:30Z")]
    # Google's rules do not read click ids; the named click-id rule set makes it the paid click it was
    assert group_channels(t, ChannelRules.named("ga4-click-ids")).channel.tolist() == ["Paid Search"]
    again = import_source("ga4", MARKETING / "ga4_bigquery_sql.csv",
                          config={"channel_rules": "ga4-click-ids"})
    assert again.tables["touchpoints"]["channel"].tolist() == ["Paid Search"]
    # the intraday copy of the lead (table_suffix intraday_20240105) is dropped for the daily row
    assert result.report.counts["touchpoints"]["rows_in"] == 3
    assert result.tables["identities"]["person_id"].tolist() == ["crm-000789"]


def test_the_printed_sql_names_the_columns_the_csv_reader_takes():
    sql = bigquery_sql("p.analytics_42", "20240101", "20240131")
    header = (MARKETING / "ga4_bigquery_sql.csv").read_text().splitlines()[0].split(",")
    aliases = [line.rsplit(" AS ", 1)[-1].strip().rstrip(",") for line in sql.splitlines() if " AS " in line]
    plain = ["event_date", "event_timestamp", "event_name", "user_pseudo_id", "user_id"]
    assert plain + aliases == header
    assert "FROM `p.analytics_42.events_*`" in sql and "BETWEEN '20240101' AND '20240131'" in sql


def test_command_writes_identities_and_prints_sql(tmp_path, capsys, hash_key):
    out = tmp_path / "d"
    assert main(["import", "ga4", str(GA4 / "events_20240101.json"), "--out", str(out)]) == 0
    ident = pd.read_parquet(out / "identities.parquet")
    assert ident["person_id"].tolist() == ["crm-000123"]
    assert len(pd.read_parquet(out / "touchpoints.parquet")) == 3
    capsys.readouterr()
    assert main(["import", "ga4", "--print-sql", "--dataset", "acme.analytics_9"]) == 0
    assert "`acme.analytics_9.events_*`" in capsys.readouterr().out


def test_email_user_id_without_a_key_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("CLOSEDLOOP_HASH_KEY", raising=False)
    monkeypatch.setenv("CLOSEDLOOP_HASH_KEY_FILE", str(tmp_path / "none"))
    with pytest.raises(DataValidationError, match="user_id.*no key is set"):
        import_source("ga4", GA4 / "events_20240102.json")


def test_unreadable_json_names_file_and_line(tmp_path):
    bad = tmp_path / "events_20240101.json"
    bad.write_text('{"event_name": "page_view"}\n{not json\n')
    with pytest.raises(DataValidationError, match="line 2 is not JSON"):
        import_source("ga4", bad)


def _nullable(kind):
    return ["null", kind]


# BigQuery's Avro export: each RECORD an Avro record, REPEATED an array, NULLABLE a union with null
AVRO_SCHEMA = {
    "type": "record", "name": "Root", "fields": [
        {"name": "event_date", "type": _nullable("string")},
        {"name": "event_timestamp", "type": _nullable("long")},
        {"name": "event_name", "type": _nullable("string")},
        {"name": "event_params", "type": {"type": "array", "items": {
            "type": "record", "name": "event_params", "fields": [
                {"name": "key", "type": _nullable("string")},
                {"name": "value", "type": _nullable({"type": "record", "name": "value", "fields": [
                    {"name": "string_value", "type": _nullable("string"), "default": None},
                    {"name": "int_value", "type": _nullable("long"), "default": None},
                    {"name": "float_value", "type": _nullable("double"), "default": None},
                    {"name": "double_value", "type": _nullable("double"), "default": None}]})}]}}},
        {"name": "user_id", "type": _nullable("string")},
        {"name": "user_pseudo_id", "type": _nullable("string")},
        {"name": "collected_traffic_source", "default": None, "type": _nullable({
            "type": "record", "name": "collected_traffic_source", "fields": [
                {"name": n, "type": _nullable("string"), "default": None}
                for n in ("manual_source", "manual_medium", "manual_campaign_name", "manual_term",
                          "manual_content", "gclid", "dclid")]})},
    ]}


def test_avro_export_reads_like_json(tmp_path, hash_key):
    import fastavro  # the optional [avro] extra, part of [dev]

    rows = [json.loads(line) for line in (GA4 / "events_20240101.json").read_text().splitlines()]
    for r in rows:
        r.pop("traffic_source"), r.pop("session_traffic_source_last_click", None)
        cts = r.get("collected_traffic_source")
        r["collected_traffic_source"] = None if cts is None else {
            n: cts.get(n) for n in ("manual_source", "manual_medium", "manual_campaign_name", "manual_term",
                                    "manual_content", "gclid", "dclid")}
    with (tmp_path / "events_20240101.avro").open("wb") as fh:
        fastavro.writer(fh, fastavro.parse_schema(AVRO_SCHEMA), rows)
    got = _touch_table(import_source("ga4", tmp_path).tables["touchpoints"])
    # without the last-click record: A from collected_traffic_source, B's gclid alone -> google / cpc
    # (no campaign, no ad group: those came from google_ads_campaign), C from its referrer
    assert got["1001.1700000000:1704099600"] == _expected()["1001.1700000000:1704099600"]
    assert got["2002.1700000000:1704103200"][1:4] == ("google", "cpc", None)
    assert got["3003.1700000000:1704110400"] == _expected()["3003.1700000000:1704110400"]
    assert len(got) == 3


def test_configured_key_events_are_conversions_too(hash_key):
    result = import_source("ga4", GA4 / "events_20240101.json", config={"key_events": ["page_view"]})
    conv = [p for p in result.report.problems if p.reason.startswith("conversion event")]
    # events_20240101.json rows 2, 4 and 7 are page views, row 5 the generate_lead
    assert conv[0].rows == (2, 4, 5, 7)
    assert len(result.tables["touchpoints"]) == 3  # still one touch per session


@pytest.mark.parametrize("name", sorted(p.name for p in GA4.glob("*.json")))
def test_vectorised_arrow_reader_agrees_with_the_record_reader(name):
    """Two implementations of one reading: Arrow's (fast, columnar) and record by record (any JSON)."""
    from closedloop_nb.imports.ga4 import FLAT, _arrow_table, _extract, _frame_from_arrow, _records

    table = _arrow_table(GA4 / name)
    assert table is not None
    fast = _frame_from_arrow(table)
    slow = pd.DataFrame([_extract(r) for r in _records(GA4 / name)], columns=list(FLAT), dtype=object)

    def text(df):
        return [[None if pd.isna(v) else str(v) for v in df[c]] for c in FLAT]

    assert text(fast) == text(slow)


def test_a_file_that_is_not_a_ga4_export_is_refused(tmp_path):
    path = tmp_path / "deals.csv"
    path.write_text("Deal ID,Amount\n1,100\n")
    with pytest.raises(DataValidationError, match="not a GA4 BigQuery export"):
        import_source("ga4", path)

"""Ad platforms' campaign exports (tests/data/exports/marketing/, laid out as each platform documents its
report columns; see the README there) into ``spend``, and the Google Ads click report onto touches.
Expected rows are the files' own numbers, summed by hand where the export splits a day by device."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from closedloop_nb.cli import main
from closedloop_nb.errors import DataValidationError
from closedloop_nb.imports import import_source
from closedloop_nb.imports.ads import join_click_report, read_click_report

MARKETING = Path(__file__).parents[1] / "data" / "exports" / "marketing"
COLS = ["date", "channel", "campaign", "ad_group", "campaign_id", "cost", "currency", "impressions", "clicks"]


def _rows(spend: pd.DataFrame) -> list[list]:
    out = spend.assign(date=spend["date"].dt.strftime("%Y-%m-%d"))[COLS]
    return [[None if pd.isna(v) else v for v in row] for row in out.values.tolist()]


def test_google_ads_campaign_report():
    result = import_source("google-ads", MARKETING / "google_ads_campaign_report.csv")
    assert _rows(result.tables["spend"]) == [
        # Computers 1,234.50 + Mobile phones 15.50; 10,000 + 500 impressions; 300 + 10 clicks
        ["2024-01-01", "Paid Search", "brand_search", "acme crm brand", "111", 1250.0, "EUR", 10500, 310],
        # Performance Max: Google's Cross-network channel
        ["2024-01-01", "Cross-network", "pmax_all", None, "333", 200.0, "EUR", 8000, 90],
        # Shopping campaign: source Google Shopping (a shopping site), paid medium
        ["2024-01-02", "Paid Shopping", "spring_shopping", None, "444", 80.25, "EUR", 4000, 60],
        # Display campaign; the phone number in its name masked
        ["2024-01-02", "Display", "display_remarketing call [phone]", None, "555", 40.0, "EUR", 20000, 25],
    ]
    counts = result.report.counts["spend"]
    # 7 rows under the header: 2 total rows left out, 1 device row summed into another, 4 kept
    assert (counts["rows_in"], counts["rows_filtered"], counts["rows_kept"]) == (7, 3, 4)
    # the kept cost equals the export's own "Total: Account" row
    assert counts["value_kept"] == pytest.approx(1570.25)
    scrubbed = [p for p in result.report.problems
                if p.column == "campaign" and "removed at import" in p.reason]
    assert len(scrubbed) == 1 and scrubbed[0].reason.startswith("1 ")


def test_meta_ads_export_takes_the_currency_from_the_header():
    spend = import_source("meta-ads", MARKETING / "meta_ads_export.csv").tables["spend"]
    assert _rows(spend) == [
        ["2024-01-01", "Paid Social", "webinar_promo", "lookalike_1pct", "23851000000000001", 55.3, "EUR",
         12000, 140],
        ["2024-01-02", "Paid Social", "webinar_promo", "lookalike_1pct", "23851000000000001", 60.7, "EUR",
         13000, 150],
    ]


def test_microsoft_ads_report_with_preamble_and_copyright_footer():
    spend = import_source("microsoft-ads", MARKETING / "microsoft_ads_campaign_report.csv").tables["spend"]
    # "1/2/2024" is 2 January (the US month-first dates Microsoft writes by default)
    assert _rows(spend) == [
        ["2024-01-01", "Paid Search", "generic_crm_software", None, "777", 67.5, "USD", 3000, 45],
        ["2024-01-02", "Paid Search", "generic_crm_software", None, "777", 71.25, "USD", 3200, 50],
    ]


def test_linkedin_export_in_utf16_with_tabs():
    spend = import_source("linkedin-ads", MARKETING / "linkedin_ads_campaign_report.csv").tables["spend"]
    assert _rows(spend) == [
        ["2024-01-01", "Paid Social", "abm_enterprise", None, "600100001", 120.0, "EUR", 5000, 30],
        ["2024-01-02", "Paid Social", "abm_enterprise", None, "600100001", 130.0, "EUR", 5200, 35],
    ]


def test_two_currencies_on_one_key_are_not_added(tmp_path):
    path = tmp_path / "report.csv"
    path.write_text("Day,Campaign,Currency code,Cost\n2024-01-01,brand,EUR,10\n2024-01-01,brand,USD,12\n")
    result = import_source("google-ads", path)
    # one day, campaign and ad group in two currencies: both rows refused, counted, never summed to 22
    assert len(result.tables["spend"]) == 0
    # a table in two currencies has no single money total: the report leaves value figures out
    assert "value_rejected" not in result.report.counts["spend"]
    rejected = [p for p in result.report.problems if p.severity == "rejected"]
    assert rejected[0].rows == (1, 2) and "different values" in rejected[0].reason


def test_file_without_the_columns_names_them(tmp_path):
    path = tmp_path / "report.csv"
    path.write_text("Foo,Bar\n1,2\n")
    with pytest.raises(DataValidationError, match="no header row.*date: one of day"):
        import_source("meta-ads", path)


def test_click_report_fills_campaign_and_keyword_by_gclid(tmp_path):
    out = tmp_path / "joined"
    code = main(["import", "google-ads", str(MARKETING / "google_ads_click_report.csv"),
                 str(MARKETING / "touchpoints_untagged.csv"), "--out", str(out)])
    assert code == 0
    t = pd.read_parquet(out / "touchpoints.parquet").set_index("touch_id")
    # the untagged (direct) touch with gclid Cj0KCQ_Z9 lands in its campaign, ad group and keyword
    assert t.loc["t-1", ["source", "medium", "campaign", "ad_group", "keyword", "channel"]].tolist() == [
        "google", "cpc", "generic_crm_software", "crm software", "crm software", "Paid Search"]
    # a touch without a click id is left alone
    assert t.loc["t-2", ["source", "medium", "channel"]].tolist() == ["google", "organic", "Organic Search"]


def test_click_report_without_touches_is_refused():
    with pytest.raises(DataValidationError, match="needs the touches to join onto"):
        import_source("google-ads", MARKETING / "google_ads_click_report.csv")


def test_join_keeps_utm_tags_and_fills_only_what_is_missing():
    clicks = read_click_report(MARKETING / "google_ads_click_report.csv")
    touches = pd.DataFrame({"click_id": ["Cj0KCQ_B1"], "click_id_type": ["gclid"], "source": ["google"],
                            "medium": ["cpc"], "campaign": ["my_utm_name"], "keyword": [None],
                            "channel": ["Paid Search"]})
    out, note = join_click_report(touches, clicks)
    assert out[["campaign", "ad_group", "keyword"]].values.tolist() == [["my_utm_name", "acme crm brand",
                                                                        "acme crm"]]
    assert "1 of 1 touches with a gclid found" in note


def test_ga4_import_joins_a_click_report_named_in_its_config(tmp_path, hash_key):
    config = tmp_path / "ga4.yaml"
    config.write_text(f"google_ads_click_report: {MARKETING / 'google_ads_click_report.csv'}\n")
    result = import_source("ga4", MARKETING / "ga4" / "events_20240101.json", config=config)
    t = result.tables["touchpoints"].set_index("touch_id")
    assert t.loc["2002.1700000000:1704103200", "keyword"] == "acme crm"

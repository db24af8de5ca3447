"""Row accounting for every shipped mapping: rows_in counts the rows of the file as read (rows a mapping
filtered or folded included) and rows_in = kept + rejected + collapsed + filtered."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from closedloop_nb import list_mappings, load_dataset
from closedloop_nb.loaders import Mapping

EXPORTS = Path(__file__).parents[1] / "data" / "exports"
#: Each shipped mapping and an export fixture it reads.
FIXTURES = {
    "chartmogul_mrr": "chartmogul_activities.csv",
    "ga4_bigquery": "ga4_events.csv",
    "ga4_identities": "ga4_events.csv",
    "hubspot_contacts": "hubspot_contacts.csv",
    "hubspot_deals": "hubspot_deals.csv",
    "salesforce_lead": "salesforce_lead.csv",
    "salesforce_opportunity": "salesforce_opportunity.csv",
    "salesforce_opportunity_history": "salesforce_opportunity_history.csv",
}


def data_rows(path: Path) -> int:
    with open(path, newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def test_every_shipped_mapping_has_a_fixture():
    assert set(list_mappings()) <= set(FIXTURES), "add a fixture for the new mapping"


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_rows_in_counts_the_file_as_read(name, hash_key):
    mapping = Mapping.load(name)
    path = EXPORTS / FIXTURES[name]
    ds = load_dataset({mapping.table: path}, mappings={mapping.table: mapping}, timezone="Europe/London")
    c = ds.report.counts[mapping.table]
    assert c["rows_in"] == data_rows(path)
    assert c["rows_in"] == c["rows_kept"] + c["rows_rejected"] + c["rows_collapsed"] + c["rows_filtered"]


def test_a_fold_is_counted_as_collapsed(hash_key):
    """OpportunityHistory: 4 rows, two of them the same canonical stage -> 3 kept + 1 collapsed, 4 in."""
    ds = load_dataset(
        {"stage_history": EXPORTS / "salesforce_opportunity_history.csv"},
        mappings={"stage_history": "salesforce_opportunity_history"},
    )
    c = ds.report.counts["stage_history"]
    assert (c["rows_in"], c["rows_kept"], c["rows_collapsed"]) == (4, 3, 1)


def test_ga4_identities_filter_and_fold_both_count(hash_key):
    ds = load_dataset({"identities": EXPORTS / "ga4_events.csv"}, mappings={"identities": "ga4_identities"})
    c = ds.report.counts["identities"]
    assert c["rows_in"] == data_rows(EXPORTS / "ga4_events.csv") and c["rows_filtered"] > 0


def test_money_amounts_in_a_mapping(tmp_path):
    path = tmp_path / "deals.csv"
    path.write_text(
        'Record ID,Deal Stage,Amount,Create Date\n1,closedwon,"$12,000.00",2026-01-01 10:00\n'
        '2,closedwon,"1.200,50",2026-01-01 10:00\n'
    )
    ds = load_dataset({"deals": path}, mappings={"deals": "hubspot_deals"}, timezone="UTC")
    assert ds.tables["deals"]["amount"].tolist() == [12000.0]
    bad = [p for p in ds.report.problems if p.severity == "rejected"]
    assert [(p.column, p.rows) for p in bad] == [("amount", (2,))]
    assert "1.200,50 (ambiguous; set decimal)" in bad[0].reason

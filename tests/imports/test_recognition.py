"""Export files recognised by name, the same way in every CRM and billing import: two files of one
kind are refused with both named (keeping either would lose the other's rows), a file not recognised
is skipped with a warning, and the same file named twice is one file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from closedloop_nb.errors import DataValidationError
from closedloop_nb.imports import import_source

CRM = Path(__file__).parents[1] / "data" / "exports" / "crm"

#: source -> (its corpus folder, a file of the folder, a second name of the same kind, options)
CASES = {
    "salesforce": ("salesforce", "Lead.csv", "leads.csv", {"timezone": "America/Mexico_City",
                                                          "encoding": "cp1252"}),
    "hubspot": ("hubspot", "hubspot-crm-exports-all-deals-2026-02-23.csv",
                "hubspot-crm-exports-all-deals-2026-03-01.csv",
                {"timezone": "Europe/London", "config": {"decimal": ","}}),
    "pipedrive": ("pipedrive", "deals.csv", "deals (1).csv", {"timezone": "Europe/Berlin"}),
    "stripe": ("stripe", "subscriptions.json", "subscriptions-2025.json", {}),
    "chartmogul": ("chartmogul", "activities.csv", "activities_february.csv", {}),
}
NAMES = {"salesforce": "Salesforce", "hubspot": "HubSpot", "pipedrive": "Pipedrive", "stripe": "Stripe",
         "chartmogul": "ChartMogul"}


def copy(source: str, tmp_path: Path) -> Path:
    folder = tmp_path / source
    shutil.copytree(CRM / CASES[source][0], folder)
    return folder


@pytest.mark.parametrize("source", sorted(CASES))
def test_two_exports_of_one_kind_are_refused_naming_both(source, tmp_path, hash_key):
    folder = copy(source, tmp_path)
    _, first, second, options = CASES[source]
    shutil.copy(folder / first, folder / second)
    with pytest.raises(DataValidationError) as err:
        import_source(source, folder, **options)
    [problem] = err.value.problems
    a, b = sorted([str(folder / first), str(folder / second)])  # folders are read in sorted order
    assert problem.severity == "error" and problem.file == b
    assert f": {a} and {b}; one is read per kind" in problem.reason
    assert "merge them into one file (one header row) or import them one at a time" in problem.reason
    # named as files on the command line, the same
    with pytest.raises(DataValidationError, match="one is read per kind"):
        import_source(source, [folder / first, folder / second], **options)


@pytest.mark.parametrize("source", sorted(CASES))
def test_a_file_not_recognised_is_skipped_with_a_warning(source, tmp_path, hash_key):
    folder = copy(source, tmp_path)
    options = CASES[source][3]
    before = import_source(source, folder, **options)
    (folder / "notes.csv").write_text("a,b\n1,2\n", "utf-8")
    after = import_source(source, folder, **options)
    [skipped] = [p for p in after.report.problems if p.file == str(folder / "notes.csv")]
    assert skipped.severity == "warning" and skipped.reason.endswith("(by its name); skipped")
    assert skipped.reason.startswith(f"not recognised as {NAMES[source]} ")
    # nothing else changes: the file was not read
    assert {t: len(df) for t, df in after.tables.items()} == {t: len(df) for t, df in before.tables.items()}


@pytest.mark.parametrize("source", sorted(CASES))
def test_the_same_file_named_twice_is_one_file(source, tmp_path, hash_key):
    folder = copy(source, tmp_path)
    _, first, _, options = CASES[source]
    once = import_source(source, folder, **options)
    twice = import_source(source, [folder, folder / first], **options)
    assert {t: len(df) for t, df in twice.tables.items()} == {t: len(df) for t, df in once.tables.items()}


@pytest.mark.parametrize("source", sorted(CASES))
def test_no_export_of_a_needed_kind_is_refused(source, tmp_path, hash_key):
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n", "utf-8")
    with pytest.raises(DataValidationError, match="export found") as err:
        import_source(source, tmp_path, **CASES[source][3])
    assert err.value.problems[0].file == str(tmp_path)

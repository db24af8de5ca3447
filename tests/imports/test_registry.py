"""The import registry: unknown and unavailable sources are refused in words, not tracebacks."""

import pytest

from closedloop_nb import imports
from closedloop_nb.cli import main


def test_unknown_source_names_the_choices():
    with pytest.raises(ValueError, match="unknown source 'sap'.*salesforce"):
        imports.reader("sap")


def test_unavailable_source_is_refused_by_the_command(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(imports.SOURCES, "salesforce", "no_such_module:read")
    assert main(["import", "salesforce", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
    assert "not available in this version" in capsys.readouterr().err


def test_every_source_names_a_module_and_function():
    for name, target in imports.SOURCES.items():
        module, func = target.split(":")
        assert module.isidentifier() and func.isidentifier(), name

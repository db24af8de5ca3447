"""The data model is defined once and describes itself."""

from __future__ import annotations

import pytest

from closedloop_nb.schema import TABLES, describe, empty_frame, table_spec


def test_every_table_has_documented_columns_and_valid_keys():
    frame = describe()
    assert set(frame["table"]) == set(TABLES)
    assert frame["description"].str.len().gt(5).all()
    for spec in TABLES.values():
        assert set(spec.key) <= set(spec.names), spec.name
        for fk in spec.foreign_keys:
            assert fk.ref_column in table_spec(fk.ref_table).names


def test_empty_frame_has_canonical_dtypes():
    frame = empty_frame("deals")
    assert str(frame["created_at"].dtype) == "datetime64[us, UTC]"
    assert str(frame["amount"].dtype) == "float64"
    assert list(frame.columns) == TABLES["deals"].names


def test_unknown_table_lists_the_valid_ones():
    with pytest.raises(KeyError, match="touchpoints"):
        table_spec("touches")

"""Path tables in ChannelAttribution's format."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.attribution import PathTable, read_paths


def test_spaces_and_duplicate_paths_are_normalised_and_added_up():
    df = pd.DataFrame({"path": ["A > B", "A>B", " A  >B ", "B"], "total_conversions": [1, 2, 3, 4],
                       "total_conversion_value": [10, 20, 30, 40], "total_null": [0, 1, 0, 5]})
    pt = PathTable.from_frame(df)
    assert pt.n_paths == 2 and pt.channels == ("A", "B")
    assert [pt.path(i) for i in range(2)] == [["A", "B"], ["B"]]
    assert pt.conversions.tolist() == [6, 4] and pt.value.tolist() == [60, 40]
    assert pt.nulls.tolist() == [1, 5]


def test_empty_steps_are_dropped_and_empty_paths_refused():
    pt = PathTable.from_frame(pd.DataFrame({"path": ["A >> B >", "C"], "total_conversions": [1, 1]}))
    assert [pt.path(i) for i in range(2)] == [["A", "B"], ["C"]]
    with pytest.raises(ValueError, match=r"empty path in rows \[2\]"):
        PathTable.from_frame(pd.DataFrame({"path": ["A", " > "], "total_conversions": [1, 1]}))


def test_bad_counts_and_missing_columns_are_named():
    with pytest.raises(ValueError, match=r"'total_null'.*rows \[2\]"):
        PathTable.from_frame(pd.DataFrame({"path": ["A", "B"], "total_conversions": [1, 1],
                                           "total_null": [0, -3]}))
    with pytest.raises(KeyError, match="total_conversions"):
        PathTable.from_frame(pd.DataFrame({"path": ["A"], "conversions": [1]}))


def test_collapse_repeats_merges_paths_that_become_equal():
    pt = PathTable.from_sequences([["A", "A", "B"], ["A", "B"], ["B", "B"]], [1, 2, 3], None, [1, 1, 1])
    merged = pt.collapse_repeats()
    assert [merged.path(i) for i in range(merged.n_paths)] == [["A", "B"], ["B"]]
    assert merged.conversions.tolist() == [3, 3]
    unmerged = pt.collapse_repeats(merge=False)
    assert unmerged.n_paths == 3 and unmerged.path(0) == ["A", "B"]


def test_round_trip_through_gzipped_csv(tmp_path):
    rng = np.random.default_rng(0)
    seqs = [list(rng.choice(["Email", "Paid Search", "Direct"], size=rng.integers(1, 5))) for _ in range(50)]
    pt = PathTable.from_sequences(seqs, rng.integers(0, 3, 50), rng.random(50), rng.integers(0, 9, 50))
    path = tmp_path / "paths.csv.gz"
    with gzip.open(path, "wt") as f:
        pt.to_frame().to_csv(f, index=False)
    back = read_paths(path)
    assert back.to_frame().equals(pt.to_frame())

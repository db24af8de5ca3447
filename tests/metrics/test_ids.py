"""``isin`` hashed in Arrow gives pandas' answer on every kind of id the tables hold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.metrics._ids import isin

CASES = [
    (pd.Series(["d1", "d2", None], dtype="str"), pd.Series(["d2", None], dtype="str")),
    (pd.Series(["d1", "d2", None], dtype=object), pd.Index(["d1"])),
    (pd.Series(["d1", "d2"], dtype="str"), pd.Index(["d2", "d9"], dtype="str")),
    (pd.Series(["d1", "d2"], dtype="str"), pd.Series([], dtype=object)),
    (pd.Series(["d1", "d2"], dtype="str"), pd.Series([None], dtype=object)),
    (pd.Series([], dtype="str"), pd.Series(["d1"], dtype="str")),
    (pd.Series([1, 2, 3]), pd.Series(["1"], dtype=object)),  # a number is not its text
    (pd.Series([1, 2, 3]), pd.Series([2.0])),
    (pd.Series(["d1", 1], dtype=object), pd.Series(["d1"])),  # mixed: pandas decides
    (pd.Series(["a", "b"], dtype="string"), {"b", "c"}),
]


@pytest.mark.parametrize(("values", "among"), CASES)
def test_isin_is_pandas_isin(values, among):
    expected = values.isin(list(among) if isinstance(among, set) else among).to_numpy(bool)
    got = isin(values, among)
    assert got.dtype == bool and got.shape == (len(values),)
    np.testing.assert_array_equal(got, expected)


def test_isin_on_many_ids():
    rng = np.random.default_rng(0)
    ids = pd.Series([f"p{i}" for i in rng.integers(0, 5_000, 20_000)], dtype="str")
    among = pd.Series([f"p{i}" for i in range(0, 5_000, 3)], dtype="str")
    np.testing.assert_array_equal(isin(ids, among), ids.isin(among).to_numpy(bool))

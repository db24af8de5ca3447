"""Per-conversion credit: how each path's conversions split over its own channels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.attribution import MODELS, MarkovChain, PathTable, PositionBased
from closedloop_nb.attribution.base import disaggregate

from .conftest import random_paths


@pytest.mark.parametrize("name", sorted(MODELS))
def test_path_credits_add_up_to_the_model_and_stay_on_the_path(name):
    paths = random_paths(7)
    model = MODELS[name]().fit(paths)
    if (model.credits_["conversions"] < 0).any():  # rate-based Shapley can credit a channel below 0
        with pytest.warns(UserWarning, match="cannot reproduce"):
            pc = model.path_credits()
        assert np.allclose(pc.groupby("path")["share"].sum(), 1.0) and (pc["share"] >= 0).all()
        return
    pc = model.path_credits()
    # every path's shares add up to 1 and name only channels on that path
    assert np.allclose(pc.groupby("path")["share"].sum(), 1.0)
    assert all(ch in path.split(" > ") for path, ch in zip(pc["path"], pc["channel"], strict=True))
    got = pc.groupby("channel")["conversions"].sum()
    want = model.credits_.set_index("channel")["conversions"]
    np.testing.assert_allclose(got.reindex(want.index).fillna(0), want, atol=1e-7 * want.sum())


def test_rule_weights_per_touch_are_the_rule():
    # U-shaped on A > B > C > D: 40 / 10 / 10 / 40 of each conversion
    t = PathTable.from_sequences([["A", "B", "C", "D"]], conversions=[3])
    assert PositionBased().fit(t).touch_weights().round(12).tolist() == [0.4, 0.1, 0.1, 0.4]


def test_disaggregate_finds_the_only_allocation_with_both_margins():
    # path "A" can only credit A, so of A's 1.5 the remaining 0.5 must come from "A > B"
    t = PathTable.from_sequences([["A"], ["A", "B"]], conversions=[1, 1])
    assert disaggregate(t, pd.Series({"A": 1.5, "B": 0.5})).round(9).tolist() == [1.0, 0.5, 0.5]
    # paths with every channel split in proportion to the totals (IPF keeps the seed's odds ratios)
    t = PathTable.from_sequences([["A", "B", "C"], ["C", "B", "A"]], conversions=[2, 6])
    w = disaggregate(t, pd.Series({"A": 4.0, "B": 2.0, "C": 2.0}))
    assert w.round(9).tolist() == [0.5, 0.25, 0.25, 0.25, 0.25, 0.5]


def test_disaggregate_keeps_rows_exact_when_the_totals_cannot_be_met():
    # "A" alone converts 5 times but the totals give A only 2: rows still add up to 1 each
    t = PathTable.from_sequences([["A"], ["A", "B"]], conversions=[5, 1])
    with pytest.warns(UserWarning, match="largest gap"):
        w = disaggregate(t, pd.Series({"A": 2.0, "B": 4.0}))
    assert np.allclose(np.bincount(t.path_index, weights=w), 1.0)
    # the closest allocation: "A" keeps its 5, the mixed path goes wholly to the under-credited B
    assert np.allclose(w, [1.0, 0.0, 1.0], atol=1e-6)


def test_markov_per_journey_split_matches_the_unique_path_split():
    paths = random_paths(3)
    model = MarkovChain().fit(paths)
    # one row per journey (identical paths repeated) splits each journey like its unique path
    t = model.paths_
    rows = [t.path(p) for p in range(t.n_paths) if t.conversions[p] > 0]
    conv = [t.conversions[p] for p in range(t.n_paths) if t.conversions[p] > 0]
    per_journey = PathTable(t.channels, t.codes, t.offsets, t.conversions, t.value, t.nulls)
    assert np.allclose(model.touch_weights(per_journey), model.touch_weights())
    assert len(rows) == len(conv)

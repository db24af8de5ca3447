"""Per-conversion credit: how each path's conversions split over its own channels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.attribution import (
    MODELS,
    MarkovChain,
    PathTable,
    PositionBased,
    ShapleyValue,
    SimplifiedShapley,
)
from closedloop_nb.attribution.base import disaggregate

from .conftest import random_paths


@pytest.mark.parametrize("name", sorted(MODELS))
def test_path_credits_add_up_to_the_model_and_stay_on_the_path(name):
    paths = random_paths(7)
    model = MODELS[name]().fit(paths)
    # (rate-based Shapley may credit a channel below zero; its per-path split then has negative parts)
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


def test_shapley_splits_each_coalition_by_its_restricted_shapley_values():
    # coalition {A, B}: rate 1/2; {A}: rate 1/4; {B}: never seen (0). Dividends: d(A) = 1/4, d(B) = 0,
    # d(AB) = 1/2 - 1/4 = 1/4, so phi_AB(A) = 1/4 + 1/8, phi_AB(B) = 1/8: a conversion on A > B is
    # 3/4 A, 1/4 B
    t = PathTable.from_sequences([["A", "B"], ["A"]], conversions=[2, 1], nulls=[2, 3])
    model = ShapleyValue().fit(t)
    assert model.touch_weights().round(12).tolist() == [0.75, 0.25, 1.0]


def test_ordered_shapley_splits_the_simplified_value_over_positions():
    t = PathTable.from_sequences([["A", "B", "A"]], conversions=[4])
    pos = SimplifiedShapley().fit(t).position_credits()
    got = {(c, p): v for c, p, v in zip(pos["channel"], pos["position"], pos["conversions"], strict=True)}
    assert got == {("A", 1): 1.0, ("A", 3): 1.0, ("B", 2): 2.0}
    capped = SimplifiedShapley().fit(t).position_credits(max_position=2)
    assert capped.loc[(capped.channel == "A") & (capped.position == 2), "conversions"].item() == 1.0

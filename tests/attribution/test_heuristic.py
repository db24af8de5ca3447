"""Rule-based models on hand-worked journeys (weights as HubSpot documents them)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.attribution import (
    MODELS,
    FirstTouch,
    InverseJShaped,
    JShaped,
    LastNonDirect,
    LastTouch,
    Linear,
    PositionBased,
    PositionWeights,
)
from closedloop_nb.attribution.base import AttributionModel

from .conftest import random_paths

# One path, A > B > C > D, 10 conversions worth 1000
ONE = pd.DataFrame({"path": ["A > B > C > D"], "total_conversions": [10],
                    "total_conversion_value": [1000.0], "total_null": [5]})


def credits(model, paths=ONE) -> dict[str, float]:
    c = model.fit(paths).credits_
    return dict(zip(c.channel, c.conversions.round(9), strict=True))


@pytest.mark.parametrize("model,expected", [
    (FirstTouch(), {"A": 10, "B": 0, "C": 0, "D": 0}),
    (LastTouch(), {"A": 0, "B": 0, "C": 0, "D": 10}),
    (Linear(), {"A": 2.5, "B": 2.5, "C": 2.5, "D": 2.5}),
    # U-shaped: 40% first, 40% last, 20% over the two between
    (PositionBased(), {"A": 4, "B": 1, "C": 1, "D": 4}),
    # J: 20% first, 60% last; inverse J: 60% first, 20% last; 20% between in both
    (JShaped(), {"A": 2, "B": 1, "C": 1, "D": 6}),
    (InverseJShaped(), {"A": 6, "B": 1, "C": 1, "D": 2}),
    (PositionWeights(first=0.5, last=0.3), {"A": 5, "B": 1, "C": 1, "D": 3}),
])
def test_weights_on_a_four_touch_path(model, expected):
    assert credits(model) == pytest.approx(expected)


@pytest.mark.parametrize("model,two,one", [
    (PositionBased(), (5, 5), 10),       # 40/40 renormalised over the two touches that exist
    (JShaped(), (2.5, 7.5), 10),         # 20/60 -> 25/75
    (InverseJShaped(), (7.5, 2.5), 10),  # 60/20 -> 75/25
])
def test_short_paths_put_the_positions_weights_on_the_touches_that_exist(model, two, one):
    paths = pd.DataFrame({"path": ["A > B", "C"], "total_conversions": [10, 10]})
    got = credits(model, paths)
    assert (got["A"], got["B"]) == pytest.approx(two)
    assert got["C"] == pytest.approx(one)


def test_repeated_channel_collects_every_position():
    paths = pd.DataFrame({"path": ["A > B > A"], "total_conversions": [9]})
    assert credits(Linear(), paths) == pytest.approx({"A": 6, "B": 3})
    assert credits(PositionBased(), paths) == pytest.approx({"A": 7.2, "B": 1.8})


def test_last_non_direct_skips_trailing_direct_but_keeps_all_direct_paths():
    paths = pd.DataFrame({"path": ["Email > Direct > Direct", "Direct", "Direct > Paid Search"],
                          "total_conversions": [4, 2, 1]})
    assert credits(LastNonDirect(), paths) == pytest.approx({"Direct": 2, "Email": 4, "Paid Search": 1})


def test_value_follows_the_same_weights():
    c = PositionBased().fit(ONE).credits_.set_index("channel")["value"]
    assert c.to_dict() == pytest.approx({"A": 400, "B": 100, "C": 100, "D": 400})


def test_bad_position_weights_are_refused():
    with pytest.raises(ValueError, match="add up to <= 1"):
        PositionWeights(first=0.7, last=0.5).fit(ONE)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_conserves_conversions_and_value(name, attribution_paths):
    model = MODELS[name]().fit(attribution_paths)
    assert model.credits_["conversions"].sum() == pytest.approx(attribution_paths.conversions.sum(), rel=1e-9)
    assert model.credits_["value"].sum() == pytest.approx(attribution_paths.value.sum(), rel=1e-9)


@pytest.mark.parametrize("first, last", [(0.4, 0.4), (0.2, 0.6), (1.0, 0.0), (0.0, 0.0), (0.5, 0.5),
                                         (0.3, 0.1)])
def test_position_credit_by_path_equals_the_touch_weights(first, last):
    """Position rules credit per path (middle weight repeated, first and last corrected); that must
    equal summing each touch's weight, on paths of every length including one and two touches."""
    paths = random_paths(3, n_channels=6, n_paths=200, max_len=7)
    model = PositionWeights(first, last)
    conv, value = model._credit(paths)
    by_touch = AttributionModel._credit(model, paths)
    np.testing.assert_allclose(conv, by_touch[0], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(value, by_touch[1], rtol=1e-12, atol=1e-9)

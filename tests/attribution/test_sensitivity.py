"""Sensitivity of channel credit to the lookback window and the time-decay half-life."""

from __future__ import annotations

import numpy as np
import pytest

from closedloop_nb.attribution.compare import rank_flips, sensitivity
from closedloop_nb.journeys import build_journeys


@pytest.fixture(scope="module")
def table(sample):
    return sensitivity(sample.tables, models=("linear", "last_touch"), lookbacks=(30, 90),
                       half_lives=(1e-3, 7, 1e9))


def test_every_setting_credits_every_conversion_it_has(sample, table):
    for days in (30, 90):
        paths = build_journeys(sample.tables, lookback_days=days, progress=False).paths
        want = paths["total_conversions"].sum()
        for model in (f"linear, lookback {days} d", f"last_touch, lookback {days} d"):
            assert table.loc[table["model"] == model, "conversions"].sum() == pytest.approx(want)
    np.testing.assert_allclose(table.groupby("model")["share"].sum(), 1.0)


def test_half_life_limits_are_linear_and_last_touch(table):
    def credit(model):
        return table[table["model"] == model].set_index("channel")["conversions"].sort_index()

    # weights that never decay are equal weights; weights that decay at once keep only the last touch
    # (touches at the same instant as the last one aside)
    np.testing.assert_allclose(credit("time_decay, half-life 1e+09 d"), credit("linear, lookback 90 d"),
                               rtol=1e-6)
    fast, last = credit("time_decay, half-life 0.001 d"), credit("last_touch, lookback 90 d")
    assert np.abs(fast.reindex(last.index).fillna(0) - last).sum() <= 0.01 * last.sum()


def test_rank_flips_name_the_setting(table):
    flips = rank_flips(table)
    assert set(flips.columns) >= {"channel", "best_model", "worst_model", "spread"}
    assert (flips["spread"] > 0).all()

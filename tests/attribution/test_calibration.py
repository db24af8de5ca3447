"""Calibration of channel credits to experiments."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.attribution import MODELS
from closedloop_nb.attribution.calibration import calibrate, plot_calibration, simulate_experiments
from closedloop_nb.journeys import lead_paths_reference
from closedloop_nb.synth import CHANNELS, generate
from closedloop_nb.validation import validate_tables

Z = 1.959963984540054
CREDITS = pd.DataFrame({"channel": ["A", "B", "C"], "conversions": [60.0, 40.0, 100.0]})


def exp(rows):
    return pd.DataFrame(rows, columns=["channel", "period", "incremental", "lower", "upper"])


def test_precision_weighted_shrinkage_by_hand():
    # the tested channels' experiments add up to 60 against credits of 100: scale 0.6, so the priors
    # are A 36 (s_m = 0.5 * 36 = 18), B 24 (s_m = 12), C 60
    # A: experiment 30 (se 5) -> weight (1/25) / (1/324 + 1/25); B: 30 (se 10) -> (1/100) / (1/144 + 1/100)
    e = exp([["A", "Q1", 30.0, 30 - 5 * Z, 30 + 5 * Z], ["B", "Q1", 30.0, 30 - 10 * Z, 30 + 10 * Z]])
    t = calibrate(CREDITS, e, model_error=0.5).set_index("channel")
    w_a, w_b = 324 / 349, 144 / 244
    a, b = (1 - w_a) * 36 + w_a * 30, (1 - w_b) * 24 + w_b * 30
    assert t.loc["A", "experiment_weight"] == pytest.approx(w_a)
    assert t.loc["A", "calibrated"] == pytest.approx(a) and t.loc["B", "calibrated"] == pytest.approx(b)
    assert t.loc["A", "calibrated_upper"] - t.loc["A", "calibrated"] == pytest.approx(
        Z / np.sqrt(1 / 324 + 1 / 25))
    assert t.loc["C", "calibrated"] == pytest.approx(60.0)
    assert not t.loc["C", "tested"] and t.loc["C", "experiment_weight"] == 0
    assert t.loc["(not incremental)", "calibrated"] == pytest.approx(200 - a - b - 60)
    shares = t.drop(index="(not incremental)")
    assert shares["calibrated_share"].sum() == pytest.approx(1.0)
    assert shares["share"].tolist() == [0.3, 0.2, 0.5]


def test_model_error_estimated_from_the_experiments_disagreement():
    # scale 60 / 100: priors A 36, B 24; tau^2 = mean(((20 - 36)^2 - 1) / 36^2, ((40 - 24)^2 - 1) / 24^2)
    e = exp([["A", "Q1", 20.0, 20 - Z, 20 + Z], ["B", "Q1", 40.0, 40 - Z, 40 + Z]])
    t = calibrate(CREDITS, e)
    assert t.attrs["scale"] == pytest.approx(0.6)
    assert t.attrs["model_error"] == pytest.approx(np.sqrt((255 / 36**2 + 255 / 24**2) / 2))
    # experiments that agree with the model within their noise: the floor
    agree = exp([["A", "Q1", 36.0, 36 - 10 * Z, 36 + 10 * Z], ["B", "Q1", 24.0, 24 - 10 * Z, 24 + 10 * Z]])
    assert calibrate(CREDITS, agree).attrs["model_error"] == 0.05
    with pytest.raises(ValueError, match="model_error"):
        calibrate(CREDITS, e, model_error=-1)


def test_one_experiment_only_sets_the_scale():
    e = exp([["A", "Q1", 30.0, 29.0, 31.0]])
    t = calibrate(CREDITS, e).set_index("channel").drop(index="(not incremental)")
    np.testing.assert_allclose(t["calibrated_share"], t["share"])


def test_several_experiments_pool_and_coverage_scales_up():
    # two halves of the data, each 15 (se 2.5): each scales to 30 (se 5); pooled, 30 (se 5 / sqrt 2)
    e = pd.DataFrame({"channel": ["A", "A"], "period": ["H1", "H2"], "incremental": [15.0, 15.0],
                      "lower": [15 - 2.5 * Z] * 2, "upper": [15 + 2.5 * Z] * 2, "coverage": [0.5, 0.5]})
    t = calibrate(CREDITS, e).set_index("channel")
    se = 5 / np.sqrt(2)
    assert t.loc["A", "experiment"] == pytest.approx(30.0)
    assert t.loc["A", "experiment_upper"] - 30 == pytest.approx(Z * se)


def test_rows_of_another_metric_are_ignored_and_bad_input_is_refused():
    e = exp([["A", "Q1", 30.0, 29.0, 31.0]]).assign(metric="value")
    t = calibrate(CREDITS, e).set_index("channel")
    assert not t["tested"].any()
    with pytest.raises(ValueError, match="row 1"):
        calibrate(CREDITS, exp([["A", "Q1", 30.0, 31.0, 29.0]]))
    with pytest.raises(ValueError, match="does not credit"):
        calibrate(CREDITS, exp([["Z", "Q1", 30.0, 29.0, 31.0]]))
    with pytest.raises(ValueError, match="lack column"):
        calibrate(CREDITS, pd.DataFrame({"channel": ["A"], "incremental": [1.0]}))


@pytest.fixture(scope="module")
def confounded():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = generate(30_000, seed=31, regime="confounded", dirty_share=0.0)
        paths = lead_paths_reference(validate_tables(data.frames()).tables)
    return data, paths


def test_simulated_holdouts_recover_the_true_incremental_conversions(confounded):
    data, _ = confounded
    paid = [c.name for c in CHANNELS if c.cost_per_touch > 0]
    e = simulate_experiments(data, paid, random_state=1)
    se = (e["upper"] - e["lower"]) / (2 * Z)
    z = (e["incremental"] - e["true_incremental"]) / se
    assert (z.abs() < 4).all(), z.round(2).tolist()
    # the truth's incremental lift of each channel, from the ground truth table
    gt = data.ground_truth.set_index("channel")["incremental_leads"]
    np.testing.assert_allclose(e["true_incremental"], gt[paid].to_numpy())


def test_calibration_moves_tested_channels_towards_the_truth(confounded):
    """Experiments on the synthetic truth pull the tested (paid) channels' shares towards the true
    ones; the untested channels keep the model's relative error (see calibrate's assumptions)."""
    data, paths = confounded
    paid = [c.name for c in CHANNELS if c.cost_per_touch > 0]
    e = simulate_experiments(data, paid, holdout_share=0.5, random_state=2)
    gt = data.ground_truth.set_index("channel")
    truth_inc = gt.loc[paid, "incremental_leads"]
    t = calibrate(MODELS["linear"]().fit(paths), e).set_index("channel")
    before = (t.loc[paid, "credit"] - truth_inc).abs().sum()
    after = (t.loc[paid, "calibrated"] - truth_inc).abs().sum()
    assert after < 0.5 * before
    assert plot_calibration(t.reset_index()).__class__.__name__ == "Axes"


def test_residual_mode_by_hand_keeps_the_total_and_shares_the_rest_by_the_models_view():
    # total 200, baseline 50: the model's incremental scale is 150 / 200, so the priors are A 45,
    # B 30, C 75. A's experiment, 30 (se 5), with one experiment the model's error is 0.5 (s_m 22.5):
    # weight (1/25) / (1/22.5^2 + 1/25). The rest, 200 - A, goes to B, C and the baseline as 30 : 75 : 50.
    e = exp([["A", "Q1", 30.0, 30 - 5 * Z, 30 + 5 * Z]])
    t = calibrate(CREDITS, e, untested="residual", baseline=50.0).set_index("channel")
    w = (1 / 25) / (1 / 22.5**2 + 1 / 25)
    a = (1 - w) * 45 + w * 30
    se_a2 = 1 / (1 / 22.5**2 + 1 / 25)
    rest = 200 - a
    assert t.loc["A", "calibrated"] == pytest.approx(a)
    assert t.loc["B", "calibrated"] == pytest.approx(rest * 30 / 155)
    assert t.loc["C", "calibrated"] == pytest.approx(rest * 75 / 155)
    assert t.loc["(not incremental)", "calibrated"] == pytest.approx(rest * 50 / 155)
    assert t["calibrated"].sum() == pytest.approx(200.0)            # the total is fixed
    b = rest * 30 / 155
    se_b = np.sqrt((30 / 155) ** 2 * se_a2 + (0.5 * b) ** 2)
    assert t.loc["B", "calibrated_upper"] - b == pytest.approx(Z * se_b)
    assert t.attrs["untested"] == "residual" and t.attrs["scale"] == pytest.approx(0.75)
    # a tested channel that caused less leaves more to the untested ones
    low = calibrate(CREDITS, exp([["A", "Q1", 10.0, 10 - 5 * Z, 10 + 5 * Z]]), untested="residual",
                    baseline=50.0).set_index("channel")
    assert low.loc["B", "calibrated"] > t.loc["B", "calibrated"]
    with pytest.raises(ValueError, match="needs the model's baseline"):
        calibrate(CREDITS, e, untested="residual")
    with pytest.raises(ValueError, match="untested must be"):
        calibrate(CREDITS, e, untested="spread")


def test_model_baseline_is_the_logistic_fits_no_channel_rate_computed_by_hand():
    # coalition rates that a logistic model without interactions fits exactly (three coalitions,
    # three parameters): logit p = a + b_A [A] + b_B [B], with p(empty) = 0.05, p(A) = 0.2, p(B) = 0.1
    from scipy.special import expit, logit

    from closedloop_nb.attribution.adjusted import AdjustedShapley
    from closedloop_nb.attribution.calibration import model_baseline
    from closedloop_nb.attribution.shapley import ShapleyValue

    a = logit(0.05)
    rates = {"A": 0.2, "B": 0.1, "A > B": expit(logit(0.2) + logit(0.1) - a)}
    n = 100_000
    paths = pd.DataFrame({"path": list(rates), "total_conversions": [p * n for p in rates.values()],
                          "total_null": [(1 - p) * n for p in rates.values()]})
    for model in (ShapleyValue(value="model", interactions=False, C=1e8),
                  AdjustedShapley(covariates=(), interactions=False, C=1e8)):
        fit = model.fit(paths)
        assert model_baseline(fit) == pytest.approx(0.05 * 3 * n, rel=1e-3), type(model).__name__
        value = model_baseline(fit, "value")     # the paths carry no value: the baseline's share of 0
        assert value == 0.0
    assert model_baseline(MODELS["linear"]().fit(paths)) is None
    assert model_baseline(CREDITS) is None

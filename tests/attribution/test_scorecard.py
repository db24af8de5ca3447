"""The scorecard, the held-out predictive score and the recommendation."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.attribution import MODELS, MarkovChain, PathTable, ShapleyValue
from closedloop_nb.attribution.scorecard import (
    AVERAGE,
    conversion_probability,
    holdout_log_loss,
    load_scorecard,
    rank_correlation,
    recommend,
    scorecard,
    summarise,
    tvd,
)
from closedloop_nb.synth import REGIMES


def test_tvd_and_rank_correlation_by_hand():
    truth = pd.Series({"A": 0.5, "B": 0.3, "C": 0.2})
    assert tvd(pd.Series({"A": 1.0}), truth) == pytest.approx(0.5)             # B and C missing: 0
    assert tvd(pd.Series({"A": 0.3, "B": 0.5, "C": 0.2}), truth) == pytest.approx(0.2)
    assert tvd(pd.Series({"A": 0.5, "B": 0.3, "C": 0.1, "D": 0.1}), truth) == pytest.approx(0.1)
    assert rank_correlation(pd.Series({"A": 0.9, "B": 0.08, "C": 0.02}), truth) == pytest.approx(1.0)
    assert rank_correlation(pd.Series({"A": 0.1, "B": 0.3, "C": 0.6}), truth) == pytest.approx(-1.0)


@pytest.fixture(scope="module")
def card():
    """Every model on every regime, one seed the models were not designed on, 10,000 visitors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return scorecard(seeds=(101,), n_visitors=10_000, n_boot=0)


def test_the_recommended_and_the_default_model_beat_linear_on_every_regime(card):
    """The reports' default (``shapley_model``) and the scorecard's recommendation beat linear by at
    least 0.03 TVD in every regime (margins of 0.05 or more were measured on seeds 101-103 at this
    size); the recommended model is the closest to the truth on average. ``shapley_model`` is *not*:
    on the confounded regime its observed coalition rates carry the intent (benchmarks/RESULTS.md)."""
    s = summarise(card).set_index(["model", "regime"])["tvd"]
    chosen = recommend().model
    assert chosen == "shapley_adjusted"
    for model in ("shapley_model", chosen):
        for regime in REGIMES:
            assert s[(model, regime)] <= s[("linear", regime)] - 0.03, (model, regime, s.xs(regime, level=1))
    avg = s.xs(AVERAGE, level="regime")
    assert avg.idxmin() == chosen, avg.sort_values().round(3).to_dict()
    assert s[("shapley_adjusted", "confounded")] < s[("shapley_model", "confounded")] - 0.03


def test_summary_has_intervals_from_resamples():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        card = scorecard(regimes=["synergy"], models=["linear", "last_touch"], seeds=(5, 6), n_visitors=3_000,
                         n_boot=5)
    assert len(card) == 2 * 2 * 6
    s = summarise(card)
    assert set(s["regime"]) == {"synergy", AVERAGE}
    assert (s["tvd_lower"] <= s["tvd_upper"]).all() and (s["seeds"] == 2).all()
    # the score is the mean over seeds of the fits on the data themselves
    point = card[card["replicate"] == 0].groupby("model")["tvd"].mean()
    got = s[s["regime"] == "synergy"].set_index("model")["tvd"]
    pd.testing.assert_series_equal(got.sort_index(), point.sort_index(), check_names=False)


def test_markov_holdout_loss_is_select_orders():
    """MarkovChain.select_order computes the same held-out log-loss on its own (same split, same rule)."""
    from .conftest import random_paths

    paths = random_paths(3, n_paths=200)
    ours = holdout_log_loss(paths, [MarkovChain(order=1)], test_share=0.3, random_state=4)
    theirs = MarkovChain.select_order(paths, orders=(1,), test_share=0.3, random_state=4)
    assert ours["log_loss"].iloc[0] == pytest.approx(theirs["log_loss"].iloc[0])


def test_rules_do_not_predict_and_data_driven_models_beat_the_overall_rate():
    rng = np.random.default_rng(0)
    seqs = [["A"], ["B"], ["A", "B"], ["C"], ["C", "A"]]
    rate = np.array([0.3, 0.05, 0.4, 0.02, 0.25])
    n = rng.integers(400, 600, size=5)
    conv = rng.binomial(n, rate)
    paths = PathTable.from_sequences(seqs, conv, None, n - conv)
    out = holdout_log_loss(paths, ["linear", "first_touch", "shapley", "shapley_model", "shapley_adjusted",
                                   "markov"]).set_index("model")
    assert out.loc[["linear", "first_touch"], "log_loss"].isna().all()
    assert (out.loc[["shapley", "shapley_model", "shapley_adjusted", "markov"], "log_loss"]
            < out["baseline_log_loss"].iloc[0] - 0.01).all()


def test_coalition_rate_prediction_by_hand():
    # A: 3 of 10 converted, B: 1 of 5; overall 4/15; add-one smoothing towards the overall rate
    paths = PathTable.from_sequences([["A"], ["B"], ["A", "A"]], [3, 1, 0], None, [7, 4, 0])
    model = ShapleyValue().fit(paths)
    p = conversion_probability(model, paths)
    overall = 4 / 15
    np.testing.assert_allclose(p, [(3 + overall) / 11, (1 + overall) / 6, (3 + overall) / 11])


def _summary(rows: dict[str, tuple[float, float]]) -> pd.DataFrame:
    out = []
    for model, (avg, worst) in rows.items():
        out += [{"model": model, "regime": AVERAGE, "tvd": avg},
                {"model": model, "regime": "a", "tvd": worst},
                {"model": model, "regime": "b", "tvd": 2 * avg - worst}]
    return pd.DataFrame(out)


def test_recommendation_rule():
    summary = _summary({"x": (0.05, 0.08), "y": (0.07, 0.09), "z": (0.20, 0.30)})
    # x is closest to the truth but predicts these journeys 5% worse than y: y is recommended
    loss = pd.DataFrame({"model": ["x", "y", "z"], "log_loss": [0.21, 0.20, np.nan]})
    rec = recommend(loss, summary, tolerance=0.01)
    assert rec.model == "y"
    assert "x scored better on the scorecard" in rec.reason and rec.reason.endswith(".")
    assert rec.table.set_index("model").loc["z", "eligible"] == False  # noqa: E712
    # with a looser tolerance, or without a predictive score, the scorecard decides
    assert recommend(loss, summary, tolerance=0.10).model == "x"
    assert recommend(summary=summary).model == "x"
    assert "0.050 TVD" in recommend(summary=summary).reason


def test_published_scorecard_covers_every_model_and_regime():
    s = load_scorecard()
    assert set(s["model"]) == set(MODELS)
    assert set(s["regime"]) == {*REGIMES, AVERAGE}
    assert (s["tvd_lower"] <= s["tvd_upper"]).all()


def test_a_report_follows_the_recommendation_unless_its_parameter_fixes_the_model():
    from closedloop_nb.attribution.scorecard import choose_model

    from .conftest import random_paths

    fixed = choose_model("w_shaped", None)
    assert fixed.model == "w_shaped" and "fixed by the report's model parameter" in fixed.reason
    followed = choose_model("recommended", random_paths(2, n_paths=120))
    assert followed.model in set(load_scorecard()["model"])
    row = followed.table.set_index("model").loc[followed.model]
    assert row["eligible"] and row["recommended"] and np.isfinite(row["log_loss"])

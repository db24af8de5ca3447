"""Regimes of synthetic truth: the exact Shapley credit of the generating model, checked on cases
computed by hand and by the definition (average marginal contribution over every order), and each
regime's data checked to do what its documentation says."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from closedloop_nb.synth import (
    CAPTURE,
    CHANNELS,
    GAMMA_SCALE,
    REGIMES,
    SYNERGIES,
    ZERO_EFFECT,
    exact_shapley,
    generate,
)

NAMES = [c.name for c in CHANNELS]


def test_two_channels_on_the_logit_scale_by_hand():
    # f(empty) = 1/2, f(A) = f(B) = 3/4, f(AB) = expit(ln 9) = 9/10
    # Shapley A = 1/2 (f(A) - f(empty)) + 1/2 (f(AB) - f(B)) = 1/2 (1/4 + 3/20) = 1/5
    credit, lift, base, full = exact_shapley(np.array([0.0]), np.array([[math.log(3), math.log(3)]]),
                                             np.array([[True, True]]))
    np.testing.assert_allclose(credit, [[0.2, 0.2]])
    np.testing.assert_allclose(lift, [[0.15, 0.15]])          # f(AB) - f(B) = 9/10 - 3/4
    np.testing.assert_allclose(base, [0.5])
    np.testing.assert_allclose(full, [0.9])


def test_three_channels_with_a_pair_term_split_it_equally():
    # identity link: f(T) = 0.1 + sum of w + 0.06 if A and B are both in T
    delta = np.zeros((3, 3))
    delta[0, 1] = delta[1, 0] = 0.06
    credit, lift, _, full = exact_shapley(np.array([0.1]), np.array([[0.1, 0.2, 0.3]]),
                                          np.array([[True, True, True]]), delta, link="identity")
    np.testing.assert_allclose(credit, [[0.13, 0.23, 0.3]])
    np.testing.assert_allclose(lift, [[0.16, 0.26, 0.3]])
    np.testing.assert_allclose(full, [0.76])


def _by_orders(eta: float, w: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """Shapley values by their definition: the mean marginal contribution over every order."""
    def f(members: frozenset) -> float:
        x = eta + sum(w[c] for c in members) + sum(delta[a, b] for a, b in itertools.combinations(members, 2))
        return 1 / (1 + math.exp(-x))

    k = len(w)
    phi = np.zeros(k)
    orders = list(itertools.permutations(range(k)))
    for order in orders:
        before: frozenset = frozenset()
        for c in order:
            phi[c] += f(before | {c}) - f(before)
            before = before | {c}
    return phi / len(orders)


def test_agrees_with_the_definition_on_random_games_and_ignores_absent_channels():
    rng = np.random.default_rng(0)
    m = 5
    eta = rng.normal(-3, 1, size=40)
    w = rng.normal(0.5, 0.7, size=(40, m))
    present = rng.random((40, m)) < 0.6
    delta = np.triu(rng.normal(0, 0.5, size=(m, m)), 1)
    delta = delta + delta.T
    credit, _, base, full = exact_shapley(eta, w, present, delta)
    for i in range(40):
        idx = np.flatnonzero(present[i])
        want = np.zeros(m)
        want[idx] = _by_orders(eta[i], w[i, idx], delta[np.ix_(idx, idx)])
        np.testing.assert_allclose(credit[i], want, atol=1e-12)
    np.testing.assert_allclose(credit.sum(axis=1), full - base, atol=1e-12)   # efficiency


@pytest.fixture(scope="module")
def regimes():
    return {r: generate(30_000, seed=2, regime=r, dirty_share=0.0) for r in REGIMES}


def test_unknown_regime_is_refused():
    with pytest.raises(ValueError, match="regime must be one of"):
        generate(100, regime="multiplicative")


@pytest.mark.parametrize("regime", REGIMES[1:])
def test_realised_leads_match_the_expected_conversions(regimes, regime):
    data = regimes[regime]
    gt = data.ground_truth.set_index("channel")
    expected = gt.drop(index="(offline)")["expected_leads"].sum()
    realised = data.parameters["counts"]["web_leads"]
    assert abs(realised - expected) < 4 * np.sqrt(expected)
    vt = data.visitor_truth
    # channel credits plus the baseline are each visitor's conversion probability
    np.testing.assert_allclose(vt["credit"].sum(axis=1) + vt["baseline"], vt["p"], atol=1e-12)
    assert data.exposures["lead"].sum() == realised
    shares = gt.loc[~gt.index.str.startswith("("), ["lead_share", "incremental_lead_share"]].sum()
    np.testing.assert_allclose(shares, 1.0)


def test_synergy_data_follow_the_documented_logistic_model(regimes):
    """A logistic regression of lead on the channels and the synergy pairs recovers every documented
    coefficient (within 4 standard errors): the leads were drawn from the model the truth is computed on."""
    ex = regimes["synergy"].exposures
    ex = ex[ex[NAMES].any(axis=1)]
    X = ex[NAMES].astype(float).drop(columns="Unassigned")
    for a, b in SYNERGIES:
        X[f"{a} x {b}"] = X[a] * X[b]
    fit = sm.Logit(ex["lead"].astype(float), sm.add_constant(X)).fit(disp=0)
    base = 0.006
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    want = {c.name: GAMMA_SCALE * (logit(base + c.beta) - logit(base))
            for c in CHANNELS if c.name != "Unassigned"}
    want.update({f"{a} x {b}": d for (a, b), d in SYNERGIES.items()})
    want["const"] = math.log(base / (1 - base))
    z = (fit.params - pd.Series(want)) / fit.bse
    assert (z.abs() < 4).all(), z.round(2).to_dict()
    # where effects interact, a holdout's incremental lift is not the Shapley credit
    gt = regimes["synergy"].ground_truth.set_index("channel")
    assert abs(gt.loc["Display", "incremental_leads"] - gt.loc["Display", "expected_leads"]) > 5


def test_confounded_intent_raises_conversion_and_capture_touches_that_do_nothing(regimes):
    data = regimes["confounded"]
    ex = data.exposures
    assert ex.loc[ex["intent"], "lead"].mean() > 3 * ex.loc[~ex["intent"], "lead"].mean()
    touches = data.frame("touchpoints")
    last = touches.sort_values("timestamp").groupby("visitor_id")["channel"].last()
    intent = last.index.map(ex.set_index("visitor_id")["intent"])
    ends_captured = last.isin(list(CAPTURE)).groupby(intent).mean()
    assert ends_captured[True] > ends_captured[False] + 0.3
    # a channel a visitor saw only through capture touches gets no credit
    vt = data.visitor_truth
    direct = NAMES.index("Direct")
    only_capture = ex["intent"].to_numpy() & ex["Direct"].to_numpy() & (vt["credit"][:, direct] == 0)
    assert only_capture.sum() > 100
    np.testing.assert_array_equal(vt["lift"][only_capture, direct], 0.0)
    # ... so Direct's observed conversion rate overstates it: exposed visitors convert far above the
    # rate its true credit explains
    gt = data.ground_truth.set_index("channel")
    assert ex.loc[ex["Direct"], "lead"].mean() - ex.loc[~ex["Direct"], "lead"].mean() > \
        3 * gt.loc["Direct", "incremental_effect"]


def test_recency_single_touch_at_the_end_gets_the_full_lift(regimes):
    data = regimes["recency"]
    vt = data.visitor_truth
    touches = data.frame("touchpoints")
    ex = data.exposures
    one = ex[ex[NAMES].sum(axis=1) == 1]           # visitors with a single channel
    c = NAMES.index("Paid Search")
    who = one[one["Paid Search"]].index.to_numpy()
    t = touches[touches["visitor_id"].isin(ex.loc[who, "visitor_id"])]
    n = t.groupby("visitor_id").size()
    single = n[n == 1].index          # one touch: lift at its own time (days = 0), the largest
    credit = pd.Series(vt["credit"][who, c], index=ex.loc[who, "visitor_id"].to_numpy())
    # a single-channel visitor's latest touch is the last one, at the end: full lift whatever the span
    assert len(single) > 100 and credit[single].std() < 1e-12


def test_recency_channel_touched_long_before_the_end_gets_less(regimes):
    data = regimes["recency"]
    vt = data.visitor_truth
    ex = data.exposures
    two = ex[ex[NAMES].sum(axis=1) == 2]
    touches = data.frame("touchpoints").sort_values("timestamp")
    c = NAMES.index("Paid Search")
    sub = two[two["Paid Search"]]
    t = touches[touches["visitor_id"].isin(sub["visitor_id"])]
    end = t.groupby("visitor_id")["timestamp"].max()
    ps = t[t["channel"] == "Paid Search"].groupby("visitor_id")["timestamp"].max()
    days = ((end - ps).dt.total_seconds() / 86_400).reindex(sub["visitor_id"]).to_numpy()
    credit = vt["credit"][sub.index.to_numpy(), c]
    ok = ~np.isnan(days)
    rho = pd.Series(days[ok]).corr(pd.Series(credit[ok]), method="spearman")
    assert rho < -0.5


def test_saturation_second_touch_adds_less_than_the_first(regimes):
    data = regimes["saturation"]
    vt = data.visitor_truth
    ex = data.exposures
    touches = data.frame("touchpoints")
    only_ps = ex[(ex[NAMES].sum(axis=1) == 1) & ex["Paid Search"]]
    counts = touches[touches["visitor_id"].isin(only_ps["visitor_id"])].groupby("visitor_id").size()
    credit = pd.Series(vt["credit"][only_ps.index.to_numpy(), NAMES.index("Paid Search")],
                       index=only_ps["visitor_id"].to_numpy())
    # (cross-device touches move to a second device id, so count on the first device only where they agree)
    by_n = credit.groupby(counts.reindex(credit.index)).median()
    gain1, gain2 = by_n[1], by_n[2] - by_n[1]
    assert 0 < gain2 < gain1
    assert by_n[3] - by_n[2] < gain2


def test_zero_effect_channels_get_no_credit_but_travel_with_converters(regimes):
    data = regimes["zero_effect"]
    gt = data.ground_truth.set_index("channel")
    ex = data.exposures
    for name in ZERO_EFFECT:
        assert gt.loc[name, "expected_leads"] == 0 and gt.loc[name, "incremental_leads"] == 0
    display = ex["Display"]
    assert ex.loc[display, "lead"].mean() > 1.3 * ex.loc[~display, "lead"].mean()


def test_cli_synth_regime_writes_that_regimes_data_and_truth(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "closedloop"
    out = subprocess.run([str(script), "synth", "--visitors", "2000", "--seed", "4", "--clean",
                          "--regime", "confounded", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "ground_truth.json").read_text())["regime"]["name"] == "confounded"
    # the same data as the Python API draws for that regime (not the additive data of the same seed)
    want = generate(2_000, seed=4, regime="confounded", dirty_share=0.0)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ground_truth.parquet"), want.ground_truth)
    touches = pd.read_parquet(tmp_path / "touchpoints.parquet")
    assert len(touches) == want.tables["touchpoints"].num_rows
    assert len(touches) > generate(2_000, seed=4, dirty_share=0.0).tables["touchpoints"].num_rows  # capture
    bad = subprocess.run([str(script), "synth", "--regime", "multiplicative", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2
    assert "--regime must be one of additive, synergy, confounded" in bad.stderr
    assert not (tmp_path / "x").exists()

"""Shapley attribution against brute-force permutation enumeration, and the Shapley axioms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from closedloop_nb.attribution import PathTable, ShapleyValue, SimplifiedShapley
from closedloop_nb.attribution.base import AttributionModel
from closedloop_nb.attribution.shapley import mobius, superset_sum

from .conftest import random_paths


def brute_force_shapley(players: list[str], v) -> dict[str, float]:
    """Average marginal contribution over every ordering of the players."""
    phi = dict.fromkeys(players, 0.0)
    perms = list(itertools.permutations(players))
    for perm in perms:
        seen: frozenset = frozenset()
        for p in perm:
            phi[p] += v(seen | {p}) - v(seen)
            seen = seen | {p}
    return {p: x / len(perms) for p, x in phi.items()}


def coalition_stats(paths: PathTable):
    conv, journeys, value = {}, {}, {}
    for p in range(paths.n_paths):
        s = frozenset(paths.path(p))
        conv[s] = conv.get(s, 0.0) + paths.conversions[p]
        journeys[s] = journeys.get(s, 0.0) + paths.conversions[p] + paths.nulls[p]
        value[s] = value.get(s, 0.0) + paths.value[p]
    return conv, journeys, value


def brute_force_attribution(paths: PathTable) -> tuple[dict, dict]:
    conv, journeys, value = coalition_stats(paths)

    def rate(s):
        return conv.get(s, 0.0) / journeys[s] if journeys.get(s) else 0.0

    credit = dict.fromkeys(paths.channels, 0.0)
    credit_value = dict.fromkeys(paths.channels, 0.0)
    for s, c in conv.items():
        if c <= 0:
            continue
        phi = brute_force_shapley(sorted(s), rate)
        for ch, x in phi.items():
            credit[ch] += c * x / rate(s)
            credit_value[ch] += value[s] * x / rate(s)
    return credit, credit_value


@pytest.mark.parametrize("seed,n", [(0, 3), (1, 4), (2, 5), (3, 6)])
def test_exact_shapley_equals_permutation_enumeration(seed, n):
    paths = random_paths(seed, n_channels=n, n_paths=120, max_len=5)
    model = ShapleyValue().fit(paths).credits_.set_index("channel")
    conv, value = brute_force_attribution(paths)
    assert model["conversions"].to_dict() == pytest.approx(conv, rel=1e-9, abs=1e-9)
    assert model["value"].to_dict() == pytest.approx(value, rel=1e-9, abs=1e-9)


def test_exact_shapley_for_ten_channels_equals_enumeration_on_the_grand_coalition():
    """10 channels: Shapley's subset formula on the full coalition against the Möbius route."""
    rng = np.random.default_rng(9)
    names = [f"c{i}" for i in range(10)]
    seqs = [list(rng.choice(names, size=rng.integers(1, 11), replace=False)) for _ in range(400)]
    seqs.append(names)  # the grand coalition converts
    conv = np.append(rng.integers(0, 4, 400), 5).astype(float)
    paths = PathTable.from_sequences(seqs, conv, conv * 10, rng.integers(1, 9, 401).astype(float))
    c, j, _ = coalition_stats(paths)

    def rate(s):
        return c.get(s, 0.0) / j[s] if j.get(s) else 0.0

    grand = frozenset(names)
    phi = _shapley_by_formula(names, rate)
    # the package's route: dividends over all 2^10 coalitions
    n = 10
    v = np.zeros(1 << n)
    for s in j:
        v[sum(1 << names.index(x) for x in s)] = rate(s)
    d = mobius(v, n)
    sizes = np.array([bin(m).count("1") for m in range(1 << n)])
    for k, ch in enumerate(names):
        has = (np.arange(1 << n) >> k & 1).astype(bool)
        assert np.sum(d[has] / sizes[has]) == pytest.approx(phi[ch], rel=1e-9, abs=1e-12)
    assert sum(phi.values()) == pytest.approx(rate(grand))


def _shapley_by_formula(players, v):
    """Shapley's subset formula (independent of the permutation loop, fast enough for 10)."""
    n = len(players)
    phi = {}
    for p in players:
        others = [q for q in players if q != p]
        total = 0.0
        for k in range(n):
            w = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for sub in itertools.combinations(others, k):
                s = frozenset(sub)
                total += w * (v(s | {p}) - v(s))
        phi[p] = total
    return phi


def test_transforms_invert_each_other_and_match_definitions():
    rng = np.random.default_rng(1)
    v = rng.random(1 << 5)
    d = mobius(v, 5)
    # zeta (subset sum) of the dividends gives v back
    back = np.array([sum(d[t] for t in range(32) if t & s == t) for s in range(32)])
    assert np.allclose(back, v)
    w = superset_sum(v, 5)
    assert np.allclose(w, [sum(v[s] for s in range(32) if s & t == t) for t in range(32)])


def test_simplified_shapley_is_equal_split_over_unique_channels():
    paths = pd.DataFrame({"path": ["A > B > A", "C", "A > C"], "total_conversions": [6, 2, 0],
                          "total_null": [1, 1, 9]})
    got = SimplifiedShapley().fit(paths).credits_.set_index("channel")["conversions"].to_dict()
    assert got == pytest.approx({"A": 3, "B": 3, "C": 2})


def test_simplified_shapley_is_shapley_of_the_subset_conversions_game():
    paths = random_paths(5, n_channels=4)
    conv, _, _ = coalition_stats(paths)

    def v(s):
        return sum(c for t, c in conv.items() if t <= s)

    phi = brute_force_shapley(list(paths.channels), v)
    got = SimplifiedShapley().fit(paths).credits_.set_index("channel")["conversions"].to_dict()
    assert got == pytest.approx(phi)


paths_strategy = st.lists(
    st.tuples(st.lists(st.sampled_from("ABCD"), min_size=1, max_size=5),
              st.integers(0, 5), st.integers(0, 10)),
    min_size=1, max_size=25,
).filter(lambda rows: sum(r[1] for r in rows) > 0)


@settings(max_examples=60, deadline=None)
@given(paths_strategy)
def test_efficiency_every_conversion_is_credited(rows):
    table = PathTable.from_sequences([r[0] for r in rows], [r[1] for r in rows], None, [r[2] for r in rows])
    total = ShapleyValue().fit(table).credits_["conversions"].sum()
    assert total == pytest.approx(table.conversions.sum(), rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(paths_strategy)
def test_symmetry_swapping_two_channels_everywhere_swaps_their_credit(rows):
    swap = {"A": "B", "B": "A"}
    table = PathTable.from_sequences([r[0] for r in rows], [r[1] for r in rows], None, [r[2] for r in rows])
    swapped = PathTable.from_sequences([[swap.get(c, c) for c in r[0]] for r in rows],
                                       [r[1] for r in rows], None, [r[2] for r in rows])
    a = ShapleyValue().fit(table).credits_.set_index("channel")["conversions"]
    b = ShapleyValue().fit(swapped).credits_.set_index("channel")["conversions"]
    for ch in a.index:
        assert a[ch] == pytest.approx(b[swap.get(ch, ch)], abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(paths_strategy)
def test_null_player_a_channel_that_never_changes_the_rate_gets_nothing(rows):
    """Add channel Z to a copy of every journey: each coalition S and S+Z have the same rate."""
    seqs = [r[0] for r in rows] + [[*r[0], "Z"] for r in rows]
    conv = [r[1] for r in rows] * 2
    nulls = [r[2] for r in rows] * 2
    credits = ShapleyValue().fit(PathTable.from_sequences(seqs, conv, None, nulls)).credits_
    assert credits.set_index("channel").loc["Z", "conversions"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coalition_by_coalition_equals_the_full_transform(seed):
    # beyond max_channels each converting coalition's game is solved over its own subsets: the same
    # numbers as the transforms over all 2^n coalitions, per channel and per conversion
    paths = random_paths(seed, n_channels=9, n_paths=150, max_len=7)
    dense = ShapleyValue().fit(paths)
    sparse = ShapleyValue(max_channels=0).fit(paths)
    cols = ["conversions", "value"]
    np.testing.assert_allclose(sparse.credits_[cols], dense.credits_[cols], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(sparse.touch_weights(), dense.touch_weights(), rtol=1e-9, atol=1e-12)
    assert sparse.coalition_rates_ == pytest.approx(dense.coalition_rates_)


def test_forty_channels_exactly_when_journeys_see_few():
    paths = random_paths(5, n_channels=40, n_paths=400, max_len=5)
    model = ShapleyValue().fit(paths)           # 2^40 coalitions in all; each journey sees <= 5
    assert model.credits_["conversions"].sum() == pytest.approx(paths.conversions.sum())


@pytest.mark.parametrize("value", ["rate", "model"])
def test_large_coalitions_sampled_within_their_reported_error(value):
    """Coalitions over max_coalition channels are split by sampled channel orders: the estimate
    conserves exactly, covers the exact split within its standard errors and sharpens as 1/sqrt(M)."""
    paths = random_paths(0, n_channels=8, n_paths=150, max_len=7)
    exact = ShapleyValue(value=value, max_channels=0).fit(paths)
    assert (exact.sampling_se_ == 0).all()
    with pytest.warns(UserWarning, match=r"more than 3 distinct channels were split by sampling"):
        sampled = ShapleyValue(value=value, max_channels=0, max_coalition=3, n_permutations=400).fit(paths)
    got, truth = sampled.credits_["conversions"], exact.credits_["conversions"]
    assert got.sum() == pytest.approx(paths.conversions.sum(), abs=1e-9)
    se = sampled.sampling_se_.to_numpy()
    assert (se > 0).all()  # every channel is in some sampled coalition here
    np.testing.assert_array_less(np.abs(got - truth), 4 * se)
    # coverage over seeds: about 95% of channels within two standard errors
    inside = []
    for seed in range(12):
        with pytest.warns(UserWarning):
            m = ShapleyValue(value=value, max_channels=0, max_coalition=3, n_permutations=100,
                             random_state=seed).fit(paths)
        inside.extend(np.abs(m.credits_["conversions"] - truth) <= 2 * m.sampling_se_.to_numpy())
    assert np.mean(inside) >= 0.85
    with pytest.warns(UserWarning):
        finer = ShapleyValue(value=value, max_channels=0, max_coalition=3, n_permutations=1600).fit(paths)
    assert 0.35 < np.median(finer.sampling_se_ / sampled.sampling_se_) < 0.65  # sqrt(400 / 1600) = 0.5


@pytest.mark.parametrize("interactions", [False, True])
def test_model_values_of_all_coalitions_equal_the_regressions_predictions(interactions):
    """Every coalition's value comes from a subset sum of the coefficients (the logit is additive in
    the channels and pairs present); it equals scikit-learn's predict_proba on the features."""
    paths = random_paths(5, n_channels=7, n_paths=150, max_len=6)
    model = ShapleyValue(value="model", interactions=interactions).fit(paths)
    n = len(paths.channels)
    everything = np.arange(1 << n, dtype=np.int64)
    table = model.coalitions_
    got = model._all_values(table["coalition"].to_numpy(), table["rate"].to_numpy(), n)
    expected = model.value_model_.predict_proba(model._features(everything, n))[:, 1]
    assert got[0] == 0.0  # no touch, no value
    np.testing.assert_allclose(got[1:], expected[1:], rtol=1e-12)


@pytest.mark.parametrize("interactions", [False, True])
def test_model_value_function_is_exact_in_both_modes_and_conserves(interactions):
    paths = random_paths(4, n_channels=7, n_paths=120, max_len=6)
    dense = ShapleyValue(value="model", interactions=interactions).fit(paths)
    sparse = ShapleyValue(value="model", interactions=interactions, max_channels=0).fit(paths)
    np.testing.assert_allclose(sparse.credits_["conversions"], dense.credits_["conversions"], rtol=1e-9)
    assert dense.credits_["conversions"].sum() == pytest.approx(paths.conversions.sum())
    pc = dense.path_credits()
    np.testing.assert_allclose(pc.groupby("channel")["conversions"].sum().sort_index(),
                               dense.credits_.set_index("channel")["conversions"].sort_index(), rtol=1e-9)


def test_model_value_function_does_not_trust_a_coalition_seen_once():
    # 1,000 journeys on A convert 5%; one journey on A > R converted. Raw rates make {A, R} worth a
    # sure conversion; the regression prices it near what the rest of the data support
    paths = PathTable.from_sequences([["A"], ["A", "R"]], conversions=[50, 1], nulls=[950, 0])
    raw = ShapleyValue().fit(paths)
    model = ShapleyValue(value="model", C=0.1).fit(paths)
    assert raw.coalition_rates_[frozenset({"A", "R"})] == 1.0
    both = model._predict(np.array([0b11]), 2)[0]  # channels A (bit 0) and R (bit 1)
    assert both < 0.1
    assert model.credits_["conversions"].sum() == pytest.approx(51)
    with pytest.raises(ValueError, match="'rate' or 'model'"):
        ShapleyValue(value="oracle").fit(paths)


@pytest.mark.parametrize("n_channels", [6, 70])
def test_simplified_credit_by_coalition_equals_the_touch_weights(n_channels):
    """Simplified Shapley credits each path's coalition (bitmask, up to 62 channels) or, beyond, touch
    by touch; both equal summing each touch's weight (a channel repeated in a path shares its part)."""
    paths = random_paths(9, n_channels=n_channels, n_paths=300, max_len=8)
    model = SimplifiedShapley()
    conv, value = model._credit(paths)
    by_touch = AttributionModel._credit(model, paths)
    np.testing.assert_allclose(conv, by_touch[0], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(value, by_touch[1], rtol=1e-12, atol=1e-9)
    assert conv.sum() == pytest.approx(paths.conversions.sum())


def _blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")


@pytest.mark.parametrize("name", ["shapley_model", "shapley_adjusted"])
def test_value_function_fits_run_blas_on_one_thread_and_credit_the_same(monkeypatch, name):
    """The logistic value functions' regressions run with BLAS limited to one thread (much faster on
    a busy machine, benchmarks/RESULTS.md), the caller's setting is restored after, and the credits
    are those of the same fit on several threads."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from closedloop_nb.attribution import MODELS
    from closedloop_nb.attribution.adjusted import AdjustedShapley

    paths = random_paths(3, n_channels=8, n_paths=400)
    seen = []
    fit = LogisticRegression.fit

    def recording(self, *args, **kwargs):
        seen.append(_blas_threads())
        return fit(self, *args, **kwargs)

    with threadpool_limits(limits=2, user_api="blas"):
        before = _blas_threads()
        with monkeypatch.context() as m:
            m.setattr(LogisticRegression, "fit", recording)
            limited = MODELS[name]().fit(paths)
            p_limited = limited.predict_proba(paths)
        assert seen == [1]
        assert _blas_threads() == before
        # the same fit without the limit, on the caller's threads
        if name == "shapley_adjusted":
            monkeypatch.setattr(AdjustedShapley, "_solve", AdjustedShapley._solve.__wrapped__)
        else:
            monkeypatch.setattr(ShapleyValue, "_credit_coalitions", ShapleyValue._credit_coalitions_threads)
        free = MODELS[name]().fit(paths)
    np.testing.assert_allclose(free.credits_["conversions"], limited.credits_["conversions"], rtol=1e-9)
    np.testing.assert_allclose(free.predict_proba(paths), p_limited, rtol=1e-9)

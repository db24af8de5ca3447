"""Bootstrap intervals: they must cover the truth on simulated data with a known population."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.attribution import MODELS, Linear, MarkovChain, PathTable
from closedloop_nb.attribution.compare import compare_models, rank_flips
from closedloop_nb.attribution.uncertainty import bootstrap, resample

from .conftest import random_paths

# a population: unique paths with their share of journeys and their conversion probability
POP_PATHS = [["A"], ["B"], ["C"], ["A", "B"], ["B", "C"], ["A", "C"], ["C", "A", "B"], ["D"], ["A", "D"]]
POP_SHARE = np.array([0.2, 0.2, 0.15, 0.1, 0.1, 0.08, 0.07, 0.06, 0.04])
POP_RATE = np.array([0.05, 0.03, 0.04, 0.12, 0.08, 0.10, 0.20, 0.02, 0.06])


def population_table(n: float) -> PathTable:
    conv = n * POP_SHARE * POP_RATE
    return PathTable.from_sequences(POP_PATHS, conv, conv * 100, n * POP_SHARE * (1 - POP_RATE))


def sample_table(rng: np.random.Generator, n: int) -> PathTable:
    counts = rng.multinomial(n, POP_SHARE)
    conv = rng.binomial(counts, POP_RATE).astype(float)
    return PathTable.from_sequences(POP_PATHS, conv, conv * 100, counts - conv)


@pytest.mark.parametrize("model,reps,n_boot", [(Linear(), 80, 200), (MarkovChain(), 60, 200)])
def test_95_percent_share_intervals_cover_the_population_value(model, reps, n_boot):
    """The truth is the model's value on the population; samples of 3,000 journeys are drawn from
    it and bootstrapped. At least 90% of the 95% intervals must contain the truth."""
    truth = model.fit(population_table(1e6)).credits_.set_index("channel")["share"]
    rng = np.random.default_rng(2024)
    hits = total = 0
    for r in range(reps):
        ci = bootstrap(model, sample_table(rng, 3_000), n_boot=n_boot, random_state=r,
                       progress=False).set_index("channel")
        inside = (ci["share_lower"] <= truth) & (truth <= ci["share_upper"])
        hits += int(inside.sum())
        total += len(inside)
    assert hits / total >= 0.90, hits / total


RULES = [name for name, cls in MODELS.items() if cls.rule_based]


@pytest.mark.parametrize("name", RULES)
def test_rule_based_replicates_reuse_weights_and_equal_refits(name):
    """A rule's replicates come from its touch weights summed once per path and channel; they equal
    refitting the model on every replicate (same draws: same seed)."""
    assert {"first_touch", "last_touch", "linear", "position_based"} <= set(RULES)
    assert not MarkovChain.rule_based  # a learned model refits on every replicate
    paths = random_paths(11, n_channels=6, n_paths=150)
    model = MODELS[name]()
    refit = MODELS[name]()
    refit.rule_based = False  # this instance takes the general route
    fast = bootstrap(model, paths, n_boot=30, random_state=3, progress=False)
    slow = bootstrap(refit, paths, n_boot=30, random_state=3, progress=False)
    pd.testing.assert_frame_equal(fast, slow, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", [name for name in MODELS if name not in RULES])
def test_learned_models_replicates_equal_fresh_fits(name):
    """Learned models reuse what depends on the journeys alone (coalitions, features, chain states)
    across replicates; each replicate's credits equal a fresh fit on it."""
    paths = random_paths(12, n_channels=5, n_paths=120)
    worker = MODELS[name]()
    credit = worker._for_counts(worker._prepare(paths))
    rng = np.random.default_rng(4)
    for _ in range(3):
        replicate = resample(paths, rng)
        conv, value = credit(replicate)
        fresh = MODELS[name]().fit(replicate).credits_
        np.testing.assert_allclose(conv, fresh["conversions"], rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(value, fresh["value"], rtol=1e-9, atol=1e-9)


def test_resample_keeps_journeys_and_value_per_conversion():
    paths = random_paths(3)
    rep = resample(paths, np.random.default_rng(0))
    journeys = paths.conversions.sum() + paths.nulls.sum()
    assert rep.conversions.sum() + rep.nulls.sum() == pytest.approx(journeys)
    ok = rep.conversions > 0
    per = paths.value[ok] / paths.conversions[ok]
    assert np.allclose(rep.value[ok] / rep.conversions[ok], per)


def test_bootstrap_is_reproducible_and_intervals_bracket_the_estimate():
    paths = random_paths(1)
    a = bootstrap(Linear(), paths, n_boot=50, random_state=3, progress=False)
    b = bootstrap(Linear(), paths, n_boot=50, random_state=3, progress=False)
    assert a.equals(b)
    assert (a["rank_lower"] <= a["rank"]).all() and (a["rank"] <= a["rank_upper"]).all()


def test_compare_models_is_tidy_and_flags_rank_flips():
    paths = population_table(10_000)
    table = compare_models(paths, ["first_touch", "last_touch", "markov"])
    assert set(table.columns) >= {"model", "channel", "conversions", "value", "share", "rank"}
    assert len(table) == 3 * len(paths.channels)
    for _, g in table.groupby("model"):
        assert g["conversions"].sum() == pytest.approx(paths.conversions.sum())
    flips = rank_flips(table)
    assert (flips["spread"] > 0).all()


def test_compare_models_refuses_an_unknown_model():
    with pytest.raises(ValueError, match="choose from"):
        compare_models(random_paths(0), ["first_touch", "magic"])


# --- replicates drawn once for all models, credited in chunks (issue 13) --------------------------

def _refit_intervals(model_factory, paths: PathTable, n_boot: int, seed: int) -> dict[str, np.ndarray]:
    """The bootstrap by its definition, one replicate at a time: a multinomial draw of as many
    journeys over the path x outcome cells (value following conversions at each path's mean), a fresh
    fit on it, and percentiles of the replicates' credits and shares."""
    rng = np.random.default_rng(seed)
    cells = np.concatenate([paths.conversions, paths.nulls])
    per_conv = np.divide(paths.value, paths.conversions, out=np.zeros(paths.n_paths),
                         where=paths.conversions > 0)
    conv, value = [], []
    for _ in range(n_boot):
        draw = rng.multinomial(int(round(cells.sum())), cells / cells.sum()).astype(float)
        c, k = draw[: paths.n_paths], draw[paths.n_paths:]
        credits = model_factory().fit(PathTable(paths.channels, paths.codes, paths.offsets, c,
                                                c * per_conv, k)).credits_
        conv.append(credits["conversions"].to_numpy())
        value.append(credits["value"].to_numpy())
    conv, value = np.array(conv), np.array(value)
    share = conv / conv.sum(axis=1, keepdims=True)
    out = {}
    for name, x in (("", conv), ("value_", value), ("share_", share)):
        out[f"{name}lower"], out[f"{name}upper"] = np.percentile(x, [2.5, 97.5], axis=0)
    return out



@pytest.mark.parametrize("size", ["small", "medium"])
def test_compare_models_intervals_equal_a_refit_per_replicate(size, monkeypatch):
    """Every path-table model's intervals from compare_models(ci=True), whose replicates are drawn once
    for all models and credited in chunks (a small chunk budget here: chunks of 3 replicates, the last
    one short), equal refitting each model on each replicate drawn as the bootstrap defines it."""
    import closedloop_nb.attribution.uncertainty as unc

    paths = (random_paths(21, n_channels=5, n_paths=80) if size == "small"
             else random_paths(22, n_channels=8, n_paths=1_500, max_len=7))
    n_boot = 8 if size == "small" else 7
    monkeypatch.setattr(unc, "CHUNK_BYTES", 3 * 6 * 8 * paths.n_paths)
    assert unc.chunk_size(paths.n_paths) == 3
    names = list(MODELS)
    table = compare_models(paths, names, ci=True, n_boot=n_boot, random_state=5, progress=False)
    for name in names:
        got = table[table["model"] == MODELS[name].name]
        want = _refit_intervals(MODELS[name], paths, n_boot, seed=5)
        for col, expected in want.items():
            np.testing.assert_allclose(got[col].to_numpy(), expected, rtol=1e-9, atol=1e-9,
                                       err_msg=f"{name} {col}")


def test_models_that_see_other_counts_draw_their_own_replicates():
    """A chain without null journeys sees other counts than the rules: it gets its own draws, the same
    as bootstrapping it alone with the seed; the rules still share theirs."""
    paths = random_paths(23, n_channels=4, n_paths=60)
    no_null = MarkovChain(null_state=False)
    together = compare_models(paths, ["linear", no_null, "first_touch"], ci=True, n_boot=20,
                              random_state=2, progress=False)
    for model in (Linear(), MarkovChain(null_state=False), MODELS["first_touch"]()):
        alone = bootstrap(model, paths, n_boot=20, random_state=2, progress=False)
        got = together[together["model"] == model.name].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, alone, rtol=1e-12, atol=1e-12)


def test_draws_are_bounded_in_memory():
    """At 700k paths, a chunk's counts stay within the budget (100 replicates of 1.4M cells as
    float64 would be 1.1 GB)."""
    from closedloop_nb.attribution.uncertainty import CHUNK_BYTES, chunk_size

    size = chunk_size(700_000)
    assert 1 <= size < 100
    assert size * 6 * 8 * 700_000 <= CHUNK_BYTES
    assert chunk_size(10) >= 100  # small tables: one chunk


def test_group_sums_add_up_as_bincount_does_to_the_last_bit():
    """The sparse sums replicates use instead of a bincount per replicate give the same floats."""
    from closedloop_nb.attribution.base import group_sums

    rng = np.random.default_rng(0)
    groups = rng.integers(0, 50, size=5_000)
    x = rng.standard_normal((5_000, 4)) * 10.0 ** rng.integers(-8, 8, size=(5_000, 1))
    sums = group_sums(groups, 60) @ x
    for j in range(4):
        np.testing.assert_array_equal(sums[:, j], np.bincount(groups, weights=x[:, j], minlength=60))


def test_threads_change_nothing_but_the_waiting(monkeypatch):
    """The draws run a chunk ahead on a worker thread and the models credit each chunk side by side:
    every interval is bit for bit what one thread, drawing and crediting in turn, gives (chunks of 2
    replicates, the last one short, and two groups of draws: the chain without nulls draws its own)."""
    import closedloop_nb.attribution.uncertainty as unc

    paths = random_paths(24, n_channels=6, n_paths=300, max_len=6)
    monkeypatch.setattr(unc, "CHUNK_BYTES", 2 * 6 * 8 * paths.n_paths)
    models = [*MODELS, MarkovChain(null_state=False)]
    runs = {}
    for threads in (1, 2, 4):
        monkeypatch.setattr(unc, "THREADS", threads)
        runs[threads] = compare_models(paths, models, ci=True, n_boot=7, random_state=3, progress=False)
    pd.testing.assert_frame_equal(runs[2], runs[1], check_exact=True)
    pd.testing.assert_frame_equal(runs[4], runs[1], check_exact=True)
    # and the single-thread run is the bootstrap of each model alone with the seed
    alone = bootstrap(Linear(), paths, n_boot=7, random_state=3, progress=False)
    got = runs[1][runs[1]["model"] == "linear"].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, alone, check_exact=True)

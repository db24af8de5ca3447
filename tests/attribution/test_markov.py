"""Markov removal effects against an independent dense absorbing-chain solution."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.attribution import MarkovChain, NotFittedError, PathTable
from closedloop_nb.attribution.uncertainty import resample

from .conftest import random_paths


def dense_reference(paths: PathTable, order: int, weight: str = "conversions") -> dict[str, float]:
    """Removal effects from a dense transition matrix built with dicts, solved with numpy."""
    conv = paths.conversions if weight == "conversions" else paths.value
    mean = paths.value.sum() / paths.conversions.sum()
    nulls = paths.nulls if weight == "conversions" else paths.nulls * mean
    seqs = [paths.path(p) for p in range(paths.n_paths)]
    if order == 1:  # consecutive repeats do not change absorption; the model drops them
        seqs = [[c for i, c in enumerate(s) if i == 0 or c != s[i - 1]] for s in seqs]
    states: dict[tuple, int] = {(): 0}
    counts: dict[tuple[int, object], float] = {}

    def state(seq, i):
        key = tuple(seq[max(0, i - order + 1): i + 1])
        return states.setdefault(key, len(states))

    for seq, c, u in zip(seqs, conv, nulls, strict=True):
        prev = 0
        for i in range(len(seq)):
            s = state(seq, i)
            counts[(prev, s)] = counts.get((prev, s), 0.0) + c + u
            prev = s
        counts[(prev, "conv")] = counts.get((prev, "conv"), 0.0) + c
        counts[(prev, "null")] = counts.get((prev, "null"), 0.0) + u
    n = len(states)
    out = np.zeros(n)
    for (a, _), w in counts.items():
        out[a] += w
    Q, r = np.zeros((n, n)), np.zeros(n)
    for (a, b), w in counts.items():
        if b == "conv":
            r[a] += w / out[a]
        elif b != "null":
            Q[a, b] += w / out[a]

    def p_conv(removed: set[int]) -> float:
        keep = [i for i in range(n) if i not in removed]
        x = np.linalg.solve(np.eye(len(keep)) - Q[np.ix_(keep, keep)], r[keep])
        return x[0]

    base = p_conv(set())
    return {ch: 1 - p_conv({i for key, i in states.items() if ch in key}) / base
            for ch in paths.channels}


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_removal_effects_equal_dense_reference(order, seed):
    paths = random_paths(seed, n_channels=4 + seed, n_paths=80)
    model = MarkovChain(order=order).fit(paths)
    ref = dense_reference(paths, order)
    got = model.removal_effects_.to_dict()
    assert got == pytest.approx(ref, abs=1e-9, rel=1e-9)
    value_ref = dense_reference(paths, order, weight="value")
    assert model.value_removal_effects_.to_dict() == pytest.approx(value_ref, abs=1e-9, rel=1e-9)


@pytest.mark.parametrize("numbering", ["dense", "direct", "hashed"])
@pytest.mark.parametrize("order", [1, 2])
def test_bootstrap_replicates_reuse_the_chain_and_equal_fresh_fits(order, numbering, monkeypatch):
    """Bootstrap replicates share a table's journeys and change its counts: credits from the chain
    built once for the table (its transitions counted per path) equal a fresh fit on each replicate
    (and the dense reference), whichever way transitions are numbered."""
    import closedloop_nb.attribution.markov as markov

    if numbering != "dense":
        monkeypatch.setattr(markov, "_DENSE_STATES", 0)
    if numbering == "hashed":
        monkeypatch.setattr(markov, "_KEYED_EDGES", 0)
        monkeypatch.setattr(markov, "_DIRECT_EDGES", 0)
    paths = random_paths(7, n_channels=5, n_paths=120)
    model = MarkovChain(order=order)
    credit = model._for_counts(model._prepare(paths))
    rng = np.random.default_rng(0)
    for _ in range(3):
        replicate = resample(paths, rng)
        fresh = MarkovChain(order=order).fit(replicate)
        conv, value = credit(replicate)
        np.testing.assert_allclose(conv, fresh.credits_["conversions"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(value, fresh.credits_["value"], rtol=1e-12, atol=1e-12)
        assert fresh.removal_effects_.to_dict() == pytest.approx(dense_reference(replicate, order), abs=1e-9)


def test_hand_worked_chain():
    # start->A 3, start->B 1; A->B 1, A->conv 1, A->null 1; B->conv 1, B->null 1
    # P(B)=1/2, P(A)=1/3+1/3*1/2=1/2, P=1/2; without A: 1/4*1/2=1/8 (RE 0.75); without B: 3/4*1/3=1/4 (RE 0.5)
    paths = pd.DataFrame({"path": ["A > B", "A", "B"], "total_conversions": [1, 1, 0],
                          "total_null": [0, 1, 1]})
    m = MarkovChain().fit(paths)
    assert m.conversion_probability_ == pytest.approx(0.5)
    assert m.removal_effects_.to_dict() == pytest.approx({"A": 0.75, "B": 0.5})
    # 2 conversions split 0.75 : 0.5
    assert m.credits_.set_index("channel")["conversions"].to_dict() == pytest.approx({"A": 1.2, "B": 0.8})


def test_channel_on_every_path_has_removal_effect_one():
    paths = pd.DataFrame({"path": ["A > X", "X > B", "X"], "total_conversions": [1, 2, 1],
                          "total_null": [3, 1, 5]})
    assert MarkovChain().fit(paths).removal_effects_["X"] == pytest.approx(1.0)


def test_self_transitions_do_not_change_the_result():
    a = pd.DataFrame({"path": ["A > A > B", "B > B"], "total_conversions": [2, 1], "total_null": [1, 3]})
    b = pd.DataFrame({"path": ["A > B", "B"], "total_conversions": [2, 1], "total_null": [1, 3]})
    assert MarkovChain().fit(a).removal_effects_.to_dict() == pytest.approx(
        MarkovChain().fit(b).removal_effects_.to_dict())


def test_transition_matrix_rows_sum_to_one():
    m = MarkovChain().fit(random_paths(4))
    sums = m.transition_matrix_.groupby("from")["probability"].sum()
    assert np.allclose(sums, 1.0)
    assert {"(conversion)", "(null)"} <= set(m.transition_matrix_["to"])


def test_unfitted_model_says_so_and_bad_order_is_refused():
    with pytest.raises(NotFittedError, match="call fit"):
        MarkovChain().summary  # noqa: B018
    with pytest.raises(ValueError, match="order must be"):
        MarkovChain(order=7).fit(random_paths(0))


@pytest.mark.parametrize("order", [1, 3])
def test_iterative_solver_for_large_chains_equals_dense_reference(order, monkeypatch):
    """Large chains are solved by fixed-point iteration; force it on a small one and compare."""
    import closedloop_nb.attribution.markov as markov

    monkeypatch.setattr(markov, "_DENSE_STATES", 0)
    paths = random_paths(7, n_channels=6, n_paths=150, max_len=8)
    got = MarkovChain(order=order).fit(paths).removal_effects_.to_dict()
    assert got == pytest.approx(dense_reference(paths, order), abs=1e-9, rel=1e-9)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_hashed_state_and_edge_numbering_equals_direct_indexing(order, monkeypatch):
    """Few states make dense arrays, more sparse matrices with transitions numbered by their key,
    big key spaces through arrays over every touch, directly or by sorting; force each on a small
    chain: same states, transition matrix and removal effects."""
    import closedloop_nb.attribution.markov as markov

    paths = random_paths(7, n_channels=6, n_paths=150, max_len=8)
    dense = MarkovChain(order=order).fit(paths)
    assert dense.chain_.dense_edges
    monkeypatch.setattr(markov, "_DENSE_STATES", 0)
    direct = MarkovChain(order=order).fit(paths)
    assert not direct.chain_.dense_edges
    monkeypatch.setattr(markov, "_KEYED_EDGES", 0)
    by_touch = MarkovChain(order=order).fit(paths)
    monkeypatch.setattr(markov, "_DIRECT_EDGES", 0)
    hashed = MarkovChain(order=order).fit(paths)
    for other in (direct, by_touch, hashed):
        assert other.states_ == dense.states_
        pd.testing.assert_frame_equal(other.transition_matrix_, dense.transition_matrix_)
        assert other.removal_effects_.to_dict() == pytest.approx(dense_reference(paths, order), abs=1e-9)


def test_higher_order_states_read_in_journey_order():
    paths = pd.DataFrame({"path": ["A > B > C"], "total_conversions": [1], "total_null": [1]})
    m = MarkovChain(order=2).fit(paths)
    assert m.states_ == [(), ("A",), ("A", "B"), ("B", "C")]
    t = m.transition_matrix_
    assert set(zip(t["from"], t["to"], strict=True)) == {
        ("(start)", "A"), ("A", "A > B"), ("A > B", "B > C"), ("B > C", "(conversion)"), ("B > C", "(null)")}


def test_sequence_removal_effect_by_hand():
    # P = 5/13; removing the state (A, B) leaves only B-first journeys: 2/13, so 1 - 2/5 = 0.6
    paths = pd.DataFrame({"path": ["A > B", "B > A", "B"], "total_conversions": [3, 1, 1],
                          "total_null": [1, 3, 4]})
    m = MarkovChain(order=2).fit(paths)
    assert m.conversion_probability_ == pytest.approx(5 / 13)
    assert m.sequence_removal_effect("A", "B") == pytest.approx(0.6)
    # removing (B, A): B-first journeys convert only through B alone: 3/13 + 1/13 = 4/13 -> 0.2
    assert m.sequence_removal_effect("B", "A") == pytest.approx(0.2)
    # a single channel is its ordinary removal effect
    assert m.sequence_removal_effect("A") == pytest.approx(m.removal_effects_["A"])
    with pytest.raises(ValueError, match="order"):
        m.sequence_removal_effect("A", "B", "A")


def test_without_null_state_only_converting_paths_count():
    paths = pd.DataFrame({"path": ["A > B", "B"], "total_conversions": [2, 2], "total_null": [50, 1]})
    m = MarkovChain(null_state=False).fit(paths)
    # with conversions only, P(conversion) is 1 and removing B (on every path) removes everything
    assert m.conversion_probability_ == pytest.approx(1.0)
    assert m.removal_effects_.to_dict() == pytest.approx({"A": 0.5, "B": 1.0})


def test_order_selection_prefers_the_order_that_generated_the_data():
    """Conversion depends on the last two channels: order 2 must beat order 1 held out."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(4000):
        seq = list(rng.choice(["A", "B", "C"], size=rng.integers(2, 5)))
        p = 0.6 if seq[-2:] == ["A", "B"] else 0.05
        rows.append((" > ".join(seq), int(rng.random() < p)))
    df = pd.DataFrame(rows, columns=["path", "c"]).groupby("path")["c"].agg(["sum", "size"]).reset_index()
    paths = pd.DataFrame({"path": df["path"], "total_conversions": df["sum"],
                          "total_null": df["size"] - df["sum"]})
    sel = MarkovChain.select_order(paths, orders=(1, 2, 3))
    losses = sel.set_index("order")["log_loss"]
    assert losses[2] < losses[1]
    assert sel.loc[sel["best"], "order"].item() in (2, 3)


def test_removals_iterated_together_get_the_iterates_of_separate_solves():
    """Large chains solve every removal in one iteration over the columns; each column stops when
    it converges, so it ends where a solve of its own ends, to the last bit."""
    from closedloop_nb.attribution import markov

    paths = random_paths(3, n_channels=6, n_paths=200, max_len=8)
    chain = markov._Chain(paths, 2)
    chain.dense_edges = False  # the sparse matrices of large chains
    q, r = chain._matrices(paths.conversions, paths.nulls)
    keep = ~chain.members
    keep[0] = True
    warm = markov._fixed_points(q, r, np.ones((chain.n_states, 1), dtype=bool), r)[:, 0]
    together = markov._fixed_points(q, r, keep, warm)
    for c in range(keep.shape[1]):
        alone = markov._fixed_points(q, r, keep[:, c:c + 1], warm)[:, 0]
        assert np.array_equal(together[:, c], alone)


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("block", [1, 7, 1 << 16])
@pytest.mark.parametrize("empty", [True, False])
def test_blocks_of_paths_count_what_arrays_over_every_touch_count(order, block, empty, monkeypatch):
    """Small key spaces are numbered and weighted block by block of paths (both weightings in one
    pass, as the parts of complex numbers); large ones through arrays over every touch (the way it
    was done before blocks): the same states, transitions and journeys per transition, to the last
    bit, so the same removal effects and credits, whatever the block size (a block of one touch
    still holds a whole path), with paths without journeys (their transitions are still the
    chain's) or without."""
    from closedloop_nb.attribution import markov

    paths = random_paths(5, n_channels=6, n_paths=300, max_len=9)
    if not empty:
        paths = PathTable(paths.channels, paths.codes, paths.offsets, paths.conversions, paths.value,
                          paths.nulls + 1)
    assert ((paths.conversions + paths.nulls) == 0).any() == empty
    monkeypatch.setattr(markov, "_BLOCK", block)
    keyed = markov._Chain(paths, order, markov._journeys(paths))
    monkeypatch.setattr(markov, "_KEYED_EDGES", 0)
    by_touch = markov._Chain(paths, order, markov._journeys(paths))
    assert keyed.edge is None and by_touch.edge is not None
    assert keyed.state_names() == by_touch.state_names()
    assert np.array_equal(keyed.last, by_touch.last)
    assert np.array_equal(keyed.members, by_touch.members)
    assert np.array_equal(keyed.edge_from, by_touch.edge_from)
    assert np.array_equal(keyed.edge_to, by_touch.edge_to)
    for a, b in zip(keyed.built_weights, by_touch.built_weights, strict=True):
        assert np.array_equal(a[keyed.edge_ids], b[by_touch.edge_ids])
    for a, b in zip(keyed.weights(paths.nulls), by_touch.weights(paths.nulls), strict=True):
        assert np.array_equal(a[keyed.edge_ids], b[by_touch.edge_ids])
    # the bootstrap's per-path counts go through the same transitions
    keyed.index_by_path()
    by_touch.index_by_path()
    w = np.arange(paths.n_paths, dtype=float)
    assert np.array_equal(keyed.transition_counts(w)[keyed.edge_ids],
                          by_touch.transition_counts(w)[by_touch.edge_ids])
    model = MarkovChain(order=order)
    monkeypatch.setattr(markov, "_KEYED_EDGES", 4_000_000)
    first = [x.copy() for x in model.credit(paths)]
    monkeypatch.setattr(markov, "_KEYED_EDGES", 0)
    assert all(np.array_equal(a, b) for a, b in zip(first, model.credit(paths), strict=True))

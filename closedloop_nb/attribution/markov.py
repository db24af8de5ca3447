"""Markov chain attribution with removal effects computed exactly from the absorbing chain.

The chain (Anderl, Becker, von Wangenheim & Schumann 2016) has a start state, one transient state per
channel (per sequence of the last ``order`` channels at higher orders), and two absorbing states,
conversion and null. Each path ``c1 > ... > cn`` contributes transitions start -> c1 -> ... -> cn,
then cn -> conversion (its conversions) and cn -> null (its nulls). With ``Q`` the transient part of
the transition matrix and ``r`` the one-step probabilities of converting, the probability of
conversion from every state is ``x = (I - Q)^-1 r``: the fundamental-matrix solution, found here by
sparse LU rather than by simulating journeys.

Removing channel ``c`` sends every transition into a state that contains ``c`` to null; its removal
effect is ``1 - P(conversion | c removed) / P(conversion)``, and conversions are split among channels
in proportion to removal effects (ChannelAttribution's definition). Self-transitions (A > A) do not
change absorption probabilities.

Value is credited the same way on a value-weighted chain: every transition of a path counts its
conversion value instead of its conversions, and its nulls count the mean value of a conversion, so
the removal effect measures the share of value lost. With equal values per conversion the two
chains give the same removal effects.

Examples
--------
>>> import pandas as pd
>>> paths = pd.DataFrame({"path": ["A > B", "A", "B"], "total_conversions": [1, 1, 0],
...                       "total_null": [0, 1, 1]})
>>> MarkovChain().fit(paths).removal_effects_.round(3).tolist()
[0.75, 0.5]
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import splu

from closedloop_nb.attribution.base import AttributionModel, NotFittedError
from closedloop_nb.attribution.paths import PathTable

__all__ = ["MarkovChain"]

#: Chains with at most this many states are solved densely (faster than sparse LU when small).
_DENSE_STATES = 800
#: Below this many possible (from, to) pairs, transitions are counted by direct indexing.
_DIRECT_EDGES = 4_000_000
#: Up to this many possible transitions (states squared) edge ids are the transition keys themselves.
_DENSE_EDGES = 2**18


class MarkovChain(AttributionModel):
    """Markov chain removal-effect attribution, exact.

    Parameters
    ----------
    order
        How many past channels a state remembers (1 to 4).
    null_state
        Use the journeys that did not convert (``total_null``). Without them the chain is built
        from converting paths only, as ChannelAttribution does when no null column is given.

    Attributes
    ----------
    removal_effects_
        Removal effect of each channel (conversions), indexed by channel.
    value_removal_effects_
        Removal effect of each channel on the value-weighted chain.
    conversion_probability_
        P(conversion) from the start state.
    states_
        The transient states, as tuples of channel names (index 0 is the start state, ``()``).
    transition_matrix_
        Tidy transition probabilities: ``from``, ``to``, ``probability`` (state names joined by ``>``).
    """

    name = "markov"

    def __init__(self, order: int = 1, null_state: bool = True):
        self.order = order
        self.null_state = null_state

    def _credit(self, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
        return self._credit_on(_Chain(paths, self.order), paths)

    def _for_counts(self, paths: PathTable) -> Callable[[PathTable], tuple[np.ndarray, np.ndarray]]:
        # the chain's states and transitions are built once; replicates only reweight them
        chain = _Chain(paths, self.order)
        chain.index_by_path()
        return lambda table: self._credit_on(chain, table)

    def _credit_on(self, chain: _Chain, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
        n = len(paths.channels)
        mean_value = paths.value.sum() / paths.conversions.sum() if paths.conversions.sum() else 0.0
        re_conv, p_conv = chain.removal_effects(paths.conversions, paths.nulls)
        re_val, _ = chain.removal_effects(paths.value, paths.nulls * mean_value)
        self._last = (paths, chain, re_conv, re_val, p_conv)
        conv = _split(paths.conversions.sum(), re_conv, n)
        value = _split(paths.value.sum(), re_val, n)
        return conv, value

    def _prepare(self, paths: PathTable) -> PathTable:
        if self.order not in (1, 2, 3, 4):
            raise ValueError(f"order must be 1, 2, 3 or 4, got {self.order!r}")
        if not self.null_state:
            paths = PathTable(paths.channels, paths.codes, paths.offsets, paths.conversions, paths.value,
                              np.zeros(paths.n_paths))
        return paths

    def fit(self, paths) -> MarkovChain:
        """Fit on a path table (see :meth:`AttributionModel.fit`); also keeps the chain for inspection."""
        super().fit(paths)
        table, chain, re_conv, re_val, p_conv = self._last
        del self._last
        self.removal_effects_ = pd.Series(re_conv, index=list(table.channels), name="removal_effect")
        self.value_removal_effects_ = pd.Series(re_val, index=list(table.channels), name="removal_effect")
        self.conversion_probability_ = p_conv
        self.states_ = chain.state_names()
        self.chain_ = chain
        return self

    @property
    def transition_matrix_(self) -> pd.DataFrame:
        """Tidy transition probabilities: ``from``, ``to``, ``probability`` (built on first use)."""
        if not hasattr(self, "chain_"):
            raise AttributeError("transition_matrix_ exists after fit(paths)")
        return self.chain_.transitions()

    def sequence_removal_effect(self, *channels: str) -> float:
        """Removal effect of a sequence of channels (e.g. ``"Display", "Paid Search"``): every state
        in which they occur consecutively is removed. Needs ``order >= len(channels)``.

        Examples
        --------
        >>> import pandas as pd
        >>> paths = pd.DataFrame({"path": ["A > B", "B > A", "B"], "total_conversions": [3, 1, 1],
        ...                       "total_null": [1, 3, 4]})
        >>> round(MarkovChain(order=2).fit(paths).sequence_removal_effect("A", "B"), 3)
        0.6
        """
        if not hasattr(self, "chain_"):
            raise NotFittedError("This MarkovChain is not fitted yet; call fit(paths) first.")
        if not 1 <= len(channels) <= self.order:
            raise ValueError(f"a sequence of {len(channels)} channels needs order >= {len(channels)}; "
                             f"this model has order {self.order}")
        unknown = [c for c in channels if c not in self.chain_.paths.channels]
        if unknown:
            raise KeyError(f"unknown channel(s) {unknown}; channels: {list(self.chain_.paths.channels)}")
        k = len(channels)
        hit = np.array([any(tuple(s[i:i + k]) == channels for i in range(len(s) - k + 1))
                        for s in self.states_])
        table = self.chain_.paths
        return self.chain_.removal_effect_of(hit, table.conversions, table.nulls)

    @classmethod
    def select_order(cls, paths: PathTable | pd.DataFrame, orders: tuple[int, ...] = (1, 2, 3, 4),
                     test_share: float = 0.3, random_state: int | None = 0) -> pd.DataFrame:
        """Held-out log-loss of each order at predicting whether a journey converts.

        Journeys are split at random into training and test (binomial thinning of every path's
        conversions and nulls). For each order, a test journey's probability of converting is the
        training conversion rate of the state it ends in (add-one smoothing; unseen states fall back
        to the overall rate). Lower log-loss is better; pick the order where it stops improving.

        Returns
        -------
        pandas.DataFrame
            ``order``, ``log_loss``, ``states``, and ``best`` (True on the lowest log-loss).
        """
        from closedloop_nb.attribution.base import as_path_table

        table = as_path_table(paths)
        rng = np.random.default_rng(random_state)
        test_conv = rng.binomial(table.conversions.astype(np.int64), test_share).astype(float)
        test_null = rng.binomial(table.nulls.astype(np.int64), test_share).astype(float)
        train_conv, train_null = table.conversions - test_conv, table.nulls - test_null
        overall = train_conv.sum() / max(train_conv.sum() + train_null.sum(), 1)
        rows = []
        for order in orders:
            chain = _Chain(table, order)
            last = chain.last
            c = np.bincount(last, weights=train_conv, minlength=chain.n_states)
            n = c + np.bincount(last, weights=train_null, minlength=chain.n_states)
            p = np.where(n > 0, (c + overall) / (n + 1), overall)[last]
            p = np.clip(p, 1e-12, 1 - 1e-12)
            loss = -(test_conv * np.log(p) + test_null * np.log(1 - p)).sum() / (test_conv + test_null).sum()
            rows.append({"order": order, "log_loss": loss, "states": chain.n_states - 1})
        out = pd.DataFrame(rows)
        out["best"] = out["log_loss"] == out["log_loss"].min()
        return out


def _split(total: float, effects: np.ndarray, n: int) -> np.ndarray:
    s = effects.sum()
    return total * effects / s if s > 0 else np.full(n, total / n)


def _fixed_point(q: sp.csr_matrix, r: np.ndarray, keep: np.ndarray, warm: np.ndarray | None,
                 tol: float = 1e-15, max_iter: int = 100_000) -> np.ndarray:
    """Solve x = keep * (Q x + r) by iteration (every journey ends, so it converges geometrically);
    falls back to a sparse LU solve if it has not converged after ``max_iter`` steps."""
    k = keep.astype(float)
    x = k * (warm if warm is not None else r)
    rk = k * r
    for _ in range(max_iter):
        nxt = k * (q @ x) + rk
        if np.max(np.abs(nxt - x)) <= tol:
            return nxt
        x = nxt
    idx = np.flatnonzero(keep)  # pragma: no cover - a chain whose journeys (almost) never end
    out = np.zeros(len(r))
    out[idx] = splu((sp.identity(len(idx), format="csc") - q[idx][:, idx]).tocsc()).solve(r[idx])
    return out


class _Chain:
    """The transitions of a path table as a sparse absorbing chain over order-k states."""

    def __init__(self, paths: PathTable, order: int):
        self.paths = paths
        self.order = order
        self._by_path: sp.csc_matrix | None = None
        n_ch = len(paths.channels)
        base = n_ch + 1
        n_touch = len(paths.codes)
        # state of each touch: the last `order` channels (fewer at the start of a path), as an int
        # in base n_channels + 1, the newest channel the highest digit
        key = paths.codes.astype(np.intp) + 1  # intp: what bincount and indexing take without a copy
        starts, lengths = paths.offsets[:-1], paths.lengths
        for lag in range(1, order):
            prev = np.empty(n_touch, dtype=key.dtype)
            prev[:lag] = 0
            np.add(paths.codes[:-lag], 1, out=prev[lag:], casting="unsafe")
            for j in range(lag):  # the first `lag` touches of a path have no channel `lag` back
                prev[starts[lengths > j] + j] = 0
            key *= base
            key += prev  # the newest channel stays the highest digit
        # number the distinct states in key order, so state numbers are deterministic
        if base**order <= _DIRECT_EDGES:
            present = np.bincount(key, minlength=base**order) > 0
            uniq = np.flatnonzero(present)
            lookup = np.cumsum(present, dtype=np.intp)  # key -> 1-based state number (0 = start)
            # every key used (order 1, all channels seen): the key is the state; else look it up
            self.state = key if len(uniq) == len(present) - 1 and not present[0] else np.take(lookup, key)
        else:
            codes, uniq = pd.factorize(key)
            order_ = np.argsort(uniq, kind="stable")
            rank = np.empty(len(uniq), dtype=np.intp)
            rank[order_] = np.arange(1, len(uniq) + 1, dtype=np.intp)
            uniq = uniq[order_]
            self.state = rank[codes]
        self.keys = uniq
        self.base = base
        self.n_states = len(uniq) + 1
        self.last = self.state[paths.offsets[1:] - 1]
        # which channels each state contains (digits of the key, newest channel lowest)
        members = np.zeros((self.n_states, n_ch), dtype=bool)
        digits = np.asarray(uniq, dtype=np.int64).copy()
        for _ in range(order):
            d = digits % base
            has = d > 0
            members[np.flatnonzero(has) + 1, d[has] - 1] = True
            digits //= base
        self.members = members
        # the distinct transitions (edges) once; every weighting is then a bincount over edge ids.
        # Transitions are start -> first touch of each path, and touch i -> i + 1 (all consecutive
        # pairs; the pairs that straddle two paths go to a spare edge id and are dropped).
        n = self.n_states
        start_key = self.state[paths.offsets[:-1]].astype(np.intp)
        pair_key = self.state[:-1] * n
        pair_key += self.state[1:]
        pair_key[paths.offsets[1:-1] - 1] = n * n  # last touch of a path -> first of the next
        if order == 1:  # a repeat (A > A) is a self-transition, which changes no absorption probability
            pair_key[self.state[1:] == self.state[:-1]] = n * n
        self.dense_edges = n * n + 1 <= _DENSE_EDGES
        if self.dense_edges:  # few states: the key is the edge id, counts land in an n x n array
            self.start_edge, self.pair_edge = start_key, pair_key
            self.n_edges = n * n
            return
        if n * n + 1 <= _DIRECT_EDGES:
            seen = np.bincount(pair_key, minlength=n * n + 1) > 0
            seen[:n] |= np.bincount(start_key, minlength=n) > 0
            seen[-1] = False
            edges = np.flatnonzero(seen)
            lookup = np.full(n * n + 1, len(edges), dtype=np.intp)  # bincount wants intp indices
            lookup[edges] = np.arange(len(edges), dtype=np.intp)
            self.start_edge, self.pair_edge = np.take(lookup, start_key), np.take(lookup, pair_key)
        else:
            ids, edges = pd.factorize(np.concatenate([start_key, pair_key]))
            real = edges != n * n
            remap = np.where(real, np.cumsum(real) - 1, real.sum())  # the straddling pairs go last
            ids, edges = remap[ids], edges[real]
            self.start_edge, self.pair_edge = ids[:paths.n_paths], ids[paths.n_paths:]
        self.n_edges = len(edges)
        self.edge_from, self.edge_to = edges // n, edges % n

    def index_by_path(self) -> None:
        """Count each path's transitions once (a sparse edges x paths matrix), so that weighting the
        chain by other counts of the same journeys is one sparse product (bootstrap replicates)."""
        p = self.paths
        edges = np.concatenate([self.start_edge, self.pair_edge])
        owner = np.concatenate([np.arange(p.n_paths), p.path_index[:-1]])
        real = edges < self.n_edges  # pairs that straddle two paths, and repeats at order 1, are out
        self._by_path = sp.csc_matrix((np.ones(int(real.sum())), (edges[real], owner[real])),
                                      shape=(self.n_edges, p.n_paths))

    def _matrices(self, conv: np.ndarray, nulls: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
        """Q (transient -> transient probabilities) and r (probability of converting next)."""
        journeys = conv + nulls
        if self._by_path is not None:
            w = self._by_path @ journeys
        else:
            per_touch = np.repeat(journeys, self.paths.lengths)[:-1]
            w = (np.bincount(self.start_edge, weights=journeys, minlength=self.n_edges + 1)
                 + np.bincount(self.pair_edge, weights=per_touch, minlength=self.n_edges + 1))[:self.n_edges]
        if self.dense_edges:
            counts = sp.csr_matrix(w.reshape(self.n_states, self.n_states))
        else:
            counts = sp.csr_matrix((w, (self.edge_from, self.edge_to)), shape=(self.n_states, self.n_states))
        to_conv = np.bincount(self.last, weights=conv, minlength=self.n_states)
        to_null = np.bincount(self.last, weights=nulls, minlength=self.n_states)
        out = np.asarray(counts.sum(axis=1)).ravel() + to_conv + to_null
        inv = np.divide(1.0, out, out=np.zeros_like(out), where=out > 0)
        q = sp.diags(inv) @ counts
        return q.tocsc(), to_conv * inv

    def _p_conversion(self, q: sp.csr_matrix | np.ndarray, r: np.ndarray, keep: np.ndarray,
                      warm: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """P(conversion) from the start state with the states outside ``keep`` made null, and the
        probabilities from every state (0 for removed ones)."""
        if isinstance(q, np.ndarray):
            idx = np.flatnonzero(keep)
            x = np.zeros(len(r))
            x[idx] = np.linalg.solve(np.eye(len(idx)) - q[np.ix_(idx, idx)], r[idx])
            return float(x[0]), x
        x = _fixed_point(q, r, keep, warm)
        return float(x[0]), x

    def removal_effects(self, conv: np.ndarray, nulls: np.ndarray) -> tuple[np.ndarray, float]:
        q, r = self._matrices(conv, nulls)
        q = q.toarray() if self.n_states <= _DENSE_STATES else q.tocsr()
        keep_all = np.ones(self.n_states, dtype=bool)
        p, x_all = self._p_conversion(q, r, keep_all)
        n_ch = self.members.shape[1]
        effects = np.zeros(n_ch)
        if p <= 0:
            return effects, p
        for c in range(n_ch):
            keep = ~self.members[:, c]
            keep[0] = True
            p_c, _ = self._p_conversion(q, r, keep, warm=x_all)
            effects[c] = 1.0 - p_c / p
        return np.clip(effects, 0.0, None), p

    def removal_effect_of(self, removed: np.ndarray, conv: np.ndarray, nulls: np.ndarray) -> float:
        """Removal effect of making the states flagged in ``removed`` lead to null."""
        q, r = self._matrices(conv, nulls)
        q = q.toarray() if self.n_states <= _DENSE_STATES else q.tocsr()
        p, x_all = self._p_conversion(q, r, np.ones(self.n_states, dtype=bool))
        keep = ~removed
        keep[0] = True
        p_removed, _ = self._p_conversion(q, r, keep, warm=x_all)
        return 1.0 - p_removed / p if p > 0 else 0.0

    def state_names(self) -> list[tuple[str, ...]]:
        names: list[tuple[str, ...]] = [()]
        for k in self.keys:
            digits = []
            for _ in range(self.order):
                digits.append(int(k % self.base))
                k //= self.base
            # digits come out oldest channel first, which is reading order
            names.append(tuple(str(self.paths.channels[d - 1]) for d in digits if d > 0))
        return names

    def transitions(self) -> pd.DataFrame:
        """The fitted chain's tidy transition table (computed once)."""
        if not hasattr(self, "_tidy"):
            self._tidy = self.tidy(self.paths.conversions, self.paths.nulls)
        return self._tidy

    def tidy(self, conv: np.ndarray, nulls: np.ndarray) -> pd.DataFrame:
        q, r = self._matrices(conv, nulls)
        names = ["(start)"] + [" > ".join(s) for s in self.state_names()[1:]]
        coo = q.tocoo()
        rows = [pd.DataFrame({"from": np.array(names, dtype=object)[coo.row],
                              "to": np.array(names, dtype=object)[coo.col], "probability": coo.data})]
        total_out = np.asarray(sp.csr_matrix(q).sum(axis=1)).ravel() + r
        null = 1.0 - total_out
        for target, prob in (("(conversion)", r), ("(null)", np.where(total_out > 0, null, 0.0))):
            nz = np.flatnonzero(prob > 1e-15)
            rows.append(pd.DataFrame({"from": np.array(names, dtype=object)[nz], "to": target,
                                      "probability": prob[nz]}))
        return pd.concat(rows, ignore_index=True).sort_values(["from", "to"], kind="stable").reset_index(
            drop=True)

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
from typing import TYPE_CHECKING, Any

import numpy as np

from closedloop_nb.attribution.base import AttributionModel, NotFittedError
from closedloop_nb.path_table import PathTable

if TYPE_CHECKING:  # pandas makes the tidy outputs, SciPy the matrices of large chains: both on first use
    import pandas as pd

__all__ = ["MarkovChain"]

#: Chains with at most this many states are numpy arrays solved by LU (faster when small, and no
#: SciPy to import); larger ones are SciPy sparse matrices solved by iteration.
_DENSE_STATES = 800
#: Up to this many possible transitions (``(n_channels + 1) ** (order + 1)``: orders 1-3 over a few
#: dozen channels) states and transitions are numbered by their keys in one pass over blocks of paths;
#: beyond, through arrays over every touch.
_KEYED_EDGES = 4_000_000
#: Past that, up to this many possible keys (states, and transitions: states x channels) they are
#: numbered by direct indexing; beyond, by sorting the keys seen.
_DIRECT_EDGES = 4_000_000
#: Touches per block when the transitions are counted block by block (:meth:`_Chain._blocks`).
_BLOCK = 1 << 16


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
        # the chain is numbered and weighted by the table's journeys in one pass over the touches
        chain = _Chain(paths, self.order, _journeys(paths))
        return self._credit_on(chain, paths, tuple(chain.built_weights))

    def _for_counts(self, paths: PathTable) -> Callable[[PathTable], tuple[np.ndarray, np.ndarray]]:
        # the chain's states and transitions are built once; replicates only reweight them
        chain = _Chain(paths, self.order)
        chain.index_by_path()
        return lambda table: self._credit_on(chain, table)

    def _for_draws(self, paths: PathTable) -> Callable[[np.ndarray, np.ndarray, np.ndarray],
                                                       tuple[np.ndarray, np.ndarray]]:
        # many tables at once: the transition counts of all of them are two sparse products (the
        # conversion and the value chains), then each table's chain is solved as a fit solves it
        chain = _Chain(paths, self.order)
        chain.index_by_path()

        def credit(conv: np.ndarray, value: np.ndarray, nulls: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            mean = np.array([_mean_value(c, v) for c, v in zip(conv, value, strict=True)])
            w_conv = chain.transition_counts(conv + nulls)
            w_value = chain.transition_counts(value + nulls * mean[:, None])
            out = [self._credit_on(chain, PathTable(paths.channels, paths.codes, paths.offsets, c, v, k),
                                   (w_conv[:, i], w_value[:, i]))
                   for i, (c, v, k) in enumerate(zip(conv, value, nulls, strict=True))]
            return np.array([o[0] for o in out]), np.array([o[1] for o in out])

        return credit

    def _credit_on(self, chain: _Chain, paths: PathTable,
                   counts: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Credits on ``chain`` weighted by ``paths``' counts (``counts``: the transition counts of
        the conversion and value chains, when known)."""
        n = len(paths.channels)
        mean_value = _mean_value(paths.conversions, paths.value)
        w_conv, w_value = counts if counts is not None else chain.weights(*_journeys(paths))
        re_conv, p_conv = chain.removal_effects(paths.conversions, paths.nulls, w_conv)
        re_val, _ = chain.removal_effects(paths.value, paths.nulls * mean_value, w_value)
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
        import pandas as pd

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
        import pandas as pd

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


def _mean_value(conv: np.ndarray, value: np.ndarray) -> float:
    """Mean value of a conversion (0 without conversions): what a null journey counts on the value chain."""
    return value.sum() / conv.sum() if conv.sum() else 0.0


def _journeys(paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
    """Journeys per path on the conversion chain and on the value-weighted chain (each transition
    of a path counts them)."""
    return paths.conversions + paths.nulls, paths.value + paths.nulls * _mean_value(paths.conversions,
                                                                                     paths.value)


def _paired(journeys: tuple[np.ndarray, ...]) -> list[np.ndarray]:
    """Arrays of journeys two by two as the real and imaginary parts of complex arrays (the last
    one alone if their number is odd): adding complex numbers adds their parts separately, each
    exactly as adding it alone would, so two weightings are added up in one pass (see
    :func:`_unpaired`)."""
    out = []
    for i in range(0, len(journeys), 2):
        if i + 1 == len(journeys):
            out.append(np.asarray(journeys[i], dtype=float))
        else:
            both = np.empty(len(journeys[i]), dtype=complex)
            both.real, both.imag = journeys[i], journeys[i + 1]
            out.append(both)
    return out


def _unpaired(sums: list[np.ndarray]) -> list[np.ndarray]:
    """The sums of :func:`_paired` arrays as one float array per array of journeys."""
    out = []
    for s in sums:
        out.extend([np.ascontiguousarray(s.real), np.ascontiguousarray(s.imag)] if s.dtype.kind == "c"
                   else [s])
    return out


def _split(total: float, effects: np.ndarray, n: int) -> np.ndarray:
    s = effects.sum()
    return total * effects / s if s > 0 else np.full(n, total / n)


def _fixed_points(q: Any, r: np.ndarray, keep: np.ndarray, warm: np.ndarray,
                  tol: float = 1e-15, max_iter: int = 100_000) -> np.ndarray:
    """Solve x = keep * (Q x + r) for every column of ``keep`` (one removal each) by iteration
    started at ``warm``: every journey ends, so it converges geometrically.

    The columns are iterated together (one pass over the sparse Q per step for all of them, rather
    than one per removal), and each stops as soon as it has converged, so it gets the iterates a
    solve of its own would get. A column that has not converged after ``max_iter`` steps falls back
    to a sparse LU solve.

    Parameters
    ----------
    q
        The transient transition probabilities (SciPy CSR).
    r
        Probability of converting next, per state.
    keep
        States x removals: False where the removal makes a state lead to null.
    warm
        Starting point (the solution without removals, say).

    Returns
    -------
    numpy.ndarray
        States x removals: P(conversion) from every state (0 for the removed ones).
    """
    k = keep.astype(float)
    x = k * warm[:, None]
    rk = k * r[:, None]
    out = np.zeros(keep.shape)
    active = np.arange(keep.shape[1])
    for _ in range(max_iter):
        nxt = k * (q @ x) + rk
        done = np.max(np.abs(nxt - x), axis=0) <= tol
        if done.any():
            out[:, active[done]] = nxt[:, done]
            active, k, rk, nxt = active[~done], k[:, ~done], rk[:, ~done], nxt[:, ~done]
            if not len(active):
                return out
        x = nxt
    import scipy.sparse as sp  # pragma: no cover - a chain whose journeys (almost) never end
    from scipy.sparse.linalg import splu

    for c in active:  # pragma: no cover
        idx = np.flatnonzero(keep[:, c])
        out[idx, c] = splu((sp.identity(len(idx), format="csc") - q[idx][:, idx]).tocsc()).solve(r[idx])
    return out


def _row_sums(values: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """Sum of ``values`` per row (``rows`` sorted), added up in the order given, as SciPy adds up a
    CSR matrix's rows (so that dense and sparse chains give the same probabilities to the last bit)."""
    out = np.zeros(n)
    if len(rows):
        first = np.flatnonzero(np.concatenate([[True], rows[1:] != rows[:-1]]))
        out[rows[first]] = np.add.reduceat(values, first)
    return out


class _Chain:
    """The transitions of a path table as an absorbing chain over order-k states.

    Chains of at most ``_DENSE_STATES`` states (orders 1 and 2 over a few dozen channels) are
    numpy arrays throughout; larger ones are SciPy sparse matrices, imported only then.
    """

    def __init__(self, paths: PathTable, order: int, journeys: tuple[np.ndarray, ...] = ()):
        self.paths = paths
        self.order = order
        self._by_path: Any = None
        self.base = len(paths.channels) + 1
        if self.base ** (order + 1) <= _KEYED_EDGES:
            self.built_weights = self._number_by_keys(journeys)
        else:
            self._number_by_touches()
            self.built_weights = self.weights(*journeys)
        self.dense_edges = self.n_states <= _DENSE_STATES

    def _blocks(self):
        """The touches in blocks of whole paths (about ``_BLOCK`` touches each): per block its first
        and last path + 1, the paths' lengths, the state key of each touch (the last ``order``
        channels, fewer at the start of a path, as an int in base n_channels + 1, the newest channel
        the highest digit) and the key of the transition into it, ``key of the state left * base +
        key of the channel`` (the start state's key is 0, a channel's key its code + 1): all below
        ``base ** (order + 1)``.

        Blocks keep the per-touch arrays small (in cache, memory reused from block to block rather
        than taken from the operating system page by page for arrays of every touch)."""
        p = self.paths
        offsets, codes = p.offsets, p.codes
        base, order = self.base, self.order
        first = np.searchsorted(offsets, np.arange(0, offsets[-1], _BLOCK), side="right") - 1
        cuts = first[np.concatenate([[True], first[1:] != first[:-1]])].tolist()  # np.unique imports numpy.ma
        for p0, p1 in zip(cuts, [*cuts[1:], p.n_paths], strict=True):
            t0, t1 = int(offsets[p0]), int(offsets[p1])
            c = codes[t0:t1]
            starts = offsets[p0:p1] - t0
            lens = np.diff(offsets[p0:p1 + 1])
            channel = c.astype(np.intp)
            channel += 1
            key = channel
            if order > 1:
                key = channel.copy()
                prev = np.empty_like(key)
                for lag in range(1, order):
                    prev[:lag] = 0
                    np.add(c[:-lag], 1, out=prev[lag:], casting="unsafe")
                    for j in range(lag):  # the first `lag` touches of a path have no channel `lag` back
                        prev[starts[lens > j] + j] = 0
                    key *= base
                    key += prev  # the newest channel stays the highest digit
            edge = np.empty_like(key)
            edge[0] = 0
            np.multiply(key[:-1], base, out=edge[1:])
            edge[starts] = 0
            edge += channel
            yield p0, p1, lens, key, edge

    def _number_by_keys(self, journeys: tuple[np.ndarray, ...]) -> list[np.ndarray]:
        """States and transitions numbered from one pass over the touches, transitions by their key
        (a small key space: every possible transition has an array slot), and the journeys through
        each transition for each of ``journeys`` (see :meth:`weights`), counted in the same pass."""
        p = self.paths
        base, order = self.base, self.order
        n_edges = base ** (order + 1) + 1  # the last slot is no touch's (the spare, n_edges - 1)
        # every path has journeys (the usual table): the transitions seen are those with journeys
        weighed = len(journeys) > 0 and bool((journeys[0] > 0).all())
        seen = None if weighed else np.zeros(n_edges, dtype=bool)
        last_key = np.empty(p.n_paths, dtype=np.intp)
        ends = p.offsets[1:] - 1
        paired = _paired(journeys)
        out = [np.zeros(n_edges, dtype=j.dtype) for j in paired]
        for p0, p1, lens, key, edge in self._blocks():
            if seen is not None:
                seen[edge] = True
            last_key[p0:p1] = key[ends[p0:p1] - p.offsets[p0]]
            for w, j in zip(out, paired, strict=True):
                np.add.at(w, edge, np.repeat(j[p0:p1], lens))  # in touch order, as bincount adds
        sums = _unpaired(out)
        self._set_numbering(np.flatnonzero(sums[0] > 0 if seen is None else seen), last_key)
        return sums

    def _set_numbering(self, ids: np.ndarray, last_key: np.ndarray) -> None:
        """States and transitions from the keys of the transitions seen (``ids``, sorted) and the
        key of the state each path ends in."""
        base, order = self.base, self.order
        left, channel = np.divmod(ids, base)
        # the state a transition enters: the one it leaves with the channel added as the newest
        # (highest) digit and the oldest dropped; every touch's state is entered by its transition
        entered = channel * base ** (order - 1) + left // base
        seen = np.zeros(base**order, dtype=bool)
        seen[entered] = True
        # number the distinct states in key order, so state numbers are deterministic
        lookup = np.cumsum(seen, dtype=np.intp)  # key -> 1-based state number (0 = start, key 0)
        self._set_states(np.flatnonzero(seen))
        self.last = lookup[last_key]
        if order == 1:  # a repeat (A > A) is a self-transition, which changes no absorption probability
            other = left != channel
            ids, left, entered = ids[other], left[other], entered[other]
        frm, to = lookup[left], lookup[entered]
        by_from_to = np.lexsort((to, frm))
        #: the transitions in use, ordered by (from, to): their ids, the states they leave and enter
        self.edge_ids, self.edge_from, self.edge_to = ids[by_from_to], frm[by_from_to], to[by_from_to]
        self.n_edges = base ** (order + 1) + 1
        self.edge = None  # per touch: made from the blocks when needed (touch_edges)

    def _set_states(self, uniq: np.ndarray) -> None:
        """The states' keys, their number and which channels each contains (digits of the key)."""
        self.keys = uniq
        self.n_states = n = len(uniq) + 1
        members = np.zeros((n, self.base - 1), dtype=bool)
        digits = np.asarray(uniq, dtype=np.int64).copy()
        for _ in range(self.order):
            d = digits % self.base
            has = d > 0
            members[np.flatnonzero(has) + 1, d[has] - 1] = True
            digits //= self.base
        self.members = members

    def _number_by_touches(self) -> None:
        """States and transitions of a large key space, numbered through arrays over every touch."""
        paths, order, base = self.paths, self.order, self.base
        n_touch = len(paths.codes)
        # state of each touch: its key, as in _blocks
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
            uniq, inverse = np.unique(key, return_inverse=True)
            self.state = inverse.astype(np.intp) + 1
        del key
        self._set_states(uniq)
        n = self.n_states
        self.last = self.state[paths.offsets[1:] - 1]
        # The transition into each touch, from the state before it (the start state for a path's
        # first touch). The state it goes to is the one it leaves with the touch's channel added, so
        # (state left, channel) numbers the transitions: n_states x base ids, an array index.
        edge = np.empty(n_touch, dtype=np.intp)
        edge[0] = 0
        edge[1:] = self.state[:-1]
        edge[starts] = 0
        if order == 1:  # a repeat (A > A) is a self-transition, which changes no absorption probability
            repeat = edge == self.state
        edge *= base
        edge += paths.codes
        edge += 1
        n_keys = n * base
        if order == 1:
            edge[repeat] = n_keys  # a spare id, dropped
        if n_keys + 1 <= _DIRECT_EDGES:  # the id is the key; the spare is the last one
            self.edge = edge
            ids = np.flatnonzero(np.bincount(edge, minlength=n_keys + 1)[:n_keys])
            keys = ids
            self.n_edges = n_keys + 1
        else:  # too many possible transitions for an array: number the ones seen, in key order
            keys, inverse = np.unique(edge, return_inverse=True)
            self.edge = inverse.astype(np.intp)
            if keys[-1] == n_keys:  # the spare is seen: keep it last
                keys = keys[:-1]
            ids = np.arange(len(keys), dtype=np.intp)
            self.n_edges = len(keys) + 1
        to = np.zeros(self.n_edges, dtype=np.intp)
        to[self.edge] = self.state  # every touch with one id goes to the same state
        by_from_to = np.lexsort((to[ids], keys // base))
        #: the transitions in use, ordered by (from, to): their ids, the states they leave and enter
        self.edge_ids = ids[by_from_to]
        self.edge_from = (keys // base)[by_from_to]
        self.edge_to = to[self.edge_ids]
        del self.state

    def touch_edges(self) -> np.ndarray:
        """The transition id of every touch (the spare id, ``n_edges - 1``, for dropped ones)."""
        if self.edge is None:
            return np.concatenate([edge for *_, edge in self._blocks()])  # none is the spare
        return self.edge

    def weights(self, *journeys: np.ndarray) -> list[np.ndarray]:
        """Journeys through each transition (by id) for each array of journeys per path: every
        touch adds its path's journeys to its transition, in touch order (as ``np.bincount``
        would)."""
        if self._by_path is not None:
            return [self._by_path @ j for j in journeys]
        if self.edge is not None:
            lengths = self.paths.lengths
            return [np.bincount(self.edge, weights=np.repeat(j, lengths), minlength=self.n_edges)
                    for j in journeys]
        paired = _paired(journeys)
        out = [np.zeros(self.n_edges, dtype=j.dtype) for j in paired]
        for p0, p1, lens, _, edge in self._blocks():
            for w, j in zip(out, paired, strict=True):
                np.add.at(w, edge, np.repeat(j[p0:p1], lens))  # in touch order, as bincount adds
        return _unpaired(out)

    def index_by_path(self) -> None:
        """Count each path's transitions once (a sparse edges x paths matrix), so that weighting the
        chain by other counts of the same journeys is one sparse product (bootstrap replicates)."""
        import scipy.sparse as sp

        p = self.paths
        edge = self.touch_edges()
        real = edge < self.n_edges - 1  # the spare id (repeats at order 1) is out
        self._by_path = sp.csc_matrix((np.ones(int(real.sum())), (edge[real], p.path_index[real])),
                                      shape=(self.n_edges, p.n_paths))

    def transition_counts(self, journeys: np.ndarray) -> np.ndarray:
        """Journeys through each transition (transition ids x tables) of tables of journeys per path
        (tables x paths): one sparse product after :meth:`index_by_path`, each column the sums
        :meth:`_matrices` makes of one table."""
        return self._by_path @ np.ascontiguousarray(np.atleast_2d(journeys).T)

    def _matrices(self, conv: np.ndarray, nulls: np.ndarray,
                  w: np.ndarray | None = None) -> tuple[Any, np.ndarray]:
        """Q (transient -> transient probabilities: a dense array for small chains, SciPy CSR for
        larger ones) and r (probability of converting next); ``w``: the journeys through each
        transition, when known (:meth:`transition_counts`)."""
        if w is None:
            (w,) = self.weights(conv + nulls)
        w = w[self.edge_ids]  # per transition, ordered by (from, to)
        used = w != 0
        w, frm, to = w[used], self.edge_from[used], self.edge_to[used]
        n = self.n_states
        to_conv = np.bincount(self.last, weights=conv, minlength=n)
        to_null = np.bincount(self.last, weights=nulls, minlength=n)
        out = _row_sums(w, frm, n) + to_conv + to_null
        inv = np.divide(1.0, out, out=np.zeros_like(out), where=out > 0)
        prob = inv[frm] * w
        if self.dense_edges:
            q = np.zeros((n, n))
            q[frm, to] = prob
        else:
            import scipy.sparse as sp

            indptr = np.concatenate([[0], np.cumsum(np.bincount(frm, minlength=n))])
            q = sp.csr_matrix((prob, to, indptr), shape=(n, n))
            q.has_sorted_indices = True
        return q, to_conv * inv

    def _solve(self, q: Any, r: np.ndarray, keep: np.ndarray, warm: np.ndarray | None = None) -> np.ndarray:
        """P(conversion) from every state with the states outside ``keep`` made null, for each column
        of ``keep`` (states x removals); 0 for removed states."""
        if isinstance(q, np.ndarray):
            x = np.zeros(keep.shape)
            for c in range(keep.shape[1]):
                idx = np.flatnonzero(keep[:, c])
                x[idx, c] = np.linalg.solve(np.eye(len(idx)) - q[np.ix_(idx, idx)], r[idx])
            return x
        return _fixed_points(q, r, keep, r if warm is None else warm)

    def removal_effects(self, conv: np.ndarray, nulls: np.ndarray,
                        w: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        q, r = self._matrices(conv, nulls, w)
        x_all = self._solve(q, r, np.ones((self.n_states, 1), dtype=bool))[:, 0]
        p = float(x_all[0])
        n_ch = self.members.shape[1]
        if p <= 0:
            return np.zeros(n_ch), p
        keep = ~self.members
        keep[0] = True
        effects = 1.0 - self._solve(q, r, keep, warm=x_all)[0] / p
        return np.clip(effects, 0.0, None), p

    def removal_effect_of(self, removed: np.ndarray, conv: np.ndarray, nulls: np.ndarray) -> float:
        """Removal effect of making the states flagged in ``removed`` lead to null."""
        q, r = self._matrices(conv, nulls)
        x_all = self._solve(q, r, np.ones((self.n_states, 1), dtype=bool))[:, 0]
        p = float(x_all[0])
        keep = ~removed
        keep[0] = True
        p_removed = float(self._solve(q, r, keep[:, None], warm=x_all)[0, 0])
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
        import pandas as pd

        q, r = self._matrices(conv, nulls)
        names = ["(start)"] + [" > ".join(s) for s in self.state_names()[1:]]
        if isinstance(q, np.ndarray):
            row, col = np.nonzero(q)
            data = q[row, col]
        else:
            coo = q.tocoo()
            row, col, data = coo.row, coo.col, coo.data
        rows = [pd.DataFrame({"from": np.array(names, dtype=object)[row],
                              "to": np.array(names, dtype=object)[col], "probability": data})]
        total_out = _row_sums(data, row, self.n_states) + r
        null = 1.0 - total_out
        for target, prob in (("(conversion)", r), ("(null)", np.where(total_out > 0, null, 0.0))):
            nz = np.flatnonzero(prob > 1e-15)
            rows.append(pd.DataFrame({"from": np.array(names, dtype=object)[nz], "to": target,
                                      "probability": prob[nz]}))
        return pd.concat(rows, ignore_index=True).sort_values(["from", "to"], kind="stable").reset_index(
            drop=True)

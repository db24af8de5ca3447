"""Exact Shapley values of conversion games given in closed form.

A game here is each row's expected-conversion function of the subsets ``T`` of its players (channels),
``f_i(T) = link^-1(eta_i + sum_{c in T} w_ic + sum_{pairs in T} delta_cd)``: the synthetic generator's
truth (:mod:`closedloop_nb.synth`) and a fitted logistic value function
(:class:`~closedloop_nb.attribution.adjusted.AdjustedShapley`) both have that form, so both are solved
here, exactly, by evaluating every subset of each row's players.
"""

from __future__ import annotations

import numpy as np

__all__ = ["exact_shapley"]


def exact_shapley(eta: np.ndarray, w: np.ndarray, present: np.ndarray, delta: np.ndarray | None = None,
                  link: str = "logit") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact Shapley values of ``f_i(T) = link^-1(eta_i + sum_{c in T} w_ic + sum_{pairs in T} delta)``.

    For each row ``i`` the players are the columns where ``present`` is true; every subset of them is
    evaluated (visitors with the same terms are solved once), so this is exact, and practical up to
    about 16 players per row.

    Parameters
    ----------
    eta
        Baseline term per row (``f_i(empty) = link^-1(eta_i)``).
    w
        Term of each player per row (rows x players).
    present
        Which players each row has (rows x players, bool).
    delta
        Symmetric pair terms (players x players), added when both are in the subset.
    link
        ``"logit"`` (``f`` is ``expit`` of the sum) or ``"identity"``.

    Returns
    -------
    credit, lift, baseline, full
        Shapley value of each row's players in the game ``f_i(T) - f_i(empty)`` (rows x players, 0 for
        absent ones; each row adds up to ``f_i(S_i) - f_i(empty)``), incremental lift ``f_i(S_i) -
        f_i(S_i without c)``, ``f_i(empty)`` and ``f_i(S_i)``.

    Examples
    --------
    Two players, additive on the identity scale: each gets its own term.

    >>> c, lift, b, f = exact_shapley(np.array([0.1]), np.array([[0.2, 0.3]]), np.array([[True, True]]),
    ...                               link="identity")
    >>> c.round(6).tolist(), f.round(6).tolist()
    ([[0.2, 0.3]], [0.6])
    """
    if link not in ("logit", "identity"):
        raise ValueError(f"link must be 'logit' or 'identity', got {link!r}")
    eta = np.asarray(eta, float)
    present = np.asarray(present, bool)
    w = np.where(present, np.asarray(w, float), 0.0)
    n, m = w.shape
    delta = np.zeros((m, m)) if delta is None else np.asarray(delta, float)
    inv = (lambda x: 1.0 / (1.0 + np.exp(-x))) if link == "logit" else (lambda x: x)
    first, inverse = _unique_rows([eta, *w.T, *_packed(present)])
    u_eta, u_w, u_present = eta[first], w[first], present[first]
    credit, lift = np.zeros((len(first), m)), np.zeros((len(first), m))
    base, full = inv(u_eta), inv(u_eta)
    k_of = u_present.sum(axis=1)
    for k in np.unique(k_of[k_of > 0]):
        group = np.flatnonzero(k_of == k)
        bits = ((np.arange(1 << k)[:, None] >> np.arange(k)) & 1).astype(float)      # 2^k x k
        size = bits.sum(axis=1).astype(int)
        fact = np.array([float(np.prod(np.arange(1, j + 1))) for j in range(k + 1)])
        weight = fact[size] * fact[k - size - 1] / fact[k]                 # for T without j
        others = ((1 << k) - 1) ^ (1 << np.arange(k))                     # everyone but j
        step = max(1, (1 << 22) // (1 << k))
        for lo in range(0, len(group), step):
            g = group[lo:lo + step]
            members = np.nonzero(u_present[g])[1].reshape(len(g), k)   # len(g) x k, ascending per row
            wk = np.take_along_axis(u_w[g], members, axis=1)
            # the players' part of each subset's term depends on the row's players and their terms
            # alone: found once for rows that differ only in eta (rows of one coalition, mostly)
            same, back = _unique_rows([*members.T, *wk.T])
            f = inv(u_eta[g][:, None] + _player_terms(members[same], wk[same], delta, bits)[back])
            full[g] = f[:, -1]
            for j in range(k):
                # phi_j = sum over T without j of weight(T) (f(T + j) - f(T)), the differences taken
                # first (a player that changes nothing gets exactly 0); the subsets with and without
                # j, in order, are two strided views of f
                halves = f.reshape(len(g), -1, 2, 1 << j)
                gain = (halves[:, :, 1, :] - halves[:, :, 0, :]).reshape(len(g), -1)
                credit[g, members[:, j]] = gain @ weight.reshape(-1, 2, 1 << j)[:, 0, :].ravel()
            lift[g[:, None], members] = f[:, -1:] - f[:, others]
    return credit[inverse], lift[inverse], base[inverse], full[inverse]


def _player_terms(members: np.ndarray, wk: np.ndarray, delta: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """``sum_{c in T} w_c + sum_{pairs in T} delta`` of every subset ``T`` (rows of ``bits``) of each
    row's players (``members``, with terms ``wk``): rows x subsets."""
    bits_t = np.ascontiguousarray(bits.T)  # players x subsets: contiguous, so products go to BLAS
    x = wk @ bits_t
    for a in range(bits.shape[1] - 1):  # the pairs (a, b > a): one product per a
        d = delta[members[:, a:a + 1], members[:, a + 1:]]                    # rows x (k - a - 1)
        if d.any():
            x += (d @ bits_t[a + 1:]) * bits_t[a]
    return x


def _packed(present: np.ndarray) -> list[np.ndarray]:
    """The rows of a boolean matrix as integers (62 columns to an integer), for sorting."""
    weights = np.int64(1) << np.arange(min(present.shape[1], 62), dtype=np.int64)
    return [present[:, lo:lo + 62] @ weights[:present[:, lo:lo + 62].shape[1]]
            for lo in range(0, present.shape[1], 62)]


def _unique_rows(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The first row of each distinct combination of ``columns``' values (rows with the same value in
    every column) and each row's combination number: a sort of the columns, cheaper than
    ``np.unique(axis=0)``'s sort of the rows as bytes."""
    n = len(columns[0]) if columns else 0
    if not n:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    order = np.lexsort(columns[::-1])
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for col in columns:
        ordered = col[order]
        new[1:] |= ordered[1:] != ordered[:-1]
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    return order[new], inverse

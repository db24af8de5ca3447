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
    key = np.hstack([eta[:, None], w, present])
    rows, inverse = np.unique(key, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).ravel()
    u_eta, u_w, u_present = rows[:, 0], rows[:, 1:m + 1], rows[:, m + 1:].astype(bool)
    credit, lift = np.zeros((len(rows), m)), np.zeros((len(rows), m))
    base, full = inv(u_eta), inv(u_eta)
    k_of = u_present.sum(axis=1)
    for k in np.unique(k_of[k_of > 0]):
        group = np.flatnonzero(k_of == k)
        bits = ((np.arange(1 << k)[:, None] >> np.arange(k)) & 1).astype(float)      # 2^k x k
        size = bits.sum(axis=1).astype(int)
        fact = np.array([float(np.prod(np.arange(1, j + 1))) for j in range(k + 1)])
        weight = fact[size] * fact[k - size - 1] / fact[k]                 # for T without j
        step = max(1, (1 << 22) // (1 << k))
        for lo in range(0, len(group), step):
            g = group[lo:lo + step]
            members = np.nonzero(u_present[g])[1].reshape(len(g), k)   # len(g) x k, ascending per row
            wk = np.take_along_axis(u_w[g], members, axis=1)
            x = u_eta[g][:, None] + wk @ bits.T                                       # len(g) x 2^k
            for a in range(k):
                for b in range(a + 1, k):
                    d = delta[members[:, a], members[:, b]]
                    if d.any():
                        x += d[:, None] * (bits[:, a] * bits[:, b])[None, :]
            f = inv(x)
            everyone = (1 << k) - 1
            full[g] = f[:, everyone]
            for j in range(k):
                without = np.flatnonzero(bits[:, j] == 0)
                phi = (f[:, without | (1 << j)] - f[:, without]) @ weight[without]
                credit[g, members[:, j]] = phi
                lift[g, members[:, j]] = f[:, everyone] - f[:, everyone ^ (1 << j)]
    return credit[inverse], lift[inverse], base[inverse], full[inverse]

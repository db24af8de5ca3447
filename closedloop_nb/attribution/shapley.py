"""Shapley-value attribution, labelled for what each variant computes.

:class:`SimplifiedShapley` is Zhao et al.'s (2018) "simplified Shapley value": each converting
journey's conversions are split equally over the unique channels in it. It is the exact Shapley value
of the game ``v(S) = conversions of journeys whose channels are a subset of S``, and no more: it
ignores journeys that did not convert.

:class:`ShapleyValue` is the Shapley value with the *conversion rate* of each observed channel
coalition as the value function (Dalessandro et al. 2012; Zhao et al. 2018): ``v(S)`` is the share
of journeys that saw exactly the channels ``S`` and converted (0 for coalitions nobody saw). Each
coalition's conversions are split among its channels in proportion to their Shapley values in the
game restricted to its subsets. It is computed exactly with subset-sum (Möbius) transforms over
bitmasks, O(n 2^n) for n channels, which is practical up to about 20-24 channels. Shapley values of
a non-monotone game can be negative; they are reported as they are. Per conversion, a journey is
split by the Shapley values of the game restricted to its own coalition (that is how the totals are
built), so per-deal credit reproduces the channel totals exactly, negative parts included.

Zhao et al.'s *ordered* Shapley value (credit by channel and touch position) is
``SimplifiedShapley().fit(paths).position_credits()``: the simplified value of each journey split
over the positions where each channel occurs.

Examples
--------
>>> import pandas as pd
>>> paths = pd.DataFrame({"path": ["A > B", "A"], "total_conversions": [2, 1],
...                       "total_null": [0, 1]})
>>> SimplifiedShapley().fit(paths).credits_.conversions.tolist()
[2.0, 1.0]
"""

from __future__ import annotations

import numpy as np

from closedloop_nb.attribution.base import AttributionModel
from closedloop_nb.attribution.paths import PathTable

__all__ = ["ShapleyValue", "SimplifiedShapley", "coalitions", "mobius", "subset_sum", "superset_sum"]


def coalitions(paths: PathTable) -> np.ndarray:
    """Bitmask of the unique channels of every path (bit ``i`` set if channel ``i`` is in it)."""
    if len(paths.channels) > 62:
        raise ValueError(f"{len(paths.channels)} channels: bitmask coalitions hold at most 62")
    bits = np.left_shift(np.int64(1), paths.codes.astype(np.int64))
    mask = np.zeros(paths.n_paths, dtype=np.int64)
    np.bitwise_or.at(mask, paths.path_index, bits)
    return mask


def mobius(v: np.ndarray, n: int) -> np.ndarray:
    """Harsanyi dividends: ``d(S) = sum over T subset of S of (-1)^(|S|-|T|) v(T)``."""
    d = v.astype(float).copy()
    for i in range(n):
        view = d.reshape(-1, 2, 1 << i)
        view[:, 1, :] -= view[:, 0, :]
    return d


def subset_sum(w: np.ndarray, n: int) -> np.ndarray:
    """``Z(S) = sum over T subset of S of w(T)`` (the zeta transform)."""
    out = w.astype(float).copy()
    for i in range(n):
        view = out.reshape(-1, 2, 1 << i)
        view[:, 1, :] += view[:, 0, :]
    return out


def superset_sum(w: np.ndarray, n: int) -> np.ndarray:
    """``W(T) = sum over S superset of T of w(S)``."""
    out = w.astype(float).copy()
    for i in range(n):
        view = out.reshape(-1, 2, 1 << i)
        view[:, 0, :] += view[:, 1, :]
    return out


def _popcount(n: int) -> np.ndarray:
    size = np.zeros(1 << n, dtype=np.int64)
    for i in range(n):
        size.reshape(-1, 2, 1 << i)[:, 1, :] += 1
    return size


class SimplifiedShapley(AttributionModel):
    """Zhao et al.'s simplified Shapley value: equal credit over the unique channels of each
    converting journey (see the module docstring for what that does and does not measure)."""

    name = "simplified_shapley"

    def _touch_weights(self, paths: PathTable) -> np.ndarray:
        # each unique channel of a path gets 1 / (unique channels), shared by its repeats
        key = paths.path_index.astype(np.int64) * (len(paths.channels) + 1) + paths.codes
        _, first, inverse, repeats = np.unique(key, return_index=True, return_inverse=True,
                                               return_counts=True)
        n_unique = np.bincount(paths.path_index[first], minlength=paths.n_paths)
        return 1.0 / (n_unique[paths.path_index] * repeats[inverse])


class ShapleyValue(AttributionModel):
    """Exact Shapley value with each observed coalition's conversion rate as value function.

    Parameters
    ----------
    max_channels
        Up to this many channels, the transforms run over all 2^n coalitions (time and memory
        O(n 2^n)). Beyond it, each converting coalition's game is solved on its own subsets
        (O(k 2^k) for a coalition of k channels), which is exact too and needs only that journeys
        see few distinct channels.
    max_coalition
        Refuse journeys with more distinct channels than this in that second mode.

    Attributes
    ----------
    coalition_rates_
        ``{frozenset of channels: conversion rate}`` of every observed coalition.
    coalition_splits_
        ``(channels, coalition bitmasks, split)``: how one conversion of each converting coalition is
        split over its channels (rows add up to 1).
    """

    name = "shapley"

    def __init__(self, max_channels: int = 22, max_coalition: int = 20):
        self.max_channels = max_channels
        self.max_coalition = max_coalition

    def _credit(self, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
        n = len(paths.channels)
        if n > self.max_channels:
            return self._credit_by_coalition(paths)
        masks = coalitions(paths)
        size = 1 << n
        conv = np.bincount(masks, weights=paths.conversions, minlength=size)
        journeys = np.bincount(masks, weights=paths.conversions + paths.nulls, minlength=size)
        value = np.bincount(masks, weights=paths.value, minlength=size)
        rate = np.divide(conv, journeys, out=np.zeros(size), where=journeys > 0)
        self.coalition_rates_ = {
            frozenset(paths.channels[i] for i in range(n) if m >> i & 1): float(rate[m])
            for m in np.flatnonzero(journeys)
        }
        dividends = mobius(rate, n)
        members = _popcount(n)
        share = np.divide(dividends, members, out=np.zeros(size), where=members > 0)
        converting = conv > 0
        # a coalition S's conversions are split by its restricted Shapley values phi_S / v(S);
        # conv(S) / v(S) = journeys(S), so only supersets' journeys (or value / rate) are needed
        w_conv = superset_sum(np.where(converting, journeys, 0.0), n)
        w_value = superset_sum(np.divide(value, rate, out=np.zeros(size), where=converting), n)
        out_conv, out_value = np.zeros(n), np.zeros(n)
        index = np.arange(size)
        for j in range(n):
            has = (index >> j & 1).astype(bool)
            out_conv[j] = np.dot(share[has], w_conv[has])
            out_value[j] = np.dot(share[has], w_value[has])
        self._keep_splits(share, rate, np.flatnonzero(converting), n, paths.channels)
        return out_conv, out_value

    def _credit_by_coalition(self, paths: PathTable) -> tuple[np.ndarray, np.ndarray]:
        """The same Shapley values, one converting coalition at a time over its own subsets."""
        n = len(paths.channels)
        masks = coalitions(paths)
        observed, inverse = np.unique(masks, return_inverse=True)
        conv = np.bincount(inverse, weights=paths.conversions)
        journeys = np.bincount(inverse, weights=paths.conversions + paths.nulls)
        value = np.bincount(inverse, weights=paths.value)
        rate = np.divide(conv, journeys, out=np.zeros(len(observed)), where=journeys > 0)
        self.coalition_rates_ = {
            frozenset(paths.channels[i] for i in range(n) if int(m) >> i & 1): float(r)
            for m, r, j in zip(observed, rate, journeys, strict=True) if j > 0}
        converting = np.flatnonzero(conv > 0)
        sizes = np.array([bin(int(m)).count("1") for m in observed[converting]], dtype=int)
        if len(sizes) and sizes.max() > self.max_coalition:
            raise ValueError(
                f"a converting journey saw {sizes.max()} distinct channels: its game has 2^{sizes.max()} "
                f"coalitions. Group rare channels, raise max_coalition, or use SimplifiedShapley.")
        split = np.zeros((len(converting), n))
        for k in np.unique(sizes):
            rows = converting[sizes == k]
            members = np.array([[i for i in range(n) if int(m) >> i & 1] for m in observed[rows]])
            local = np.arange(1 << k)
            bits = (local[:, None] >> np.arange(k)) & 1                     # 2^k x k
            global_masks = (bits[None, :, :] * (np.int64(1) << members[:, None, :])).sum(axis=2)
            pos = np.minimum(np.searchsorted(observed, global_masks), len(observed) - 1)
            v = np.where(observed[pos] == global_masks, rate[pos], 0.0)   # coalitions x 2^k
            d = v.copy()
            for i in range(k):                                             # Moebius along the subsets
                view = d.reshape(len(rows), -1, 2, 1 << i)
                view[:, :, 1, :] -= view[:, :, 0, :]
            share = d / np.maximum(bits.sum(axis=1), 1)
            phi = share @ bits                                              # coalitions x k
            split[np.searchsorted(converting, rows)[:, None], members] = phi / rate[rows][:, None]
        out_conv = np.zeros(n)
        out_value = np.zeros(n)
        np.add.at(out_conv, np.nonzero(split)[1], (split * conv[converting][:, None])[np.nonzero(split)])
        np.add.at(out_value, np.nonzero(split)[1], (split * value[converting][:, None])[np.nonzero(split)])
        self.coalition_splits_ = (paths.channels, observed[converting], split)
        return out_conv, out_value

    def _keep_splits(self, share: np.ndarray, rate: np.ndarray, converting: np.ndarray, n: int,
                     channels: tuple[str, ...]) -> None:
        """Each converting coalition's split of one conversion over its channels: the restricted
        Shapley value phi_S(j) = Z(S) - Z(S without j), Z the subset sum of the dividend shares,
        over v(S) (efficiency: the split adds up to 1)."""
        z = subset_sum(share, n)
        split = np.zeros((len(converting), n))
        for j in range(n):
            inside = (converting >> j & 1).astype(bool)
            split[inside, j] = z[converting[inside]] - z[converting[inside] ^ (1 << j)]
        self.coalition_splits_ = (channels, converting, split / rate[converting][:, None])

    def _touch_weights(self, paths: PathTable) -> np.ndarray:
        """Exact per-conversion split: a journey's conversion goes to its channels by the Shapley
        values of the game restricted to its coalition (repeats of a channel share its part).
        Coalitions that never converted in the fitted data are split equally (simplified Shapley)."""
        channels, masks, split = self.coalition_splits_
        if paths.channels != channels:
            return super()._touch_weights(paths)
        m = coalitions(paths)
        pos = np.searchsorted(masks, m)
        pos = np.minimum(pos, len(masks) - 1) if len(masks) else pos
        known = (len(masks) > 0) & (masks[pos] == m) if len(masks) else np.zeros(len(m), bool)
        pidx = paths.path_index
        key = pidx.astype(np.int64) * (len(channels) + 1) + paths.codes
        _, first, inverse, repeats = np.unique(key, return_index=True, return_inverse=True,
                                               return_counts=True)
        n_unique = np.bincount(pidx[first], minlength=paths.n_paths)
        exact = split[pos[pidx], paths.codes] if len(masks) else np.zeros(len(pidx))
        equal = 1.0 / n_unique[pidx]
        return np.where(known[pidx], exact, equal) / repeats[inverse]

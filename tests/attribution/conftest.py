from __future__ import annotations

import numpy as np
import pytest

from closedloop_nb.attribution import PathTable


def random_paths(seed: int, n_channels: int = 5, n_paths: int = 60, max_len: int = 6) -> PathTable:
    """Random unique-ish paths with conversions, values and nulls."""
    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(n_channels)]
    seqs = [list(rng.choice(names, size=rng.integers(1, max_len + 1))) for _ in range(n_paths)]
    conv = rng.integers(0, 5, size=n_paths).astype(float)
    nulls = rng.integers(0, 20, size=n_paths).astype(float)
    value = conv * rng.uniform(50, 500, size=n_paths)
    return PathTable.from_sequences(seqs, conv, value, nulls)


@pytest.fixture
def attribution_paths() -> PathTable:
    return random_paths(0)

"""Shared fixtures: small synthetic datasets and a hashing key for the tests."""

from __future__ import annotations

import pytest

from closedloop_nb.synth import SyntheticData, generate
from closedloop_nb.validation import Dataset, validate_tables


@pytest.fixture(scope="session")
def synthetic() -> SyntheticData:
    """A small synthetic dataset (with a few unusable rows)."""
    return generate(6_000, seed=7)


@pytest.fixture(scope="session")
def sample(synthetic: SyntheticData) -> Dataset:
    """The small synthetic dataset, validated."""
    return validate_tables(synthetic.frames())


@pytest.fixture
def hash_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv("CLOSEDLOOP_HASH_KEY", "test-key")
    return b"test-key"


@pytest.fixture(autouse=True)
def _close_figures():
    """Tests that draw leave no figures open for the next ones."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")

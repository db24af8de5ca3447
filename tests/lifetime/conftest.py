"""The CDNOW 1/10 sample (2,357 customers who first bought in Q1 1997), as the published results use it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

DATA = Path(__file__).parent.parent / "data" / "lifetime"


@pytest.fixture(scope="session")
def cdnow_transactions() -> pd.DataFrame:
    """One row per transaction: customer_id, id, date, quantity, amount, timestamp."""
    raw = pd.read_csv(DATA / "CDNOW_sample.txt", sep=r"\s+", header=None,
                      names=["customer_id", "id", "date", "quantity", "amount"], dtype={"date": str})
    raw["timestamp"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    return raw

"""Subscription metrics against ChartMogul's documented definitions and worked examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.lifetime.subscriptions import (
    arpa_ltv,
    cohort_retention,
    mrr_movements,
    revenue_retention,
)


def moves(rows):
    return pd.DataFrame(rows, columns=["customer_id", "month", "movement", "mrr_delta", "mrr"]).assign(
        month=lambda d: pd.to_datetime(d["month"]))


def chartmogul_example():
    """Start the month with MRR 100 over four customers; then churn 10, contraction 10, expansion 10."""
    return moves([
        ("a", "2024-01-01", "new", 40, 40), ("b", "2024-01-01", "new", 30, 30),
        ("c", "2024-01-01", "new", 20, 20), ("d", "2024-01-01", "new", 10, 10),
        ("d", "2024-02-01", "churn", -10, 0),
        ("c", "2024-02-01", "contraction", -10, 10),
        ("a", "2024-02-01", "expansion", 10, 50),
    ])


def test_gross_and_net_mrr_churn_worked_example():
    m = mrr_movements(chartmogul_example()).loc["2024-02-01"]
    assert m["mrr_start"] == 100 and m["mrr_end"] == 90
    assert m["gross_mrr_churn_rate"] == pytest.approx(0.20)
    assert m["net_mrr_churn_rate"] == pytest.approx(0.10)
    # customer churn: 1 of the 4 customers at the start
    assert m["customer_churn_rate"] == pytest.approx(0.25)


def test_new_customers_do_not_count_in_customer_churn():
    data = pd.concat([chartmogul_example(), moves([("e", "2024-02-01", "new", 25, 25)])])
    m = mrr_movements(data).loc["2024-02-01"]
    assert m["customers_start"] == 4 and m["customers_new"] == 1
    assert m["customer_churn_rate"] == pytest.approx(0.25)
    # the first month started with nothing: its rates are empty, not zero and not an error
    assert np.isnan(mrr_movements(data).loc["2024-01-01", "gross_mrr_churn_rate"])


def test_revenue_retention_of_a_cohort():
    r = revenue_retention(chartmogul_example(), "2024-02-01", months=1)
    assert r["net_revenue_retention"] == pytest.approx(0.90)   # (100 + 10 - 10 - 10) / 100
    assert r["gross_revenue_retention"] == pytest.approx(0.80)  # expansion left out
    with pytest.raises(ValueError, match="needs both ends"):
        revenue_retention(chartmogul_example(), "2024-02-01", months=12)


def test_arpa_ltv_worked_example():
    assert arpa_ltv(100, 0.05) == pytest.approx(2000)
    assert arpa_ltv(100, 0.05, gross_margin=0.8) == pytest.approx(1600)
    assert arpa_ltv(100, 0.0) == float("inf")


def test_cohort_table_leaves_unreached_cells_blank():
    data = moves([("a", "2024-01-01", "new", 10, 10), ("b", "2024-01-01", "new", 10, 10),
                  ("b", "2024-02-01", "churn", -10, 0), ("c", "2024-02-01", "new", 10, 10),
                  ("a", "2024-03-01", "churn", -10, 0)])
    table = cohort_retention(data)
    jan, feb = table.loc[(pd.Timestamp("2024-01-01"),)], table.loc[(pd.Timestamp("2024-02-01"),)]
    assert jan["customers"] == 2 and list(jan[[0, 1, 2]]) == [1.0, 0.5, 0.0]
    assert list(feb[[0, 1]]) == [1.0, 1.0] and np.isnan(feb[2])


def test_cohort_table_by_acquisition_channel():
    data = moves([("a", "2024-01-01", "new", 10, 10), ("b", "2024-01-01", "new", 30, 30),
                  ("b", "2024-02-01", "churn", -30, 0)])
    channel = pd.Series({"a": "Email", "b": "Paid Search"})
    table = cohort_retention(data, by=channel, revenue=True)
    assert table.loc[(pd.Timestamp("2024-01-01"), "Email"), 1] == 1.0
    assert table.loc[(pd.Timestamp("2024-01-01"), "Paid Search"), 1] == 0.0


def test_movements_reconcile_start_to_end(sample):
    m = mrr_movements(sample.tables["subscriptions"])
    assert np.allclose(m["mrr_start"] + m["new"] + m["expansion"] + m["reactivation"]
                       - m["contraction"] - m["churn"], m["mrr_end"], atol=0.05)

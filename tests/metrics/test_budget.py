"""Response curves recover a known elasticity; what-ifs follow the curves; nothing over-claims."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.errors import NotFittedError
from closedloop_nb.metrics import ResponseCurves, deal_credits, spend_and_revenue, suggest_move


def simulated(seed: int, b: dict[str, float], periods: int = 48) -> pd.DataFrame:
    """revenue = a * spend^b with multiplicative gamma noise (mean 1): known ground truth."""
    rng = np.random.default_rng(seed)
    parts = []
    for ch, (a, el) in b.items():
        spend = rng.uniform(1_000, 6_000, periods)
        rev = a * spend ** el * rng.gamma(25, 1 / 25, periods)
        parts.append(pd.DataFrame({"period": range(periods), "channel": ch, "spend": spend, "revenue": rev}))
    return pd.concat(parts, ignore_index=True)


TRUTH = {"Paid Search": (40.0, 0.7), "Display": (300.0, 0.3)}


def test_elasticities_cover_the_truth():
    covered = 0
    for seed in range(20):
        c = ResponseCurves().fit(simulated(seed, TRUTH)).curves_
        covered += sum(c.loc[ch, "elasticity_lower"] <= el <= c.loc[ch, "elasticity_upper"]
                       for ch, (_, el) in TRUTH.items())
    assert covered >= 34  # of 40 intervals at 95%: binomial, P(fewer than 34) < 1%


def test_what_if_follows_the_true_curves():
    curves = ResponseCurves().fit(simulated(1, TRUTH))
    w = curves.what_if(1_000, "Display", "Paid Search")
    c = curves.curves_
    truth = 0.0
    for ch, delta in (("Display", -1_000), ("Paid Search", 1_000)):
        a, el = TRUTH[ch]
        truth += a * (c.loc[ch, "spend"] + delta) ** el - a * c.loc[ch, "spend"] ** el
    assert w.loc["net", "change_lower"] <= truth <= w.loc["net", "change_upper"]
    assert w.loc["net", "change"] == pytest.approx(truth, rel=0.25)
    # diminishing returns: moving money to a channel with b < 1 gains less than its average ROAS says
    assert w.loc["Paid Search", "change"] < w.loc["Paid Search", "change_constant_roas"]
    assert w.loc["net", "spend_new"] == pytest.approx(w.loc["net", "spend_now"])


def test_no_curve_without_evidence():
    flat = simulated(2, {"Flat": (10.0, 0.5)}, periods=12).assign(spend=2_000.0)
    short = simulated(3, {"Short": (10.0, 0.5)}, periods=4)
    curves = ResponseCurves().fit(pd.concat([flat, short]))
    assert curves.curves_.loc["Flat", "status"] == "spend hardly varies"
    assert curves.curves_.loc["Short", "status"] == "too few periods"
    assert not curves.curves_["informative"].any()
    with pytest.raises(ValueError, match="no response curve for 'Flat': spend hardly varies"):
        curves.what_if(100, "Flat", "Short")
    with pytest.raises(NotFittedError):
        ResponseCurves().predict("x", 1.0)


def test_spend_and_revenue_by_hand(hand):
    p = spend_and_revenue(hand, deal_credits(hand, "linear"))
    ps = p[p["channel"] == "Paid Search"].set_index("period")
    assert ps.loc["2024-01", "spend"] == 100 and ps.loc["2024-01", "revenue"] == 0
    assert ps.loc["2024-02", "revenue"] == 600   # half of d1, won in February
    lagged = spend_and_revenue(hand, deal_credits(hand, "linear"), lag=1).query("channel == 'Paid Search'")
    assert lagged.set_index("period").loc["2024-01", "revenue"] == 600  # set against January's spend


def test_suggest_move_goes_from_low_to_high_marginal_return_and_says_how_sure():
    curves = ResponseCurves().fit(simulated(1, TRUTH))
    move, text = suggest_move(curves, 500)
    c = curves.curves_
    low, high = c["marginal_roas"].idxmin(), c["marginal_roas"].idxmax()
    assert list(move.index) == [low, high, "net"]
    assert move.loc[high, "spend_new"] > move.loc[high, "spend_now"]
    assert "not incremental" in text
    none, why = suggest_move(ResponseCurves().fit(simulated(2, {"A": (1.0, 0.5)}, periods=3)), 500)
    assert none is None and "No channel" in why


def test_negative_attributed_revenue_gets_no_curve():
    # Shapley credits can be negative: a response curve of negative revenue means nothing
    panel = simulated(4, {"Display": (300.0, 0.3)}, periods=12)
    panel.loc[3, "revenue"] = -50.0
    curves = ResponseCurves().fit(panel)
    assert curves.curves_.loc["Display", "status"] == "negative attributed revenue in some periods"
    assert not curves.params_

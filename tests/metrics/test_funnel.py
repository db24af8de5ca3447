"""Funnel rates and acquisition channel on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from closedloop_nb.metrics import NO_TOUCHES, acquisition_channel, funnel_rates
from closedloop_nb.validation import validate_tables

T = "2024-01-0{}T00:00:00Z"


def small():
    """Four leads: two from Email (one MQL -> SQL -> won deal of 1000), one from Paid Search (MQL only),
    one offline (a lost deal)."""
    touches = pd.DataFrame({"visitor_id": ["e1", "e2", "p1"], "timestamp": [T.format(1)] * 3,
                            "source": ["newsletter", "newsletter", "google"],
                            "medium": ["email", "email", "cpc"]})
    ident = pd.DataFrame({"visitor_id": ["e1", "e2", "p1"], "person_id": ["A", "B", "C"],
                          "matched_at": [T.format(2)] * 3, "method": ["form"] * 3})
    leads = pd.DataFrame({"person_id": ["A", "B", "C", "D"], "created_at": [T.format(2)] * 4,
                          "mql_at": [T.format(3), None, T.format(3), None],
                          "sql_at": [T.format(4), None, None, None]})
    deals = pd.DataFrame({"deal_id": ["d1", "d2"], "person_id": ["A", "D"], "created_at": [T.format(5)] * 2,
                          "amount": [1000.0, 400.0], "closed_at": [T.format(9)] * 2, "won": [True, False]})
    return validate_tables({"touchpoints": touches, "identities": ident, "leads": leads,
                            "deals": deals}).tables


def test_acquisition_channel_is_the_first_touch_and_offline_leads_are_named():
    ch = acquisition_channel(small())
    assert ch.to_dict() == {"A": "Email", "B": "Email", "C": "Paid Search", "D": NO_TOUCHES}


def test_funnel_counts_rates_and_wilson_intervals():
    t = small()
    f = funnel_rates(t, acquisition_channel(t))
    email = f.loc["Email"]
    assert email[["leads", "mqls", "sqls", "opportunities", "won"]].tolist() == [2, 1, 1, 1, 1]
    # visitors e1, e2 (Email) and p1 (Paid Search) all became leads; D was never a visitor
    assert email[["visitors", "visitor_to_lead"]].tolist() == [2, 1.0]
    assert f.loc["Total", "visitors"] == 3
    assert email["mql_rate"] == 0.5 and email["lead_to_customer"] == 0.5
    lo, hi = proportion_confint(1, 2, alpha=0.05, method="wilson")
    assert (email["mql_rate_lower"], email["mql_rate_upper"]) == pytest.approx((lo, hi))
    # Paid Search has no SQL: rates after it have a zero denominator -> empty, not an error
    assert np.isnan(f.loc["Paid Search", "opportunity_rate"])
    assert f.loc["Total", "leads"] == 4 and f.loc["Total", "opportunities"] == 2
    # D's deal has no SQL date: it counts as an opportunity, not towards the SQL -> opportunity rate,
    # which stays a proportion (1 of the 1 SQL), never 2 / 1
    assert f.loc["Total", "opportunity_rate"] == 1.0
    rates = f.filter(regex="rate$|customer$")
    assert ((rates >= 0) & (rates <= 1) | rates.isna()).all().all()
    # the channels add up to the total
    assert f.drop(index="Total")[["leads", "won"]].sum().tolist() == [4, 1]


def test_visitor_to_lead_counts_visitors_by_their_first_touch():
    t = small()
    # one more visitor from Paid Search who never became anyone
    t["touchpoints"] = pd.concat([t["touchpoints"], t["touchpoints"].iloc[[2]].assign(visitor_id="p2")],
                                 ignore_index=True)
    f = funnel_rates(t, acquisition_channel(t))
    ps = f.loc["Paid Search"]
    assert (ps["visitors"], ps["visitor_to_lead"]) == (2, 0.5)
    lo, hi = proportion_confint(1, 2, alpha=0.05, method="wilson")
    assert (ps["visitor_to_lead_lower"], ps["visitor_to_lead_upper"]) == pytest.approx((lo, hi))

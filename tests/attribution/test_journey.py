"""Time decay, W-shaped and full-path models on hand-worked journeys."""

from __future__ import annotations

import pandas as pd
import pytest

from closedloop_nb.attribution.journey import FullPath, TimeDecay, WShaped

T = pd.Timestamp("2024-03-15", tz="UTC")


def journey(channels, days_before, jid=1, conversions=1, value=100.0, **markers):
    n = len(channels)
    frame = pd.DataFrame({
        "journey_id": [jid] * n, "channel": channels,
        "timestamp": [T - pd.Timedelta(days=d) for d in days_before],
        "conversion_at": [T] * n, "conversions": [conversions] * n, "value": [value] * n,
    })
    for name, index in markers.items():
        frame[name] = [i == index for i in range(n)]
    return frame


def credits(model, touches):
    c = model.fit(touches).credits_
    return dict(zip(c.channel, c.conversions, strict=True))


def test_time_decay_halves_every_half_life():
    # ages 14, 7, 0 days -> raw weights 1/4, 1/2, 1 -> shares 1/7, 2/7, 4/7
    got = credits(TimeDecay(), journey(["A", "B", "C"], [14, 7, 0]))
    assert got == pytest.approx({"A": 1 / 7, "B": 2 / 7, "C": 4 / 7})
    # a 14-day half-life: ages 14, 0 -> 1/2, 1 -> 1/3, 2/3
    assert credits(TimeDecay(14), journey(["A", "B"], [14, 0])) == pytest.approx({"A": 1 / 3, "B": 2 / 3})


def test_w_shaped_thirty_thirty_thirty_ten():
    # first A, lead C, opportunity E; B and D share 10%
    touches = journey(list("ABCDE"), [9, 8, 7, 6, 5], conversions=10, lead_touch=2, opportunity_touch=4)
    assert credits(WShaped(), touches) == pytest.approx({"A": 3, "B": 0.5, "C": 3, "D": 0.5, "E": 3})


def test_w_shaped_coinciding_positions_add_up_and_missing_ones_renormalise():
    # first touch also created the lead; opportunity on C; B gets the 10%
    touches = journey(list("ABC"), [3, 2, 1], lead_touch=0, opportunity_touch=2)
    assert credits(WShaped(), touches) == pytest.approx({"A": 0.6, "B": 0.1, "C": 0.3})
    # no opportunity marker, two touches: 30% first + 30% lead -> 50/50
    two = journey(["A", "B"], [2, 1], lead_touch=1)
    assert credits(WShaped(), two) == pytest.approx({"A": 0.5, "B": 0.5})


def test_full_path_twenty_two_and_a_half_each():
    touches = journey(list("ABCDEF"), [6, 5, 4, 3, 2, 1], conversions=20, value=2000.0,
                      lead_touch=1, opportunity_touch=3, won_touch=5)
    got = credits(FullPath(), touches)
    assert got == pytest.approx({"A": 4.5, "B": 4.5, "C": 1.0, "D": 4.5, "E": 1.0, "F": 4.5})
    tc = FullPath().fit(touches).touch_credits_
    assert tc["credit_value"].sum() == pytest.approx(2000.0)
    assert tc.loc[tc.channel == "A", "credit_value"].item() == pytest.approx(450.0)


def test_non_converting_journeys_get_nothing_and_totals_are_conserved():
    touches = pd.concat([journey(["A", "B"], [3, 1], jid=1, conversions=2, value=50.0),
                         journey(["C"], [1], jid=2, conversions=0, value=0.0)])
    model = TimeDecay().fit(touches)
    assert "C" not in set(model.credits_.channel)
    assert model.credits_["conversions"].sum() == pytest.approx(2)
    assert model.credits_["value"].sum() == pytest.approx(50)


def test_missing_columns_are_named():
    with pytest.raises(KeyError, match="conversion_at"):
        TimeDecay().fit(pd.DataFrame({"journey_id": [1], "channel": ["A"]}))

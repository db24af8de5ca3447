"""Per-deal credit on the hand-worked closed loop, and against the models fitted on the same journeys."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pandas as pd
import pytest

from closedloop_nb.attribution import MarkovChain
from closedloop_nb.journeys import build_journeys
from closedloop_nb.metrics import DEAL_MODELS, NO_TOUCHES, deal_credits, lead_credits


def shares(credits: pd.DataFrame, deal: str) -> dict[str, float]:
    c = credits[credits["deal_id"] == deal]
    return dict(zip(c["channel"], c["share"].round(12), strict=True))


def test_rules_split_each_deal_over_its_own_touches(hand):
    # d1's journey: Email (Jan 1), Paid Search (Jan 3) before its creation on Jan 10
    assert shares(deal_credits(hand, "linear"), "d1") == {"Email": 0.5, "Paid Search": 0.5}
    assert shares(deal_credits(hand, "first_touch"), "d1") == {"Email": 1.0}
    assert shares(deal_credits(hand, "last_touch"), "d1") == {"Paid Search": 1.0}
    # C never touched the site: the whole deal is "(no touches)", visible, not dropped
    assert shares(deal_credits(hand, "linear"), "d3") == {NO_TOUCHES: 1.0}
    # the lead source is the first touch of the lead journey
    assert shares(deal_credits(hand, "lead_source"), "d2") == {"Paid Search": 1.0}


def test_time_decay_and_w_shaped_per_deal(hand):
    # time decay: ages 9 and 7 days at the deal's creation, weight halving every 7 days
    w = np.array([0.5 ** (9 / 7), 0.5 ** (7 / 7)])
    assert shares(deal_credits(hand, "time_decay"), "d1") == pytest.approx(
        {"Email": w[0] / w.sum(), "Paid Search": w[1] / w.sum()})
    # W-shaped: first touch (Email) 30%; Paid Search is both the lead-creation touch (last touch
    # before the lead on Jan 4) and the opportunity touch: 60%; nobody else takes the 10%: renormalised
    w_shaped = shares(deal_credits(hand, "w_shaped"), "d1")
    assert w_shaped == pytest.approx({"Email": 1 / 3, "Paid Search": 2 / 3})


def test_full_path_is_refused_with_the_reason(hand):
    with pytest.raises(ValueError, match="closed-won touch"):
        deal_credits(hand, "full_path")
    with pytest.raises(ValueError, match="unknown model"):
        deal_credits(hand, "nonsense")


@pytest.mark.filterwarnings("ignore:credited by the model:UserWarning")
@pytest.mark.parametrize("model", DEAL_MODELS)
def test_every_deal_is_credited_exactly_once(sample, model):
    tables = sample.tables
    c = deal_credits(tables, model)
    assert set(c["deal_id"]) == set(tables["deals"]["deal_id"])
    np.testing.assert_allclose(c.groupby("deal_id")["share"].sum(), 1.0, atol=1e-9)
    assert (c["share"] > 0).all() or model.startswith("shapley")  # Shapley parts can be negative


def test_markov_deal_credits_add_up_to_the_markov_model(sample):
    tables = sample.tables
    journeys = build_journeys(tables, "opportunity", progress=False)
    model = MarkovChain().fit(journeys.path_table())
    want = model.credits_.set_index("channel")["conversions"]
    # a channel on no converting journey gets Markov credit (it leads to channels that convert) but
    # can be in no deal's split: named in a warning, its credit shared by the others in proportion
    t = journeys.touches
    on_converting = set(t.loc[t["converted"] == 1, "step"])
    off = [ch for ch in want.index if ch not in on_converting and want[ch] > 0]
    with pytest.warns(UserWarning, match="on no converting path") if off else nullcontext():
        c = deal_credits(tables, "markov")
    got = c[c["channel"] != NO_TOUCHES].groupby("channel")["share"].sum()
    kept = want.drop(index=off)
    np.testing.assert_allclose(got.reindex(kept.index).fillna(0), kept / kept.sum() * want.sum(),
                               rtol=1e-6, atol=1e-6)
    assert got.reindex(off).fillna(0).eq(0).all()


def test_lead_credits_and_levels(hand):
    c = lead_credits(hand, "linear", level="campaign")
    assert list(c.columns) == ["person_id", "campaign", "share"]
    np.testing.assert_allclose(c.groupby("person_id")["share"].sum(), 1.0)
    assert set(c["person_id"]) == {"A", "B", "C"}


def test_shapley_deal_credits_are_the_shapley_model_exactly(sample):
    from closedloop_nb.attribution import ShapleyValue

    tables = sample.tables
    c = deal_credits(tables, "shapley")
    model = ShapleyValue().fit(build_journeys(tables, "opportunity", progress=False).path_table())
    got = c[c["channel"] != NO_TOUCHES].groupby("channel")["share"].sum()
    want = model.credits_.set_index("channel")["conversions"]
    np.testing.assert_allclose(got.reindex(want.index).fillna(0), want, rtol=1e-9, atol=1e-9)


@pytest.mark.filterwarnings("ignore:credited by the model:UserWarning")
def test_credits_kept_with_the_build_equal_a_fresh_fit(sample, workspace, monkeypatch):
    # a workspace's deal journeys are credited once per model named: later calls (revenue_by_model,
    # the negative-credit loop, the pipeline cell) get the same frame as a fit on a fresh build
    import closedloop_nb.metrics.credits as credits_module

    ws = workspace(sample.tables)
    models = ["linear", "markov", "shapley", "shapley_model", "time_decay"]
    first = {m: deal_credits(ws, m) for m in models}
    fits = []
    real = credits_module._shares
    monkeypatch.setattr(credits_module, "_shares", lambda *a: fits.append(a[0]) or real(*a))
    for m in models:
        again = deal_credits(ws, m)
        fresh = deal_credits(sample.tables, m)  # a dict of tables: its own build, nothing kept
        pd.testing.assert_frame_equal(again, first[m])
        pd.testing.assert_frame_equal(again, fresh)
        again["share"] = 0.0  # the caller's copy: changing it changes nothing kept
    assert len(fits) == len(models)  # only the fresh builds were fitted
    pd.testing.assert_frame_equal(deal_credits(ws, "linear"), first["linear"])
    assert len(ws.builds) == 1  # one deal journey build served every call
    # another lookback or level is another build, credited afresh; a model instance is fitted every call
    lead = lead_credits(ws, "linear")
    pd.testing.assert_frame_equal(lead, lead_credits(sample.tables, "linear"))
    deal_credits(ws, MarkovChain())
    deal_credits(ws, MarkovChain())
    assert len(fits) == len(models) + 4




def test_kept_credits_go_with_their_build():
    # a report kernel's next notebook opens its own workspace: the last one's credits must not stay
    # (the store holds its builds weakly, and an entry goes when its build does)
    import gc

    from closedloop_nb.metrics.credits import _SHARES, _kept

    class Build:  # any weakly referenceable journey build
        pass

    build, other = Build(), Build()
    kept = _kept(build)
    kept["linear"] = "its shares"
    assert _kept(build) is kept and _kept(other) == {}
    key = id(build)
    del build
    gc.collect()
    assert key not in _SHARES and id(other) in _SHARES
    assert _kept(("not", "weakly", "referenceable")) == {}

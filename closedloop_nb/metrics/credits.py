"""Who gets the credit for each deal: per-deal shares by channel (or campaign, keyword) from any model.

Every pipeline and revenue metric is a sum over deals of ``amount x share``; the shares of each deal
add up to 1, so channel totals always reconcile to the CRM. A deal whose person has no web touches
in the window is credited in full to ``(no touches)``: visible, never dropped.

The journeys credited are those ending at the deal's creation (``conversion="opportunity"``): the
person's touches in the ``lookback_days`` before the opportunity was created (after their previous
deal, if any). Models:

* ``"lead_source"``: the first touch of the person's *lead* journey, the classic lead-source view
  (one channel per person, whatever the deal);
* every path-table model in :data:`closedloop_nb.attribution.MODELS` (``first_touch``, ``linear``,
  ``markov``, ``shapley``, ...), fitted on the deal journeys (converting and not); Markov and Shapley
  split each deal over the channels on its own journey so that channel totals equal the model's
  (see :func:`closedloop_nb.attribution.base.disaggregate`);
* ``"time_decay"`` and ``"w_shaped"``, which use the touch times and the lead- and
  opportunity-creation touches.

Everything touch-level runs in the engine (:mod:`closedloop_nb.metrics._engine`): ``tables`` is a
dict of validated tables or a run workspace, whose cached journeys every call reuses. A path-table
model splits each distinct converting path once, weighted by the journeys on it, which gives each
journey exactly the split it would get alone; time-decay and W-shaped weights are SQL.

Examples
--------
>>> from closedloop_nb.synth import generate
>>> from closedloop_nb.validation import validate_tables
>>> tables = validate_tables(generate(3_000, seed=2).frames()).tables
>>> c = deal_credits(tables, "linear")
>>> bool(c.groupby("deal_id")["share"].sum().round(12).eq(1).all())
True
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.attribution import MODELS, AttributionModel, PathTable, TimeDecay, WShaped
from closedloop_nb.attribution.journey import JourneyModel, _Milestones
from closedloop_nb.metrics._engine import (
    ConvertingPaths,
    JourneyTouches,
    _cached,
    converting_paths,
    engine_of,
    is_workspace,
    journey_touches,
    path_table,
)

__all__ = ["DEAL_MODELS", "NO_TOUCHES", "acquisition_channel", "deal_credits", "lead_credits"]

NO_TOUCHES = "(no touches)"

#: Touch-level models usable for deals (full path needs the closed-won touch, which open deals lack).
JOURNEY_MODELS: dict[str, type[JourneyModel]] = {"time_decay": TimeDecay, "w_shaped": WShaped}

#: Every model name :func:`deal_credits` accepts.
DEAL_MODELS: tuple[str, ...] = ("lead_source", *sorted(MODELS), *JOURNEY_MODELS)


def acquisition_channel(tables: Mapping[str, pd.DataFrame], lookback_days: int = 90,
                        level: str = "channel") -> pd.Series:
    """Each lead's first touch (its channel, or campaign, keyword...): the person's lead source.

    Leads without web touches in the window are ``(no touches)``. Computed in the engine on the
    lead journeys (a workspace's cached build, or one built from the tables).

    Returns
    -------
    pandas.Series
        Indexed by ``person_id``.
    """
    eng = engine_of(tables)
    if level != "channel" and is_workspace(eng.tables) and level in eng.columns("touchpoints"):
        # a level only names each touch's step: the first touch is the same touch at every level, so
        # the channel build's first touches are named at ``level`` (a join of one touch per lead)
        # rather than every journey re-levelled (at 10M touchpoints ~1 s instead of ~20 s of CPU)
        from closedloop_nb.journey_sql import level_step_sql

        touches = journey_touches(eng.journeys("lead", lookback_days), eng)
        first = touches.frame(f"SELECT f.person_id, {level_step_sql(level)} AS step FROM ("
                              "SELECT person_id, first(touch_id ORDER BY ts, touch_id) AS touch_id FROM {t} "
                              "WHERE converted = 1 GROUP BY person_id) f "
                              "JOIN touchpoints tp ON tp.touch_id = f.touch_id")
    else:
        touches = journey_touches(eng.journeys("lead", lookback_days, level), eng)
        first = touches.frame("SELECT person_id, first(step ORDER BY ts, touch_id) AS step FROM {t} "
                              "WHERE converted = 1 GROUP BY person_id")
    first = first.set_index("person_id")["step"]
    people = eng["leads"]["person_id"]
    return pd.Series(people.map(first).fillna(NO_TOUCHES).to_numpy(), index=people.to_numpy(),
                     name=level)


Model = str | AttributionModel | JourneyModel


def deal_credits(tables: Mapping[str, pd.DataFrame], model: Model = "lead_source",
                 lookback_days: int = 90, level: str = "channel", **journey_options: Any) -> pd.DataFrame:
    """Share of each deal credited to each channel (campaign, keyword...) by ``model``.

    Parameters
    ----------
    tables
        Validated canonical tables (``touchpoints``, ``identities``, ``leads``, ``deals``), as a
        dict of DataFrames or a run workspace.
    model
        A name from :data:`DEAL_MODELS` or a model instance (it is copied and fitted on the deal
        journeys; the instance given is not changed).
    lookback_days
        Touches older than this before the deal's creation are not credited.
    level
        The touch attribute credited: ``channel``, ``campaign``, ``keyword``, ``source``...
    **journey_options
        Passed to :func:`closedloop_nb.journeys.build_journeys` (``engine``, ``drop_direct``...).

    Returns
    -------
    pandas.DataFrame
        ``deal_id``, ``person_id``, ``<level>``, ``share``: one row per deal and credited value,
        the shares of each deal adding up to 1.
    """
    deals = tables["deals"][["deal_id", "person_id"]]
    return _credits(tables, deals, "deal_id", "opportunity", model, lookback_days, level, journey_options)


def lead_credits(tables: Mapping[str, pd.DataFrame], model: Model = "lead_source",
                 lookback_days: int = 90, level: str = "channel", **journey_options: Any) -> pd.DataFrame:
    """Share of each lead credited to each channel by ``model``, on journeys ending at lead creation.

    Same parameters as :func:`deal_credits`. Returns ``person_id``, ``<level>``, ``share``.
    """
    leads = tables["leads"][["person_id"]]
    return _credits(tables, leads, "person_id", "lead", model, lookback_days, level, journey_options)


def _credits(tables: Mapping[str, pd.DataFrame], keys: pd.DataFrame, key: str, conversion: str,
             model: str | AttributionModel | JourneyModel, lookback_days: int, level: str,
             journey_options: dict[str, Any]) -> pd.DataFrame:
    eng = engine_of(tables)
    if isinstance(model, str) and model == "lead_source":
        source = acquisition_channel(eng, lookback_days, level)
        out = keys.assign(**{level: keys["person_id"].map(source).fillna(NO_TOUCHES).to_numpy()})
        return out.assign(share=1.0).reset_index(drop=True)
    journeys = eng.journeys(conversion, lookback_days, level, **journey_options)
    return credits_on_journeys(eng, journeys, model, keys, key, level)


def credits_on_journeys(tables: Mapping[str, Any], journeys: Any, model: Model, keys: pd.DataFrame,
                        key: str, level: str) -> pd.DataFrame:
    """Shares of each of ``keys`` (deals or leads) by ``model`` on journeys already built (ending at
    deal or lead creation, at ``level``): what :func:`deal_credits` does after building them, for
    callers that keep journeys between calls (the explorer).

    ``key`` is ``deal_id`` or ``person_id``; keys without a converting journey are ``(no touches)``.
    """
    eng = engine_of(tables)
    # a model given by name credits a build's journeys the same way every time: its shares are kept
    # with the build (revenue_by_model, the negative-credit check and the pipeline of one report
    # credit the same deal journeys under the same models); an instance is fitted every call
    cache = _kept(journeys) if isinstance(model, str) else {}
    shares = cache.get((model, key, level))
    if shares is None:
        shares = _shares(_model(model), journeys, journey_touches(journeys, eng), key, level)
        if isinstance(model, str):
            cache[(model, key, level)] = shares
    out = keys.merge(shares, on=key, how="left")
    out[level] = out[level].fillna(NO_TOUCHES)
    out["share"] = out["share"].fillna(1.0)
    return out[out["share"] != 0].reset_index(drop=True)


#: per journey build (by id, with a weak reference): the shares of each model named, by (model, key, level)
_SHARES: dict[int, tuple[weakref.ref, dict]] = {}
#: per converting-path grouping: the deal (or person) id of each converting journey
_KEYS: dict[int, tuple[weakref.ref, np.ndarray]] = {}


def clear_caches() -> None:
    """Forget the shares and deal keys kept per journey build (see
    :func:`closedloop_nb.metrics._engine.clear_caches`)."""
    _SHARES.clear()
    _KEYS.clear()


def _kept(journeys: Any) -> dict:
    """The shares kept with ``journeys`` (a build that cannot be weakly referenced keeps none): dropped
    with the build, so a report kernel's next notebook does not carry the last one's credits."""
    key = id(journeys)
    hit = _SHARES.get(key)
    if hit is not None and hit[0]() is journeys:
        return hit[1]

    def drop(ref: weakref.ref, key: int = key) -> None:
        if _SHARES.get(key, (None,))[0] is ref:
            del _SHARES[key]

    try:
        _SHARES[key] = (weakref.ref(journeys, drop), {})
    except TypeError:
        return {}
    return _SHARES[key][1]


def _shares(fitted: AttributionModel | JourneyModel, journeys: Any, touches: JourneyTouches, key: str,
            level: str) -> pd.DataFrame:
    """Per-journey shares (``key``, ``level``, ``share``) of ``fitted`` (a fresh model) on ``journeys``."""
    if isinstance(fitted, JourneyModel):
        return _journey_model_shares(fitted, touches, key, level)
    fitted.fit(path_table(journeys))
    return _path_model_shares(fitted, converting_paths(journeys, touches), key, level)


def _conversion_key(journey_id: pd.Series) -> np.ndarray:
    """The deal id (or person id) of a converting journey: its id after the ``kind:`` prefix."""
    return journey_id.astype(str).str.split(":", n=1).str[1].to_numpy()


def _path_model_shares(model: AttributionModel, paths: ConvertingPaths, key: str, level: str) -> pd.DataFrame:
    """Per-journey shares of a path-table model, from one split per distinct converting path.

    A rule's split depends on the path alone; a global model's (Markov, Shapley: iterative
    proportional fitting, see :func:`~closedloop_nb.attribution.base.disaggregate`) on the path and
    the row totals, and ``n`` journeys on one path weigh exactly as ``n`` rows of one journey each.
    So splitting the distinct paths, each weighted by its journeys, gives every journey the split it
    would get alone, without a row per touch."""
    channels = model.paths_.channels
    code = pd.Categorical(pd.Series(paths.steps, dtype=object).astype(str).str.strip(),
                          categories=list(channels)).codes
    if (code < 0).any():  # cannot happen when the model was fitted on these journeys
        raise ValueError("journey steps missing from the fitted model's channels")
    n = len(paths.n)
    table = PathTable(channels, code.astype(np.int32), paths.offsets, paths.n, np.zeros(n), np.zeros(n))
    weight = model.touch_weights(table)
    path_no = np.repeat(np.arange(n), paths.lengths)
    per_path = (pd.DataFrame({"path_no": path_no, level: paths.steps, "share": weight,
                              "pos": np.arange(len(weight))})
                .groupby(["path_no", level], sort=False, as_index=False)
                .agg(share=("share", "sum"), pos=("pos", "min")))
    ids = _cached(_KEYS, paths, lambda: _conversion_key(pd.Series(paths.journey_id)))
    journeys = pd.DataFrame({key: ids, "path_no": paths.path_of})
    out = journeys.merge(per_path, on="path_no").sort_values([key, "pos"], kind="stable")
    return out[[key, level, "share"]].reset_index(drop=True)


def _journey_model_shares(model: JourneyModel, touches: JourneyTouches, key: str, level: str) -> pd.DataFrame:
    """Per-journey shares of a time-decay or W-shaped model, computed in the engine (touch weights
    by SQL, as :meth:`JourneyModel.fit` defines them); other journey models are fitted in pandas on
    the converting touches only."""
    sql = journey_weights_sql(model, touches)
    if sql is None:
        return _journey_model_shares_pandas(model, touches, key, level)
    out = touches.frame(f"""
WITH w AS ({sql})
SELECT journey_id, step AS "{level}", SUM(weight) AS share, MIN(pos) AS pos
FROM w GROUP BY journey_id, step ORDER BY journey_id, pos""")
    out.insert(0, key, _conversion_key(out.pop("journey_id")))
    return out[[key, level, "share"]]


def journey_weights_sql(model: JourneyModel, touches: JourneyTouches) -> str | None:
    """SQL giving each converting touch its weight under ``model`` (``journey_id``, ``step``, ``pos``
    (order in the journey), ``weight``, ``value``), or None for a model it does not know.

    Time decay: ``0.5 ^ (age in days / half-life)``; milestones (W-shaped): the first touch, the
    last touch at or before the person's lead creation and the journey's last touch (the
    opportunity's creation) take their shares, the other touches share ``rest``; both normalised
    within the journey (equal weights where nothing is given), as :meth:`JourneyModel.fit` does.
    """
    base = f"""
SELECT journey_id, person_id, step, ts, conversion_at, value,
       ROW_NUMBER() OVER (PARTITION BY journey_id ORDER BY ts, touch_id) AS pos,
       COUNT(*) OVER (PARTITION BY journey_id) AS n
FROM {touches.name} WHERE converted = 1"""
    if type(model)._weights is TimeDecay._weights:
        h = float(model.half_life_days)
        if h <= 0:
            raise ValueError(f"half_life_days must be positive, got {model.half_life_days}")
        raw = (f"pow(0.5, greatest(date_diff('microsecond', ts, conversion_at) / 86400000000.0, 0) / {h!r})")
        body = f"SELECT *, {raw} AS raw FROM ({base}) b"
    elif isinstance(model, _Milestones) and type(model)._weights is _Milestones._weights and \
            {m for m, _ in model.positions} <= {"first", "lead_touch", "opportunity_touch"}:
        leads = touches.need("leads")
        share = dict(model.positions)
        marks = {"first": "pos = 1", "opportunity_touch": "pos = n",
                 "lead_touch": "COALESCE(pos = lead_pos, FALSE)"}
        at = " OR ".join(f"({marks[m]})" for m in share) or "FALSE"
        given = " + ".join(f"CASE WHEN {marks[m]} THEN {float(v)!r} ELSE 0 END"
                           for m, v in share.items()) or "0"
        body = f"""
SELECT *, {given} + CASE WHEN NOT ({at}) THEN {float(model.rest)!r} / others ELSE 0 END AS raw
FROM (SELECT *, SUM(CASE WHEN {at} THEN 0 ELSE 1 END) OVER (PARTITION BY journey_id) AS others
      FROM (SELECT b.*, MAX(CASE WHEN b.ts <= l.created_at THEN b.pos END)
                        OVER (PARTITION BY b.journey_id) AS lead_pos
            FROM ({base}) b LEFT JOIN {leads} l ON b.person_id = l.person_id) x) y"""
    else:
        return None
    return f"""
SELECT journey_id, step, pos, value,
       CASE WHEN total > 0 THEN raw / total ELSE 1.0 / n END AS weight
FROM (SELECT *, SUM(raw) OVER (PARTITION BY journey_id) AS total FROM ({body}) r) z"""


def _journey_model_shares_pandas(model: JourneyModel, touches: JourneyTouches, key: str,
                                 level: str) -> pd.DataFrame:
    t = touches.frame(f"""
SELECT t.journey_id, t.step, t.ts, t.conversion_at, t.value, t.touch_id, t.person_id, l.created_at AS lead_at
FROM {{t}} t LEFT JOIN {touches.need("leads")} l ON t.person_id = l.person_id
WHERE t.converted = 1 ORDER BY t.journey_id, t.ts, t.touch_id""")
    table = pd.DataFrame({"journey_id": t["journey_id"], "channel": t["step"], "timestamp": t["ts"],
                          "conversion_at": t["conversion_at"], "conversions": 1.0,
                          "value": t["value"].to_numpy(float), "touch_id": t["touch_id"],
                          "person_id": t["person_id"]})
    weight = _journey_model_weights(model, table, t["lead_at"])
    out = (pd.DataFrame({key: _conversion_key(t["journey_id"]), level: t["step"].to_numpy(), "share": weight})
           .groupby([key, level], sort=False, as_index=False)["share"].sum())
    return out


def _model(model: str | AttributionModel | JourneyModel) -> AttributionModel | JourneyModel:
    if isinstance(model, (AttributionModel, JourneyModel)):
        return copy.deepcopy(model)
    if model in MODELS:
        return MODELS[model]()
    if model in JOURNEY_MODELS:
        return JOURNEY_MODELS[model]()
    if model == "full_path":
        raise ValueError("full_path needs each deal's closed-won touch, which open deals do not have; "
                         "use w_shaped for pipeline, or FullPath on closed_won journeys for revenue")
    raise ValueError(f"unknown model {model!r}; choose from {', '.join(DEAL_MODELS)}")


def _journey_model_weights(model: JourneyModel, table: pd.DataFrame, lead_at: pd.Series) -> np.ndarray:
    """Weights of a touch-level model on a converting-touch table sorted by journey and time: lead
    touch = the last touch at or before the person's lead creation; opportunity touch = the
    journey's last touch."""
    jid = table["journey_id"].to_numpy()
    last = np.ones(len(table), dtype=bool)
    last[:-1] = jid[:-1] != jid[1:]
    before_lead = (table["timestamp"] <= lead_at).to_numpy()
    pos = pd.Series(np.where(before_lead, np.arange(len(table)), -1)).groupby(jid).transform("max")
    model.fit(table.assign(lead_touch=pos.to_numpy() == np.arange(len(table)), opportunity_touch=last,
                           _row=np.arange(len(table))))
    return model.touch_credits_.sort_values("_row")["weight"].to_numpy()

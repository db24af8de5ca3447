"""The metrics as they were before they moved into the engine (issue 13), kept as the reference the
engine versions are checked against: plain pandas over the full touch tables, slow at scale, easy to
read. Copied from closedloop_nb/metrics/credits.py, funnel.py, pipeline.py, revenue.py and
attribution/compare.py at commit d8df0df, trimmed to what the tests compare."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.attribution import MODELS, AttributionModel, PathTable, TimeDecay, WShaped
from closedloop_nb.attribution.journey import JourneyModel

NO_TOUCHES = "(no touches)"

#: Touch-level models usable for deals (full path needs the closed-won touch, which open deals lack).
JOURNEY_MODELS: dict[str, type[JourneyModel]] = {"time_decay": TimeDecay, "w_shaped": WShaped}

#: Every model name :func:`deal_credits` accepts.
DEAL_MODELS: tuple[str, ...] = ("lead_source", *sorted(MODELS), *JOURNEY_MODELS)


def acquisition_channel(tables: dict[str, pd.DataFrame], lookback_days: int = 90,
                        level: str = "channel") -> pd.Series:
    """Each lead's first touch (its channel, or campaign, keyword...): the person's lead source.

    Leads without web touches in the window are ``(no touches)``.

    Returns
    -------
    pandas.Series
        Indexed by ``person_id``.
    """
    from closedloop_nb.journeys import build_journeys

    touches = build_journeys(tables, conversion="lead", lookback_days=lookback_days, level=level,
                             progress=False).touches
    first = (touches[touches["converted"] == 1].sort_values(["person_id", "ts", "touch_id"])
             .drop_duplicates("person_id").set_index("person_id")["step"])
    people = tables["leads"]["person_id"]
    return pd.Series(people.map(first).fillna(NO_TOUCHES).to_numpy(), index=people.to_numpy(),
                     name=level)


Model = str | AttributionModel | JourneyModel


def deal_credits(tables: dict[str, pd.DataFrame], model: Model = "lead_source",
                 lookback_days: int = 90, level: str = "channel", **journey_options: Any) -> pd.DataFrame:
    """Share of each deal credited to each channel (campaign, keyword...) by ``model``.

    Parameters
    ----------
    tables
        Validated canonical tables (``touchpoints``, ``identities``, ``leads``, ``deals``).
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


def lead_credits(tables: dict[str, pd.DataFrame], model: Model = "lead_source",
                 lookback_days: int = 90, level: str = "channel", **journey_options: Any) -> pd.DataFrame:
    """Share of each lead credited to each channel by ``model``, on journeys ending at lead creation.

    Same parameters as :func:`deal_credits`. Returns ``person_id``, ``<level>``, ``share``.
    """
    leads = tables["leads"][["person_id"]]
    return _credits(tables, leads, "person_id", "lead", model, lookback_days, level, journey_options)


def _credits(tables: dict[str, pd.DataFrame], keys: pd.DataFrame, key: str, conversion: str,
             model: str | AttributionModel | JourneyModel, lookback_days: int, level: str,
             journey_options: dict[str, Any]) -> pd.DataFrame:
    if isinstance(model, str) and model == "lead_source":
        source = acquisition_channel(tables, lookback_days, level)
        out = keys.assign(**{level: keys["person_id"].map(source).fillna(NO_TOUCHES).to_numpy()})
        return out.assign(share=1.0).reset_index(drop=True)
    fitted = _model(model)
    from closedloop_nb.journeys import build_journeys

    journeys = build_journeys(tables, conversion=conversion, lookback_days=lookback_days, level=level,
                              progress=False, **journey_options)
    touches = journeys.touches
    touches = touches[touches["converted"] == 1].reset_index(drop=True)
    if isinstance(fitted, JourneyModel):
        weight = _journey_model_weights(fitted, journeys.touch_table(), tables["leads"])
    else:
        fitted.fit(journeys.path_table())
        weight = fitted.touch_weights(_per_journey(touches, fitted.paths_.channels))
    ids = touches["journey_id"].str.split(":", n=1).str[1]
    shares = (pd.DataFrame({key: ids.to_numpy(), level: touches["step"].to_numpy(), "share": weight})
              .groupby([key, level], sort=False, as_index=False)["share"].sum())
    out = keys.merge(shares, on=key, how="left")
    out[level] = out[level].fillna(NO_TOUCHES)
    out["share"] = out["share"].fillna(1.0)
    return out[out["share"] != 0].reset_index(drop=True)


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


def _per_journey(touches: pd.DataFrame, channels: tuple[str, ...]) -> PathTable:
    """One path per converting journey (touches sorted by journey, time), coded like ``channels``."""
    code = pd.Categorical(touches["step"].astype(str).str.strip(), categories=list(channels)).codes
    if (code < 0).any():  # cannot happen when the model was fitted on these journeys
        raise ValueError("journey steps missing from the fitted model's channels")
    sizes = touches.groupby("journey_id", sort=False).size().to_numpy()
    n = len(sizes)
    return PathTable(channels, code.astype(np.int32), np.concatenate([[0], np.cumsum(sizes)]),
                     np.ones(n), np.zeros(n), np.zeros(n))


def _journey_model_weights(model: JourneyModel, table: pd.DataFrame, leads: pd.DataFrame) -> np.ndarray:
    """Weights of a time-decay or W-shaped model on :meth:`Journeys.touch_table`: lead touch = the last
    touch at or before the person's lead creation; opportunity touch = the journey's last touch."""
    lead_at = table["person_id"].map(leads.set_index("person_id")["created_at"])
    jid = table["journey_id"].to_numpy()
    last = np.ones(len(table), dtype=bool)
    last[:-1] = jid[:-1] != jid[1:]
    before_lead = (table["timestamp"] <= lead_at).to_numpy()
    pos = pd.Series(np.where(before_lead, np.arange(len(table)), -1)).groupby(jid).transform("max")
    model.fit(table.assign(lead_touch=pos.to_numpy() == np.arange(len(table)), opportunity_touch=last,
                           _row=np.arange(len(table))))
    return model.touch_credits_.sort_values("_row")["weight"].to_numpy()


def first_touch_at(tables: dict[str, pd.DataFrame]) -> pd.Series:
    ident = tables["identities"].sort_values(["matched_at", "person_id"], kind="stable")
    person_of = ident.drop_duplicates("visitor_id").set_index("visitor_id")["person_id"]
    t = tables["touchpoints"]
    return t["timestamp"].groupby(t["visitor_id"].map(person_of)).min()


def visitors(tables: dict[str, pd.DataFrame], lead_people: set) -> pd.DataFrame:
    t = tables.get("touchpoints")
    if t is None or "identities" not in tables:
        return pd.DataFrame({"visitors": pd.Series(dtype=float), "_visitor_leads": pd.Series(dtype=float)})
    first = t.sort_values(["visitor_id", "timestamp"], kind="stable").drop_duplicates("visitor_id")
    ident = tables["identities"]
    converted = set(ident.loc[ident["person_id"].isin(lead_people), "visitor_id"])
    ch = first["channel"].fillna("(not set)").astype(str).to_numpy()
    df = pd.DataFrame({"channel": ch, "visitors": 1, "_visitor_leads": first["visitor_id"].isin(converted)})
    return df.groupby("channel").sum()


def revenue_by_model(tables, models, period=None, lookback_days=90, level="channel") -> pd.DataFrame:
    from closedloop_nb.metrics.revenue import channel_performance

    leads = lead_credits(tables, "lead_source", lookback_days, level)
    parts = []
    for name in models:
        perf = channel_performance(tables, deal_credits(tables, name, lookback_days, level), leads, period)
        perf = perf.drop(index="Total")[["pipeline", "revenue", "spend", "roas"]]
        parts.append(perf.reset_index().assign(model=name))
    out = pd.concat(parts, ignore_index=True)
    return out[["model", level, "pipeline", "revenue", "spend", "roas"]]


def sensitivity(source, conversion="lead", models=("linear", "shapley"), lookbacks=(30, 60, 90, 180),
                half_lives=(1, 3, 7, 14, 30), lookback_days=90, **journey_options) -> pd.DataFrame:
    from closedloop_nb.attribution.compare import compare_models
    from closedloop_nb.journeys import build_journeys

    frames = []
    options = {"progress": False, **journey_options}
    for days in sorted(set(lookbacks) | {lookback_days}):
        journeys = build_journeys(source, conversion=conversion, lookback_days=days, **options)
        if days in lookbacks:
            t = compare_models(journeys.paths, models, progress=False)
            t["model"] = t["model"] + f", lookback {days} d"
            frames.append(t.assign(lookback_days=days, half_life_days=float("nan")))
        if days == lookback_days:
            touches = journeys.touch_table()
            for h in half_lives:
                c = TimeDecay(half_life_days=h).fit(touches).credits_
                c = c.assign(model=f"time_decay, half-life {h:g} d", lookback_days=days,
                             half_life_days=float(h))
                c["rank"] = c["conversions"].rank(ascending=False, method="min").astype(int)
                frames.append(c)
    cols = ["model", "channel", "conversions", "value", "share", "rank", "lookback_days", "half_life_days"]
    return pd.concat(frames, ignore_index=True)[cols]

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
from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.attribution import MODELS, AttributionModel, PathTable, TimeDecay, WShaped
from closedloop_nb.attribution.journey import JourneyModel

__all__ = ["DEAL_MODELS", "NO_TOUCHES", "acquisition_channel", "deal_credits", "lead_credits"]

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

"""Credit policy for stakeholder reports: every deal split over channels in non-negative shares.

A model's per-deal shares (:func:`closedloop_nb.metrics.deal_credits`) add up to 1, but some models
give a channel a *negative* share of a deal: Shapley values on a fitted value function
(``shapley_model``) and Markov removal effects split back to deals can say a channel's presence made
conversion *less* likely. That is a legitimate analytical statement (notebook 3 shows it), but a
table telling a CMO that Paid Video brought in -£875 of revenue reads as an error. Reports therefore
credit deals by this rule:

1. per deal, negative shares are set to zero;
2. the remaining (positive) shares are divided by their sum, so the deal is again credited in full;
3. a deal with no positive share at all (possible only for credits that do not add up to 1 per
   deal, e.g. built by hand) is split equally over the channels it lists, or, when ``fallback`` is
   given (each person's lead source), credited in full to its person's lead source.

Per deal the shares then lie in [0, 1] and add up to 1, so every channel total is non-negative and the
totals still equal the CRM's revenue and pipeline exactly. Channels a model judged harmful get zero
from the deals where it did; the credit they lose goes to the deal's other channels in proportion to
what the model gave them. Deals with no negative share are left exactly as the model credited them.

Examples
--------
>>> import pandas as pd
>>> c = pd.DataFrame({"deal_id": ["d1", "d1", "d1", "d2"], "channel": ["Email", "Paid Video", "Search",
...                   "Email"], "share": [0.75, -0.25, 0.5, 1.0]})
>>> nonnegative_credits(c)["share"].round(4).tolist()
[0.6, 0.0, 0.4, 1.0]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from closedloop_nb.metrics._ids import isin
from closedloop_nb.metrics.pipeline import credit_level

__all__ = ["POLICY", "deal_trail", "distinct_deals", "distinct_deals_by_stage", "negative_credit",
           "nonnegative_credits"]

#: The rule in one sentence, for report footnotes.
POLICY = ("Credit policy: where the model gives a channel a negative share of a deal, that share is set to "
          "zero and the deal's other shares are scaled up so the deal is still credited in full; totals "
          "are unchanged.")


def nonnegative_credits(credits: pd.DataFrame, fallback: pd.Series | None = None) -> pd.DataFrame:
    """The report credit policy (see module docs): non-negative shares adding up to 1 per deal.

    Parameters
    ----------
    credits
        Per-deal shares as :func:`closedloop_nb.metrics.deal_credits` returns them.
    fallback
        Optional lead source per ``person_id``: where a deal has no positive share, it is credited in
        full to it (default: split equally over the deal's listed channels).

    Returns
    -------
    pandas.DataFrame
        The same rows and columns, ``share`` replaced (zero rows kept, so the caller can see who lost
        credit; they add nothing to any total); ``attrs["adjusted_deals"]`` counts the deals changed.
    """
    level = credit_level(credits)
    out = credits.reset_index(drop=True).copy()
    share = out["share"].astype(float).to_numpy()
    if not np.isfinite(share).all():
        raise ValueError("credits contain missing or infinite shares; build them with deal_credits()")
    positive = np.clip(share, 0.0, None)
    keys = out["deal_id"].to_numpy()
    pos_sum = pd.Series(positive).groupby(keys).transform("sum").to_numpy()
    adjusted = pd.Series(share < 0).groupby(keys).transform("any").to_numpy() | (pos_sum <= 0)
    new = np.where(pos_sum > 0, positive / np.where(pos_sum > 0, pos_sum, 1.0), 0.0)
    none_positive = pos_sum <= 0
    if none_positive.any():
        n_rows = pd.Series(1, index=out.index).groupby(keys).transform("sum").to_numpy()
        new = np.where(none_positive, 1.0 / n_rows, new)
    out["share"] = np.where(adjusted, new, share)
    if none_positive.any() and fallback is not None:
        out = _to_fallback(out, none_positive, fallback, level)
    out.attrs["adjusted_deals"] = int(pd.Series(adjusted).groupby(keys).any().sum())
    return out


def _to_fallback(out: pd.DataFrame, none_positive: np.ndarray, fallback: pd.Series,
                 level: str) -> pd.DataFrame:
    """Deals without any positive share: one row each, in full to the person's lead source."""
    if "person_id" not in out:
        raise ValueError("a fallback lead source needs the credits' person_id column")
    stuck = out[none_positive].drop_duplicates("deal_id")
    source = stuck["person_id"].map(fallback)
    stuck = stuck.assign(**{level: source.where(source.notna(), stuck[level]).to_numpy(), "share": 1.0})
    return pd.concat([out[~none_positive], stuck], ignore_index=True)


def negative_credit(credits: pd.DataFrame, deals: pd.DataFrame | None = None) -> pd.DataFrame:
    """Where a model gives negative shares: per channel, how many deals and how much credit.

    Parameters
    ----------
    credits
        Per-deal shares from any model.
    deals
        Optional ``deals`` table: adds the value (``amount x share``) of the negative shares.

    Returns
    -------
    pandas.DataFrame
        Per channel with at least one negative share: ``deals_negative`` (deals where its share is
        below zero), ``negative_share`` (their sum, in deals), ``deals_credited`` (deals where it has
        any share) and, with ``deals``, ``negative_value``; largest first.

    Examples
    --------
    >>> c = pd.DataFrame({"deal_id": ["d1", "d1", "d2", "d2"], "channel": ["A", "B", "A", "B"],
    ...                   "share": [1.25, -0.25, 0.5, 0.5]})
    >>> negative_credit(c).to_dict("records")
    [{'deals_negative': 1, 'negative_share': -0.25, 'deals_credited': 2}]
    """
    level = credit_level(credits)
    c = credits
    if deals is not None:
        c = c.merge(deals[["deal_id", "amount"]], on="deal_id", how="left")
    neg = c[c["share"] < 0]
    out = pd.DataFrame({
        "deals_negative": neg.groupby(level)["deal_id"].nunique(),
        "negative_share": neg.groupby(level)["share"].sum(),
        "deals_credited": c[isin(c[level], neg[level])].groupby(level)["deal_id"].nunique(),
    })
    if deals is not None:
        out["negative_value"] = (neg["share"] * neg["amount"].fillna(0.0)).groupby(neg[level]).sum()
    out.index.name = level
    return out.sort_values("negative_share")


def distinct_deals(tables: dict[str, pd.DataFrame], credits: pd.DataFrame, period: str | None = None,
                   freq: str = "M") -> pd.DataFrame:
    """How many distinct deals stand behind each channel's credited figures (for small-cell rules).

    Per channel (and ``Total``): ``opportunities``, deals created in ``period`` with a positive share
    for the channel; ``customers``, deals won in it likewise. A channel credited 0.4 of each of ten
    deals rests on ten deals, not on 4.

    Examples
    --------
    >>> t = pd.Timestamp("2024-03-05", tz="UTC")
    >>> deals = pd.DataFrame({"deal_id": ["d1", "d2"], "created_at": [t, t], "won": [True, False],
    ...                       "closed_at": [t, pd.NaT], "amount": [10.0, 20.0]})
    >>> c = pd.DataFrame({"deal_id": ["d1", "d1", "d2"], "channel": ["A", "B", "A"],
    ...                   "share": [0.5, 0.5, 1.0]})
    >>> distinct_deals({"deals": deals}, c, "2024-03").to_dict("index")
    {'A': {'opportunities': 2, 'customers': 1}, 'B': {'opportunities': 1, 'customers': 1}, \
'Total': {'opportunities': 2, 'customers': 1}}
    """
    from closedloop_nb.metrics.pipeline import _period

    level = credit_level(credits)
    deals = tables["deals"]
    d = deals.merge(credits.loc[credits["share"] > 0, ["deal_id", level]], on="deal_id")

    def within(ts: pd.Series) -> pd.Series:
        return pd.Series(True, index=ts.index) if period is None else _period(ts, freq) == str(period)

    won = d["won"].fillna(False).astype(bool) & d["closed_at"].notna()
    created, closed = d[within(d["created_at"])], d[won & within(d["closed_at"])]
    out = pd.DataFrame({"opportunities": created.groupby(level)["deal_id"].nunique(),
                        "customers": closed.groupby(level)["deal_id"].nunique()}).fillna(0).astype(int)
    out.loc["Total"] = [int(created["deal_id"].nunique()), int(closed["deal_id"].nunique())]
    out.index.name = level
    return out


def distinct_deals_by_stage(tables: dict[str, pd.DataFrame], credits: pd.DataFrame,
                            month: str | None = None) -> pd.DataFrame:
    """Distinct deals with a positive share behind each channel x stage cell of a pipeline table
    (deals reaching the stage in ``month``); columns are the stages, as in a pivot of
    :func:`closedloop_nb.metrics.pipeline_by_stage`."""
    from closedloop_nb.metrics.pipeline import _period, deal_stages

    level = credit_level(credits)
    st = deal_stages(tables)
    if month is not None:
        st = st[(_period(st["reached_at"], "M") == str(month)).to_numpy()]
    d = st.merge(credits.loc[credits["share"] > 0, ["deal_id", level]], on="deal_id")
    return d.pivot_table(index=level, columns="stage", values="deal_id", aggfunc="nunique",
                         observed=True).fillna(0).astype(int)


def deal_trail(tables: dict[str, pd.DataFrame], credits: pd.DataFrame, period: str,
               lookback_days: int = 90, model_credits: pd.DataFrame | None = None,
               freq: str = "M") -> pd.DataFrame:
    """Which touches made each deal won in ``period``: its touches in order and each channel's share.

    Parameters
    ----------
    credits
        The report's credits (after :func:`nonnegative_credits`).
    model_credits
        The model's own shares, shown beside them where they differ (negative shares).

    Returns
    -------
    pandas.DataFrame
        One row per won deal, largest first: ``deal_id``, ``person_id``, ``closed_at``, ``amount``,
        ``journey`` (the channels of the touches before the deal, in order; ``(no touches)`` if
        none), ``credit`` ("Email 60% · Paid Search 40%"), and ``model_credit`` when
        ``model_credits`` is given. Ids are the raw ones: pseudonymise them before showing them
        (:func:`closedloop_nb.present.pseudonymise`).
    """
    from closedloop_nb.metrics._engine import engine_of, journey_touches
    from closedloop_nb.metrics.pipeline import _period

    level = credit_level(credits)
    deals = tables["deals"]
    won = deals[deals["won"].fillna(False).astype(bool) & deals["closed_at"].notna()]
    won = won[(_period(won["closed_at"], freq) == str(period)).to_numpy()]
    cols = ["deal_id", "person_id", "closed_at", "amount"]
    if won.empty:
        return pd.DataFrame(columns=[*cols, "journey", "credit"])
    eng = engine_of(tables)
    touches = journey_touches(eng.journeys("opportunity", lookback_days, level), eng)
    # only the won deals' journeys leave the engine (a month's deals, not the build's touches)
    ids = ", ".join("'opp:" + str(d).replace("'", "''") + "'" for d in won["deal_id"].unique())
    trail = touches.frame(f"""
SELECT substr(journey_id, 5) AS deal_id, string_agg(step, ' > ' ORDER BY ts, touch_id) AS journey
FROM {{t}} WHERE converted = 1 AND journey_id IN ({ids}) GROUP BY journey_id""")
    paths = dict(zip(trail["deal_id"], trail["journey"], strict=True))

    def describe(c: pd.DataFrame) -> pd.Series:
        c = c[isin(c["deal_id"], won["deal_id"])]
        c = c[c["share"] != 0].sort_values(["deal_id", "share"], ascending=[True, False])
        return c.groupby("deal_id").apply(
            lambda g: " · ".join(f"{n} {s:.0%}" for n, s in zip(g[level], g["share"], strict=True)),
            include_groups=False)

    out = won[cols].copy()
    out["journey"] = [paths.get(d, "(no touches)") for d in out["deal_id"]]
    shares = describe(credits).to_dict()
    out["credit"] = [shares.get(d, "") for d in out["deal_id"]]
    if model_credits is not None:
        raw = describe(model_credits).to_dict()
        out["model_credit"] = [raw.get(d, "") for d in out["deal_id"]]
    return out.sort_values("amount", ascending=False).reset_index(drop=True)

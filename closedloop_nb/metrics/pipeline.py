"""Pipeline by stage per channel and month, and sales-cycle length.

A deal *reached* a stage when it entered that stage or any later one (a deal won without a recorded
proposal still passed the proposal stage), at the earliest such entry; every deal reached
``opportunity`` when it was created. The value a deal brings to a stage is its amount when it
entered the stage (``stage_history.amount``), or its current amount when that was not recorded;
closed-won value is always the deal's final amount, so won value reconciles to the CRM's revenue.

Examples
--------
>>> import pandas as pd
>>> t = pd.Timestamp("2024-03-01", tz="UTC")
>>> tables = {"deals": pd.DataFrame({"deal_id": ["d1"], "person_id": ["p"], "created_at": [t],
...                                  "amount": [100.0], "won": [True],
...                                  "closed_at": [t + pd.Timedelta(days=40)]}),
...           "stage_history": pd.DataFrame({"deal_id": ["d1"], "stage": ["closed_won"],
...                                          "entered_at": [t + pd.Timedelta(days=40)],
...                                          "amount": [100.0]})}
>>> credits = pd.DataFrame({"deal_id": ["d1", "d1"], "channel": ["Email", "Paid Search"],
...                         "share": [0.25, 0.75]})
>>> p = pipeline_by_stage(tables, credits)
>>> p[p.channel == "Paid Search"][["month", "stage", "deals", "value"]].values.tolist()
[['2024-03', 'opportunity', 0.75, 75.0], ['2024-04', 'proposal', 0.75, 75.0], \
['2024-04', 'closed_won', 0.75, 75.0]]
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from closedloop_nb.schema import DEAL_STAGES

__all__ = ["CYCLE_BANDS", "STAGES", "credit_level", "deal_stages", "first_touch_at", "pipeline_by_stage",
           "sales_cycle"]

#: Stages of the pipeline a deal moves through, in order (closed lost is an exit, not a stage).
STAGES: tuple[str, ...] = tuple(s for s in DEAL_STAGES if s != "closed_lost")

#: Bands of the sales cycle, in days (right-closed): within 1 month, 1-3 months, over 3 months.
CYCLE_BANDS: tuple[tuple[str, float, float], ...] = (
    ("<= 30 days", -np.inf, 30.0), ("31-90 days", 30.0, 90.0), ("> 90 days", 90.0, np.inf))


def deal_stages(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """When each deal reached each pipeline stage, and with what value.

    Returns
    -------
    pandas.DataFrame
        ``deal_id``, ``stage`` (ordered categorical of :data:`STAGES`), ``reached_at``, ``value``:
        one row per deal and stage it reached.
    """
    deals = tables["deals"]
    hist = tables.get("stage_history")
    if hist is None:
        hist = pd.DataFrame({"deal_id": pd.Series(dtype=object), "stage": pd.Series(dtype=object),
                             "entered_at": pd.Series(dtype=deals["created_at"].dtype),
                             "amount": pd.Series(dtype=float)})
    rank = {s: i for i, s in enumerate(STAGES)}
    won = deals["won"].fillna(False).astype(bool) & deals["closed_at"].notna()
    entries = pd.concat([
        pd.DataFrame({"deal_id": deals["deal_id"].to_numpy(), "rank": 0,
                      "at": deals["created_at"].to_numpy(), "amount": np.nan}),
        pd.DataFrame({"deal_id": hist["deal_id"].to_numpy(), "rank": hist["stage"].map(rank).to_numpy(),
                      "at": hist["entered_at"].to_numpy(), "amount": hist.get("amount", np.nan)}),
        pd.DataFrame({"deal_id": deals.loc[won, "deal_id"].to_numpy(), "rank": rank["closed_won"],
                      "at": deals.loc[won, "closed_at"].to_numpy(), "amount": np.nan}),
    ], ignore_index=True)
    entries = entries[entries["rank"].notna()].astype({"rank": int})
    amount = deals.set_index("deal_id")["amount"]
    rows = []
    for r, stage in enumerate(STAGES):
        later = entries[entries["rank"] >= r]
        at = later.groupby("deal_id", sort=False)["at"].min()
        exact = entries[entries["rank"] == r].dropna(subset=["amount"]).sort_values("at")
        value = amount.reindex(at.index)
        if stage != "closed_won":
            recorded = exact.drop_duplicates("deal_id").set_index("deal_id")["amount"]
            value = recorded.reindex(at.index).fillna(value)
        rows.append(pd.DataFrame({"deal_id": at.index.to_numpy(), "stage": stage,
                                  "reached_at": at.to_numpy(), "value": value.to_numpy(float)}))
    out = pd.concat(rows, ignore_index=True)
    out["stage"] = pd.Categorical(out["stage"], categories=list(STAGES), ordered=True)
    return out


def pipeline_by_stage(tables: dict[str, pd.DataFrame], credits: pd.DataFrame,
                      freq: str = "M") -> pd.DataFrame:
    """Deals and value reaching each stage, per channel and period, credited by ``credits``.

    Parameters
    ----------
    tables
        Validated canonical tables (``deals``, optionally ``stage_history``).
    credits
        Per-deal shares, as :func:`closedloop_nb.metrics.deal_credits` returns them; the column
        that is not ``deal_id``, ``person_id`` or ``share`` names what is credited (channel,
        campaign...).
    freq
        Period of the reached date (pandas period alias; ``"M"`` months, ``"Q"`` quarters).

    Returns
    -------
    pandas.DataFrame
        ``month`` (the period, as text), ``stage``, ``<level>``, ``deals`` (credited, fractional
        under multi-touch models), ``value``. For every period and stage the rows add up to the
        deals that reached it and their value.
    """
    level = credit_level(credits)
    _check_credits(credits, tables["deals"])
    reached = deal_stages(tables)
    df = reached.merge(credits[["deal_id", level, "share"]], on="deal_id", how="inner")
    df["month"] = _period(df["reached_at"], freq)
    df["deals"] = df["share"]
    df["value"] = df["value"] * df["share"]
    out = df.groupby(["month", "stage", level], observed=True, sort=True)[["deals", "value"]].sum()
    return out.reset_index()


def sales_cycle(tables: dict[str, pd.DataFrame], credits: pd.DataFrame, by: str | None = None,
                won_only: bool = True) -> pd.DataFrame:
    """Days to close per channel (and ``by``, e.g. ``segment``): from first touch and from lead creation.

    Deals count with their credited share (a deal split 25/75 adds 0.25 and 0.75 of a deal).

    Parameters
    ----------
    tables
        Validated canonical tables (``deals``, ``leads``; ``touchpoints`` and ``identities`` for
        the first touch).
    credits
        Per-deal shares (:func:`closedloop_nb.metrics.deal_credits`).
    by
        A ``leads`` column to split by as well (``segment``).
    won_only
        Only closed-won deals (the usual "sales cycle"); else every closed deal.

    Returns
    -------
    pandas.DataFrame
        Per channel (and ``by``; and ``Total``): ``deals``, ``median_days_from_lead``,
        ``median_days_from_first_touch`` (weighted medians; empty without a touch), and the share
        of deals closing in each of :data:`CYCLE_BANDS` after lead creation.
    """
    level = credit_level(credits)
    deals = tables["deals"]
    closed = deals["closed_at"].notna() & (deals["won"].fillna(False).astype(bool) if won_only else True)
    d = deals.loc[closed, ["deal_id", "person_id", "closed_at"]]
    leads = tables["leads"].set_index("person_id")
    d["from_lead"] = _days(d["closed_at"] - d["person_id"].map(leads["created_at"]))
    d["from_first_touch"] = _days(d["closed_at"] - d["person_id"].map(first_touch_at(tables)))
    keys = [level] if by is None else [level, by]
    if by is not None:
        d[by] = d["person_id"].map(leads[by]).fillna("(not set)").to_numpy()
    df = d.merge(credits[["deal_id", level, "share"]], on="deal_id", how="inner")
    parts = [df.groupby(keys, sort=True)[df.columns.tolist()].apply(_cycle_stats)]
    total = _cycle_stats(df).to_frame().T
    total.index = pd.MultiIndex.from_tuples([("Total",) * len(keys)]) if by else pd.Index(["Total"])
    out = pd.concat([*parts, total])
    out.index.names = keys
    return out


def first_touch_at(tables: Mapping[str, pd.DataFrame]) -> pd.Series:
    """Each person's earliest touch on any of their matched visitors (same matching as journeys:
    a visitor counts for its earliest match), computed in the engine.

    Returns
    -------
    pandas.Series
        The earliest ``timestamp`` per person (indexed by person id).
    """
    from closedloop_nb.metrics._engine import engine_of

    eng = engine_of(tables)
    first = eng.frame("""
WITH idmap AS (
  SELECT visitor_id, person_id FROM (
    SELECT visitor_id, person_id,
           ROW_NUMBER() OVER (PARTITION BY visitor_id ORDER BY matched_at, person_id) AS rn
    FROM identities) i WHERE rn = 1)
SELECT m.person_id, MIN(t.timestamp) AS timestamp
FROM touchpoints t JOIN idmap m ON t.visitor_id = m.visitor_id
WHERE m.person_id IS NOT NULL GROUP BY m.person_id ORDER BY m.person_id""")
    out = first.set_index("person_id")["timestamp"]
    out.index.name = "visitor_id"  # as the pandas group-by named it before
    return out.dropna()


def _cycle_stats(df: pd.DataFrame) -> pd.Series:
    w = df["share"].to_numpy(float)
    out = {"deals": w.sum(), "median_days_from_lead": _weighted_median(df["from_lead"], w),
           "median_days_from_first_touch": _weighted_median(df["from_first_touch"], w)}
    days = df["from_lead"].to_numpy(float)
    known = ~np.isnan(days)
    for name, lo, hi in CYCLE_BANDS:
        inside = known & (days > lo) & (days <= hi)
        out[f"share {name}"] = w[inside].sum() / w[known].sum() if w[known].sum() > 0 else np.nan
    return pd.Series(out)


def _weighted_median(x: pd.Series, w: np.ndarray) -> float:
    """The smallest value with at least half the weight at or below it (NaNs left out)."""
    v = x.to_numpy(float)
    ok = ~np.isnan(v) & (w > 0)
    if not ok.any():
        return np.nan
    order = np.argsort(v[ok], kind="stable")
    v, cw = v[ok][order], np.cumsum(w[ok][order])
    return float(v[np.searchsorted(cw, 0.5 * cw[-1] - 1e-12)])


def _days(delta: pd.Series) -> pd.Series:
    return delta.dt.total_seconds() / 86_400


def _period(ts: pd.Series, freq: str) -> pd.Series:
    ts = pd.to_datetime(ts, utc=True).dt.tz_localize(None)
    return ts.dt.to_period(freq).astype(str)


def credit_level(credits: pd.DataFrame) -> str:
    """The credited attribute of a credits table: its one column besides ids and ``share``."""
    rest = [c for c in credits.columns if c not in ("deal_id", "person_id", "share")]
    if len(rest) != 1 or "share" not in credits:
        raise ValueError(f"credits need deal_id, share and one credited column (channel, campaign...); "
                         f"got {list(credits.columns)}")
    return rest[0]


def _check_credits(credits: pd.DataFrame, deals: pd.DataFrame) -> None:
    """Every deal credited in full exactly once: shares add up to 1 per deal, no deal missing."""
    total = credits.groupby("deal_id")["share"].sum()
    bad = total[~np.isclose(total, 1.0, atol=1e-9)]
    if len(bad):
        raise ValueError(f"credits of {len(bad)} deal(s) do not add up to 1 (e.g. {bad.index[0]}: "
                         f"{bad.iloc[0]:.6g}); build them with deal_credits()")
    from closedloop_nb.metrics._ids import isin  # (pandas' isin on Arrow strings is slow at scale)

    missing = ~isin(deals["deal_id"], total.index)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} deal(s) have no credits (e.g. "
                         f"{deals.loc[missing, 'deal_id'].iloc[0]}); give credits for every deal")

"""Budget moves: marginal return per channel and what-ifs for moving spend between channels.

The assumption is stated, not hidden. Per channel, expected attributed revenue in a period is a power
curve of the period's spend, ``revenue = a * spend ** b``, fitted by quasi-Poisson regression (a GLM
with log link from statsmodels: zeros allowed, spread estimated from the data). ``b`` is the
elasticity: 1 means constant returns, below 1 diminishing returns. The marginal ROAS, the revenue
of the next pound, is ``b * revenue / spend``. Moving money between channels is then read off the
two curves, with an interval from the uncertainty of the fitted parameters, next to the naive
constant-ROAS answer.

What this cannot tell: attributed revenue is not incremental revenue (attribution is observational;
only experiments measure lift), spend and revenue move with season and demand, and a curve says
nothing outside the spend range it saw (such what-ifs are flagged ``extrapolated``). Channels with too
few periods or no variation in spend get no curve.

Examples
--------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> spend = rng.uniform(1_000, 5_000, 36)
>>> panel = pd.DataFrame({"period": range(36), "channel": "Paid Search", "spend": spend,
...                       "revenue": 50 * spend ** 0.6 * rng.gamma(20, 1 / 20, 36)})
>>> c = ResponseCurves().fit(panel).curves_.loc["Paid Search"]
>>> bool(c.elasticity_lower < 0.6 < c.elasticity_upper), bool(c.informative)
(True, True)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from closedloop_nb.errors import NotFittedError
from closedloop_nb.metrics.pipeline import _check_credits, _period, credit_level

__all__ = ["ResponseCurves", "spend_and_revenue", "suggest_move"]


def spend_and_revenue(tables: dict[str, pd.DataFrame], credits: pd.DataFrame, freq: str = "M",
                      lag: int = 0) -> pd.DataFrame:
    """Spend and credited closed-won revenue per period and channel.

    Parameters
    ----------
    lag
        Periods between spending and closing: revenue closed ``lag`` periods later is set against
        the spend (a sales cycle of about two months: ``lag=2``).

    Returns
    -------
    pandas.DataFrame
        ``period``, ``<level>``, ``spend``, ``revenue``; every period with spend on the channel.
    """
    level = credit_level(credits)
    _check_credits(credits, tables["deals"])
    spend = tables["spend"]
    if level not in spend:
        raise ValueError(f"the spend table has no {level!r} column; spend is recorded by "
                         f"{[c for c in ('channel', 'campaign') if c in spend]}")
    s = spend.assign(period=_period(spend["date"], freq)).groupby(["period", level])["cost"].sum()
    d = tables["deals"].merge(credits[["deal_id", level, "share"]], on="deal_id")
    won = d[d["won"].fillna(False).astype(bool) & d["closed_at"].notna()]
    closed = pd.PeriodIndex(_period(won["closed_at"], freq), freq=freq) - lag
    r = (won["amount"] * won["share"]).groupby([closed.astype(str), won[level].to_numpy()]).sum()
    r.index.names = ["period", level]
    out = pd.DataFrame({"spend": s}).join(r.rename("revenue"), how="left").fillna({"revenue": 0.0})
    return out.reset_index()


class ResponseCurves:
    """Power-curve response of attributed revenue to spend, per channel (see module docs).

    Parameters
    ----------
    min_periods
        Fewest periods with spend a channel needs for a curve.
    alpha
        1 - confidence of the intervals.
    max_interval
        Widest elasticity interval still called informative.

    Attributes
    ----------
    curves_
        Per channel: ``periods``, ``spend`` and ``revenue`` per period (means), ``roas``,
        ``elasticity`` with ``elasticity_lower`` / ``_upper``, ``marginal_roas`` at the mean spend,
        ``spend_min`` / ``spend_max`` seen, ``status`` (``fitted`` or why not) and ``informative``:
        whether the elasticity's interval is narrower than ``max_interval`` (spend that hardly
        moved cannot reveal a curve, however it is fitted).
    """

    def __init__(self, min_periods: int = 6, alpha: float = 0.05, max_interval: float = 1.0):
        self.min_periods = min_periods
        self.alpha = alpha
        self.max_interval = max_interval

    def fit(self, panel: pd.DataFrame) -> ResponseCurves:
        """Fit one curve per channel on ``panel`` (as :func:`spend_and_revenue` returns); returns self."""
        import statsmodels.api as sm

        level = [c for c in panel.columns if c not in ("period", "spend", "revenue")]
        if len(level) != 1:
            raise ValueError("panel needs period, spend, revenue and one channel column; "
                             f"got {list(panel.columns)}")
        self.level_ = level[0]
        rows, self.params_ = {}, {}
        for name, g in panel[panel["spend"] > 0].groupby(self.level_, sort=True):
            x, y = np.log(g["spend"].to_numpy(float)), g["revenue"].to_numpy(float)
            row: dict[str, Any] = {"periods": len(g), "spend": g["spend"].mean(), "revenue": y.mean(),
                                   "roas": y.sum() / g["spend"].sum(), "spend_min": g["spend"].min(),
                                   "spend_max": g["spend"].max()}
            status = ("too few periods" if len(g) < self.min_periods else
                      "no revenue" if y.sum() <= 0 else
                      "negative attributed revenue in some periods" if (y < 0).any() else
                      "spend hardly varies" if np.std(x) < 0.05 else "fitted")
            if status == "fitted":
                try:
                    with np.errstate(all="ignore"):
                        res = sm.GLM(y, sm.add_constant(x), family=sm.families.Poisson()).fit(scale="X2")
                    if not np.isfinite(res.params).all() or not np.isfinite(res.bse).all():
                        raise ValueError("no finite estimate")
                except (ValueError, np.linalg.LinAlgError) as exc:
                    rows[name] = {**row, "status": f"fit failed: {exc}", "informative": False}
                    continue
                lo, hi = res.conf_int(self.alpha)[1]
                b = float(res.params[1])
                self.params_[name] = (res.params, res.cov_params())
                row.update(elasticity=b, elasticity_lower=lo, elasticity_upper=hi,
                           marginal_roas=b * self._mean(name, row["spend"]) / row["spend"])
            rows[name] = {**row, "status": status,
                          "informative": status == "fitted" and hi - lo <= self.max_interval}
        self.curves_ = pd.DataFrame.from_dict(rows, orient="index")
        self.curves_.index.name = self.level_
        for col in ("elasticity", "elasticity_lower", "elasticity_upper", "marginal_roas"):
            if col not in self.curves_:
                self.curves_[col] = np.nan
        return self

    def _mean(self, name: str, spend: float | np.ndarray, params: np.ndarray | None = None) -> np.ndarray:
        p = self.params_[name][0] if params is None else params
        return np.exp(p[..., 0] + p[..., 1] * np.log(spend))

    def predict(self, channel: str, spend: float | np.ndarray) -> np.ndarray:
        """Expected attributed revenue of ``channel`` at ``spend`` per period."""
        self._check(channel)
        return self._mean(channel, np.asarray(spend, float))

    def what_if(self, amount: float, from_channel: str, to_channel: str, n_draws: int = 4_000,
                seed: int = 0) -> pd.DataFrame:
        """Move ``amount`` per period from one channel to another, from their mean spend.

        Returns
        -------
        pandas.DataFrame
            One row per channel and ``net``: ``spend_now``, ``spend_new``, ``revenue_now``,
            ``revenue_new``, ``change`` with ``change_lower`` / ``_upper`` (from parameter
            uncertainty), ``change_constant_roas`` (the naive answer), ``extrapolated``.
        """
        for ch in (from_channel, to_channel):
            self._check(ch)
        rng = np.random.default_rng(seed)
        rows, draws = [], []
        for ch, delta in ((from_channel, -amount), (to_channel, amount)):
            c = self.curves_.loc[ch]
            now, new = c["spend"], c["spend"] + delta
            if new < 0:
                raise ValueError(f"{ch} spends {now:,.2f} per period on average; cannot move {amount:,.2f}")
            mean, cov = self.params_[ch]
            p = rng.multivariate_normal(np.asarray(mean), np.asarray(cov), size=n_draws)
            d = self._mean(ch, new, p) - self._mean(ch, now, p)
            draws.append(d)
            change = float(self._mean(ch, new) - self._mean(ch, now))
            rows.append({self.level_: ch, "spend_now": now, "spend_new": new,
                         "revenue_now": float(self._mean(ch, now)), "revenue_new": float(self._mean(ch, new)),
                         "change": change, "change_lower": np.quantile(d, self.alpha / 2),
                         "change_upper": np.quantile(d, 1 - self.alpha / 2),
                         "change_constant_roas": c["roas"] * delta,
                         "extrapolated": not (c["spend_min"] <= new <= c["spend_max"])})
        net = draws[0] + draws[1]
        rows.append({self.level_: "net", "spend_now": rows[0]["spend_now"] + rows[1]["spend_now"],
                     "spend_new": rows[0]["spend_new"] + rows[1]["spend_new"],
                     "revenue_now": rows[0]["revenue_now"] + rows[1]["revenue_now"],
                     "revenue_new": rows[0]["revenue_new"] + rows[1]["revenue_new"],
                     "change": rows[0]["change"] + rows[1]["change"],
                     "change_lower": np.quantile(net, self.alpha / 2),
                     "change_upper": np.quantile(net, 1 - self.alpha / 2),
                     "change_constant_roas": sum(r["change_constant_roas"] for r in rows),
                     "extrapolated": rows[0]["extrapolated"] or rows[1]["extrapolated"]})
        return pd.DataFrame(rows).set_index(self.level_)

    def plot(self, ax: Any = None) -> Any:
        """Each fitted channel's curve over the spend range it saw (dots: the periods); returns the Axes."""
        import matplotlib.pyplot as plt

        self._check()
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        for name in self.params_:
            c = self.curves_.loc[name]
            s = np.linspace(c["spend_min"], c["spend_max"], 50)
            sure = bool(c["informative"])
            (line,) = ax.plot(s, self._mean(name, s), ls="-" if sure else "--",
                              label=f"{name} (b={c['elasticity']:.2f}{'' if sure else ', uninformative'})")
            ax.scatter([c["spend"]], [self._mean(name, c["spend"])], color=line.get_color(), s=15)
        ax.set_xlabel("spend per period")
        ax.set_ylabel("attributed revenue per period")
        ax.set_title("Response curves (fitted; observational, not incremental)")
        ax.legend(fontsize="small")
        return ax

    def _check(self, channel: str | None = None) -> None:
        if not hasattr(self, "curves_"):
            raise NotFittedError("This ResponseCurves is not fitted yet; call fit(panel) first.")
        if channel is not None and channel not in self.params_:
            why = self.curves_["status"].get(channel, "no spend recorded")
            raise ValueError(f"no response curve for {channel!r}: {why}")

    def __repr__(self) -> str:
        fitted = f"; {len(self.params_)} channel(s) fitted" if hasattr(self, "params_") else ""
        return (f"ResponseCurves(min_periods={self.min_periods}, alpha={self.alpha}, "
                f"max_interval={self.max_interval}){fitted}")


def suggest_move(curves: ResponseCurves, amount: float) -> tuple[pd.DataFrame | None, str]:
    """The what-if of moving ``amount`` per period from the informative channel with the lowest
    marginal ROAS to the one with the highest, and a sentence saying what it does and does not show.

    Returns ``(None, reason)`` when fewer than two channels have informative curves.
    """
    curves._check()
    c = curves.curves_[curves.curves_["informative"].astype(bool)]
    if len(c) < 2:
        which = "No channel" if len(c) == 0 else f"Only {c.index[0]}"
        return None, (f"{which} varied its spend enough to estimate how revenue responds, so no budget "
                      "move can be supported from these data; the table above gives average ROAS only. "
                      "Vary spend deliberately (or run a holdout test) to learn the curves.")
    low, high = c["marginal_roas"].idxmin(), c["marginal_roas"].idxmax()
    amount = min(amount, float(c.loc[low, "spend"]))
    w = curves.what_if(amount, low, high)
    net = w.loc["net"]
    sure = net["change_lower"] > 0
    text = (f"Moving {amount:,.0f} per period from {low} (marginal ROAS {c.loc[low, 'marginal_roas']:.2f}) "
            f"to {high} ({c.loc[high, 'marginal_roas']:.2f}) changes expected attributed revenue by "
            f"{net['change']:,.0f} per period (95% interval {net['change_lower']:,.0f} to "
            f"{net['change_upper']:,.0f}). "
            + ("The interval excludes zero. " if sure else "The interval includes zero: the data do not "
               "show this move would help. ")
            + ("It leaves the spend range seen, so it is an extrapolation. " if net["extrapolated"] else "")
            + "Attributed revenue is not incremental revenue: test the move before committing budget.")
    return w, text

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

__all__ = ["MIN_SPEND_RATIO", "PLAUSIBLE_ELASTICITY", "ResponseCurves", "identified", "spend_and_revenue",
           "suggest_move"]


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

    def plot(self, ax: Any = None, currency: str = "") -> Any:
        """Each fitted channel's curve over the spend range it saw (dots: the periods); returns the Axes.

        Channels keep their report colour (:func:`closedloop_nb.metrics.plots.channel_colour`); dashed
        curves are not identified (:func:`identified`) and support no budget move.
        """
        import matplotlib.pyplot as plt

        from closedloop_nb.metrics.plots import _money, _name, channel_colour

        self._check()
        if ax is None:
            _, ax = plt.subplots(figsize=(7, 4.5))
        why = identified(self)
        for name in self.params_:
            c = self.curves_.loc[name]
            s = np.linspace(c["spend_min"], c["spend_max"], 50)
            sure = why.get(name, "x") == ""
            ax.plot(s, self._mean(name, s), ls="-" if sure else "--", color=channel_colour(name),
                    label=f"{_name(name)} (b={c['elasticity']:.2g}{'' if sure else ', not identified'})")
            ax.scatter([c["spend"]], [self._mean(name, c["spend"])], color=channel_colour(name), s=15)
        ax.set_xlabel("spend per period")
        ax.set_ylabel("attributed revenue per period")
        _money(ax, "x", currency)
        _money(ax, "y", currency)
        n_sure = int((why == "").sum())
        ax.set_title(f"{n_sure} of {len(why)} channels have a response curve the data support"
                     if n_sure else "No channel's response curve is identified: spend moved too little",
                     fontsize="medium")
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


#: Elasticities a response curve may plausibly have: above 0 (more spend, more revenue) and at most 1.5
#: (returns that grow faster than spend are a sign of confounding, e.g. spend following demand).
PLAUSIBLE_ELASTICITY = (0.0, 1.5)

#: Least spread of a channel's spend (highest period over lowest) that can reveal a curve.
MIN_SPEND_RATIO = 1.5


def identified(curves: ResponseCurves, plausible: tuple[float, float] = PLAUSIBLE_ELASTICITY,
               min_spend_ratio: float = MIN_SPEND_RATIO) -> pd.Series:
    """Why each channel's curve can or cannot support a budget move: ``""`` when it can.

    A curve speaks only when it was fitted with an informative (narrow) elasticity interval, the
    whole interval lies in ``plausible``, and the channel's spend varied by at least
    ``min_spend_ratio`` (highest period over lowest).
    """
    curves._check()
    out = {}
    lo_ok, hi_ok = plausible
    for name, c in curves.curves_.iterrows():
        if c["status"] != "fitted":
            out[name] = str(c["status"])
        elif not c["informative"]:
            out[name] = (f"elasticity too uncertain ({c['elasticity_lower']:.2g} to "
                         f"{c['elasticity_upper']:.2g})")
        elif not (lo_ok < c["elasticity_lower"] and c["elasticity_upper"] <= hi_ok):
            out[name] = (f"elasticity outside the plausible {lo_ok:g} to {hi_ok:g} "
                         f"(fitted {c['elasticity']:.3g})")
        elif c["spend_max"] < min_spend_ratio * c["spend_min"]:
            out[name] = f"spend hardly varied ({c['spend_min']:,.0f} to {c['spend_max']:,.0f} per period)"
        else:
            out[name] = ""
    return pd.Series(out, dtype=object, name="not_identified")


def suggest_move(curves: ResponseCurves, amount: float, currency: str = "",
                 plausible: tuple[float, float] = PLAUSIBLE_ELASTICITY,
                 min_spend_ratio: float = MIN_SPEND_RATIO) -> tuple[pd.DataFrame | None, str]:
    """The what-if of moving ``amount`` per period from the identified channel with the lowest
    marginal ROAS to the one with the highest, and a sentence saying what it does and does not show.

    It speaks only when both curves are identified (:func:`identified`) and the move stays inside
    the spend range each channel has seen (``amount`` is cut to fit, and the sentence says so);
    otherwise it returns ``(None, reason)``. Figures are rounded to what their interval supports.
    """
    from closedloop_nb.present import clean_text, fmt, round_to_interval

    why = identified(curves, plausible, min_spend_ratio)
    c = curves.curves_[why == ""]
    if len(c) < 2:
        which = "No channel" if len(c) == 0 else f"Only {clean_text(c.index[0])}"
        groups: dict[str, list[str]] = {}
        for name, reason in why.items():
            if reason:
                groups.setdefault(reason.split(" (")[0], []).append(clean_text(name))
        reasons = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in groups.items())
        reasons = reasons or "no channel has spend"
        return None, (f"{which} has a response curve these data can support ({reasons}), "
                      "so no budget move is suggested; the tables above give average return only. Vary spend "
                      "deliberately, or run a holdout test, to learn the curves.")
    low, high = c["marginal_roas"].idxmin(), c["marginal_roas"].idxmax()
    room = min(float(c.loc[low, "spend"] - c.loc[low, "spend_min"]),
               float(c.loc[high, "spend_max"] - c.loc[high, "spend"]))
    if room <= 0:
        return None, (f"Any move from {clean_text(low)} to {clean_text(high)} leaves the spend range the "
                      "data have seen, where the curves say nothing; no budget move is suggested.")
    cut = amount > room
    amount = min(amount, room)
    w = curves.what_if(amount, low, high)
    net = w.loc["net"]
    lo, hi = float(net["change_lower"]), float(net["change_upper"])
    money = lambda v: fmt(round_to_interval(v, lo, hi), "money", currency)  # noqa: E731
    sure = lo > 0
    text = (f"Moving {fmt(amount, 'money', currency)} per period from {clean_text(low)} (marginal ROAS "
            f"{c.loc[low, 'marginal_roas']:.1f}) to {clean_text(high)} ({c.loc[high, 'marginal_roas']:.1f}) "
            f"would change expected attributed revenue by about {money(net['change'])} per period "
            f"(95% interval {money(lo)} to {money(hi)}). "
            + ("(The amount was cut to stay inside the spend range seen.) " if cut else "")
            + ("The interval excludes zero. " if sure else "The interval includes zero: the data do not "
               "show this move would help. ")
            + "Attributed revenue is not incremental revenue: test the move before committing budget.")
    return w, text

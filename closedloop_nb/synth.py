"""Synthetic closed-loop data with known ground truth, deterministic by seed and vectorised.

The generator builds every canonical table: anonymous visitors with multi-touch journeys over a dozen
channels (GA4-style source/medium/campaign/keyword values, including mistagged paid clicks that only
their click id reveals), identity matches on form fill, chat and call (with cross-device visitors,
shared devices and offline-only leads), a lead → MQL → SQL → opportunity → proposal → closed won/lost
pipeline with cycles of weeks to months, subscriptions with expansion, contraction, churn and
reactivation, repeat orders, and daily spend per paid channel and campaign.

Ground truth
------------
A visitor who saw the set of channels ``S`` becomes a lead with probability

    P(lead | S, segment) = b + sum over c in S of beta_c

(an additive model: each channel's effect ``beta_c`` is its *incremental* lift; ``b`` is the share who
would have converted anyway). Under this model the removal effect, the Shapley value and the
incremental lift of a channel coincide for every visitor: ``beta_c`` if the visitor saw ``c``, else 0.
What happens after the lead depends only on the lead's segment, so a channel's expected contribution to
won deals and revenue is ``sum over exposed visitors of beta_c * P(won | segment) * E[amount | segment]``.
:attr:`SyntheticData.ground_truth` reports these expectations per channel (computed exactly from the
exposures, not from the random outcomes), beside a ``(baseline)`` row for conversions no channel caused
and an ``(offline)`` row for leads that never touched the website. Expected won deals and revenue count
every deal's eventual outcome, including deals still open when the data ends.

Regimes of truth
----------------
``generate(..., regime=...)`` chooses how conversion depends on the touches (:data:`REGIMES`). The
default, ``"additive"``, is the model above, and its output is what it always was. The others put the
attribution models where the additive truth is too kind to them. Each defines, for visitor ``i`` who
saw channels ``S_i``, the expected-conversion function ``f_i(T)`` of every subset ``T`` of ``S_i`` (the
visitor's journey with the touches of the channels outside ``T`` removed, everything else unchanged):

    f_i(T) = expit(eta_i + sum over c in T of w_ic + sum over pairs {c, d} in T of delta_cd)

with ``gamma_c = 0.6 (logit(b + beta_c) - logit(b))`` (each channel's additive lift carried to the
log-odds scale at the baseline; the 0.6 offsets the compounding of log-odds so that the visitors of
the additive data would make as many leads) and ``eta_i = logit(b)`` unless a regime says otherwise:

``"synergy"``
    ``w_ic = gamma_c`` if ``c`` in ``S_i``, and pairs of channels interact (:data:`SYNERGIES`: paid social
    with e-mail and with paid search, display with paid search reinforce each other; paid and organic
    search cannibalise each other).
``"confounded"``
    A latent intent ``u_i`` (Bernoulli(0.2)) adds ``2.0`` to ``eta_i``, and an intending visitor's journey
    ends with 1 + Poisson(0.8) extra *capture* touches of Direct, Paid Search (brand queries) or E-mail
    (0.5 / 0.3 / 0.2), hours to days after the last touch. Capture touches do nothing: ``w_ic = gamma_c``
    only if ``c`` has a touch that is not a capture touch. Observed coalition rates of those channels
    are inflated by intent, which no touch caused.
``"recency"``
    A touch's lift decays with the time from it to the end of the journey (where the visitor converts
    or not): ``w_ic = 1.5 gamma_c 2^(-days_ic / 7)``, ``days_ic`` from ``c``'s latest touch to the journey's
    last touch (a 7-day half-life; the 1.5 roughly makes up for the decay on average).
``"saturation"``
    Repeat touches of one channel add less: ``w_ic = gamma_c (1 - 0.4^n_ic) / 0.6`` for ``n_ic``
    touches of ``c`` (the first adds ``gamma_c``, the second 0.4 of that, the third 0.16, ...; the
    additive regime is the limit where repeats add nothing).
``"zero_effect"``
    Display, Paid Video and Organic Video do nothing (``w_ic = 0``) but retarget: a visitor who came by
    Paid Search, Organic Search or Referral gets an extra Display (0.7) or Paid Video (0.3) touch
    mid-journey with probability 0.5, so they co-occur with the visitors who convert.

The true credit of each channel is the Shapley value of ``f_i`` over ``S_i`` (the game ``f_i(T) -
f_i(empty)``: credits add up to the visitor's expected incremental conversions), summed over visitors,
computed exactly from the generating model by :func:`exact_shapley` (all ``2^|S_i|`` subsets; at most
13 channels); ``ground_truth`` reports it in ``expected_leads`` (won deals and revenue weigh it by the
segment as above), the ``(baseline)`` row is ``sum f_i(empty)``, and two more columns give the
incremental lift, ``sum f_i(S_i) - f_i(S_i without c)`` (what a holdout test of the channel measures,
which differs from the Shapley value where effects interact): ``incremental_leads`` and
``incremental_lead_share``. ``incremental_effect`` is the mean Shapley credit per exposed visitor.
Regime draws come from their own random stream, so the journeys before conversion that a regime leaves
alone are those of the additive data with the same seed.

Repeat orders follow a BG/NBD process with Gamma-Gamma spend, and subscription churn a
shifted-beta-geometric process per segment; their true parameters are in
:attr:`SyntheticData.parameters`, so lifetime models can be checked by parameter recovery.

Examples
--------
>>> data = generate(n_visitors=2_000, seed=1)
>>> sorted(data.tables)[:3]
['deals', 'identities', 'leads']
>>> bool(data.ground_truth["expected_leads"].sum() > 0)
True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from closedloop_nb.attribution.games import exact_shapley
from closedloop_nb.schema import TABLES

__all__ = ["CHANNELS", "REGIMES", "SEGMENTS", "SYNERGIES", "ChannelProfile", "SyntheticData", "exact_shapley",
           "generate"]

US_PER_DAY = 86_400 * 1_000_000


@dataclass(frozen=True)
class ChannelProfile:
    """How one channel appears in the data and what it truly does.

    ``variants`` are (source, medium, campaign, keyword, landing page) tuples the channel's touches
    are drawn from; ``click_id`` (type, share of touches) marks paid clicks; ``mistag_share`` of those
    touches lose their UTM medium (only the click id tells they were paid). ``beta`` is the
    incremental lead probability of having seen the channel; ``cost_per_touch`` > 0 makes it paid.
    ``first`` and ``later`` weight how often the channel opens a journey and appears later in it.
    """

    name: str
    variants: tuple[tuple[str, str, str | None, str | None, str], ...]
    beta: float
    first: float
    later: float
    cost_per_touch: float = 0.0
    click_id: tuple[str, float] | None = None
    mistag_share: float = 0.0
    interaction: str = "session"
    lead_source: str = "Other Campaigns"


def _v(source: str, medium: str, campaign: str | None = None, keyword: str | None = None,
       page: str = "/") -> tuple[str, str, str | None, str | None, str]:
    return (source, medium, campaign, keyword, page)


CHANNELS: tuple[ChannelProfile, ...] = (
    ChannelProfile("Paid Search", (
        _v("google", "cpc", "brand_search", "acme crm", "/"),
        _v("google", "cpc", "generic_crm_software", "crm software", "/product"),
        _v("google", "cpc", "generic_crm_software", "best crm for small business", "/pricing"),
        _v("google", "cpc", "competitor_terms", "salesforce alternative", "/compare"),
        _v("bing", "cpc", "generic_crm_software", "crm software", "/product"),
    ), beta=0.030, first=18, later=10, cost_per_touch=3.5, click_id=("gclid", 0.9),
        mistag_share=0.06, interaction="ad_click", lead_source="Paid Search"),
    ChannelProfile("Organic Search", (
        _v("google", "organic", None, None, "/blog/what-is-closed-loop-reporting"),
        _v("google", "organic", None, None, "/"),
        _v("bing", "organic", None, None, "/product"),
        _v("duckduckgo", "organic", None, None, "/blog/crm-checklist"),
    ), beta=0.022, first=20, later=12, lead_source="Organic Search"),
    ChannelProfile("Paid Social", (
        _v("linkedin", "paid_social", "abm_enterprise", None, "/enterprise"),
        _v("facebook", "cpc", "retargeting_q", None, "/pricing"),
        _v("linkedin", "paid_social", "webinar_promo", None, "/webinar"),
    ), beta=0.008, first=12, later=4, cost_per_touch=2.0, click_id=("fbclid", 0.3),
        interaction="ad_click", lead_source="Paid Social"),
    ChannelProfile("Organic Social", (
        _v("linkedin.com", "referral", None, None, "/blog/pipeline-metrics"),
        _v("t.co", "referral", None, None, "/blog/attribution"),
        _v("facebook", "social", "community_post", None, "/"),
    ), beta=0.006, first=6, later=3, lead_source="Social Media"),
    ChannelProfile("Email", (
        _v("newsletter", "email", "monthly_newsletter", None, "/blog"),
        _v("hubspot", "email", "nurture_sequence", None, "/case-studies"),
        _v("newsletter", "email", "product_update", None, "/product"),
    ), beta=0.018, first=2, later=14, interaction="email_click", lead_source="Email Marketing"),
    ChannelProfile("Display", (
        _v("google", "display", "awareness_banners", None, "/"),
        _v("criteo", "display", "retargeting_display", None, "/pricing"),
    ), beta=0.003, first=12, later=5, cost_per_touch=0.8, click_id=("gclid", 0.5),
        interaction="ad_click", lead_source="Paid Search"),
    ChannelProfile("Referral", (
        _v("g2.com", "referral", None, None, "/reviews"),
        _v("capterra.com", "referral", None, None, "/"),
        _v("partner-agency.co.uk", "referral", None, None, "/partners"),
    ), beta=0.030, first=6, later=3, lead_source="Referrals"),
    ChannelProfile("Direct", (
        _v("(direct)", "(none)", None, None, "/"),
        _v("(direct)", "(none)", None, None, "/login"),
        _v("(direct)", "(none)", None, None, "/pricing"),
    ), beta=0.004, first=6, later=30, lead_source="Direct Traffic"),
    ChannelProfile("Paid Video", (
        _v("youtube", "cpv", "explainer_video", None, "/product"),
    ), beta=0.005, first=4, later=2, cost_per_touch=1.2, interaction="ad_click",
        lead_source="Paid Social"),
    ChannelProfile("Affiliates", (
        _v("partnerstack", "affiliate", "partner_program", None, "/partners"),
    ), beta=0.015, first=3, later=1, cost_per_touch=4.0, lead_source="Referrals"),
    ChannelProfile("Organic Video", (
        _v("youtube.com", "referral", None, None, "/webinar"),
    ), beta=0.004, first=3, later=2, lead_source="Social Media"),
    ChannelProfile("Cross-network", (
        _v("google", "cpc", "pmax_cross-network", None, "/"),
    ), beta=0.010, first=5, later=4, cost_per_touch=2.5, click_id=("gclid", 0.9),
        interaction="ad_click", lead_source="Paid Search"),
    ChannelProfile("Unassigned", (
        _v("q3_promo", "blast", "q3_promo", None, "/offer"),
    ), beta=0.0, first=1, later=1, lead_source="Other Campaigns"),
)

#: Segment -> (share of visitors, mean deal amount, funnel probabilities lead->MQL, MQL->SQL,
#: SQL->opportunity, opportunity->proposal, proposal->won, sales-cycle multiplier,
#: sBG churn (alpha, beta) per month).
SEGMENTS: dict[str, dict[str, object]] = {
    "SMB": {"share": 0.60, "amount": 6_000.0, "funnel": (0.60, 0.55, 0.70, 0.70, 0.50),
            "cycle": 0.6, "churn": (0.9, 12.0)},
    "Mid-Market": {"share": 0.30, "amount": 24_000.0, "funnel": (0.62, 0.60, 0.72, 0.70, 0.45),
                   "cycle": 1.2, "churn": (0.8, 18.0)},
    "Enterprise": {"share": 0.10, "amount": 90_000.0, "funnel": (0.65, 0.62, 0.75, 0.72, 0.40),
                   "cycle": 2.5, "churn": (0.7, 30.0)},
}
#: Channel preference per segment (multiplies the channel's weights).
_SEGMENT_TILT = {
    "SMB": {"Display": 1.5, "Affiliates": 1.6, "Organic Social": 1.4, "Paid Social": 0.8},
    "Mid-Market": {},
    "Enterprise": {"Referral": 2.5, "Paid Social": 1.8, "Display": 0.5, "Affiliates": 0.3,
                   "Paid Search": 1.2},
}


#: The regimes of truth :func:`generate` can draw conversions from (see the module docstring).
REGIMES: tuple[str, ...] = ("additive", "synergy", "confounded", "recency", "saturation", "zero_effect")
#: Channel terms on the log-odds scale are this times the log-odds lift of the additive ``beta``.
GAMMA_SCALE = 0.6
#: Pairs of channels whose joint presence adds to the log-odds of conversion (regime "synergy").
SYNERGIES: dict[tuple[str, str], float] = {
    ("Paid Social", "Email"): 1.0,
    ("Paid Social", "Paid Search"): 0.8,
    ("Display", "Paid Search"): 1.2,
    ("Paid Search", "Organic Search"): -0.8,
}
#: Regime "confounded": share of visitors with purchase intent, its log-odds, the channels of capture
#: touches with their probabilities, the mean number of capture touches beyond the first.
INTENT_SHARE, INTENT_LOGIT = 0.2, 2.0
CAPTURE = {"Direct": 0.5, "Paid Search": 0.3, "Email": 0.2}
CAPTURE_EXTRA_MEAN = 0.8
#: Regime "zero_effect": channels that do nothing, the channels they retarget and their mix.
ZERO_EFFECT = ("Display", "Paid Video", "Organic Video")
RETARGETED_FROM = ("Paid Search", "Organic Search", "Referral")
RETARGET = {"Display": 0.7, "Paid Video": 0.3}
RETARGET_SHARE = 0.5
#: Regime "recency": half-life in days of a touch's lift and the lift multiplier; regime
#: "saturation": the ratio of each repeat touch's lift to the one before.
RECENCY_HALF_LIFE_DAYS, RECENCY_MULTIPLIER = 7.0, 1.5
SATURATION_RATIO = 0.4


@dataclass
class SynthConfig:
    """Settings of :func:`generate` (recorded in the ground truth)."""

    n_visitors: int = 20_000
    seed: int = 0
    start: str = "2024-01-01"
    months: int = 12
    baseline: float = 0.006
    mean_touches: float = 2.5
    mean_gap_days: float = 5.0
    cross_device_share: float = 0.15
    offline_lead_share: float = 0.06
    shared_device_share: float = 0.01
    dirty_share: float = 0.002
    currency: str = "GBP"
    bgnbd: dict[str, float] = field(
        default_factory=lambda: {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5})
    gamma_gamma: dict[str, float] = field(
        default_factory=lambda: {"p": 6.0, "q": 4.0, "gamma": 150.0})


@dataclass
class SyntheticData:
    """Canonical tables plus the truth they were generated from.

    Attributes
    ----------
    tables
        ``{table name: pyarrow.Table}`` in the canonical schema.
    ground_truth
        One row per channel (plus ``(baseline)`` and ``(offline)``): incremental effect, exposed
        visitors, touches, expected leads, won deals and revenue, their shares, spend and true ROI.
    parameters
        The configuration and the true parameters of every process (JSON-serialisable).
    exposures
        One row per anonymous visitor (first device): ``visitor_id``, ``segment``, ``lead`` (became
        a lead) and one boolean column per channel, true if the visitor saw it before converting
        (regime "confounded" adds ``intent``). The truth for journey-level checks; in memory only
        (not written).
    visitor_truth
        Regimes other than "additive" only (in memory, not written): ``{"credit": n x channels
        Shapley credit, "lift": n x channels incremental lift, "baseline": f_i(empty), "p": f_i(S_i),
        "end_us": time of each visitor's last touch before conversion (µs, -1 without touches)}``,
        rows aligned with ``exposures``, columns with :data:`CHANNELS`.
    """

    tables: dict[str, pa.Table]
    ground_truth: pd.DataFrame
    parameters: dict[str, object]
    exposures: pd.DataFrame | None = None
    visitor_truth: dict[str, np.ndarray] | None = None

    def frame(self, name: str) -> pd.DataFrame:
        """Table ``name`` as a pandas DataFrame."""
        return self.tables[name].to_pandas()

    def frames(self) -> dict[str, pd.DataFrame]:
        """All tables as pandas DataFrames."""
        return {k: self.frame(k) for k in self.tables}

    def write(self, directory: str | Path) -> list[Path]:
        """Write every table and the ground truth as Parquet (plus parameters as JSON)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, table in self.tables.items():
            path = directory / f"{name}.parquet"
            pq.write_table(table, path, compression="zstd")
            paths.append(path)
        gt = directory / "ground_truth.parquet"
        self.ground_truth.to_parquet(gt, index=False)
        js = directory / "ground_truth.json"
        js.write_text(json.dumps(self.parameters, indent=2, default=str) + "\n", "utf-8")
        return [*paths, gt, js]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={t.num_rows:,}" for k, t in self.tables.items())
        return f"<SyntheticData {sizes}>"


# --- helpers -----------------------------------------------------------------------------------

INTERACTIONS = ("session", "ad_click", "call", "chat", "form", "email_click", "offline")
_CONVERSION_METHODS = (("form", 0.70), ("chat", 0.15), ("call", 0.15))
_OFFLINE_SOURCES = ("Trade Show", "Outbound", "Partner")
_WEEK_US = 7 * US_PER_DAY


def _ids(prefix: str, n: int, width: int = 7, start: int = 1) -> pa.Array:
    # built as large_string (64-bit offsets: tens of millions of ids exceed 2 GiB of text on the way)
    nums = pc.cast(pa.array(np.arange(start, start + n, dtype=np.int64)), pa.large_string())
    ids = pc.binary_join_element_wise(pa.scalar(prefix, pa.large_string()), pc.utf8_lpad(nums, width, "0"),
                                      pa.scalar("", pa.large_string()))
    return ids.cast(pa.string()) if ids.nbytes < 2**31 - 2**20 else ids


def _ts(us: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    mask = None if valid is None else ~valid
    return pa.array(np.asarray(us, dtype=np.int64).astype("datetime64[us]"),
                    type=pa.timestamp("us", tz="UTC"), mask=mask)


def _strings(codes: np.ndarray, values: list[str | None]) -> pa.Array:
    """Strings from small-vocabulary codes without one Python object per row."""
    return pc.take(pa.array(values, type=pa.string()), pa.array(np.asarray(codes, dtype=np.int32)))


def _pick(rng: np.random.Generator, cdf_rows: np.ndarray, row: np.ndarray) -> np.ndarray:
    """One category per element, drawn from the CDF ``cdf_rows[row]``."""
    u = rng.random(len(row))
    out = np.empty(len(row), dtype=np.int16)
    for r in range(cdf_rows.shape[0]):
        m = row == r
        out[m] = np.searchsorted(cdf_rows[r], u[m], side="right")
    return np.minimum(out, cdf_rows.shape[1] - 1)


def _table(name: str, columns: dict[str, pa.Array]) -> pa.Table:
    return pa.table({c: columns[c] for c in TABLES[name].names if c in columns})


def _segment_array(key: str, seg: np.ndarray, seg_names: list[str]) -> np.ndarray:
    return np.array([SEGMENTS[s][key] for s in seg_names])[seg]


def _p_won(seg_names: list[str]) -> np.ndarray:
    """P(lead eventually closes won) per segment: the product of its funnel probabilities."""
    return np.array([np.prod(SEGMENTS[s]["funnel"]) for s in seg_names])  # type: ignore[arg-type]


# --- the generator -----------------------------------------------------------------------------


def generate(n_visitors: int = 20_000, seed: int = 0, regime: str = "additive",
             **settings: object) -> SyntheticData:
    """Generate a closed-loop dataset with known ground truth.

    Parameters
    ----------
    n_visitors
        Anonymous visitors (each makes ``mean_touches`` touches on average).
    seed
        Seed: the same seed and settings give identical tables.
    regime
        How conversion depends on the touches, one of :data:`REGIMES` (see the module docstring);
        ``"additive"`` (the default) gives the data this function always gave.
    **settings
        Any other field of :class:`SynthConfig` (``start``, ``months``, ``baseline``,
        ``dirty_share``, ...).

    Returns
    -------
    SyntheticData
    """
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    cfg = SynthConfig(n_visitors=n_visitors, seed=seed, **settings)  # type: ignore[arg-type]
    rng = np.random.default_rng(cfg.seed)
    start = pd.Timestamp(cfg.start, tz="UTC")
    end = start + pd.DateOffset(months=cfg.months)
    t0, t1 = start.value // 1000, end.value // 1000
    seg_names = list(SEGMENTS)

    segment = rng.choice(len(seg_names), size=cfg.n_visitors,
                         p=[SEGMENTS[s]["share"] for s in seg_names]).astype(np.int8)
    journeys = _journeys(rng, cfg, segment, t0, t1, seg_names)
    intent, vtruth = None, None
    if regime != "additive":  # own stream: the additive draws stay as they were
        journeys, intent = _regime_touches(np.random.default_rng([cfg.seed, 18]), regime, journeys,
                                           cfg.n_visitors, t0, t1)
    seen = np.zeros((cfg.n_visitors, len(CHANNELS)), dtype=bool)
    seen[journeys["visitor"], journeys["channel"]] = True
    if regime != "additive":
        vtruth = _regime_truth(regime, cfg, journeys, seen, intent)
    leads = _leads(rng, cfg, segment, seen, journeys, None if vtruth is None else vtruth["p"])
    pipe = _pipeline(rng, leads, seg_names, t1)
    touches = _all_touches(rng, cfg, journeys, leads, pipe, t1)

    vid = _visitor_ids(rng, touches["n_ids"], t0)
    tables = {
        "touchpoints": _touchpoints(rng, touches, vid),
        "identities": _identities(rng, cfg, leads, touches, vid, t1),
        **_crm(rng, cfg, leads, pipe, seg_names, t1),
    }
    won = pipe["closed"] & pipe["won"]
    tables["orders"] = _orders(rng, cfg, leads, pipe, won, t1)
    tables["subscriptions"], churn_truth = _subscriptions(rng, cfg, leads, pipe, won, seg_names, t0, t1)
    tables["spend"] = _spend(rng, cfg, journeys, touches)
    if cfg.dirty_share > 0:
        tables = _add_dirt(rng, cfg, tables)
    tables = {k: tables[k] for k in TABLES if k in tables}  # optional tables (deal_contacts, fx_rates) absent
    truth = _ground_truth(cfg, segment, seen, leads, tables["spend"], seg_names, vtruth)
    params = {
        "config": asdict(cfg),
        "channels": {c.name: {"beta": c.beta, "cost_per_touch": c.cost_per_touch} for c in CHANNELS},
        "segments": {k: dict(v) for k, v in SEGMENTS.items()},
        "p_won_by_segment": dict(zip(seg_names, _p_won(seg_names).tolist(), strict=True)),
        "bgnbd": cfg.bgnbd,
        "gamma_gamma": cfg.gamma_gamma,
        "sbg_monthly_churn": churn_truth,
        "period": {"start": str(start), "end": str(end)},
        "counts": {
            "web_leads": int((leads["visitor"] >= 0).sum()),
            "offline_leads": int((leads["visitor"] < 0).sum()),
            "cross_device_people": int((leads["device2"] >= 0).sum()),
            "shared_device_identities": touches["n_shared"],
        },
    }
    if regime != "additive":
        params["regime"] = _regime_parameters(regime)
    lead = np.zeros(cfg.n_visitors, dtype=bool)
    lead[leads["visitor"].to_numpy()[leads["visitor"].to_numpy() >= 0]] = True
    exposures = pd.DataFrame({
        "visitor_id": vid.slice(0, cfg.n_visitors).to_numpy(zero_copy_only=False),
        "segment": pd.Categorical.from_codes(segment, seg_names),
        "lead": lead,
        **{c.name: seen[:, i] for i, c in enumerate(CHANNELS)},
    })
    if intent is not None:
        exposures["intent"] = intent
    return SyntheticData(tables, truth, params, exposures, vtruth)


def _journeys(rng: np.random.Generator, cfg: SynthConfig, segment: np.ndarray, t0: int, t1: int,
              seg_names: list[str]) -> dict[str, np.ndarray]:
    """Touches before any conversion: visitor, time (µs) and channel, in visitor-time order."""
    n_touch = rng.geometric(1.0 / cfg.mean_touches, size=cfg.n_visitors)
    vidx = np.repeat(np.arange(cfg.n_visitors, dtype=np.int64), n_touch)
    first_pos = np.concatenate([[0], np.cumsum(n_touch)[:-1]])
    is_first = np.zeros(len(vidx), dtype=bool)
    is_first[first_pos] = True
    gaps = rng.exponential(cfg.mean_gap_days * US_PER_DAY, size=len(vidx)).astype(np.int64)
    gaps[is_first] = 0
    cum = np.cumsum(gaps)
    cum -= np.repeat(cum[first_pos], n_touch)
    ts = rng.integers(t0, t1, size=cfg.n_visitors)[vidx] + cum
    cdf = []
    for s in seg_names:
        tilt = _SEGMENT_TILT.get(s, {})
        for attr in ("first", "later"):
            w = np.array([getattr(c, attr) * tilt.get(c.name, 1.0) for c in CHANNELS])
            cdf.append(np.cumsum(w / w.sum()))
    row = segment[vidx].astype(np.int16) * 2 + (~is_first).astype(np.int16)
    channel = _pick(rng, np.vstack(cdf), row).astype(np.int8)
    keep = ts < t1
    return {"visitor": vidx[keep], "ts": ts[keep], "channel": channel[keep]}


# --- regimes of truth ----------------------------------------------------------------------------


def _channel_index(name: str) -> int:
    return [c.name for c in CHANNELS].index(name)


def _sorted_journeys(visitor: np.ndarray, ts: np.ndarray, channel: np.ndarray,
                     capture: np.ndarray) -> dict[str, np.ndarray]:
    order = np.lexsort((ts, visitor))
    return {"visitor": visitor[order], "ts": ts[order], "channel": channel[order].astype(np.int8),
            "capture": capture[order]}


def _regime_touches(rng: np.random.Generator, regime: str, journeys: dict[str, np.ndarray],
                    n_visitors: int, t0: int, t1: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The touches a regime adds (capture touches of intending visitors, retargeting) and the latent
    intent (regime "confounded"); journeys stay in visitor-time order, ``capture`` marks added
    touches that do nothing."""
    visitor, ts, channel = journeys["visitor"], journeys["ts"], journeys["channel"]
    capture = np.zeros(len(visitor), dtype=bool)
    has = np.zeros(n_visitors, dtype=bool)
    has[visitor] = True
    last_ts = np.full(n_visitors, -1, dtype=np.int64)
    last_ts[visitor] = ts  # in visitor-time order: the last write is the latest touch
    first_ts = np.full(n_visitors, -1, dtype=np.int64)
    first_ts[visitor[::-1]] = ts[::-1]
    intent = None
    if regime == "confounded":
        intent = rng.random(n_visitors) < INTENT_SHARE
        who = np.flatnonzero(intent & has)
        k = 1 + rng.poisson(CAPTURE_EXTRA_MEAN, size=len(who))
        owner = np.repeat(who, k)
        # hours to days after the journey's last touch, in order
        gaps = rng.exponential(1.0 * US_PER_DAY, size=len(owner)).astype(np.int64) + 3_600_000_000
        start = np.concatenate([[0], np.cumsum(k)[:-1]])
        cum = np.cumsum(gaps)
        cum -= np.repeat(cum[start] - gaps[start], k)
        new_ts = last_ts[owner] + cum
        names = list(CAPTURE)
        new_ch = np.array([_channel_index(n) for n in names])[
            rng.choice(len(names), size=len(owner), p=list(CAPTURE.values()))]
        keep = new_ts < t1
        journeys = _sorted_journeys(np.concatenate([visitor, owner[keep]]),
                                    np.concatenate([ts, new_ts[keep]]),
                                    np.concatenate([channel, new_ch[keep]]),
                                    np.concatenate([capture, np.ones(int(keep.sum()), bool)]))
    elif regime == "zero_effect":
        source = np.isin(channel, [_channel_index(n) for n in RETARGETED_FROM])
        came = np.zeros(n_visitors, dtype=bool)
        came[visitor[source]] = True
        who = np.flatnonzero(came & (rng.random(n_visitors) < RETARGET_SHARE))
        # mid-journey: between the first and the last touch (before the last one of one-touch journeys)
        span = last_ts[who] - first_ts[who]
        u = rng.random(len(who))
        new_ts = np.where(span > 0, first_ts[who] + (u * span).astype(np.int64),
                          last_ts[who] - (1 + u * 3 * US_PER_DAY).astype(np.int64))
        new_ts = np.clip(new_ts, t0, last_ts[who] - 1)
        names = list(RETARGET)
        new_ch = np.array([_channel_index(n) for n in names])[
            rng.choice(len(names), size=len(who), p=list(RETARGET.values()))]
        journeys = _sorted_journeys(np.concatenate([visitor, who]), np.concatenate([ts, new_ts]),
                                    np.concatenate([channel, new_ch]),
                                    np.concatenate([capture, np.zeros(len(who), bool)]))
    else:
        journeys = {**journeys, "capture": capture}
    return journeys, intent


def _logit(p: np.ndarray | float) -> np.ndarray:
    return np.log(p) - np.log1p(-np.asarray(p))


def _regime_terms(regime: str, cfg: SynthConfig, journeys: dict[str, np.ndarray], seen: np.ndarray,
                  intent: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``eta_i``, ``w_ic`` (visitors x channels) and ``delta`` (channels x channels) of the regime's
    expected-conversion function (module docstring)."""
    n, n_ch = seen.shape
    beta = np.array([c.beta for c in CHANNELS])
    gamma = GAMMA_SCALE * (_logit(cfg.baseline + beta) - _logit(cfg.baseline))
    eta = np.full(n, float(_logit(cfg.baseline)))
    delta = np.zeros((n_ch, n_ch))
    v, c = journeys["visitor"], journeys["channel"].astype(np.int64)
    if regime == "synergy":
        for (a, b), d in SYNERGIES.items():
            delta[_channel_index(a), _channel_index(b)] = delta[_channel_index(b), _channel_index(a)] = d
        w = gamma * seen
    elif regime == "confounded":
        eta = eta + INTENT_LOGIT * intent
        effective = np.zeros_like(seen)
        real = ~journeys["capture"]
        effective[v[real], c[real]] = True
        w = gamma * effective
    elif regime == "recency":
        end = np.full(n, -1, dtype=np.int64)
        end[v] = journeys["ts"]
        latest = np.full(n * n_ch, np.iinfo(np.int64).min, dtype=np.int64)
        np.maximum.at(latest, v * n_ch + c, journeys["ts"])
        days = (end[:, None] - latest.reshape(n, n_ch)) / US_PER_DAY
        decay = np.where(seen, 2.0 ** (-np.where(seen, days, 0.0) / RECENCY_HALF_LIFE_DAYS), 0.0)
        w = RECENCY_MULTIPLIER * gamma * decay
    elif regime == "saturation":
        count = np.bincount(v * n_ch + c, minlength=n * n_ch).reshape(n, n_ch)
        w = gamma * (1 - SATURATION_RATIO ** count) / (1 - SATURATION_RATIO)
    elif regime == "zero_effect":
        gamma = gamma.copy()
        gamma[[_channel_index(z) for z in ZERO_EFFECT]] = 0.0
        w = gamma * seen
    else:  # pragma: no cover - guarded by generate
        raise ValueError(regime)
    return eta, w, delta


def _regime_truth(regime: str, cfg: SynthConfig, journeys: dict[str, np.ndarray], seen: np.ndarray,
                  intent: np.ndarray | None) -> dict[str, np.ndarray]:
    """Each visitor's conversion probability, exact Shapley credit and incremental lift."""
    eta, w, delta = _regime_terms(regime, cfg, journeys, seen, intent)
    credit, lift, base, full = exact_shapley(eta, w, seen, delta)
    end = np.full(len(eta), -1, dtype=np.int64)
    end[journeys["visitor"]] = journeys["ts"]
    return {"credit": credit, "lift": lift, "baseline": base, "p": full, "end_us": end}


def _regime_parameters(regime: str) -> dict[str, object]:
    """The regime's settings, recorded in the parameters (JSON-serialisable)."""
    out: dict[str, object] = {"name": regime, "link": "logit"}
    if regime == "synergy":
        out["synergies"] = {f"{a} + {b}": d for (a, b), d in SYNERGIES.items()}
    elif regime == "confounded":
        out.update(intent_share=INTENT_SHARE, intent_logit=INTENT_LOGIT, capture=CAPTURE,
                   capture_extra_mean=CAPTURE_EXTRA_MEAN)
    elif regime == "recency":
        out.update(half_life_days=RECENCY_HALF_LIFE_DAYS, multiplier=RECENCY_MULTIPLIER)
    elif regime == "saturation":
        out["ratio"] = SATURATION_RATIO
    elif regime == "zero_effect":
        out.update(zero_effect=list(ZERO_EFFECT), retargeted_from=list(RETARGETED_FROM), retarget=RETARGET,
                   retarget_share=RETARGET_SHARE)
    return out


def _leads(rng: np.random.Generator, cfg: SynthConfig, segment: np.ndarray, seen: np.ndarray,
           journeys: dict[str, np.ndarray], p: np.ndarray | None = None) -> pd.DataFrame:
    """Web leads (the additive conversion model unless ``p`` gives each visitor's conversion
    probability) and offline-only leads, ordered by creation time."""
    if p is None:
        p = np.full(cfg.n_visitors, cfg.baseline)
        for c, profile in enumerate(CHANNELS):
            p += profile.beta * seen[:, c]
    converts = (rng.random(cfg.n_visitors) < p) & seen.any(axis=1)
    v = np.flatnonzero(converts)
    n_j = len(journeys["visitor"])
    last = np.full(cfg.n_visitors, -1, dtype=np.int64)
    last[journeys["visitor"]] = np.arange(n_j)
    first = np.full(cfg.n_visitors, -1, dtype=np.int64)
    first[journeys["visitor"][::-1]] = np.arange(n_j)[::-1]
    methods = [m for m, _ in _CONVERSION_METHODS]
    web = pd.DataFrame({
        "visitor": v,
        "segment": segment[v],
        "created_us": journeys["ts"][last[v]],
        "conv_touch": last[v],
        "first_channel": journeys["channel"][first[v]].astype(np.int16),
        "method": rng.choice(len(methods), size=len(v), p=[w for _, w in _CONVERSION_METHODS]),
    })
    n_off = int(round(len(web) * cfg.offline_lead_share))
    lo, hi = int(journeys["ts"].min()), int(journeys["ts"].max())
    offline = pd.DataFrame({
        "visitor": np.full(n_off, -1, dtype=np.int64),
        "segment": rng.choice(len(SEGMENTS), size=n_off,
                              p=[s["share"] for s in SEGMENTS.values()]).astype(np.int8),
        "created_us": rng.integers(lo, hi, size=n_off),
        "conv_touch": np.full(n_off, -1, dtype=np.int64),
        "first_channel": np.full(n_off, -1, dtype=np.int16),
        "method": np.full(n_off, -1),
    })
    leads = pd.concat([web, offline], ignore_index=True)
    leads = leads.sort_values(["created_us", "visitor"], kind="stable").reset_index(drop=True)
    is_web = leads["visitor"].to_numpy() >= 0
    two = is_web & (rng.random(len(leads)) < cfg.cross_device_share)
    leads["device2"] = np.where(two, cfg.n_visitors + np.cumsum(two) - 1, -1)
    # some offline leads carry a cookie id from a CRM import that never shows up in touchpoints
    crm = ~is_web & (rng.random(len(leads)) < 0.3)
    leads["crm_visitor"] = np.where(crm, cfg.n_visitors + int(two.sum()) + np.cumsum(crm) - 1, -1)
    return leads


def _pipeline(rng: np.random.Generator, leads: pd.DataFrame, seg_names: list[str],
              t1: int) -> pd.DataFrame:
    """Each lead down the funnel: time of each stage in µs (-1: not reached by the data's end)."""
    n = len(leads)
    seg = leads["segment"].to_numpy()
    funnel = np.array([SEGMENTS[s]["funnel"] for s in seg_names])[seg]
    cycle = _segment_array("cycle", seg, seg_names)
    reach = np.cumprod(rng.random((n, 5)) < funnel, axis=1).astype(bool)
    delays = rng.exponential(1.0, size=(n, 5)) * np.array([3.0, 10.0, 7.0, 14.0, 25.0]) * US_PER_DAY
    delays[:, 3:] *= cycle[:, None]
    times = leads["created_us"].to_numpy()[:, None] + np.cumsum(delays, axis=1).astype(np.int64)
    lost_after = (rng.exponential(20.0, size=n) * cycle * US_PER_DAY).astype(np.int64)
    lost_at = np.where(reach[:, 3], times[:, 3], times[:, 2]) + lost_after
    close = np.where(reach[:, 4], times[:, 4], lost_at)
    mean_amount = _segment_array("amount", seg, seg_names)
    amount = np.round(rng.lognormal(np.log(mean_amount) - 0.125, 0.5) / 100.0) * 100.0
    out = pd.DataFrame({"amount": amount, "won": reach[:, 4]})
    prev = np.zeros(n, dtype=np.int64)  # a stage is reached only if the one before it was
    for j, col in enumerate(("mql_us", "sql_us", "opp_us", "prop_us")):
        t = np.where(reach[:, j] & (times[:, j] < t1) & (prev >= 0), times[:, j], -1)
        out[col] = prev = t
    out["close_us"] = np.where((out["opp_us"] >= 0) & (close < t1), close, -1)
    out.loc[out["won"] & (out["prop_us"] < 0), "close_us"] = -1
    out["closed"] = out["close_us"] >= 0
    return out


def _all_touches(rng: np.random.Generator, cfg: SynthConfig, journeys: dict[str, np.ndarray],
                 leads: pd.DataFrame, pipe: pd.DataFrame, t1: int) -> dict:
    """Journeys plus nurture touches, with conversion touches marked and second devices split off."""
    n_j = len(journeys["visitor"])
    method = np.full(n_j, -1, dtype=np.int16)
    web = leads["visitor"].to_numpy() >= 0
    method[leads["conv_touch"].to_numpy()[web]] = leads["method"].to_numpy()[web]
    # nurture: 0-3 touches between lead and opportunity for leads that reached MQL
    names = [c.name for c in CHANNELS]
    pool = np.array([names.index(n) for n in ("Email", "Direct", "Organic Search", "Paid Search")])
    who = np.flatnonzero(web & (pipe["mql_us"].to_numpy() >= 0))
    lead_of = np.repeat(who, rng.integers(0, 4, size=len(who)))
    lo = leads["created_us"].to_numpy()[lead_of]
    opp = pipe["opp_us"].to_numpy()[lead_of]
    hi = np.where(opp > 0, opp, lo + 30 * US_PER_DAY)
    n_ts = lo + 1 + (rng.random(len(lead_of)) * np.maximum(hi - lo - 1, 1)).astype(np.int64)
    ok = n_ts < t1
    lead_of, n_ts = lead_of[ok], n_ts[ok]
    n_ch = pool[rng.choice(len(pool), size=len(lead_of), p=[0.5, 0.3, 0.12, 0.08])]
    visitor = np.concatenate([journeys["visitor"], leads["visitor"].to_numpy()[lead_of]])
    ts = np.concatenate([journeys["ts"], n_ts])
    channel = np.concatenate([journeys["channel"], n_ch]).astype(np.int16)
    method = np.concatenate([method, np.full(len(lead_of), -1, dtype=np.int16)])
    # second devices: half of a cross-device person's other touches happened on device B
    dev2 = np.full(cfg.n_visitors, -1, dtype=np.int64)
    two = leads["device2"].to_numpy() >= 0
    dev2[leads["visitor"].to_numpy()[two]] = leads["device2"].to_numpy()[two]
    move = (dev2[visitor] >= 0) & (method < 0) & (rng.random(len(visitor)) < 0.5)
    visitor = np.where(move, dev2[visitor], visitor)
    order = np.lexsort((ts, visitor))
    n_ids = cfg.n_visitors + int(two.sum()) + int((leads["crm_visitor"] >= 0).sum())
    return {"visitor": visitor[order], "ts": ts[order], "channel": channel[order],
            "method": method[order], "n_ids": n_ids, "n_shared": 0}


def _visitor_ids(rng: np.random.Generator, n: int, t0: int) -> pa.Array:
    """GA4-style pseudo ids, ``<random>.<first-seen epoch seconds>``, unique."""
    a = pc.cast(pa.array(rng.permutation(np.arange(10**9, 10**9 + n, dtype=np.int64))), pa.string())
    b = pc.cast(pa.array(t0 // 1_000_000 + rng.integers(0, 10**7, size=n)), pa.string())
    return pc.binary_join_element_wise(a, b, ".")


def _touchpoints(rng: np.random.Generator, touches: dict, vid: pa.Array) -> pa.Table:
    ch = touches["channel"]
    n = len(ch)
    n_var = np.array([len(c.variants) for c in CHANNELS])
    offsets = np.concatenate([[0], np.cumsum(n_var)[:-1]])
    variant = offsets[ch] + (rng.random(n) * n_var[ch]).astype(np.int64)
    variants = [v for c in CHANNELS for v in c.variants]
    kinds = sorted({c.click_id[0] for c in CHANNELS if c.click_id})
    click = np.full(n, len(kinds), dtype=np.int64)
    mistag = np.zeros(n, dtype=bool)
    for i, c in enumerate(CHANNELS):
        if c.click_id:
            has = (ch == i) & (rng.random(n) < c.click_id[1])
            click[has] = kinds.index(c.click_id[0])
            mistag |= has & (rng.random(n) < c.mistag_share)
    # a mistagged paid click lost its UTM parameters: it looks direct but for its click id
    utm = np.where(mistag, len(variants), variant)
    base = np.array([INTERACTIONS.index(c.interaction) for c in CHANNELS])[ch]
    conv = touches["method"] >= 0
    conv_kind = np.array([INTERACTIONS.index(m) for m, _ in _CONVERSION_METHODS])
    interaction = np.where(conv, conv_kind[np.maximum(touches["method"], 0)], base)
    has_click = click < len(kinds)
    click_vals = pc.binary_join_element_wise(
        _strings(click, [*kinds, ""]),
        pc.cast(pa.array(rng.integers(10**11, 10**12, size=n)), pa.string()), "-")
    return _table("touchpoints", {
        "touch_id": _ids("t", n, 9),
        "visitor_id": pc.take(vid, pa.array(touches["visitor"])),
        "timestamp": _ts(touches["ts"]),
        "source": _strings(utm, [v[0] for v in variants] + ["(direct)"]),
        "medium": _strings(utm, [v[1] for v in variants] + ["(none)"]),
        "campaign": _strings(utm, [v[2] for v in variants] + [None]),
        "keyword": _strings(utm, [v[3] for v in variants] + [None]),
        "landing_page": _strings(variant, [v[4] for v in variants]),
        "interaction_type": _strings(interaction, list(INTERACTIONS)),
        "click_id": pc.if_else(pa.array(has_click), click_vals, pa.scalar(None, pa.string())),
        "click_id_type": _strings(click, [*kinds, None]),
        "channel": _strings(ch, [c.name for c in CHANNELS]),
    })


def _person_ids(n: int) -> pa.Array:
    return _ids("P", n, 7)


def _identities(rng: np.random.Generator, cfg: SynthConfig, leads: pd.DataFrame, touches: dict,
                vid: pa.Array, t1: int) -> pa.Table:
    """Matches on the conversion touch, logins of second devices, shared devices, CRM imports."""
    methods = ["form", "chat", "call", "login", "crm_import"]  # form/chat/call as in _CONVERSION_METHODS
    visitor = leads["visitor"].to_numpy()
    created = leads["created_us"].to_numpy()
    web = np.flatnonzero(visitor >= 0)
    parts = [(visitor[web], web, created[web], leads["method"].to_numpy()[web])]
    two = np.flatnonzero(leads["device2"].to_numpy() >= 0)
    later = created[two] + (rng.exponential(20.0, size=len(two)) * US_PER_DAY).astype(np.int64)
    parts.append((leads["device2"].to_numpy()[two], two, np.minimum(later, t1 - 1),
                  np.full(len(two), 3)))
    n_sh = int(round(len(web) * cfg.shared_device_share))
    if n_sh and len(web) > 1:
        a = rng.choice(web, size=n_sh, replace=False)
        b = rng.choice(web, size=n_sh, replace=False)
        ok = a != b
        parts.append((visitor[a[ok]], b[ok], np.maximum(created[a[ok]], created[b[ok]]),
                      np.full(int(ok.sum()), 3)))
        touches["n_shared"] = int(ok.sum())
    crm = np.flatnonzero(leads["crm_visitor"].to_numpy() >= 0)
    parts.append((leads["crm_visitor"].to_numpy()[crm], crm, created[crm], np.full(len(crm), 4)))
    return _table("identities", {
        "visitor_id": pc.take(vid, pa.array(np.concatenate([p[0] for p in parts]))),
        "person_id": pc.take(_person_ids(len(leads)), pa.array(np.concatenate([p[1] for p in parts]))),
        "matched_at": _ts(np.concatenate([p[2] for p in parts])),
        "method": _strings(np.concatenate([p[3] for p in parts]), methods),
    })


def _crm(rng: np.random.Generator, cfg: SynthConfig, leads: pd.DataFrame, pipe: pd.DataFrame,
         seg_names: list[str], t1: int) -> dict[str, pa.Table]:
    n = len(leads)
    person = _person_ids(n)
    first = leads["first_channel"].to_numpy()
    sources = sorted({c.lead_source for c in CHANNELS}) + list(_OFFLINE_SOURCES)
    src = np.array([sources.index(c.lead_source) for c in CHANNELS])[np.maximum(first, 0)]
    off = first < 0
    src[off] = len(sources) - len(_OFFLINE_SOURCES) + rng.integers(0, 3, size=int(off.sum()))
    lead_tbl = _table("leads", {
        "person_id": person,
        "created_at": _ts(leads["created_us"].to_numpy()),
        "lead_source": _strings(src, sources),
        "mql_at": _ts(pipe["mql_us"].to_numpy(), pipe["mql_us"].to_numpy() >= 0),
        "sql_at": _ts(pipe["sql_us"].to_numpy(), pipe["sql_us"].to_numpy() >= 0),
        "segment": _strings(leads["segment"].to_numpy(), seg_names),
    })
    d = np.flatnonzero(pipe["opp_us"].to_numpy() >= 0)
    p = pipe.iloc[d]
    closed = p["closed"].to_numpy()
    won = p["won"].to_numpy() & closed
    stage = np.where(closed, np.where(won, 2, 3), np.where(p["prop_us"].to_numpy() >= 0, 1, 0))
    deal_id = _ids("D", len(d), 6)
    deal_tbl = _table("deals", {
        "deal_id": deal_id,
        "person_id": pc.take(person, pa.array(d)),
        "account_id": _ids("A", len(d), 6),
        "created_at": _ts(p["opp_us"].to_numpy()),
        "amount": pa.array(p["amount"].to_numpy(), pa.float64()),
        "currency": pa.array([cfg.currency] * len(d), pa.string()),
        "stage": _strings(stage, ["opportunity", "proposal", "closed_won", "closed_lost"]),
        "closed_at": _ts(p["close_us"].to_numpy(), closed),
        "won": pa.array(won, pa.bool_(), mask=~closed),
    })
    rows = [(np.arange(len(d)), p["opp_us"].to_numpy(), 0)]
    prop = p["prop_us"].to_numpy() >= 0
    rows.append((np.flatnonzero(prop), p["prop_us"].to_numpy()[prop], 1))
    rows.append((np.flatnonzero(won), p["close_us"].to_numpy()[won], 2))
    lost = closed & ~won
    rows.append((np.flatnonzero(lost), p["close_us"].to_numpy()[lost], 3))
    idx = np.concatenate([r[0] for r in rows])
    when = np.concatenate([r[1] for r in rows])
    st = np.concatenate([np.full(len(r[0]), r[2]) for r in rows])
    order = np.lexsort((st, idx))
    hist_tbl = _table("stage_history", {
        "deal_id": pc.take(deal_id, pa.array(idx[order])),
        "stage": _strings(st[order], ["opportunity", "proposal", "closed_won", "closed_lost"]),
        "entered_at": _ts(when[order]),
        "amount": pa.array(p["amount"].to_numpy()[idx[order]], pa.float64()),
    })
    return {"leads": lead_tbl, "deals": deal_tbl, "stage_history": hist_tbl}


def _orders(rng: np.random.Generator, cfg: SynthConfig, leads: pd.DataFrame, pipe: pd.DataFrame,
            won: pd.Series, t1: int) -> pa.Table:
    """First order at the close of a won deal, then BG/NBD repeat orders with Gamma-Gamma spend."""
    who = np.flatnonzero(won.to_numpy())
    start = pipe["close_us"].to_numpy()[who]
    horizon = (t1 - start) / _WEEK_US
    bg, gg = cfg.bgnbd, cfg.gamma_gamma
    lam = rng.gamma(bg["r"], 1.0 / bg["alpha"], size=len(who))
    p_drop = rng.beta(bg["a"], bg["b"], size=len(who))
    nu = rng.gamma(gg["q"], 1.0 / gg["gamma"], size=len(who))
    cust, when = [np.arange(len(who))], [np.zeros(len(who))]
    t = np.zeros(len(who))
    alive = np.ones(len(who), dtype=bool)
    while alive.any():
        t = t + rng.exponential(1.0, size=len(who)) / np.maximum(lam, 1e-12)
        alive &= t < horizon
        cust.append(np.flatnonzero(alive))
        when.append(t[alive])
        alive &= rng.random(len(who)) >= p_drop
    c = np.concatenate(cust)
    w = np.concatenate(when)
    order = np.lexsort((w, c))
    c, w = c[order], w[order]
    amount = np.round(rng.gamma(gg["p"], 1.0 / nu[c]), 2)
    ts = start[c] + (w * _WEEK_US).astype(np.int64)
    return _table("orders", {
        "order_id": _ids("O", len(c), 7),
        "customer_id": pc.take(_person_ids(len(leads)), pa.array(who[c])),
        "timestamp": _ts(ts),
        "amount": pa.array(amount, pa.float64()),
        "currency": pa.array([cfg.currency] * len(c), pa.string()),
    })


def _subscriptions(rng: np.random.Generator, cfg: SynthConfig, leads: pd.DataFrame,
                   pipe: pd.DataFrame, won: pd.Series, seg_names: list[str], t0: int,
                   t1: int) -> tuple[pa.Table, dict]:
    """Monthly MRR movements: new at the close month, then sBG churn, expansion, contraction,
    reactivation until the data's end."""
    who = np.flatnonzero(won.to_numpy())
    seg = leads["segment"].to_numpy()[who]
    churn = np.array([SEGMENTS[s]["churn"] for s in seg_names])
    theta = rng.beta(churn[seg, 0], churn[seg, 1])
    month0 = pd.Timestamp(t0 * 1000, tz="UTC").tz_localize(None).to_period("M")
    close_m = pd.to_datetime(pipe["close_us"].to_numpy()[who], unit="us").to_period("M")
    start_m = np.asarray((close_m - month0).map(lambda x: x.n))
    n_months = cfg.months
    mrr = np.round(pipe["amount"].to_numpy()[who] / 12.0, 2)
    current = np.zeros(len(who))
    last_paid = mrr.copy()
    active = np.zeros(len(who), dtype=bool)
    out_c, out_m, out_k, out_d, out_v = [], [], [], [], []

    def emit(mask: np.ndarray, m: int, kind: int, delta: np.ndarray, after: np.ndarray) -> None:
        out_c.append(np.flatnonzero(mask))
        out_m.append(np.full(int(mask.sum()), m))
        out_k.append(np.full(int(mask.sum()), kind))
        out_d.append(delta[mask])
        out_v.append(after[mask])

    for m in range(n_months):
        new = start_m == m
        emit(new, m, 0, mrr, mrr)
        current[new], active[new] = mrr[new], True
        old = (start_m < m)
        u = rng.random(len(who))
        lose = old & active & (u < theta)
        emit(lose, m, 3, -current, np.zeros(len(who)))
        last_paid[lose] = current[lose]
        current[lose], active[lose] = 0.0, False
        stay = old & active & ~lose
        v = rng.random(len(who))
        up = stay & (v < 0.04)
        down = stay & (v >= 0.04) & (v < 0.06)
        factor = np.where(up, rng.uniform(1.1, 1.5, len(who)), rng.uniform(0.6, 0.9, len(who)))
        after = np.round(current * factor, 2)
        emit(up, m, 1, after - current, after)
        emit(down, m, 2, after - current, after)
        current = np.where(up | down, after, current)
        back = old & ~active & ~lose & (v < 0.03)
        emit(back, m, 4, last_paid, last_paid)
        current[back], active[back] = last_paid[back], True
    c = np.concatenate(out_c)
    months = np.datetime64(str(month0), "M") + np.concatenate(out_m).astype("timedelta64[M]")
    kinds = ["new", "expansion", "contraction", "churn", "reactivation"]
    table = _table("subscriptions", {
        "customer_id": pc.take(_person_ids(len(leads)), pa.array(who[c])),
        "month": pa.array(months.astype("datetime64[D]"), pa.date32()),
        "movement": _strings(np.concatenate(out_k), kinds),
        "mrr_delta": pa.array(np.round(np.concatenate(out_d), 2), pa.float64()),
        "mrr": pa.array(np.concatenate(out_v), pa.float64()),
        "currency": pa.array([cfg.currency] * len(c), pa.string()),
    })
    truth = {s: {"alpha": float(churn[i, 0]), "beta": float(churn[i, 1])}
             for i, s in enumerate(seg_names)}
    return table, truth


def _spend(rng: np.random.Generator, cfg: SynthConfig, journeys: dict, touches: dict) -> pa.Table:
    """Daily cost per paid channel and campaign: cost per touch with day-to-day noise."""
    ch = touches["channel"]
    cost = np.array([c.cost_per_touch for c in CHANNELS])[ch]
    paid = cost > 0
    n_var = np.array([len(c.variants) for c in CHANNELS])
    frame = pd.DataFrame({
        "date": (touches["ts"][paid] // US_PER_DAY).astype("datetime64[D]"),
        "channel": np.array([c.name for c in CHANNELS], dtype=object)[ch[paid]],
        "variant": (rng.random(int(paid.sum())) * n_var[ch[paid]]).astype(int),
        "cost": cost[paid] * rng.lognormal(-0.02, 0.2, size=int(paid.sum())),
    })
    camp = {(c.name, i): v[2] for c in CHANNELS for i, v in enumerate(c.variants)}
    frame["campaign"] = [camp[(a, b)] for a, b in zip(frame["channel"], frame["variant"], strict=True)] \
        if len(frame) < 2_000_000 else _vector_campaigns(frame, camp)
    daily = frame.groupby(["date", "channel", "campaign"], as_index=False, sort=True)["cost"].sum()
    return _table("spend", {
        "date": pa.array(daily["date"].to_numpy().astype("datetime64[D]"), pa.date32()),
        "channel": pa.array(daily["channel"].astype(str).to_numpy(dtype=object), pa.string()),
        "campaign": pa.array(daily["campaign"].astype(str).to_numpy(dtype=object), pa.string()),
        "cost": pa.array(np.round(daily["cost"].to_numpy(), 2), pa.float64()),
        "currency": pa.array([cfg.currency] * len(daily), pa.string()),
    })


def _vector_campaigns(frame: pd.DataFrame, camp: dict) -> pd.Series:
    keys = pd.MultiIndex.from_tuples(list(camp))
    lookup = pd.Series(list(camp.values()), index=keys)
    idx = pd.MultiIndex.from_arrays([frame["channel"], frame["variant"]])
    return pd.Series(lookup.reindex(idx).to_numpy(), index=frame.index)


def _add_dirt(rng: np.random.Generator, cfg: SynthConfig, tables: dict[str, pa.Table]) -> dict:
    """A few unusable rows, as real exports have: duplicate touches, orphan deals, refunds."""
    out = dict(tables)
    t = tables["touchpoints"]
    k = max(1, int(t.num_rows * cfg.dirty_share / 10))
    out["touchpoints"] = pa.concat_tables([t, t.take(pa.array(rng.choice(t.num_rows, k)))])
    d = tables["deals"]
    k = max(1, int(d.num_rows * cfg.dirty_share * 5))
    orphans = d.take(pa.array(rng.choice(d.num_rows, k, replace=False)))
    orphans = orphans.set_column(0, "deal_id", _ids("D-X", k, 4))
    orphans = orphans.set_column(1, "person_id", _ids("P-UNKNOWN-", k, 4))
    out["deals"] = pa.concat_tables([d, orphans])
    o = tables["orders"]
    k = max(1, int(o.num_rows * cfg.dirty_share))
    refunds = o.take(pa.array(rng.choice(o.num_rows, k, replace=False)))
    refunds = refunds.set_column(0, "order_id", _ids("O-R", k, 4))
    refunds = refunds.set_column(3, "amount", pc.negate(refunds["amount"]))
    out["orders"] = pa.concat_tables([o, refunds])
    return out


def _ground_truth(cfg: SynthConfig, segment: np.ndarray, seen: np.ndarray, leads: pd.DataFrame,
                  spend: pa.Table, seg_names: list[str],
                  vtruth: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Expected contribution of each channel, exactly, from the exposures (see module docstring);
    ``vtruth`` (regimes other than additive) holds each visitor's exact Shapley credit and lift."""
    p_won = _p_won(seg_names)
    amount = np.array([SEGMENTS[s]["amount"] for s in seg_names])
    won_w = p_won[segment]
    rev_w = won_w * amount[segment]
    rows = []
    any_touch = seen.any(axis=1)
    if vtruth is None:
        for c, profile in enumerate(CHANNELS):
            s = seen[:, c]
            rows.append({
                "channel": profile.name, "incremental_effect": profile.beta,
                "exposed_visitors": int(s.sum()),
                "expected_leads": profile.beta * s.sum(),
                "expected_won": profile.beta * won_w[s].sum(),
                "expected_revenue": profile.beta * rev_w[s].sum(),
            })
        rows.append({"channel": "(baseline)", "incremental_effect": cfg.baseline,
                     "exposed_visitors": int(any_touch.sum()),
                     "expected_leads": cfg.baseline * any_touch.sum(),
                     "expected_won": cfg.baseline * won_w[any_touch].sum(),
                     "expected_revenue": cfg.baseline * rev_w[any_touch].sum()})
    else:
        credit, lift, base = vtruth["credit"], vtruth["lift"], vtruth["baseline"]
        for c, profile in enumerate(CHANNELS):
            n_exposed = int(seen[:, c].sum())
            rows.append({
                "channel": profile.name,
                "incremental_effect": credit[:, c].sum() / n_exposed if n_exposed else np.nan,
                "exposed_visitors": n_exposed,
                "expected_leads": credit[:, c].sum(),
                "expected_won": credit[:, c] @ won_w,
                "expected_revenue": credit[:, c] @ rev_w,
                "incremental_leads": lift[:, c].sum(),
            })
        b = np.where(any_touch, base, 0.0)
        rows.append({"channel": "(baseline)", "incremental_effect": b.sum() / max(any_touch.sum(), 1),
                     "exposed_visitors": int(any_touch.sum()), "expected_leads": b.sum(),
                     "expected_won": b @ won_w, "expected_revenue": b @ rev_w,
                     "incremental_leads": np.nan})
    off = leads.loc[leads["visitor"] < 0, "segment"].to_numpy()
    rows.append({"channel": "(offline)", "incremental_effect": np.nan, "exposed_visitors": 0,
                 "expected_leads": float(len(off)), "expected_won": p_won[off].sum(),
                 "expected_revenue": (p_won[off] * amount[off]).sum()})
    truth = pd.DataFrame(rows)
    is_channel = ~truth["channel"].str.startswith("(")
    pairs = (("expected_leads", "lead_share"), ("expected_won", "won_share"),
             ("expected_revenue", "revenue_share"))
    if vtruth is not None:
        pairs += (("incremental_leads", "incremental_lead_share"),)
    for col, share in pairs:
        total = truth.loc[is_channel, col].sum()
        truth[share] = np.where(is_channel, truth[col] / total if total else np.nan, np.nan)
    cost = spend.to_pandas().groupby("channel")["cost"].sum()
    truth["spend"] = truth["channel"].map(cost).fillna(0.0)
    truth["true_roas"] = np.where(truth["spend"] > 0, truth["expected_revenue"] /
                                  truth["spend"].where(truth["spend"] > 0), np.nan)
    return truth

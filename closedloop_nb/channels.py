"""Channel grouping: map (source, medium, campaign, click id) to a channel with ordered rules.

The default is Google's GA4 default channel group (``rules/ga4_default.yaml``) with Google's own list of
search, social, shopping and video sites (``rules/ga4_source_categories.csv``, replaceable). A second
shipped rule set, ``ga4-click-ids`` (``rules/ga4_click_ids.yaml``), extends it with click-id corrections
(a touch with a gclid whose UTM tags were lost is still a paid click); :data:`RULE_SETS` lists them. A
YAML file can replace the rules, or extend a shipped set (``extends: ga4-default``) with rules evaluated
*before* its own, with extra site lists and with its own ``source_categories`` file.

Rules are evaluated once per distinct combination of the four fields, so grouping
ten million touches costs about as much as grouping the few hundred combinations they contain.

Examples
--------
>>> import pandas as pd
>>> touches = pd.DataFrame({"source": ["google", "(direct)", "newsletter"],
...                         "medium": ["cpc", "(none)", "email"]})
>>> assign_channels(touches)["channel"].tolist()
['Paid Search', 'Direct', 'Email']
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

__all__ = [
    "RULE_SETS",
    "UNASSIGNED",
    "ChannelAssignment",
    "ChannelRules",
    "RulesError",
    "assign_channels",
    "group_channels",
    "load_source_categories",
]

UNASSIGNED = "Unassigned"
FIELDS = ("source", "medium", "campaign", "click_id_type")
_NOT_SET = "(not set)"
_EMPTY_SOURCES = {"", "(direct)", "(not set)", "(none)"}
_PAID = r"^(.*cp.*|ppc|retargeting|paid.*)$"

#: Shipped rule sets by name -> file in ``closedloop_nb/rules/``.
RULE_SETS: dict[str, str] = {
    "ga4-default": "ga4_default.yaml",
    "ga4-click-ids": "ga4_click_ids.yaml",
}
#: Google's source categories -> the list names the rules use.
SOURCE_CATEGORY_LISTS: dict[str, str] = {
    "SOURCE_CATEGORY_SEARCH": "search_sites",
    "SOURCE_CATEGORY_SOCIAL": "social_sites",
    "SOURCE_CATEGORY_SHOPPING": "shopping_sites",
    "SOURCE_CATEGORY_VIDEO": "video_sites",
}


def load_source_categories(path: str | Path | None = None) -> dict[str, list[str]]:
    """Google's source-category list as site lists: ``{"search_sites": [...], "social_sites": ...}``.

    Parameters
    ----------
    path
        A CSV with columns ``source`` and ``source_category`` (``SOURCE_CATEGORY_SEARCH``, ``_SOCIAL``,
        ``_SHOPPING`` or ``_VIDEO``), as Google publishes it; the shipped copy when omitted.

    Examples
    --------
    >>> lists = load_source_categories()
    >>> "cn.bing.com" in lists["search_sites"], len(lists["social_sites"]) > 500
    (True, True)
    """
    if path is None:
        text = resources.files("closedloop_nb").joinpath("rules/ga4_source_categories.csv").read_text("utf-8")
        where = "ga4_source_categories.csv"
    else:
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise RulesError(f"{path}: cannot read the source-category list: {exc}") from None
        where = str(path)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    header = [h.strip().lower() for h in lines[0].split(",")] if lines else []
    if header[:2] != ["source", "source_category"]:
        raise RulesError(f"{where}: a source-category list needs the header 'source,source_category'")
    lists: dict[str, list[str]] = {name: [] for name in SOURCE_CATEGORY_LISTS.values()}
    for i, line in enumerate(lines[1:], start=1):
        source, _, category = line.rpartition(",")
        name = SOURCE_CATEGORY_LISTS.get(category.strip().upper())
        if name is None or not source.strip():
            raise RulesError(f"{where}, row {i}: expected a source and one of "
                             f"{', '.join(SOURCE_CATEGORY_LISTS)}, got {line!r}")
        lists[name].append(source.strip().strip('"').lower())
    return lists


class RulesError(ValueError):
    """A channel rules file is malformed."""


@dataclass
class ChannelRules:
    """An ordered list of channel rules with the site lists and patterns they use.

    Parameters
    ----------
    rules
        Ordered list of ``{"channel": name, <condition>}`` mappings; the first that holds wins.
    lists
        Named lists of values (e.g. ``search_sites``) for ``in_list`` conditions.
    patterns
        Named regular expressions for ``matches`` conditions.
    click_ids
        ``{click_id_type: {"source": s, "medium": m}}``: a touch carrying that click id is treated
        as coming from ``m`` (and ``s`` when its source is empty) whatever its UTM medium says.
    name, version
        Identify the rule set (recorded in run manifests).
    extends
        The shipped set these rules extend, if any.
    """

    rules: list[dict[str, Any]]
    lists: dict[str, list[str]] = field(default_factory=dict)
    patterns: dict[str, str] = field(default_factory=dict)
    click_ids: dict[str, dict[str, str]] = field(default_factory=dict)
    name: str = "custom"
    version: str = ""
    extends: str | None = None

    @classmethod
    def default(cls, source_categories: str | Path | None = None) -> ChannelRules:
        """The GA4 default channel group, with Google's site lists (or those of ``source_categories``)."""
        rules = cls.named("ga4-default")
        if source_categories is not None:
            rules.lists.update(load_source_categories(source_categories))
        return rules

    @classmethod
    def named(cls, name: str) -> ChannelRules:
        """A shipped rule set by name (see :data:`RULE_SETS`): ``ga4-default`` or ``ga4-click-ids``.

        Examples
        --------
        >>> ChannelRules.named("ga4-click-ids").click_ids["gclid"]
        {'source': 'google', 'medium': 'cpc'}
        """
        if name not in RULE_SETS:
            raise RulesError(f"unknown rule set {name!r}; shipped sets are {', '.join(RULE_SETS)}")
        if name not in _SHIPPED:
            text = resources.files("closedloop_nb").joinpath(f"rules/{RULE_SETS[name]}").read_text("utf-8")
            _SHIPPED[name] = cls._from_mapping(yaml.safe_load(text), source=RULE_SETS[name], folder=None)
        return copy.deepcopy(_SHIPPED[name])

    @classmethod
    def from_yaml(cls, path: str | Path) -> ChannelRules:
        """Read rules from a YAML file, or a shipped set by its name (``ga4-click-ids``).

        A file with ``extends: ga4-default`` (or another shipped set) keeps that set's rules and puts its
        own ``rules`` in front of them; its ``lists``, ``patterns`` and ``click_ids`` add to (or replace
        by name) the base ones. ``source_categories: FILE.csv`` (relative to the YAML file) replaces
        Google's site lists by the user's copy.
        """
        if str(path) in RULE_SETS:
            return cls.named(str(path))
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text("utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise RulesError(f"{path}: cannot read channel rules: {exc}") from exc
        if not isinstance(data, dict):
            raise RulesError(f"{path}: channel rules must be a mapping with a 'rules' list")
        return cls._from_mapping(data, source=str(path), folder=path.parent)

    @classmethod
    def _from_mapping(cls, data: dict[str, Any], source: str, folder: Path | None) -> ChannelRules:
        data = dict(data)
        base_name = data.pop("extends", None)
        categories = data.pop("source_categories", None)
        if categories is None:
            site_lists: dict[str, list[str]] = {}
        elif folder is None:  # a shipped set names the shipped list
            site_lists = load_source_categories()
        else:
            site_lists = load_source_categories(folder / categories)
        if base_name is None:
            rules = cls._from_dict(data, source=source, check=False)
            rules.lists = {**site_lists, **rules.lists}
            rules._check(source)
            return rules
        if base_name not in RULE_SETS:
            raise RulesError(f"{source}: extends: {base_name!r} is unknown; shipped sets are "
                             f"{', '.join(RULE_SETS)}")
        base = cls.named(base_name)
        own = cls._from_dict({"rules": [], **data}, source=source, check=False)
        merged = cls(
            rules=own.rules + base.rules,
            lists={**base.lists, **site_lists, **own.lists},
            patterns={**base.patterns, **own.patterns},
            click_ids={**base.click_ids, **own.click_ids},
            name=str(data.get("name", Path(source).stem)),
            version=str(data.get("version", "")),
            extends=base_name,
        )
        merged._check(source)
        return merged

    @classmethod
    def _from_dict(cls, data: dict[str, Any], source: str, check: bool = True) -> ChannelRules:
        if "rules" not in data or not isinstance(data["rules"], list):
            raise RulesError(f"{source}: channel rules need a 'rules' list")
        rules = cls(
            rules=list(data["rules"]),
            lists={k: [str(v).lower() for v in vs] for k, vs in (data.get("lists") or {}).items()},
            patterns=dict(data.get("patterns") or {}),
            click_ids=dict(data.get("click_ids") or {}),
            name=str(data.get("name", Path(source).stem)),
            version=str(data.get("version", "")),
        )
        if check:
            rules._check(source)
        return rules

    def _check(self, source: str) -> None:
        """Evaluate every rule on an empty frame, so typos surface when rules are loaded."""
        empty = pd.DataFrame({f: pd.Series(dtype=object) for f in FIELDS})
        for i, rule in enumerate(self.rules):
            if "channel" not in rule:
                raise RulesError(f"{source}: rule {i + 1} has no 'channel'")
            cond = {k: v for k, v in rule.items() if k != "channel"}
            try:
                self._eval(cond, empty)
            except RulesError as exc:
                raise RulesError(f"{source}: rule {i + 1} ({rule['channel']}): {exc}") from None

    @property
    def channels(self) -> list[str]:
        """Channel names in rule order, then ``Unassigned``."""
        seen = dict.fromkeys(r["channel"] for r in self.rules)
        return [*seen, UNASSIGNED]

    def _eval(self, cond: dict[str, Any], combos: pd.DataFrame) -> np.ndarray:
        if len(cond) != 1 and "field" not in cond:
            raise RulesError(f"a condition needs exactly one of all/any/not/field, got {sorted(cond)}")
        if "all" in cond:
            out = np.ones(len(combos), dtype=bool)
            for sub in cond["all"]:
                out &= self._eval(sub, combos)
            return out
        if "any" in cond:
            out = np.zeros(len(combos), dtype=bool)
            for sub in cond["any"]:
                out |= self._eval(sub, combos)
            return out
        if "not" in cond:
            return ~self._eval(cond["not"], combos)
        return self._eval_field(cond, combos)

    def _eval_field(self, cond: dict[str, Any], combos: pd.DataFrame) -> np.ndarray:
        name = cond.get("field")
        if name not in FIELDS:
            raise RulesError(f"unknown field {name!r}; fields are {', '.join(FIELDS)}")
        ops = [k for k in cond if k != "field"]
        if len(ops) != 1:
            raise RulesError(f"a field condition needs one operator, got {ops}")
        op, arg = ops[0], cond[ops[0]]
        col = combos[name].astype(object)
        values = col.to_numpy()
        if op == "equals":
            return np.asarray(values == str(arg).lower(), dtype=bool)
        if op == "in":
            return col.isin([str(a).lower() for a in arg]).to_numpy()
        if op == "in_list":
            if arg not in self.lists:
                raise RulesError(f"unknown list {arg!r}; lists are {', '.join(self.lists) or 'none'}")
            return col.isin(self.lists[arg]).to_numpy()
        if op == "contains":
            return col.str.contains(str(arg).lower(), regex=False).fillna(False).to_numpy(bool)
        if op == "endswith":
            return col.str.endswith(str(arg).lower()).fillna(False).to_numpy(bool)
        if op == "matches":
            pattern = self.patterns.get(arg, arg)
            try:
                rx = re.compile(pattern)
            except re.error as exc:
                raise RulesError(f"bad regular expression {pattern!r}: {exc}") from None
            return col.map(lambda v: bool(rx.match(v)) if isinstance(v, str) else False).to_numpy(bool)
        raise RulesError(
            f"unknown operator {op!r}; operators are equals, in, in_list, contains, endswith, matches"
        )

    def classify(self, combos: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Channel of each row of ``combos`` (lower-cased fields), and which used a click id."""
        combos, by_click = self._apply_click_ids(combos)
        channel = np.full(len(combos), UNASSIGNED, dtype=object)
        open_ = np.ones(len(combos), dtype=bool)
        for rule in self.rules:
            cond = {k: v for k, v in rule.items() if k != "channel"}
            hit = open_ & self._eval(cond, combos)
            channel[hit] = rule["channel"]
            open_ &= ~hit
        return channel, by_click

    def _apply_click_ids(self, combos: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        combos = combos.copy()
        by_click = np.zeros(len(combos), dtype=bool)
        keeps = self.patterns.get("click_id_keeps", self.patterns.get("paid", _PAID))
        paid = re.compile(keeps)
        for kind, fix in self.click_ids.items():
            hit = (combos["click_id_type"] == kind.lower()).to_numpy(copy=True)
            hit &= ~combos["medium"].map(lambda m: bool(paid.match(m))).to_numpy(bool)
            if not hit.any():
                continue
            by_click |= hit
            combos.loc[hit, "medium"] = str(fix.get("medium", "cpc")).lower()
            if "source" in fix:
                empty = combos["source"].isin(_EMPTY_SOURCES).to_numpy()
                combos.loc[hit & empty, "source"] = str(fix["source"]).lower()
        return combos, by_click

    def __repr__(self) -> str:
        return f"<ChannelRules {self.name} {self.version}: {len(self.rules)} rules>"


_SHIPPED: dict[str, ChannelRules] = {}


@dataclass
class ChannelAssignment:
    """Result of :func:`group_channels`.

    Attributes
    ----------
    channel
        Channel of each input row (categorical, aligned with the input index).
    counts
        Touches per channel, with ``via_click_id`` (touches whose medium a click id corrected).
    unassigned_combos
        The (source, medium, campaign) combinations no rule matched, with touch counts: the list
        to fix in the tagging or the rules.
    rules
        The rules used.
    """

    channel: pd.Series
    counts: pd.DataFrame
    unassigned_combos: pd.DataFrame
    rules: ChannelRules

    @property
    def n_unassigned(self) -> int:
        """How many touches no rule matched."""
        return int(self.unassigned_combos["touches"].sum()) if len(self.unassigned_combos) else 0

    def __repr__(self) -> str:
        return (
            f"<ChannelAssignment {len(self.channel):,} touches into {int((self.counts.touches > 0).sum())}"
            f" channels; {self.n_unassigned:,} unassigned>"
        )


def _field_codes(df: pd.DataFrame, name: str) -> tuple[np.ndarray, pd.Index]:
    if name not in df:
        return np.zeros(len(df), dtype=np.int64), pd.Index([_NOT_SET if name != "click_id_type" else ""])
    codes, uniques = pd.factorize(df[name], use_na_sentinel=True)
    fill = "" if name == "click_id_type" else _NOT_SET
    uniques = pd.Index([*[str(u).strip().lower() for u in uniques], fill])
    codes = np.where(codes < 0, len(uniques) - 1, codes)
    return codes.astype(np.int64), uniques


def group_channels(touchpoints: pd.DataFrame, rules: ChannelRules | None = None) -> ChannelAssignment:
    """Classify every touch into a channel.

    Parameters
    ----------
    touchpoints
        Needs ``source`` and ``medium``; ``campaign`` and ``click_id_type`` are used when present.
    rules
        The rules; the GA4 default channel group when omitted.

    Returns
    -------
    ChannelAssignment
    """
    rules = rules or ChannelRules.default()
    missing = [c for c in ("source", "medium") if c not in touchpoints]
    if missing:
        raise KeyError(f"touchpoints miss column(s) {missing} needed for channel grouping")
    key = np.zeros(len(touchpoints), dtype=np.int64)
    parts = []
    for name in FIELDS:
        codes, uniques = _field_codes(touchpoints, name)
        key = key * len(uniques) + codes
        parts.append((name, codes, uniques))
    uniq_key, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    combos = pd.DataFrame({name: uniques[codes[first]] for name, codes, uniques in parts})
    channel, by_click = rules.classify(combos)
    per_combo = np.bincount(inverse.ravel(), minlength=len(uniq_key))
    cats = pd.CategoricalDtype(rules.channels)
    out = pd.Series(pd.Categorical(channel[inverse.ravel()], dtype=cats), index=touchpoints.index,
                    name="channel")
    counts = (
        pd.DataFrame({"channel": pd.Categorical(channel, dtype=cats), "touches": per_combo,
                      "via_click_id": np.where(by_click, per_combo, 0)})
        .groupby("channel", observed=False)[["touches", "via_click_id"]].sum()
        .reset_index()
    )
    unassigned = combos.loc[channel == UNASSIGNED, ["source", "medium", "campaign"]].assign(
        touches=per_combo[channel == UNASSIGNED]
    )
    unassigned = unassigned.sort_values("touches", ascending=False, kind="stable")
    return ChannelAssignment(out, counts, unassigned.reset_index(drop=True), rules)


def assign_channels(touchpoints: pd.DataFrame, rules: ChannelRules | None = None) -> pd.DataFrame:
    """A copy of ``touchpoints`` with its ``channel`` column (re)computed by ``rules``.

    See :func:`group_channels` for the counts of unassigned and click-id-corrected touches.
    """
    result = group_channels(touchpoints, rules)
    return touchpoints.assign(channel=result.channel.astype(str).astype("string"))

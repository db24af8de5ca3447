"""Attribution models: rule-based, Markov chain (exact removal effects) and Shapley value.

Every model is configured in ``__init__``, fitted with ``fit(paths)`` (a :class:`PathTable` or a
DataFrame in ChannelAttribution's format), and exposes ``credits_``, ``summary`` and ``plot()``.

Examples
--------
>>> import pandas as pd
>>> from closedloop_nb.attribution import MarkovChain
>>> paths = pd.DataFrame({"path": ["Paid Search > Email", "Email"], "total_conversions": [3, 1],
...                       "total_null": [2, 4]})
>>> MarkovChain().fit(paths).summary[["channel", "conversions"]].round(2).values.tolist()
[['Email', 2.67], ['Paid Search', 1.33]]
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

#: Public name -> the module that defines it. Names are imported on first use (PEP 562), so that a
#: caller needing one model (``closedloop attribute --models markov``) does not import the others,
#: nor what they need (pandas, SciPy).
_LAZY: dict[str, str] = {
    "AdjustedShapley": "closedloop_nb.attribution.adjusted",
    "AttributionModel": "closedloop_nb.attribution.base",
    "ConservationError": "closedloop_nb.attribution.base",
    "NotFittedError": "closedloop_nb.errors",
    **dict.fromkeys(["FirstTouch", "InverseJShaped", "JShaped", "LastNonDirect", "LastTouch", "Linear",
                     "PositionBased", "PositionWeights"], "closedloop_nb.attribution.heuristic"),
    **dict.fromkeys(["FullPath", "JourneyModel", "TimeDecay", "WShaped"],
                    "closedloop_nb.attribution.journey"),
    "MarkovChain": "closedloop_nb.attribution.markov",
    "PathTable": "closedloop_nb.path_table",
    "read_paths": "closedloop_nb.path_table",
    **dict.fromkeys(["ModelShapley", "ShapleyValue", "SimplifiedShapley"],
                    "closedloop_nb.attribution.shapley"),
}


class _Models(Mapping):
    """Model name -> model class, each class imported when it is first looked up."""

    def __init__(self, classes: dict[str, str]) -> None:
        self._classes = classes

    def __getitem__(self, name: str) -> type:
        return __getattr__(self._classes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __repr__(self) -> str:
        return f"MODELS({', '.join(self._classes)})"


#: Path-table models by the names the command line and notebooks use (the journey-table models
#: TimeDecay, WShaped and FullPath need touch timestamps and milestones, see journey.py). A read-only
#: mapping of name -> class; a class is imported when it is looked up.
MODELS: Mapping[str, type] = _Models({
    "first_touch": "FirstTouch",
    "last_touch": "LastTouch",
    "last_non_direct": "LastNonDirect",
    "linear": "Linear",
    "position_based": "PositionBased",
    "j_shaped": "JShaped",
    "inverse_j_shaped": "InverseJShaped",
    "markov": "MarkovChain",
    "shapley": "ShapleyValue",
    "shapley_model": "ModelShapley",
    "simplified_shapley": "SimplifiedShapley",
    "shapley_adjusted": "AdjustedShapley",
})

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names come from __getattr__
    from closedloop_nb.attribution.adjusted import AdjustedShapley
    from closedloop_nb.attribution.base import AttributionModel, ConservationError
    from closedloop_nb.attribution.heuristic import (
        FirstTouch,
        InverseJShaped,
        JShaped,
        LastNonDirect,
        LastTouch,
        Linear,
        PositionBased,
        PositionWeights,
    )
    from closedloop_nb.attribution.journey import FullPath, JourneyModel, TimeDecay, WShaped
    from closedloop_nb.attribution.markov import MarkovChain
    from closedloop_nb.attribution.shapley import ModelShapley, ShapleyValue, SimplifiedShapley
    from closedloop_nb.errors import NotFittedError
    from closedloop_nb.path_table import PathTable, read_paths


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'closedloop_nb.attribution' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "MODELS",
    "AdjustedShapley",
    "AttributionModel",
    "ConservationError",
    "FirstTouch",
    "FullPath",
    "InverseJShaped",
    "JShaped",
    "JourneyModel",
    "LastNonDirect",
    "LastTouch",
    "Linear",
    "MarkovChain",
    "ModelShapley",
    "NotFittedError",
    "PathTable",
    "PositionBased",
    "PositionWeights",
    "ShapleyValue",
    "SimplifiedShapley",
    "TimeDecay",
    "WShaped",
    "read_paths",
]

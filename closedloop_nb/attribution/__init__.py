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

from closedloop_nb.attribution.adjusted import AdjustedShapley
from closedloop_nb.attribution.base import AttributionModel, ConservationError, NotFittedError
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
from closedloop_nb.attribution.paths import PathTable, read_paths
from closedloop_nb.attribution.shapley import ModelShapley, ShapleyValue, SimplifiedShapley

#: Path-table models by the names the command line and notebooks use (the journey-table models
#: TimeDecay, WShaped and FullPath need touch timestamps and milestones, see journey.py).
MODELS = {
    "first_touch": FirstTouch,
    "last_touch": LastTouch,
    "last_non_direct": LastNonDirect,
    "linear": Linear,
    "position_based": PositionBased,
    "j_shaped": JShaped,
    "inverse_j_shaped": InverseJShaped,
    "markov": MarkovChain,
    "shapley": ShapleyValue,
    "shapley_model": ModelShapley,
    "simplified_shapley": SimplifiedShapley,
    "shapley_adjusted": AdjustedShapley,
}

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

"""Every model keeps the same contract: settings in __init__, fit returns self, fitted state ends in _,
unfitted use says to call fit, plot returns an Axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import inspect  # noqa: E402

import pytest  # noqa: E402

from closedloop_nb.attribution import MODELS, NotFittedError  # noqa: E402

from .conftest import random_paths  # noqa: E402


@pytest.mark.parametrize("name", sorted(MODELS))
def test_contract(name):
    cls = MODELS[name]
    model = cls()
    before = dict(vars(model))
    assert not [k for k in before if k.endswith("_")]
    # __init__ stores settings only, as given
    init = cls.__init__
    params = [] if init is object.__init__ else [
        p for p in inspect.signature(init).parameters if p != "self"]
    assert set(params) <= set(before)
    with pytest.raises(NotFittedError, match="call fit"):
        model.summary  # noqa: B018
    paths = random_paths(2)
    assert model.fit(paths) is model
    fitted = set(vars(model)) - set(before)
    assert fitted and all(k.endswith("_") for k in fitted)
    assert list(model.summary.columns) == ["model", "channel", "conversions", "value", "share"]
    ax = model.plot()
    assert ax.__class__.__name__ == "Axes"
    assert "fitted on" in repr(model)

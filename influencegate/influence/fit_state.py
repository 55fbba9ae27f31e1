"""The fitted state of an InfluenceScorer (projections and curvature) as plain tensors and primitives.

``fit_state`` turns a fitted scorer into tensors, ints, floats, strings, None, lists and dicts only, so that
the file a resume directory keeps loads with ``torch.load(weights_only=True)``: nothing in it can run code.
``restore_fit`` checks such a state field by field against the scorer (layers, projection sizes, curvature
kind and shapes) and rebuilds the curvature objects through the curvature registry.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from influencegate.influence.curvature import CURVATURE_CLASSES, LayerCurvature
from influencegate.influence.layers import LayerProjector, layer_sizes
from influencegate.influence.scorer import InfluenceScorer

#: The layout written by `fit_state` (a state of another layout is refused; fits written before the
#: capture.x_copies fix, cf78731, hold curvature sums with wrong rows). /5 adds "fit_share" (the share of the
#: samples whose rows the curvature holds); a /4 state, which fitted every sample, reads as share 1.
STATE_FORMAT = "influencegate.fit/5"
_EVERY_SAMPLE_FORMAT = "influencegate.fit/4"
_KIND_OF = {cls: kind for kind, cls in CURVATURE_CLASSES.items()}
_PRIMITIVES = (bool, int, float, str, type(None))


def _curvature_state(curvature: LayerCurvature) -> dict[str, Any]:
    """One layer's curvature as {"kind", "shape", "values" (numbers, strings, None), "tensors"}: every public
    attribute of the object (the sums, the eigenbases, the damped inverse); the cast cache is left out."""
    values: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    for key, value in vars(curvature).items():
        if key.startswith("_") or key == "shape":
            continue
        if isinstance(value, torch.Tensor):
            tensors[key] = value.detach().cpu().clone()  # clone: a view (the kept eigenvectors) alone
        elif isinstance(value, _PRIMITIVES):
            values[key] = value
        else:
            raise TypeError(f"cannot store {type(curvature).__name__}.{key} of type {type(value).__name__}")
    return {"kind": _KIND_OF[type(curvature)], "shape": [int(s) for s in curvature.shape], "values": values,
            "tensors": tensors}


def fit_state(scorer: InfluenceScorer) -> dict[str, Any]:
    """The fitted state of `scorer` as tensors, ints, floats, strings, None, lists and dicts only (what
    ``torch.load(weights_only=True)`` reads back):

        {"format": STATE_FORMAT, "fit_draws": int, "fit_share": float, "score_draws": int,
         "projections": {layer: {"p_in": tensor | None, "p_out": tensor | None}},
         "curvature": {layer: {"kind": "ekfac", "shape": [r_out, r_in],
                               "values": {"count": float, "damping_value": float, ...},
                               "tensors": {"q_a": tensor, "e_a": tensor, ...}}}}
    """
    cpu = lambda p: None if p is None else p.detach().cpu().clone()  # noqa: E731
    return {"format": STATE_FORMAT, "fit_draws": int(scorer.fit_draws), "fit_share": float(scorer.fit_share),
            "score_draws": int(scorer.score_draws),
            "projections": {name: {"p_in": cpu(p.p_in), "p_out": cpu(p.p_out)}
                            for name, p in scorer.projectors.items()},
            "curvature": {name: _curvature_state(curv) for name, curv in scorer.curvature.items()}}


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(what)


def _projector(module: Any, state: Any, name: str) -> LayerProjector:
    _expect(isinstance(state, dict) and set(state) == {"p_in", "p_out"}, f"projection of {name!r} is malformed")
    d_out, d_in = layer_sizes(module)
    for side, size in (("p_in", d_in), ("p_out", d_out)):
        p = state[side]
        _expect(p is None or (isinstance(p, torch.Tensor) and p.dim() == 2 and p.shape[1] == size
                              and 1 <= p.shape[0] <= size and p.is_floating_point()),
                f"{side} of {name!r} is not a projection of a {size}-wide side")
    return LayerProjector(module, state["p_in"], state["p_out"])


def _curvature(state: Any, name: str, kind: str, shape: tuple[int, int]) -> LayerCurvature:
    """Rebuild one layer's curvature from `_curvature_state`, through the class registry; checked by
    scoring a probe gradient."""
    _expect(isinstance(state, dict) and set(state) == {"kind", "shape", "values", "tensors"},
            f"curvature of {name!r} is malformed")
    _expect(state["kind"] == kind, f"curvature of {name!r} is {state['kind']!r}, the config asks for {kind!r}")
    _expect(state["shape"] == list(shape),
            f"curvature of {name!r} has shape {state['shape']}, its projection {list(shape)}")
    values, tensors = state["values"], state["tensors"]
    _expect(isinstance(values, dict) and isinstance(tensors, dict), f"curvature of {name!r} is malformed")
    for key, value in [*values.items(), *tensors.items()]:
        _expect(isinstance(key, str) and key.isidentifier() and not key.startswith("_") and key != "shape",
                f"curvature of {name!r} has an invalid field {key!r}")
    _expect(all(isinstance(v, _PRIMITIVES) for v in values.values())
            and all(isinstance(t, torch.Tensor) for t in tensors.values()), f"curvature of {name!r} is malformed")
    _expect(not set(values) & set(tensors), f"curvature of {name!r} names a field twice")
    cls = CURVATURE_CLASSES[kind]
    _expect(not any(hasattr(cls, key) for key in [*values, *tensors]),  # no method or class flag replaced
            f"curvature of {name!r} has a field that is not a statistic")
    curvature = cls.__new__(cls)
    LayerCurvature.__init__(curvature, shape)
    for key, value in [*values.items(), *{k: t.clone() for k, t in tensors.items()}.items()]:
        setattr(curvature, key, value)  # copies: extend_fit adds to the sums in place, the state stays as given
    _expect(isinstance(curvature.count, (int, float)) and math.isfinite(curvature.damping_value),
            f"curvature of {name!r} is not fitted")
    probe = curvature.score(torch.ones(2, *shape, dtype=torch.float64))  # missing or misshapen fields fail here
    _expect(probe.shape == (2,) and bool(torch.isfinite(probe).all()), f"curvature of {name!r} scores no finite value")
    return curvature


def restore_fit(scorer: InfluenceScorer, state: Any) -> None:
    """Set `scorer`'s fit from `fit_state` output (projections bound to this scorer's layers); ValueError
    when the state does not match the scorer's layers and config."""
    _expect(isinstance(state, dict) and state.get("format") in (STATE_FORMAT, _EVERY_SAMPLE_FORMAT),
            f"not a fit of this version of influencegate (format {STATE_FORMAT!r})")
    if state["format"] == _EVERY_SAMPLE_FORMAT:
        state = {**state, "format": STATE_FORMAT, "fit_share": 1.0}
    _expect(set(state) == {"format", "fit_draws", "fit_share", "score_draws", "projections", "curvature"},
            "malformed fit")
    fit_draws, score_draws, fit_share = state["fit_draws"], state["score_draws"], state["fit_share"]
    for name, value in (("fit_draws", fit_draws), ("score_draws", score_draws)):
        _expect(isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= scorer.config.draws,
                f"malformed {name}")
    _expect(isinstance(fit_share, float) and 0 < fit_share <= 1, "malformed fit_share")
    projections, curvature = state["projections"], state["curvature"]
    _expect(isinstance(projections, dict) and isinstance(curvature, dict)
            and list(projections) == list(scorer.layers) and list(curvature) == list(scorer.layers),
            f"the fit is not of the tracked layers {list(scorer.layers)}")
    projectors = {name: _projector(scorer.layers[name], projections[name], name) for name in scorer.layers}
    kind = scorer.config.curvature
    fitted = {name: _curvature(curvature[name], name, kind, projectors[name].shape) for name in scorer.layers}
    scorer.fit_draws, scorer.fit_share, scorer.score_draws = fit_draws, fit_share, score_draws
    scorer.projectors, scorer.curvature = projectors, fitted

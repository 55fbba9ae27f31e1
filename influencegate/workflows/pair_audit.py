"""The pair audit's workflow: ECIF misalignment scores of a version of image-text pairs, measured against a
clean reference version when one is given (else self-influence), and, with the reference as held-out
queries, what removing the worst pairs is predicted to do and the trace-back of the worst mispredictions.

Steps, pipelines and the CLI call this (never each other); `influencegate.ecif` is the method, as
`influencegate.influence` is the image audit's. Pure core (torch, numpy, pandas).
"""
from __future__ import annotations

import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from influencegate.ecif import EcifConfig, EcifScorer, PairSet
from influencegate.ecif.effects import EFFECT_COLUMNS, EffectsConfig, held_out_queries, removal_effects, removal_sets
from influencegate.ecif.trace import TRACE_COLUMNS, trace_mispredictions

NO_REFERENCE = "not computed: no reference set (its pairs are the held-out queries)"


@dataclass
class PairAudit:
    """What a pair audit computes. table: the pair scores table; info: "seconds" (per phase, "effects" and
    "total"), "flag_rule" (``EcifScorer.flag_rule``) and "effects" (computed, or why not); removal_effects
    and removed_pairs: ``ecif.effects.removal_effects``; trace: ``ecif.trace.trace_mispredictions``. The
    last three are empty (with their columns) when not computed."""

    table: pd.DataFrame
    info: dict[str, Any]
    removal_effects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EFFECT_COLUMNS))
    removed_pairs: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["removal_set", "rank", "sample_id"]))
    trace: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRACE_COLUMNS))


def query_classes(reference: Any, pairs: PairSet, column: str) -> list[Hashable]:
    """The class of each scorable reference pair (in ``pairs`` order): ``reference.records[column]``, or the
    caption when the records have no such column. ValueError when some pair has no class."""
    if column not in reference.records.columns:
        return list(pairs.captions)
    values = reference.records.drop_duplicates("sample_id").set_index("sample_id")[column].loc[pairs.sample_ids]
    if values.isna().any():
        raise ValueError(f"{int(values.isna().sum())} reference pairs have no {column!r}: held-out queries need a class")
    return values.tolist()


def score_pair_dataset(dataset: Any, reference: Any | None = None, config: Any = None,
                       image_encoder: Any | None = None, text_encoder: Any | None = None,
                       effects: EffectsConfig | Mapping[str, Any] | None = None) -> PairAudit:
    """The pair audit of `dataset`'s pairs, against the clean pairs of `reference` when given (else
    self-influence). config: an EcifConfig, a mapping of its fields, or None. image_encoder: a frozen
    nn.Module, images M x C x H x W -> M x D (None: a SmallCNN pretrained on the pairs' images); text_encoder:
    captions -> N x D' float tensor (None: MiniLM); e.g. both towers of
    `models.load_image_text_encoders("open_clip:...")`. effects: an EffectsConfig or a mapping of its fields
    to compute the removal effects and the trace-back with the reference pairs as held-out queries (None:
    scores only)."""
    if not isinstance(config, EcifConfig):
        config = EcifConfig.from_dict(dict(config or {}))
    if effects is not None and not isinstance(effects, EffectsConfig):
        effects = EffectsConfig.from_dict(effects)
    start = time.perf_counter()
    scorer = EcifScorer(config, image_encoder=image_encoder, text_encoder=text_encoder).fit(PairSet.from_dataset(dataset))
    clean = PairSet.from_dataset(reference) if reference is not None else None
    table = scorer.score(clean)
    seconds = dict(scorer.timings)
    audit = PairAudit(table, {"seconds": seconds, "flag_rule": scorer.flag_rule,
                              "effects": "not requested" if effects is None else NO_REFERENCE})
    if effects is not None and clean is not None:
        started = time.perf_counter()
        held_out = held_out_queries(scorer, clean, query_classes(reference, clean, effects.label_column))
        audit.removal_effects, audit.removed_pairs = removal_effects(
            scorer, held_out, removal_sets(table, effects.removal_shares))
        audit.trace = trace_mispredictions(scorer, held_out, effects.queries, effects.top_k)
        seconds["effects"] = time.perf_counter() - started
        audit.info["effects"] = f"computed on {len(held_out.sample_ids)} held-out queries, {len(held_out.class_names)} classes"
    seconds["total"] = time.perf_counter() - start
    return audit

"""The pair audit's workflow: ECIF misalignment scores of a version of image-text pairs, measured against a
clean reference version when one is given (else self-influence).

Steps, pipelines and the CLI call this (never each other); `influencegate.ecif` is the method, as
`influencegate.influence` is the image audit's. Pure core (torch, numpy, pandas).
"""
from __future__ import annotations

import time
from typing import Any

import pandas as pd

from influencegate.ecif import EcifConfig, EcifScorer, PairSet


def score_pair_dataset(dataset: Any, reference: Any | None = None, config: Any = None,
                       image_encoder: Any | None = None, text_encoder: Any | None = None
                       ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(pair scores table, info) of ECIF on `dataset`'s pairs, against the clean pairs of `reference` when
    given (else self-influence). config: an EcifConfig, a mapping of its fields, or None. image_encoder: a
    frozen nn.Module, images M x C x H x W -> M x D (None: a SmallCNN pretrained on the pairs' images);
    text_encoder: captions -> N x D' float tensor (None: MiniLM); e.g. both towers of
    `models.load_image_text_encoders("open_clip:...")`. info: "seconds" (per phase and "total") and
    "flag_rule" (how is_misaligned was decided: `EcifScorer.flag_rule`)."""
    if not isinstance(config, EcifConfig):
        config = EcifConfig.from_dict(dict(config or {}))
    start = time.perf_counter()
    scorer = EcifScorer(config, image_encoder=image_encoder, text_encoder=text_encoder).fit(PairSet.from_dataset(dataset))
    table = scorer.score(PairSet.from_dataset(reference) if reference is not None else None)
    return table, {"seconds": {**scorer.timings, "total": time.perf_counter() - start}, "flag_rule": scorer.flag_rule}


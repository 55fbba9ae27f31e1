"""The CUDA path against the CPU path: the same encoder, data and config scored on both devices.

These run only where CUDA is available (``benchmarks/gpu_check.sh`` runs them with ``-m cuda``); on a machine
without it they are reported as skipped, and ``test_influence_engine`` checks that asking for CUDA there is a
clear error. Agreement is Spearman between the two devices' influence, over the same ids in the same order:
>= 0.999 in fp32 (the same arithmetic up to kernel rounding) and >= 0.99 with bf16 autocast on CUDA (forward
passes in bf16, statistics in fp32).
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from influencegate import InfluenceConfig, InfluenceScorer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (benchmarks/gpu_check.sh)")]

N_SAMPLES = 512


@pytest.fixture(scope="module")
def scored_subset(digits, encoder_checkpoint):
    """(encoder, the first N_SAMPLES digits) shared by the device comparisons."""
    from influencegate.workflows.image_audit import load_or_pretrain

    encoder, _, _ = load_or_pretrain(digits, checkpoint=encoder_checkpoint, progress=False)
    return encoder, digits.subset(digits.sample_ids[:N_SAMPLES])


def score_on(encoder, dataset, **overrides) -> pd.DataFrame:
    config = InfluenceConfig(progress=False, **overrides)
    return InfluenceScorer(encoder, config).fit(dataset).score(dataset)


@pytest.fixture(scope="module")
def cpu_table(scored_subset) -> pd.DataFrame:
    encoder, dataset = scored_subset
    return score_on(encoder, dataset, device="cpu")


@pytest.mark.parametrize("precision,minimum", [("fp32", 0.999), ("bf16", 0.99)])
def test_cuda_scores_match_cpu(scored_subset, cpu_table, precision, minimum):
    encoder, dataset = scored_subset
    cuda_table = score_on(encoder, dataset, device="cuda", precision=precision)
    assert cuda_table["sample_id"].tolist() == cpu_table["sample_id"].tolist()
    assert cuda_table["influence"].notna().all()
    rho = spearmanr(cuda_table["influence"], cpu_table["influence"]).statistic
    print(f"\nCUDA {precision} vs CPU fp32 Spearman over {len(cpu_table)} samples: {rho:.5f}")
    assert rho >= minimum


def test_cuda_leaves_the_encoder_where_it_was(scored_subset):
    """Scoring on CUDA must not move the caller's encoder off the CPU (the scorer works on its own copy)."""
    encoder, dataset = scored_subset
    score_on(encoder, dataset.subset(dataset.sample_ids[:64]), device="cuda", draws=2)
    assert all(p.device.type == "cpu" for p in encoder.parameters())

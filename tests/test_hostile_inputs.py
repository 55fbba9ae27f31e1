"""Hostile-but-realistic inputs (issue 13): each becomes an error row or a one-line error, never garbage or a
traceback. The cases are those issue 13 reported, plus what turned up while fixing them."""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from influencegate import InfluenceConfig
from influencegate.cli import main
from influencegate.data import DatasetError, load_images, storage
from influencegate.data.decode import decode_image
from influencegate.influence.table import scores_table


@pytest.mark.parametrize("settings, message", [
    ({"sigma": math.nan}, "sigma must be finite"), ({"sigma": math.inf}, "sigma must be finite"),
    ({"damping": 0.0}, "damping must be None"), ({"damping": math.inf}, "damping must be None"),
])
def test_settings_that_give_garbage_are_refused(settings: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InfluenceConfig(**settings)


@pytest.mark.parametrize("argv, message", [
    (["score", "digits", "--epochs", "-3"], "must be >= 1"),
    (["score", "digits", "--damping", "0"], "damping must be None"),
    (["score", "digits", "--sigma", "nan"], "sigma must be finite"),
    (["score", "digits", "--draws", "0"], "must be >= 1"),
])
def test_cli_refuses_them_in_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_duplicate_sample_id_row_takes_no_influence() -> None:
    records = pd.DataFrame({"sample_id": ["a", "b", "a"], "path": ["/x/a.png", "/x/b.png", "/x/other.png"],
                            "error": [None, None, "duplicate sample_id (first at row 0)"]})
    table = scores_table(["a", "b"], np.array([2.0, 1.0]), records)
    assert len(table) == 3
    duplicate = table.iloc[2]
    assert math.isnan(duplicate["influence"]) and pd.isna(duplicate["influence_rank"])
    assert duplicate["error"].startswith("duplicate sample_id")
    assert table.iloc[0]["influence"] == 2.0


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_exif_orientation_is_applied() -> None:
    pixels = np.zeros((16, 32), np.uint8)
    pixels[:, 16:] = 255  # stored: left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = _encoded(Image.fromarray(pixels), "JPEG", exif=exif, quality=95)
    upright = decode_image(data, 16, 1).pixels[0].astype(float)
    assert upright[:8].mean() < 60 and upright[8:].mean() > 190  # displayed: top black, bottom white
    plain = decode_image(_encoded(Image.fromarray(pixels), "JPEG", quality=95), 16, 1).pixels[0].astype(float)
    assert plain[:, :8].mean() < 60 and plain[:, 8:].mean() > 190


def test_transparency_is_composited_on_white() -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)  # black and fully transparent...
    rgba[:4, :, 3] = 255  # ...except the top half, opaque black
    decoded = decode_image(_encoded(Image.fromarray(rgba, "RGBA"), "PNG"), 8, 3).pixels
    assert (decoded[:, :4] == 0).all() and (decoded[:, 4:] == 255).all()


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "scores.parquet"
    dead = tmp_path / ".scores.parquet.tmp-999999999-deadbeef"  # no such pid
    alive = tmp_path / f".scores.parquet.tmp-{os.getpid()}-cafe"  # a writer that is still running
    for tmp in (dead, alive):
        tmp.write_bytes(b"partial")
    storage.write_bytes(target, b"table")
    assert target.read_bytes() == b"table" and not dead.exists() and alive.exists()


def test_file_name_that_is_not_utf8_keeps_its_row(tmp_path: Path, digits_folder) -> None:
    folder = digits_folder(tmp_path / "d", count=3)
    bad = os.fsencode(folder) + b"/caf\xe9.png"  # Latin-1 bytes: not UTF-8
    with open(bad, "wb") as handle:
        handle.write((folder / "img_0000.png").read_bytes())
    ds = load_images(folder, image_size=8, channels=1)
    assert len(ds) == 3 and len(ds.records) == 4
    row = ds.failed.iloc[0]
    assert row["sample_id"] == "caf\\xe9.png" and row["error"].startswith("file name is not valid UTF-8")
    ds.records.to_parquet(tmp_path / "rows.parquet")  # the table stays writable


def test_numeric_captions_are_text(tmp_path: Path, digits_folder) -> None:
    from influencegate.data import load_pairs

    folder = digits_folder(tmp_path / "d", count=3)
    manifest = tmp_path / "pairs.jsonl"
    manifest.write_text('{"path": "d/img_0000.png", "caption": 42}\n{"path": "d/img_0001.png", "caption": "a seven"}\n'
                        '{"path": "d/img_0002.png", "caption": null}\n')
    pairs = load_pairs(str(manifest), image_size=8, channels=1)
    assert pairs.records["caption"].tolist()[:2] == ["42", "a seven"] and pd.isna(pairs.records["caption"].iloc[2])
    pairs.records.to_parquet(tmp_path / "rows.parquet")
    assert folder.exists()


@pytest.mark.parametrize("rows, groups, message", [
    (1, None, "outliers: need at least 2 samples"),
    (12, "all-nan", "column 'site' has 0 scored rows with a group value"),
])
def test_findings_that_cannot_run_are_one_line_and_keep_the_table(rows: int, groups: str | None, message: str,
                                                                  tmp_path: Path, digits_folder, encoder_checkpoint,
                                                                  capsys: pytest.CaptureFixture) -> None:
    digits_folder(tmp_path / "d", count=rows)
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [f"d/img_{i:04d}.png" for i in range(rows)], "site": [None] * rows}).to_csv(manifest)
    out = tmp_path / "scores.parquet"
    argv = ["score", str(manifest), "--encoder", str(encoder_checkpoint), "--image-size", "8", "--channels", "1",
            "--rank", "4", "--draws", "2", "--out", str(out), *(["--groups", "site"] if groups else [])]
    assert main(argv) == 2
    err = capsys.readouterr().err  # progress bars aside, one line
    errors = [line for line in err.splitlines() if line.startswith("influencegate: error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err
    assert len(pd.read_parquet(out)) == rows  # the scores were not lost


def test_channel_mismatch_is_found_before_scoring(tmp_path: Path, digits_folder, encoder_checkpoint,
                                                  capsys: pytest.CaptureFixture) -> None:
    folder = digits_folder(tmp_path / "d", count=5)
    argv = ["score", str(folder), "--encoder", str(encoder_checkpoint), "--channels", "3", "--out",
            str(tmp_path / "s.parquet")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the encoder cannot take this dataset's images (C x H x W = 3 x 32 x 32)" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "s.parquet").exists()


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def test_folder_scan_reads_links_inside_skips_the_rest_and_counts_each_kind(tmp_path: Path, capsys) -> None:
    """Symlinks: a file link inside the folder is read, one pointing outside is not, nor a linked folder;
    hidden files and folders, a FIFO and a text file are skipped; every kind is counted and printed."""
    root, outside = tmp_path / "photos", tmp_path / "elsewhere"
    _png(root / "a.png", 10)
    _png(root / "sub" / "b.png", 20)
    _png(outside / "secret.png", 30)
    (root / "inside_link.png").symlink_to(root / "sub" / "b.png")
    (root / "outside_link.png").symlink_to(outside / "secret.png")
    (root / "linked_folder").symlink_to(outside, target_is_directory=True)
    _png(root / ".hidden.png")
    _png(root / ".hidden_folder" / "c.png")
    _png(root / ".hidden_folder" / "d.png")
    (root / "notes.txt").write_text("not an image")
    os.mkfifo(root / "pipe.png")  # reading it would block forever
    data = load_images(str(root), image_size=8, channels=1)
    assert sorted(data.records["sample_id"]) == ["a.png", "inside_link.png", "sub/b.png"]
    assert data.records["error"].isna().all()
    assert data.skipped == {"hidden": 2, "symlink_outside": 1, "symlinked_folder": 1, "special": 1,
                            "unreadable_folder": 0, "not_image": 1}
    from influencegate.workflows.references import DatasetRef

    assert DatasetRef.of(data, "images", image_size=8, channels=1).skipped == data.skipped
    assert main(["score", str(root), "--image-size", "8", "--channels", "1", "--groups", "none",
                 "--out", str(tmp_path / "s.parquet")]) == 2  # stops after the dataset line (no such column)
    assert ("skipped in the folder: 2 hidden, 1 symlinks pointing outside, 1 symlinked folders, 1 special files, "
            "0 unreadable folders, 1 without an image extension") in capsys.readouterr().out
    assert load_images(str(root / "sub"), image_size=8, channels=1).skipped == dict.fromkeys(data.skipped, 0)


def test_skipped_counts_become_mlflow_metrics_not_params() -> None:
    from influencegate.integrations.mlflow.logging import AuditRun, audit_record

    skipped = {"hidden": 2, "symlink_outside": 1}
    record = audit_record(AuditRun(scores=pd.DataFrame({"sample_id": ["a"]}), summary={}, decision={"approved": True},
                                   dataset={"name": "d", "version": "v", "skipped": skipped}))
    assert record.metrics["dataset.skipped.hidden"] == 2 and record.metrics["dataset.skipped.symlink_outside"] == 1
    assert "dataset.skipped" not in record.params


def test_animations_give_their_first_frame_and_a_frames_column(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((8, 8), value, np.uint8)) for value in (0, 128, 255)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    _png(tmp_path / "still.png", 200)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    data = load_images(str(tmp_path), image_size=8, channels=1)
    by_id = data.records.set_index("sample_id")
    assert by_id.loc["moving.gif", "frames"] == 3 and by_id.loc["still.png", "frames"] == 1
    assert pd.isna(by_id.loc["broken.png", "frames"]) and str(data.records["frames"].dtype) == "Int64"
    pixels = data.images[data.sample_ids.index("moving.gif")] * data.std[0] + data.mean[0]
    assert float(pixels.max()) < 0.01  # the first frame (black), not a later one
    table = scores_table(data.sample_ids, np.ones(len(data)), data.records)
    frames_of = table.set_index("sample_id")["frames"]
    assert frames_of["moving.gif"] == 3 and frames_of["still.png"] == 1 and pd.isna(frames_of["broken.png"])
    assert list(table.columns[-2:]) == ["frames", "error"]


def test_a_manifest_may_not_name_a_column_frames(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    pd.DataFrame({"path": ["a.png"], "frames": [7]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DatasetError, match="reserved column names: frames"):
        load_images(str(tmp_path / "m.csv"), image_size=8, channels=1)

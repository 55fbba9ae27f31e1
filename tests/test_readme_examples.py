"""The README's object-store examples, run as written against a real S3-compatible server (moto on 127.0.0.1).

The test puts WebDataset shards and a SimCLR encoder where the examples expect them, then runs each command of
the marked code blocks in a shell (the `pip install` lines are what `.ci/wheel_check.sh` does for real; here
the extras they name must exist)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import boto3
import pandas as pd
import pytest

from influencegate.data import storage

from shard_data import make_samples, write_webdataset

REPO = Path(__file__).resolve().parents[1]
BUCKET = "pretraining-data"


def readme_commands(name: str) -> list[str]:
    """The shell commands of the README code block marked ``<!-- example: name -->`` (continuations joined)."""
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- example: {re.escape(name)} -->\n```bash\n(.*?)```", text, re.S)
    assert match, f"README has no example {name!r}"
    return [line.strip() for line in match.group(1).replace("\\\n", " ").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def bucket_with_shards(s3_endpoint: str, tmp_path_factory) -> str:
    """s3://pretraining-data with 4 WebDataset shards of 24 RGB images and a SimCLR encoder trained on them."""
    from influencegate.workflows.image_audit import load_or_pretrain
    from influencegate.data import load_images

    root = tmp_path_factory.mktemp("readme")
    write_webdataset(root / "shards", make_samples(96), per_shard=24)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    for path in sorted((root / "shards").iterdir()):
        client.upload_file(str(path), BUCKET, f"shards/{path.name}")
    data = load_images(f"s3://{BUCKET}/shards/{{000000..000003}}.tar")
    load_or_pretrain(data, method="simclr", epochs=1, seed=0, save_to=root / "simclr.pt", progress=False)
    storage.write_bytes(f"s3://{BUCKET}/encoders/simclr.pt", (root / "simclr.pt").read_bytes())
    return f"s3://{BUCKET}"


def run_example(name: str, cwd: Path) -> list[subprocess.CompletedProcess]:
    """Run the example's commands (the venv's bin first on PATH); checks the pip lines' extras exist."""
    extras = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = []
    for command in readme_commands(name):
        if command.startswith("pip install"):
            named = re.search(r"\[([^\]]+)\]", command).group(1).split(",")
            assert set(named) <= extras, f"{command!r} names extras that pyproject lacks"
            continue
        done.append(subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                                   timeout=900))
    return done


def test_readme_scores_shards_in_a_bucket(bucket_with_shards: str, tmp_path: Path) -> None:
    (result,) = run_example("s3-score", tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_parquet(f"{bucket_with_shards}/audits/scores.parquet")
    assert len(table) == 96 and table["influence"].notna().all()
    assert table["sample_id"].iloc[0] == "000000/sample_00000" and table["caption"].iloc[0] == "a photo number 0"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in result.stdout + result.stderr


@pytest.mark.slow
def test_readme_audits_shards_in_a_bucket(bucket_with_shards: str, tmp_path: Path, mlflow_uri: str) -> None:
    import mlflow

    (result,) = run_example("s3-audit", tmp_path)
    assert result.returncode in (0, 1), result.stderr[-2000:]  # approved or rejected by the data, not an error
    assert re.search(r"^(APPROVED|REJECTED): shards version [0-9a-f]{16}", result.stdout, re.M), result.stdout[-2000:]
    client = mlflow.MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("influencegate")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`dataset.name` = 'shards'")
    assert run.data.params["dataset.source"] == f"{bucket_with_shards}/shards/{{000000..000003}}.tar"
    assert run.data.tags["gate.status"] == ("approved" if result.returncode == 0 else "rejected")
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    assert not [k for k, v in {**run.data.params, **run.data.tags}.items() if secret in str(v)]

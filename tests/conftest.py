"""Shared fixtures. Telemetry off and ZenML/MLflow pointed at a temporary place BEFORE zenml or mlflow is imported."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

_TEST_ROOT = Path(tempfile.mkdtemp(prefix="influencegate_tests_"))
os.environ.update({
    "ZENML_ANALYTICS_OPT_IN": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "HF_HUB_OFFLINE": "1",
    "ZENML_CONFIG_PATH": str(_TEST_ROOT / "zenml"),
    "MLFLOW_TRACKING_URI": f"sqlite:///{_TEST_ROOT / 'mlflow.db'}",
    "ZENML_LOGGING_VERBOSITY": "WARN",
})

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

# A fast scorer for tests (the gate, the pipeline and the CLI are under test here, not the engine's accuracy).
FAST_SCORER = {"rank": 8, "draws": 2, "curvature": "kfac", "batch_size": 256, "progress": False}


@pytest.fixture(scope="session")
def test_root() -> Path:
    """The session's temporary folder (ZenML config, MLflow store live under it)."""
    return _TEST_ROOT


@pytest.fixture(scope="session")
def mlflow_uri() -> str:
    """The session's temporary MLflow store (sqlite; artifacts next to it)."""
    return os.environ["MLFLOW_TRACKING_URI"]


@pytest.fixture(scope="session")
def digits():
    """The embedded default dataset, loaded once."""
    from influencegate.data import load_images

    return load_images("digits")


@pytest.fixture(scope="session")
def encoder_checkpoint(digits, test_root: Path) -> Path:
    """One SmallCNN pretrained (SimCLR, 1 epoch) on the digits, shared by every test of the session."""
    from influencegate.workflows.image_audit import load_or_pretrain

    path = test_root / "encoder_digits.pt"
    load_or_pretrain(digits, method="simclr", epochs=1, seed=0, save_to=path, progress=False)
    return path


def write_digits_folder(root: Path, count: int = 120, corrupt: int = 0, offset: int = 0) -> Path:
    """`count` digits images as 8 x 8 grayscale PNGs under `root` (ids offset..), the first `corrupt` of them
    overwritten with bytes that are not an image. Returns `root`."""
    from PIL import Image
    from sklearn.datasets import load_digits

    images = load_digits().images
    root.mkdir(parents=True, exist_ok=True)
    for i in range(offset, offset + count):
        path = root / f"img_{i:04d}.png"
        Image.fromarray((images[i] * 255 / 16).astype(np.uint8), mode="L").save(path)
    for i in range(offset, offset + corrupt):
        (root / f"img_{i:04d}.png").write_bytes(b"this is not a png")
    return root


@pytest.fixture()
def digits_folder():
    """Factory: write_digits_folder(root, count, corrupt, offset)."""
    return write_digits_folder


@pytest.fixture()
def audit_config(tmp_path: Path, encoder_checkpoint: Path, mlflow_uri: str):
    """Factory: a YAML audit config for a folder dataset (8 x 8 grayscale, the shared encoder, fast scorer)."""

    def make(source: Path, name: str | None = None, **parameters) -> Path:
        config = {
            "enable_cache": False,
            "parameters": {
                "dataset": {"source": str(source), "image_size": 8, "channels": 1, **({"name": name} if name else {})},
                "encoder": {"checkpoint": str(encoder_checkpoint)},
                "scorer": dict(FAST_SCORER),
                "tracking": {"uri": mlflow_uri, "experiment": "influencegate-tests"},
                **parameters,
            },
        }
        path = tmp_path / f"audit_{name or source.name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    return make


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A real S3-compatible server (moto in server mode) on 127.0.0.1 for the whole session.

    The usual credential chain is pointed at it through the environment (``AWS_ENDPOINT_URL`` and dummy
    keys), so the code under test finds it the way it finds a real store; subprocesses inherit it.
    """
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    yield endpoint
    server.stop()


@pytest.fixture()
def s3_bucket(s3_endpoint: str, request) -> str:
    """A new, empty bucket on the moto server for one test: returns its URL ``s3://<name>``."""
    import re

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", f"t-{request.node.name.lower()}")[:50].strip("-") + f"-{os.getpid() % 1000}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"

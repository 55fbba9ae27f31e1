"""Shared helpers for the benchmarks: devices, clocks, memory, benchmark data and models.

Nothing here is part of the influencegate package; the benchmarks import the package like a user would.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


# -- subprocesses ----------------------------------------------------------------------------------------
def run_with_deadline(cmd: Sequence[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)`, except that a timeout ends the
    command's whole process group (the workers it spawned too) before TimeoutExpired is raised with its output.

    A benchmark stage stopped at its limit must not leave GPU workers running into the next stage: on the
    first GPU check, the orphans of a stopped stage made every later stage time out."""
    with subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err) from exc
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


# -- devices and clocks ----------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name} requested but CUDA is not available on this machine")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that a clock read afterwards covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def timed(device: torch.device, into: dict[str, float], key: str) -> Iterator[None]:
    """Wall-clock seconds of the block (device synchronised on both ends), stored as into[key]."""
    synchronize(device)
    start = time.perf_counter()
    yield
    synchronize(device)
    into[key] = time.perf_counter() - start


# -- memory ----------------------------------------------------------------------------------------------
def rss_peak_bytes() -> int:
    """ru_maxrss of this process: the peak resident set size since it started (bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def rss_now_bytes() -> int:
    """Current resident set size (bytes); Linux /proc, else the peak."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return rss_peak_bytes()


def reset_device_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def memory_report(device: torch.device, rss_baseline: int) -> dict[str, Any]:
    """Peak memory of this process: ru_maxrss (always) and, on CUDA, max_memory_allocated since the reset."""
    out: dict[str, Any] = {
        "rss_peak_mib": rss_peak_bytes() / 2**20,
        "rss_baseline_mib": rss_baseline / 2**20,
        "rss_peak_over_baseline_mib": (rss_peak_bytes() - rss_baseline) / 2**20,
    }
    if device.type == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    out["peak_mib"] = out.get("cuda_max_allocated_mib", out["rss_peak_mib"])
    out["peak_kind"] = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "ru_maxrss"
    return out


# -- data ------------------------------------------------------------------------------------------------
class SampleDataset(Dataset):
    """(sample_id, image C x H x W) pairs over an in-memory tensor, the influencegate dataset protocol."""

    def __init__(self, sample_ids: Sequence[str], images: torch.Tensor) -> None:
        assert len(sample_ids) == images.shape[0]
        self.sample_ids = list(sample_ids)
        self.images = images

    def __len__(self) -> int:
        return len(self.sample_ids)

    def __getitem__(self, i: int) -> tuple[str, torch.Tensor]:
        return self.sample_ids[i], self.images[i]

    def head(self, n: int) -> "SampleDataset":
        """The first n samples (views, no copy)."""
        return SampleDataset(self.sample_ids[:n], self.images[:n])


def tile(ids: Sequence[str], images: torch.Tensor, n: int, noise: float, seed: int) -> tuple[list[str], torch.Tensor]:
    """n samples: the originals, then copies t = 1, 2, ... with N(0, noise^2) added (seeded), ids '<id>#t<t>'."""
    base = images.shape[0]
    gen = torch.Generator().manual_seed(seed)
    out_ids, chunks = [], []
    t = 0
    while len(out_ids) < n:
        take = min(base, n - len(out_ids))
        chunk = images[:take]
        if t > 0:
            chunk = chunk + noise * torch.randn(chunk.shape, generator=gen)
        chunks.append(chunk)
        out_ids.extend(ids[:take] if t == 0 else [f"{s}#t{t}" for s in ids[:take]])
        t += 1
    return out_ids, torch.cat(chunks).contiguous()


SETUPS = {
    "small_cnn": {"default_n": 1797, "input": "sklearn digits, 1 x 8 x 8, normalised (load_images('digits'))"},
    "resnet18": {"default_n": 2048, "input": ("sklearn digits resized to 32 x 32 and replicated to 3 channels "
                                              "(load_images('digits', image_size=32, channels=3))")},
    "resnet50": {"default_n": 512, "input": ("sklearn digits resized to 224 x 224 and replicated to 3 channels "
                                             "(load_images('digits', image_size=224, channels=3))")},
}
MODEL_NAMES = {"small_cnn": "SmallCNN", "resnet18": "cifar_resnet18 (solo-learn CIFAR ResNet-18)",
               "resnet50": "torchvision resnet50 (weights=None, fc = Identity), ImageNet stem at 224 px"}


def build_setup(name: str, n: int | None = None, seed: int = 0) -> tuple[torch.nn.Module, SampleDataset, dict]:
    """(random-init encoder, dataset of n samples, description) for a benchmark setup, deterministic in seed."""
    from influencegate.data import load_images

    try:
        from influencegate.models import SmallCNN, cifar_resnet18
    except ImportError:  # the package __init__ may be mid-edit; the modules themselves are enough
        from influencegate.models.backbones import cifar_resnet18
        from influencegate.models.small_cnn import SmallCNN
    from influencegate.models.backbones import torchvision_encoder

    if name not in SETUPS:
        raise SystemExit(f"unknown setup {name!r}; known: {sorted(SETUPS)}")
    n = SETUPS[name]["default_n"] if n is None else int(n)
    torch.manual_seed(seed)
    if name == "small_cnn":
        model = SmallCNN(in_channels=1)
        data = load_images("digits")
    elif name == "resnet18":
        model = cifar_resnet18()
        data = load_images("digits", image_size=32, channels=3)
    else:
        model = torchvision_encoder("resnet50")
        data = load_images("digits", image_size=224, channels=3)
    base = data.images.shape[0]
    ids, images = tile(data.sample_ids, data.images, n, noise=0.05, seed=seed)
    info = {
        "model": MODEL_NAMES[name],
        "params": sum(p.numel() for p in model.parameters()),
        "weights": f"random init, torch.manual_seed({seed})",
        "input_shape": list(images.shape[1:]),
        "n": n,
        "data": SETUPS[name]["input"] + (f"; first {n} samples" if n <= base else
                                         f"; tiled to {n} samples (copies get N(0, 0.05^2) noise)"),
    }
    return model, SampleDataset(ids, images), info


# -- environment and output ------------------------------------------------------------------------------
def package_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:  # noqa: BLE001
        return None


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "kronfluence": package_version("kronfluence"),
        "dattri": package_version("dattri"),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


def measure_sets(description: str, names: Sequence[str], measure: Callable[[str], dict],
                 threads: int = 2) -> dict[str, dict]:
    """{set name: measure(name)} for the sets named by --sets (comma list; default every one of `names`), on
    `threads` torch threads: the command line of the benchmarks that measure named (encoder x data) sets."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(names))
    args = parser.parse_args()
    torch.set_num_threads(threads)
    return {name: measure(name) for name in args.sets.split(",")}

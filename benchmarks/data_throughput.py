"""Decoding throughput of the data loaders: images/s from local WebDataset shards and from an S3-compatible
object store (moto in server mode on 127.0.0.1, started here), with 0/2/4 DataLoader workers, against a plain
PIL loop over the same image files in one process (the limit for one process: open, decode, RGB, resize).

Data: natural photographs from scikit-image's bundled samples (astronaut, coffee, chelsea, rocket, ...), cut
into random square patches, JPEG quality 90, written as WebDataset shards of 250 samples (jpg + txt) and
as plain files. Two source resolutions: 64 px (the tuning part: the shard size and part size were looked at
here) and 224 px (held out, reported). Every loader decodes to 32 x 32 RGB. The loaders also hash each image
(the version id) and build the dataset tensor; the PIL loop does neither.

Output: JSON on stdout and in benchmarks/results/data_throughput.json: per resolution and setting, images/s
(median and min/max over --repeats runs) and the ratio to the PIL loop's median measured in the same run.
Run: .venv/bin/python benchmarks/data_throughput.py [--n 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

RESULTS = Path(__file__).resolve().parent / "results" / "data_throughput.json"
SOURCE_SIZES = {"64px (tuning)": 64, "224px (held out)": 224}
PER_SHARD = 250
OUT_SIZE = 32


def photo_patches(n: int, side: int, seed: int) -> list[bytes]:
    """n JPEG-encoded side x side RGB patches cut at random places from scikit-image's colour photographs."""
    from skimage import data

    photos = [getattr(data, name)() for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                                                  "immunohistochemistry", "retina", "colorwheel")]
    photos = [p[..., :3] for p in photos if p.ndim == 3 and min(p.shape[:2]) > side]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        top, left = (int(rng.integers(0, photo.shape[k] - side)) for k in (0, 1))
        buffer = io.BytesIO()
        Image.fromarray(photo[top:top + side, left:left + side]).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def write_data(images: list[bytes], root: Path) -> tuple[Path, Path]:
    """(shard folder, file folder) holding the same images."""
    import webdataset as wds

    shards, files = root / "shards", root / "files"
    shards.mkdir(parents=True)
    files.mkdir(parents=True)
    for shard, start in enumerate(range(0, len(images), PER_SHARD)):
        with wds.TarWriter(str(shards / f"{shard:06d}.tar")) as writer:
            for i in range(start, min(start + PER_SHARD, len(images))):
                writer.write({"__key__": f"{i:07d}", "jpg": images[i], "txt": f"patch {i}"})
    for i, data in enumerate(images):
        (files / f"{i:07d}.jpg").write_bytes(data)
    return shards, files


def pil_loop(files: Path) -> int:
    """The plain one-process limit: open, decode, convert and resize every file; returns the count."""
    count = 0
    for path in sorted(files.iterdir()):
        with Image.open(path) as image:
            np.asarray(image.convert("RGB").resize((OUT_SIZE, OUT_SIZE), Image.Resampling.BILINEAR))
        count += 1
    return count


def start_moto() -> tuple[object, str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": endpoint})
    return server, endpoint


def upload(folder: Path, bucket: str, prefix: str) -> str:
    import boto3

    client = boto3.client("s3")
    for path in sorted(folder.iterdir()):
        client.upload_file(str(path), bucket, f"{prefix}/{path.name}")
    return f"s3://{bucket}/{prefix}"


def rate(run, repeats: int) -> dict[str, float]:
    """images/s of `run()` (which returns the image count): median, min and max over repeats."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - start))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="images per resolution")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    os.environ.setdefault("TQDM_DISABLE", "1")
    from influencegate.data import load_images

    server, endpoint = start_moto()
    import boto3

    boto3.client("s3").create_bucket(Bucket="bench")
    results: dict[str, object] = {
        "benchmark": "data_throughput", "n_images": args.n, "repeats": args.repeats, "seed": args.seed,
        "out_size": OUT_SIZE, "per_shard": PER_SHARD, "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
        "platform": platform.platform(), "store": "moto S3 server on 127.0.0.1 (s3fs)", "resolutions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for label, side in SOURCE_SIZES.items():
            shards, files = write_data(photo_patches(args.n, side, args.seed), Path(tmp) / f"{side}")
            remote = upload(shards, "bench", f"shards{side}")
            limit = rate(lambda: pil_loop(files), args.repeats)
            settings: dict[str, dict[str, float]] = {"pil_loop_files": limit}
            for workers in args.workers:
                settings[f"local_shards_w{workers}"] = rate(
                    lambda: len(load_images(str(shards), image_size=OUT_SIZE, workers=workers)), args.repeats)
                settings[f"s3_shards_w{workers}"] = rate(
                    lambda: len(load_images(remote, image_size=OUT_SIZE, workers=workers)), args.repeats)
            settings["local_files_w0"] = rate(lambda: len(load_images(str(files), image_size=OUT_SIZE)), args.repeats)
            for value in settings.values():
                value["ratio_to_pil_loop"] = value["median"] / limit["median"]
            results["resolutions"][label] = {k: {m: round(v, 3) for m, v in s.items()} for k, s in settings.items()}
    server.stop()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

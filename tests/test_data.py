"""Data sets: bundled digits, toy, local files, TFDS through mock data and an offline fixture."""
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from shortdiff_tf import data, pixels


def test_digits_are_bundled_uint8_8x8_with_disjoint_splits():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert train.array.shape == (1500, 8, 8, 1) and test.array.shape == (297, 8, 8, 1)
    assert train.array.dtype == np.uint8 and train.array.max() == 255
    assert len(np.unique(np.concatenate([train.array, test.array]).reshape(1797, -1), axis=0)) > 1700


def test_scaling_roundtrip_and_range():
    k = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    for u in (0.0, 0.5, 0.999):
        x = pixels.dequantize(tf.constant(k), tf.fill(k.shape, u)).numpy()
        assert x.min() >= -1 and x.max() < 1
        np.testing.assert_array_equal(pixels.to_uint8(x), k)


def test_local_npz_and_image_folder(tmp_path):
    imgs = np.random.RandomState(0).randint(0, 256, (5, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "mine.npz", images=imgs)
    assert data.load(str(tmp_path / "mine.npz")).array.shape == (5, 6, 6, 1)
    from PIL import Image
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(folder / f"{i}.png")
    np.testing.assert_array_equal(data.load(str(folder)).array[..., 0], imgs)


def test_bad_local_data(tmp_path):
    np.savez(tmp_path / "bad.npz", other=np.zeros(3))
    with pytest.raises(ValueError, match="no array named images"):
        data.load(str(tmp_path / "bad.npz"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.load(str(tmp_path / "missing.npz"))


def test_tfds_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        arr = data.load("mnist", "train").array
    assert arr.shape == (12, 28, 28, 1) and arr.dtype == np.uint8


def test_tfds_offline_fixture_named_mnist(tmp_path):
    imgs = np.random.RandomState(1).randint(0, 256, (10, 28, 28, 1), dtype=np.uint8)
    features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(28, 28, 1)),
                                           "label": tfds.features.ClassLabel(num_classes=10)})
    split = lambda a: tf.data.Dataset.from_tensor_slices({"image": a, "label": np.zeros(len(a), np.int64)})
    tfds.dataset_builders.store_as_tfds_dataset(name="mnist", version="3.0.1", features=features,
                                                split_datasets={"train": split(imgs), "test": split(imgs[:4])},
                                                data_dir=str(tmp_path))
    arr = data.load("mnist", "test", data_dir=str(tmp_path)).array     # TFDS stores in key order
    rows = lambda a: sorted(map(bytes, a.reshape(len(a), -1)))
    assert arr.shape == (4, 28, 28, 1) and rows(arr) == rows(imgs[:4])


def test_tfds_not_prepared_fails_fast_with_how_to(tmp_path):
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="not prepared.*--download"):
        data.load("mnist", "train", data_dir=str(tmp_path))
    assert time.perf_counter() - start < 5


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown data set 'no_such_set'"):
        data.load("no_such_set")


def test_the_toy_names_data_knows_are_the_toy_registry():
    from shortdiff_tf import toy
    assert sorted(data.TOY_NAMES) == toy.TOY.names()


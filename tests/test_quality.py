"""FID/KID against closed forms, and the offline feature classifier."""
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from shortdiff_tf import data as data_lib, extractors, quality


def fd_2x2(mu1, c1, mu2, c2):
    """Closed form for 2x2 covariances: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)) for PSD M,
    with M = C1^{1/2} C2 C1^{1/2}, tr M = tr(C1 C2), det M = det C1 det C2."""
    cross = np.sqrt(np.trace(c1 @ c2) + 2 * np.sqrt(np.linalg.det(c1) * np.linalg.det(c2)))
    return np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * cross


def test_frechet_distance_matches_closed_forms():
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    c1 = np.array([[2.0, 0.3], [0.3, 0.5]])
    rot = np.array([[np.cos(0.7), -np.sin(0.7)], [np.sin(0.7), np.cos(0.7)]])
    c2 = rot @ np.diag([3.0, 0.2]) @ rot.T                       # does not commute with c1
    assert quality.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(fd_2x2(mu1, c1, mu2, c2), rel=1e-10)
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])  # diagonal: sum (sqrt a - sqrt b)^2
    assert quality.frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(
        np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-10)
    assert quality.frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)


def test_fid_of_gaussian_samples_converges_to_the_closed_form():
    rng = np.random.RandomState(0)
    mu1, mu2 = np.array([0.0, 1.0]), np.array([0.5, 0.0])
    c1, c2 = np.array([[1.0, 0.5], [0.5, 2.0]]), np.array([[0.5, -0.2], [-0.2, 1.0]])
    f1, f2 = rng.multivariate_normal(mu1, c1, 200000), rng.multivariate_normal(mu2, c2, 200000)
    # the plug-in estimate has O(d/n) bias and O(1/sqrt(n)) noise: ~0.01 at n = 2e5
    assert quality.fid_from_features(f1, f2) == pytest.approx(fd_2x2(mu1, c1, mu2, c2), abs=0.02)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.RandomState(1)
    same = quality.kernel_distance(rng.randn(1000, 8), rng.randn(1000, 8))
    shifted = quality.kernel_distance(rng.randn(1000, 8), rng.randn(1000, 8) + 0.5)
    assert abs(same[0]) < 3 * same[1] + 1e-3            # unbiased: zero within its spread
    assert shifted[0] > 10 * max(same[1], 1e-3)


def test_digits_have_labels_in_both_splits():
    for split in ("train", "test"):
        d = data_lib.load("digits", split)
        assert d.labels is not None and d.labels.shape == (len(d),) and set(d.labels) == set(range(10))


def test_train_classifier_cli_and_features(tmp_path):
    out = tmp_path / "cls" / "digits.keras"
    r = CliRunner().invoke(cli, ["train-classifier", "--epochs", "2", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "test accuracy" in r.output and out.exists()
    acc = float(r.output.split("test accuracy ")[1].split()[0])
    assert acc > 0.5                                      # 10 classes: chance is 0.1
    ex = extractors.ClassifierFeatures(out)
    test = data_lib.load("digits", "test").array
    reference = quality.features(ex, test[100:])
    q = quality.sample_quality(test[:100], reference, ex)
    noise = np.random.RandomState(0).randint(0, 256, (100, 8, 8, 1)).astype(np.uint8)
    assert quality.sample_quality(noise, reference, ex)["fid"] > q["fid"]
    with pytest.raises(ValueError, match="reference has 5 features"):
        quality.sample_quality(test[:10], reference[:, :5], ex)
    assert q["extractor"] == "classifier:digits.keras" and q["num_samples"] == 100
    with pytest.raises(ValueError, match="takes images"):
        ex(np.zeros((2, 28, 28, 1), np.uint8))


def test_classifier_bad_input(tmp_path):
    r = CliRunner().invoke(cli, ["train-classifier", "--dataset", "gmm2d", "--out", str(tmp_path / "c.keras")])
    assert r.exit_code != 0 and "no labelled images" in r.output
    with pytest.raises(FileNotFoundError, match="train-classifier"):
        extractors.ClassifierFeatures(tmp_path / "missing.keras")
    (tmp_path / "bad.keras").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable classifier"):
        extractors.ClassifierFeatures(tmp_path / "bad.keras")
    with pytest.raises(FileNotFoundError, match="inception_v3_weights"):      # no download is attempted
        extractors.load_extractor(f"inception:{tmp_path / 'missing.h5'}")

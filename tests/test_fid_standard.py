"""The standard FID network path: a synthetic frozen graph with the tensor names of
classify_image_graph_def.pb (ExpandDims:0 in, its own bilinear resize and scaling, pool_3:0 out),
the original code's .npz statistics, and the Fréchet distance against scipy's sqrtm."""
import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from shortdiff_tf import extractors, quality

FEATURES = 6


def synthetic_graph(path) -> np.ndarray:
    """A frozen GraphDef built as the 2015 graph is fed: ExpandDims [1, H, W, 3] of pixels 0..255,
    a bilinear resize to 8 x 8, (x - 128) / 128, a 3x3 conv + ReLU and an 8 x 8 average pool named
    pool_3 ([1, 1, 1, F]).  -> the conv kernel."""
    kernel = np.random.RandomState(0).normal(size=(3, 3, 3, FEATURES)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [1, None, None, 3], name="ExpandDims")
        r = tf.compat.v1.image.resize_bilinear(x, [8, 8], name="ResizeBilinear")
        h = tf.nn.relu(tf.nn.conv2d((r - 128.0) / 128.0, tf.constant(kernel), 1, "SAME"))
        tf.nn.avg_pool2d(h, 8, 1, "VALID", name="pool_3")
    path.write_bytes(graph.as_graph_def().SerializeToString())
    return graph


def one_by_one(graph, images: np.ndarray) -> np.ndarray:
    """The original protocol: one image at a time through a TF1 session of the frozen graph."""
    with tf.compat.v1.Session(graph=graph) as sess:
        out = graph.get_tensor_by_name("pool_3:0")
        return np.concatenate([sess.run(out, {"ExpandDims:0": img[None].astype(np.float32)}).reshape(1, -1)
                               for img in images])


def test_the_standard_extractor_batches_the_frozen_graph(tmp_path):
    """Batched features of 5 RGB and 3 grey images of another size equal the graph run image by
    image (1e-5); grey images are repeated over three channels."""
    graph = synthetic_graph(tmp_path / "classify_image_graph_def.pb")
    extractor = extractors.load_extractor(f"fid-inception:{tmp_path / 'classify_image_graph_def.pb'}")
    assert extractors.is_standard(extractor) and "pool_3" in extractor.name
    rgb = np.random.RandomState(1).randint(0, 256, (5, 12, 12, 3), dtype=np.uint8)
    np.testing.assert_allclose(extractor(rgb), one_by_one(graph, rgb), rtol=1e-5, atol=1e-6)
    grey = np.random.RandomState(2).randint(0, 256, (3, 10, 10, 1), dtype=np.uint8)
    got = extractor(grey)
    assert got.shape == (3, FEATURES)
    np.testing.assert_allclose(got, one_by_one(graph, np.repeat(grey, 3, -1)), rtol=1e-5, atol=1e-6)


def test_statistics_round_trip_and_fid_against_them(tmp_path):
    """save_stats writes the original format (mu, sigma); the FID of samples against the stats
    of a reference set equals the FID between the two feature sets."""
    synthetic_graph(tmp_path / "g.pb")
    extractor = extractors.StandardInception(tmp_path / "g.pb")
    rng = np.random.RandomState(3)
    ref = rng.randint(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    samples = np.clip(ref.astype(int) + rng.randint(-30, 30, ref.shape), 0, 255).astype(np.uint8)
    quality.save_stats(tmp_path / "ref.npz", extractor(ref))
    with np.load(tmp_path / "ref.npz") as f:
        assert f["mu"].shape == (FEATURES,) and f["sigma"].shape == (FEATURES, FEATURES)
    r = quality.fid_against_stats(samples, quality.load_stats(tmp_path / "ref.npz"), extractor)
    assert r["fid"] == pytest.approx(quality.fid_from_features(extractor(samples), extractor(ref)), rel=1e-9)
    assert r["num_samples"] == 40 and r["extractor"] == extractor.name and r["fid"] > 0


def test_frechet_distance_against_scipy_sqrtm():
    """|mu1 - mu2|^2 + tr(C1 + C2 - 2 sqrtm(C1 C2)) with scipy's sqrtm (the original FID code's
    formula) on random 50-d covariances of rank 50 and of rank 20, to 1e-8 relative."""
    rng = np.random.RandomState(4)
    for rank in (50, 20):
        a, b = rng.normal(size=(50, rank)), rng.normal(size=(50, rank))
        c1, c2 = a @ a.T / rank, b @ b.T / rank
        mu1, mu2 = rng.normal(size=50), rng.normal(size=50)
        reference = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real)
        assert quality.frechet_distance(mu1, c1, mu2, c2) == pytest.approx(reference, rel=1e-8)


@pytest.mark.parametrize("bad, match", [
    ("missing.pb", "not found"), ("garbage.pb", "not a TF GraphDef"), ("other.pb", "no tensor")])
def test_a_wrong_graph_file_is_named(tmp_path, bad, match):
    (tmp_path / "garbage.pb").write_bytes(b"\x00\x01not a protobuf\xff" * 10)
    graph = tf.Graph()
    with graph.as_default():
        tf.constant(1.0, name="something")
    (tmp_path / "other.pb").write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        extractors.StandardInception(tmp_path / bad)


@pytest.mark.parametrize("content, match", [
    ({"mu": np.zeros(3)}, "mu and sigma"), ({"mu": np.zeros(3), "sigma": np.zeros((2, 2))}, "mu must be"),
    ({"mu": np.full(2, np.nan), "sigma": np.eye(2)}, "finite")])
def test_bad_statistics_files_are_named(tmp_path, content, match):
    np.savez(tmp_path / "s.npz", **content)
    with pytest.raises(ValueError, match=match):
        quality.load_stats(tmp_path / "s.npz")


def test_study_reports_the_standard_fid_with_its_count(glow_run, tmp_path):
    """study --extractor fid-inception:G --fid-stats S --fid-samples 12 (with 8 samples per
    draw): the FID of 12 samples, in batches, against the statistics, named by its extractor."""
    import json
    from click.testing import CliRunner
    from cli.main import cli
    synthetic_graph(tmp_path / "classify_image_graph_def.pb")
    extractor = extractors.StandardInception(tmp_path / "classify_image_graph_def.pb")
    from shortdiff_tf import data as data_lib
    quality.save_stats(tmp_path / "ref.npz", extractor(data_lib.load("digits", "train").array[:200]))
    d = tmp_path / "study"
    r = CliRunner().invoke(cli, [str(a) for a in (
        "study", "--dataset", "digits", "--reuse-score", glow_run[0], "--T-grid", "0.2", "--prior-steps", "2",
        "--glow-hidden", "8", "--glow-steps", "1", "--samplers", "heun", "--rtol", "1e-2", "--atol", "1e-2",
        "--num-examples", "2", "--num-samples", "8", "--fid-samples", "12", "--no-progress", "--strategy", "default",
        "--extractor", f"fid-inception:{tmp_path / 'classify_image_graph_def.pb'}", "--fid-stats", tmp_path / "ref.npz",
        "--workdir", d)])
    assert r.exit_code == 0, r.output
    p = json.loads((d / "study.json").read_text())["points"][0]
    assert np.isfinite(p["fid_heun_aux"]) and np.isfinite(p["fid_heun_noise"]) and p["fid_num_samples"] == 12
    assert "pool_3" in p["fid_extractor"] and "kid_heun_aux" not in p
    assert "12 samples" in r.output and "pool_3" in r.output


def test_the_standard_network_defaults_to_50k_samples(tmp_path):
    from shortdiff_tf.study.config import StudyConfig
    from shortdiff_tf.study.images import fid_samples
    synthetic_graph(tmp_path / "g.pb")
    standard = extractors.StandardInception(tmp_path / "g.pb")
    assert fid_samples(StudyConfig(dataset="digits", num_samples=64), standard) == 50_000
    assert fid_samples(StudyConfig(dataset="digits", num_samples=64), lambda x: x) == 64
    assert fid_samples(StudyConfig(dataset="digits", num_samples=64, fid_samples=100), standard) == 100


@pytest.mark.parametrize("kind", ["standard", "classifier"])
def test_features_split_over_two_replicas_equal_one_device(tmp_path, kind):
    """quality.features under 2 mirrored replicas: 7 images in batches of 4 (so shares of 2 and of
    1 padded to 2) run half on each logical CPU and give one device's features (1e-5)."""
    from tests.conftest import two_replicas
    if kind == "standard":
        synthetic_graph(tmp_path / "g.pb")
        extractor = extractors.StandardInception(tmp_path / "g.pb")
    else:
        extractors.build_classifier((8, 8, 1), 10, width=4, feature_dim=6).save(tmp_path / "c.keras")
        extractor = extractors.ClassifierFeatures(tmp_path / "c.keras")
    images = np.random.RandomState(1).randint(0, 256, size=(7, 8, 8, 1)).astype(np.uint8)
    one = quality.features(extractor, images, batch_size=4)
    devices, tensor_fn = [], extractor.tensor_fn

    def recorded(x):
        out = tensor_fn(x)
        devices.append(out.device)
        return out

    extractor.tensor_fn = recorded
    two = quality.features(extractor, images, batch_size=4, strategy=two_replicas())
    assert two.shape == one.shape and one.shape[0] == 7
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-5)
    assert len(devices) == 4 and {d.split("device:")[-1] for d in devices} == {"CPU:0", "CPU:1"}   # 2 batches x 2

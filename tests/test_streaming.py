"""The streaming TFDS pipeline: bounded memory whatever the data set's size, one epoch is one
pass over the split, the same batches for the same seed, and exact resume of a training run
through the iterator state in its checkpoint."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from shortdiff_tf import config, data as data_lib, streaming, training
from shortdiff_tf.app.train import train
from tests.conftest import two_replicas
from tests.test_training import TINY, weights

N = 64


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A prepared TFDS split named mnist: N random 28x28 images with their index as the label."""
    path = tmp_path_factory.mktemp("tfds")
    images = np.random.RandomState(2).randint(0, 256, (N, 28, 28, 1), dtype=np.uint8)
    features = tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(28, 28, 1)),
                                           "label": tfds.features.ClassLabel(num_classes=N)})
    split = lambda a: tf.data.Dataset.from_tensor_slices({"image": a, "label": np.arange(len(a), dtype=np.int64)})
    tfds.dataset_builders.store_as_tfds_dataset(name="mnist", version="3.0.1", features=features,
                                                split_datasets={"train": split(images), "test": split(images[:8])},
                                                data_dir=str(path))
    return str(path), images


def pixels(batch) -> np.ndarray:
    """The uint8 images of a batch drawn without dequantisation noise (x0 = bin centres)."""
    return data_lib.to_uint8(batch["x0"].numpy())


def test_an_epoch_is_one_pass_over_the_split_and_the_seed_fixes_the_order(tfds_dir):
    """8 batches of 8 hold each of the 64 images once; a second iterator with the same seed gives
    the same batches (noise included), another seed another order."""
    path, images = tfds_dir
    src = streaming.source("mnist", "train", path)
    assert (src.shape, src.num_examples) == ((28, 28, 1), N)
    draw = lambda seed, k: [next(it) for it in [iter(streaming.dataset(src, 8, seed, False, buffer=32))]
                            for _ in range(k)]
    first = draw(0, N // 8)
    seen = np.concatenate([pixels(b) for b in first])
    key = lambda a: sorted(x.tobytes() for x in a)
    assert key(seen) == key(images)
    again = draw(0, 3)
    for a, b in zip(first, again):
        for name in ("x0", "u", "e"):
            np.testing.assert_array_equal(a[name].numpy(), b[name].numpy())
    assert not np.array_equal(pixels(draw(1, 1)[0]), pixels(first[0]))


def test_a_streamed_run_resumes_exactly(tfds_dir, tmp_path):
    """Training on the TFDS stream (12 steps of 8: past the end of the first epoch of 64 images),
    stopped after 5 steps (between checkpoints) and resumed, ends with the uninterrupted run's
    weights exactly: the checkpoint holds the iterator's position and shuffle buffer."""
    cfg = dataclasses.replace(TINY, data=config.DataConfig(dataset="mnist", data_dir=tfds_dir[0]),
                              model=dataclasses.replace(TINY.model, attn_resolutions=()),
                              train=dataclasses.replace(TINY.train, steps=12, checkpoint_every=4))
    report = train(cfg, tmp_path / "full", progress=False, log=lambda *_: None)
    assert report["step"] == 12
    assert json.loads((tmp_path / "full" / "config.json").read_text())["data"]["shape"] == [28, 28, 1]
    train(cfg, tmp_path / "split", progress=False, stop_after=5, log=lambda *_: None)
    train(cfg, tmp_path / "split", progress=False, log=lambda *_: None)
    for a, b in zip(weights(tmp_path / "full"), weights(tmp_path / "split")):
        np.testing.assert_array_equal(a, b)


def test_two_replicas_each_get_half_of_the_global_batch(tfds_dir):
    """distribute_datasets_from_function on 2 replicas: per-replica batches of 4 that together
    are 8 distinct images, and a distributed train step runs on them."""
    strategy = two_replicas()
    src = streaming.source("mnist", "train", tfds_dir[0])
    batch = next(streaming.iterator(src, 8, 0, False, strategy, buffer=64))
    parts = [pixels(b) for b in strategy.experimental_local_results(batch)]
    assert [len(p) for p in parts] == [4, 4]
    assert len({x.tobytes() for x in np.concatenate(parts)}) == 8
    cfg = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, attn_resolutions=()))
    state = training.build_state(cfg, src.shape, strategy)
    loss, _ = training.make_train_step(cfg, state, strategy)(batch)
    assert np.isfinite(float(loss))


MEMORY = """
import os, resource
import tensorflow_datasets as tfds
from shortdiff_tf import streaming
with tfds.testing.mock_data(num_examples={n}):
    it = iter(streaming.dataset(streaming.source("mnist", "train"), 64, 0, True, buffer=500))
    for _ in range(60):
        next(it)
    print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
os._exit(0)                      # the mocked generator can hang the interpreter's shutdown
"""


def peak_kb(n: int) -> int:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(MEMORY.format(n=n))], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    line = [l for l in out.stdout.splitlines() if l.startswith("MAXRSS_KB")]
    assert line, out.stderr[-2000:]
    return int(line[0].split()[1])


def test_memory_does_not_grow_with_the_data_set():
    """60 batches of 64 from a mocked split of 1,000 and of 500,000 MNIST-sized images: the peak
    memory of the two processes differs by less than 40 MB, where holding the larger split
    would take 392 MB (500,000 x 784 bytes)."""
    small, large = peak_kb(1_000), peak_kb(500_000)
    assert abs(large - small) < 40 * 1024, (small, large)


def test_the_glow_fit_streams_and_resumes_exactly(tfds_dir, tmp_path):
    """fit-prior on a TFDS run streams the sde target; stopped after 3 of 10 steps (past the first
    epoch of 64 images) and resumed, the flow's weights equal the uninterrupted fit's."""
    from shortdiff_tf.app.fit_prior import fit_prior
    cfg = dataclasses.replace(TINY, data=config.DataConfig(dataset="mnist", data_dir=tfds_dir[0]),
                              model=dataclasses.replace(TINY.model, attn_resolutions=()),
                              train=dataclasses.replace(TINY.train, steps=2))
    pcfg = config.PriorConfig(kind="glow", T=0.4, steps=10, batch_size=8, steps_per_level=1, hidden=8, levels=2,
                              checkpoint_every=100)
    flows = []
    for name, stops in (("full", [None]), ("split", [3, None])):
        train(cfg, tmp_path / name, progress=False, log=lambda *_: None)
        for stop in stops:
            report = fit_prior(tmp_path / name, pcfg, progress=False, log=lambda *_: None, stop_after=stop)
        from shortdiff_tf.prior_fit import store
        flows.append([v.numpy() for v in store.load_prior(tmp_path / name, (28, 28, 1))[0].trainable_variables])
    assert report["step"] == 10
    for a, b in zip(*flows):
        np.testing.assert_array_equal(a, b)


def test_download_prepares_on_disk_and_dry_run_reads_only_metadata(tmp_path, monkeypatch):
    """train --dataset mnist --download --dry-run (TFDS mocked): TFDS prepares the set, the shape
    comes from the metadata, and no split is read into memory (data.load is never called)."""
    from click.testing import CliRunner
    from cli.main import cli
    prepared = []
    monkeypatch.setattr(data_lib, "load", lambda *a, **k: pytest.fail("the split was read into memory"))
    with tfds.testing.mock_data(num_examples=16):
        monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                            lambda self, *a, **k: prepared.append(self.name))
        r = CliRunner().invoke(cli, ["train", "--dataset", "mnist", "--download", "--dry-run",
                                     "--workdir", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert prepared == ["mnist"] and json.loads(r.output)["data"]["shape"] == [28, 28, 1]
    assert not (tmp_path / "run").exists()


def test_a_rebuilt_stream_skips_to_the_step(tfds_dir):
    """The multi-worker resume: a stream rebuilt from step 5 gives the batches (noise included) that
    the uninterrupted stream gives from its sixth on, across the end of the first epoch."""
    src = streaming.source("mnist", "train", tfds_dir[0])
    whole = iter(streaming.dataset(src, 8, 0, True, buffer=32))
    later = iter(streaming.dataset(src, 8, 0, True, buffer=32, start=5))
    expected = [next(whole) for _ in range(12)][5:]
    for want in expected:
        got = next(later)
        for name in ("x0", "u", "e"):
            np.testing.assert_array_equal(got[name].numpy(), want[name].numpy())

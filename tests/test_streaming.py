"""The streaming TFDS pipeline: bounded memory whatever the data set's size, one epoch is one
pass over the split, batches that are a function of (seed, step) on any number of replicas and
input pipelines, and exact resume by position on every strategy (nothing in the checkpoint)."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from shortdiff_tf import config, data as data_lib, pixels, streaming
from shortdiff_tf.app.train import train
from tests.conftest import two_replicas
from tests.test_training import ONE_LEVEL, TINY, weights

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)

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


def bins(batch) -> np.ndarray:
    """The uint8 images of a batch drawn without dequantisation noise (x0 = bin centres)."""
    return pixels.to_uint8(batch["x0"].numpy())


def test_an_epoch_is_one_pass_over_the_split_and_the_seed_fixes_the_order(tfds_dir):
    """8 batches of 8 hold each of the 64 images once; a second iterator with the same seed gives
    the same batches (noise included), another seed another order."""
    path, images = tfds_dir
    src = data_lib.tfds_source("mnist", "train", path)
    assert (src.shape, src.num_examples) == ((28, 28, 1), N)
    draw = lambda seed, k: [next(it) for it in [iter(streaming.dataset(src, 8, seed, False, buffer=32))]
                            for _ in range(k)]
    first = draw(0, N // 8)
    seen = np.concatenate([bins(b) for b in first])
    key = lambda a: sorted(x.tobytes() for x in a)
    assert key(seen) == key(images)
    again = draw(0, 3)
    for a, b in zip(first, again):
        for name in ("x0", "u", "e"):
            np.testing.assert_array_equal(a[name].numpy(), b[name].numpy())
    assert not np.array_equal(bins(draw(1, 1)[0]), bins(first[0]))


STREAMED = dataclasses.replace(TINY, model=dataclasses.replace(ONE_LEVEL, dropout=0.1),
                               train=dataclasses.replace(TINY.train, steps=12, checkpoint_every=4, ema_decay=0.9))


def ema(run_dir):
    from shortdiff_tf import checkpoints
    reader = tf.train.load_checkpoint(checkpoints.latest(run_dir))
    names = sorted(n for n in reader.get_variable_to_shape_map() if n.startswith("ema/shadow/"))
    return [reader.get_tensor(n) for n in names]


def test_a_streamed_mirrored_run_resumed_equals_the_uninterrupted_one_device_run(tfds_dir, tmp_path):
    """Training on the TFDS stream with dropout 0.1 and the EMA (12 steps of 8: past the end of the
    first epoch of 64 images): stopped after 5 steps (between checkpoints) on two mirrored
    replicas and resumed on two replicas ends with the weights and the EMA of the uninterrupted
    run on one device (1e-5), and its logged losses are that run's."""
    cfg = dataclasses.replace(STREAMED, data=config.DataConfig(dataset="mnist", data_dir=tfds_dir[0]))
    report = train(cfg, tmp_path / "full", strategy=tf.distribute.OneDeviceStrategy("/cpu:0"), progress=False,
                   log=lambda *_: None)
    assert report["step"] == 12
    assert json.loads((tmp_path / "full" / "config.json").read_text())["data"]["shape"] == [28, 28, 1]
    mirrored = two_replicas()
    train(cfg, tmp_path / "split", strategy=mirrored, progress=False, stop_after=5, log=lambda *_: None)
    train(cfg, tmp_path / "split", strategy=mirrored, progress=False, log=lambda *_: None)
    for a, b in zip(weights(tmp_path / "full"), weights(tmp_path / "split")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(ema(tmp_path / "full"), ema(tmp_path / "split")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    rows = lambda run: {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}
    full, split = rows(tmp_path / "full"), rows(tmp_path / "split")
    assert set(full) <= set(split)                        # the split run also logged its stop, step 5
    for step in full:
        assert split[step] == pytest.approx(full[step], rel=1e-5)


def test_input_pipelines_and_replicas_split_the_one_device_batch(tfds_dir):
    """Two input pipelines (two machines) of one replica each, and two mirrored replicas of one
    pipeline, hold together exactly the global batch of one device: the same examples, noise and
    positions, in order."""
    src = data_lib.tfds_source("mnist", "train", tfds_dir[0])
    one = next(iter(streaming.dataset(src, 8, 0, True, buffer=32, start=3)))
    parts = [next(iter(streaming.dataset(src, 8, 0, True, tf.distribute.InputContext(2, k, 2), buffer=32, start=3)))
             for k in range(2)]
    mirrored = two_replicas()
    batch = next(streaming.distributed_batches(src, 8, 0, True, mirrored, 3, 4, buffer=32))
    for shares in (parts, mirrored.experimental_local_results(batch)):
        for name in ("x0", "u", "e", "index"):
            np.testing.assert_array_equal(np.concatenate([p[name].numpy() for p in shares]), one[name].numpy())
    np.testing.assert_array_equal(one["index"].numpy(), np.arange(24, 32))


def test_a_resume_far_into_the_run_reads_at_most_one_epoch(tfds_dir, monkeypatch):
    """The first batch of step 10^6 (position 8 x 10^6, epoch 125,000 of the 64 images) is built
    by reading fewer records than one epoch plus one batch, and equals that step's batch of a
    stream that reads its epoch from the start."""
    src = data_lib.tfds_source("mnist", "train", tfds_dir[0])
    read = tf.Variable(0, dtype=tf.int64)
    records = streaming.TFDSSource.records

    def counted(self):
        return records(self).map(lambda r: (read.assign_add(1), r)[1])

    monkeypatch.setattr(streaming.TFDSSource, "records", counted)
    step = 10**6
    got = next(iter(streaming.dataset(src, 8, 0, True, buffer=32, start=step)))
    assert int(read.numpy()) <= N + 8
    epoch_start = step * 8 // N * N // 8                       # the first step of that epoch
    whole = iter(streaming.dataset(src, 8, 0, True, buffer=32, start=epoch_start))
    want = [next(whole) for _ in range(step - epoch_start + 1)][-1]
    for name in ("x0", "u", "e", "index"):
        np.testing.assert_array_equal(got[name].numpy(), want[name].numpy())


MEMORY = """
import os, resource
import tensorflow_datasets as tfds
from shortdiff_tf import data, streaming
with tfds.testing.mock_data(num_examples={n}):
    it = iter(streaming.dataset(data.tfds_source("mnist", "train"), 64, 0, True, buffer=500))
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


def test_the_streamed_glow_fit_resumed_on_two_replicas_equals_one_device(tfds_dir, tmp_path):
    """fit-prior on a TFDS run streams the sde target; stopped after 3 of 10 steps (past the first
    epoch of 64 images) on two mirrored replicas and resumed there, the flow's weights equal the
    uninterrupted fit's on one device (1e-5)."""
    from shortdiff_tf.app.fit_prior import fit_prior
    cfg = dataclasses.replace(TINY, data=config.DataConfig(dataset="mnist", data_dir=tfds_dir[0]),
                              model=dataclasses.replace(TINY.model, attn_resolutions=()),
                              train=dataclasses.replace(TINY.train, steps=2))
    pcfg = config.PriorConfig(kind="glow", T=0.4, steps=10, batch_size=8, steps_per_level=1, hidden=8, levels=2,
                              checkpoint_every=100)
    flows = []
    train(cfg, tmp_path / "full", progress=False, log=lambda *_: None)
    shutil.copytree(tmp_path / "full", tmp_path / "split")
    for name, stops, strategy in (("full", [None], tf.distribute.OneDeviceStrategy("/cpu:0")),
                                  ("split", [3, None], two_replicas())):
        for stop in stops:
            report = fit_prior(tmp_path / name, pcfg, strategy=strategy, progress=False, log=lambda *_: None,
                               stop_after=stop)
        from shortdiff_tf.prior_fit import store
        flows.append([v.numpy() for v in store.load_prior(tmp_path / name, (28, 28, 1))[0].trainable_variables])
    assert report["step"] == 10
    for a, b in zip(*flows):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_download_prepares_on_disk_and_dry_run_reads_only_metadata(tmp_path, monkeypatch):
    """train --dataset mnist --download --dry-run (TFDS mocked): TFDS prepares the set, the shape
    comes from the metadata, and no split is read into memory (data.load is never called)."""
    from click.testing import CliRunner
    from cli.main import cli
    prepared = []
    monkeypatch.setattr(data_lib, "load", lambda *a, **k: pytest.fail("the split was read into memory"))
    # mock.patch inside mock_data, not monkeypatch: monkeypatch would restore mock_data's own fake
    # download_and_prepare at teardown and leak it into every later test of this process.
    fake = lambda self, *a, **k: prepared.append(self.name)
    with tfds.testing.mock_data(num_examples=16), \
            mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare", fake):
        r = CliRunner().invoke(cli, ["train", "--dataset", "mnist", "--download", "--dry-run",
                                     "--workdir", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    assert prepared == ["mnist"] and json.loads(r.output)["data"]["shape"] == [28, 28, 1]
    assert not (tmp_path / "run").exists()


def test_a_rebuilt_stream_skips_to_the_step(tfds_dir):
    """The resume: a stream rebuilt from step 5 gives the batches (noise included) that the
    uninterrupted stream gives from its sixth on, across the end of the first epoch."""
    src = data_lib.tfds_source("mnist", "train", tfds_dir[0])
    whole = iter(streaming.dataset(src, 8, 0, True, buffer=32))
    later = iter(streaming.dataset(src, 8, 0, True, buffer=32, start=5))
    expected = [next(whole) for _ in range(12)][5:]
    for want in expected:
        got = next(later)
        for name in ("x0", "u", "e"):
            np.testing.assert_array_equal(got[name].numpy(), want[name].numpy())

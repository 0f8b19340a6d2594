"""The training loop: exact resume, multi-replica equivalence, deterministic data order."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from shortdiff_tf import checkpoints, config, data, pipeline, training
from shortdiff_tf.app.train import train
from tests.conftest import two_replicas

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)

TINY = config.RunConfig(
    sde=config.SDEConfig(T=0.4),
    data=config.DataConfig(dataset="digits"),
    model=config.ModelConfig(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)),
    train=config.TrainConfig(steps=6, batch_size=8, lr=1e-3, warmup=2, ema_decay=0.99, checkpoint_every=100,
                             log_every=2, sample_grid=0))


def weights(run_dir):
    from shortdiff_tf.app.runs import load_run
    return [v.numpy() for v in load_run(run_dir).net.trainable_variables]


DROPOUT = dataclasses.replace(TINY, model=dataclasses.replace(TINY.model, ch_mult=(1,), attn_resolutions=(), dropout=0.3))
# one level, no attention: every dropout path of the U-Net at a third of the graph to trace
ONE_LEVEL = dataclasses.replace(TINY.model, ch_mult=(1,), attn_resolutions=())


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted run with dropout (its seed state must be checkpointed for exact resume)."""
    path = tmp_path_factory.mktemp("train") / "full"
    train(DROPOUT, path, progress=False, log=lambda *_: None)
    return path


def test_stopped_and_resumed_run_equals_uninterrupted_run(full_run, tmp_path):
    """Stopped after 3 steps and resumed, a run with dropout ends with the weights of the
    uninterrupted run (1e-5): Keras' Dropout named its seed state by a per-process counter, which
    broke resume; ours has a stable path."""
    train(DROPOUT, tmp_path / "split", progress=False, stop_after=3, log=lambda *_: None)
    assert checkpoints.latest(tmp_path / "split").endswith("ckpt-3")
    train(DROPOUT, tmp_path / "split", progress=False, log=lambda *_: None)
    for a, b in zip(weights(full_run), weights(tmp_path / "split")):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [int(l.split('"step": ')[1].split(",")[0]) for l in lines] == [2, 3, 4, 6]


# the distributed step's arithmetic does not depend on the network: a small MLP on 2-D points
STEP = dataclasses.replace(TINY, data=config.DataConfig(dataset="gmm2d", shape=(2,)),
                           model=config.ModelConfig(kind="mlp", width=32, depth=2))
POINTS = np.random.RandomState(0).normal(size=(32, 2)).astype(np.float32)


def test_mirrored_step_equals_single_device_step():
    """One step on 2 logical CPU replicas gives the weights of the same step on one device (1e-5)."""
    batch = pipeline.make_batch_fn(POINTS, 8, 0, True)(tf.constant(0, tf.int64))
    results = []
    for strategy in (tf.distribute.OneDeviceStrategy("/cpu:0"),
                     two_replicas()):
        cfg = STEP
        state = training.build_state(cfg, (2,), strategy)
        step = training.make_train_step(cfg, state, strategy)
        ds = tf.data.Dataset.from_tensors(batch)
        loss, _ = step(next(iter(strategy.experimental_distribute_dataset(ds))))
        results.append((float(loss), [v.numpy() for v in state.net.trainable_variables]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_a_mirrored_step_with_dropout_and_the_ema_equals_one_device():
    """Two steps of a U-Net with dropout 0.1 and the EMA on 2 logical CPU replicas give the losses,
    weights and EMA of the same steps on one device (1e-5): each replica draws the dropout masks
    of its own examples, keyed by their stream positions (with masks drawn per replica from one
    shared seed, every replica's half of the batch got the same masks)."""
    cfg = dataclasses.replace(TINY, model=dataclasses.replace(ONE_LEVEL, dropout=0.1),
                              train=dataclasses.replace(TINY.train, ema_decay=0.5))
    fn = pipeline.make_batch_fn(data.load("digits").array, 8, 0, True)
    results = []
    for strategy in (tf.distribute.OneDeviceStrategy("/cpu:0"), two_replicas()):
        state = training.build_state(cfg, (8, 8, 1), strategy)
        rng = np.random.RandomState(1)        # no zero-initialised conv after a dropout: masks matter at once
        for v, shadow in zip(state.net.trainable_variables, state.ema.shadow.values()):
            value = 0.3 * rng.standard_normal(v.shape).astype(np.float32)
            v.assign(value), shadow.assign(value)
        step = training.make_train_step(cfg, state, strategy)
        batches = strategy.experimental_distribute_dataset(tf.data.Dataset.range(2).map(fn))
        losses = [float(step(b)[0]) for b in batches]
        results.append((losses, [v.numpy() for v in state.net.trainable_variables],
                        [v.numpy() for v in state.ema.shadow.values()]))
    (loss_1, weights_1, ema_1), (loss_2, weights_2, ema_2) = results
    assert loss_2 == pytest.approx(loss_1, rel=1e-5)
    for a, b in zip(weights_1 + ema_1, weights_2 + ema_2):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_each_device_updates_its_own_copy_of_the_ema():
    """The EMA update runs per device from that device's copy of the weights (no copy of the
    primary's shadows to the others): with replica 1's weights made to differ, replica 1's shadow
    follows them."""
    strategy = two_replicas()
    state = training.build_state(STEP, (2,), strategy)
    for v in state.net.trainable_variables:
        v.value.values[1].assign(v.value.values[1] + 1.0)
    before = [[c.numpy() for c in s.values] for s in state.ema.shadow.values()]
    state.ema.update(state.net.trainable_variables, tf.constant(10**6, tf.int64), strategy)
    decay = STEP.train.ema_decay
    for shadow, old, v in zip(state.ema.shadow.values(), before, state.net.trainable_variables):
        for k in range(2):
            np.testing.assert_allclose(shadow.values[k].numpy(), decay * old[k] + (1 - decay) * v.value.values[k].numpy(),
                                       rtol=1e-5, atol=1e-6)


def test_a_mirrored_step_all_reduces_the_gradients_once():
    """The traced step of 2 replicas holds one all-reduce per replica, of all the gradients
    (Keras' Adam would reduce them a second time inside apply_gradients: 4 calls)."""
    from shortdiff_tf.distribute import AllReduceCounter
    strategy = two_replicas()
    state = training.build_state(STEP, (2,), strategy)
    step = training.make_train_step(STEP, state, strategy)
    batch = pipeline.make_batch_fn(POINTS, 8, 0, True)(tf.constant(0, tf.int64))
    with AllReduceCounter() as counter:
        step(next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch)))))
    # MirroredStrategy traces the replica function once per replica
    assert counter.calls == [len(state.net.trainable_variables)] * strategy.num_replicas_in_sync


def test_gradient_accumulation_gives_the_full_batch_step():
    """--grad-accum 4 (micro-batches of 2 in a while loop) gives the loss and weights of one
    step on the whole batch of 8 (1e-5), also on 2 mirrored replicas."""
    batch = pipeline.make_batch_fn(POINTS, 8, 0, True)(tf.constant(0, tf.int64))
    results = []
    for k, strategy in ((1, tf.distribute.OneDeviceStrategy("/cpu:0")), (4, tf.distribute.OneDeviceStrategy("/cpu:0")),
                        (2, two_replicas())):
        cfg = dataclasses.replace(STEP, train=dataclasses.replace(STEP.train, batch_size=8, grad_accum=k))
        state = training.build_state(cfg, (2,), strategy)
        step = training.make_train_step(cfg, state, strategy)
        loss, _ = step(next(iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch)))))
        results.append((float(loss), [v.numpy() for v in state.net.trainable_variables]))
    for loss, weights in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-5)
        for a, b in zip(results[0][1], weights):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_batch_not_divisible_by_accumulation_is_refused(tmp_path):
    cfg = dataclasses.replace(TINY, train=dataclasses.replace(TINY.train, batch_size=8, grad_accum=3))
    with pytest.raises(ValueError, match="--grad-accum"):
        train(cfg, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "config.json").exists()


def test_batches_are_a_function_of_the_step_and_cover_each_epoch():
    array = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1)
    fn = pipeline.make_batch_fn(array, 5, 3, dequantize=False)
    first = [fn(tf.constant(i, tf.int64))["x0"].numpy().ravel() for i in range(4)]
    again = fn(tf.constant(2, tf.int64))["x0"].numpy().ravel()
    np.testing.assert_array_equal(first[2], again)
    decode = lambda x: np.round((x + 1) / 2 * 256 - 0.5).astype(int)
    assert sorted(decode(np.concatenate(first[:2]))) == list(range(10))
    assert sorted(decode(np.concatenate(first[2:]))) == list(range(10))


def test_resume_with_other_settings_is_refused(full_run):
    other = dataclasses.replace(DROPOUT, sde=dataclasses.replace(DROPOUT.sde, T=1.0))
    before = (full_run / "config.json").read_text()
    with pytest.raises(ValueError, match=r"other settings \(sde.T: 0.4 there, 1.0 asked\)"):
        train(other, full_run, progress=False)
    assert (full_run / "config.json").read_text() == before


def test_batch_larger_than_data_is_refused(tmp_path):
    cfg = dataclasses.replace(TINY, data=config.DataConfig(dataset="digits", split="test"),
                              train=dataclasses.replace(TINY.train, batch_size=4096))
    with pytest.raises(ValueError, match="exceeds"):
        train(cfg, tmp_path / "r", progress=False, log=lambda *_: None)
    assert not (tmp_path / "r").exists()

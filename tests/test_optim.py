"""The optimiser: the fused Adam step is Keras' Adam (ScoreSDE's settings, with warm-up), on one
device and on each replica of two; the warm-up schedule."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from shortdiff_tf import optim
from tests.conftest import two_replicas


def run_steps(opt, grads, shapes, strategy=None):
    """Apply each step's gradients to variables starting from ones; -> the final values."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        variables = [keras.Variable(np.ones(s, np.float32), name=f"w{i}") for i, s in enumerate(shapes)]
        opt.build(variables)

    @tf.function
    def step(g):
        strategy.run(lambda: opt.apply_gradients(zip(g, variables)))

    for g in grads:
        step([tf.constant(x) for x in g])
    return [v.numpy() for v in variables]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_the_fused_adam_step_is_keras_adam(precision):
    """Five warm-up steps of gradients of mixed sign and scale (some exactly zero): the fused
    kernel gives Keras' Adam with the same schedule and epsilon to float32 round-off (fp16: both
    inside Keras' loss scaling)."""
    rng = np.random.RandomState(0)
    shapes = [(3, 3, 2, 4), (4,), (7,)]
    grads = [[(rng.randn(*s) * 10.0 ** rng.randint(-3, 2, s)).astype(np.float32) * (rng.rand(*s) > 0.2)
              for s in shapes] for _ in range(5)]
    fused = optim.adam(1e-2, warmup=3, precision=precision)
    inner = fused.inner_optimizer if precision == "fp16" else fused
    assert isinstance(inner, optim.ReducedAdam) and inner.epsilon == optim.ADAM_EPSILON
    reference = keras.optimizers.Adam(optim.WarmUp(1e-2, 3), epsilon=optim.ADAM_EPSILON)
    if precision == "fp16":                                 # the gradients are of the scaled loss
        reference = keras.optimizers.LossScaleOptimizer(reference)
    ours, theirs = run_steps(fused, grads, shapes), run_steps(reference, grads, shapes)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        assert not np.allclose(a, 1.0)                      # the variables moved


def test_the_fused_adam_step_updates_each_replica_as_one_device():
    """Under two mirrored replicas each copy of a variable takes the one-device step (the update
    reaches every replica's own slots: a second step uses its m and v)."""
    rng = np.random.RandomState(1)
    shapes = [(5,), (2, 3)]
    grads = [[rng.randn(*s).astype(np.float32) for s in shapes] for _ in range(3)]
    one = run_steps(optim.adam(1e-2, warmup=1), grads, shapes)
    strategy = two_replicas()
    with strategy.scope():
        opt = optim.adam(1e-2, warmup=1)
    two = run_steps(opt, grads, shapes, strategy)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

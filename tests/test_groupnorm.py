"""GroupNorm with its closed-form gradient, against Keras' GroupNormalization (autodiff).

Tolerances: float64 inputs, so values and first derivatives agree to 1e-9 (the two differ only in the order of
floating-point operations).
"""
import keras
import numpy as np
import pytest
import tensorflow as tf

from shortdiff_tf.networks.groupnorm import GroupNorm, group_norm


def reference(groups, channels, gamma, beta):
    layer = keras.layers.GroupNormalization(groups, epsilon=1e-6, dtype="float64")
    layer.build((None, 5, 6, channels))
    layer.gamma.assign(gamma), layer.beta.assign(beta)
    return lambda x: layer(x)


@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("groups,channels", [(1, 4), (2, 8), (8, 8), (3, 12)])
def test_values_and_gradients_match_keras(groups, channels, silu):
    rng = np.random.RandomState(groups + channels)
    x = tf.constant(rng.normal(1.5, 3.0, (3, 5, 6, channels)))
    gamma, beta = tf.constant(rng.normal(1, 0.5, channels)), tf.constant(rng.normal(0, 1, channels))
    dy = tf.constant(rng.normal(size=x.shape))
    keras_gn = reference(groups, channels, gamma, beta)
    ref = (lambda x: tf.nn.silu(keras_gn(x))) if silu else keras_gn
    ours = lambda x, g, b: group_norm(x, g, b, groups, 1e-6, silu=silu)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, gamma, beta])
        y_ours, y_ref = ours(x, gamma, beta), ref(x)
        l_ours, l_ref = tf.reduce_sum(y_ours * dy), tf.reduce_sum(y_ref * dy)
    np.testing.assert_allclose(y_ours, y_ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(tape.gradient(l_ours, x), tape.gradient(l_ref, x), rtol=1e-9, atol=1e-9)
    # gamma and beta: y = x_hat gamma + beta, so autodiff of that with Keras' x_hat held fixed
    x_hat = (keras_gn(x) - beta) / gamma
    act = tf.nn.silu if silu else tf.identity
    with tf.GradientTape() as t2:
        t2.watch([gamma, beta])
        auto = tf.reduce_sum(dy * act(x_hat * gamma + beta))
    for g_ours, g_auto in zip(tape.gradient(l_ours, [gamma, beta]), t2.gradient(auto, [gamma, beta])):
        np.testing.assert_allclose(g_ours, g_auto, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("silu", [False, True])
def test_second_derivative_matches_finite_differences(silu, graph):
    """The hand-written gradient is itself differentiable: Hessian-vector products through it
    equal central differences of the gradient (h = 1e-5 in float64, error O(h^2); 1e-6), eagerly
    and traced in a tf.function.
    (Keras' layer fails this: tf.nn.moments stops the gradient through the mean in the
    variance, which leaves first derivatives right and second derivatives wrong.)"""
    rng = np.random.RandomState(0)
    x = tf.constant(rng.normal(size=(2, 3, 4, 8)))
    gamma, beta = tf.constant(rng.normal(1, 0.3, 8)), tf.constant(rng.normal(size=8))
    v = tf.constant(rng.normal(size=x.shape))
    fn = lambda x: group_norm(x, gamma, beta, 4, silu=silu)

    def grad_at(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(tf.sin(fn(x)))
        return tape.gradient(y, x)

    def hvp(x):
        with tf.GradientTape() as outer:
            outer.watch(x)
            gv = tf.reduce_sum(grad_at(x) * v)
        return outer.gradient(gv, x)

    h = 1e-5
    fd = (grad_at(x + h * v) - grad_at(x - h * v)) / (2 * h)
    np.testing.assert_allclose((tf.function(hvp) if graph else hvp)(x), fd, atol=1e-6)   # graph: as traced


def test_layer_weights_keep_keras_names_and_bad_channels_fail():
    layer = GroupNorm(4, name="norm_0")
    layer.build((None, 4, 4, 8))
    assert [w.name for w in layer.weights] == ["gamma", "beta"]
    assert GroupNorm.from_config(layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match="divisible by 3"):
        GroupNorm(3).build((None, 4, 4, 8))

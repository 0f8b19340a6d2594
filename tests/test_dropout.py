"""Dropout from 16-bit draws keyed by stream position: the drop fraction, unbiasedness, the
gradient, inference, and masks that depend on an example's position, not on its batch."""
import numpy as np
import pytest
import tensorflow as tf

from shortdiff_tf.networks.dropout import Dropout, NoiseKey, dropout_mask, quantized_rate

SEED = tf.constant([3, 4])


def test_mask_drops_at_the_rate_and_keeps_the_mean():
    """Over 10^6 elements the dropped fraction is within 5 binomial standard deviations of the
    quantised rate, and the mask's mean within 5 standard errors of 1 (E[y] = x)."""
    rate, n = 0.1, 10**6 + 1          # odd: one 32-bit draw is split across the end
    m = dropout_mask(1, (n,), rate, SEED).numpy()
    q = quantized_rate(rate)
    assert abs(q - rate) <= 2**-17
    assert set(np.unique(m)) == {0.0, np.float32(1 / (1 - q))}
    frac = np.mean(m == 0)
    assert abs(frac - q) < 5 * np.sqrt(q * (1 - q) / n)
    assert abs(m.mean() - 1) < 5 * m.std() / np.sqrt(n)


@pytest.mark.parametrize("jit", [False, True])
def test_an_examples_mask_depends_on_its_position_only(jit):
    """Rows 3..5 of a batch of 6 at positions 10..15 are the masks of a batch of 3 at positions
    13..15 (what a second replica draws for its half), in TF's kernels and under XLA; other
    positions and other seeds give other masks."""
    draw = lambda rows, first, seed=SEED: dropout_mask(rows, (3, 5, 7), 0.3, seed, first)
    if jit:
        draw = tf.function(draw, jit_compile=True, reduce_retracing=True)
    whole, half = draw(6, 10).numpy(), draw(3, 13).numpy()
    np.testing.assert_array_equal(whole[3:], half)
    assert not np.array_equal(whole[:3], half)
    assert not np.array_equal(draw(3, 13, tf.constant([3, 5])).numpy(), half)
    assert 0.2 < np.mean(whole == 0) < 0.4


def test_gradient_is_the_mask_and_inference_is_the_identity():
    layer = Dropout(0.3, salt=1)
    x = tf.random.normal([4, 5, 5, 8])
    key = NoiseKey(tf.constant([0, 1]), tf.constant(0, tf.int64))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True, noise=key)
    g = tape.gradient(y, x, output_gradients=tf.ones_like(y))
    mask = np.where(y.numpy() != 0, y.numpy() / x.numpy(), 0.0)
    np.testing.assert_allclose(g, mask, rtol=1e-5)
    np.testing.assert_allclose(layer(x, training=False), x)
    np.testing.assert_array_equal(layer(x, training=True, noise=key), y)            # stateless: same key, same mask
    other = NoiseKey(key.seed, tf.constant(4, tf.int64))
    assert not np.array_equal(layer(x, training=True, noise=other), y)
    assert not np.array_equal(Dropout(0.3, salt=2)(x, training=True, noise=key), y)  # another layer, another mask
    assert Dropout.from_config(layer.get_config()).salt == 1


def test_bad_rate_and_a_missing_key_fail():
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\)"):
        Dropout(1.0)
    with pytest.raises(ValueError, match="NoiseKey"):
        Dropout(0.5)(tf.ones([2, 3]), training=True)

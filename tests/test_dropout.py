"""Dropout from 16-bit draws: the drop fraction, unbiasedness, the gradient, and inference."""
import numpy as np
import pytest
import tensorflow as tf

from shortdiff_tf.networks.dropout import Dropout, dropout_mask, quantized_rate


def test_mask_drops_at_the_rate_and_keeps_the_mean():
    """Over 10^6 elements the dropped fraction is within 5 binomial standard deviations of the
    quantised rate, and the mask's mean within 5 standard errors of 1 (E[y] = x)."""
    rate, n = 0.1, 10**6 + 1          # odd: one 32-bit draw is split across the end
    m = dropout_mask(tf.constant([n]), rate, tf.constant([3, 4])).numpy()
    q = quantized_rate(rate)
    assert abs(q - rate) <= 2**-17
    assert set(np.unique(m)) == {0.0, np.float32(1 / (1 - q))}
    frac = np.mean(m == 0)
    assert abs(frac - q) < 5 * np.sqrt(q * (1 - q) / n)
    assert abs(m.mean() - 1) < 5 * m.std() / np.sqrt(n)


def test_gradient_is_the_mask_and_inference_is_the_identity():
    layer = Dropout(0.3, seed=1)
    x = tf.random.normal([4, 5, 5, 8])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    g = tape.gradient(y, x, output_gradients=tf.ones_like(y))
    mask = np.where(y.numpy() != 0, y.numpy() / x.numpy(), 0.0)
    np.testing.assert_allclose(g, mask, rtol=1e-5)
    np.testing.assert_allclose(layer(x, training=False), x)
    assert not np.array_equal(layer(x, training=True), layer(x, training=True))   # fresh draws per call
    assert Dropout.from_config(layer.get_config()).rate == 0.3


def test_bad_rate_fails():
    with pytest.raises(ValueError, match=r"dropout rate must be in \[0, 1\)"):
        Dropout(1.0)

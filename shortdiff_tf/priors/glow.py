"""The auxiliary prior nu_phi for images: a multi-scale Glow from TFP bijectors (Kingma &
Dhariwal 2018) over a standard normal base, in the scaled space the score model sees.

  log nu(x) = log N(z; 0, I) + log |det dz/dx|,  z = Glow^{-1}(x)

Each level squeezes 2x2 pixels into channels and runs ``steps_per_level`` steps of ActNorm
(data-dependent initialisation on the first batch it sees), an invertible 1x1 convolution and an
affine coupling whose network is TFP's tf_keras ``GlowDefaultNetwork`` (Keras 3 layers inside a
bijector would be invisible to ``trainable_variables``).
"""
from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.bijectors import glow as tfp_glow

from shortdiff_tf.priors.gaussian import check_event_shape
from shortdiff_tf.seeds import row_normal

tfb, tfd = tfp.bijectors, tfp.distributions


def _expand_init(self, input_shape, block_size=2, validate_args=False, name=None):
    """TFP's ``Expand.__init__`` with the shape as plain Python ints.

    TFP builds its reshapes from numpy int64 values, and with an unknown batch dimension inside
    ``tf.function`` that fails with an int32/int64 ConcatV2 error (seen with TF 2.18 and 2.21).
    The body is TFP's, with ``int`` conversions; the bijector it builds is unchanged.
    """
    from tensorflow_probability.python.bijectors import chain, composition, reshape, transpose
    parameters = dict(locals())
    self._block_size = n = int(block_size)
    h, w, c = (int(d) for d in list(input_shape)[-3:])
    bijectors = [
        reshape.Reshape(event_shape_out=[h * n, w * n, c // n**2], event_shape_in=[h, n, w, n, c // n**2]),
        transpose.Transpose(perm=[0, 3, 1, 4, 2]),
        reshape.Reshape(event_shape_in=[h, w, c], event_shape_out=[h, w, c // n**2, n, n]),
    ]
    composition.Composition.__init__(self, bijectors=chain.Chain(bijectors, validate_args=validate_args),
                                     name=name or "Expand", parameters=parameters)


tfp_glow.Expand.__init__ = _expand_init


def default_levels(event_shape) -> int:
    """Squeeze levels: as many as halve the side while it stays even, at most 3 (32 -> 3, 28 -> 2, 8 -> 2)."""
    side, levels = int(event_shape[0]), 0
    while side % 2 == 0 and side > 2 and levels < 3:
        side //= 2
        levels += 1
    return max(levels, 1)


class GlowPrior(tf.Module):
    """nu_phi(x) = TransformedDistribution(N(0, I_D), Glow); implements the prior interface."""

    def __init__(self, event_shape, levels: int = 0, steps_per_level: int = 4, hidden: int = 64,
                 name="glow_prior"):
        super().__init__(name=name)
        self.event_shape = [int(d) for d in event_shape]
        if len(self.event_shape) != 3:
            raise ValueError(f"the Glow prior needs images [H, W, C]; got event shape {self.event_shape}")
        self.levels = int(levels) or default_levels(self.event_shape)
        h, w, _ = self.event_shape
        if h % 2**self.levels or w % 2**self.levels:
            raise ValueError(f"image side {h}x{w} is not divisible by 2^{self.levels}; use fewer Glow levels "
                             f"(--glow-levels) or pad the images")
        self.steps_per_level, self.hidden = int(steps_per_level), int(hidden)
        self.dim = int(math.prod(self.event_shape))
        self.bijector = tfb.Glow(
            output_shape=self.event_shape, num_glow_blocks=self.levels, num_steps_per_block=self.steps_per_level,
            coupling_bijector_fn=lambda shape: tfb.GlowDefaultNetwork(shape, num_hidden=self.hidden),
            exit_bijector_fn=tfb.GlowDefaultExitNetwork)
        self.base = tfd.Sample(tfd.Normal(0.0, 1.0), [self.dim])
        self.distribution = tfd.TransformedDistribution(self.base, self.bijector)

    def log_prob(self, x):
        """log nu(x) [B] for x [B, H, W, C]."""
        check_event_shape(x, self.event_shape)
        return self.distribution.log_prob(tf.cast(x, tf.float32))

    def sample(self, n, seed, temperature: float = 1.0, dtype=tf.float32, first=0):
        """x = Glow(temperature * z), z ~ N(0, I), draw j keyed by index first + j (``seeds.row_normal``)."""
        z = row_normal(n, [self.dim], seed, first)
        return tf.cast(self.bijector.forward(temperature * z), dtype)

    def initialize(self, x):
        """Data-dependent ActNorm initialisation from a real batch (first pass through the flow)."""
        return self.log_prob(x)

    def coupling_networks(self):
        """The tf_keras networks of the coupling and exit layers (the flow's learnable parts)."""
        import tf_keras
        return [m for m in self.bijector.submodules if isinstance(m, tf_keras.Model)]

    def get_config(self) -> dict:
        return {"kind": "glow", "event_shape": self.event_shape, "levels": self.levels,
                "steps_per_level": self.steps_per_level, "hidden": self.hidden}

"""A small MLP score network for the toy mixtures (and the T study's deliberately small nets)."""
from __future__ import annotations

import keras
from keras import ops

from shortdiff_tf.networks.embeddings import NoiseEmbedding


@keras.saving.register_keras_serializable(package="shortdiff")
class ScoreMLP(keras.Model):
    """(x [B, D], c [B]) -> [B, D]: concat(x, emb(c)) -> depth x (Dense, SiLU) -> Dense."""

    def __init__(self, data_dim: int, width: int = 128, depth: int = 3, emb_dim: int = 32,
                 fourier_scale: float = 16.0, embedding: str = "fourier", **kw):
        super().__init__(**kw)
        if min(data_dim, width, depth, emb_dim) < 1:
            raise ValueError("ScoreMLP sizes must be positive")
        self.data_dim, self.width, self.depth = int(data_dim), int(width), int(depth)
        self.emb_dim, self.fourier_scale, self.embedding = int(emb_dim), float(fourier_scale), embedding
        self.embed = NoiseEmbedding(self.emb_dim, self.fourier_scale, kind=embedding, name="embed")
        self.hidden = [keras.layers.Dense(self.width, name=f"hidden_{i}") for i in range(self.depth)]
        self.out = keras.layers.Dense(self.data_dim, kernel_initializer="zeros", name="out")

    def build(self, input_shape):
        x_shape, c_shape = input_shape
        self.embed.build(c_shape)
        width_in = self.data_dim + self.emb_dim
        for layer in self.hidden:
            layer.build((None, width_in))
            width_in = self.width
        self.out.build((None, self.width))

    def call(self, inputs, training=None, noise=None):
        x, c = inputs
        h = ops.concatenate([x, self.embed(c)], axis=-1)
        for layer in self.hidden:
            h = ops.silu(layer(h))
        return self.out(h)

    def get_config(self):
        return {**super().get_config(), "data_dim": self.data_dim, "width": self.width, "depth": self.depth,
                "emb_dim": self.emb_dim, "fourier_scale": self.fourier_scale, "embedding": self.embedding}

"""Keras 3 layers: get_config round trips, shapes, and the score wrapper."""
import numpy as np
import pytest
import keras
import tensorflow as tf

from shortdiff_tf import config, networks
from shortdiff_tf.networks import AttnBlock, FourierTime, NoiseEmbedding, ResBlock, ScoreMLP, ScoreUNet

TINY_UNET = dict(image_size=8, channels=1, ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0)


def roundtrip(layer):
    cfg = layer.get_config()
    clone = type(layer).from_config(cfg)
    assert clone.get_config() == cfg
    return clone


@pytest.mark.parametrize("layer", [FourierTime(16, 4.0), NoiseEmbedding(16, 2.0), NoiseEmbedding(16, 2.0, features=4),
                                   ResBlock(8, 0.1), ResBlock(8, 0.1, resample="down"), AttnBlock()])
def test_layer_config_roundtrip(layer):
    roundtrip(layer)


@pytest.mark.parametrize("layout", ["ddpm", "ddpmpp"])
def test_unet_roundtrip_gives_the_same_function(layout):
    net = ScoreUNet(**TINY_UNET, layout=layout)
    x, c = tf.random.normal([3, 8, 8, 1]), tf.constant([-3.0, -1.0, 0.0])
    y = net([x, c])
    clone = roundtrip(net)
    clone([x, c])
    clone.set_weights(net.get_weights())
    np.testing.assert_allclose(clone([x, c]), y, atol=1e-6)
    assert y.shape == x.shape


class TracedUNet(ScoreUNet):
    """ScoreUNet built the way Keras builds a model without ``build``: by tracing ``call``."""
    build = keras.layers.Layer.build


@pytest.mark.parametrize("layout, shape, ch_mult, attn", [("ddpm", (8, 8, 1), (1, 2), (4,)),
                                                           ("ddpmpp", (16, 16, 3), (1, 2, 2), (8,)),
                                                           ("ddpm", (28, 28, 1), (1, 2, 2), (7, 14))])
def test_the_unet_builds_from_shapes_the_weights_a_traced_call_makes(layout, shape, ch_mult, attn):
    """ScoreUNet.build walks the layout from the input shapes: the same weights (paths and shapes)
    as Keras' symbolic trace of ``call`` creates, and with the same values the same function."""
    kw = dict(TINY_UNET, image_size=shape[0], channels=shape[2], ch_mult=ch_mult, attn_resolutions=attn, layout=layout)
    x, c = tf.random.normal((2,) + shape), tf.constant([-2.0, 0.5])
    built, traced = ScoreUNet(**kw, name="unet"), TracedUNet(**kw, name="unet")
    built.build([x.shape, c.shape])
    assert built.built and all(layer.built for layer in built._flatten_layers())
    traced([x, c])
    assert sorted((v.path, tuple(v.shape)) for v in built.variables) == \
        sorted((v.path, tuple(v.shape)) for v in traced.variables)
    by_path = {v.path: v for v in traced.variables}
    for v in built.variables:
        v.assign(by_path[v.path])
    np.testing.assert_allclose(built([x, c]), traced([x, c]), atol=1e-6)


def test_unet_saves_and_loads_as_a_keras_file(tmp_path):
    net = ScoreUNet(**TINY_UNET)
    x, c = tf.random.normal([2, 8, 8, 1]), tf.constant([-2.0, 0.5])
    y = net([x, c])
    net.save(tmp_path / "net.keras")
    back = keras.saving.load_model(tmp_path / "net.keras")
    np.testing.assert_allclose(back([x, c]), y, atol=1e-6)


def test_mlp_roundtrip_and_shapes():
    mlp = ScoreMLP(2, width=16, depth=2)
    out = mlp([tf.zeros([5, 2]), tf.zeros([5])])
    assert out.shape == (5, 2)
    roundtrip(mlp)


def test_unet_28x28_and_32x32_presets_build():
    for shape in [(28, 28, 1), (32, 32, 3)]:
        cfg = config.model_preset(shape)
        cfg = config.ModelConfig(**{**cfg.__dict__, "ch": 8})
        net = networks.build_score_net(cfg, shape)
        assert net([tf.zeros((2,) + shape), tf.zeros([2])]).shape == (2,) + shape


def test_bad_network_arguments():
    with pytest.raises(ValueError, match="not divisible"):
        ScoreUNet(image_size=28, channels=1, ch_mult=(1, 2, 2, 2))
    with pytest.raises(ValueError, match="square images"):
        networks.build_score_net(config.ModelConfig(), (8, 6, 1))
    with pytest.raises(ValueError, match="even"):
        FourierTime(3)


def test_score_function_divides_by_std_and_conditions_on_log_std():
    from shortdiff_tf import sde as sde_lib
    sde = sde_lib.VPSDE(T=0.4)
    seen = {}

    def fake_net(inputs, training=None):
        seen["c"] = inputs[1]
        return tf.ones_like(inputs[0])

    t = tf.constant([0.1, 0.3])
    s = networks.score_function(fake_net, sde)(tf.zeros([2, 3]), t)
    np.testing.assert_allclose(seen["c"], np.log(sde.std(t)), rtol=1e-6)
    np.testing.assert_allclose(s[:, 0], 1.0 / sde.std(t), rtol=1e-6)


def test_biggan_blocks_resample_inside_the_block():
    """A DDPM++ (BigGAN) block halves or doubles the side, with a 1x1 conv on the resampled skip;
    2x2 average pooling of a constant image keeps the constant."""
    emb = tf.zeros([2, 16])
    for resample, side in (("down", 4), ("up", 16)):
        block = ResBlock(8, resample=resample)
        assert block(tf.ones([2, 8, 8, 8]), emb).shape == (2, side, side, 8)
        assert block.skip is not None
    with pytest.raises(ValueError, match="resample"):
        ResBlock(8, resample="sideways")

"""--precision and --jit: bf16, fp16 and XLA against fp32 on a few training steps and samples,
exact resume in bf16 with XLA, and the DDPM++ preset's parameter count against the reference's."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from benchmarks.reference_counts import reference_ddpmpp_count
from shortdiff_tf import config, data as data_lib, networks, pipeline, samplers, training
from shortdiff_tf.app.train import train
from tests.test_training import STEP, TINY, weights

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)

DIGITS = data_lib.load("digits", "train").array


POINTS = np.random.RandomState(0).normal(size=(64, 2)).astype(np.float32)


def losses_of(cfg, steps=3):
    """The losses of the first ``steps`` steps on one device, and the trained state (digits for
    the U-Net, 2-D points for the MLP)."""
    strategy = tf.distribute.get_strategy()
    data = POINTS if cfg.model.kind == "mlp" else DIGITS
    state = training.build_state(cfg, data.shape[1:], strategy)
    step = training.make_train_step(cfg, state, strategy)
    batch_fn = pipeline.make_batch_fn(data, cfg.train.batch_size, 0, True)
    out = [step(batch_fn(tf.constant(i, tf.int64))) for i in range(steps)]
    return [float(loss) for loss, _ in out], state, [float(norm) for _, norm in out]


def with_train(base=TINY, **kw):
    return dataclasses.replace(base, train=dataclasses.replace(base.train, **kw))


def test_bf16_gives_the_fp32_losses():
    """Three U-Net steps from the same initial weights and batches: bf16 (8-bit mantissa) within
    2% of the fp32 losses; the weights stay fp32."""
    reference = losses_of(TINY)[0]
    got, state, _ = losses_of(with_train(precision="bf16"))
    np.testing.assert_allclose(got, reference, rtol=2e-2)
    assert all(v.dtype == tf.float32 for v in state.net.trainable_variables)


def test_xla_gives_the_fp32_losses_and_fp16_scales_the_loss():
    """A small MLP (the step's arithmetic does not depend on the network): three XLA-compiled
    steps within 1e-4 of the graph steps' losses.  fp16 with loss scaling (2^15, no overflow
    here): six losses within 1% of fp32's, and the clipping norm is the unscaled gradient's
    (within 1% of fp32's, not 2^15 times it)."""
    reference, _, norms = losses_of(STEP, steps=6)
    np.testing.assert_allclose(losses_of(with_train(STEP, jit=True))[0], reference[:3], rtol=1e-4)
    got, state, got_norms = losses_of(with_train(STEP, precision="fp16"), steps=6)
    assert float(state.optimizer.dynamic_scale) == 2.0**15
    np.testing.assert_allclose(got, reference, rtol=1e-2)
    np.testing.assert_allclose(got_norms, norms, rtol=1e-2)


def test_fp16_skips_the_steps_whose_scaled_gradients_overflow():
    """The U-Net's first scaled gradients (2^15 x a norm of about 70) overflow fp16: those steps
    are skipped (weights kept) and the scale halved until they fit; nothing non-finite is kept."""
    got, state, _ = losses_of(with_train(precision="fp16"), steps=6)
    assert np.all(np.isfinite(got)) and 1.0 < float(state.optimizer.dynamic_scale) < 2.0**15
    assert all(np.all(np.isfinite(v.numpy())) for v in state.net.trainable_variables)


def test_bf16_and_xla_samples_match_fp32():
    """With the same weights and x_T: Heun's deterministic sampler (5 steps) compiled by XLA within
    1e-4 of the graph loop; Euler-Maruyama (10 steps, the same noise) in bf16 within 0.05 of fp32
    (samples of about unit scale).  Under XLA, TF's Philox normals of a seed that is not a
    constant differ from the TF kernel's, so a --jit SDE sampler draws other noise: its samples
    are checked for finiteness and for the fp32 samples' scale (std within 10%)."""
    nets = {p: networks.build_score_net(TINY.model, (8, 8, 1), p) for p in ("fp32", "bf16")}
    nets["bf16"].set_weights(nets["fp32"].get_weights())
    sde = TINY.sde.build()
    prior = sde.prior((8, 8, 1))
    run = lambda net, name, steps, jit: samplers.Sampler(sde, networks.score_function(net, sde), prior,
                                                         samplers.preset(name, steps=steps), jit=jit)(32, 3).x.numpy()
    np.testing.assert_allclose(run(nets["fp32"], "heun", 5, True), run(nets["fp32"], "heun", 5, False), atol=1e-4)
    reference = run(nets["fp32"], "em", 10, False)
    bf16 = run(nets["bf16"], "em", 10, False)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, reference, atol=5e-2)
    assert np.abs(bf16 - reference).max() > 0                      # it did compute in bf16
    xla = run(nets["fp32"], "em", 10, True)
    assert np.all(np.isfinite(xla)) and xla.std() == pytest.approx(reference.std(), rel=0.1)


def test_a_bf16_xla_run_resumes_exactly(tmp_path):
    """Stopped after 3 steps and resumed, a bf16 run with XLA ends with the weights of the
    uninterrupted run (1e-6); a small MLP on 2-D points (the step's arithmetic is the same)."""
    cfg = dataclasses.replace(STEP, train=dataclasses.replace(STEP.train, precision="bf16", jit=True))
    train(cfg, tmp_path / "full", progress=False, log=lambda *_: None)
    train(cfg, tmp_path / "split", progress=False, stop_after=3, log=lambda *_: None)
    train(cfg, tmp_path / "split", progress=False, log=lambda *_: None)
    for a, b in zip(weights(tmp_path / "full"), weights(tmp_path / "split")):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("preset", ["ddpmpp-mnist", "ddpmpp-cifar10"])
def test_the_ddpmpp_presets_have_the_reference_parameter_count(preset):
    """Our DDPM++ network of each preset has exactly the reference layout's trainable parameters
    (ddpmpp-cifar10: ScoreSDE's DDPM++ cont. (VP), 61,804,419)."""
    cfg = config.run_preset(preset)
    m, shape = cfg.model, cfg.data.shape
    net = networks.build_score_net(m, shape)
    assert networks.count_params(net) == reference_ddpmpp_count(m.ch, m.ch_mult, m.num_res_blocks,
                                                                m.attn_resolutions, shape[0], shape[2])

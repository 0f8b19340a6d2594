"""With the exact score and the exact p(x, T) as prior, every sampler reproduces the data."""
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from shortdiff_tf import samplers, toy
from tests.conftest import SDE_NAMES, TS, make_sde

ALPHA = 1e-3          # false-alarm rate of each two-sample test
N = 2000


def run(name, T, preset, data="gmm2d", n=N, steps=None, **over):
    sde = make_sde(name, T, eps=1e-3 if name != "ve" else 1e-5)
    diff = toy.ToyDiffusion(toy.get_toy(data), sde)
    cfg = samplers.PRESETS[preset]
    if over:
        cfg = samplers.SamplerConfig(**{**cfg.__dict__, **over})
    sampler = samplers.Sampler(sde, diff.score, diff.marginal(sde.T), cfg)
    return sampler(n, 7, steps=steps), diff, sde


def two_sample_ok(x, y):
    """KS tests on three fixed projections, Bonferroni-corrected to a total false-alarm rate ALPHA."""
    dirs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])[:, : x.shape[1]]
    pvals = [stats.ks_2samp(x @ d, y @ d).pvalue for d in dirs]
    return min(pvals) > ALPHA / len(dirs), pvals


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("preset", ["em", "pc", "ode"])
def test_samplers_reproduce_the_data_mixture(name, T, preset):
    steps = 250 if preset != "ode" else None
    res, diff, sde = run(name, T, preset, steps=steps)
    x = res.x.numpy()
    assert np.all(np.isfinite(x))
    ref = diff.marginal(sde.eps)
    y = ref.sample(N, 11, dtype=tf.float64).numpy()
    se = np.sqrt(np.diag(ref.covariance()) / N)
    assert np.all(np.abs(x.mean(0) - ref.mean()) < 6 * se), (x.mean(0), ref.mean())
    cov = ref.covariance()
    cov_se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / N)   # Gaussian approx.
    assert np.all(np.abs(np.cov(x.T) - cov) < 6 * cov_se), (np.cov(x.T), cov)
    ok, pvals = two_sample_ok(x, y)
    assert ok, pvals
    if preset == "ode":
        assert 10 < res.nfe < 2000
    else:
        assert res.nfe == steps * (2 if preset == "pc" else 1)


def test_gmm1d_em_from_p_noise_at_T_1():
    """At T = 1 (VP) p_noise is close to p(x, T), so the standard model samples the data too."""
    sde = make_sde("vp", 1.0, eps=1e-3)
    diff = toy.ToyDiffusion(toy.get_toy("gmm1d"), sde)
    res = samplers.Sampler(sde, diff.score, sde.prior([1]), samplers.PRESETS["em"])(N, 5)
    assert res.nfe == 1000
    y = diff.marginal(sde.eps).sample(N, 2, dtype=tf.float64).numpy()
    assert stats.ks_2samp(res.x.numpy()[:, 0], y[:, 0]).pvalue > ALPHA


def test_same_seed_same_samples_whatever_the_batch_size():
    big, _, _ = run("vp", 0.4, "pc", n=64, steps=20)
    small, _, _ = run("vp", 0.4, "pc", n=8, steps=20)
    np.testing.assert_allclose(small.x.numpy(), big.x.numpy()[:8], rtol=1e-5, atol=1e-6)
    other, _, _ = run("vp", 0.4, "pc", n=8, steps=20)
    np.testing.assert_array_equal(other.x.numpy(), small.x.numpy())


def test_denoise_returns_the_mean_of_the_last_step():
    """Same seed, with and without denoising: they differ only by the last Euler-Maruyama step's
    noise g(t_{n-1}) sqrt(t_{n-1} - t_n) z, so that difference scaled back is standard normal
    (mean within 5 SE of 0, standard deviation within 5%)."""
    noisy, _, sde = run("vp", 0.4, "em", n=N, steps=10, denoise=False)
    clean, _, _ = run("vp", 0.4, "em", n=N, steps=10, denoise=True)
    ts = sde.time_grid(10, tf.float64).numpy()
    g = math.sqrt(float(sde.g2(tf.constant(ts[-2], tf.float64))))
    z = ((noisy.x - clean.x).numpy() / (g * math.sqrt(ts[-2] - ts[-1]))).reshape(-1)
    assert abs(z.mean()) < 5 / math.sqrt(z.size) and abs(z.std() - 1.0) < 0.05


def test_sampler_step_count_follows_T():
    sde = make_sde("vp", 0.4)
    assert samplers.Sampler(sde, None, None).default_steps() == 400
    assert samplers.Sampler(make_sde("vp", 0.2), None, None).default_steps() == 200


def test_bad_sampler_options():
    with pytest.raises(ValueError, match="unknown predictor 'heun'"):
        samplers.SamplerConfig(predictor="heun")
    with pytest.raises(ValueError, match="unknown corrector"):
        samplers.SamplerConfig(corrector="ald2")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        samplers.SamplerConfig(steps=0)
    with pytest.raises(ValueError, match="unknown sampling method"):
        samplers.SamplerConfig(method="ddim")


def test_sampling_on_two_replicas():
    """5 samples split 2 + 3 over two mirrored replicas equal one device's (1e-5), for Heun's
    deterministic solver and for Euler-Maruyama and the predictor-corrector sampler, whose noise
    each replica draws for its own samples' indices."""
    from shortdiff_tf import networks
    from tests.conftest import two_replicas
    from tests.test_training import TINY
    net = networks.build_score_net(TINY.model, (8, 8, 1))
    sde = TINY.sde.build()
    prior = sde.prior((8, 8, 1))
    make = lambda name, strategy=None: samplers.Sampler(sde, networks.score_function(net, sde), prior,
                                                        samplers.preset(name, steps=4), strategy=strategy)
    strategy = two_replicas()
    one, two = make("heun")(5, 7), make("heun", strategy)(5, 7)
    np.testing.assert_allclose(two.x.numpy(), one.x.numpy(), atol=1e-5)
    assert two.nfe == one.nfe == 9
    for name in ("em", "pc"):
        one, two = make(name)(5, 7), make(name, strategy)(5, 7)
        np.testing.assert_allclose(two.x.numpy(), one.x.numpy(), atol=1e-5)
        assert two.nfe == one.nfe


def test_samples_in_chunks_trace_the_sampler_once():
    """10 samples 4 at a time: three calls of one shape (the last cut to 2), one trace of the
    loop, and exactly the samples of one call of 10 (the noise is keyed by sample index)."""
    from shortdiff_tf.app.sample import in_chunks
    sde = make_sde("vp", 0.4)
    prior = sde.prior((2,))
    smp = samplers.Sampler(sde, lambda x, t: -x, prior, samplers.preset("em", steps=3))
    x, nfe = in_chunks(smp, 10, 5, 4)
    assert x.shape == (10, 2) and nfe == 3
    assert smp._pc.experimental_get_tracing_count() == 1
    np.testing.assert_array_equal(x, smp(10, 5).x.numpy())

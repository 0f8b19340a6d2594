"""The ELBO decomposition (Eq. 8), Proposition 1, Lemma 1 and schedule invariance on mixtures."""
import math

import numpy as np
import pytest
import tensorflow as tf

from shortdiff_tf import elbo as elbo_lib
from shortdiff_tf import sde as sde_lib
from shortdiff_tf import toy
from shortdiff_tf.seeds import as_seed, split
from tests.conftest import SDE_NAMES, TS, make_sde

N = 40000


def kl_by_quadrature(p, q, lo=-60.0, hi=60.0, n=400001):
    """KL[p || q] for 1-D densities by the trapezoid rule on a wide, fine grid."""
    x = tf.constant(np.linspace(lo, hi, n)[:, None])
    lp, lq = p.log_prob(x).numpy(), q.log_prob(x).numpy()
    return float(np.trapezoid(np.exp(lp) * (lp - lq), x.numpy()[:, 0]))


def combined(*estimates):
    return math.sqrt(sum(e.sem**2 for e in estimates))


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("bias", [0.0, 0.3])
def test_decomposition_identity(name, T, bias):
    """prior_term - I + R = E_{p_eps} log p_eps - G - KL[p(x,T) || p_noise] within 5 combined
    standard errors + 0.01 nats, for the exact score (G = 0) and a biased score s + 0.3 (G > 0)."""
    sde = make_sde(name, T)
    diff = toy.ToyDiffusion(toy.get_toy("gmm2d"), sde)
    score = lambda x, t: diff.score(x, t) + bias
    x0 = diff.data.sample(N, 1, dtype=tf.float64)
    lhs = elbo_lib.elbo(sde, score, sde.prior([2]), x0, seed=2)
    x_eps = diff.marginal(sde.eps).sample(N, 3, dtype=tf.float64)
    ent = elbo_lib.Estimate.of(diff.log_prob(x_eps, sde.eps))
    p_T = diff.marginal(T)
    kl = elbo_lib.kl_divergence(p_T.log_prob, sde.prior([2]).log_prob, p_T.sample(N, 4, dtype=tf.float64))
    G = elbo_lib.score_gap(sde, score, diff.score, x0, seed=5)
    rhs = ent.mean - G.mean - kl.mean
    assert abs(lhs.elbo.mean - rhs) < 5 * combined(lhs.elbo, ent, kl, G) + 0.01, (lhs, ent, kl, G)
    if bias == 0.0:
        assert G.mean == 0.0
    else:
        assert G.mean > 10 * G.sem


@pytest.mark.parametrize("name", SDE_NAMES)
def test_proposition_1_exact_prior_beats_p_noise(name):
    """L_phi with nu_phi = p(x,T) exceeds L with p_noise by KL[p(x,T)||p_noise] > 0 (T = 0.4)."""
    sde = make_sde(name, 0.4)
    diff = toy.ToyDiffusion(toy.get_toy("gmm2d"), sde)
    x0 = diff.data.sample(N, 1, dtype=tf.float64)
    aux = elbo_lib.elbo(sde, diff.score, diff.marginal(0.4), x0, seed=2)
    std = elbo_lib.elbo(sde, diff.score, sde.prior([2]), x0, seed=2)   # same (t, e) draws
    gain = aux.prior_term.mean - std.prior_term.mean
    p_T = diff.marginal(0.4)
    kl = elbo_lib.kl_divergence(p_T.log_prob, sde.prior([2]).log_prob, p_T.sample(N, 4, dtype=tf.float64))
    assert aux.elbo.mean > std.elbo.mean and kl.mean > 0
    assert abs(gain - kl.mean) < 5 * combined(aux.prior_term, std.prior_term, kl)
    paired = aux.minus(std)             # the same draws: the difference's error bar is the prior terms' only
    assert paired.mean == pytest.approx(aux.elbo.mean - std.elbo.mean) and paired.sem < math.hypot(aux.elbo.sem, std.elbo.sem)
    assert abs(paired.mean - kl.mean) < 5 * math.hypot(paired.sem, kl.sem) + 0.01


@pytest.mark.parametrize("name", SDE_NAMES)
def test_lemma_1_kl_to_p_noise_decreases_in_T(name):
    Ts = [0.1, 0.2, 0.4, 0.6, 0.8, 1.0]
    kls = []
    for T in Ts:
        sde = make_sde(name, T)
        kls.append(kl_by_quadrature(toy.ToyDiffusion(toy.get_toy("gmm1d"), sde).marginal(T), sde.prior([1])))
    assert all(a > b for a, b in zip(kls, kls[1:])), kls
    if name == "vp":   # KL[p_T||N(0,I)] <= exp(-B(T)) KL[p_data||N(0,I)]
        kl0 = kl_by_quadrature(toy.get_toy("gmm1d"), make_sde("vp", 1.0).prior([1]))
        for T, kl in zip(Ts, kls):
            assert kl <= math.exp(-float(make_sde("vp", T).B(T))) * kl0 + 1e-9


def test_schedule_invariance_equal_B_gives_equal_kl_and_elbo():
    """Two VP schedules with equal B(T) reach the same p(x, T): equal KL, and the exact-score ELBOs
    agree within Monte Carlo error."""
    a = sde_lib.VPSDE(T=0.4)                                       # B = 1.632
    b = sde_lib.VPSDE(T=0.8, beta_0=0.5, beta_1=0.5 + 2 * (1.632 - 0.4) / 0.64)
    assert float(a.B(0.4)) == pytest.approx(float(b.B(0.8)), rel=1e-12)
    da, db = (toy.ToyDiffusion(toy.get_toy("gmm1d"), s) for s in (a, b))
    kla, klb = (kl_by_quadrature(d.marginal(s.T), s.prior([1])) for d, s in ((da, a), (db, b)))
    assert kla == pytest.approx(klb, rel=1e-10)
    x0 = da.data.sample(N, 1, dtype=tf.float64)
    ea = elbo_lib.elbo(a, da.score, a.prior([1]), x0, seed=3)
    eb = elbo_lib.elbo(b, db.score, b.prior([1]), x0, seed=3)
    # equal up to the eps end point, which differs: compare E log p_eps - KL for each
    assert abs((ea.elbo.mean - eb.elbo.mean)) < 5 * combined(ea.elbo, eb.elbo) + 0.01


def test_score_gap_matches_quadrature_for_a_constant_offset():
    """For s = exact + c (1-D), G = c^2/2 int g^2 dt exactly: VP gives c^2/2 (B(T) - B(eps))."""
    sde = make_sde("vp", 0.4)
    diff = toy.ToyDiffusion(toy.get_toy("gmm1d"), sde)
    x0 = diff.data.sample(N, 1, dtype=tf.float64)
    want = 0.125 * float(sde.B(0.4) - sde.B(1e-5))
    for importance in (True, False):
        G = elbo_lib.score_gap(sde, lambda x, t: diff.score(x, t) + 0.5, diff.score, x0, seed=1,
                               importance=importance)
        assert abs(G.mean - want) < 5 * G.sem and G.sem < 0.02 * want


# ---- the estimator's settings: K draws, stratified t, the control variate, closed-form terms ----
@pytest.mark.parametrize("control", elbo_lib.CONTROL_VARIATES)
@pytest.mark.parametrize("draws", [1, 4])
def test_every_estimator_setting_satisfies_eq8(control, draws):
    """With the exact score (G = 0): prior term - I + R = E log p_eps - KL[p(x,T) || p_noise] within
    5 combined standard errors + 0.01 nats, for each control variate and K draws per example."""
    sde = make_sde("vp", 0.6)
    diff = toy.ToyDiffusion(toy.get_toy("gmm2d"), sde)
    x0 = diff.data.sample(N // draws, 1, dtype=tf.float64)
    lhs = elbo_lib.elbo(sde, diff.score, sde.prior([2]), x0, seed=2, draws=draws, control=control)
    ent = elbo_lib.Estimate.of(diff.log_prob(diff.marginal(sde.eps).sample(N, 3, dtype=tf.float64), sde.eps))
    p_T = diff.marginal(0.6)
    kl = elbo_lib.kl_divergence(p_T.log_prob, sde.prior([2]).log_prob, p_T.sample(N, 4, dtype=tf.float64))
    assert abs(lhs.elbo.mean - (ent.mean - kl.mean)) < 5 * combined(lhs.elbo, ent, kl) + 0.01, (lhs, ent, kl)
    assert lhs.draws == draws and (lhs.beta == {"on": 1.0, "off": 0.0}.get(control, lhs.beta))


def test_the_optimal_control_coefficient_minimises_the_variance_of_the_same_draws():
    """beta* = Cov(Y, C) / Var(C) is the least-squares coefficient: on the same draws its I has
    a standard error no larger than beta = 1's or beta = 0's (a biased score, as a trained one)."""
    sde = make_sde("vp", 1.0)
    diff = toy.ToyDiffusion(toy.get_toy("gmm2d"), sde)
    x0 = diff.data.sample(4000, 1, dtype=tf.float64)
    score = lambda x, t: 0.7 * diff.score(x, t)
    d = elbo_lib.elbo_draws(sde, score, x0, seed=3, control="optimal")
    sem = lambda beta: elbo_lib.Estimate.of(d.Y - beta * (d.C - d.I0)).sem
    assert sem(float(d.beta)) <= min(sem(0.0), sem(1.0)) + 1e-12 and sem(float(d.beta)) < sem(0.0)


def test_stratified_draws_beat_independent_ones():
    """K = 8 stratified draws per example: the standard error of I is below the 1/sqrt(8) that
    independent draws would give (measured at 4000 examples; stratification cannot do worse)."""
    sde = make_sde("vp", 1.0)
    diff = toy.ToyDiffusion(toy.get_toy("gmm2d"), sde)
    x0 = diff.data.sample(4000, 1, dtype=tf.float64)
    one = elbo_lib.elbo(sde, diff.score, sde.prior([2]), x0, seed=4, draws=1, control="off")
    eight = elbo_lib.elbo(sde, diff.score, sde.prior([2]), x0, seed=4, draws=8, control="off")
    assert eight.I.sem < one.I.sem / math.sqrt(8), (eight.I.sem, one.I.sem)


def test_gaussian_prior_terms_in_closed_form_match_monte_carlo():
    """E_{x_T | x_0} log N(x_T; mu, diag std^2) in closed form (p_noise with a tensor T, and a fitted
    diagonal Gaussian) against the mean over 20000 draws of x_T, per example, within 5 standard errors."""
    from shortdiff_tf.priors.gaussian import GaussianPrior
    sde = make_sde("vp", 0.4)
    x0 = tf.random.stateless_normal([3, 2, 2, 1], [1, 2], dtype=tf.float64)
    d = elbo_lib.elbo_draws(sde, lambda x, t: -x, x0, seed=5, draws=20000)
    fitted = GaussianPrior([2, 2, 1], std=np.array([0.5, 1.0, 1.5, 2.0]).reshape(2, 2, 1), mean=0.3)
    for closed, prior in ((elbo_lib.noise_prior_term(sde, d, tf.constant(0.4, tf.float64)), sde.prior([2, 2, 1])),
                          (fitted.expected_log_prob(d.mean_T, d.var_T), fitted)):
        mc = tf.reshape(prior.log_prob(tf.reshape(d.x_T, [-1, 2, 2, 1])), [20000, 3]).numpy()
        sem = mc.std(0) / math.sqrt(20000)
        np.testing.assert_array_less(np.abs(closed.numpy() - mc.mean(0)), 5 * sem + 1e-9)


def test_replicated_batches_run_one_per_replica_with_the_same_draws():
    """5 batches on 2 replicas: two strategy.run calls (batches 0-1, 2-3), the fifth on one
    device; every batch's draws equal the one-device draws of the same seed (1e-12)."""
    from tests.conftest import two_replicas
    sde = make_sde("vp", 0.4)
    score = lambda x, t: -x / tf.reshape(tf.cast(sde.variance(t), x.dtype), [-1, 1])   # any field will do
    x0 = tf.constant(np.random.RandomState(0).normal(size=(10, 2)))
    from shortdiff_tf.seeds import split
    batches = [(x0[i: i + 2], split(tf.constant([0, 5]), i)) for i in range(0, 10, 2)]
    one = lambda x, s: (lambda d: (d.Y, d.C, d.x_T, d.R))(elbo_lib.elbo_draws(sde, score, x, s, draws=3))
    strategy = two_replicas()
    calls = []
    run = strategy.run
    strategy.run = lambda fn, args: calls.append(1) or run(fn, args=args)
    parts = elbo_lib.replicated_batches(strategy, one, batches)
    assert len(calls) == 2 and len(parts) == 5
    for got, (x, s) in zip(parts, batches):
        for a, b in zip(got, one(x, s)):                               # Y, C, x_T, R
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


class Opaque:
    """A prior scored only through log_prob, as a Glow is: no closed-form term."""

    def __init__(self, prior):
        self.log_prob, self.event_shape = prior.log_prob, prior.event_shape


def test_monte_carlo_prior_terms_with_the_control_variate_are_unbiased_and_paired():
    """A fitted Gaussian treated as if it had no closed form, K = 4 draws of x_T per example: its
    prior term (closed-form p_noise term + mean over the draws of log nu - log p_noise) has the
    closed form's mean over 4000 examples (5 standard errors of their difference), and L_phi - L
    is exactly that mean difference on the same draws, with a standard error a fifth of the one
    the draws' plain mean of log nu (unpaired in x_T) gives."""
    from shortdiff_tf.priors.gaussian import GaussianPrior
    sde = make_sde("vp", 0.4)
    diff = toy.ToyDiffusion(toy.get_toy("gmm2d"), sde)
    x0 = diff.data.sample(4000, 1, dtype=tf.float64)
    fitted = GaussianPrior([2], std=np.array([0.95, 1.05]), mean=0.02)
    priors = {"noise": sde.prior([2]), "aux": Opaque(fitted), "closed": fitted}
    e = elbo_lib.elbos(sde, diff.score, priors, x0, seed=3, batch_size=1000, draws=4)
    bias = elbo_lib.Estimate.of(e["aux"].prior_values - e["closed"].prior_values)
    assert abs(bias.mean) < 5 * bias.sem
    gain = e["aux"].minus(e["noise"])
    d = elbo_lib.elbo_draws(sde, diff.score, x0[:1000], split(as_seed(3), 0), draws=4)
    log_prob = lambda prior: tf.reshape(prior.log_prob(tf.reshape(d.x_T, [-1, 2])), [4, -1])     # [K, B]
    paired = tf.reduce_mean(log_prob(fitted) - log_prob(sde.prior([2])), 0)
    np.testing.assert_allclose(e["aux"].values[:1000] - e["noise"].values[:1000], paired, rtol=1e-9, atol=1e-9)
    unpaired = elbo_lib.Estimate.of(tf.reduce_mean(log_prob(fitted), 0) -
                                    elbo_lib.noise_prior_term(sde, d)).sem * math.sqrt(1000 / 4000)
    assert gain.sem < unpaired / 5, (gain.sem, unpaired)


ELBO_MEMORY = """
import os, resource
import tensorflow as tf
from shortdiff_tf import elbo, sde as sde_lib
from shortdiff_tf.priors.glow import GlowPrior
shape = [16, 16, 3]
sde = sde_lib.VPSDE(T=0.4)
glow = GlowPrior(shape, levels=1, steps_per_level=1, hidden=8)
glow.initialize(tf.random.stateless_uniform([8] + shape, [0, 1], -1, 1))
priors = {"noise": sde.prior(shape), "aux": glow}
for n in (64, 2048):
    x0 = tf.random.stateless_uniform([n] + shape, [0, n], -1, 1)
    e = elbo.elbos(sde, lambda x, t: -x, priors, x0, seed=0, batch_size=32, draws=16)
    assert e["aux"].num_samples == n
    print("MAXRSS_KB", n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
os._exit(0)
"""


def test_elbo_memory_does_not_grow_with_the_number_of_examples():
    """The ELBO of 64 and then of 2,048 16x16x3 images with a Glow prior, K = 16 draws, batches
    of 32, in one process: the peak memory after the larger set is within 10% of the peak after
    the smaller one (every prior term is computed batch by batch; keeping the draws of x_T over
    the set would take 16 x 2048 x 768 float64 = 201 MB, more than that 10%, and scoring them at
    once far more).  benchmarks/elbo_memory.py measures 10,000 CIFAR-10-sized images."""
    import os
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", ELBO_MEMORY], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    peaks = [int(line.split()[2]) for line in out.stdout.splitlines() if line.startswith("MAXRSS_KB")]
    assert len(peaks) == 2, out.stderr[-2000:]
    assert peaks[1] < 1.1 * peaks[0], peaks

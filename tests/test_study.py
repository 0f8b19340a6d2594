"""The diffusion-time study: every reported term against closed forms, T* by ascent against the
analytic optimum, and the `shortdiff study` command on tiny grids."""
import json
import math

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from scipy import integrate, optimize

from cli.main import cli
from shortdiff_tf import elbo as elbo_lib, toy
from shortdiff_tf.prior_fit import mixtures
from shortdiff_tf.priors import GaussianMixture, GaussianPrior
from shortdiff_tf.study import optimal_T, quadrature, toy_grid
from tests.conftest import make_sde

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)

MU, V0 = 2.0, 0.25                                      # 1-D Gaussian data N(MU, V0)
GMM1D = toy.get_toy("gmm1d")


def gaussian_kl(m1, v1, m2, v2):
    """KL[N(m1, v1) || N(m2, v2)] in 1-D."""
    return 0.5 * (v1 / v2 + (m1 - m2) ** 2 / v2 - 1.0 - math.log(v1 / v2))


def coefs(sde, t):
    t = tf.constant(t, tf.float64)
    return float(sde.mean_coef(t)), float(sde.variance(t)), float(sde.g2(t))


# ---- quadrature ------------------------------------------------------------------------
def test_quadrature_kl_and_entropy_match_gaussian_closed_forms():
    """1-D and 2-D (correlated) Gaussians: KL and E log p within 1e-8 of the closed forms."""
    p, q = GaussianMixture([1.0], [[0.3]], [0.2**2]), GaussianPrior([1], std=1.5, mean=0.5)
    assert abs(quadrature.kl(p, q.log_prob) - gaussian_kl(0.3, 0.04, 0.5, 2.25)) < 1e-8
    assert abs(quadrature.neg_entropy(p) + 0.5 * math.log(2 * math.pi * math.e * 0.04)) < 1e-8
    cov = np.array([[0.5, 0.2], [0.2, 0.3]])
    p2 = GaussianMixture([1.0], [[1.0, -0.5]], cov[None])
    want = 0.5 * (np.trace(cov) + 1.25 - 2 - math.log(np.linalg.det(cov)))
    assert abs(quadrature.kl(p2, GaussianPrior([2]).log_prob) - want) < 1e-8
    assert abs(quadrature.neg_entropy(p2) + 0.5 * math.log((2 * math.pi * math.e) ** 2 * np.linalg.det(cov))) < 1e-8


def test_quadrature_refuses_more_than_two_dimensions():
    with pytest.raises(ValueError, match="1-D or 2-D"):
        quadrature.grid(GaussianMixture([1.0], [[0.0, 0.0, 0.0]], [1.0]))


# ---- every reported term on Gaussian data ------------------------------------------------
@pytest.mark.parametrize("name, T", [("vp", 0.4), ("ve", 0.6)])
def test_decomposition_terms_match_closed_forms(name, T):
    """Data N(MU, V0); the 'network' is the exact score of N(MU', V0') diffused, so
      E_{p_t}|s - grad log p_t|^2 = v_t (1/v_t - 1/v'_t)^2 + m_t^2 (MU - MU')^2 / v'_t^2
    and G = 1/2 int g^2 (that) dt by scipy quadrature; KL[p(x,T) || p_noise] and E log p_eps are
    Gaussian closed forms.  G within 5 sem, KL and entropy within 1e-6, and the reported Eq. 8 gap
    within 5 sem + 0.01 of zero."""
    sde = make_sde(name, T)
    diff = toy.ToyDiffusion(GaussianMixture([1.0], [[MU]], [V0]), sde)
    model = toy.ToyDiffusion(GaussianMixture([1.0], [[MU - 0.3]], [1.5 * V0]), sde)
    out = toy_grid.decomposition(sde, lambda x, t: tf.cast(model.score(tf.cast(x, tf.float64), t), x.dtype),
                                 diff, {"noise": sde.prior([1])}, n=40000, seed=3)

    def integrand(t):
        m, s, g2 = coefs(sde, t)
        v, vm = m * m * V0 + s, m * m * 1.5 * V0 + s
        return 0.5 * g2 * (v * (1 / v - 1 / vm) ** 2 + (m * 0.3 / vm) ** 2)

    G = integrate.quad(integrand, sde.eps, T, limit=200, points=[1e-4, 1e-3, 1e-2])[0]
    assert abs(out["G"] - G) < 5 * out["G_sem"] and out["G_sem"] < 0.05 * G, (out["G"], out["G_sem"], G)
    m_T, s_T, _ = coefs(sde, T)
    want_kl = gaussian_kl(m_T * MU, m_T**2 * V0 + s_T, 0.0, sde.prior_variance())
    assert abs(out["kl_noise"] - want_kl) < 1e-6
    m_e, s_e, _ = coefs(sde, sde.eps)
    assert abs(out["neg_entropy_eps"] + 0.5 * math.log(2 * math.pi * math.e * (m_e**2 * V0 + s_e))) < 1e-6
    assert abs(out["eq8_gap_noise"]) < 5 * out["eq8_gap_noise_sem"] + 0.01, out


def test_effective_components_and_perplexity():
    p = GaussianMixture([0.5, 0.495, 0.005], [[0.0], [1.0], [2.0]], [1.0, 1.0, 1.0])
    assert mixtures.effective_components(p.weights, 0.01) == 2
    assert 2.0 < toy_grid.weight_perplexity(p) < 2.1


# ---- the ELBO as a function of T, and its ascent ----------------------------------------
def test_elbo_in_T_equals_the_elbo_estimator():
    """At a fixed T the differentiable estimate has the mean of elbo.elbo (5 combined sem)."""
    sde = make_sde("vp", 0.5)
    diff = toy.ToyDiffusion(toy.get_toy("gmm1d"), sde)
    score = lambda x, t: diff.score(x, t) + 0.3
    x0 = diff.data.sample(20000, 1, dtype=tf.float64)
    ref = elbo_lib.elbo(sde, score, sde.prior([1]), x0, seed=2)
    mine = elbo_lib.Estimate.of(optimal_T.elbo_in_T(sde, score, x0, tf.constant(0.5, tf.float64), tf.constant([4, 0])))
    assert abs(mine.mean - ref.elbo.mean) < 5 * math.hypot(mine.sem, ref.elbo.sem), (mine, ref.elbo)


def test_dL_dT_is_the_papers_balance():
    """With s = exact score + c, dL/dT = -c^2 g(T)^2 / 2 - dKL[p(x,T) || p_noise]/dT (App. H).
    The autodiff gradient of the estimate, per example, has that mean within 5 sem."""
    c, T0 = 0.3, 0.5
    sde = make_sde("vp", 1.0)
    diff = toy.ToyDiffusion(GaussianMixture([1.0], [[MU]], [V0]), sde)
    x0 = diff.data.sample(80000, 1, dtype=tf.float64)
    T = tf.constant(T0, tf.float64)
    with tf.autodiff.ForwardAccumulator(T, tf.constant(1.0, tf.float64)) as acc:   # per-example dL_i/dT
        L = optimal_T.elbo_in_T(sde, lambda x, t: diff.score(x, t) + c, x0, T, tf.constant([5, 0]))
    grads = elbo_lib.Estimate.of(acc.jvp(L))
    kl = lambda t: gaussian_kl(coefs(sde, t)[0] * MU, coefs(sde, t)[0] ** 2 * V0 + coefs(sde, t)[1], 0.0, 1.0)
    want = -0.5 * c * c * coefs(sde, T0)[2] - (kl(T0 + 1e-5) - kl(T0 - 1e-5)) / 2e-5
    assert abs(grads.mean - want) < 5 * grads.sem and grads.sem < 0.1 * abs(want), (grads, want)


def test_ascent_finds_the_analytic_T_star():
    """s = exact score + 0.3 on N(2, 0.25) under VP: T* solves c^2 g(T)^2 / 2 = -dKL/dT
    (0.613); the ascent ('after': the score is fixed) lands within 0.05 of it from T = 0.3."""
    c = 0.3
    sde = make_sde("vp", 1.0)
    data = GaussianMixture([1.0], [[MU]], [V0])
    diff = toy.ToyDiffusion(data, sde)

    def balance(T, h=1e-6):
        kl = lambda t: gaussian_kl(coefs(sde, t)[0] * MU, coefs(sde, t)[0] ** 2 * V0 + coefs(sde, t)[1], 0.0, 1.0)
        return 0.5 * c * c * coefs(sde, T)[2] + (kl(T + h) - kl(T - h)) / (2 * h)

    T_star = optimize.brentq(balance, 0.1, 1.0)
    score = lambda x, t: tf.cast(diff.score(tf.cast(x, tf.float64), t) + c, x.dtype)
    res = optimal_T.optimize_T(sde, score, [], data, "after", steps=600, T_init=0.3, seed=1)
    assert abs(res["T_star"] - T_star) < 0.05, (res["T_star"], T_star)
    assert res["path"][0][1] < 0.31 and len(res["path"]) > 10


def test_optimize_T_rejects_bad_modes_and_starts():
    sde = make_sde("vp", 1.0)
    with pytest.raises(ValueError, match="mode"):
        optimal_T.optimize_T(sde, None, [], None, "sideways")
    with pytest.raises(ValueError, match="initial T"):
        optimal_T.optimize_T(sde, None, [], None, "after", T_init=1.0)


# ---- the command ------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


TINY = ("--seeds", "1", "--steps", "30", "--num-eval", "2000", "--num-ll", "8", "--num-samples", "32")
TERMS = ("kl_noise", "kl_aux", "G", "I", "R", "elbo_noise", "elbo_aux", "neg_entropy_eps", "eq8_gap_noise",
         "log_lik_noise", "log_lik_aux", "sample_logp_em_noise", "sample_logp_em_aux", "aux_components",
         "aux_perplexity", "nfe_em_noise", "nfe_ode_noise", "nfe_ode_aux", "likelihood_nfe_noise")


@pytest.fixture(scope="module")
def toy_study(tmp_path_factory):
    d = tmp_path_factory.mktemp("study") / "gmm1d"
    r = invoke("study", "--dataset", "gmm1d", "--T-grid", "0.3,0.6", *TINY, "--optimize-T", "after",
               "--optimize-steps", "30", "--workdir", d, "--json")
    assert r.exit_code == 0, r.output
    return d, r.output


def test_study_reports_every_quantity_and_writes_figures(toy_study):
    d, output = toy_study
    rep = json.loads((d / "study.json").read_text())
    pts = {p["T"]: p for p in rep["points"]}
    assert sorted(pts) == [0.3, 0.6]
    for p in pts.values():
        assert all(k in p and np.isfinite(p[k]) for k in TERMS), sorted(set(TERMS) - set(p))
        assert abs(p["eq8_gap_noise"]) < 5 * p["eq8_gap_noise_sem"] + 0.05       # Eq. 8 on the trained net
    for T, p in pts.items():                   # the closed forms of R and of E log p_noise(x_T)
        B = lambda t: 0.1 * t + 9.95 * t**2                                    # VP: beta 0.1 .. 20
        assert p["R"] == pytest.approx(0.5 * math.log(-math.expm1(-B(T)) / -math.expm1(-B(1e-5))), rel=1e-6)
        w, m, c = (np.asarray(a, np.float64).reshape(3) for a in (GMM1D.weights, GMM1D.means, GMM1D.covs))
        second_moment = float(np.sum(w * (m**2 + c)))
        want = -0.5 * math.log(2 * math.pi) - 0.5 * (math.exp(-B(T)) * second_moment - math.expm1(-B(T)))
        assert abs(p["prior_term_noise"] - want) < 5 * p["prior_term_noise_sem"]
    assert pts[0.3]["nfe_em_noise"] == 300 and pts[0.6]["nfe_em_noise"] == 600          # 1000 T steps
    assert pts[0.3]["kl_noise"] > pts[0.6]["kl_noise"] and pts[0.6]["kl_noise"] < 1e-3   # Lemma 1
    assert pts[0.3]["kl_aux"] < pts[0.3]["kl_noise"]                                     # Prop. 1's premise
    assert set(rep["summary"]) == {"0.3", "0.6"} and rep["summary"]["0.3"]["G"]["values"] == [pts[0.3]["G"]]
    assert rep["grid_optimum"]["elbo_noise"]["T"] in (0.3, 0.6)
    ascent = rep["optimize_T"]["after"]
    assert 0 < ascent["T_star"] <= 0.6 and ascent["steps"] == 30 and ascent["path"][0][1] == pytest.approx(0.3, 0.02)
    assert [row[0] for row in ascent["curve_of_final_model"]] == [0.3, 0.6]
    for path in rep["figures"].values():
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(rep["figures"]) == 4
    assert "grid optimum of elbo_noise" in output and "T* by ascent (after)" in output


def test_study_resumes_and_extends_the_grid(toy_study, tmp_path):
    """A rerun reads finished points back (same numbers) and only trains the new T."""
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(toy_study[0], d)
    before = json.loads((d / "study.json").read_text())["points"]
    r = invoke("study", "--dataset", "gmm1d", "--T-grid", "0.3,0.5,0.6", *TINY, "--workdir", d)
    assert r.exit_code == 0, r.output
    after = {p["T"]: p for p in json.loads((d / "study.json").read_text())["points"]}
    assert sorted(after) == [0.3, 0.5, 0.6]
    assert all(after[p["T"]] == p for p in before)
    assert (d / "runs" / "T0.5-seed0" / "study_point.json").exists()


@pytest.mark.parametrize("args, message", [
    (("--T-grid", "0.5,1.5"), "outside (eps"),
    (("--T-grid", "0.5,abc"), "comma-separated"),
    (("--dataset", "digits", "--T-grid", "0.5"), "--reuse-score"),
    (("--seeds", "0"), "--seeds"),
    (("--samplers", "em,rk4"), "--samplers"),
])
def test_study_bad_input_is_one_line(args, message, tmp_path):
    r = invoke("study", *args, "--workdir", tmp_path / "s")
    assert r.exit_code != 0 and message in r.output, r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "s" / "study.json").exists()


def test_study_refuses_other_settings_in_the_same_directory(toy_study, tmp_path):
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(toy_study[0], d)
    r = invoke("study", "--dataset", "gmm1d", "--T-grid", "0.3", *TINY[:-2], "--num-samples", "64", "--workdir", d)
    assert r.exit_code != 0 and "other settings" in r.output and "num_samples" in r.output, r.output


def test_study_reuse_score_on_images(glow_run, tmp_path):
    """The 'varying T' experiment: a new Glow at T = 0.2 on the T = 0.4 run, bits/dim, FID/KID
    and NFE with both priors; the reused run directory is left untouched."""
    run = glow_run[0]
    listing = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    clf = tmp_path / "clf.keras"
    assert invoke("train-classifier", "--dataset", "digits", "--epochs", "1", "--out", clf).exit_code == 0
    d = tmp_path / "img"
    r = invoke("study", "--dataset", "digits", "--reuse-score", run, "--T-grid", "0.2", "--prior-steps", "2",
               "--glow-hidden", "8", "--glow-steps", "1", "--samplers", "em", "--rtol", "1e-2", "--atol", "1e-2", "--num-examples", "2",
               "--num-samples", "16", "--extractor", clf, "--strategy", "auto", "--workdir", d)
    assert r.exit_code == 0, r.output
    p = json.loads((d / "study.json").read_text())["points"][0]
    for k in ("bpd_noise", "bpd_aux", "bpd_prior_T_aux", "fid_em_noise", "fid_em_aux", "kid_em_aux"):
        assert np.isfinite(p[k]), k
    assert p["nfe_em_noise"] == p["nfe_em_aux"] == 200 and p["fid_num_samples"] == 16
    assert p["fid_extractor"] and "bits/dim" in r.output
    assert "200/200 NFE" in r.output and "samples with em from the aux prior" in r.output      # progress
    assert (d / "views" / "T0.2" / "prior" / "config.json").exists()
    assert sorted(str(q.relative_to(run)) for q in run.rglob("*")) == listing
    r = invoke("study", "--dataset", "digits", "--reuse-score", run, "--T-grid", "0.6", "--workdir", tmp_path / "x")
    assert r.exit_code != 0 and "exceed" in r.output
    r = invoke("study", "--dataset", "digits", "--reuse-score", run, "--T-grid", "0.2,0.3", "--workdir", d,
               "--no-progress", "--prior-steps", "2", "--glow-hidden", "8", "--glow-steps", "1", "--samplers", "em",
               "--rtol", "1e-2", "--atol", "1e-2", "--num-examples", "2", "--num-samples", "16", "--extractor", clf)
    assert r.exit_code == 0, r.output        # T = 0.2 is resumed from its point file, T = 0.3 is new
    assert "T=0.2: 16 samples" not in r.output and "T=0.3: 16 samples with em from the aux prior" in r.output
    assert " NFE  sampling" not in r.output and "examples  PF-ODE" not in r.output
    r = invoke("study", "--dataset", "digits", "--reuse-score", run, "--T-grid", "0.2,0.3", "--workdir", d,
               "--prior-steps", "2", "--glow-hidden", "8", "--glow-steps", "1", "--samplers", "em", "--rtol", "1e-2",
               "--atol", "1e-2", "--num-examples", "2", "--num-samples", "16", "--extractor", clf,
               "--strategy", "mirrored")          # (the split itself: tests of quality.features, evaluate, sample)
    assert r.exit_code == 0 and "T=0.3: 16 samples" not in r.output, r.output       # both points resumed

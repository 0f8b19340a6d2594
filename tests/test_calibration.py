"""The prior's calibration on held-out x_T and on the PF-ODE image of held-out data, and the
sampling temperature: on toy data p(x, T) is a known mixture and its score is exact (so the PF-ODE
image of the data is distributed as p(x, T) too), so the exact marginal, an over-dispersed copy of
it and p_noise itself each have a known verdict and a known temperature."""
import numpy as np
import pytest

from shortdiff_tf import calibration, data as data_lib, sde as sde_lib, toy


class OverDispersed:
    """The exact marginal's density, but samples drawn at temperature 1.5: a prior whose NLL looks
    right while its samples are too wide (what the ODE samplers do not forgive)."""

    def __init__(self, exact, by=1.5):
        self.exact, self.by = exact, by

    def log_prob(self, x):
        return self.exact.log_prob(x)

    def sample(self, n, seed, temperature=1.0, first=0):
        return self.exact.sample(n, seed, temperature=self.by * temperature, first=first)


@pytest.fixture(scope="module")
def setting():
    sde = sde_lib.get_sde("vp", T=0.2, eps=1e-5)
    return sde, toy.ToyDiffusion(toy.get_toy("gmm2d"), sde), data_lib.load("gmm2d", "test").array


def test_the_exact_marginal_is_used_and_its_samples_sit_at_the_noise_floor(setting):
    sde, diff, x0 = setting
    c = calibration.calibrate(sde, diff.marginal(sde.T), x0, num=2000)
    assert c["use"] == "aux" and c["nll_gain_per_dim"] - calibration.Z_ONE_SIDED_5 * c["nll_gain_sem"] > 0
    w = c["sliced_w2"]
    assert w["aux"] < w["noise"] and w["aux"] < 2.5 * w["floor"]
    truth, mine = c["reference"]["rms_quantiles"], c["samples"]["aux"]["rms_quantiles"]
    assert all(abs(mine[q] - truth[q]) < 0.1 * truth[q] for q in truth)          # RMS quantiles within 10%


def test_an_over_dispersed_prior_wins_on_nll_but_loses_on_its_samples_and_p_noise_is_used(setting):
    sde, diff, x0 = setting
    c = calibration.calibrate(sde, OverDispersed(diff.marginal(sde.T)), x0, num=2000)
    assert c["nll_gain_per_dim"] > 0 and c["use"] == "noise" and "samples" in c["reason"]
    assert c["samples"]["aux"]["rms_quantiles"]["0.5"] > 1.1 * c["reference"]["rms_quantiles"]["0.5"]   # the components widen
    assert c["samples"]["aux"]["beyond_4"] >= c["reference"]["beyond_4"]


def test_p_noise_as_its_own_rival_gains_nothing_and_is_not_used(setting):
    sde, _, x0 = setting
    c = calibration.calibrate(sde, sde.prior((2,)), x0, num=500)
    assert c["nll_gain_per_dim"] == 0.0 and c["use"] == "noise" and "NLL" in c["reason"]
    assert "use noise" in calibration.summary_line(c)


def test_sliced_wasserstein_is_zero_on_equal_sets_and_grows_with_a_shift():
    rng = np.random.RandomState(0)
    a = rng.normal(size=(500, 3))
    assert calibration.sliced_wasserstein(a, a) == 0.0
    shifted = calibration.sliced_wasserstein(a + np.array([1.0, 0, 0]), a)
    assert 0.3 < shifted < 1.0                       # a unit shift along one of 3 axes, seen on random directions
    with pytest.raises(ValueError, match="one size"):
        calibration.sliced_wasserstein(a, a[:10])


def test_held_out_images_are_the_test_split_or_a_test_npz_beside_train_npz(tmp_path):
    from shortdiff_tf.config import DataConfig
    x, what = calibration.held_out_images(DataConfig(dataset="digits"))
    assert len(x) == 297 and "test split" in what
    imgs = np.zeros((6, 8, 8, 1), np.uint8)
    np.savez(tmp_path / "train.npz", images=imgs)
    assert "training data" in calibration.held_out_images(DataConfig(dataset=str(tmp_path / "train.npz")))[1]
    np.savez(tmp_path / "test.npz", images=imgs[:4])
    x, what = calibration.held_out_images(DataConfig(dataset=str(tmp_path / "train.npz")))
    assert len(x) == 4 and "test.npz" in what


def test_on_the_pf_ode_image_of_held_out_data_the_exact_marginal_is_used_and_p_noise_is_not(setting):
    """With the exact score the PF-ODE carries p(x, eps) to p(x, T): the ode reference points are
    draws of the exact marginal, which passes; p_noise at this short T does not."""
    sde, diff, x0 = setting
    score = lambda x, t: diff.score(x, t)
    c = calibration.calibrate(sde, diff.marginal(sde.T), x0, num=2000, target="ode", score_fn=score)
    assert c["target"] == "ode" and c["against"] == calibration.AGAINST["ode"] and c["use"] == "aux"
    w = c["sliced_w2"]
    assert w["aux"] < 2.5 * w["floor"] and w["aux"] < w["noise"]
    noise = calibration.calibrate(sde, sde.prior((2,)), x0, num=2000, target="ode", score_fn=score)
    assert noise["use"] == "noise" and "PF-ODE images" in calibration.summary_line(noise)
    with pytest.raises(ValueError, match="score model"):
        calibration.calibrate(sde, sde.prior((2,)), x0, target="ode")


def test_the_temperature_undoes_an_over_dispersion_and_stays_1_for_the_exact_marginal(setting):
    sde, diff, x0 = setting
    points = calibration.held_out_x_T(sde, calibration.held_out_subset(x0, 2000))
    wide = calibration.temperature(OverDispersed(diff.marginal(sde.T), by=1.25), points)
    assert wide["selected"] == 0.8 and wide["use"] == 0.8                  # 1.25 x 0.8 = 1: the exact spread
    assert wide["sliced_w2_confirmation"]["0.8"] < wide["sliced_w2_confirmation"]["1"] and "fresh half" in wide["reason"]
    exact = calibration.temperature(diff.marginal(sde.T), points)
    assert abs(exact["use"] - 1.0) < 0.05 + 1e-9 and set(exact["sliced_w2_selection"]) == {f"{t:g}" for t in exact["grid"]}

"""The prior's calibration on held-out x_T: on toy data p(x, T) is a known mixture, so the exact
marginal, an over-dispersed copy of it and p_noise itself each have a known verdict."""
import numpy as np
import pytest

from shortdiff_tf import calibration, data as data_lib, sde as sde_lib, toy


class OverDispersed:
    """The exact marginal's density, but samples drawn at temperature 1.5: a prior whose NLL looks
    right while its samples are too wide (what the ODE samplers do not forgive)."""

    def __init__(self, exact):
        self.exact = exact

    def log_prob(self, x):
        return self.exact.log_prob(x)

    def sample(self, n, seed, first=0):
        return self.exact.sample(n, seed, temperature=1.5, first=first)


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
    truth, mine = c["true_x_T"]["rms_quantiles"], c["samples"]["aux"]["rms_quantiles"]
    assert all(abs(mine[q] - truth[q]) < 0.1 * truth[q] for q in truth)          # RMS quantiles within 10%


def test_an_over_dispersed_prior_wins_on_nll_but_loses_on_its_samples_and_p_noise_is_used(setting):
    sde, diff, x0 = setting
    c = calibration.calibrate(sde, OverDispersed(diff.marginal(sde.T)), x0, num=2000)
    assert c["nll_gain_per_dim"] > 0 and c["use"] == "noise" and "samples" in c["reason"]
    assert c["samples"]["aux"]["rms_quantiles"]["0.5"] > 1.1 * c["true_x_T"]["rms_quantiles"]["0.5"]   # the components widen
    assert c["samples"]["aux"]["beyond_4"] >= c["true_x_T"]["beyond_4"]


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

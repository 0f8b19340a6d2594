"""Linear forward SDEs on a truncated time interval [eps, T]  (paper Table 1).

Every SDE here is linear, dx = a(t) x dt + g(t) dw, so its transition kernel is Gaussian,
p(x_t | x_0) = N(m_t x_0, s_t I), with m_t the *mean coefficient* and s_t the *variance*
(docs/METHOD.md section 2).  ``T`` truncates the schedule defined on [0, 1]; it never rescales it:
``VPSDE(T=0.4)`` has B(T) = 1.632, m_T = 0.442, s_T = 0.804.

All time arguments are tensors of shape [] or [B]; ``bcast`` lifts a [B] coefficient to the
rank of x.  No code outside this module knows which SDE it has.
"""
from __future__ import annotations

import abc
import math

import tensorflow as tf

from shortdiff_tf import registry
from shortdiff_tf.priors import GaussianPrior

SDES = registry.Registry("SDE")


def bcast(c, x):
    """Reshape a per-example coefficient ``c`` [B] (or a scalar) so it broadcasts against x."""
    c = tf.convert_to_tensor(c, dtype=x.dtype)
    if c.shape.rank == 0:
        return c
    return tf.reshape(c, tf.concat([tf.shape(c), tf.ones([tf.rank(x) - 1], tf.int32)], 0))


def check_time_interval(T, eps) -> None:
    """Raise ValueError unless 0 < eps < T <= 1 (the schedule is defined on [0, 1])."""
    try:
        T, eps = float(T), float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"T and eps must be numbers; got T={T!r}, eps={eps!r}") from None
    if not 0.0 < T <= 1.0:
        raise ValueError(f"T must be in (0, 1] (the schedule lives on [0, 1]); got T={T}")
    if not 0.0 < eps:
        raise ValueError(f"eps must be > 0 (I and R diverge like log(1/eps)); got eps={eps}")
    if not eps < T:
        raise ValueError(f"eps must be smaller than T; got eps={eps}, T={T}")


class SDE(abc.ABC):
    """dx = f(x,t) dt + g(t) dw on [eps, T] with f(x,t) = a(t) x  (Song et al. 2021, eq. 5).

    Subclasses give the drift coefficient a(t), g(t)^2, the marginal coefficients m_t and s_t,
    the inverse of s_t (for importance sampling of t) and the variance of p_noise.
    """

    name = "sde"
    sampling_eps = 1e-3         # where samplers stop by default (ScoreSDE: 1e-3 for VP and sub-VP)

    def __init__(self, T: float = 1.0, eps: float = 1e-5):
        check_time_interval(T, eps)
        self.T, self.eps = float(T), float(eps)

    # ---- the schedule -------------------------------------------------------------------
    @abc.abstractmethod
    def drift_coef(self, t):
        """a(t) in f(x, t) = a(t) x."""

    @abc.abstractmethod
    def g2(self, t):
        """g(t)^2, the squared diffusion coefficient."""

    @abc.abstractmethod
    def mean_coef(self, t):
        """m_t: E[x_t | x_0] = m_t x_0."""

    @abc.abstractmethod
    def variance(self, t):
        """s_t: Cov[x_t | x_0] = s_t I."""

    @abc.abstractmethod
    def time_at_noise_ratio(self, rho):
        """Inverse of t -> rho_t = s_t / m_t^2 (the inverse signal-to-noise ratio, increasing)."""

    @abc.abstractmethod
    def prior_variance_at(self, T):
        """Variance of p_noise for the diffusion cut at T (a tensor, differentiable in T)."""

    def prior_variance(self) -> float:
        """Variance of p_noise, the standard Gaussian prior at this SDE's T."""
        return float(self.prior_variance_at(tf.constant(self.T, tf.float64)))

    def hyperparameters(self) -> dict:
        """Constructor arguments besides T and eps (for configs and export metadata)."""
        return {}

    # ---- derived quantities -------------------------------------------------------------
    def drift_diffusion(self, x, t):
        """-> f(x, t) [B, ...] and g(t) [B]."""
        t = tf.cast(t, x.dtype)
        return bcast(self.drift_coef(t), x) * x, tf.sqrt(self.g2(t))

    def std(self, t):
        return tf.sqrt(self.variance(t))

    def marginal(self, x0, t):
        """p_0t(x_t | x_0) = N(mean, std^2 I) -> (mean [B, ...], std [B])."""
        t = tf.cast(t, x0.dtype)
        return bcast(self.mean_coef(t), x0) * x0, self.std(t)

    def perturb(self, x0, t, noise):
        """x_t = m_t x_0 + sqrt(s_t) e."""
        mean, std = self.marginal(x0, t)
        return mean + bcast(std, x0) * noise

    def transition(self, t_from, t_to):
        """Exact forward kernel from t_from < t_to: x_to = alpha x_from + sqrt(G2) z.

        alpha = m_to / m_from and G2 = s_to - alpha^2 s_from; this is the discretisation
        used by the reverse-diffusion predictor (DDPM's beta_i for VP, sigma_i^2 -
        sigma_{i-1}^2 for VE).
        """
        alpha = self.mean_coef(t_to) / self.mean_coef(t_from)
        return alpha, self.variance(t_to) - alpha**2 * self.variance(t_from)

    def noise_ratio(self, t):
        """rho_t = s_t / m_t^2; d log rho_t / dt = g^2 / s_t for every linear SDE."""
        return self.variance(t) / self.mean_coef(t) ** 2

    def log_variance_ratio(self):
        """log(s_T / s_eps)."""
        return math.log(float(self.variance(tf.constant(self.T, tf.float64))) /
                        float(self.variance(tf.constant(self.eps, tf.float64))))

    def prior(self, event_shape) -> GaussianPrior:
        """p_noise = N(0, prior_variance I) at T (VE's depends on T)."""
        return GaussianPrior(event_shape, std=math.sqrt(self.prior_variance()))

    def time_grid(self, n: int, dtype=tf.float32):
        """n + 1 times from T down to eps (n steps, n an int or a scalar tensor); every sampler
        and solver uses this grid."""
        if isinstance(n, int) and n < 1:
            raise ValueError(f"the number of steps must be >= 1; got {n}")
        return tf.linspace(tf.constant(self.T, dtype), tf.constant(self.eps, dtype), n + 1)

    def default_steps(self, step_size: float = 1e-3) -> int:
        """Number of SDE sampler steps: T / step size, i.e. 1000 T at 1e-3, as the paper counts
        them (docs/METHOD.md section 2); the grid spans [eps, T]."""
        return max(1, round(self.T / step_size))

    def R(self, dim: int) -> float:
        """R(T) = (D/2) log(s_T / s_eps): the theta-free ELBO term (docs/METHOD.md section 3)."""
        return 0.5 * dim * self.log_variance_ratio()

    def with_interval(self, T=None, eps=None) -> "SDE":
        """The same schedule truncated at another T (or eps)."""
        return type(self)(T=self.T if T is None else T, eps=self.eps if eps is None else eps,
                          **self.hyperparameters())

    def __repr__(self):
        args = ", ".join(f"{k}={v}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}(T={self.T}, eps={self.eps}{', ' if args else ''}{args})"


class _BetaSchedule(SDE):
    """Shared linear beta(t) = beta_0 + (beta_1 - beta_0) t of VP and sub-VP."""

    def __init__(self, T=1.0, eps=1e-5, beta_0: float = 0.1, beta_1: float = 20.0):
        super().__init__(T, eps)
        if not 0.0 < beta_0 <= beta_1:
            raise ValueError(f"need 0 < beta_0 <= beta_1; got beta_0={beta_0}, beta_1={beta_1}")
        self.beta_0, self.beta_1 = float(beta_0), float(beta_1)

    def hyperparameters(self):
        return {"beta_0": self.beta_0, "beta_1": self.beta_1}

    def beta_t(self, t):
        return self.beta_0 + (self.beta_1 - self.beta_0) * t

    def B(self, t):
        """B(t) = int_0^t beta = beta_0 t + (beta_1 - beta_0) t^2 / 2."""
        return self.beta_0 * t + 0.5 * (self.beta_1 - self.beta_0) * t**2

    def time_at_B(self, b):
        """Positive root of (beta_1 - beta_0)/2 t^2 + beta_0 t - b = 0."""
        d = self.beta_1 - self.beta_0
        if d == 0:
            return b / self.beta_0
        return (-self.beta_0 + tf.sqrt(self.beta_0**2 + 2.0 * d * b)) / d

    def drift_coef(self, t):
        return -0.5 * self.beta_t(t)

    def mean_coef(self, t):
        return tf.exp(-0.5 * self.B(t))

    def prior_variance_at(self, T):
        return tf.ones_like(T)


@SDES.register("vp")
class VPSDE(_BetaSchedule):
    """Variance preserving: f = -beta x / 2, g^2 = beta, m = exp(-B/2), s = 1 - exp(-B)."""

    name = "vp"

    def g2(self, t):
        return self.beta_t(t)

    def variance(self, t):
        return -tf.math.expm1(-self.B(t))

    def time_at_noise_ratio(self, rho):
        """rho = exp(B) - 1."""
        return self.time_at_B(tf.math.log1p(rho))


@SDES.register("subvp")
class SubVPSDE(_BetaSchedule):
    """sub-VP: f = -beta x / 2, g^2 = beta (1 - exp(-2B)), s = (1 - exp(-B))^2."""

    name = "subvp"

    def g2(self, t):
        return self.beta_t(t) * -tf.math.expm1(-2.0 * self.B(t))

    def variance(self, t):
        return tf.math.expm1(-self.B(t)) ** 2

    def time_at_noise_ratio(self, rho):
        """rho = (y - 1)^2 / y with y = exp(B): the root y >= 1 of y^2 - (2 + rho) y + 1 = 0."""
        return self.time_at_B(tf.math.log(0.5 * (2.0 + rho + tf.sqrt(rho * (4.0 + rho)))))


@SDES.register("ve")
class VESDE(SDE):
    """Variance exploding: f = 0, g^2 = d sigma^2/dt, sigma(t) = sigma_min (sigma_max/sigma_min)^t.

    s_t = sigma(t)^2 - sigma(0)^2 and p_noise = N(0, s_T I) depends on T.
    """

    name = "ve"
    sampling_eps = 1e-5         # ScoreSDE samples VE down to 1e-5

    def __init__(self, T=1.0, eps=1e-5, sigma_min: float = 0.01, sigma_max: float = 50.0):
        super().__init__(T, eps)
        if not 0.0 < sigma_min < sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def hyperparameters(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def sigma_t(self, t):
        return self.sigma_min * tf.exp(self._log_ratio * t)

    def drift_coef(self, t):
        return tf.zeros_like(t)

    def g2(self, t):
        return 2.0 * self._log_ratio * self.sigma_t(t) ** 2

    def mean_coef(self, t):
        return tf.ones_like(t)

    def variance(self, t):
        return self.sigma_min**2 * tf.math.expm1(2.0 * self._log_ratio * t)

    def time_at_noise_ratio(self, rho):
        """rho = s_t (m_t = 1)."""
        return tf.math.log1p(rho / self.sigma_min**2) / (2.0 * self._log_ratio)

    def prior_variance_at(self, T):
        return self.variance(T)


def get_sde(name: str, T: float = 1.0, eps: float = 1e-5, **hyper) -> SDE:
    """Build an SDE by registry name (``vp``, ``ve``, ``subvp``)."""
    return SDES.get(name)(T=T, eps=eps, **hyper)


def reverse_drift(sde: SDE, score_fn, x, t, ode: bool = False):
    """Drift of the reverse process at (x, t), t [B].

    Reverse SDE:          f - g^2 s_theta           (Song et al. 2021, eq. 6)
    Probability-flow ODE: f - g^2 s_theta / 2       (eq. 13)
    """
    f, g = sde.drift_diffusion(x, t)
    g2 = bcast(tf.square(g), x)
    return f - (0.5 if ode else 1.0) * g2 * score_fn(x, tf.cast(t, x.dtype))

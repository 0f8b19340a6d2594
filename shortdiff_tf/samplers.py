"""Samplers from T down to the sampling eps: predictor-corrector (SDE), the adaptive
probability-flow ODE, and the few-step PF-ODE solvers of ``few_step`` (heun, dpm2m).

The sampling eps defaults per SDE as in ScoreSDE (``SDE.sampling_eps``: VP and sub-VP 1e-3,
VE 1e-5), below which the score is least accurate and the ODE stiffest; the SDE samplers return
the mean of their last step (noise removal) and the few-step solvers end with Tweedie's
denoiser D(x; sigma(eps)).

Predictors and correctors are small registered step functions; one ``tf.function`` per
sampler runs the whole loop in the graph over ``tf.range(steps)``, seeding step i with
``fold_in(seed, i)``.  Noise (the prior's draw and every step's) is keyed by sample index
(``seeds.row_normal``: sample j of a seed is a function of (seed, j) alone), and the Langevin
step size uses per-example norms, so a given seed gives the same samples whatever the batch
size, the chunks they are drawn in (``first``: the index of a call's first sample) or the
replicas they are split over.  Every sampler takes any prior (``sample(n, seed, first=...)``)
and any score function ``score_fn(x, t)``.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow as tf

from shortdiff_tf import distribute, few_step, flow, ode, registry
from shortdiff_tf.sde import SDE, bcast, reverse_drift
from shortdiff_tf.seeds import as_seed, row_normal, split

PREDICTORS = registry.Registry("predictor")
CORRECTORS = registry.Registry("corrector")
METHODS = ("pc", "ode", *few_step.SOLVERS)


def _per_example_norm(v):
    return tf.sqrt(tf.reduce_sum(tf.square(v), axis=tf.range(1, tf.rank(v))))


def noise_like(x, seed, first):
    """z ~ N(0, I) of x's shape, row j keyed by sample index first + j (``seeds.row_normal``)."""
    return row_normal(tf.shape(x)[0], x.shape[1:], seed, first, x.dtype)


@PREDICTORS.register("euler_maruyama")
def euler_maruyama(sde, score_fn, x, t, t_next, seed, first=0):
    """x' = x + [f - g^2 s] dt + g sqrt(-dt) z,  dt = t_next - t < 0  (eq. 6)."""
    dt = bcast(t_next - t, x)
    _, g = sde.drift_diffusion(x, t)
    x_mean = x + reverse_drift(sde, score_fn, x, t) * dt
    return x_mean + bcast(g, x) * tf.sqrt(-dt) * noise_like(x, seed, first), x_mean


@PREDICTORS.register("reverse_diffusion")
def reverse_diffusion(sde, score_fn, x, t, t_next, seed, first=0):
    """Reverse of the exact forward kernel x_t = alpha x_t' + G z (ScoreSDE's predictor):
    x' = x - (alpha - 1) x + G^2 s + G z."""
    alpha, G2 = sde.transition(t_next, t)
    x_mean = x - bcast(alpha - 1.0, x) * x + bcast(G2, x) * score_fn(x, t)
    return x_mean + bcast(tf.sqrt(G2), x) * noise_like(x, seed, first), x_mean


@PREDICTORS.register("none")
def no_predictor(sde, score_fn, x, t, t_next, seed, first=0):
    return x, x


@CORRECTORS.register("langevin")
def langevin(sde, score_fn, x, t, t_next, seed, snr, n_steps, first=0):
    """Langevin steps at fixed t (Song et al. 2021, Alg. 4) with a per-example step size

        eps_i = min(2 alpha (snr |z_i| / |s_i|)^2,  2 alpha snr^2 s_t),

    alpha = 1 - beta_i (VP) or 1 (VE).  ScoreSDE's rule uses batch-mean norms, which couples
    the examples of a batch; per example it is unbounded where |s_i| ~ 0 (low dimension),
    so it is capped by the step that a pure-noise score |s| = |z| / sqrt(s_t) gives.
    """
    alpha, _ = sde.transition(t_next, t)
    cap = 2.0 * alpha**2 * snr**2 * sde.variance(t)
    x_mean = x
    for j in range(n_steps):
        grad = score_fn(x, t)
        z = noise_like(x, split(seed, j), first)
        ratio = _per_example_norm(z) / tf.maximum(_per_example_norm(grad), 1e-30)
        step = tf.minimum(2.0 * alpha**2 * (snr * ratio) ** 2, cap)
        x_mean = x + bcast(step, x) * grad
        x = x_mean + bcast(tf.sqrt(2.0 * step), x) * z
    return x, x_mean


@CORRECTORS.register("none")
def no_corrector(sde, score_fn, x, t, t_next, seed, snr, n_steps, first=0):
    return x, x


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How to sample; ``steps=None`` means a fixed step of ``step_size``: 1000 T steps at 1e-3."""
    method: str = "pc"
    predictor: str = "euler_maruyama"
    corrector: str = "none"
    snr: float = 0.16
    corrector_steps: int = 1
    denoise: bool = True
    steps: Optional[int] = None
    step_size: float = 1e-3
    rtol: float = 1e-5
    atol: float = 1e-5
    temperature: float = 1.0
    eps: Optional[float] = None          # where sampling stops  [default: the SDE's sampling_eps]

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown sampling method {self.method!r}; choose one of {', '.join(METHODS)}")
        PREDICTORS.get(self.predictor), CORRECTORS.get(self.corrector)
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1; got {self.steps}")
        if not (self.rtol > 0 and self.atol > 0):
            raise ValueError("rtol and atol must be > 0")
        if self.eps is not None and not 0 < self.eps < 1:
            raise ValueError(f"the sampling eps must be in (0, 1); got {self.eps}")

    def nfe_per_step(self) -> int:
        """Score evaluations per step of the PC loop."""
        predictor = 0 if self.predictor == "none" else 1
        return predictor + (0 if self.corrector == "none" else self.corrector_steps)


PRESETS = {
    "em": SamplerConfig(method="pc", predictor="euler_maruyama", corrector="none"),
    "pc": SamplerConfig(method="pc", predictor="reverse_diffusion", corrector="langevin"),
    "ode": SamplerConfig(method="ode"),
    **{name: SamplerConfig(method=name, steps=n) for name, n in few_step.DEFAULT_STEPS.items()},
}


def nfe_per_step(cfg: SamplerConfig):
    """(score evaluations per step, extra evaluations per call) of a fixed-step sampler: NFE =
    per_step * steps + extra (the few-step solvers' denoising step is the extra one)."""
    if cfg.method in few_step.SOLVERS:
        return few_step.NFE_PER_STEP[cfg.method], int(cfg.denoise)
    return cfg.nfe_per_step(), 0


def steps_for_nfe(name: str, nfe: int) -> int:
    """The steps of preset ``name`` that spend at most ``nfe`` score evaluations (one step at
    least); the adaptive ode sampler has no budget."""
    if name == "ode":
        raise ValueError("the ode sampler chooses its own steps: drop --nfe (or use em, pc, heun or dpm2m)")
    per_step, extra = nfe_per_step(preset(name))
    return max(1, (nfe - extra) // per_step)


def preset(name: str, steps: Optional[int] = None, snr: Optional[float] = None,
           temperature: float = 1.0, eps: Optional[float] = None, rtol: Optional[float] = None,
           atol: Optional[float] = None) -> SamplerConfig:
    """A named preset (em, pc, ode, heun, dpm2m) with overrides (``rtol``/``atol``: the ode sampler)."""
    if name not in PRESETS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[name]
    cfg = dataclasses.replace(base, steps=steps or base.steps, temperature=temperature, eps=eps,
                              rtol=rtol or base.rtol, atol=atol or base.atol)
    return dataclasses.replace(cfg, snr=snr) if snr is not None else cfg


@dataclasses.dataclass(frozen=True)
class SampleResult:
    """Samples at eps (x_mean of the last step when denoising) and the number of score calls."""
    x: tf.Tensor
    nfe: int


class Sampler:
    """Draws x_T from a prior and runs the reverse process from T to eps in one tf.function."""

    def __init__(self, sde: SDE, score_fn, prior, config: SamplerConfig = SamplerConfig(), jit: bool = False,
                 strategy=None):
        """``jit``: XLA-compile the sampling loop (em, pc, heun, dpm2m) or the score function
        that the adaptive ODE solver calls (ode).  ``strategy``: split the samples over its
        replicas (``_replicated``)."""
        self.strategy = distribute.multi_replica(strategy)
        eps = config.eps if config.eps is not None else sde.sampling_eps
        if not eps < sde.T:
            raise ValueError(f"the sampling eps {eps:g} must be below T={sde.T:g}")
        self.sde = sde.with_interval(eps=eps)
        self.score_fn, self.prior, self.config, self.jit = score_fn, prior, config, jit
        if jit and config.method == "ode":
            self.score_fn = tf.function(score_fn, jit_compile=True)
        loop_jit = True if jit else None
        self._predictor = PREDICTORS.get(config.predictor)
        self._corrector = CORRECTORS.get(config.corrector)
        self._pc = tf.function(self._pc_loop, jit_compile=loop_jit)
        self._ode = tf.function(self._ode_solve, autograph=False)
        self._few = tf.function(lambda x, steps: few_step.SOLVERS[config.method](
            self.sde, self.score_fn, x, steps, config.denoise), jit_compile=loop_jit)

    def default_steps(self) -> int:
        return self.config.steps or self.sde.default_steps(self.config.step_size)

    def planned_nfe(self, steps: Optional[int] = None) -> Optional[int]:
        """The score evaluations a call will make; None for the adaptive ODE."""
        if self.config.method == "ode":
            return None
        per_step, extra = nfe_per_step(self.config)
        return per_step * int(steps or self.default_steps()) + extra

    def __call__(self, num_samples: int, seed, steps: Optional[int] = None, x_T=None, first: int = 0) -> SampleResult:
        """Samples first, ..., first + num_samples - 1 of ``seed`` (``first``: a chunk's offset)."""
        seed, first = as_seed(seed), tf.constant(first, tf.int64)
        x_T = (self.draw_prior(tf.constant(num_samples, tf.int32), seed, first) if x_T is None
               else tf.convert_to_tensor(x_T))
        steps = tf.constant(int(steps or self.default_steps()), tf.int32)
        try:
            x, nfe = (self._reverse(x_T, seed, steps, first) if self.strategy is None
                      else self._replicated(x_T, seed, steps, first))
        except tf.errors.InvalidArgumentError as err:
            raise ode.explain(err) from None
        return SampleResult(x, int(nfe))

    def draw_prior(self, num_samples, seed, first=0):
        """x_T ~ prior (at the configured temperature) from the seed's first child, sample j of
        the call keyed by index first + j."""
        return self.prior.sample(num_samples, split(seed, 0), temperature=self.config.temperature, first=first)

    def run(self, num_samples, seed, steps):
        """Graph-safe form of ``__call__`` (int32 tensors in; (x, nfe int32) out), the same draws
        for the same seed.  Used inside exported SavedModels."""
        seed, first = as_seed(seed), tf.constant(0, tf.int64)
        return self._reverse(self.draw_prior(num_samples, seed, first), seed, tf.cast(steps, tf.int32), first)

    def _replicated(self, x_T, seed, steps, first):
        """Data parallel: the x_T one device would draw, split into near-equal shares; replica k
        reverses its share, its noise keyed by its samples' indices: one device's samples."""
        n, r = int(x_T.shape[0]), self.strategy.num_replicas_in_sync
        bounds = [k * n // r for k in range(r + 1)]
        shares = [(x_T[bounds[k]:bounds[k + 1]], first + bounds[k]) for k in range(r)]
        x, nfe = zip(*distribute.run_per_replica(self.strategy, lambda x, f: self._reverse(x, seed, steps, f), shares))
        return tf.concat(x, 0), tf.reduce_max(tf.stack(nfe))

    def _reverse(self, x_T, seed, steps, first):
        """From x_T at T to eps; the ODE ignores ``steps``. -> (x, nfe int32)."""
        if self.config.method == "ode":
            x, nfe = self._ode(x_T)
            return x, tf.cast(nfe, tf.int32)
        if self.config.method in few_step.SOLVERS:
            return self._few(x_T, steps)
        return self._pc(x_T, split(seed, 1), steps, first), steps * self.config.nfe_per_step()

    def _pc_loop(self, x, seed, steps, first):
        """Corrector then predictor at each t_i of the grid T = t_0 > ... > t_n = eps."""
        ts = self.sde.time_grid(steps, x.dtype)
        ones = tf.ones(tf.shape(x)[:1], x.dtype)
        x_mean = x
        cfg = self.config
        for i in tf.range(steps):
            t, t_next = ts[i] * ones, ts[i + 1] * ones
            seed_i = split(seed, i)
            x, x_mean = self._corrector(self.sde, self.score_fn, x, t, t_next, split(seed_i, 0),
                                        cfg.snr, cfg.corrector_steps, first)
            x, x_mean = self._predictor(self.sde, self.score_fn, x, t, t_next, split(seed_i, 1), first)
        return x_mean if cfg.denoise else x

    def _ode_solve(self, x_T):
        """Probability-flow ODE dx/dt = f - g^2 s / 2 from T to eps (adaptive RK45)."""
        return flow.push(self.sde, self.score_fn, x_T, self.sde.T, self.sde.eps, self.config.rtol, self.config.atol)


def reporting(score_fn, on_call):
    """``score_fn`` that first calls ``on_call(t)`` on the host (t: the evaluation's time), for a
    progress line while sampling.  A host callback cannot be saved: exported graphs never use it."""
    def fn(x, t):
        tick = tf.py_function(lambda t_: (on_call(float(t_)), 0)[1], [tf.reshape(t, [-1])[0]], tf.int32)
        with tf.control_dependencies([tick]):
            return score_fn(tf.identity(x), t)
    return fn


def sample(sde, score_fn, prior, num_samples, seed, config: SamplerConfig = SamplerConfig(),
           steps=None) -> SampleResult:
    """One-shot convenience wrapper around ``Sampler``."""
    return Sampler(sde, score_fn, prior, config)(num_samples, seed, steps=steps)

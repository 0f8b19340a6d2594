"""``choose-T --method ascent``: the paper's App. H at image scale.  T is a trainable scalar,

  T = eps + (T_max - eps) sigmoid(u),

that ascends, jointly with the Glow's parameters phi, an unbiased per-image estimate of

  L_phi(s, T) = E log nu_phi(x_T) - I(s, T) + R(T)                 (nats; ``elbo.elbo_draws``)

for the run's score model s_theta (trained at T_max, reused on [eps, T] and never updated).  t
is drawn with log rho_t uniform on [log rho_eps, log rho_T] and x_T = m_T x_0 + sqrt(s_T) e, so
every draw is a differentiable function of T: dL/dT balances the score's error at T against how
well nu_phi fits p(x, T) there.  Each step draws a batch of dequantised training images (image i
of step k is a stateless function of the seed, k and i), one (t, e, x_T) per image, and takes one
Adam step in u and one clipped Adam step in phi.  The state (phi, u, both optimisers, the step)
is checkpointed every ``checkpoint_every`` steps in RUN/ascent/, so a killed ascent resumes.

T* is the mean T over the last quarter of the path.  The flow at the end, fitted where T ended
(T_end), is written as RUN/views/T<T_end>-ascent/prior (calibrated like every fit), ready for
``sample``, ``evaluate`` and ``export``; RUN/choose_T_ascent.json holds the path, T* and, when
``choose-T`` searched the run, the search's T* beside it.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from shortdiff_tf import checkpoints, data as data_lib, elbo as elbo_lib, optim, pixels
from shortdiff_tf.app.runs import load_run
from shortdiff_tf.config import PriorConfig
from shortdiff_tf.files import atomic_write_json, read_json
from shortdiff_tf.preemption import Preempted, never
from shortdiff_tf.prior_fit import store
from shortdiff_tf.seeds import split
from shortdiff_tf.views import make_view
from shortdiff_tf.study.optimal_T import T_of, u_of


@dataclasses.dataclass(frozen=True)
class AscentConfig:
    T_init: Optional[float] = None          # None: T_max / 2
    steps: int = 2000
    batch_size: int = 32
    lr_T: float = 0.01
    lr_phi: float = 1e-3
    warmup: int = 100                       # phi's learning-rate warm-up
    grad_clip: float = 100.0
    seed: int = 0
    glow_levels: int = 0
    glow_steps_per_level: int = 4
    glow_hidden: int = 64
    checkpoint_every: int = 100
    record_every: int = 10


def ascend(run_dir, cfg: AscentConfig = AscentConfig(), log=print, should_stop=never) -> dict:
    """The module docstring's ascent on RUN; -> the report written to RUN/choose_T_ascent.json."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    sde = run.sde()                                                   # T_max, eps
    T_init = cfg.T_init or sde.T / 2
    if not sde.eps < T_init < sde.T:
        raise ValueError(f"--T-init {T_init:g} must lie in (eps, T_max = {sde.T:g})")
    images = data_lib.load(run.cfg.data.dataset, "train", run.cfg.data.data_dir).array
    pcfg = PriorConfig(kind="glow", T=T_init, levels=cfg.glow_levels, steps_per_level=cfg.glow_steps_per_level,
                       hidden=cfg.glow_hidden, seed=cfg.seed)
    state = _State(run_dir, run, sde, pcfg, cfg, images, T_init, log)
    step_fn = _make_step(sde, run.score_fn(), state, cfg)
    start, path, t0 = int(state.step.numpy()), state.path, time.perf_counter()
    log(f"ascending L_phi in T from T={float(T_of(state.u, sde.eps, sde.T)):.4f} jointly with the Glow, steps "
        f"{start} to {cfg.steps}")
    for i in range(start, cfg.steps):
        L, T = step_fn(_batch(images, cfg, i), split(cfg.seed, 10**6 + i))
        if (i + 1) % cfg.record_every == 0 or i + 1 == cfg.steps:
            path.append([i + 1, float(T), float(L)])
        if (i + 1) % cfg.checkpoint_every == 0 or i + 1 == cfg.steps:
            state.save(i + 1)
        signum = should_stop()
        if signum:
            state.save(i + 1)
            raise Preempted(int(signum), f"saved the ascent at step {i + 1} in {state.dir}; rerun the same command "
                                         f"to resume")
    return _report(run_dir, run, sde, state, cfg, T_init, time.perf_counter() - t0, log)


class _State:
    """phi (a Glow), u, their optimisers, the step and the recorded path: restored from
    RUN/ascent/ when a checkpoint is there, else a new Glow warm-started from the nearest fitted T."""

    def __init__(self, run_dir: Path, run, sde, pcfg: PriorConfig, cfg: AscentConfig, images, T_init, log):
        import keras
        keras.utils.set_random_seed(cfg.seed)
        self.dir, self.prior, self.settings = run_dir / "ascent", store.build_glow(pcfg, run.shape), _settings(cfg, T_init)
        self.u = tf.Variable(u_of(T_init, sde.eps, sde.T), dtype=tf.float64, name="u")
        self.opt_T, self.opt_phi = keras.optimizers.Adam(cfg.lr_T), optim.adam(cfg.lr_phi, cfg.warmup)
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
        x0 = pixels.to_model_space(images[: 4 * cfg.batch_size], split(cfg.seed, 1))
        self.prior.initialize(sde.perturb(x0, tf.fill(tf.shape(x0)[:1], T_init), tf.random.stateless_normal(
            tf.shape(x0), split(cfg.seed, 2))))                                           # data-dependent ActNorm
        self.opt_T.build([self.u])
        self.opt_phi.build(self.prior.trainable_variables)
        ckpt = tf.train.Checkpoint(prior=self.prior, u=self.u, opt_T=self.opt_T, opt_phi=self.opt_phi, step=self.step)
        self.manager = tf.train.CheckpointManager(ckpt, str(self.dir / "checkpoints"), max_to_keep=2)
        latest = checkpoints.newest_complete(self.dir / "checkpoints")
        self.path = []
        if latest:
            checkpoints.restore(ckpt, latest, what="ascent")
            kept = read_json(self.dir / "path.json", f"delete {self.dir} to ascend again")
            if kept["settings"] != _settings(cfg, T_init):
                raise ValueError(f"{self.dir} holds an ascent with other settings ({kept['settings']}); rerun with "
                                 f"them, or delete {self.dir} to ascend again")
            self.path = [p for p in kept["path"] if p[0] <= int(self.step.numpy())]
            self.warm_start = kept["warm_start_from"]
            log(f"resuming the ascent from {latest}")
        else:
            self._warm_start(run_dir, T_init, log)

    def _warm_start(self, run_dir: Path, T_init: float, log) -> None:
        views = [v for v in (run_dir / "views").glob("T*") if not v.name.endswith(("-ascent", "-ode"))]
        fitted = [(abs(pcfg.T - T_init), v) for v in views for pcfg in [store.load_config(v)]
                  if pcfg is not None and pcfg.kind == "glow" and pcfg.target == "sde"]
        for _, view in sorted(fitted):
            ckpt = checkpoints.newest_complete(store.prior_dir(view) / "checkpoints")
            if ckpt:
                try:
                    checkpoints.restore(tf.train.Checkpoint(prior=self.prior), ckpt, partial=True, what="prior")
                except ValueError:                        # another Glow architecture: try the next
                    continue
                log(f"warm start from {ckpt}")
                self.warm_start = str(ckpt)
                return
        self.warm_start = None

    def save(self, step: int) -> None:
        self.step.assign(step)
        checkpoints.save(self.manager, step)
        atomic_write_json(self.dir / "path.json", {"path": self.path, "warm_start_from": self.warm_start,
                                                   "settings": self.settings})


def _settings(cfg: AscentConfig, T_init: float) -> dict:
    """What a resumed ascent must share with the one it resumes (more --prior-steps continue it)."""
    keep = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("steps", "checkpoint_every", "record_every")}
    return {**keep, "T_init": T_init}


def _batch(images: np.ndarray, cfg: AscentConfig, i: int):
    """Step i's dequantised images: a seeded permutation of the training set, read in order."""
    order = np.random.RandomState(cfg.seed).permutation(len(images))
    idx = order[(i * cfg.batch_size + np.arange(cfg.batch_size)) % len(images)]
    return pixels.to_model_space(images[idx], split(cfg.seed, 2 * i + 3))


def _make_step(sde, score, state: _State, cfg: AscentConfig):
    phi = list(state.prior.trainable_variables)

    @tf.function
    def step(x0, seed):
        with tf.GradientTape() as tape:
            T = T_of(state.u, sde.eps, sde.T)
            draws = elbo_lib.elbo_draws(sde, score, x0, seed, T=T, importance=True)
            log_q = tf.reduce_mean(elbo_lib.draw_log_prob(state.prior, draws.x_T, tf.float32), 0)
            L = tf.reduce_mean(draws.elbo(log_q))
            loss = -L                                     # inside the tape: recorded
        grads = tape.gradient(loss, [state.u] + phi)
        state.opt_T.apply_gradients([(grads[0], state.u)])
        optim.clipped_apply(state.opt_phi, grads[1:], phi, cfg.grad_clip)
        return L, T

    return step


def _report(run_dir: Path, run, sde, state: _State, cfg: AscentConfig, T_init: float, seconds: float, log) -> dict:
    from shortdiff_tf.app.fit_prior import calibrate_fitted
    dim = math.prod(run.shape)
    tail = [T for _, T, _ in state.path[len(state.path) * 3 // 4:]]
    T_end = round(float(T_of(state.u, sde.eps, sde.T)), 4)
    view = make_view(run_dir, run_dir, T_end, "-ascent")
    pcfg = PriorConfig(kind="glow", T=T_end, steps=cfg.steps, levels=cfg.glow_levels,
                       steps_per_level=cfg.glow_steps_per_level, hidden=cfg.glow_hidden, seed=cfg.seed)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(prior=state.prior), str(store.prior_dir(view) / "checkpoints"),
                                         max_to_keep=1)
    checkpoints.save(manager, cfg.steps)
    store.save_config(view, pcfg)
    calibration = calibrate_fitted(load_run(view), run.sde(T_end), view, log)
    search = run_dir / "choose_T.json"
    searched = read_json(search, f"rerun `shortdiff choose-T --workdir {run_dir}`") if search.exists() else None
    report = {"run": str(run_dir), "method": "ascent", "T_max": sde.T, "eps": sde.eps, "T_init": T_init,
              "T_star": float(np.mean(tail)), "T_star_std": float(np.std(tail)), "T_end": T_end, "view": str(view),
              "calibration": {k: calibration[k] for k in ("use", "reason", "nll_gain_per_dim", "nll_gain_sem")},
              "warm_start_from": state.warm_start, "steps": cfg.steps,
              "batch_size": cfg.batch_size, "lr_T": cfg.lr_T, "lr_phi": cfg.lr_phi, "seconds": seconds,
              "objective": "L_phi per image, nats (path: [step, T, L]); bits/dim bound = -L / (D ln 2) + offset",
              "dim": dim, "path": state.path,
              "search": ({k: searched.get(k) for k in ("T_star", "T_best", "metric", "sampler", "tolerance")}
                         if searched else None)}
    atomic_write_json(run_dir / "choose_T_ascent.json", report)
    report["summary"] = str(run_dir / "choose_T_ascent.json")
    return report

"""Fitting the auxiliary prior nu_phi at T by maximum likelihood (paper Sec. 3, METHOD.md section 4).

  max_phi E_{x_0, e} log nu_phi(m_T x_0 + sqrt(s_T) e)       (target "sde": fresh e every batch)
  max_phi E_{x_0} log nu_phi(Phi_theta(x_0))                   (target "ode": the PF-ODE image at T,
                                                                 our reading of the paper's (S) rows)

phi and theta share no term, so this runs after (or beside) score training, on the same
run directory: ``RUN/prior/config.json`` and ``RUN/prior/checkpoints`` (Glow) or
``RUN/prior/mixture.json`` (gaussian, gmm, dpgmm).  ``T`` may be shorter than the run's T
(the paper's "varying T"): sampling and evaluation then run from that T.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from shortdiff_tf import checkpoints, data as data_lib, distribute, ode, training
from shortdiff_tf.config import RunConfig
from shortdiff_tf.priors import GaussianMixture, GaussianPrior
from shortdiff_tf.priors.glow import GlowPrior
from shortdiff_tf.progress import Progress
from shortdiff_tf.runs import Run, load_run
from shortdiff_tf.sde import reverse_drift

KINDS = ("glow", "gaussian", "gmm", "dpgmm")
TARGETS = ("sde", "ode")


@dataclass(frozen=True)
class PriorConfig:
    kind: str = "glow"
    T: float = 1.0
    target: str = "sde"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    grad_clip: float = 100.0
    seed: int = 0
    levels: int = 0                    # glow: 0 = by image size
    steps_per_level: int = 4
    hidden: int = 64
    components: int = 10               # gmm (dpgmm: the truncation level)
    weight_threshold: float = 0.01     # dpgmm: a component counts when its weight exceeds this
    dp_concentration: float = 0.01     # dpgmm: Dirichlet-process concentration (small: few components)
    num_fit_samples: int = 20000       # gaussian / gmm / dpgmm: diffused points to fit on
    checkpoint_every: int = 500
    log_every: int = 50

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown prior {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")


def prior_dir(run_dir) -> Path:
    return Path(run_dir) / "prior"


def build_glow(pcfg: PriorConfig, shape) -> GlowPrior:
    return GlowPrior(shape, pcfg.levels, pcfg.steps_per_level, pcfg.hidden)


# ---- targets at T ------------------------------------------------------------------------
def ode_targets(run: Run, T: float, array: np.ndarray, seed: int, batch: int = 256) -> np.ndarray:
    """z = Phi_theta(x_0): the PF-ODE from eps to T applied to dequantised training data."""
    sde, score = run.sde(T), run.score_fn(T)

    @tf.function
    def push(x):
        ones = tf.ones(tf.shape(x)[:1], x.dtype)
        fn = lambda t, y: reverse_drift(sde, score, y, t * ones, ode=True)
        return ode.solve(fn, sde.eps, sde.T, x)[0]

    out = []
    for i in range(0, len(array), batch):
        chunk = array[i: i + batch]
        x = chunk.astype(np.float32) if chunk.dtype != np.uint8 else data_lib.dequantize(
            tf.constant(chunk), tf.random.stateless_uniform(chunk.shape, [seed, i]))
        out.append(push(tf.convert_to_tensor(x, tf.float32)).numpy())
    return np.concatenate(out)


def diffused_sample(run: Run, T: float, array: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n points x_T = m_T x_0 + sqrt(s_T) e (x_0 drawn with replacement, dequantised)."""
    sde = run.sde(T)
    idx = np.random.RandomState(seed).randint(0, len(array), n)
    x0 = array[idx]
    if x0.dtype == np.uint8:
        x0 = data_lib.dequantize(tf.constant(x0), tf.random.stateless_uniform(x0.shape, [seed, 1])).numpy()
    e = tf.random.stateless_normal(x0.shape, [seed, 2]).numpy()
    t = tf.fill([n], sde.T)
    return sde.perturb(tf.constant(x0, tf.float32), t, tf.constant(e)).numpy()


# ---- closed-form and scikit-learn priors ----------------------------------------------------
def fit_closed_form(pcfg: PriorConfig, points: np.ndarray):
    """gaussian: ML diagonal Gaussian; gmm: EM mixture; dpgmm: variational Dirichlet-process mixture."""
    if pcfg.kind == "gaussian":
        return GaussianPrior(points.shape[1:], std=points.std(0) + 1e-6, mean=points.mean(0)), {}
    if points.ndim != 2:
        raise ValueError(f"the {pcfg.kind} prior is for toy vectors; use --prior glow or gaussian for images")
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture as SkGMM
    with warnings.catch_warnings():                 # convergence is reported, not warned about
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = _fit_sklearn(pcfg, points, BayesianGaussianMixture, SkGMM)
    w = sk.weights_ / sk.weights_.sum()
    effective = effective_components(w, pcfg.weight_threshold)
    info = {"converged": bool(sk.converged_), "iterations": int(sk.n_iter_)}
    if pcfg.kind == "dpgmm":
        info["effective_components"] = effective
    return GaussianMixture(w, sk.means_, sk.covariances_), info


def effective_components(weights, threshold: float) -> int:
    """Components of a mixture whose weight exceeds ``threshold`` (paper Fig. 4)."""
    return int(np.sum(np.asarray(weights) > threshold))


def _fit_sklearn(pcfg, points, BayesianGaussianMixture, SkGMM):
    if pcfg.kind == "gmm":
        sk = SkGMM(pcfg.components, covariance_type="full", random_state=pcfg.seed).fit(points)
    else:
        # converged variational fit: with sklearn's default tol/max_iter the unused components
        # are not pruned and the count does not reflect the data's complexity
        sk = BayesianGaussianMixture(n_components=pcfg.components, covariance_type="full", max_iter=2000,
                                     tol=1e-5, weight_concentration_prior_type="dirichlet_process",
                                     weight_concentration_prior=pcfg.dp_concentration,
                                     random_state=pcfg.seed).fit(points)
    return sk


def save_mixture(path: Path, prior) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(prior.get_config()))
    tmp.replace(path)


def prior_from_config(cfg: dict):
    kind = cfg.get("kind")
    if kind == "gaussian":
        return GaussianPrior(cfg["event_shape"], std=cfg["std"], mean=cfg["mean"])
    if kind == "gmm":
        return GaussianMixture(cfg["weights"], cfg["means"], cfg["covs"])
    raise ValueError(f"unknown stored prior kind {kind!r}")


# ---- fit ---------------------------------------------------------------------------------
def fit_prior(run_dir, pcfg: PriorConfig, strategy=None, progress: bool = True, log=print,
              stop_after: Optional[int] = None) -> dict:
    """Fit nu_phi at T and store it under RUN/prior (Glow: resumable, like training)."""
    run = load_run(run_dir)
    run.sde(pcfg.T)                                           # T <= the run's T, before writing
    if pcfg.kind == "glow" and len(run.shape) != 3:
        raise ValueError("the Glow prior is for images; use --prior dpgmm, gmm or gaussian for toy data")
    if pcfg.kind in ("gmm", "dpgmm") and len(run.shape) != 1:
        raise ValueError(f"the {pcfg.kind} prior is for toy vectors; use --prior glow or gaussian for images")
    out = prior_dir(run_dir)
    if (out / "config.json").exists():
        saved = PriorConfig(**json.loads((out / "config.json").read_text()))
        if dataclasses.replace(saved, steps=pcfg.steps) != pcfg:
            raise ValueError(f"{out} holds a {saved.kind} prior fitted at T={saved.T} with other settings; "
                             f"delete {out} to fit a new one")
    array = data_lib.load(run.cfg.data.dataset, "train", run.cfg.data.data_dir).array
    start = time.perf_counter()
    if pcfg.kind != "glow":
        points = (ode_targets(run, pcfg.T, array, pcfg.seed) if pcfg.target == "ode"
                  else diffused_sample(run, pcfg.T, array, pcfg.num_fit_samples, pcfg.seed))
        prior, extra = fit_closed_form(pcfg, points)
        out.mkdir(parents=True, exist_ok=True)
        save_mixture(out / "mixture.json", prior)
        _save_config(out, pcfg)
        ll = float(tf.reduce_mean(prior.log_prob(tf.constant(points[:5000], tf.float64))))
        return {"kind": pcfg.kind, "T": pcfg.T, "target": pcfg.target, "log_prob": ll, **extra,
                "seconds": time.perf_counter() - start, "prior_dir": str(out)}
    return _fit_glow(run, pcfg, array, out, strategy or tf.distribute.get_strategy(), progress, log, stop_after)


def _save_config(out: Path, pcfg: PriorConfig):
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(dataclasses.asdict(pcfg), indent=2))
    tmp.replace(out / "config.json")


def _glow_state(pcfg, shape, strategy):
    import keras
    with strategy.scope():
        keras.utils.set_random_seed(pcfg.seed)          # the coupling networks' initial weights
        prior = build_glow(pcfg, shape)
        opt = keras.optimizers.Adam(training.WarmUp(pcfg.lr, pcfg.warmup))
        step = tf.Variable(0, dtype=tf.int64, trainable=False)
    return prior, opt, step


def _fit_glow(run, pcfg, array, out, strategy, progress, log, stop_after) -> dict:
    sde = run.sde(pcfg.T)
    source = ode_targets(run, pcfg.T, array, pcfg.seed) if pcfg.target == "ode" else array
    batch_fn = training.make_batch_fn(source, pcfg.batch_size, pcfg.seed + 7919, dequantize=True)

    def target(step):
        b = batch_fn(step)
        if pcfg.target == "ode":
            return b["x0"]
        return sde.perturb(b["x0"], tf.fill([pcfg.batch_size], sde.T), b["e"])   # fresh e every batch

    prior, opt, step = _glow_state(pcfg, run.shape, strategy)
    with strategy.scope():
        prior.initialize(target(tf.constant(0, tf.int64)))            # data-dependent ActNorm
        opt.build(prior.trainable_variables)
    ckpt = tf.train.Checkpoint(prior=prior, optimizer=opt, step=step)
    write = distribute.write_dir(out, strategy)          # RUN/prior, or a non-chief worker's scratch
    manager = tf.train.CheckpointManager(ckpt, str(write / "checkpoints"), max_to_keep=2)
    latest = tf.train.latest_checkpoint(str(out / "checkpoints"))                  # every worker: the chief's
    if latest:
        checkpoints.restore(ckpt, latest)
    elif write == out:
        out.mkdir(parents=True, exist_ok=True)
        _save_config(out, pcfg)
    step_fn = _make_glow_step(prior, opt, step, pcfg, strategy)
    try:
        result = _glow_loop(prior, opt, step, manager, step_fn, target, pcfg, write, strategy, progress, log,
                            stop_after)
    finally:
        if write != out:
            shutil.rmtree(write, ignore_errors=True)
    return {**result, "prior_dir": str(out)}


def _batches(target, begin: int, stop: int, strategy):
    """The global batch of each step, split across replicas (and workers) like training's."""
    ds = tf.data.Dataset.range(begin, stop).map(target)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(ds.with_options(options).prefetch(2))


def _make_glow_step(prior, opt, step, pcfg, strategy):
    variables = prior.trainable_variables

    def replica_step(x):
        with tf.GradientTape() as tape:
            nll = -prior.log_prob(x) / prior.dim                         # nats per dimension
            loss = tf.nn.compute_average_loss(nll, global_batch_size=pcfg.batch_size)
        grads = tape.gradient(loss, variables)
        total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        factor = tf.minimum(1.0, pcfg.grad_clip / (tf.linalg.global_norm(total) + 1e-12))
        opt.apply_gradients(zip([g * factor for g in grads], variables))
        return loss

    @tf.function
    def fn(x):
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, args=(x,)), axis=None)
        step.assign_add(1)
        return loss

    return fn


def _glow_loop(prior, opt, step, manager, step_fn, target, pcfg, out, strategy, progress, log, stop_after):
    begin = int(step.numpy())
    stop = pcfg.steps if stop_after is None else min(pcfg.steps, begin + stop_after)
    log(f"fitting a Glow prior ({sum(int(tf.size(v)) for v in prior.trainable_variables):,} parameters) at "
        f"T={pcfg.T:g} on the {pcfg.target} target, steps {begin} to {stop}")
    bar, t0 = Progress(stop, begin, enabled=progress), time.perf_counter()
    good, restores, loss = _snapshot(prior, opt), 0, float("nan")
    try:
        for i, x in zip(range(begin, stop), _batches(target, begin, stop, strategy)):
            loss = float(step_fn(x))
            if not math.isfinite(loss):                               # NaN guard: back to the last good state
                _restore(prior, opt, good)
                step.assign(i + 1)
                restores += 1
                log(f"non-finite loss at step {i + 1}; restored the state of the last good step")
                continue
            if (i + 1) % pcfg.log_every == 0 or i + 1 == stop:
                good = _snapshot(prior, opt)
                bpd = loss / math.log(2.0)
                _append(out / "metrics.jsonl", {"step": i + 1, "nll_per_dim": loss, "bits_per_dim_at_T": bpd,
                                                "wall_time": time.perf_counter() - t0, "restores": restores})
                bar.update(i + 1, f"nll {loss:.4f} nats/dim")
            if (i + 1) % pcfg.checkpoint_every == 0:
                manager.save(checkpoint_number=i + 1)
    finally:
        final = int(step.numpy())
        if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{final}"):
            manager.save(checkpoint_number=final)
        bar.close()
    return {"kind": "glow", "T": pcfg.T, "target": pcfg.target, "step": final, "nll_per_dim": loss,
            "restores": restores, "seconds": time.perf_counter() - t0, "prior_dir": str(out)}


def _snapshot(prior, opt):
    return [v.numpy() for v in prior.trainable_variables] + [v.numpy() for v in opt.variables]


def _restore(prior, opt, values):
    for v, val in zip(list(prior.trainable_variables) + list(opt.variables), values):
        v.assign(val)


def _append(path: Path, row: dict):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


# ---- load --------------------------------------------------------------------------------
def load_prior(run_dir):
    """-> (prior, PriorConfig) of a fitted auxiliary prior, or None when the run has none."""
    out = prior_dir(run_dir)
    if not (out / "config.json").exists():
        return None
    pcfg = PriorConfig(**json.loads((out / "config.json").read_text()))
    if pcfg.kind != "glow":
        path = out / "mixture.json"
        try:
            return prior_from_config(json.loads(path.read_text())), pcfg
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"cannot read the prior {path} ({type(err).__name__}); refit it with "
                             f"`shortdiff fit-prior`") from None
    prior = build_glow(pcfg, RunConfig.load(run_dir).data.shape)
    path = tf.train.latest_checkpoint(str(out / "checkpoints"))
    if path is None:
        raise FileNotFoundError(f"{out} has no Glow checkpoint; refit it with `shortdiff fit-prior`")
    checkpoints.restore(tf.train.Checkpoint(prior=prior), path, partial=True)
    return prior, pcfg


PRIOR_CHOICES = ("auto", "aux", "noise")


def resolve_prior(run: Run, choice: str = "auto", T: Optional[float] = None):
    """-> (prior, T, name): the fitted auxiliary prior ('aux', from the T it was fitted at) or
    p_noise at T ('noise'); 'auto' takes the auxiliary prior when the run has one."""
    if choice not in PRIOR_CHOICES:
        raise ValueError(f"unknown prior choice {choice!r}; choose one of {', '.join(PRIOR_CHOICES)}")
    fitted = load_prior(run.run_dir) if choice != "noise" else None
    if choice == "aux" and fitted is None:
        raise FileNotFoundError(f"{run.run_dir} has no auxiliary prior; fit one with "
                                f"`shortdiff fit-prior --workdir {run.run_dir}` or use --prior noise")
    if fitted is None:
        sde = run.sde(T)
        return sde.prior(run.shape), sde.T, "noise"
    prior, pcfg = fitted
    if T is not None and abs(T - pcfg.T) > 1e-12:
        raise ValueError(f"the auxiliary prior was fitted at T={pcfg.T:g}, not T={T:g}; pass --T {pcfg.T:g}, "
                         f"refit it at T={T:g}, or use --prior noise")
    if list(getattr(prior, "event_shape", run.shape)) != list(run.shape):
        raise ValueError(f"the auxiliary prior's shape {list(prior.event_shape)} does not match the run's "
                         f"{list(run.shape)}; refit it with `shortdiff fit-prior`")
    return prior, pcfg.T, f"aux:{pcfg.kind}"

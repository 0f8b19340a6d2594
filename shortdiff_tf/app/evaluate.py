"""Evaluating a trained run: the exact PF-ODE log-likelihood (bits/dim for images) and the ELBO
with its terms, under p_noise and, when the run has one, the auxiliary prior, side by side."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from shortdiff_tf import data as data_lib, pixels, distribute, elbo as elbo_lib, likelihood
from shortdiff_tf.app.eval_store import EvalStore
from shortdiff_tf.app.runs import load_run, resolve_prior
from shortdiff_tf.files import atomic_write_json
from shortdiff_tf.preemption import Preempted, never
from shortdiff_tf.progress import BatchTicker, Progress
from shortdiff_tf.runlock import RunLock
from shortdiff_tf.seeds import split
from shortdiff_tf.stats import standard_error


def load_eval_data(run, dataset: Optional[str], split_name: str, num_examples: int, data_dir=None):
    cfg = run.cfg.data
    arr = data_lib.load(dataset or cfg.dataset, split_name, data_dir or cfg.data_dir).array
    if tuple(arr.shape[1:]) != run.shape:
        raise ValueError(f"data of shape {list(arr.shape[1:])} do not fit the model trained on "
                         f"{list(run.shape)}; evaluate on data of the trained shape")
    if num_examples < 1:
        raise ValueError(f"--num-examples must be >= 1; got {num_examples}")
    return arr[:num_examples]


def evaluate_run(run_dir, dataset: Optional[str] = None, split_name: str = "test", num_examples: int = 64,
                 batch_size: int = 32, rtol: float = 1e-5, atol: float = 1e-5, divergence: str = "hutchinson",
                 seed: int = 0, T: Optional[float] = None, data_dir: Optional[str] = None,
                 prior: str = "auto", progress: bool = False, elbo_draws: int = elbo_lib.DEFAULT_DRAWS,
                 control: str = "optimal", repeats: int = 1, precision: str = "fp32", jit: bool = False,
                 strategy=None, should_stop=never, store_dir=None, log=lambda *_: None,
                 per_example: bool = False, with_elbo: bool = True) -> dict:
    """PF-ODE log-likelihood per example (``repeats`` passes of one dequantisation and one
    Hutchinson probe each, averaged per example: ScoreSDE's protocol) with the chosen prior at T
    as the prior term, and the ELBO on the same examples with p_noise (L) and, when the run has
    one, the auxiliary prior (L_phi) from the same (t, e) draws.  With the auxiliary prior the
    likelihood under p_noise is reported too (``likelihood_noise``), from the same ODE solves.
    Each finished batch is kept under RUN/evaluations/ (``eval_store``): a rerun resumes.
    ``precision``: the score network's compute dtype; ``jit``: XLA for the ODE's right-hand side.
    ``strategy``: each likelihood batch is split over its replicas, and the ELBO's batches run one
    per replica.  ``store_dir``: where the batches are kept (default RUN/evaluations; another
    folder for a read-only run).  ``per_example``: each likelihood also lists every example's
    log p (``log_prob_per_example``, in data order: for paired comparisons); ``with_elbo``: False
    skips the ELBO."""
    replicas = distribute.replica_count(strategy)
    if batch_size % replicas:
        raise ValueError(f"--batch-size {batch_size} is not divisible by the {replicas} replicas; "
                         f"use a multiple of {replicas}")
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {repeats}")
    run = load_run(run_dir, precision)
    arr = load_eval_data(run, dataset, split_name, num_examples, data_dir)
    prior_obj, T, prior_name = resolve_prior(run, prior, T)
    sde, score = run.sde(T), run.score_fn(T)
    seeds = [repeat_seed(seed, r) for r in range(repeats)]
    xs = [pixels.to_model_space(arr, split(s, 0)) for s in seeds]    # one dequantisation per pass
    start = time.perf_counter()
    ticker = BatchTicker(enabled=progress)                       # within each batch: the solver's NFE so far
    est = likelihood.LikelihoodEstimator(sde, score, prior_obj, rtol, atol, divergence, jit=jit, strategy=strategy,
                                         on_evaluation=ticker if progress else None)
    store = EvalStore(store_dir or run.run_dir / "evaluations", {"dataset": dataset or run.cfg.data.dataset, "split": split_name,
                                    "num_examples": len(arr), "batch_size": batch_size, "rtol": rtol, "atol": atol,
                                    "divergence": divergence, "seed": seed, "T": sde.T, "prior": prior_name,
                                    "checkpoint_step": run.step, "data_dir": str(data_dir),
                                    **({} if precision == "fp32" and not jit else {"precision": precision, "jit": jit}),
                                    **({} if replicas == 1 else {"replicas": replicas})}, log=log)
    log(f"evaluating {len(arr)} examples of {store.settings['dataset']}/{split_name} at T={sde.T:g} (eps {sde.eps:g}), "
        f"prior {prior_name}, rtol {rtol:g}, atol {atol:g}, {divergence} divergence, {repeats} pass(es) in batches "
        f"of {batch_size}; batches kept in {store.dir}")
    bar = Progress(len(arr) * repeats, enabled=progress, unit=" examples", skip_first=False)
    with RunLock(store.dir / ".lock", "shortdiff evaluate"):
        store.open()
        done = [likelihood_pass(est, xs[r], seeds[r], r, batch_size, store, bar, should_stop, ticker)
                for r in range(repeats)]
    bar.close()
    passes = [d[0] for d in done]
    parts = [p for ps in passes for p in ps]
    report = {"dataset": dataset or run.cfg.data.dataset, "split": split_name, "num_examples": len(arr),
              "T": sde.T, "eps": sde.eps, "rtol": rtol, "atol": atol, "divergence": divergence, "repeats": repeats, "precision": precision, "jit": jit,
              "replicas": replicas,
              "nfe_mean": float(np.mean([p.nfe for p in parts])), "seconds": time.perf_counter() - start,
              "resumed_batches": sum(d[1] for d in done), "store": str(store.dir),
              "checkpoint_step": run.step, "prior": prior_name, "dim": math.prod(run.shape)}
    is_image = arr.dtype == np.uint8
    noise = sde.prior(run.shape)
    report["likelihood"] = likelihood_terms(average_passes(passes), is_image, per_example)
    priors = {"noise": noise}
    if prior_name != "noise":             # p_noise on the same ODE solves: a paired comparison
        report["likelihood_noise"] = likelihood_terms(average_passes([swap_prior(p, noise) for p in passes]), is_image,
                                                      per_example)
        priors["aux"] = prior_obj
    elbos = elbo_lib.elbos(sde, score, priors, xs[0], split(seed, 10**6), batch_size=batch_size, draws=elbo_draws,
                           control=control, strategy=strategy) if with_elbo else {}
    for name, e in elbos.items():
        report[f"elbo_{name}"] = {**e.as_dict(), **({"bpd_bound": e.bits_per_dim(pixels.RANGE)} if is_image else {})}
    if "aux" in elbos:
        gain = elbos["aux"].minus(elbos["noise"])
        report["elbo_aux_minus_noise"] = {"mean": gain.mean, "sem": gain.sem}
    if with_elbo:
        report["elbo"] = report["elbo_aux" if prior_name != "noise" else "elbo_noise"]
    report["summary"] = str(store.dir / "summary.json")
    atomic_write_json(store.dir / "summary.json", report)         # beside its batches
    return report


def repeat_seed(seed, r: int):
    """The seed of pass r: the evaluation's seed for the first, so one pass is the single-pass result."""
    return seed if r == 0 else split(seed, 2**20 + r)


def likelihood_pass(est, x, seed, repeat: int, batch_size: int, store: EvalStore, bar, should_stop=never,
                    ticker: BatchTicker = None) -> list:
    """One probe per example of the dequantised ``x``, batch by batch; stored batches are loaded,
    new ones are stored as they finish; a signal (``should_stop``) stops it between batches.
    ``ticker`` hears of each network evaluation within a batch. -> (batches, how many were loaded)."""
    n, parts, loaded, start = int(x.shape[0]), [], 0, time.perf_counter()
    ticker, per_pass = ticker or BatchTicker(enabled=False), -(-n // batch_size)
    for i in range(0, n, batch_size):
        if should_stop():
            raise Preempted(should_stop(), f"every finished batch is in {store.dir}; rerun the same command to resume")
        ll = store.load(repeat, i, est)
        loaded += ll is not None
        if ll is None:
            ticker.start(f"pass {repeat + 1}, examples {i + 1}-{min(i + batch_size, n)} of {n}",
                         batches_after=(bar.total // n) * per_pass - (repeat * per_pass + i // batch_size) - 1)
            ll = padded_call(est, x[i: i + batch_size], distribute.rounded_up(min(batch_size, n), est.strategy), split(seed, 1 + i))
            ticker.finish()
            store.save(repeat, i, ll)
        parts.append(ll)
        bar.update(repeat * n + min(i + batch_size, n),
                   f"PF-ODE likelihood, pass {repeat + 1}, NFE {ll.nfe}, {time.perf_counter() - start:.0f}s")
    return parts, loaded


def average_passes(passes) -> list:
    """Per batch, the mean over passes of each example's terms (x_T of the first pass)."""
    mean = lambda name, j: tf.reduce_mean(tf.stack([getattr(p[j], name) for p in passes]), 0)
    return [dataclasses.replace(passes[0][j], log_prob=mean("log_prob", j), prior_logp=mean("prior_logp", j),
                                delta_logp=mean("delta_logp", j),
                                nfe=int(round(np.mean([p[j].nfe for p in passes])))) for j in range(len(passes[0]))]


def padded_call(est, x, size: int, seed) -> likelihood.LogLikelihood:
    """The likelihood of a batch padded to ``size`` rows (copies of its last example) and cut back:
    every batch of an evaluation has one shape, so the solver is traced once."""
    n = int(x.shape[0])
    ll = est(distribute.pad_rows(x, size), seed=seed)
    return dataclasses.replace(ll, log_prob=ll.log_prob[:n], prior_logp=ll.prior_logp[:n],
                               delta_logp=ll.delta_logp[:n], x_T=ll.x_T[:n])


def swap_prior(parts, prior) -> list:
    """The same PF-ODE solves (x_T, delta log p) scored with another prior at T."""
    out = []
    for p in parts:
        lp = tf.cast(prior.log_prob(p.x_T), p.delta_logp.dtype)
        out.append(dataclasses.replace(p, prior_logp=lp, log_prob=lp + p.delta_logp))
    return out


def likelihood_terms(parts, is_image: bool, per_example: bool = False) -> dict:
    """Means and standard errors over all batches; for images the BitsPerDim terms as well."""
    ll = likelihood.concatenate(parts)
    out = {"log_prob": float(tf.reduce_mean(ll.log_prob)), "log_prob_sem": standard_error(ll.log_prob),
           "prior_logp": float(tf.reduce_mean(ll.prior_logp)), "delta_logp": float(tf.reduce_mean(ll.delta_logp))}
    if per_example:
        out["log_prob_per_example"] = [float(v) for v in ll.log_prob.numpy()]
    if is_image:
        b = likelihood.bits_per_dim(ll, data_range=pixels.RANGE).summary()
        out.update(bpd=b["bpd"], bpd_sem=b["bpd_sem"], bpd_prior_T=b["prior_T"], bpd_ode=b["ode"],
                   bpd_offset=b["offset"])
    return out

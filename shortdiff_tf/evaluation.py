"""Evaluating a trained run: exact PF-ODE bits/dim (or nats for toy data) and the ELBO with terms."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from shortdiff_tf import data as data_lib, elbo as elbo_lib, likelihood
from shortdiff_tf.aux_prior import resolve_prior
from shortdiff_tf.runs import load_run
from shortdiff_tf.seeds import as_seed, split


def load_eval_data(run, dataset: Optional[str], split_name: str, num_examples: int, data_dir=None):
    cfg = run.cfg.data
    arr = data_lib.load(dataset or cfg.dataset, split_name, data_dir or cfg.data_dir).array
    if tuple(arr.shape[1:]) != run.shape:
        raise ValueError(f"data of shape {list(arr.shape[1:])} do not fit the model trained on "
                         f"{list(run.shape)}; evaluate on data of the trained shape")
    if num_examples < 1:
        raise ValueError(f"--num-examples must be >= 1; got {num_examples}")
    return arr[:num_examples]


def to_model_space(arr, seed) -> tf.Tensor:
    """Uniformly dequantised, scaled images (or toy vectors as they are), float32; graph-safe."""
    arr = tf.convert_to_tensor(arr)
    if arr.dtype != tf.uint8:
        return tf.cast(arr, tf.float32)
    u = tf.random.stateless_uniform(tf.shape(arr), as_seed(seed))
    return data_lib.dequantize(arr, u)


def evaluate_run(run_dir, dataset: Optional[str] = None, split_name: str = "test", num_examples: int = 64,
                 batch_size: int = 32, rtol: float = 1e-5, atol: float = 1e-5, divergence: str = "hutchinson",
                 seed: int = 0, T: Optional[float] = None, data_dir: Optional[str] = None,
                 prior: str = "auto") -> dict:
    """PF-ODE log-likelihood per example (one dequantisation and one Hutchinson probe each) with the
    chosen prior at T as the prior term, and the ELBO on the same examples with p_noise (L) and,
    when the run has one, the auxiliary prior (L_phi) side by side.  With the auxiliary prior the
    likelihood under p_noise is reported too (``likelihood_noise``), from the same ODE solves."""
    run = load_run(run_dir)
    arr = load_eval_data(run, dataset, split_name, num_examples, data_dir)
    prior_obj, T, prior_name = resolve_prior(run, prior, T)
    sde = run.sde(T)
    score = run.score_fn(T)
    prior = prior_obj
    est = likelihood.LikelihoodEstimator(sde, score, prior, rtol, atol, divergence)
    x_all = to_model_space(arr, split(seed, 0))
    start, parts, nfes = time.perf_counter(), [], []
    for i in range(0, len(arr), batch_size):
        ll = est(x_all[i: i + batch_size], seed=split(seed, 1 + i))
        parts.append(ll)
        nfes.append(ll.nfe)
    seconds = time.perf_counter() - start
    dim = math.prod(run.shape)
    report = {"dataset": dataset or run.cfg.data.dataset, "split": split_name, "num_examples": len(arr),
              "T": sde.T, "eps": sde.eps, "rtol": rtol, "atol": atol, "divergence": divergence,
              "nfe_mean": float(np.mean(nfes)), "seconds": seconds, "checkpoint_step": run.step,
              "prior": prior_name, "dim": dim}
    is_image = arr.dtype == np.uint8
    report["likelihood"] = _likelihood_terms(parts, is_image)
    if prior_name != "noise":             # p_noise on the same ODE solves: a paired comparison
        report["likelihood_noise"] = _likelihood_terms(swap_prior(parts, sde.prior(run.shape)), is_image)
    priors = {"noise": sde.prior(run.shape)}
    if prior_name != "noise":
        priors["aux"] = prior
    for name, p in priors.items():                       # same (t, e) draws for both
        e = elbo_lib.elbo(sde, score, p, x_all, seed=split(seed, 10**6))
        report[f"elbo_{name}"] = {**e.as_dict(), **({"bpd_bound": e.bits_per_dim(data_lib.RANGE)} if is_image else {})}
    report["elbo"] = report["elbo_aux" if prior_name != "noise" else "elbo_noise"]
    return report


def swap_prior(parts, prior) -> list:
    """The same PF-ODE solves (x_T, delta log p) scored with another prior at T."""
    out = []
    for p in parts:
        lp = tf.cast(prior.log_prob(p.x_T), p.delta_logp.dtype)
        out.append(dataclasses.replace(p, prior_logp=lp, log_prob=lp + p.delta_logp))
    return out


def _likelihood_terms(parts, is_image: bool) -> dict:
    """Means and standard errors over all batches; for images the BitsPerDim terms as well."""
    ll = likelihood.concatenate(parts)
    n = int(ll.log_prob.shape[0])
    out = {"log_prob": float(tf.reduce_mean(ll.log_prob)),
           "log_prob_sem": float(tf.math.reduce_std(ll.log_prob)) / math.sqrt(max(n - 1, 1)),
           "prior_logp": float(tf.reduce_mean(ll.prior_logp)), "delta_logp": float(tf.reduce_mean(ll.delta_logp))}
    if is_image:
        b = likelihood.bits_per_dim(ll, data_range=data_lib.RANGE).summary()
        out.update(bpd=b["bpd"], bpd_sem=b["bpd_sem"], bpd_prior_T=b["prior_T"], bpd_ode=b["ode"],
                   bpd_offset=b["offset"])
    return out

"""One SavedModel for TF Serving that samples and scores inside the graph (README, "Export").

Signatures (N = batch, [S] = the run's data shape, e.g. [8, 8, 1]):

  serving_default = sample(num_samples int32 [], seed int32 [2], steps int32 [], sampler string [])
      -> x float32 [N, S] (model space), nfe int32 []; image runs also
         images uint8 [N, S] and images_float float32 [N, S] in [0, 1].
      sampler: "em" | "pc" | "ode" | "heun" | "dpm2m" (the adaptive ODE ignores steps).  The whole reverse process from T
      runs in the graph, starting from the auxiliary prior when one is exported, else p_noise.
  log_prob(x float32 [N, S], seed int32 [2]) -> log_prob, prior_logp, delta_logp [N], nfe int32 []
      PF-ODE log-likelihood in model space, one seeded Hutchinson probe.
  bpd(images uint8 [N, S], seed int32 [2])                              (image runs)
      -> bpd, bpd_prior_T, bpd_ode [N], offset [], nfe int32 []
      bits/dim = bpd_prior_T + bpd_ode + offset after uniform dequantisation (seed child 0,
      probe seed child 1: the draws ``shortdiff evaluate`` makes for a batch).
  score(x float32 [N, S], t float32 [N]) -> score float32 [N, S]
  metadata() -> metadata string []: JSON with the SDE, T, eps, shape, prior, solver tolerances,
      checkpoint step and versions.

assets.extra/tf_serving_warmup_requests holds one small request per sampler (and for ``score`` and
``metadata``), which TF Serving replays when it loads the model, so that the first client call of
``sample`` is a warm one (``warmup``).

The module tracks the Keras 3 network's variables as ``[v.value for v in net.variables]``, not
the model: a Keras 3 model held by a ``tf.Module`` reloads with ``tf.saved_model.load`` but not
under the TF1 session loader that TF Serving and ``saved_model_cli run`` use.  The Glow prior's
variables are tracked the same way, so loading needs neither Keras nor TFP.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path
from typing import Dict, Optional

import tensorflow as tf

from shortdiff_tf import bits, pixels, likelihood, samplers
from shortdiff_tf.app import warmup
from shortdiff_tf.app.runs import Run, load_run, resolve_prior
from shortdiff_tf.prior_fit import store
from shortdiff_tf.runlock import RunLock, RunLockedError
from shortdiff_tf.seeds import as_seed, split

SAMPLERS = tuple(samplers.PRESETS)                       # em, pc, ode, heun, dpm2m
MAX_SAMPLES = 4096          # per call of the sample signature
MAX_STEPS = 100_000         # SDE steps per call
EXPORT_ROOT = Path("saved_models")
# Keep the score network and each sampler's loop as calls: the TF1 session loader (TF Serving,
# saved_model_cli run) would otherwise inline every U-Net copy of the ODE solver into one graph for
# grappler to optimise.  The signature functions themselves are inlined into their serving
# wrappers: one function instantiation less on the first call after load (the sample signature's
# first call at em, 100 steps, digits: 6.5 s -> 5.1 s, warm 2.2 s).
NOINLINE = {"_noinline": True}


class ServingModule(tf.Module):
    """The score network, the prior at T and the samplers/likelihood as graph functions."""

    def __init__(self, run: Run, prior, prior_name: str, T: float, rtol: float, atol: float,
                 temperatures: Optional[Dict[str, float]] = None):
        super().__init__(name="shortdiff")
        sde = run.sde(T)
        # one traced score graph that every sampler and the likelihood call (a small SavedModel)
        score_fn = tf.function(run.score_fn(T), experimental_attributes=NOINLINE, input_signature=[
            tf.TensorSpec((None,) + tuple(run.shape), tf.float32), tf.TensorSpec((None,), tf.float32)])
        self.score_variables = [v.value for v in run.net.variables]
        self.prior_variables = list(getattr(prior, "variables", ()))
        self._shape, self._is_image = tuple(run.shape), len(run.shape) == 3
        self._eps, self._T = sde.eps, sde.T
        self._score_fn = score_fn
        prior = SharedPrior(prior, self._shape)
        temperatures = temperatures or {}
        self._samplers = tuple(samplers.Sampler(sde, score_fn, prior, samplers.preset(n, temperature=temperatures.get(n, 1.0)))
                               for n in SAMPLERS)
        self._estimator = likelihood.LikelihoodEstimator(sde, score_fn, prior, rtol, atol, "hutchinson")
        self._metadata = json.dumps(metadata(run, prior_name, sde, rtol, atol, temperatures), sort_keys=True)

    def signatures(self) -> dict:
        x_spec = tf.TensorSpec((None,) + self._shape, tf.float32, name="x")
        seed = tf.TensorSpec((2,), tf.int32, name="seed")
        scalar = lambda name: tf.TensorSpec((), tf.int32, name=name)
        sample = tf.function(self.sample).get_concrete_function(
            scalar("num_samples"), seed, scalar("steps"), tf.TensorSpec((), tf.string, name="sampler"))
        sigs = {"serving_default": sample, "sample": sample,
                "log_prob": tf.function(self.log_prob).get_concrete_function(x_spec, seed),
                "score": tf.function(self.score).get_concrete_function(
                    x_spec, tf.TensorSpec((None,), tf.float32, name="t")),
                "metadata": tf.function(self.metadata).get_concrete_function()}
        if self._is_image:
            images = tf.TensorSpec((None,) + self._shape, tf.uint8, name="images")
            sigs["bpd"] = tf.function(self.bpd).get_concrete_function(images, seed)
        return sigs

    def sample(self, num_samples, seed, steps, sampler):
        num_samples, steps, sampler = (_checked(v, (), n) for v, n in ((num_samples, "num_samples"), (steps, "steps"),
                                                                        (sampler, "sampler")))
        seed = _checked(seed, (2,), "seed")
        match = tf.equal(tf.constant(SAMPLERS), sampler)
        checks = [tf.debugging.assert_positive(num_samples, message="num_samples must be >= 1"),
                  tf.debugging.assert_less_equal(num_samples, MAX_SAMPLES,
                                                 message=f"num_samples must be <= {MAX_SAMPLES}; call again for more"),
                  tf.debugging.assert_positive(steps, message="steps must be >= 1 (the ode sampler ignores it)"),
                  tf.debugging.assert_less_equal(steps, MAX_STEPS, message=f"steps must be <= {MAX_STEPS}"),
                  tf.debugging.assert_equal(tf.reduce_any(match), True,
                                            message=f"sampler must be one of {', '.join(SAMPLERS)}")]
        with tf.control_dependencies(checks):           # before any sampling op runs
            index = tf.argmax(tf.cast(match, tf.int32), output_type=tf.int32)
            num_samples = tf.identity(num_samples)
        # each branch one non-inlined call: a while loop lowered inside a case branch gets control
        # edges from the branch pivot into its frame, which the TF1 loader rejects
        runs = [tf.function(s.run, experimental_attributes=NOINLINE) for s in self._samplers]
        branches = [lambda r=r: r(num_samples, seed, steps) for r in runs]
        x, nfe = tf.switch_case(index, branches)
        out = {"x": x, "nfe": nfe}
        if self._is_image:
            bins = tf.floor((tf.cast(x, tf.float64) - pixels.LOW) / pixels.RANGE * pixels.LEVELS)
            out["images"] = tf.cast(tf.clip_by_value(bins, 0, pixels.LEVELS - 1), tf.uint8)   # = data.to_uint8
            out["images_float"] = tf.clip_by_value((x - pixels.LOW) / pixels.RANGE, 0.0, 1.0)
        return out

    def log_prob(self, x, seed):
        x, seed = _finite(_rows(x, self._shape, "x"), "x"), _checked(seed, (2,), "seed")
        _, prior_logp, delta, nfe = self._estimator.terms(x, seed)
        return {"log_prob": prior_logp + delta, "prior_logp": prior_logp, "delta_logp": delta,
                "nfe": tf.cast(nfe, tf.int32)}

    def bpd(self, images, seed):
        """bits/dim = -(log nu(x_T) + delta) / (D ln 2) + offset of the dequantised images."""
        images, seed = _rows(images, self._shape, "images"), _checked(seed, (2,), "seed")
        x = pixels.to_model_space(images, split(seed, 0))
        _, prior_logp, delta, nfe = self._estimator.terms(x, split(seed, 1))
        dim = math.prod(self._shape)
        return {"bpd": bits.bits_per_dim(prior_logp + delta, dim, pixels.RANGE),
                "bpd_prior_T": bits.nats_to_bits_per_dim(prior_logp, dim),
                "bpd_ode": bits.nats_to_bits_per_dim(delta, dim),
                "offset": tf.constant(bits.dequantization_offset(pixels.RANGE), tf.float32),
                "nfe": tf.cast(nfe, tf.int32)}

    def score(self, x, t):
        x, t = _finite(_rows(x, self._shape, "x"), "x"), _checked(t, (None,), "t")
        in_range = f"t must be in [eps, T] = [{self._eps:g}, {self._T:g}]"
        checks = [tf.debugging.assert_equal(tf.shape(t)[0], tf.shape(x)[0], message="t must have one time per row of x"),
                  tf.debugging.assert_greater_equal(t, self._eps, message=in_range),
                  tf.debugging.assert_less_equal(t, self._T, message=in_range)]
        with tf.control_dependencies(checks):
            return {"score": self._score_fn(x, tf.identity(t))}

    def metadata(self):
        return {"metadata": tf.constant(self._metadata)}


class SharedPrior:
    """The prior's ``sample`` and ``log_prob`` each traced once, as non-inlined graph functions that
    every sampler and the likelihood call: one copy of the flow in the SavedModel instead of one per
    caller.  The first call of a signature prepares every function its graph reaches, all five
    samplers' loops included, so each copy of the Glow cost first-call time.  Digits with its Glow:
    the sample signature's function library 9,704 -> 4,523 nodes, export 14 -> 10 s, load 3.2 ->
    2.4-2.7 s, the first em call (100 steps, 64 samples) 4.8 -> 4.3-4.5 s against 2.0-2.1 s warm."""

    def __init__(self, prior, shape):
        self.event_shape = list(shape)
        # n and seed as int32 tensors, the temperature a Python number: one trace per temperature
        self._sample = tf.function(prior.sample, experimental_attributes=NOINLINE)
        self._log_prob = tf.function(prior.log_prob, experimental_attributes=NOINLINE,
                                     input_signature=[tf.TensorSpec((None,) + tuple(shape), tf.float32)])

    def sample(self, n, seed, temperature: float = 1.0, dtype=tf.float32, first=0):
        return tf.cast(self._sample(tf.cast(n, tf.int32), as_seed(seed), float(temperature), tf.float32,
                                    tf.cast(first, tf.int64)), dtype)

    def log_prob(self, x):
        return self._log_prob(tf.cast(x, tf.float32))


def _finite(x, name):
    """NaN or infinity in an input is an InvalidArgumentError naming it, before any solve."""
    return tf.debugging.assert_all_finite(x, f"{name} holds NaN or infinite values; pass finite inputs")


def _rows(value, shape, name):
    """A batch [N, *shape] with N >= 1: an empty batch is an InvalidArgumentError naming it."""
    value = _checked(value, (None,) + tuple(shape), name)
    check = tf.debugging.assert_positive(tf.shape(value)[0], message=f"{name} holds no rows; pass at least one")
    with tf.control_dependencies([check]):
        return tf.identity(value)


def _checked(value, shape, name):
    """A runtime shape check: a serving signature's declared shape is not enforced by the loaded
    graph, and a wrong rank would otherwise reach a convolution and abort the process."""
    return tf.ensure_shape(value, shape, name=f"check_{name}")


def metadata(run: Run, prior_name: str, sde, rtol: float, atol: float, temperatures=None) -> dict:
    import importlib.metadata as im
    versions = {}
    for pkg in ("shortdiff", "tensorflow", "tensorflow-probability", "keras"):
        try:
            versions[pkg] = im.version(pkg)
        except im.PackageNotFoundError:
            pass
    prior_cfg = store.prior_dir(run.run_dir) / "config.json"    # the settings only; the prior is loaded
    return {"sde": type(sde).__name__, "T": sde.T, "eps": sde.eps, "shape": list(run.shape),
            "prior": prior_name, "prior_config": json.loads(prior_cfg.read_text()) if prior_name != "noise" else None,
            "bpd": {"rtol": rtol, "atol": atol, "divergence": "hutchinson", "probe": "rademacher",
                    "data_range": pixels.RANGE, "offset": bits.dequantization_offset(pixels.RANGE)},
            "samplers": list(SAMPLERS), "temperature": {n: (temperatures or {}).get(n, 1.0) for n in SAMPLERS},
            "checkpoint_step": run.step, "run_config": json.loads(run.cfg.to_json()),
            "run_dir": str(run.run_dir), "exported": time.strftime("%Y-%m-%dT%H:%M:%S"), "versions": versions}


def default_out(run_dir, root=EXPORT_ROOT) -> Path:
    """root/NAME/VERSION with NAME the run directory's name (RUN-T0.4 for choose-T's view
    RUN/views/T0.4) and VERSION the next integer."""
    path = Path(run_dir).resolve()
    name = f"{path.parent.parent.name}-{path.name}" if path.parent.name == "views" else path.name
    base = Path(root) / _name(name)
    taken = [int(p.name) for p in base.glob("*") if p.is_dir() and p.name.isdigit()] if base.is_dir() else []
    return base / str(max(taken, default=0) + 1)


def _name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", s) or "model"


def remove_stale_partials(parent: Path) -> list:
    """Remove the ``.<name>.partial`` folders of exports that were killed (their ``.lock`` is held
    by no live process; a running export's is).  -> their names."""
    removed = []
    for partial in sorted(Path(parent).glob(".*.partial")):
        lock = partial.with_name(partial.name + ".lock")
        try:
            with RunLock(lock, "shortdiff export (cleaning)"):
                shutil.rmtree(partial, ignore_errors=True)
        except RunLockedError:
            continue
        lock.unlink(missing_ok=True)
        removed.append(partial.name)
    return removed


def export_run(run_dir, out: Optional[str] = None, prior: str = "auto", T: Optional[float] = None,
               rtol: float = 1e-5, atol: float = 1e-5, log=lambda *_: None,
               temperatures: Optional[Dict[str, float]] = None) -> dict:
    """Write the SavedModel to ``out`` (or the next version under saved_models/NAME); nothing is
    left behind when it fails, and an existing directory is never overwritten.  ``temperatures``:
    the prior's sampling temperature per sampler (default 1), in the metadata too."""
    run = load_run(run_dir)
    out = Path(out) if out else default_out(run_dir)
    if out.exists():
        raise FileExistsError(f"{out} already exists; pass another --out or remove it first")
    prior_obj, T, prior_name = resolve_prior(run, prior, T)
    start = time.perf_counter()
    module = ServingModule(run, prior_obj, prior_name, T, rtol, atol, temperatures)
    log(f"tracing the signatures (sample with {', '.join(SAMPLERS)}; log_prob, bpd, score, metadata)")
    sigs = module.signatures()
    log(f"writing the SavedModel ({time.perf_counter() - start:.0f} s so far)")
    out.parent.mkdir(parents=True, exist_ok=True)
    cleaned = remove_stale_partials(out.parent)
    if cleaned:
        log(f"removed what killed exports left: {', '.join(cleaned)}")
    tmp = out.with_name(f".{out.name}.partial")
    with RunLock(tmp.with_name(tmp.name + ".lock"), "shortdiff export"):
        try:
            # no custom gradients (GroupNorm's closed form): serving computes none, and tracing them
            # would enlarge the SavedModel and its export time
            tf.saved_model.save(module, str(tmp), signatures=sigs,
                                options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
            requests = warmup.requests(SAMPLERS, run.shape, T)
            warmup.write(tmp, requests)
            tmp.replace(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    tmp.with_name(tmp.name + ".lock").unlink(missing_ok=True)
    return {"out": str(out), "signatures": sorted(sigs), "warmup_requests": len(requests), "prior": prior_name,
            "temperature": {n: (temperatures or {}).get(n, 1.0) for n in SAMPLERS},
            "T": T, "checkpoint_step": run.step, "seconds": time.perf_counter() - start}

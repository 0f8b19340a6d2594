"""Loading a trained run directory: its config, SDE, score network (EMA weights) and priors."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import tensorflow as tf

from shortdiff_tf import checkpoints, hints, networks
from shortdiff_tf.config import RunConfig
from shortdiff_tf.prior_fit import store


@dataclasses.dataclass
class Run:
    cfg: RunConfig
    run_dir: Path
    net: object
    step: int
    checkpoint: str
    precision: str = "fp32"

    @property
    def shape(self):
        return tuple(self.cfg.data.shape)

    def sde(self, T: Optional[float] = None):
        """The run's SDE, or the same schedule truncated at a shorter T (<= the trained T)."""
        if T is not None and T > self.cfg.sde.T + 1e-12:
            raise ValueError(f"T={T} exceeds the T={self.cfg.sde.T} the score model was trained at; "
                             f"use T <= {self.cfg.sde.T}")
        return self.cfg.sde.build(T)

    def score_fn(self, T: Optional[float] = None):
        return networks.score_function(self.net, self.sde(T))


def load_run(run_dir, precision: str = "fp32") -> Run:
    """Restore the EMA weights of the latest checkpoint into a freshly built network that
    computes in ``precision`` (the weights are fp32 whatever the run was trained in)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist; train one with "
                                f"`{hints.train_command(run_dir)}`")
    cfg = RunConfig.load(run_dir)
    net = networks.build_score_net(cfg.model, cfg.data.shape, precision)
    ema = checkpoints.EMA(net.trainable_variables, cfg.train.ema_decay)
    step = tf.Variable(0, dtype=tf.int64)
    ckpt = tf.train.Checkpoint(params=checkpoints.variable_dict(net.variables), ema=ema, step=step)
    path = checkpoints.restore_newest(ckpt, checkpoints.checkpoint_dir(run_dir), partial=True)  # beside a writer too
    if path is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet; run `shortdiff train --workdir {run_dir}` first")
    ema.copy_to(net.trainable_variables)
    return Run(cfg, run_dir, net, int(step.numpy()), path, precision)


PRIOR_CHOICES = ("auto", "aux", "noise")


def resolve_prior(run: Run, choice: str = "auto", T: Optional[float] = None):
    """-> (prior, T, name): the fitted auxiliary prior ('aux', from the T it was fitted at) or
    p_noise at T ('noise'); 'auto' takes the auxiliary prior when the run has one."""
    if choice not in PRIOR_CHOICES:
        raise ValueError(f"unknown prior choice {choice!r}; choose one of {', '.join(PRIOR_CHOICES)}")
    fitted = store.load_prior(run.run_dir, run.shape) if choice != "noise" else None
    if choice == "aux" and fitted is None:
        raise FileNotFoundError(f"{run.run_dir} has no auxiliary prior; fit one with "
                                f"`shortdiff fit-prior --workdir {run.run_dir}` or use --prior noise")
    if fitted is None:
        sde = run.sde(T)
        return sde.prior(run.shape), sde.T, "noise"
    prior, pcfg = fitted
    if pcfg.target == "ode" and pcfg.score_step >= 0 and pcfg.score_step != run.step:
        raise ValueError(f"the auxiliary prior was fitted on the PF-ODE image of the score checkpoint at step "
                         f"{pcfg.score_step}, but the run's newest checkpoint is at step {run.step}; refit it "
                         f"(delete {store.prior_dir(run.run_dir)}, then `shortdiff fit-prior --workdir {run.run_dir} "
                         f"--target ode`) or use --prior noise")
    if T is not None and abs(T - pcfg.T) > 1e-12:
        raise ValueError(f"the auxiliary prior was fitted at T={pcfg.T:g}, not T={T:g}; pass --T {pcfg.T:g}, "
                         f"refit it at T={T:g}, or use --prior noise")
    if list(getattr(prior, "event_shape", run.shape)) != list(run.shape):
        raise ValueError(f"the auxiliary prior's shape {list(prior.event_shape)} does not match the run's "
                         f"{list(run.shape)}; refit it with `shortdiff fit-prior`")
    return prior, pcfg.T, f"aux:{pcfg.kind}"

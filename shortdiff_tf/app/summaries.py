"""What a training run reports as it goes: ``metrics.jsonl`` rows, TensorBoard scalars, and grids
of EMA samples every ``sample_every`` steps and at the end (Euler-Maruyama from p_noise, 1000 T
steps, ``sample_grid`` images, each upscaled to at least 128 pixels a side so an 8x8 digit is
visible in TensorBoard)."""
from __future__ import annotations

import time
from pathlib import Path

import tensorflow as tf

from shortdiff_tf import images, networks, pixels, samplers
from shortdiff_tf.files import append_jsonl

GRID_SIDE = 128              # pixels a side of each image in a TensorBoard grid, at least


class TrainSummaries:
    """The metrics log and TensorBoard writer of one training session."""

    def __init__(self, cfg, state, out_dir: Path, start: int):
        self.cfg, self.state, self.out = cfg, state, Path(out_dir)
        self.writer = tf.summary.create_file_writer(str(self.out / "tb"))
        self.t0, self.last = time.perf_counter(), (start, time.perf_counter())
        self._sampler = None

    def log(self, step: int, loss: float, grad_norm: float) -> float:
        """One metrics row and its scalars -> the images per second since the last row."""
        now = time.perf_counter()
        rate = (step - self.last[0]) * self.cfg.train.batch_size / max(now - self.last[1], 1e-9)
        self.last = (step, now)
        lr = float(self.state.optimizer.learning_rate)
        append_jsonl(self.out / "metrics.jsonl", {"step": step, "loss": loss, "grad_norm": grad_norm, "lr": lr,
                                                  "images_per_s": rate, "wall_time": now - self.t0})
        with self.writer.as_default(step=step):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("grad_norm", grad_norm)
        return rate

    def wants_grid(self, step: int, final: bool) -> bool:
        tc = self.cfg.train
        periodic = tc.sample_every > 0 and step % tc.sample_every == 0
        return len(self.cfg.data.shape) == 3 and tc.sample_grid > 0 and (periodic or final)

    def grid(self, step: int) -> None:
        """A grid of ``sample_grid`` EMA samples in TensorBoard (the training weights are put back)."""
        net, ema = self.state.net, self.state.ema
        weights = [v.numpy() for v in net.trainable_variables]
        ema.copy_to(net.trainable_variables)
        try:
            x = self.sampler()(self.cfg.train.sample_grid, self.cfg.train.seed).x.numpy()
        finally:
            for v, value in zip(net.trainable_variables, weights):
                v.assign(value)
        upscale = max(1, -(-GRID_SIDE // self.cfg.data.shape[0]))
        with self.writer.as_default(step=step):
            tf.summary.image("samples_em_p_noise", images.grid(pixels.to_uint8(x), upscale)[None], step=step)
        self.writer.flush()

    def sampler(self) -> samplers.Sampler:
        if self._sampler is None:                      # traced once, reused by every grid
            sde = self.cfg.sde.build()
            self._sampler = samplers.Sampler(sde, networks.score_function(self.state.net, sde),
                                             sde.prior(self.cfg.data.shape), samplers.PRESETS["em"])
        return self._sampler

    def close(self) -> None:
        self.writer.flush()

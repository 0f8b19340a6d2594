"""How long a pre-empted run needs to save: the seconds of one checkpoint of a preset's full
training state (network, EMA, Adam's two moments, step), against Kubernetes' default grace
period of 30 s between SIGTERM and SIGKILL.

    python benchmarks/checkpoint_save.py [--preset ddpmpp-cifar10] [--repeats 3] [--dir /tmp/ckpt-bench] [--out FILE]

``--dir``: where to write (the run directory's filesystem is what counts; a local disk here).
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write  # noqa: E402

GRACE = 30.0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="ddpmpp-cifar10")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default="/tmp/shortdiff-checkpoint-bench")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    import tensorflow as tf
    from shortdiff_tf import config, networks, training
    cfg = config.run_preset(args.preset)
    state = training.build_state(cfg, cfg.data.shape, tf.distribute.get_strategy())
    folder = Path(args.dir)
    shutil.rmtree(folder, ignore_errors=True)
    manager = tf.train.CheckpointManager(state.ckpt, str(folder), max_to_keep=2)
    seconds = []
    for i in range(args.repeats):
        start = time.perf_counter()
        path = manager.save(checkpoint_number=i + 1)
        seconds.append(time.perf_counter() - start)
    size = sum(f.stat().st_size for f in folder.glob(f"{Path(path).name}.*"))
    shutil.rmtree(folder, ignore_errors=True)
    median = statistics.median(seconds)
    print(f"{args.preset}: {networks.count_params(state.net):,} parameters, checkpoint {size / 2**20:.0f} MiB, "
          f"save {median:.2f} s (median of {args.repeats}), {GRACE:g} s grace: {GRACE / median:.0f} x margin")
    write("checkpoint_save", {"config": vars(args), "parameters": networks.count_params(state.net),
                              "bytes": size, "seconds": seconds, "median_seconds": median,
                              "kubernetes_grace_seconds": GRACE}, args.out)


if __name__ == "__main__":
    main()

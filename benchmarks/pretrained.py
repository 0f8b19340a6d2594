"""Importing the full published configurations: parameter counts against the references', score
parity at full size where the reference can run here, and the imported score network's
throughput at CIFAR-10 size.

    python benchmarks/pretrained.py [--diffusers DIR ...] [--batch 64] [--repeats 3] [--out FILE]

  - every ScoreSDE config ``shortdiff import`` knows, at its published size: our network's
    trainable parameters against a layer-by-layer count of ScoreSDE's module list
    (``benchmarks/reference_counts.py``); ScoreSDE's own code cannot run here (it is not on the
    package index), so its parity is the fixtures' (tests/test_import.py, tiny networks);
  - each ``--diffusers DIR`` written by ``benchmarks/diffusers_fixture.py`` (full-size random
    weights, the noise diffusers itself predicted): imported with ``shortdiff import``, its
    prediction against diffusers', and the parameter counts;
  - forwards per second of the imported networks at batch ``--batch`` (median of ``--repeats``).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import timed, write  # noqa: E402
from benchmarks.reference_counts import reference_ddpm_count, reference_ddpmpp_count  # noqa: E402


def scoresde_rows(batch: int, repeats: int) -> list:
    from shortdiff_tf import networks
    from shortdiff_tf.pretrained import scoresde
    rows = []
    for name in scoresde.CONFIGS:
        c = scoresde.config(name)
        _, data, model, _ = scoresde.run_sections(c)
        net = networks.build_score_net(model, data.shape)
        count = (reference_ddpm_count if c["model.name"] == "ddpm" else reference_ddpmpp_count)(
            model.ch, model.ch_mult, model.num_res_blocks, model.attn_resolutions, data.shape[0], data.shape[2])
        row = {"config": name, "parameters": networks.count_params(net), "reference_parameters": count}
        if name in ("vp/cifar10_ddpmpp_continuous", "vp/ddpm/cifar10_continuous"):
            row["images_per_s"] = throughput(net, data.shape, batch, repeats)
        rows.append(row)
        print(f"{name}: {row['parameters']:,} parameters (reference {count:,})"
              + (f", {row['images_per_s']:.1f} img/s at batch {batch}" if "images_per_s" in row else ""))
    return rows


def diffusers_row(folder: Path, batch: int, repeats: int) -> dict:
    import numpy as np
    import tensorflow as tf
    from shortdiff_tf.app.import_run import import_run
    from shortdiff_tf.app.runs import load_run
    ref = np.load(folder / "reference.npz")
    meta = json.loads(str(ref["meta"]))
    with tempfile.TemporaryDirectory() as tmp:
        report = import_run(folder, Path(tmp) / "run", dataset="cifar10" if meta["config"]["sample_size"] == 32
                            else "celeb_a_hq", log=lambda *_: None)
        net = load_run(Path(tmp) / "run").net
    eps = -net([tf.constant(ref["x"]), tf.constant(ref["timestep"].astype("float32"))]).numpy()   # ours is -e
    err = max(float(np.abs(eps[i] - ref["eps"][i]).max() / np.abs(ref["eps"][i]).max()) for i in range(len(eps)))
    shape = tuple(ref["x"].shape[1:])
    row = {"preset": meta["preset"], "parameters": report["parameters"], "reference_parameters": meta["parameters"],
           "eps_relative_error": err, "reference_versions": {k: meta[k] for k in ("torch", "diffusers")}}
    if shape[0] <= 32:
        row["images_per_s"] = throughput(net, shape, batch, repeats)
    print(f"diffusers {meta['preset']}: {row['parameters']:,} parameters (diffusers {meta['parameters']:,}), "
          f"eps relative error {err:.2e}" + (f", {row['images_per_s']:.1f} img/s" if "images_per_s" in row else ""))
    return row


def throughput(net, shape, batch: int, repeats: int) -> float:
    import tensorflow as tf
    x = tf.random.stateless_normal((batch,) + tuple(shape), [0, 1])
    c = tf.fill([batch], 500.0)
    fn = tf.function(lambda x: net([x, c]))
    median, _, _ = timed(lambda: fn(x).numpy(), repeats)
    return batch / median


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--diffusers", nargs="*", default=[])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    rows = {"scoresde": scoresde_rows(args.batch, args.repeats),
            "diffusers": [diffusers_row(Path(d), args.batch, args.repeats) for d in args.diffusers]}
    write("pretrained", {"config": vars(args), **rows}, args.out)


if __name__ == "__main__":
    main()

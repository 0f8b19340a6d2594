"""``shortdiff import``: a pretrained ScoreSDE or diffusers model as a run directory at T = 1."""
from __future__ import annotations

from pathlib import Path

import click

from cli import checks
from cli.errors import friendly
from cli.options import json_option, report
from cli.quiet import load_tensorflow

SCORESDE_CONFIGS = ["vp/cifar10_ddpmpp_continuous", "vp/cifar10_ddpmpp_deep_continuous",
                    "subvp/cifar10_ddpmpp_continuous", "subvp/cifar10_ddpmpp_deep_continuous", "vp/cifar10_ddpmpp",
                    "vp/ddpm/cifar10_continuous"]                    # pretrained.scoresde.CONFIGS (tested)
SETTABLE = {"model.nf": int, "model.ch_mult": tuple, "model.num_res_blocks": int, "model.attn_resolutions": tuple,
            "model.dropout": float, "model.beta_min": float, "model.beta_max": float, "model.num_scales": int,
            "data.image_size": int, "data.num_channels": int}    # pretrained.scoresde.SETTABLE (tested)


def parse_sets(ctx, param, values) -> dict:
    """KEY=VALUE pairs (ScoreSDE's --config.KEY=VALUE), typed; tuples as comma-separated ints."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or key not in SETTABLE:
            raise click.BadParameter(f"{item!r}: give KEY=VALUE with KEY one of {', '.join(SETTABLE)}", ctx, param)
        kind = SETTABLE[key]
        try:
            out[key] = tuple(int(v) for v in value.split(",") if v.strip()) if kind is tuple else kind(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: {value!r} is not a{' list of' if kind is tuple else 'n'} "
                                     f"{'integers' if kind is tuple else kind.__name__}", ctx, param) from None
    return out


@click.command("import")
@click.argument("source", type=click.Path(exists=True))
@click.option("--workdir", type=click.Path(file_okay=False), required=True, help="The new run directory.")
@click.option("--config", "config_name", type=click.Choice(SCORESDE_CONFIGS), default=None,
              help="ScoreSDE: the config module the checkpoint was trained with  [default: none; required for a "
                   "ScoreSDE .pth, not used for diffusers].")
@click.option("--set", "sets", multiple=True, callback=parse_sets, metavar="KEY=VALUE",
              help="ScoreSDE: a config field trained otherwise than the named config (its --config.KEY=VALUE), "
                   "e.g. --set model.nf=64; repeatable.")
@click.option("--dataset", default=None,
              help="The data set the model was trained on (fit-prior and evaluate read it)  [default: the config's, "
                   "cifar10 for 32x32 RGB].")
@json_option
@friendly
def import_command(source, workdir, config_name, sets, dataset, as_json):
    """Import a pretrained score model: a ScoreSDE checkpoint_N.pth (with --config) or a diffusers
    UNet2DModel folder, as a run at T = 1 that every command takes.
    e.g.  shortdiff import checkpoint_26.pth --config vp/cifar10_ddpmpp_continuous --workdir runs/cifar10-pretrained"""
    p = Path(workdir)
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise FileExistsError(f"{p} exists and is not empty; import into a new --workdir")
    checks.writable_dir(p.parent if str(p.parent) else ".", "--workdir")
    if Path(source).is_file() and not config_name:
        raise click.UsageError(f"a ScoreSDE checkpoint needs --config: one of {', '.join(SCORESDE_CONFIGS)}")
    if Path(source).is_dir() and (config_name or sets):
        raise click.UsageError("--config and --set are for ScoreSDE checkpoints; a diffusers folder has its config.json")
    load_tensorflow()
    from shortdiff_tf.app.import_run import import_run
    r = import_run(source, workdir, config_name, sets, dataset, log=lambda *_: None)
    report(r, as_json, [f"imported {source} ({r['format']}{', ' + r['config'] if r['format'] != 'diffusers' else ''}, "
                        f"step {r['step']}, {r['parameters']:,} parameters) into {workdir}",
                        f"next: shortdiff fit-prior --workdir {workdir} --T 0.4   (the score on [eps, 0.4], a Glow at 0.4)"])

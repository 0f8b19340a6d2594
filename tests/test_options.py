"""Every documented value of every option of train, fit-prior, sample, evaluate and export, run at
least once on tiny runs.  The list of runs is checked against the Click commands' own parameter
lists, so a new option (or a new choice of one) cannot go untested."""
import json
import os
import shutil
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from cli.resolve import FIELDS

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)

TINY = ["--steps", "2", "--batch-size", "8", "--ch", "8", "--no-progress", "--sample-grid", "0"]
TINY_GLOW = ["--steps", "2", "--glow-steps", "1", "--glow-hidden", "8", "--batch-size", "8", "--no-progress"]
# {img}: a digits run at T = 0.4 with a Glow prior (the suite's shared run); {toy}: a gmm1d run at T = 0.6 with a DP-GMM prior;
# {img_copy}/{toy_copy}: fresh copies without a prior; {new}: a new directory; {tmp}: a scratch folder.
RUNS = [
    ("train", ["--sde", "vp", "--T", "0.4", "--eps", "1e-5", "--dataset", "digits", "--download", "--workdir", "{new}",
               "--lr", "1e-3", "--warmup", "1", "--ema-decay", "0.99", "--grad-clip", "1", "--weighting", "likelihood",
               "--importance", "--seed", "1", "--beta-0", "0.1", "--beta-1", "20", "--num-res-blocks", "1",
               "--reduce-mean", "--flip", "--embedding", "positional",
               "--dropout", "0.1", "--checkpoint-every", "1", "--log-every", "1", "--grad-accum", "2",
               "--strategy", "default", "--precision", "fp32", "--json", *TINY[:6], "--no-progress", "--sample-grid", "4",
               "--sample-every", "1"]),
    ("train", ["--sde", "ve", "--T", "0.6", "--sigma-min", "0.01", "--sigma-max", "4", "--dataset", "gmm1d",
               "--width", "8", "--weighting", "variance", "--no-importance", "--strategy", "auto",
               "--no-reduce-mean", "--no-flip", "--embedding", "fourier",
               "--data-dir", "{tmp}", "--workdir", "{new}", "--precision", "bf16", "--jit", *TINY]),
    ("train", ["--sde", "subvp", "--T", "0.5", "--dry-run", "--workdir", "{new}"]),
    ("train", ["--config", "{img}/config.json", "--dry-run", "--workdir", "{new}"]),
    ("train", ["--preset", "ddpmpp-mnist", "--precision", "fp16", "--no-jit", "--dry-run", "--workdir", "{new}"]),
    ("train", ["--preset", "ddpmpp-cifar10", "--T", "0.4", "--dry-run", "--workdir", "{new}"]),
    ("fit-prior", ["--workdir", "{img_copy}", "--prior", "glow", "--T", "0.3", "--target", "sde", "--lr", "1e-3",
                   "--seed", "1", "--preset", "glow-cifar10", "--glow-levels", "1", "--checkpoint-every", "1",
                   "--strategy", "default", "--precision", "fp32", "--json", *TINY_GLOW]),
    ("fit-prior", ["--workdir", "{img_copy}", "--preset", "glow-mnist", "--precision", "bf16", "--jit", "--json",
                   *TINY_GLOW]),
    ("fit-prior", ["--workdir", "{img_copy}", "--prior", "gaussian", "--fit-samples", "100", "--strategy", "auto",
                   "--no-jit"]),
    ("fit-prior", ["--workdir", "{toy_copy}", "--prior", "gmm", "--target", "ode", "--components", "2",
                   "--fit-samples", "400", "--precision", "fp16"]),
    ("fit-prior", ["--workdir", "{toy_copy}", "--prior", "dpgmm", "--components", "3", "--fit-samples", "500",
                   "--json"]),
    ("fit-prior", ["--workdir", "{img_copy}", "--config", "{img}/prior/config.json", "--steps", "1", "--no-progress"]),
    ("sample", ["--workdir", "{img}", "--sampler", "em", "--steps", "3", "--num-samples", "3", "--batch-size", "2", "--seed", "1",
                "--prior", "aux", "--temperature", "0.9", "--out", "{tmp}/s", "--precision", "fp32", "--strategy",
                "default", "--json"]),
    ("sample", ["--workdir", "{img}", "--sampler", "pc", "--steps", "2", "--num", "2", "--snr", "0.2",
                "--prior", "noise", "--T", "0.3", "--precision", "fp16", "--strategy", "auto", "--json"]),
    ("sample", ["--workdir", "{toy}", "--sampler", "ode", "--num-samples", "16", "--prior", "auto", "--no-jit", "--json"]),
    ("sample", ["--workdir", "{toy}", "--sampler", "ode", "--rtol", "1e-2", "--atol", "1e-3", "--num-samples", "8",
                "--prior", "noise", "--json"]),
    ("sample", ["--workdir", "{toy}", "--sampler", "heun", "--steps", "4", "--sample-eps", "1e-4", "--num-samples", "8",
                "--prior", "noise", "--json"]),
    ("sample", ["--workdir", "{img}", "--sampler", "dpm2m", "--steps", "3", "--num-samples", "2", "--prior", "aux",
                "--no-progress", "--json"]),
    ("sample", ["--workdir", "{img}", "--sampler", "em", "--steps", "3", "--num-samples", "2", "--precision", "bf16",
                "--prior", "aux", "--jit", "--json"]),
    ("evaluate", ["--workdir", "{toy}", "--dataset", "gmm1d", "--data-dir", "{tmp}", "--split", "test",
                  "--num-examples", "4", "--batch-size", "2", "--rtol", "1e-3", "--atol", "1e-3",
                  "--divergence", "hutchinson", "--seed", "1", "--prior", "aux", "--elbo-draws", "3",
                  "--control-variate", "on", "--precision", "fp16", "--strategy", "default", "--store", "{tmp}/store",
                  "--json"]),
    ("evaluate", ["--workdir", "{toy}", "--divergence", "exact", "--num-examples", "4", "--prior", "noise",
                  "--T", "0.5", "--control-variate", "off", "--no-jit", "--json"]),
    ("evaluate", ["--workdir", "{toy}", "--num-examples", "3", "--control-variate", "optimal", "--elbo-draws", "1",
                  "--repeats", "2", "--no-progress", "--precision", "fp32", "--strategy", "auto", "--json"]),
    ("evaluate", ["--workdir", "{toy}", "--prior", "auto", "--num-examples", "2", "--no-progress", "--precision", "bf16",
                  "--jit", "--json"]),
    ("export", ["--workdir", "{toy}", "--out", "{tmp}/x1", "--prior", "auto", "--rtol", "1e-3", "--atol", "1e-3",
                "--temperature", "0.9", "--json"]),
    ("export", ["--workdir", "{toy}", "--out", "{tmp}/x2", "--prior", "noise", "--T", "0.5"]),
    ("export", ["--workdir", "{toy}", "--out", "{tmp}/x3", "--prior", "aux"]),
]
FIXTURES = Path(__file__).parent / "fixtures" / "pretrained"
TINY_SCORESDE = ["--set", "model.nf=16", "--set", "model.ch_mult=1,2", "--set", "model.num_res_blocks=1",
                 "--set", "model.attn_resolutions=8", "--set", "data.image_size=16"]
for config, folder in (("vp/cifar10_ddpmpp_continuous", "vp_cifar10_ddpmpp_continuous"),
                       ("vp/cifar10_ddpmpp_deep_continuous", "vp_cifar10_ddpmpp_continuous"),   # deep: more blocks
                       ("subvp/cifar10_ddpmpp_continuous", "subvp_cifar10_ddpmpp_continuous"),
                       ("subvp/cifar10_ddpmpp_deep_continuous", "subvp_cifar10_ddpmpp_continuous"),
                       ("vp/cifar10_ddpmpp", "vp_cifar10_ddpmpp"),
                       ("vp/ddpm/cifar10_continuous", "vp_ddpm_cifar10_continuous")):
    sets = [a.replace("model.nf=16", "model.nf=32") for a in TINY_SCORESDE] if "ddpm/" in config else TINY_SCORESDE
    RUNS.append(("import", [str(FIXTURES / "score_sde" / folder / "checkpoint_8.pth"), "--config", config, *sets,
                            "--workdir", "{new}", "--json"]))
RUNS.append(("import", [str(FIXTURES / "diffusers_ddpm-cifar10-32"), "--dataset", "cifar10", "--workdir", "{new}"]))
# several strategies in one process need a fresh process (MultiWorkerMirroredStrategy comes first)
STRATEGY_RUNS = [
    ("train", ["--strategy", "multiworker", "--workdir", "{new}", *TINY]),
    ("fit-prior", ["--strategy", "multiworker", *TINY_GLOW]),
    ("train", ["--strategy", "mirrored", "--workdir", "{new}", *TINY]),
    ("fit-prior", ["--strategy", "mirrored", *TINY_GLOW]),
    ("evaluate", ["--strategy", "mirrored", "--num-examples", "2", "--batch-size", "2", "--rtol", "1e-2", "--atol",
                  "1e-2", "--elbo-draws", "1"]),
    ("sample", ["--strategy", "mirrored", "--num-samples", "2", "--steps", "2"]),
]
COMMANDS = ("train", "fit-prior", "sample", "evaluate", "export", "import")


def documented(command: click.Command):
    """(option spelling, value or None) for every option spelling, flag and choice of a command."""
    for p in command.params:
        if not isinstance(p, click.Option) or p.name == "help":
            continue
        for opt in p.opts + p.secondary_opts:
            if isinstance(p.type, click.Choice):
                yield from ((opt, c) for c in p.type.choices)
            else:
                yield opt, None


def exercised(command: str):
    for name, args in RUNS + STRATEGY_RUNS:
        if name == command:
            for i, a in enumerate(args):
                yield a, args[i + 1] if i + 1 < len(args) else None


def test_the_cli_offers_every_choice_of_the_library():
    """The CLI's choice lists are the library's registries (the CLI cannot import them before TF)."""
    from cli import options
    from shortdiff_tf import config, distribute, samplers
    from shortdiff_tf.networks import parameterization
    from shortdiff_tf.study.config import SAMPLERS
    assert sorted(options.SAMPLER_CHOICES) == sorted(samplers.PRESETS) == sorted(SAMPLERS)
    assert options.PRECISIONS == list(config.PRECISIONS) and options.STRATEGIES == list(distribute.STRATEGIES)
    assert options.PRESETS == list(config.RUN_PRESETS) and options.PRIOR_PRESETS == list(config.PRIOR_PRESETS)
    assert config.EMBEDDINGS == parameterization.EMBEDDINGS and config.SCORE_STDS == parameterization.STDS
    from cli import import_command
    from shortdiff_tf.networks import unet
    from shortdiff_tf.pretrained import scoresde
    assert import_command.SCORESDE_CONFIGS == list(scoresde.CONFIGS) and config.UP_ATTENTION == unet.UP_ATTENTION
    assert sorted(import_command.SETTABLE) == sorted(k for k in scoresde.SETTABLE if k != "data.dataset")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_documented_option_value_is_run(command):
    done = set(exercised(command))
    missing = [(opt, value) for opt, value in documented(cli.commands[command])
               if ((opt, value) not in done if value is not None else opt not in {a for a, _ in done})]
    assert not missing, f"add runs of `shortdiff {command}` with {missing} to RUNS"


@pytest.fixture(scope="module")
def runs(glow_run, tmp_path_factory):
    base = tmp_path_factory.mktemp("options")
    img, toy = base / "img", base / "toy"
    shutil.copytree(glow_run[0], img, ignore=shutil.ignore_patterns("evaluations", "samples"))   # with its Glow
    for args in (["train", "--dataset", "gmm1d", "--T", "0.6", "--width", "8", "--workdir", toy, *TINY],
                 ["fit-prior", "--workdir", toy, "--fit-samples", "500"]):
        r = CliRunner().invoke(cli, [str(a) for a in args])
        assert r.exit_code == 0, r.output
    return base


def fill(args, runs, tmp):
    def copy(name):
        dst = tmp / f"{name}_copy"
        if not dst.exists():
            shutil.copytree(runs / name, dst, ignore=shutil.ignore_patterns("prior"))
        return str(dst)
    names = {"img": str(runs / "img"), "toy": str(runs / "toy"), "new": str(tmp / "new"), "tmp": str(tmp)}
    return [copy(a[1:-6]) if a in ("{img_copy}", "{toy_copy}") else a.format(**names) for a in args]


def check(command: str, args: list, output: str, tmp):
    """What each run must have produced, beyond a zero exit."""
    report = json.loads(output.strip().splitlines()[-1]) if "--json" in args else None
    opts = dict(zip(args, args[1:] + [None]))
    if command == "train":
        cfg = json.loads(output) if "--dry-run" in args else json.loads((tmp / "new" / "config.json").read_text())
        for opt, value in opts.items():
            name = opt.lstrip("-").replace("-", "_") if opt.startswith("--") else None
            if name in FIELDS and value is not None and not value.startswith("--"):
                section, field = FIELDS[{"sde": "sde", "T": "T"}.get(name, name)]
                want = cfg[section][field]
                assert str(want) == value or float(want) == float(value), (opt, value, want)
        assert cfg["train"]["importance"] == ("--importance" in args)
        assert (cfg["train"]["reduce_mean"], cfg["train"]["random_flip"]) == ("--reduce-mean" in args, "--flip" in args) \
            or "--preset" in args
        assert cfg["train"]["jit"] == ("--jit" in args) and cfg["train"]["preset"] == opts.get("--preset", "")
        if "--config" in args:              # the file's settings
            source = json.loads(Path(opts["--config"]).read_text())
            assert all(cfg[k] == source[k] for k in ("sde", "data", "model", "train"))
        if "--preset" in args:              # the preset's network, and its parameter count (test_precision)
            assert cfg["model"]["layout"] == "ddpmpp" and cfg["parameters"] > 10**6
    if command == "sample":
        n = int(opts.get("--num-samples") or opts.get("--num"))
        with np.load(report["npz"]) as f:
            assert f["x"].shape[0] == n and np.isfinite(f["x"]).all()
            assert "images" not in f or (f["images"].dtype == np.uint8 and f["images"].shape == (n, 8, 8, 1))
        assert os.path.getsize(report["png"]) > 0 and report["nfe"] > 0
        if "--sample-eps" in opts:
            assert report["eps"] == float(opts["--sample-eps"])
        if opts.get("--sampler") == "ode":
            assert (report["rtol"], report["atol"]) == (float(opts.get("--rtol", 1e-5)), float(opts.get("--atol", 1e-5)))
        calls = -(-n // report["batch_size"])                              # the bar counts every call's NFE
        total = report["nfe"] * calls
        progress = f"NFE {report['nfe']}  eta" if opts.get("--sampler") == "ode" else f"{total}/{total} NFE"
        shown = "--no-progress" not in opts and "--jit" not in opts          # a host callback: not under XLA
        assert (progress in output) == shown, output                         # the final line: all evaluations
        if opts.get("--sampler") in ("heun", "dpm2m"):
            steps = int(opts["--steps"])
            assert report["nfe"] == {"heun": 2 * steps + 1, "dpm2m": steps + 1}[opts["--sampler"]]
        assert report["prior"].startswith({"aux": "aux", "noise": "noise", "auto": "aux"}[opts["--prior"]])
    if command == "evaluate":
        assert np.isfinite(report["likelihood"]["log_prob"]) and report["divergence"] == opts.get("--divergence",
                                                                                                   "hutchinson")
        assert report["repeats"] == int(opts.get("--repeats", 1))
        assert (report["precision"], report["jit"]) == (opts.get("--precision", "fp32"), "--jit" in args)
        from shortdiff_tf.elbo import DEFAULT_DRAWS
        e = report["elbo_noise"]
        assert e["draws_per_example"] == int(opts.get("--elbo-draws", DEFAULT_DRAWS)) and np.isfinite(e["elbo"])
        assert e["control_beta"] == {"on": 1.0, "off": 0.0}.get(opts.get("--control-variate"), e["control_beta"])
        if "elbo_aux" in report:                                  # paired: the difference of the prior terms
            gain = report["elbo_aux_minus_noise"]
            assert gain["mean"] == pytest.approx(report["elbo_aux"]["prior_term"] - e["prior_term"], abs=1e-6)
    if command == "fit-prior":
        prior_cfg = json.loads((Path(opts["--workdir"]) / "prior" / "config.json").read_text())
        assert (prior_cfg["precision"], prior_cfg["jit"]) == (opts.get("--precision", "fp32"), "--jit" in args)
        preset = {"glow-cifar10": (3, 32, 512), "glow-mnist": (2, 16, 256)}.get(opts.get("--preset"))
        if preset:                           # the preset's architecture, with the --glow-* options given on top
            want = [int(opts.get(o, p)) for o, p in zip(("--glow-levels", "--glow-steps", "--glow-hidden"), preset)]
            assert [prior_cfg[k] for k in ("levels", "steps_per_level", "hidden")] == want
    if command == "fit-prior" and report:
        kind = opts.get("--prior", "glow")
        assert report["kind"] == kind and ("effective_components" in report) == (kind == "dpgmm")
    if command == "export":
        assert (tmp / opts["--out"].rsplit("/", 1)[1] / "saved_model.pb").exists()
        if report:                                                 # every sampler's signature at that temperature
            tau = float(opts.get("--temperature", 1.0))
            assert report["temperature"] == {n: tau for n in ("em", "pc", "ode", "heun", "dpm2m")}
    if command == "import":
        cfg = json.loads((tmp / "new" / "config.json").read_text())
        assert cfg["sde"]["T"] == 1.0 and cfg["data"]["shape"] == [16, 16, 3] and (tmp / "new" / "import.json").exists()
        if report:
            assert report["config"] == opts["--config"] and report["step"] == 1234


@pytest.mark.parametrize("command, args", RUNS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(RUNS)])
def test_option_run(runs, tmp_path, command, args):
    args = fill(args, runs, tmp_path)
    r = CliRunner().invoke(cli, [command, *args])
    assert r.exit_code == 0, r.output
    check(command, args, r.output, tmp_path)


STRATEGIES = """
import json, os, socket, sys
from click.testing import CliRunner
from cli.main import cli
s = socket.socket(); s.bind(("localhost", 0)); port = s.getsockname()[1]; s.close()
os.environ["TF_CONFIG"] = json.dumps({{"cluster": {{"worker": [f"localhost:{{port}}"]}},
                                      "task": {{"type": "worker", "index": 0}}}})
for args in {runs!r}:
    r = CliRunner().invoke(cli, args)
    lines = [line for line in r.output.strip().splitlines() if not line.startswith("next:")]   # the result line
    print("EXIT", r.exit_code, lines[-1] if lines else "")
"""

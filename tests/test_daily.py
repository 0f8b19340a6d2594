"""What a user meets every day at the terminal: `shortdiff runs`, the help texts' consistency, and
the hints and files that commands leave (next steps, summaries, TensorBoard events)."""
import json
import shutil

import click
from click.testing import CliRunner

from cli.main import cli
from shortdiff_tf.config import PriorConfig

COMMANDS = ("train", "fit-prior", "sample", "evaluate", "export", "import", "study", "runs", "choose-T")


def options_of(name: str):
    return [p for p in cli.commands[name].params if isinstance(p, click.Option) and p.name != "help"]


def test_every_default_is_shown_once():
    """Click shows a non-empty default itself ([default: x]); a help text that also writes one
    would show it twice.  Options without a default value say in words what they default to."""
    twice = [f"{name} {p.opts[0]}" for name in COMMANDS for p in options_of(name)
             if p.default not in (None, False, ()) and p.show_default is not False and "[default:" in (p.help or "")]
    assert twice == []


def test_an_option_has_one_metavar_and_one_flag_style_across_commands():
    """The same option (--workdir, --jit, --T, ...) is written the same way in every command; the
    choices of --strategy, --prior and --preset differ by command, --out is a file stem for
    sample but a directory for export, and --T takes `auto` (choose-T's T*) where a run is read."""
    seen, ctx = {}, click.Context(cli)
    for name in COMMANDS:
        for p in options_of(name):
            if isinstance(p.type, click.Choice) or p.opts[0] in ("--out", "--T"):
                continue
            style = "flag" if p.is_flag and not p.secondary_opts else "on/off" if p.secondary_opts else p.make_metavar(ctx)
            seen.setdefault(p.opts[0], {}).setdefault(style, []).append(name)
    assert {opt: styles for opt, styles in seen.items() if len(styles) > 1} == {}


def test_an_option_without_a_default_value_says_what_it_defaults_to():
    """e.g. sample --T: [default: the prior's T, else the run's]."""
    silent = [f"{name} {p.opts[0]}" for name in COMMANDS for p in options_of(name)
              if p.default is None and not (p.required or p.is_flag or p.multiple or p.secondary_opts)
              and "[default:" not in (p.help or "")]
    assert silent == []


def test_runs_lists_every_run_with_its_T_step_prior_and_newest_evaluation(glow_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(glow_run[0], root / "a", ignore=shutil.ignore_patterns("prior", "evaluations"))
    shutil.copytree(glow_run[0], root / "group" / "b", ignore=shutil.ignore_patterns("prior", "evaluations"))
    (root / "a" / "prior").mkdir()
    (root / "a" / "prior" / "config.json").write_text(PriorConfig(T=0.3).to_json())
    (root / "a" / "evaluations" / "x").mkdir(parents=True)
    (root / "a" / "evaluations" / "x" / "summary.json").write_text(json.dumps(
        {"likelihood": {"bpd": 3.25}, "T": 0.3, "prior": "aux:glow", "num_examples": 64}))
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "config.json").write_text("{}")
    r = CliRunner().invoke(cli, ["runs", str(root), "--json"])
    assert r.exit_code == 0, r.output
    found = {row["run"]: row for row in json.loads(r.output.strip().splitlines()[-1])["runs"]}
    assert set(found) == {str(root / "a"), str(root / "group" / "b")}
    a, b = found[str(root / "a")], found[str(root / "group" / "b")]
    assert (a["T"], a["step"], a["prior"], a["prior_T"], a["evaluation"]["bpd"]) == (0.4, 3, "glow", 0.3, 3.25)
    assert b["prior"] is None and b["evaluation"] is None and b["bytes"] > 0
    text = CliRunner().invoke(cli, ["runs", str(root)]).output.splitlines()
    assert any("glow at T=0.3" in line and "3.2500 bits/dim" in line and "step 3" in line for line in text)
    r = CliRunner().invoke(cli, ["runs", str(tmp_path / "nowhere")])
    assert r.exit_code != 0 and "is not a directory" in r.output and "Traceback" not in r.output


def test_train_and_fit_prior_end_with_the_next_command(glow_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(glow_run[0], run, ignore=shutil.ignore_patterns("prior", "evaluations"))
    r = CliRunner().invoke(cli, ["train", "--workdir", str(run), "--steps", "5", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"next: shortdiff fit-prior --workdir {run}" in r.output and f"tensorboard --logdir {run / 'tb'}" in r.output
    r = CliRunner().invoke(cli, ["fit-prior", "--workdir", str(run), "--steps", "2", "--glow-steps", "1",
                                 "--glow-hidden", "8", "--batch-size", "8", "--no-progress"])
    assert r.exit_code == 0, r.output
    assert f"next: shortdiff sample --workdir {run}" in r.output and f"--logdir {run / 'prior' / 'tb'}" in r.output
    from tensorboard.backend.event_processing import event_accumulator
    events = event_accumulator.EventAccumulator(str(run / "prior" / "tb"))
    events.Reload()
    assert {"nll_per_dim", "bits_per_dim_at_T", "learning_rate", "prior_samples_x_T"} <= set(events.Tags()["tensors"])


def test_train_takes_a_config_file_with_the_options_given_on_top(glow_run, tmp_path):
    subset = tmp_path / "subset.json"
    subset.write_text(json.dumps({"sde": {"T": 0.3}, "model": {"ch": 8, "num_res_blocks": 1}, "train": {"lr": 5e-4}}))
    r = CliRunner().invoke(cli, ["train", "--config", str(subset), "--lr", "1e-3", "--dry-run", "--workdir",
                                 str(tmp_path / "dry")])
    assert r.exit_code == 0, r.output
    cfg = json.loads(r.output[r.output.index("{"):])
    assert (cfg["sde"]["T"], cfg["model"]["ch"], cfg["train"]["lr"], cfg["data"]["dataset"]) == (0.3, 8, 1e-3, "digits")
    r = CliRunner().invoke(cli, ["train", "--config", str(glow_run[0] / "config.json"), "--steps", "1", "--no-progress",
                                 "--workdir", str(tmp_path / "again"), "--json"])
    assert r.exit_code == 0, r.output
    made, source = (json.loads((p / "config.json").read_text()) for p in (tmp_path / "again", glow_run[0]))
    assert made["train"]["steps"] == 1 and {**made["train"], "steps": 0} == {**source["train"], "steps": 0}
    assert (made["sde"], made["model"], made["data"]) == (source["sde"], source["model"], source["data"])
    bad = tmp_path / "bad.json"
    for text, message in (('{"sde": {"TT": 1}}', "unknown 'sde' settings TT"), ('{"optim": {}}', "unknown sections optim"),
                          ("[1]", "not an object"), ("{oops", "not JSON")):
        bad.write_text(text)
        r = CliRunner().invoke(cli, ["train", "--config", str(bad), "--workdir", str(tmp_path / "never")])
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output
        assert not (tmp_path / "never").exists()


def test_fit_prior_takes_a_prior_config_file(glow_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(glow_run[0], run, ignore=shutil.ignore_patterns("prior", "evaluations", "samples"))
    source = json.loads((glow_run[0] / "prior" / "config.json").read_text())
    r = CliRunner().invoke(cli, ["fit-prior", "--workdir", str(run), "--config", str(glow_run[0] / "prior" / "config.json"),
                                 "--steps", "2", "--no-progress", "--json"])
    assert r.exit_code == 0, r.output
    made = json.loads((run / "prior" / "config.json").read_text())
    assert made["steps"] == 2 and {**made, "steps": 0} == {**source, "steps": 0}

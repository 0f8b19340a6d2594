"""`shortdiff import` of pretrained ScoreSDE and diffusers checkpoints: the imported score equals
what the reference code computed from the same file (tests/fixtures/pretrained, made by running
score_sde_pytorch and diffusers on random weights), through the run and the exported `score`
signature; the imported run trains further, fits a prior at T = 0.4, samples and evaluates; bad
input is one line and writes nothing."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cli.main import cli

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)

FIXTURES = Path(__file__).parent / "fixtures" / "pretrained"
SCORESDE = {"vp/cifar10_ddpmpp_continuous": "vp_cifar10_ddpmpp_continuous",
            "subvp/cifar10_ddpmpp_continuous": "subvp_cifar10_ddpmpp_continuous",
            "vp/cifar10_ddpmpp": "vp_cifar10_ddpmpp",
            "vp/ddpm/cifar10_continuous": "vp_ddpm_cifar10_continuous"}
DIFFUSERS = FIXTURES / "diffusers_ddpm-cifar10-32"
TOL = 1e-5                    # relative: max |ours - reference| / max |reference|, per example


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def tiny_sets(folder: Path) -> list:
    """The --set options that shrink the named config to the fixture's network (its meta)."""
    m = json.loads(str(np.load(folder / "reference.npz")["meta"]))["model"]
    return [f for k, v in (("model.nf", m["nf"]), ("model.ch_mult", ",".join(map(str, m["ch_mult"]))),
                           ("model.num_res_blocks", m["num_res_blocks"]),
                           ("model.attn_resolutions", ",".join(map(str, m["attn_resolutions"]))),
                           ("data.image_size", m["image_size"]))
            for f in ("--set", f"{k}={v}")]


def import_scoresde(name: str, workdir: Path, *extra):
    folder = FIXTURES / "score_sde" / SCORESDE[name]
    return invoke("import", folder / "checkpoint_8.pth", "--config", name, *tiny_sets(folder), "--workdir", workdir,
                  *extra)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Every fixture imported through the CLI -> {name: (run dir, reference x, t, score)}."""
    root, out = tmp_path_factory.mktemp("imported"), {}
    for name, folder in SCORESDE.items():
        r = import_scoresde(name, root / folder, "--json")
        assert r.exit_code == 0, r.output
        ref = np.load(FIXTURES / "score_sde" / folder / "reference.npz")
        out[name] = (root / folder, ref["x"], ref["t"], ref["score"])
    r = invoke("import", DIFFUSERS, "--workdir", root / "diffusers", "--dataset", "cifar10", "--json")
    assert r.exit_code == 0, r.output
    ref = np.load(DIFFUSERS / "reference.npz")
    k = ref["timestep"]
    from shortdiff_tf.config import RunConfig
    from shortdiff_tf.networks.parameterization import discrete_std
    std = discrete_std(RunConfig.load(root / "diffusers").sde.build(), 1000)[k]           # the score of eps
    out["diffusers"] = (root / "diffusers", ref["x"], (k / 999.0).astype(np.float32), -ref["eps"] / std[:, None, None, None])
    return out


def relative(ours, want) -> float:
    return max(float(np.abs(ours[i] - want[i]).max() / np.abs(want[i]).max()) for i in range(len(want)))


@pytest.mark.parametrize("name", [*SCORESDE, "diffusers"])
def test_the_imported_score_is_the_references(imported, name):
    """The run's score function at the reference's (x, t), t = 1e-5 included: the reference's
    output within 1e-5 relative (with the EMA weights, not the raw ones, which differ)."""
    from shortdiff_tf.app.runs import load_run
    run_dir, x, t, want = imported[name]
    run = load_run(run_dir)
    assert run.cfg.sde.T == 1.0 and run.step == (0 if name == "diffusers" else 1234)
    got = run.score_fn()(tf.constant(x), tf.constant(t)).numpy()
    assert relative(got, want) < TOL, relative(got, want)
    record = json.loads((run_dir / "import.json").read_text())
    assert record["weights"] == "the EMA (shadow) weights" and len(record["sha256"]) == 64


def test_the_raw_weights_would_not_match(imported):
    """The fixtures' raw weights differ from their EMA: the first layer imported is the EMA's."""
    from shortdiff_tf.app.runs import load_run
    from shortdiff_tf.pretrained import torch_file
    folder = FIXTURES / "score_sde" / SCORESDE["vp/cifar10_ddpmpp_continuous"]
    ckpt = torch_file.load(folder / "checkpoint_8.pth")
    net = load_run(imported["vp/cifar10_ddpmpp_continuous"][0]).net
    ours = net.embed.dense_0.kernel.numpy()
    np.testing.assert_allclose(ours, ckpt["ema"]["shadow_params"][0].T, rtol=1e-7)
    assert not np.allclose(ours, ckpt["model"]["module.all_modules.0.weight"].T)


@pytest.mark.parametrize("name", ["vp/cifar10_ddpmpp_continuous", "diffusers"])
def test_the_exported_score_signature_is_the_references(imported, name, tmp_path):
    run_dir, x, t, want = imported[name]
    r = invoke("export", "--workdir", run_dir, "--out", tmp_path / "export")
    assert r.exit_code == 0, r.output
    got = tf.saved_model.load(str(tmp_path / "export")).signatures["score"](
        x=tf.constant(x), t=tf.constant(np.maximum(t, 1e-5)))["score"].numpy()
    assert relative(got, want) < TOL


def test_an_imported_run_trains_on_fits_a_prior_at_0_4_samples_and_evaluates(imported, tmp_path):
    """On 16x16 RGB images: train --steps on top continues from the imported step (a fresh Adam),
    fit-prior --T 0.4 reuses the score on [eps, 0.4], sample and evaluate at T = 0.4."""
    images = np.random.RandomState(0).randint(0, 256, (128, 16, 16, 3), dtype=np.uint8)     # ScoreSDE's batch
    np.savez(tmp_path / "rgb16.npz", images=images)
    run = tmp_path / "run"
    r = import_scoresde("vp/cifar10_ddpmpp_continuous", run, "--dataset", tmp_path / "rgb16.npz")
    assert r.exit_code == 0, r.output
    r = invoke("train", "--workdir", run, "--steps", "1236", "--no-progress", "--json")
    assert r.exit_code == 0 and "from step 1234 to 1236" in r.output, r.output
    r = invoke("fit-prior", "--workdir", run, "--T", "0.4", "--steps", "2", "--glow-steps", "1", "--glow-hidden", "8",
               "--batch-size", "8", "--no-progress", "--json")
    assert r.exit_code == 0, r.output
    r = invoke("sample", "--workdir", run, "--T", "0.4", "--num-samples", "2", "--steps", "3", "--json")
    rep = json.loads(r.output.strip().splitlines()[-1])
    assert r.exit_code == 0 and rep["T"] == 0.4 and rep["prior"] == "aux:glow"
    r = invoke("evaluate", "--workdir", run, "--T", "0.4", "--dataset", tmp_path / "rgb16.npz", "--split", "train",
               "--num-examples", "2", "--batch-size", "2", "--rtol", "1e-2", "--atol", "1e-2", "--elbo-draws", "1",
               "--json")
    assert r.exit_code == 0 and np.isfinite(json.loads(r.output.strip().splitlines()[-1])["likelihood"]["bpd"])


def broken_diffusers(tmp_path, change) -> Path:
    folder = tmp_path / "unet"
    shutil.copytree(DIFFUSERS, folder)
    cfg = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps(change(cfg)))
    return folder


@pytest.mark.parametrize("case, message", [
    ("other config", "the file has no tensor all_modules"),
    ("truncated", "is not a PyTorch zip checkpoint"),
    ("not a checkpoint", "is not a PyTorch zip checkpoint"),
    ("no config.json", "has no config.json"),
    ("unknown block", "block type CrossAttnDownBlock2D is not supported"),
    ("VE model", "a VE (Fourier-embedded) model is not supported"),
    ("conditional", "a conditional (class-label) model is not supported"),
    ("no --config", "needs --config"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, case, message):
    pth = FIXTURES / "score_sde" / SCORESDE["vp/ddpm/cifar10_continuous"] / "checkpoint_8.pth"
    run = tmp_path / "run"
    if case == "other config":
        r = invoke("import", pth, "--config", "vp/cifar10_ddpmpp_continuous",
            *tiny_sets(FIXTURES / "score_sde" / SCORESDE["vp/cifar10_ddpmpp_continuous"]), "--workdir", run)
    elif case in ("truncated", "not a checkpoint"):
        bad = tmp_path / "bad.pth"
        bad.write_bytes(pth.read_bytes()[:5000] if case == "truncated" else b"\x00 not torch " * 100)
        r = invoke("import", bad, "--config", "vp/ddpm/cifar10_continuous", "--workdir", run)
    elif case == "no config.json":
        folder = tmp_path / "weights_only"
        folder.mkdir()
        shutil.copy(DIFFUSERS / "unet" / "diffusion_pytorch_model.safetensors", folder)
        r = invoke("import", folder, "--workdir", run)
    elif case == "no --config":
        r = invoke("import", pth, "--workdir", run)
    else:
        change = {"unknown block": lambda c: {**c, "down_block_types": ["CrossAttnDownBlock2D", "AttnDownBlock2D"]},
                  "VE model": lambda c: {**c, "time_embedding_type": "fourier"},
                  "conditional": lambda c: {**c, "num_class_embeds": 10}}[case]
        r = invoke("import", broken_diffusers(tmp_path, change), "--workdir", run)
    assert r.exit_code != 0 and message in r.output.strip().splitlines()[-1] and "Traceback" not in r.output, r.output
    assert not run.exists() and not list(tmp_path.glob(".run.importing"))

"""SavedModel export: reload without the repository (fresh process), saved_model_cli show/run,
outputs equal to the library's for the same seed (within 1e-4), and bad input."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from cli.main import cli
from shortdiff_tf import data as data_lib, pixels, likelihood
from shortdiff_tf.app import export
from shortdiff_tf.app.runs import load_run, resolve_prior
from shortdiff_tf.pixels import to_model_space
from shortdiff_tf.samplers import Sampler, preset
from shortdiff_tf.seeds import split

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)

TOL = dict(rtol=1e-4, atol=1e-4)
SAMPLE_IN = dict(num_samples=3, seed=[1, 2], steps=5)
BPD_SEED = [3, 4]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def exported(glow_run, tmp_path_factory):
    run = glow_run[0]
    out = tmp_path_factory.mktemp("export") / "saved_models" / "digits" / "1"
    r = invoke("export", "--workdir", run, "--out", out, "--json")
    assert r.exit_code == 0, r.output
    return run, out


def library_samples(run_dir, prior_choice="auto", names=("em", "ode", "dpm2m")):
    run = load_run(run_dir)
    prior, T, _ = resolve_prior(run, prior_choice)
    out = {}
    for name in names:
        res = Sampler(run.sde(T), run.score_fn(T), prior, preset(name))(
            SAMPLE_IN["num_samples"], SAMPLE_IN["seed"], steps=SAMPLE_IN["steps"])
        out[f"sample_{name}"], out[f"nfe_{name}"] = res.x.numpy(), res.nfe
    return out


@pytest.fixture(scope="module")
def reference(exported):
    """What the library gives for the inputs the exported signatures are called with."""
    run = load_run(exported[0])
    prior, T, _ = resolve_prior(run, "auto")
    sde, score = run.sde(T), run.score_fn(T)
    out = library_samples(exported[0])
    images = data_lib.load("digits", "test").array[:4]
    est = likelihood.LikelihoodEstimator(sde, score, prior)
    ll = est(to_model_space(images, split(BPD_SEED, 0)), seed=split(BPD_SEED, 1))
    out["bpd"] = likelihood.bits_per_dim(ll).total.numpy()
    x = np.random.RandomState(0).randn(4, 8, 8, 1).astype(np.float32)
    t = np.linspace(0.05, T, 4).astype(np.float32)
    out["score"] = score(tf.constant(x), tf.constant(t)).numpy()
    return out, images, x, t


RELOAD = textwrap.dedent("""
    import json, sys, importlib.abc
    import numpy as np
    import tensorflow as tf          # (imports keras itself; nothing more may be imported below)
    BLOCKED = ("shortdiff_tf", "cli", "tensorflow_probability", "tf_keras")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED + ("keras",):
                raise ImportError("blocked " + name)

    sys.meta_path.insert(0, Block())
    model, io = sys.argv[1], np.load(sys.argv[2])
    m = tf.saved_model.load(model)
    res = {}
    for name in ("em", "ode", "dpm2m"):
        o = m.signatures["sample"](num_samples=tf.constant(3), seed=tf.constant([1, 2]), steps=tf.constant(5),
                                   sampler=tf.constant(name))
        res["sample_" + name], res["nfe_" + name] = o["x"].numpy(), o["nfe"].numpy()
        res["images_" + name] = o["images"].numpy()
    res["bpd"] = m.signatures["bpd"](images=tf.constant(io["images"]), seed=tf.constant([3, 4]))["bpd"].numpy()
    res["score"] = m.signatures["score"](x=tf.constant(io["x"]), t=tf.constant(io["t"]))["score"].numpy()
    meta = json.loads(m.signatures["metadata"]()["metadata"].numpy())
    res["loaded"] = np.array([k for k in sys.modules if k.split(".")[0] in BLOCKED], dtype=object)
    np.savez(sys.argv[3], meta=json.dumps(meta), **res)
""")


SERVE = textwrap.dedent("""
    # What TF Serving does with a model version: load it with the TF1 session loader, replay
    # assets.extra/tf_serving_warmup_requests (PredictionLog records), then answer a request.
    import sys
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2
    tf.compat.v1.disable_eager_execution()
    model, out = sys.argv[1], sys.argv[2]
    sess = tf.compat.v1.Session()
    meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], model)

    def predict(signature, inputs):
        sig = meta.signature_def[signature]
        assert set(inputs) == set(sig.inputs), (signature, sorted(inputs))
        fetch = {k: v.name for k, v in sig.outputs.items()}
        return sess.run(fetch, {sig.inputs[k].name: v for k, v in inputs.items()})

    seen = []
    for raw in tf.compat.v1.io.tf_record_iterator(model + "/assets.extra/tf_serving_warmup_requests"):
        request = prediction_log_pb2.PredictionLog.FromString(raw).predict_log.request
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        outputs = predict(request.model_spec.signature_name, inputs)
        finite = all(np.all(np.isfinite(v)) for v in map(np.asarray, outputs.values()) if v.dtype.kind == "f")
        seen.append((request.model_spec.name, request.model_spec.signature_name,
                     inputs["sampler"].item().decode() if "sampler" in inputs else "", finite))
    x = predict("sample", {"num_samples": np.int32(3), "seed": np.array([1, 2], np.int32),
                           "steps": np.int32(5), "sampler": b"em"})["x"]
    np.savez(out, seen=np.array(seen, dtype=object), x=x)
""")


def _cli(*args):
    return ["saved_model_cli", *map(str, args)]


@pytest.fixture(scope="module")
def processes(exported, reference, tmp_path_factory):
    """The fresh-process reload (every signature) and TF Serving's session loader (its warm-up
    replay, then a request), started together: each one loads the model and lets grappler
    optimise its graph, which dominates its time."""
    run, out = exported
    tmp = tmp_path_factory.mktemp("procs")
    ref, images, x, t = reference
    np.savez(tmp / "in.npz", images=images, x=x, t=t)
    (tmp / "reload.py").write_text(RELOAD)
    (tmp / "serve.py").write_text(SERVE)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmds = {"reload": [sys.executable, "-I", "reload.py", str(out), "in.npz", "res.npz"],
            "serve": [sys.executable, "-I", "serve.py", str(out), "served.npz"]}
    procs = {k: subprocess.Popen(c, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k, c in cmds.items()}
    done = {}
    try:
        for k, p in procs.items():
            _, err = p.communicate(timeout=600)
            done[k] = (p.returncode, err[-3000:])
    finally:
        for p in procs.values():
            p.kill()
    return tmp, ref, done


def test_reload_in_a_fresh_process_without_the_repository_matches_the_library(processes):
    tmp, ref, done = processes
    assert done["reload"][0] == 0, done["reload"][1]
    res = np.load(tmp / "res.npz", allow_pickle=True)
    assert list(res["loaded"]) == []
    meta = json.loads(str(res["meta"]))
    assert meta["prior"] == "aux:glow" and meta["T"] == pytest.approx(0.4) and meta["shape"] == [8, 8, 1]
    for name in ("em", "ode", "dpm2m"):
        np.testing.assert_allclose(res[f"sample_{name}"], ref[f"sample_{name}"], **TOL)
        assert int(res[f"nfe_{name}"]) == ref[f"nfe_{name}"]
        np.testing.assert_array_equal(res[f"images_{name}"], pixels.to_uint8(res[f"sample_{name}"]))
    np.testing.assert_allclose(res["bpd"], ref["bpd"], **TOL)
    np.testing.assert_allclose(res["score"], ref["score"], **TOL)


def test_tf_serving_warmup_requests_cover_every_signature_and_sampler_and_replay(processes):
    """The warm-up file that TF Serving replays at load (the first client call of `sample` is then
    warm: benchmarks/export.py): one valid request per sampler of both sampling signatures, and
    for score and metadata, each answered with finite outputs by the session loader, after which a
    request gives the library's samples."""
    tmp, ref, done = processes
    assert done["serve"][0] == 0, done["serve"][1]
    served = np.load(tmp / "served.npz", allow_pickle=True)
    seen = [tuple(r) for r in served["seen"]]
    assert {name for name, *_ in seen} == {""}                 # no model name: chosen when serving
    signatures = {sig for _, sig, _, _ in seen}
    assert signatures == {"serving_default", "sample", "score", "metadata"}
    for sig in ("serving_default", "sample"):
        assert sorted(s for _, g, s, _ in seen if g == sig) == sorted(export.SAMPLERS)
    assert all(finite for *_, finite in seen)
    np.testing.assert_allclose(served["x"], ref["sample_em"], **TOL)


def test_saved_model_cli_show_lists_the_documented_signatures(exported):
    _, out = exported
    proc = subprocess.run(_cli("show", "--dir", out, "--all"), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    for sig in ("serving_default", "sample", "bpd", "log_prob", "score", "metadata"):
        assert f"signature_def['{sig}']" in text
    block = text.split("signature_def['bpd']")[1].split("signature_def[")[0]
    assert "inputs['images']" in block and "DT_UINT8" in block and "shape: (-1, 8, 8, 1)" in block
    block = text.split("signature_def['sample']")[1].split("signature_def[")[0]
    for name, dtype in (("num_samples", "DT_INT32"), ("seed", "DT_INT32"), ("steps", "DT_INT32"),
                        ("sampler", "DT_STRING"), ("images", "DT_UINT8"), ("x", "DT_FLOAT"), ("nfe", "DT_INT32")):
        assert f"['{name}']" in block and dtype in block


def test_wrong_inputs_to_a_signature_raise_clear_errors(exported):
    m = tf.saved_model.load(str(exported[1]))
    sample, bpd = m.signatures["sample"], m.signatures["bpd"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="sampler must be one of em, pc, ode"):
        sample(num_samples=tf.constant(2), seed=tf.constant([0, 0]), steps=tf.constant(2), sampler=tf.constant("ddim"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples must be >= 1"):
        sample(num_samples=tf.constant(0), seed=tf.constant([0, 0]), steps=tf.constant(2), sampler=tf.constant("em"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="uint8"):
        bpd(images=tf.zeros([2, 8, 8, 1], tf.float32), seed=tf.constant([0, 0]))       # dtype
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images \[2,8,8\] is not compatible .* \[\?,8,8,1\]"):
        bpd(images=tf.zeros([2, 8, 8], tf.uint8), seed=tf.constant([0, 0]))            # rank
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"seed \[3\] is not compatible .* \[2\]"):
        bpd(images=tf.zeros([2, 8, 8, 1], tf.uint8), seed=tf.constant([0, 0, 0]))      # shape
    with pytest.raises(tf.errors.InvalidArgumentError, match="one time per row"):
        m.signatures["score"](x=tf.zeros([2, 8, 8, 1]), t=tf.zeros([3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="x holds no rows; pass at least one"):
        m.signatures["log_prob"](x=tf.zeros([0, 8, 8, 1]), seed=tf.constant([0, 0]))     # an empty batch
    with pytest.raises(tf.errors.InvalidArgumentError, match="images holds no rows"):
        bpd(images=tf.zeros([0, 8, 8, 1], tf.uint8), seed=tf.constant([0, 0]))


def test_signatures_refuse_non_finite_and_out_of_range_inputs_at_once(exported):
    """NaN reaches no solver (it used to run for ever); t outside [eps, T], too many samples or steps
    fail before any sampling op."""
    import time
    m = tf.saved_model.load(str(exported[1]))
    x = np.zeros([2, 8, 8, 1], np.float32)
    x[0, 0, 0, 0] = np.nan
    start = time.perf_counter()
    with pytest.raises(tf.errors.InvalidArgumentError, match="x holds NaN or infinite values"):
        m.signatures["log_prob"](x=tf.constant(x), seed=tf.constant([0, 0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="x holds NaN or infinite values"):
        m.signatures["score"](x=tf.constant(x), t=tf.constant([0.1, 0.1]))
    assert time.perf_counter() - start < 60
    for t in (0.0, 0.5):                                   # the run's interval is [1e-5, 0.4]
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"t must be in \[eps, T\] = \[1e-05, 0.4\]"):
            m.signatures["score"](x=tf.zeros([1, 8, 8, 1]), t=tf.constant([t]))
    sample = m.signatures["sample"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_samples must be <= 4096"):
        sample(num_samples=tf.constant(5000), seed=tf.constant([0, 0]), steps=tf.constant(2), sampler=tf.constant("em"))
    with pytest.raises(tf.errors.InvalidArgumentError, match="steps must be <= 100000"):
        sample(num_samples=tf.constant(1), seed=tf.constant([0, 0]), steps=tf.constant(10**6), sampler=tf.constant("em"))


def test_export_without_the_aux_prior_starts_from_p_noise(exported, tmp_path):
    run, _ = exported
    out = tmp_path / "noise" / "1"
    r = invoke("export", "--workdir", run, "--out", out, "--prior", "noise")
    assert r.exit_code == 0, r.output
    m = tf.saved_model.load(str(out))
    assert json.loads(m.signatures["metadata"]()["metadata"].numpy())["prior"] == "noise"
    ref = library_samples(run, "noise", names=("em",))
    o = m.signatures["sample"](num_samples=tf.constant(3), seed=tf.constant([1, 2]), steps=tf.constant(5),
                               sampler=tf.constant("em"))
    np.testing.assert_allclose(o["x"].numpy(), ref["sample_em"], **TOL)


def test_export_bad_input_is_one_line_and_overwrites_nothing(exported, tmp_path):
    run, out = exported
    before = sorted(p.name for p in out.rglob("*"))
    r = CliRunner().invoke(cli, ["export", "--workdir", str(run), "--out", str(out)])
    assert r.exit_code != 0 and "already exists" in r.output and "Traceback" not in r.output
    assert sorted(p.name for p in out.rglob("*")) == before
    empty = tmp_path / "untrained"
    shutil.copytree(run, empty, ignore=shutil.ignore_patterns("checkpoints"))
    r = CliRunner().invoke(cli, ["export", "--workdir", str(empty), "--out", str(tmp_path / "m" / "1")])
    assert r.exit_code != 0 and "no checkpoint" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_default_out_is_the_next_version_under_the_run_name(tmp_path):
    run = tmp_path / "runs" / "digits-vp-T0.4"
    assert export.default_out(run, tmp_path / "sm") == tmp_path / "sm" / "digits-vp-T0.4" / "1"
    (tmp_path / "sm" / "digits-vp-T0.4" / "1").mkdir(parents=True)
    (tmp_path / "sm" / "digits-vp-T0.4" / "7").mkdir()
    assert export.default_out(run, tmp_path / "sm") == tmp_path / "sm" / "digits-vp-T0.4" / "8"


def test_warmup_records_round_trip_and_stay_within_tf_servings_limit(tmp_path):
    from shortdiff_tf.app import warmup
    records = warmup.requests(("em", "ode"), (8, 8, 1), 0.4)
    warmup.write(tmp_path, records)
    back = warmup.read(tmp_path)
    assert [sig for sig, _ in back] == [sig for sig, _ in records]
    for (_, sent), (_, got) in zip(records, back):
        assert sorted(sent) == sorted(got)
        for name, value in sent.items():
            np.testing.assert_array_equal(np.asarray(got[name]), np.asarray(value))
            if np.asarray(value).dtype.kind != "S":                # strings come back as bytes objects
                assert np.asarray(got[name]).dtype == np.asarray(value).dtype
    with pytest.raises(ValueError, match="at most 1000"):
        warmup.write(tmp_path / "big", records * 300)
    assert not (tmp_path / "big").exists()

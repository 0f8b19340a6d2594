"""`shortdiff choose-T`: the rule on paired synthetic bits/dim (exact cases), and the search on
the suite's digits run (T_max = 0.4): views with their priors, warm starts, the report, the
figure, a resumed rerun, and bad input."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from shortdiff_tf import sde as sde_lib
from shortdiff_tf.study.choose_T import Z_ONE_SIDED_5, chosen, next_T, verdicts, verdicts_unpaired

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)


def paired(rng, n=400):
    """Per-image bits/dim at four T: 0.2 clearly worse, 0.4 worse by 0.004 (within 0.01), 0.7 the
    best, 1.0 worse by 0.03; the images' own spread (sd 0.5) is shared, the paired noise small."""
    base = rng.normal(3.0, 0.5, n)
    return {0.2: base + 0.4 + rng.normal(0, 0.01, n), 0.4: base + 0.004 + rng.normal(0, 0.01, n),
            0.7: base + rng.normal(0, 0.01, n), 1.0: base + 0.03 + rng.normal(0, 0.01, n)}


def test_the_rule_takes_the_shortest_T_within_the_tolerance_of_the_best_on_paired_differences():
    bpd = paired(np.random.RandomState(0))
    best, v = verdicts(bpd, tolerance=0.01)
    assert best == 0.7 and v[0.7]["difference"] == 0.0 and v[0.7]["passes"]
    assert [T for T in sorted(v) if v[T]["passes"]] == [0.4, 0.7] and chosen(v) == 0.4
    for T in v:                                          # the verdict is the documented inequality
        d = bpd[T] - bpd[0.7]
        sem = d.std(ddof=1) / np.sqrt(d.size)
        assert v[T]["difference_sem"] == pytest.approx(sem)
        assert v[T]["passes"] == (d.mean() - Z_ONE_SIDED_5 * sem <= 0.01)
    # unpaired standard errors (sd 0.5 / 20 = 0.025) would not separate 0.4 from 1.0: pairing does
    assert v[0.4]["difference_sem"] < 0.002 and not v[1.0]["passes"]
    assert chosen(verdicts(bpd, tolerance=1e-6)[1]) == 0.7     # no slack: the best itself
    assert chosen(verdicts(bpd, tolerance=1.0)[1]) == 0.2      # everything passes: the shortest


def test_a_difference_lost_in_its_noise_passes_and_bisection_looks_below_T_star():
    rng = np.random.RandomState(1)
    base = rng.normal(3.0, 0.5, 50)
    noise = rng.normal(0, 0.1, 50)
    noisy = {0.3: base + 0.02 + noise - noise.mean(), 0.6: base.copy()}     # +0.02 exactly, SE ~0.014: cannot reject
    _, v = verdicts(noisy, tolerance=0.01)
    assert v[0.3]["passes"] and chosen(v) == 0.3 and next_T(v) is None
    _, v = verdicts(paired(np.random.RandomState(0)), tolerance=0.01)
    assert next_T(v) == pytest.approx(0.3)                # between 0.2 (fails) and T* = 0.4


def test_a_flat_curve_chooses_the_shortest_T_and_a_best_at_T_max_chooses_T_max():
    rng = np.random.RandomState(2)
    base = rng.normal(3.0, 0.5, 100)
    flat = {T: base + rng.normal(0, 1e-4, 100) for T in (0.2, 0.5, 1.0)}
    assert chosen(verdicts(flat, tolerance=0.01)[1]) == 0.2
    rising = {0.2: base + 0.3, 0.5: base + 0.1, 1.0: base.copy()}          # shorter is always worse
    best, v = verdicts(rising, tolerance=0.01)
    assert best == 1.0 and chosen(v) == 1.0 and next_T(v) == pytest.approx(0.75)


def test_unpaired_fid_curves_judge_the_difference_on_both_errors_against_a_relative_tolerance():
    """FID-like (value, standard error) at each T: within 2% of the best, noisy, flat, best at T_max."""
    fid = {0.2: (30.0, 0.5), 0.4: (20.3, 0.4), 0.6: (20.0, 0.4), 1.0: (21.5, 0.4)}
    best, v = verdicts_unpaired(fid, 0.02)
    assert best == 0.6 and v[0.6]["difference_sem"] == 0.0 and chosen(v) == 0.4      # 0.3 < 0.4 = 2% of 20
    assert v[0.4]["difference_sem"] == pytest.approx(np.hypot(0.4, 0.4))
    for T, (m, s) in fid.items():                        # the documented inequality
        sem = 0.0 if T == 0.6 else np.hypot(s, 0.4)
        assert v[T]["passes"] == ((m - 20.0) - Z_ONE_SIDED_5 * sem <= 0.02 * 20.0)
    noisy = {0.2: (24.0, 3.0), 0.6: (20.0, 0.4)}          # 4 worse, but +-3: cannot reject
    assert chosen(verdicts_unpaired(noisy, 0.02)[1]) == 0.2
    flat = {T: (20.0 + 0.01 * k, 0.2) for k, T in enumerate((0.2, 0.5, 1.0))}
    assert chosen(verdicts_unpaired(flat, 0.02)[1]) == 0.2
    rising = {0.2: (40.0, 0.2), 0.5: (25.0, 0.2), 1.0: (20.0, 0.2)}
    best, v = verdicts_unpaired(rising, 0.02)
    assert best == 1.0 and chosen(v) == 1.0 and next_T(v) == pytest.approx(0.75)
    assert chosen(verdicts_unpaired(rising, 6.0, relative=False)[1]) == 0.5           # an absolute tolerance


def test_a_budget_becomes_the_steps_that_spend_at_most_it():
    from shortdiff_tf import samplers
    from shortdiff_tf.samplers import steps_for_nfe
    for name in ("em", "pc", "heun", "dpm2m"):
        for nfe in (3, 5, 10, 19, 100):
            steps = steps_for_nfe(name, nfe)
            planned = samplers.Sampler(sde_lib.get_sde("vp", T=0.4), None, None, samplers.preset(name)).planned_nfe(steps)
            assert planned <= max(nfe, planned) and (steps == 1 or planned <= nfe), (name, nfe, steps, planned)
            assert steps == 1 or samplers.Sampler(sde_lib.get_sde("vp", T=0.4), None, None,
                                                  samplers.preset(name)).planned_nfe(steps + 1) > nfe
    with pytest.raises(ValueError, match="ode sampler chooses its own steps"):
        steps_for_nfe("ode", 10)


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


SEARCH = ["--T-grid", "0.2,0.4", "--refine", "1", "--num-examples", "4", "--batch-size", "4", "--rtol", "1e-2",
          "--atol", "1e-2", "--prior-steps", "3", "--glow-levels", "0", "--glow-steps", "1", "--glow-hidden", "8",
          "--seed", "0", "--no-progress"]


def test_choose_T_searches_fits_warm_starts_and_resumes_without_touching_the_run(glow_run, tmp_path, monkeypatch):
    classifier = tmp_path / "digits.keras"
    r = invoke("train-classifier", "--dataset", "digits", "--epochs", "1", "--out", classifier)
    assert r.exit_code == 0, r.output
    run = tmp_path / "run"
    shutil.copytree(glow_run[0], run, ignore=shutil.ignore_patterns("prior", "evaluations", "samples"))
    before = {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()}
    r = invoke("choose-T", "--workdir", run, *SEARCH, "--tolerance", "1e-9", "--strategy", "default", "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output.strip().splitlines()[-1])
    Ts = [p["T"] for p in rep["points"]]
    assert Ts[0] == 0.2 and 0.4 in Ts and set(Ts) <= {0.2, 0.3, 0.4}
    passing = [p["T"] for p in rep["points"] if p["passes"]]
    assert rep["T_star"] == min(passing) and rep["T_best"] in passing
    if rep["T_star"] == 0.4:                                # 0.2 failed: one bisection step at 0.3
        assert 0.3 in Ts
    by_T = {p["T"]: p for p in rep["points"]}
    assert by_T[0.2]["warm_start_from"] is None and by_T[0.4]["warm_start_from"] == 0.2
    assert "warm start from" in r.output
    for T, p in by_T.items():                               # every view is a run with its prior at T
        view = run / "views" / f"T{T:g}"
        assert p["view"] == str(view) and json.loads((view / "prior" / "config.json").read_text())["T"] == T
        assert p["em_nfe"] == round(1000 * T) and np.isfinite(p["bpd"]) and np.isfinite(p["bpd_noise"])
    assert rep["saving"]["em_nfe_at_T_star"] == round(1000 * rep["T_star"]) and rep["saving"]["em_nfe_at_T_max"] == 400
    assert (run / "choose_T.png").stat().st_size > 0 and json.loads((run / "choose_T.json").read_text())["T_star"] \
        == rep["T_star"]
    assert {p.name: p.stat().st_mtime_ns for p in (run / "checkpoints").iterdir()} == before
    assert not (run / "prior").exists()
    again = invoke("choose-T", "--workdir", run, *SEARCH, "--tolerance", "100", "--strategy", "mirrored",
                   "--check", "--json")                                               # resumes: no new fit
    assert again.exit_code == 0 and "fitting a Glow" not in again.output, again.output
    rep = json.loads(again.output.strip().splitlines()[-1])
    assert rep["T_star"] == 0.2                                                           # all pass: the shortest
    c = rep["held_out_check"]                      # T* against the best on images 5-8 and seed 1
    assert c["T_star"] == 0.2 and c["T_best"] == rep["T_best"] and "held-out check" in again.output
    if c["T_best"] != 0.2:
        assert c["images"] == "test images 5-8" and c["seed"] == 1 and c["allowed"] == 100
        assert c["within_tolerance"] == (c["difference"] - Z_ONE_SIDED_5 * c["difference_sem"] <= 100)
        assert np.isfinite(c["difference"]) and c["difference_sem"] > 0
    # a 3-step Glow is far worse than p_noise on held-out x_T: its calibration says so, and T* uses p_noise
    star = {p["T"]: p for p in rep["points"]}[0.2]
    assert star["calibration"]["use"] == "noise" and star["calibration"]["nll_gain_per_dim"] < 0
    assert rep["prior"] == star["prior"] == "noise" and star["value"] == star["value_noise"]
    sample_metric = ["--num-samples", "16", "--extractor", classifier]
    for metric, extra in (("elbo", ["--elbo-draws", "2"]), ("kid", ["--nfe", "4", *sample_metric]),
                          ("fid", ["--sampler", "heun", "--nfe", "5", "--ode-fit-examples", "64", "--T-grid", "0.4", *sample_metric])):
        r = invoke("choose-T", "--workdir", run, *SEARCH, "--refine", "0", "--metric", metric, *extra, "--json")
        assert r.exit_code == 0 and "on the sde target" not in r.output, r.output      # em (kid's default) reuses every fit
        m = json.loads(r.output.strip().splitlines()[-1])
        grid = {0.4} if "heun" in extra else {0.2, 0.4}
        assert m["metric"] == metric and {p["T"] for p in m["points"]} == grid and m["T_star"] == chosen(
            {p["T"]: p for p in m["points"]})
        for p in m["points"]:
            assert np.isfinite(p["value"]) and p["value_sem"] >= 0 and p["passes"] == (
                p["difference"] - Z_ONE_SIDED_5 * p["difference_sem"] <= m["tolerance"] * (
                    abs(min(q["value"] for q in m["points"])) if m["tolerance_relative"] else 1.0))
        if metric == "elbo":
            assert m["tolerance"] == 0.01 and not m["tolerance_relative"] and "ELBO bits/dim bound" in r.output
            continue
        assert m["tolerance"] == 0.02 and m["tolerance_relative"] and metric.upper() in r.output
        sampler = extra[1] if extra[0] == "--sampler" else "em"
        assert m["sampler"] == sampler and f"{sampler} takes {m['saving']['nfe_at_T_star']} network evaluations" in r.output
        budget = int(extra[extra.index("--nfe") + 1])
        assert all(p["nfe"] <= budget for p in m["points"]) and m["saving"]["nfe_at_T_star"] <= budget
        assert ("on the ode target" in r.output) == (sampler == "heun")
        if sampler == "heun":                     # the ode-target Glow starts from the sde-target one at its T
            assert f"warm start from {run / 'views' / 'T0.4' / 'prior' / 'checkpoints'}" in r.output
    check_the_ode_samplers_start(run, m)
    # the run moves (another machine or mount point) and is named from another working directory: --T auto finds
    # T*'s view under it, and the view's link to the run's checkpoints still holds
    (tmp_path / "elsewhere").mkdir()
    shutil.move(run, tmp_path / "elsewhere" / "run")
    monkeypatch.chdir(tmp_path / "elsewhere")
    run, view_name = Path("run"), Path(m["view"]).name
    r = invoke("sample", "--workdir", run, "--T", "auto", "--num-samples", "2", "--steps", "2", "--json")
    rep = json.loads(r.output.strip().splitlines()[-1])                  # T*, its view and prior; em: temperature 1
    assert r.exit_code == 0 and (rep["T"], rep["prior"] == "noise", rep["temperature"]) == (
        m["T_star"], m["prior"] == "noise", 1.0) and str(run / "views" / view_name) in rep["npz"], r.output
    r = invoke("sample", "--workdir", run, "--T", "auto", "--sampler", "heun", "--num-samples", "2", "--steps", "2",
               "--json")                                                                # heun: choose-T's temperature
    assert r.exit_code == 0 and json.loads(r.output.strip().splitlines()[-1])["temperature"] == m["temperature"], r.output
    r = invoke("sample", "--workdir", run, "--T", "auto", "--prior", "aux", "--temperature", "0.5", "--num-samples", "2",
               "--steps", "2", "--json")
    rep = json.loads(r.output.strip().splitlines()[-1])
    assert r.exit_code == 0 and rep["prior"] == "aux:glow" and rep["temperature"] == 0.5, r.output
    r = invoke("evaluate", "--workdir", run, "--T", "auto", "--num-examples", "2", "--batch-size", "2", "--rtol", "1e-2",
               "--atol", "1e-2", "--elbo-draws", "1", "--no-progress", "--json")
    assert r.exit_code == 0 and json.loads(r.output.strip().splitlines()[-1])["T"] == m["T_star"], r.output
    r = invoke("export", "--workdir", run, "--T", "auto", "--out", tmp_path / "model", "--json")
    rep = json.loads(r.output.strip().splitlines()[-1])
    assert r.exit_code == 0 and rep["T"] == m["T_star"], r.output
    assert rep["temperature"] == {"em": 1.0, "pc": 1.0, "ode": 1.0, "heun": m["temperature"], "dpm2m": 1.0}


def check_the_ode_samplers_start(run, m):
    """heun's report: at every T an ode-target Glow on the first 64 training images, warm-started
    from the sde-target Glow at the same T, and the start its calibration chose (view, prior,
    temperature) is the one sampled from."""
    from shortdiff_tf.calibration import TEMPERATURES
    for p in m["points"]:
        o, T = p["ode_start"], p["T"]
        ode_view = run / "views" / f"T{T:g}-ode"
        pcfg = json.loads((ode_view / "prior" / "config.json").read_text())
        assert (pcfg["target"], pcfg["T"], pcfg["num_fit_samples"]) == ("ode", T, 64)
        assert o["use"] in ("sde", "ode", "noise") and set(o) >= {"sde_glow", "ode_glow", "reason"}
        assert p["view"] == str(ode_view if o["use"] == "ode" else run / "views" / f"T{T:g}")
        assert p["prior"] == ("noise" if o["use"] == "noise" else "aux") and o["temperature"] == p["temperature"]
        assert p["temperature"] in TEMPERATURES and (o["use"] != "noise" or p["temperature"] == 1.0)
        for name in ("sde", "ode"):                 # a Glow is used only when it passes its calibration
            assert o["use"] != name or o[f"{name}_glow"]["use"] == "aux"
    assert m["view"] == {p["T"]: p for p in m["points"]}[m["T_star"]]["view"]


def test_T_auto_before_choose_T_says_how_to_get_it(glow_run):
    code = CliRunner().invoke(cli, ["sample", "--workdir", str(glow_run[0]), "--T", "auto"])
    assert code.exit_code != 0 and "--T auto needs" in code.output and "shortdiff choose-T --workdir" in code.output


@pytest.mark.parametrize("args, message", [
    (["--T-grid", "0.2,0.5"], "--T 0.5 is beyond the T = 0.4"),
    (["--T-grid", "0.2,0.2"], "distinct diffusion times"),
    (["--T-grid", "0.2,x"], "comma-separated numbers"),
    (["--tolerance", "nan"], "--tolerance"),
])
def test_choose_T_bad_input_is_one_line_and_writes_nothing(glow_run, tmp_path, args, message):
    run = tmp_path / "run"
    shutil.copytree(glow_run[0], run, ignore=shutil.ignore_patterns("prior", "evaluations", "samples"))
    r = invoke("choose-T", "--workdir", run, *args)
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output
    assert not (run / "views").exists()


def test_a_sample_metric_without_an_extractor_or_with_a_budget_for_ode_is_one_line(glow_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                               # no classifiers/digits.keras here
    for args, message in ((["--metric", "fid"], "--metric fid needs --extractor"),
                          (["--metric", "kid", "--sampler", "ode", "--nfe", "10"], "the ode sampler chooses its own steps"),
                          (["--metric", "fid", "--extractor", "missing.keras"], "no such file")):
        r = invoke("choose-T", "--workdir", glow_run[0], *args)
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output
    assert not (glow_run[0] / "views").exists()


def test_train_T_auto_trains_at_T_1_then_chooses_T_with_choose_T_s_defaults(tmp_path, monkeypatch):
    """`train --T auto` = train at T = 1, then `choose-T` with its own defaults (here made tiny by
    changing those defaults, so the test also shows that the defaults are what it takes)."""
    from cli.choose_command import choose_T
    tiny = {"T_grid": "1", "refine": 0, "num_examples": 2, "batch_size": 2, "rtol": 1e-2, "atol": 1e-2,
            "prior_steps": 2, "glow_steps": 1, "glow_hidden": 8, "glow_levels": 0}
    for p in choose_T.params:
        if p.name in tiny:
            monkeypatch.setattr(p, "default", tiny[p.name])
    run = tmp_path / "run"
    r = invoke("train", "--T", "auto", "--workdir", run, "--steps", "2", "--batch-size", "8", "--ch", "8",
               "--no-progress", "--sample-grid", "0", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads((run / "config.json").read_text())["sde"]["T"] == 1.0
    rep = json.loads(r.output.strip().splitlines()[-1])
    assert rep["T_max"] == 1.0 and [p["T"] for p in rep["points"]] == [1.0] and rep["metric"] == "bpd"
    assert (run / "choose_T.json").is_file() and "--T auto: choosing T" in r.output
    r = invoke("train", "--T", "auto", "--dataset", "gmm1d", "--workdir", tmp_path / "toy")
    assert r.exit_code != 0 and "for toy data compare T with `shortdiff study`" in r.output


def test_the_library_config_refuses_a_sample_metric_without_an_extractor_and_an_unknown_metric():
    from shortdiff_tf.study.choose_T import ChooseTConfig
    with pytest.raises(ValueError, match="--metric fid needs --extractor"):
        ChooseTConfig(metric="fid")
    with pytest.raises(ValueError, match="unknown metric 'fld'"):
        ChooseTConfig(metric="fld")
    assert ChooseTConfig(metric="kid", extractor="c.keras").tol == 0.02 and ChooseTConfig().tol == 0.01


def test_the_temperature_of_sample_and_export_follows_choose_T_only_for_its_sampler_unless_given(tmp_path):
    from cli import checks
    from cli.commands import export_temperatures
    view = tmp_path / "views" / "T0.3-ode"
    view.mkdir(parents=True)
    (view / "config.json").write_text("{}")
    (tmp_path / "choose_T.json").write_text(json.dumps({"view": str(view), "T_star": 0.3, "prior": "aux",
                                                         "sampler": "heun", "temperature": 0.9}))
    assert checks.chosen_temperature(tmp_path, "auto", None, "heun") == 0.9
    assert checks.chosen_temperature(tmp_path, "auto", None, "em") == 1.0          # measured for heun only
    assert checks.chosen_temperature(tmp_path, "auto", 0.7, "heun") == 0.7          # given: it wins
    assert checks.chosen_temperature(tmp_path, 0.3, None, "heun") == 1.0
    assert export_temperatures(tmp_path, "auto", None) == {"heun": 0.9}
    assert export_temperatures(tmp_path, 0.3, 0.8) == {n: 0.8 for n in ("em", "pc", "ode", "heun", "dpm2m")}
    assert export_temperatures(tmp_path, None, None) == {}
    assert checks.chosen_T(tmp_path, "auto") == (str(view), 0.3, "aux")
    r = invoke("export", "--workdir", tmp_path, "--temperature", "0")
    assert r.exit_code != 0 and "--temperature" in r.output and "Traceback" not in r.output, r.output

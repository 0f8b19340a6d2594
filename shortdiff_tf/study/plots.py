"""PNG figures of a study, in the spirit of the paper's Fig. 1 (sample quality against T),
Fig. 2 (the ELBO and its terms against T) and Fig. 4 (the auxiliary model's complexity)."""
from __future__ import annotations

from pathlib import Path

from shortdiff_tf.study.summary import curve

PRIORS = (("noise", "p_noise (standard)", "tab:red"), ("aux", "auxiliary prior (ours)", "tab:blue"))


def _axes(ncols: int = 1, width: float = 4.2):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 3.4), squeeze=False)
    return plt, fig, axes[0]


def _band(ax, summary, key, label, color, marker="o"):
    Ts, med, lo, hi = curve(summary, key)
    if not len(Ts):
        return
    ax.plot(Ts, med, marker=marker, color=color, label=label, ms=4)
    ax.fill_between(Ts, lo, hi, color=color, alpha=0.2, lw=0)


def _save(plt, fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def sample_quality(summary: dict, out: Path, key: str = "sample_logp_em", ylabel: str = "mean log p_data(samples)") -> str:
    """Fig. 1: the mean true log-density of SDE samples against T, median and 95% band over seeds."""
    plt, fig, (ax,) = _axes()
    for name, label, color in PRIORS:
        _band(ax, summary, f"{key}_{name}", label, color)
    ax.set(xlabel="diffusion time T", ylabel=ylabel)
    ax.legend(fontsize=8)
    return _save(plt, fig, out)


def elbo_terms(summary: dict, out: Path, markers=()) -> str:
    """Fig. 2: KL[p(x,T) || prior] falls with T, the score gap G rises, the ELBO peaks;
    ``markers`` = [(label, T, linestyle)] draws vertical lines at chosen T."""
    plt, fig, axes = _axes(3)
    for name, label, color in PRIORS:
        _band(axes[0], summary, f"kl_{name}", label, color)
        _band(axes[2], summary, f"elbo_{name}", label, color)
    axes[0].set(xlabel="T", ylabel="KL[p(x,T) || prior] (nats)", yscale="log")
    _band(axes[1], summary, "G", "score gap G", "tab:green")
    axes[1].set(xlabel="T", ylabel="G(s_theta, T) (nats)")
    axes[2].set(xlabel="T", ylabel="ELBO (nats)")
    for label, T, style in markers:                      # T* of the grid and of the ascent
        axes[2].axvline(T, ls=style, color="k", lw=1, label=label)
    for ax in (axes[0], axes[2]):
        ax.legend(fontsize=7)
    return _save(plt, fig, out)


def complexity(summary: dict, out: Path) -> str:
    """Fig. 4: effective components of the Dirichlet-process mixture prior against T."""
    plt, fig, (ax,) = _axes()
    _band(ax, summary, "aux_components", "components with weight > 0.01", "tab:blue")
    _band(ax, summary, "aux_perplexity", "exp(entropy of weights)", "tab:purple", marker="s")
    ax.set(xlabel="diffusion time T", ylabel="DP-GMM complexity")
    ax.legend(fontsize=7)
    return _save(plt, fig, out)


def nfe(summary: dict, out: Path) -> str:
    """Cost follows T: SDE steps (1000 T) and adaptive ODE evaluations."""
    plt, fig, (ax,) = _axes()
    for name, label, color in PRIORS:
        _band(ax, summary, f"nfe_ode_{name}", f"ODE, {label}", color, marker="s")
    _band(ax, summary, "nfe_em_noise", "SDE (Euler-Maruyama)", "tab:gray")
    ax.set(xlabel="diffusion time T", ylabel="NFE")
    ax.legend(fontsize=7)
    return _save(plt, fig, out)

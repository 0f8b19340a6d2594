"""The settings of a diffusion-time study, frozen and written into the study directory first."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from shortdiff_tf.files import atomic_write_json, read_json

DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
SAMPLERS = ("em", "pc", "ode", "heun", "dpm2m")        # samplers.PRESETS (tested); no TensorFlow here
GROWABLE = ("T_grid", "seeds")       # a rerun may extend the grid or add seeds


@dataclass(frozen=True)
class StudyConfig:
    dataset: str = "gmm1d"
    sde: str = "vp"
    T_grid: Tuple[float, ...] = DEFAULT_GRID
    seeds: int = 3
    eps: float = 1e-5
    # toy score model: deliberately small, so that the optimal score gap G grows with T
    width: int = 16
    depth: int = 2
    train_steps: int = 2000
    batch_size: int = 256
    # auxiliary prior (toy: a Dirichlet-process GMM, paper Fig. 4; images: Glow)
    prior: str = "dpgmm"
    prior_steps: int = 2000
    glow_hidden: int = 64          # Glow coupling width and steps per level (images)
    glow_steps_per_level: int = 4
    prior_fit_samples: int = 2000  # DP-GMM: diffused points (more points keep more components alive
                                   # and take minutes to converge; 2000 converge in seconds)
    # estimators
    num_eval: int = 20000          # x0 draws for the ELBO terms and G (Monte Carlo, with sem)
    num_ll: int = 256              # points for the exact PF-ODE log-likelihood
    num_samples: int = 1024        # samples per prior for the mean true log-density (Fig. 1)
    samplers: Tuple[str, ...] = ("em", "ode")
    rtol: float = 1e-5
    atol: float = 1e-5
    # images with --reuse-score RUN
    reuse_score: Optional[str] = None
    num_examples: int = 64         # test images for bits/dim
    extractor: Optional[str] = None
    fid_samples: Optional[int] = None   # samples per FID [default: 50,000 with the standard network, else num_samples]
    fid_stats: Optional[str] = None     # reference statistics (.npz with mu, sigma) of the same extractor

    def __post_init__(self):
        if not self.T_grid:
            raise ValueError("--T-grid is empty; give times in (eps, 1], e.g. 0.2,0.4,1.0")
        bad = [T for T in self.T_grid if not self.eps < T <= 1.0]
        if bad:
            raise ValueError(f"--T-grid values {bad} are outside (eps={self.eps:g}, 1]; use times in (eps, 1]")
        unknown = set(self.samplers) - set(SAMPLERS)
        if unknown or not self.samplers:
            raise ValueError(f"--samplers {','.join(self.samplers)}: choose from {', '.join(SAMPLERS)}")
        if self.seeds < 1:
            raise ValueError(f"--seeds must be >= 1; got {self.seeds}")

    def save(self, study_dir: Path) -> None:
        """Write study.config.json; a rerun in the same directory must ask for the same study."""
        path = Path(study_dir) / "study_config.json"
        if path.exists():
            saved = read_json(path, f"delete it (or all of {study_dir}) to start the study over")
            mine = json.loads(json.dumps(dataclasses.asdict(self)))
            default = json.loads(json.dumps(dataclasses.asdict(StudyConfig())))    # fields added since
            diff = {k: (saved.get(k, default[k]), v) for k, v in mine.items()
                    if saved.get(k, default[k]) != v and k not in GROWABLE}
            if diff:
                items = ", ".join(f"{k}: {a} there, {b} asked" for k, (a, b) in diff.items())
                raise ValueError(f"{study_dir} holds a study with other settings ({items}); use another --workdir")
        atomic_write_json(path, dataclasses.asdict(self))

"""One frozen, typed run configuration, written as JSON into the run directory first.

Presets are functions returning ``dataclasses.replace(base, ...)``; builders look classes up in
registries.  ``RunConfig.from_json(RunConfig.to_json(c)) == c``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

from shortdiff_tf import hints
from shortdiff_tf.files import atomic_write_text


def check_finite(cfg) -> None:
    """Every float setting of a config section is a finite number (NaN and infinity are refused)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{type(cfg).__name__}.{f.name} is {value}; give a finite number")


PRECISIONS = ("fp32", "bf16", "fp16")
EMBEDDINGS = ("fourier", "positional")      # networks.parameterization.EMBEDDINGS (tested)
SCORE_STDS = ("sde", "scoresde", "discrete")  # networks.parameterization.STDS (tested)
UP_ATTENTION = ("", "every", "last")        # networks.unet.UP_ATTENTION (tested)


@dataclass(frozen=True)
class SDEConfig:
    kind: str = "vp"
    T: float = 1.0
    eps: float = 1e-5
    beta_0: float = 0.1
    beta_1: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self):
        check_finite(self)

    def build(self, T: Optional[float] = None):
        """The SDE, optionally truncated at a shorter T (reuse of a score model trained at self.T)."""
        from shortdiff_tf import sde as sde_lib          # TensorFlow: configs load without it
        hyper = ({"sigma_min": self.sigma_min, "sigma_max": self.sigma_max} if self.kind == "ve"
                 else {"beta_0": self.beta_0, "beta_1": self.beta_1})
        return sde_lib.get_sde(self.kind, T=self.T if T is None else T, eps=self.eps, **hyper)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    data_dir: Optional[str] = None
    split: str = "train"
    shape: Tuple[int, ...] = ()          # filled in from the data: (H, W, C) or (D,)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "unet"                   # unet | mlp
    layout: str = "ddpm"                 # unet: ddpm | ddpmpp (ScoreSDE's DDPM++, BigGAN blocks)
    ch: int = 32
    ch_mult: Tuple[int, ...] = (1, 2)
    num_res_blocks: int = 1
    attn_resolutions: Tuple[int, ...] = (4,)
    dropout: float = 0.0
    fourier_scale: float = 16.0
    width: int = 128                     # mlp
    depth: int = 3                       # mlp
    embedding: str = "fourier"           # fourier: features of log std(t); positional: ScoreSDE's (N - 1) t sinusoids
    skip_rescale: bool = True            # residual sums times 1/sqrt(2) (DDPM++); False: Ho et al.'s DDPM
    norm_groups: int = 0                 # GroupNorm groups (0: min(32, C/4), ScoreSDE's DDPM++ rule)
    up_attention: str = ""               # attention on the way up: every block, or the last of a level ("": the layout's)
    score_std: str = "sde"               # sde: s = net / std(t); scoresde: ScoreSDE's float32 std; discrete: the N-step VP chain's
    num_scales: int = 1000               # N of the positional label (N - 1) t and of the discrete std

    def __post_init__(self):
        check_finite(self)
        for name, value, allowed in (("embedding", self.embedding, EMBEDDINGS), ("score_std", self.score_std, SCORE_STDS),
                                     ("up_attention", self.up_attention, UP_ATTENTION)):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(allowed)}")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 3000
    batch_size: int = 128
    lr: float = 2e-4
    warmup: int = 5000
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    weighting: str = "variance"
    importance: bool = False
    reduce_mean: bool = False            # the squared error averaged over dimensions (ScoreSDE's VP configs), not half-summed
    dequantize: bool = True
    random_flip: bool = False            # each training image reversed left-right with probability 1/2
    seed: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    keep_checkpoints: int = 2
    sample_grid: int = 16                # EMA samples in each TensorBoard grid (0: none)
    sample_every: int = 500              # a grid every this many steps, and one at the end (0: at the end only)
    grad_accum: int = 1                  # micro-batches per step: the same update in less memory
    precision: str = "fp32"              # fp32 | bf16 | fp16 (the networks' compute dtype)
    jit: bool = False                    # XLA-compile the train step
    preset: str = ""                     # the named preset the run started from ("": by data size)

    def __post_init__(self):
        check_finite(self)
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")


@dataclass(frozen=True)
class RunConfig:
    sde: SDEConfig = field(default_factory=SDEConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "RunConfig":
        raw = json.loads(text)
        return RunConfig(**{name: _from_dict(cls, raw.get(name, {})) for name, cls in _SECTIONS.items()})

    def save(self, run_dir) -> Path:
        return atomic_write_text(Path(run_dir) / "config.json", self.to_json())

    @staticmethod
    def load(run_dir) -> "RunConfig":
        path = Path(run_dir) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no run at {run_dir}: {path} is missing; train one with "
                                    f"`{hints.train_command(run_dir)}`")
        try:
            return RunConfig.from_json(path.read_text())
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path} is not a valid shortdiff config ({err}); delete the run directory "
                             f"or restore the file") from None


PRIOR_KINDS = ("glow", "gaussian", "gmm", "dpgmm")
PRIOR_TARGETS = ("sde", "ode")


@dataclass(frozen=True)
class PriorConfig:
    """The auxiliary prior nu_phi at T and how it is fitted (stored as RUN/prior/config.json).

    target "sde": x_T = m_T x_0 + sqrt(s_T) e with fresh e every batch; "ode": the PF-ODE image
    of the data at T (our reading of the paper's (S) rows).
    """
    kind: str = "glow"
    T: float = 1.0
    target: str = "sde"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    grad_clip: float = 100.0
    seed: int = 0
    preset: str = ""                   # glow: the named architecture preset ("": the options)
    levels: int = 0                    # glow: 0 = by image size
    steps_per_level: int = 4
    hidden: int = 64
    components: int = 10               # gmm (dpgmm: the truncation level)
    weight_threshold: float = 0.01     # dpgmm: a component counts when its weight exceeds this
    dp_concentration: float = 0.01     # dpgmm: Dirichlet-process concentration (small: few components)
    num_fit_samples: int = 20000       # sde target: gaussian/gmm/dpgmm's diffused points; ode: examples pushed
    checkpoint_every: int = 100
    log_every: int = 50
    precision: str = "fp32"            # the score network's, for the ode target (the flow stays fp32)
    jit: bool = False                  # glow: XLA-compile the fit's forward and backward pass
    score_step: int = -1               # ode target: the score checkpoint step whose PF-ODE made the targets

    def __post_init__(self):
        check_finite(self)
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"unknown prior {self.kind!r}; choose one of {', '.join(PRIOR_KINDS)}")
        if self.target not in PRIOR_TARGETS:
            raise ValueError(f"unknown target {self.target!r}; choose one of {', '.join(PRIOR_TARGETS)}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @staticmethod
    def from_json(text: str, source: str = "prior config") -> "PriorConfig":
        try:
            return _from_dict(PriorConfig, json.loads(text))
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"{source} is not a valid prior config ({err}); delete its folder and refit the "
                             f"prior with `shortdiff fit-prior`") from None


_SECTIONS = {"sde": SDEConfig, "data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _from_dict(cls, values: dict):
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


# ---- presets --------------------------------------------------------------------------
def model_preset(shape: Tuple[int, ...]) -> ModelConfig:
    """Network size by data shape: 8x8 digits, 28x28 MNIST-like, 32x32 CIFAR-like, vectors."""
    base = ModelConfig()
    if len(shape) == 1:
        return dataclasses.replace(base, kind="mlp")
    size = shape[0]
    if size <= 16:
        return base
    if size <= 28:
        return dataclasses.replace(base, ch=32, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(7,),
                                   dropout=0.1)
    return dataclasses.replace(base, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                               dropout=0.1)


def train_preset(dataset: str, shape: Tuple[int, ...]) -> TrainConfig:
    """ScoreSDE's defaults for real image sets; short warm-up and a CPU-sized budget for small data."""
    base = TrainConfig()
    if len(shape) == 1:
        return dataclasses.replace(base, steps=2000, batch_size=256, lr=1e-3, warmup=100, ema_decay=0.999,
                                   dequantize=False)
    if shape[0] <= 16:
        return dataclasses.replace(base, steps=2500, batch_size=64, lr=1e-3, warmup=100, ema_decay=0.999)
    return dataclasses.replace(base, warmup=300)     # a CPU budget of 3000 steps: the warm-up fits it


# ---- named presets: the paper's setups at the paper's scale ----------------------------------
SCORESDE_OPTIMISER = dict(batch_size=128, lr=2e-4, warmup=5000, grad_clip=1.0, ema_decay=0.9999)


def ddpmpp_cifar10() -> RunConfig:
    """ScoreSDE's DDPM++ cont. (VP) on CIFAR-10, field by field its
    ``configs/vp/cifar10_ddpmpp_continuous.py`` (README lists what remains different), the
    standard model of the paper's Table 4: DDPM++ layout (BigGAN residual blocks), ch 128,
    ch_mult (1, 2, 2, 2), 4 blocks per resolution, attention at 16x16, dropout 0.1, skip
    rescaling, the positional embedding of 999 t; the loss averaged over the pixels
    (``reduce_mean``), random horizontal flips; Adam 2e-4 with 5000 warm-up steps, clip 1,
    EMA 0.9999, batch 128, 1.3M steps."""
    return RunConfig(sde=SDEConfig(kind="vp"), data=DataConfig(dataset="cifar10", shape=(32, 32, 3)),
                     model=ModelConfig(kind="unet", layout="ddpmpp", ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=4,
                                       attn_resolutions=(16,), dropout=0.1, embedding="positional"),
                     train=TrainConfig(steps=1_300_000, **SCORESDE_OPTIMISER, reduce_mean=True, random_flip=True,
                                       preset="ddpmpp-cifar10"))


def ddpmpp_mnist() -> RunConfig:
    """The DDPM++ layout at MNIST size (the paper does not state its MNIST network; this is our
    choice): ch 64, ch_mult (1, 2, 2) for 28 -> 14 -> 7, 2 blocks per resolution, attention at
    14x14 (the second resolution, as 16x16 of 32x32), dropout 0.1, the positional embedding;
    ScoreSDE's recipe (the loss averaged over the pixels, Adam 2e-4, clip 1), no flips (digits
    are not symmetric), 200k steps."""
    return RunConfig(sde=SDEConfig(kind="vp"), data=DataConfig(dataset="mnist", shape=(28, 28, 1)),
                     model=ModelConfig(kind="unet", layout="ddpmpp", ch=64, ch_mult=(1, 2, 2), num_res_blocks=2,
                                       attn_resolutions=(14,), dropout=0.1, embedding="positional"),
                     train=TrainConfig(steps=200_000, **SCORESDE_OPTIMISER, reduce_mean=True, preset="ddpmpp-mnist"))


RUN_PRESETS = {"ddpmpp-cifar10": ddpmpp_cifar10, "ddpmpp-mnist": ddpmpp_mnist}

# Glow architectures: Kingma and Dhariwal's CIFAR-10 Glow (3 levels x 32 steps, width 512), and
# at MNIST size (28 -> 14 -> 7 allows 2 levels) 2 x 16 steps of width 256 (our choice).
PRIOR_PRESETS = {"glow-cifar10": dict(levels=3, steps_per_level=32, hidden=512),
                 "glow-mnist": dict(levels=2, steps_per_level=16, hidden=256)}


def run_preset(name: str) -> RunConfig:
    if name not in RUN_PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(RUN_PRESETS)}")
    return RUN_PRESETS[name]()


def prior_preset(name: str) -> dict:
    if name not in PRIOR_PRESETS:
        raise ValueError(f"unknown prior preset {name!r}; choose one of {', '.join(PRIOR_PRESETS)}")
    return {"preset": name, **PRIOR_PRESETS[name]}

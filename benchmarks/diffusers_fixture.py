"""Run with PyTorch and diffusers (a scratch environment, not shortdiff's): a full-size diffusers
DDPM pipeline folder with random weights, and the noise prediction diffusers itself computes.

    python benchmarks/diffusers_fixture.py --preset ddpm-cifar10-32 --out DIR

DIR/unet (config.json, diffusion_pytorch_model.safetensors), DIR/scheduler
(scheduler_config.json) in the layout of google/<preset>, and DIR/reference.npz: x (NHWC),
timestep, eps (NHWC) = UNet2DModel(x, timestep).sample, and meta (JSON: the config, the
parameter count, the versions).  benchmarks/pretrained.py imports the folder and compares.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PRESETS = {   # the configs of google/ddpm-cifar10-32 and google/ddpm-celebahq-256
    "ddpm-cifar10-32": dict(sample_size=32, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
                            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                            up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), dropout=0.1),
    "ddpm-celebahq-256": dict(sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512), layers_per_block=2,
                              down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                              up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4, dropout=0.0),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="ddpm-cifar10-32")
    ap.add_argument("--out", required=True)
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args(argv)
    import diffusers
    import torch
    torch.manual_seed(0)
    cfg = PRESETS[args.preset]
    unet = diffusers.UNet2DModel(in_channels=3, out_channels=3, act_fn="silu", attention_head_dim=None,
                                 norm_num_groups=32, norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1,
                                 downsample_padding=0, center_input_sample=False, time_embedding_type="positional",
                                 **cfg).eval()
    with torch.no_grad():                    # random weights everywhere, so every layer matters
        for p in unet.parameters():
            p.copy_(torch.randn_like(p) * (0.5 / max(1, p[0].numel()) ** 0.5) if p.ndim > 1 else torch.randn_like(p) * 0.1)
    out = Path(args.out)
    unet.save_pretrained(out / "unet")
    diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                            beta_schedule="linear").save_pretrained(out / "scheduler")
    size = cfg["sample_size"]
    x = torch.randn(args.batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    timestep = torch.tensor([1, 10, 400, 999][: args.batch] + [500] * max(0, args.batch - 4))
    with torch.no_grad():
        eps = unet(x, timestep).sample
    meta = {"preset": args.preset, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()},
            "parameters": sum(p.numel() for p in unet.parameters()), "torch": torch.__version__,
            "diffusers": diffusers.__version__}
    np.savez(out / "reference.npz", x=x.permute(0, 2, 3, 1).numpy(), timestep=timestep.numpy(),
             eps=eps.permute(0, 2, 3, 1).numpy(), meta=json.dumps(meta))
    print(f"wrote {out}: {meta['parameters']:,} parameters")


if __name__ == "__main__":
    main()

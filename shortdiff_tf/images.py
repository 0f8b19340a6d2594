"""Writing samples: PNG grids of images (or scatter plots of toy vectors) and .npz files, atomically."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from shortdiff_tf.files import atomic_write


def grid(images: np.ndarray, upscale: int = 1) -> np.ndarray:
    """uint8 [N, H, W, C] -> one uint8 image [rows*(H+1)+1, cols*(W+1)+1, C] with 1-pixel borders."""
    n, h, w, c = images.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    out = np.zeros((rows * (h + 1) + 1, cols * (w + 1) + 1, c), np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        out[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = img
    return out.repeat(upscale, 0).repeat(upscale, 1)


def save_png_grid(images: np.ndarray, path) -> Path:
    from PIL import Image
    upscale = max(1, 128 // images.shape[1])
    g = grid(images, upscale)
    img = Image.fromarray(g[..., 0] if g.shape[-1] == 1 else g)
    return atomic_write(Path(path), lambda p: img.save(p, format="PNG"))


def save_scatter(points: np.ndarray, path, reference: np.ndarray = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4, 4))
    if points.shape[1] == 1:
        if reference is not None:
            ax.hist(reference[:, 0], bins=80, density=True, alpha=0.4, label="data")
        ax.hist(points[:, 0], bins=80, density=True, alpha=0.6, label="samples")
        ax.legend()
    else:
        if reference is not None:
            ax.scatter(reference[:, 0], reference[:, 1], s=1, alpha=0.3, label="data")
        ax.scatter(points[:, 0], points[:, 1], s=1, label="samples")
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return Path(path)


def save_npz(path, **arrays) -> Path:
    def write(p):
        with open(p, "wb") as f:             # a file object: numpy would append .npz to a .tmp name
            np.savez_compressed(f, **arrays)

    return atomic_write(Path(path), write)

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


class NpzStream:
    """An .npz of fixed-shape arrays written a chunk of rows at a time, so that memory holds one
    chunk, not the file: each array is appended to a ``.npy`` beside the target (its header
    first, then the rows as they come), and ``close`` stores the parts in the zip, which is
    renamed over ``path`` at once (a reader never sees half a file).  ``np.load(path)`` reads it
    as ``np.savez`` output.

        with NpzStream(path, rows=50000, images=((32, 32, 3), np.uint8), x=((32, 32, 3), np.float32)) as f:
            f.append(images=chunk_images, x=chunk_x)
    """

    def __init__(self, path, rows: int, **specs):
        self.path, self.rows, self.filled = Path(path), int(rows), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.parts = {name: self.path.with_name(f".{self.path.name}.{name}.npy") for name in specs}
        self.dtypes = {name: np.dtype(dtype) for name, (_, dtype) in specs.items()}
        self.files = {}
        for name, (shape, dtype) in specs.items():
            f = self.files[name] = open(self.parts[name], "wb")
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                      "shape": (self.rows, *shape)}
            np.lib.format.write_array_header_2_0(f, header)

    def append(self, **chunks) -> None:
        n = len(next(iter(chunks.values())))
        for name, chunk in chunks.items():
            self.files[name].write(np.ascontiguousarray(chunk, self.dtypes[name]).tobytes())
        self.filled += n

    def close(self) -> Path:
        import zipfile
        for f in self.files.values():
            f.close()
        if self.filled != self.rows:
            self.discard()
            raise ValueError(f"{self.path}: {self.filled} of {self.rows} rows written")

        def write(p):
            with zipfile.ZipFile(p, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                for name, part in self.parts.items():
                    z.write(part, f"{name}.npy")

        try:
            return atomic_write(self.path, write)
        finally:
            self.discard()

    def discard(self) -> None:
        for f in self.files.values():
            f.close()
        for part in self.parts.values():
            part.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        self.close() if kind is None else self.discard()
        return False

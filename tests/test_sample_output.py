"""What `shortdiff sample` writes: 50,000 CIFAR-sized samples in bounded memory, a call at a time,
the same samples whatever the call size, and file names that no other setting overwrites."""
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)

LARGE = """
import os, resource, shutil, sys
import numpy as np
from shortdiff_tf import config
from shortdiff_tf.app.sample import sample_run
from shortdiff_tf.app.train import train
tmp = sys.argv[1]
np.savez(f"{tmp}/data.npz", images=np.random.RandomState(0).randint(0, 256, (64, 32, 32, 3), dtype=np.uint8))
cfg = config.RunConfig(sde=config.SDEConfig(T=0.4), data=config.DataConfig(dataset=f"{tmp}/data.npz"),
                       model=config.ModelConfig(ch=1, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1, attn_resolutions=()),
                       train=config.TrainConfig(steps=1, batch_size=8, warmup=1, sample_grid=0))
train(cfg, f"{tmp}/run", progress=False, log=lambda *_: None)


def head(npz, name, rows):
    # (shape, the first rows) of an array in an .npz, without reading the rest
    import zipfile
    with zipfile.ZipFile(npz) as z, z.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        count = rows * int(np.prod(shape[1:]))
        return shape, np.frombuffer(f.read(count * dtype.itemsize), dtype).reshape((rows,) + shape[1:])


for n in (2000, 50000):
    r = sample_run(f"{tmp}/run", sampler="em", steps=1, num_samples=n, prior="noise", out=f"{tmp}/s{n}", batch_size=2000)
    shape, first = head(r["npz"], "images", 7)
    assert shape == (n, 32, 32, 3) and head(r["npz"], "x", 1)[0] == shape
    assert np.array_equal(first, head(f"{tmp}/s2000.npz", "images", 7)[1])
    print("MAXRSS_KB", n, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
    os.remove(r["npz"]) if n > 2000 else None
os._exit(0)
"""


def test_fifty_thousand_cifar_sized_samples_in_bounded_memory(tmp_path):
    """A tiny 32x32x3 network's 2,000 and then 50,000 samples, 2,000 a call, in one process: the
    .npz holds all of them (its first images those of the smaller run: the seed's samples), and
    the peak memory grows by less than 200 MB, where holding them would take 768 MB (uint8 images
    and float32 x)."""
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(LARGE), str(tmp_path)], capture_output=True, text=True,
                         timeout=900, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    peaks = [int(line.split()[2]) for line in out.stdout.splitlines() if line.startswith("MAXRSS_KB")]
    assert len(peaks) == 2, out.stderr[-3000:]
    assert peaks[1] - peaks[0] < 200 * 1024, peaks

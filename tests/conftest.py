import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices for the multi-replica tests; must happen before TF runs any op.
try:
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
except RuntimeError:
    pass

from shortdiff_tf import sde as sde_lib  # noqa: E402

SDE_NAMES = ["vp", "ve", "subvp"]
TS = [1.0, 0.4]


def make_sde(name, T, eps=1e-5):
    """Toy-scale hyper-parameters: VE's sigma_max ~ the data's largest pairwise distance."""
    hyper = {"sigma_max": 8.0} if name == "ve" else {}
    return sde_lib.get_sde(name, T=T, eps=eps, **hyper)


def two_replicas() -> tf.distribute.Strategy:
    """MirroredStrategy over the two logical CPUs, reducing through one device.  With the default
    collective all-reduce, a second MirroredStrategy in the same process (pytest-xdist runs several
    test files in one worker) reuses the first one's collective instance keys and aborts with
    "Shape mismatch in the collective instance"."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    assert len(devices) == 2
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())


@pytest.fixture(autouse=True)
def _seed():
    tf.random.set_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def glow_run(tmp_path_factory):
    """A tiny digits run at T = 0.4 (3 steps, 8 channels) with a tiny Glow prior fitted through
    the CLI, shared by the prior and export tests (which only read it or copy it).
    -> (run directory, the fit-prior --json report)."""
    import json
    from click.testing import CliRunner
    from cli.main import cli
    run = tmp_path_factory.mktemp("shared") / "digits"
    invoke = lambda *a: CliRunner().invoke(cli, [str(x) for x in a], catch_exceptions=False)
    r = invoke("train", "--T", "0.4", "--workdir", run, "--steps", "3", "--batch-size", "8", "--ch", "8",
               "--no-progress", "--sample-grid", "0")
    assert r.exit_code == 0, r.output
    r = invoke("fit-prior", "--workdir", run, "--steps", "4", "--glow-steps", "1", "--glow-hidden", "8",
               "--batch-size", "16", "--no-progress", "--json")
    assert r.exit_code == 0, r.output
    return run, json.loads(r.output.strip().splitlines()[-1])


def pytest_collection_modifyitems(items):
    """The files marked ``long`` (each took 40 s or more in a full run on two cores) first, the rest in
    file order: pytest-xdist (``--dist loadfile``, without its reordering by test count, see
    pyproject.toml) hands files out in this order, so no long file starts last and the two workers
    end together.  The order is the same in every worker, as xdist requires."""
    first = {item.path for item in items if item.get_closest_marker("long")}
    items.sort(key=lambda item: item.path not in first)          # stable: keeps each file's own order

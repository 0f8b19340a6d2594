"""TensorFlow's start-up noise off by default.

Importing TensorFlow prints lines from C++ before its logging is configured (oneDNN, CUDA
stubs) and an error-level "failed call to cuInit" on machines without a GPU.
``load_tensorflow()`` imports it with the process's stderr pointed at /dev/null and
TF_CPP_MIN_LOG_LEVEL=3; ``shortdiff --verbose`` (or SHORTDIFF_VERBOSE=1, or your own
TF_CPP_MIN_LOG_LEVEL) brings the logs back.  Python errors are never hidden: stderr is restored
before anything is raised.
"""
from __future__ import annotations

import contextlib
import os
import sys

VERBOSE_ENV = "SHORTDIFF_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


@contextlib.contextmanager
def silenced_stderr():
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_tensorflow() -> None:
    """Import TensorFlow and Keras quietly (once; later imports are free).  TFP is imported where
    a Glow is made (``priors.glow``; quiet once TF_CPP_MIN_LOG_LEVEL is set): a command without
    one starts 0.9 s sooner."""
    if "tensorflow" in sys.modules or verbose():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with silenced_stderr():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

"""Reading a PyTorch ``.pth`` file without PyTorch: the zip format that ``torch.save`` writes
(``data.pkl`` plus one raw little-endian file per storage under ``data/``).

The pickle is read by a restricted unpickler: it builds only plain containers, numbers and
strings, ``collections.OrderedDict`` and tensors (``torch._utils._rebuild_tensor_v2``,
``_rebuild_parameter``); any other class in the file is refused, so opening a checkpoint never
runs code from it (``torch.load`` without ``weights_only`` would).  Tensors come back as NumPy
arrays with their dtype (bfloat16 as float32).  The legacy, non-zip format of PyTorch < 1.6 is
refused with how to convert it.
"""
from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

STORAGES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
            "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
            "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class TorchFileError(ValueError):
    """Not a readable PyTorch zip checkpoint."""


def _rebuild_tensor(storage, offset, size, stride, *_):
    """A tensor as a NumPy array: ``size`` elements from ``storage`` at ``offset`` with ``stride``
    (all in elements), copied out of the storage."""
    if not size:
        return storage[offset].copy()
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * storage.itemsize for s in stride))
    return np.array(view)


def _rebuild_parameter(data, *_):
    return data


ALLOWED = {("collections", "OrderedDict"): collections.OrderedDict,
           ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
           ("torch._utils", "_rebuild_parameter"): _rebuild_parameter}


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix, self.storages = archive, prefix, {}

    def find_class(self, module, name):
        if module == "torch" and name in STORAGES:
            return name
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise TorchFileError(f"holds a {module}.{name}, which a checkpoint of tensors does not need; it is not read")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, count = pid
        if kind != "storage":
            raise TorchFileError(f"holds an unknown persistent record {kind!r}")
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}/data/{key}")
            dtype = STORAGES[storage_type] if isinstance(storage_type, str) else None
            if dtype is None:
                raise TorchFileError(f"holds a storage of type {storage_type!r}")
            if dtype == "bfloat16":
                self.storages[key] = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                self.storages[key] = np.frombuffer(raw, np.dtype(dtype).newbyteorder("<"))[:count]
        return self.storages[key]


def load(path) -> dict:
    """The object ``torch.save`` wrote to ``path``, with NumPy arrays for tensors; a one-line
    ``TorchFileError`` for a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give the checkpoint file itself (e.g. checkpoint_26.pth)")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise TorchFileError(f"{path} is not a PyTorch zip checkpoint (torch.save of PyTorch >= 1.6): truncated, or of "
                             f"the legacy format; re-save it with torch.save(torch.load(f), f)") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if not pickles:
            raise TorchFileError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        prefix = pickles[0][: -len("/data.pkl")]
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise TorchFileError(f"{path} was written on a big-endian machine; re-save it on a little-endian one")
        try:
            with archive.open(pickles[0]) as f:
                return _Unpickler(f, archive, prefix).load()
        except TorchFileError as err:
            raise TorchFileError(f"{path} {err}") from None
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as err:
            raise TorchFileError(f"{path} is damaged ({type(err).__name__}: {str(err)[:80]}); copy it again") from None

"""TF Serving warm-up requests shipped inside the SavedModel (``assets.extra/tf_serving_warmup_requests``).

The first call of a loaded signature pays a one-off cost: every graph function it reaches (the
serving wrapper, the sampler's loop, the prior, the score network, the ODE solver) is placed,
rewritten and given an executor.  On the digits preset that is several seconds against a 2 s
call (benchmarks/README.md, "First call of the exported sample signature").  TF Serving replays
the PredictionLog records of this file when it loads a model version, before it serves it, so
that cost is paid at load instead of by the first client.

One record per sampler for ``serving_default`` and ``sample`` (each sampler's loop is a function
of its own; one sample, one step), and one each for ``score`` and ``metadata``.  ``bpd`` and
``log_prob`` get none: their first call costs little more than a warm one (1.1 x on digits, in
either loader), while a request to warm them is a full adaptive ODE solve, about 1,250 network
evaluations for one image (15 s at load on digits, for 3.5 s saved once).  ``read`` returns the
records as (signature, {input: numpy array}) for replaying them the way TF Serving does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_RECORDS = 1000           # TF Serving reads at most this many
SEED = np.array([0, 0], np.int32)


def requests(samplers, shape, T: float) -> list:
    """-> [(signature name, {input name: numpy array})]: each sampler of the sampling signatures,
    then ``score`` and ``metadata``."""
    out = [(sig, {"num_samples": np.int32(1), "seed": SEED, "steps": np.int32(1), "sampler": np.bytes_(name)})
           for sig in ("serving_default", "sample") for name in samplers]
    return out + [("score", {"x": np.zeros((1,) + tuple(shape), np.float32), "t": np.full((1,), T, np.float32)}),
                  ("metadata", {})]


def write(export_dir, records) -> Path:
    """Write ``records`` as PredictionLog entries of a TFRecord file under ``export_dir``.  The
    requests name no model (``model_spec.name`` empty): the name is chosen when serving
    (``--model_name``), and the replay runs each request on the version being loaded."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    if len(records) > MAX_RECORDS:
        raise ValueError(f"{len(records)} warm-up records; TF Serving reads at most {MAX_RECORDS}")
    path = Path(export_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for signature, inputs in records:
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = signature
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return path


def read(export_dir) -> list:
    """The warm-up records of an export as [(signature name, {input name: numpy array})]."""
    from tensorflow_serving.apis import prediction_log_pb2
    out = []
    for raw in tf.data.TFRecordDataset(str(Path(export_dir) / WARMUP_FILE)).as_numpy_iterator():
        request = prediction_log_pb2.PredictionLog.FromString(raw).predict_log.request
        out.append((request.model_spec.signature_name,
                    {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}))
    return out

"""Feature extractors for FID and KID: the standard FID network, an offline classifier and Keras'
InceptionV3, each computing its features in TensorFlow (``TensorExtractor.tensor_fn``) so that a
``tf.distribute`` strategy can run a share of every batch on each replica (``quality.features``).

- ``StandardInception``: the network every FID in the literature uses, the TF Inception graph of
  2015-12-05 (``classify_image_graph_def.pb``) read from a local file, fed at ``ExpandDims:0``
  with pixels 0..255 (the graph resizes to 299 x 299 itself) and read at ``pool_3:0`` (2048
  features), as the original FID code does;
- ``ClassifierFeatures``: the penultimate layer of a small classifier trained on the labelled
  training split (``train_classifier``; offline, so tests and this machine can use it);
- ``KerasInception``: Keras' InceptionV3 pool features from a local weights file (not the FID
  network: its weights and resizing differ).
"""
from __future__ import annotations

import abc
import math
from pathlib import Path
from typing import Optional

import numpy as np


class TensorExtractor(abc.ABC):
    """An extractor with its computation in TensorFlow: ``tensor_fn`` maps float32 pixels 0..255
    [n, H, W, C] to features [n, F] on the device it runs on (so a strategy can run it on each
    replica); ``check`` names a wrong image shape before any work; calling it on uint8 images
    [N, H, W, C] gives float64 features [N, F]."""

    name = "tensor extractor"

    def check(self, images: np.ndarray) -> None:
        """Raise ValueError naming the problem when ``images`` do not fit the network."""

    @abc.abstractmethod
    def tensor_fn(self, x):
        """float32 pixels 0..255 [n, H, W, C] (a tensor) -> features [n, F] (a tensor)."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        import tensorflow as tf
        self.check(images)
        return np.asarray(self.tensor_fn(tf.constant(np.asarray(images, np.float32))), np.float64)


class ClassifierFeatures(TensorExtractor):
    """Penultimate-layer features of a classifier saved by ``train_classifier`` (a .keras file)."""

    def __init__(self, path):
        import keras
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"classifier {path} not found; train one with "
                                    f"`shortdiff train-classifier --out {path}`")
        try:
            model = keras.saving.load_model(path)
        except Exception as err:
            raise ValueError(f"{path} is not a readable classifier ({type(err).__name__}); "
                             f"retrain it with `shortdiff train-classifier --out {path}`") from None
        self.image_shape = tuple(model.input_shape[1:])
        self.model = keras.Model(model.inputs[0], model.get_layer("features").output)
        self.name = f"classifier:{path.name}"

    def check(self, images: np.ndarray) -> None:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"the classifier takes images {list(self.image_shape)}; got {list(images.shape[1:])}")

    def tensor_fn(self, x):
        return self.model(x / 255.0, training=False)


class KerasInception(TensorExtractor):
    """InceptionV3 2048-d pool features from a local weights file (no download is attempted)."""

    name = "inception_v3"

    def __init__(self, weights: str):
        import keras
        if not Path(weights).is_file():
            raise FileNotFoundError(f"InceptionV3 weights {weights} not found; copy the Keras "
                                    f"'inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5' there, "
                                    f"or use a classifier from `shortdiff train-classifier`")
        self.net = keras.applications.InceptionV3(include_top=False, pooling="avg", weights=weights)

    def tensor_fn(self, x):
        import tensorflow as tf
        x = tf.image.resize(x, (299, 299))
        x = tf.tile(x, [1, 1, 1, 3]) if x.shape[-1] == 1 else x[..., :3]
        return self.net(x / 127.5 - 1.0, training=False)


STANDARD_INPUT, STANDARD_OUTPUT = "ExpandDims:0", "pool_3:0"
STANDARD_FID_SAMPLES = 50_000            # the literature's sample count with the standard network


class StandardInception(TensorExtractor):
    """pool_3 features of the FID Inception graph (``classify_image_graph_def.pb``, a local file).

    The frozen graph is imported once into a ``tf.function`` with its input ``ExpandDims:0``
    mapped to a batch [N, H, W, 3] of float pixels 0..255; grey images are repeated over three
    channels.  -> float64 [N, 2048]."""

    def __init__(self, path):
        import tensorflow as tf
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"FID Inception graph {path} not found; copy classify_image_graph_def.pb "
                                    f"(from inception-2015-12-05.tgz) there")
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(path.read_bytes())
        except Exception:  # noqa: BLE001  (protobuf's DecodeError)
            raise ValueError(f"{path} is not a TF GraphDef (.pb); use classify_image_graph_def.pb") from None
        names = {n.name for n in graph_def.node}
        missing = [t for t in (STANDARD_INPUT, STANDARD_OUTPUT) if t.split(":")[0] not in names]
        if missing:
            raise ValueError(f"{path} has no tensor {', '.join(missing)}: not the FID Inception graph "
                             f"(classify_image_graph_def.pb)")

        def pool3(images):
            return tf.compat.v1.import_graph_def(graph_def, input_map={STANDARD_INPUT: images},
                                                 return_elements=[STANDARD_OUTPUT], name="fid")[0]

        self._fn = tf.compat.v1.wrap_function(pool3, [tf.TensorSpec([None, None, None, 3], tf.float32)])
        self.name = f"inception-2015-12-05 pool_3 ({path.name})"

    def check(self, images: np.ndarray) -> None:
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"the FID network takes images [N, H, W, 1 or 3]; got {list(images.shape)}")

    def tensor_fn(self, x):
        import tensorflow as tf
        x = tf.tile(x, [1, 1, 1, 3]) if x.shape[-1] == 1 else x
        return tf.reshape(self._fn(x), [tf.shape(x)[0], -1])


def load_extractor(spec: str) -> TensorExtractor:
    """``fid-inception:PATH`` (the standard FID graph), ``inception:PATH`` (Keras InceptionV3
    weights) or the path of a classifier saved by ``train_classifier``."""
    if spec.startswith("fid-inception:"):
        return StandardInception(spec.split(":", 1)[1])
    if spec.startswith("inception:"):
        return KerasInception(spec.split(":", 1)[1])
    return ClassifierFeatures(spec)


def is_standard(extractor) -> bool:
    return isinstance(extractor, StandardInception)


def _unit(images: np.ndarray):
    return np.asarray(images, np.float32) / 255.0


# ---- the offline classifier ---------------------------------------------------------------
def build_classifier(shape, num_classes: int, width: int = 32, feature_dim: int = 128, seed: int = 0):
    """A small CNN: two conv stages (the second strided), global pooling, a 'features' layer."""
    import keras
    from keras import layers
    keras.utils.set_random_seed(seed)
    inp = keras.Input(shape)
    h = layers.Conv2D(width, 3, padding="same", activation="relu")(inp)
    h = layers.Conv2D(width, 3, padding="same", activation="relu")(h)
    h = layers.Conv2D(2 * width, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Conv2D(2 * width, 3, padding="same", activation="relu")(h)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dense(feature_dim, activation="relu", name="features")(h)
    out = layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inp, out)


def train_classifier(dataset: str, out, epochs: int = 30, batch_size: int = 64, lr: float = 2e-3,
                     seed: int = 0, data_dir: Optional[str] = None, log=print) -> dict:
    """Train the feature classifier on the labelled training split; report test accuracy."""
    import keras
    from shortdiff_tf import data as data_lib
    out = Path(out)
    if out.suffix != ".keras":
        raise ValueError(f"--out must end in .keras; got {out}")
    train = data_lib.load(dataset, "train", data_dir)
    if not train.is_image or train.labels is None:
        raise ValueError(f"{dataset!r} has no labelled images; the classifier needs (image, label) pairs")
    test = data_lib.load(data_lib.held_out(dataset) or dataset, "test", data_dir)     # test.npz beside a train.npz
    classes = int(max(train.labels.max(), test.labels.max() if test.labels is not None else 0)) + 1
    model = build_classifier(train.shape, classes, seed=seed)
    model.compile(keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(_unit(train.array), train.labels, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
    _, acc = model.evaluate(_unit(test.array), test.labels, verbose=0) if test.labels is not None else (0, math.nan)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial.keras")
    model.save(tmp)
    tmp.replace(out)                                   # never a half-written classifier
    log(f"classifier on {dataset}: test accuracy {acc:.4f} ({len(test)} images) -> {out}")
    return {"out": str(out), "dataset": dataset, "test_accuracy": float(acc), "classes": classes,
            "epochs": epochs, "train_examples": len(train), "test_examples": len(test)}

"""Sample quality without downloads: Fréchet distance (FID) and kernel distance (KID) on the
features of an injectable extractor.

  FD(N(mu1, C1), N(mu2, C2)) = |mu1 - mu2|² + tr C1 + tr C2 - 2 tr (C1^{1/2} C2 C1^{1/2})^{1/2}
  KID = unbiased MMD² with the cubic kernel k(a, b) = (a·b / d + 1)³, averaged over subsets
        (Bińkowski et al. 2018)

An extractor is any callable uint8 images [N, H, W, C] -> float features [N, F] with a ``name``.
Three are provided, each a ``TensorExtractor`` whose features a ``tf.distribute`` strategy
computes a share of each batch per replica:

- ``StandardInception``: the network every FID in the literature uses, the TF Inception graph of
  2015-12-05 (``classify_image_graph_def.pb``) read from a local file, fed at ``ExpandDims:0``
  with pixels 0..255 (the graph resizes to 299 x 299 itself) and read at ``pool_3:0`` (2048
  features), as the original FID code does; reference statistics in that code's ``.npz`` format
  (``mu``, ``sigma``: ``save_stats``, ``load_stats``);
- the penultimate layer of a small classifier trained on the labelled training split
  (``train_classifier``; offline, so tests and this machine can use it);
- Keras' InceptionV3 pool features from a local weights file (``KerasInception``; not the
  FID network: its weights and resizing differ).

FIDs from different extractors or sample counts are not comparable, so every report carries both.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np

Extractor = Callable[[np.ndarray], np.ndarray]


# ---- the two distances --------------------------------------------------------------------
def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Fréchet (2-Wasserstein) distance² between two Gaussians; the matrix square root is taken
    through the symmetric form C1^{1/2} C2 C1^{1/2}, whose eigenvalues are real and >= 0."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    root1 = _psd_sqrt(cov1)
    cross = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_cross = np.sum(np.sqrt(np.clip(cross, 0.0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_cross)


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_stats(features: np.ndarray):
    """Mean and (unbiased) covariance of features [N, F]."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, F]; got shape {f.shape}")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))


def kernel_distance(f1: np.ndarray, f2: np.ndarray, subsets: int = 10, subset_size: int = 1000,
                    seed: int = 0):
    """KID: unbiased MMD² with the cubic polynomial kernel, mean and std over random subsets
    (of half the smaller set when that is below ``subset_size``, so that the subsets differ)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    m = min(subset_size, len(f1) // 2, len(f2) // 2)
    if m < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    rng = np.random.RandomState(seed)
    vals = [_mmd2(f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def _mmd2(a: np.ndarray, b: np.ndarray) -> float:
    d, m = a.shape[1], a.shape[0]
    kaa, kbb, kab = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))
    return float(off(kaa) + off(kbb) - 2.0 * kab.mean())


def sample_quality(samples: np.ndarray, reference: np.ndarray, extractor: Extractor,
                   batch_size: int = 256, strategy=None) -> dict:
    """FID and KID of uint8 ``samples`` against uint8 ``reference`` images, with what they rest on
    (features split over the replicas of ``strategy``: see ``features``)."""
    f_s = features(extractor, samples, batch_size, strategy)
    f_r = features(extractor, reference, batch_size, strategy)
    kid, kid_std = kernel_distance(f_s, f_r)
    return {"fid": fid_from_features(f_s, f_r), "kid": kid, "kid_std": kid_std, "num_samples": len(samples),
            "num_reference": len(reference), "extractor": getattr(extractor, "name", type(extractor).__name__),
            "feature_dim": int(f_s.shape[1])}


def features(extractor: Extractor, images: np.ndarray, batch_size: int = 256, strategy=None) -> np.ndarray:
    """Features of ``images`` [N, H, W, C] in batches of ``batch_size``.  With a multi-replica
    ``strategy`` and a ``TensorExtractor``, each batch is split over the replicas (padded with its
    last image to a multiple of them): the features one device gives, per image."""
    from shortdiff_tf import distribute
    strategy = distribute.multi_replica(strategy) if isinstance(extractor, TensorExtractor) else None
    if strategy is None:
        def per_batch(b):
            return np.asarray(extractor(b))
    else:
        def per_batch(b):
            return _replicated(extractor, b, strategy)
    return np.concatenate([per_batch(images[i: i + batch_size]) for i in range(0, len(images), batch_size)], 0)


def _replicated(extractor: "TensorExtractor", batch: np.ndarray, strategy) -> np.ndarray:
    """One batch's features, a share per replica."""
    from shortdiff_tf import distribute
    extractor.check(batch)
    n, r = len(batch), distribute.replica_count(strategy)
    padded = np.concatenate([batch, np.repeat(batch[-1:], -n % r, axis=0)]).astype(np.float32)
    out = distribute.run_per_replica(strategy, lambda x: (extractor.tensor_fn(x),),
                                     [(share,) for share in np.split(padded, r)])
    return np.concatenate([np.asarray(o[0], np.float64) for o in out])[:n]


# ---- extractors -------------------------------------------------------------------------
class TensorExtractor:
    """An extractor with its computation in TensorFlow: ``tensor_fn`` maps float32 pixels 0..255
    [n, H, W, C] to features [n, F] on the device it runs on (so a strategy can run it on each
    replica); ``check`` names a wrong image shape before any work; calling it on uint8 images
    [N, H, W, C] gives float64 features [N, F]."""

    name = "tensor extractor"

    def check(self, images: np.ndarray) -> None:
        """Raise ValueError naming the problem when ``images`` do not fit the network."""

    def tensor_fn(self, x):
        raise NotImplementedError

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


def save_stats(path, features: np.ndarray) -> Path:
    """Reference statistics of features [N, F] in the original FID code's format (mu, sigma)."""
    from shortdiff_tf.files import atomic_write
    mu, sigma = gaussian_stats(features)

    def write(tmp: Path):
        with open(tmp, "wb") as f:                          # a file object: np.savez adds no suffix
            np.savez(f, mu=mu, sigma=sigma, num_examples=len(features))

    return atomic_write(Path(path), write)


def load_stats(path):
    """-> (mu [F], sigma [F, F]) from an .npz with ``mu`` and ``sigma`` (the original FID code's)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID statistics {path} not found; give an .npz with mu and sigma")
    try:
        with np.load(path) as f:
            mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
    except (OSError, ValueError, KeyError, EOFError):
        raise ValueError(f"{path} is not an .npz with arrays mu and sigma (the FID statistics format)") from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)) or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{path}: mu must be [F] and sigma [F, F], finite; got {list(mu.shape)} and "
                         f"{list(sigma.shape)}")
    return mu, sigma


def fid_against_stats(samples: np.ndarray, stats, extractor: Extractor, batch_size: int = 256,
                      strategy=None) -> dict:
    """FID of uint8 ``samples`` against reference statistics (mu, sigma) of the same extractor."""
    f_s = features(extractor, samples, batch_size, strategy)
    mu, sigma = stats
    if f_s.shape[1] != len(mu):
        raise ValueError(f"the statistics have {len(mu)} features, the extractor gives {f_s.shape[1]}; "
                         f"compute them with the same network")
    return {"fid": frechet_distance(*gaussian_stats(f_s), mu, sigma), "num_samples": len(samples),
            "extractor": getattr(extractor, "name", type(extractor).__name__), "feature_dim": int(f_s.shape[1])}


def load_extractor(spec: str) -> Extractor:
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
    test = data_lib.load(dataset, "test", data_dir)
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

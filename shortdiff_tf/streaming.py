"""Streaming TFDS input for score training and the Glow fit: no split is held in memory.

A TFDS split is read as a ``tf.data`` stream in its stored order, each input pipeline (worker)
keeping every n-th example (``Dataset.shard``).  The examples pass a shuffle buffer of
``buffer`` examples, reshuffled every epoch from ``seed``, so memory is bounded by the buffer
and not by the data set.  Per-replica batches come from
``strategy.distribute_datasets_from_function``; the noise of a batch (dequantisation, the
diffusion-time uniforms, e) is drawn from (seed, the pipeline's batch number, the pipeline),
as in ``pipeline.with_noise``.

Determinism and resume: the batches are a function of (seed, step) for a given number of
replicas and input pipelines.  A run resumes exactly by the iterator's state, which the
training checkpoint holds (its position in the stream and the shuffle buffer's contents):
``resumable_batches`` attaches the iterator to the checkpoint before it is restored.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import tensorflow as tf

from shortdiff_tf import pipeline
from shortdiff_tf.seeds import split

SHUFFLE_BUFFER = 10_000
ENDLESS = 2**62                    # step counter bound: a training run stops by its step budget


@dataclasses.dataclass(frozen=True)
class TFDSSource:
    """A prepared TFDS split of images: its shape and size come from the metadata, not the data."""
    name: str
    split: str
    data_dir: Optional[str]
    shape: tuple
    num_examples: int                  # -1: unknown (a mocked split)

    def examples(self) -> tf.data.Dataset:
        """The split's uint8 images in their stored order (deterministic, files not shuffled)."""
        import tensorflow_datasets as tfds
        builder = tfds.builder(self.name, data_dir=self.data_dir)
        options = tf.data.Options()
        options.deterministic = True
        ds = builder.as_dataset(split=self.split, shuffle_files=False,           # no cache: a stream
                                read_config=tfds.ReadConfig(options=options, try_autocache=False))
        return ds.map(lambda ex: ex["image"], num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def source(name: str, split_name: str = "train", data_dir: Optional[str] = None) -> TFDSSource:
    """The TFDS split ``name``/``split_name``, checked to be prepared and to hold images."""
    import tensorflow_datasets as tfds
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # DatasetNotFoundError and friends
        raise ValueError(f"unknown data set {name!r}: not digits, gmm1d, gmm2d, a .npz file, an image folder "
                         f"or a TFDS name ({type(err).__name__})") from None
    where = data_dir or "~/tensorflow_datasets"
    try:
        reader = builder.as_dataset(split=split_name)   # builds the reader only: no example is read
    except (AssertionError, FileNotFoundError):
        raise FileNotFoundError(f"TFDS data set {name!r} is not prepared in {where}; rerun with --download on a "
                                f"machine with network, or copy a prepared TFDS directory there and pass "
                                f"--data-dir") from None
    except (ValueError, KeyError) as err:
        raise ValueError(f"TFDS data set {name!r} has no split {split_name!r} ({err})") from None
    if "image" not in builder.info.features:
        raise ValueError(f"TFDS data set {name!r} has no 'image' feature")
    shape = tuple(int(d) for d in builder.info.features["image"].shape)
    return TFDSSource(name, split_name, data_dir, shape, _size(builder, split_name, reader))


def _size(builder, split_name: str, reader) -> int:
    """The split's example count from the metadata, else the reader's cardinality (-1: unknown)."""
    try:
        return int(builder.info.splits[split_name].num_examples)
    except KeyError:                                  # tfds.testing.mock_data: no split metadata
        n = int(reader.cardinality())
        return n if n >= 0 else -1


def dataset(src: TFDSSource, global_batch: int, seed: int, dequantize: bool, input_context=None,
            buffer: int = SHUFFLE_BUFFER, start: int = 0) -> tf.data.Dataset:
    """Endless per-replica batches {x0, u, e} of one input pipeline (all of them without
    ``input_context``) from step ``start`` on (the stream is read from its beginning and the
    earlier batches skipped); the shuffle buffer holds at most ``buffer`` examples."""
    pipelines = input_context.num_input_pipelines if input_context else 1
    index = input_context.input_pipeline_id if input_context else 0
    batch = input_context.get_per_replica_batch_size(global_batch) if input_context else global_batch
    per_step = input_context.num_replicas_in_sync // pipelines if input_context else 1   # batches a step takes
    if 0 <= src.num_examples < global_batch:
        raise ValueError(f"batch size {global_batch} exceeds the {src.num_examples} training examples; "
                         f"lower --batch-size")
    # each epoch reshuffled in the buffer, from a seed sequence that is a function of ``seed``
    # (a shuffle inside flat_map would make the iterator impossible to checkpoint)
    shuffled = src.examples().shard(pipelines, index).shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    images = shuffled.repeat().batch(batch, drop_remainder=True)
    counter = tf.data.Dataset.range(ENDLESS)             # this pipeline's batch number
    noise_seed = tf.constant([seed, 2])
    ds = tf.data.Dataset.zip(images, counter).skip(start * per_step).map(
        lambda x, j: pipeline.with_noise(x, split(split(noise_seed, j), index), dequantize),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(2)


def iterator(src: TFDSSource, global_batch: int, seed: int, dequantize: bool, strategy: tf.distribute.Strategy,
             buffer: int = SHUFFLE_BUFFER, start: int = 0, map_fn=None):
    """A checkpointable iterator over the strategy's distributed batches of ``src`` from step
    ``start`` on, each per-replica batch passed through ``map_fn`` when given."""
    def per_pipeline(ctx):
        ds = dataset(src, global_batch, seed, dequantize, ctx, buffer, start)
        return ds if map_fn is None else ds.map(map_fn, deterministic=True)

    dist = strategy.distribute_datasets_from_function(per_pipeline)
    return iter(dist)


def resumable_batches(src: TFDSSource, global_batch: int, seed: int, dequantize: bool, strategy, ckpt,
                      map_fn=None):
    """-> (start, stop) -> the distributed batches of steps start .. stop - 1, resumable with ``ckpt``.

    On one machine the iterator joins ``ckpt`` (call this before restoring it), so a restored
    checkpoint resumes the stream where it stopped.  On several machines each worker reads its
    own shard and the chief's checkpoint holds only the chief's iterator: the stream is rebuilt
    and its first ``start`` batches skipped (exact too, at the cost of reading them).
    """
    make = lambda start: iterator(src, global_batch, seed, dequantize, strategy, start=start, map_fn=map_fn)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return lambda start, stop: (next(it) for it in [make(start)] for _ in range(start, stop))
    ckpt.data_iterator = it = make(0)
    return lambda start, stop: (next(it) for _ in range(start, stop))

"""Streaming TFDS input for score training and the Glow fit: no split is held in memory, and any
step is reached by position, on any number of replicas and machines.

The stream is one endless sequence of examples, position p = 0, 1, 2, ...: epoch e = p // n
visits the n records of the split in its stored order through a shuffle buffer of ``buffer``
records seeded by (seed, e).  Step i's global batch is positions i B, ..., i B + B - 1, and
every random draw of an example (dequantisation, the diffusion-time uniform, the noise e, a
horizontal flip) is a stateless function of (seed, p): the batches do not depend on how many
replicas or input pipelines split them.

  - Replicas: input pipeline k of W (one per machine) keeps the positions of its part of each
    global batch, [k B / W, (k + 1) B / W) within the batch, and cuts them into per-replica
    batches in replica order (``tf.distribute.Strategy.distribute_datasets_from_function``).
    Records are filtered before they are decoded: each machine decodes only its own examples.
  - Resume: the stream of step i is rebuilt at epoch i B // n and the records before offset
    i B % n of that epoch are skipped undecoded, so a resume at any step reads at most one
    epoch of records and nothing needs checkpointing.
  - Memory: the shuffle buffer holds encoded records (PNG bytes), never the split.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import tensorflow as tf

from shortdiff_tf import pixels
from shortdiff_tf.seeds import split

SHUFFLE_BUFFER = 10_000
ENDLESS = 2**62                    # positions: a run stops by its step budget


@dataclasses.dataclass(frozen=True)
class TFDSSource:
    """A prepared TFDS split of images: its shape and size come from the metadata (``data.tfds_source``)."""
    name: str
    split: str
    data_dir: Optional[str]
    shape: tuple
    num_examples: int

    def _builder(self):
        import tensorflow_datasets as tfds
        return tfds.builder(self.name, data_dir=self.data_dir)

    def records(self) -> tf.data.Dataset:
        """The split's encoded images in their stored order (deterministic, files not shuffled)."""
        import tensorflow_datasets as tfds
        options = tf.data.Options()
        options.deterministic = True
        ds = self._builder().as_dataset(split=self.split, shuffle_files=False,
                                        decoders={"image": tfds.decode.SkipDecoding()},
                                        read_config=tfds.ReadConfig(options=options, try_autocache=False))
        return ds.map(lambda ex: ex["image"], deterministic=True)

    def decoder(self) -> Callable:
        """encoded record -> uint8 image [H, W, C]."""
        feature = self._builder().info.features["image"]
        return lambda record: tf.ensure_shape(feature.decode_example(record), self.shape)


def shuffled(ds: tf.data.Dataset, buffer: int, seed) -> tf.data.Dataset:
    """``ds`` through tf.data's shuffle buffer of ``buffer`` elements seeded by the int64 pair
    ``seed`` itself.  (``Dataset.shuffle(seed=...)`` mixes in the global seed that
    ``tf.random.set_seed`` sets, so its order would depend on what else the process did.)"""
    spec = tf.nest.flatten(ds.element_spec)
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(ds), buffer_size=tf.constant(buffer, tf.int64),
        seed=seed[0], seed2=seed[1], seed_generator=tf.raw_ops.DummySeedGenerator(),
        output_types=[s.dtype for s in spec], output_shapes=[s.shape for s in spec], reshuffle_each_iteration=False)
    return tf.data.experimental.from_variant(variant, ds.element_spec)


def _epoch_seed(seed: int, epoch):
    """The shuffle seeds of an epoch, a stateless function of (seed, epoch) (never both 0, which
    tf.data would replace by random seeds)."""
    s = tf.cast(split(split(tf.constant([seed, 1]), epoch // 2**31), epoch % 2**31), tf.int64)
    return tf.stack([s[0], tf.bitwise.bitwise_or(s[1], 1)])


def positions(src: TFDSSource, seed: int, start: int, buffer: int = SHUFFLE_BUFFER) -> tf.data.Dataset:
    """(p, encoded record) for p = start, start + 1, ...: the stream from position ``start``."""
    n = src.num_examples
    records = src.records()
    epochs = tf.data.Dataset.range(start // n, ENDLESS).flat_map(
        lambda e: shuffled(records, buffer, _epoch_seed(seed, e)))
    return tf.data.Dataset.zip(tf.data.Dataset.range(start, ENDLESS), epochs.skip(start % n))


def example(x, p, seed: int, dequantize: bool, flip: bool) -> dict:
    """One example's draws, all from (seed, p): x0 (flipped left-right with probability 1/2 when
    ``flip``; dequantised, or at bin centres without ``dequantize``), the time uniform u, the
    noise e, and p itself (``index``: the dropout masks are keyed by it too)."""
    key = split(split(tf.constant([seed, 2]), p // 2**31), p % 2**31)
    if flip:
        x = tf.where(tf.random.stateless_uniform([], split(key, 3)) < 0.5, tf.reverse(x, [1]), x)
    u_pix = tf.random.stateless_uniform(tf.shape(x), split(key, 0)) if dequantize else tf.fill(tf.shape(x), 0.5)
    x0 = pixels.dequantize(x, u_pix)
    return {"x0": x0, "u": tf.random.stateless_uniform([], split(key, 1), dtype=tf.float64),
            "e": tf.random.stateless_normal(tf.shape(x0), split(key, 2)), "index": p}


def dataset(src: TFDSSource, global_batch: int, seed: int, dequantize: bool, input_context=None,
            buffer: int = SHUFFLE_BUFFER, start: int = 0, flip: bool = False) -> tf.data.Dataset:
    """Endless per-replica batches {x0, u, e, index} of one input pipeline (all of them without
    ``input_context``) from step ``start`` on."""
    pipelines = input_context.num_input_pipelines if input_context else 1
    k = input_context.input_pipeline_id if input_context else 0
    batch = input_context.get_per_replica_batch_size(global_batch) if input_context else global_batch
    if src.num_examples < global_batch:
        raise ValueError(f"batch size {global_batch} exceeds the {src.num_examples} training examples; "
                         f"lower --batch-size")
    share = global_batch // pipelines
    ds = positions(src, seed, start * global_batch, buffer)
    if pipelines > 1:                              # this machine's part of every global batch, undecoded
        ds = ds.filter(lambda p, _: (p % global_batch) // share == k)
    decode = src.decoder()
    ds = ds.map(lambda p, record: example(decode(record), p, seed, dequantize, flip),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch, drop_remainder=True).prefetch(2)


def distributed_batches(src: TFDSSource, global_batch: int, seed: int, dequantize: bool, strategy, start: int,
                        stop: int, flip: bool = False, map_fn=None, buffer: int = SHUFFLE_BUFFER):
    """The strategy's distributed batches of steps start, ..., stop - 1, each per-replica batch
    passed through ``map_fn`` when given."""
    def per_pipeline(ctx):
        ds = dataset(src, global_batch, seed, dequantize, ctx, buffer, start, flip)
        return ds if map_fn is None else ds.map(map_fn, deterministic=True)

    it = iter(strategy.distribute_datasets_from_function(per_pipeline))
    return (next(it) for _ in range(start, stop))

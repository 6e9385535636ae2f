"""From `config.dataset` to batches: TFDS sources, preprocessing and grain batching.

Every dataset, offline builder or TFDS catalog entry, is read through a TFDS array_record data
source and materialised once into host memory (the datasets this library trains on are small
enough; a 60k MNIST is ~50 MB). Batching is done by grain over record *indices*, which makes the
order a pure function of (seed, epoch, process) and the iterator position a single integer that is
saved with every checkpoint.

Batches are dicts of NumPy arrays, the process-local slice of the global batch:

    x        float32 (B, *example_shape)  the preprocessed data, what the model sees
    label    int32   (B,)                 class label (0 when the dataset has none)
    log_det  float32 (B,)                 log |det d x / d u| of the deterministic transforms
                                          (scaling, logit) from the unit-interval space u
                                          to model space, so that log p(u) = log p(x) + log_det
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
import threading
from collections.abc import Iterator

import grain
import numpy as np

from genjax.data import builders, preprocess

BINARIZE_MODES = ("none", "dynamic", "fixed")
# `config.preprocess` defaults: no intensity preprocessing (the only setting toy2d accepts).
PREPROCESS_DEFAULTS = {"binarize": "none", "dequantize": False, "scale": "unit", "logit_alpha": 0.0}
SCALE_MODES = ("unit", "symmetric")
# Catalog datasets whose uint8 pixels are already {0, 1} rather than 0..255.
_BINARY_CATALOG_DATASETS = ("binarized_mnist",)
# Host whose name resolution tells whether the TFDS download mirror can possibly be reached.
_NETWORK_PROBE_HOST = "storage.googleapis.com"


_SPLIT_IDS = {"train": 0, "test": 1}
# The train stream's length in batches (endless in practice), and its prefetching: a few
# batches ahead in a few threads, each batch one NumPy gather and one preprocessing call.
_ENDLESS = 2**62
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


class DatasetUnavailableError(RuntimeError):
    """A catalog dataset is not prepared locally and cannot be downloaded from here."""


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about its data, fixed before any batch is read.

    Attributes:
      name: the `config.dataset` string.
      example_shape: shape of one preprocessed example, e.g. (28, 28, 1) or (2,).
      num_train, num_test: split sizes (all processes together).
      num_classes: number of labels, or None.
      num_levels: number of discrete intensity levels of the raw data (256 for 8-bit images,
        2 for binary, 17 for the 8x8 digits), or None for continuous data.
      binarized: True when the model sees {0, 1} data (Bernoulli likelihoods apply).
      value_range: (low, high) of the preprocessed values.
    """

    name: str
    example_shape: tuple[int, ...]
    num_train: int
    num_test: int
    num_classes: int | None
    num_levels: int | None
    binarized: bool
    value_range: tuple[float, float]

    @property
    def num_dims(self) -> int:
        """Number of scalar dimensions of one example (for bits/dim)."""
        return int(np.prod(self.example_shape))

    @property
    def is_image(self) -> bool:
        return len(self.example_shape) == 3


def default_data_dir() -> str:
    """`$TFDS_DATA_DIR`, else `~/tensorflow_datasets`, as TFDS itself resolves it."""
    return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def _data_dir(config) -> str:
    return config.get("data_dir") or default_data_dir()


def _name_resolves(host: str, timeout_s: float = 5.0) -> bool:
    """Whether `host` resolves within `timeout_s` (a DNS look-up only; nothing is sent to it)."""
    result = []

    def resolve():
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def check_dataset_name(name: str) -> None:
    """Raises ValueError unless `name` is an offline dataset or in the TFDS catalog.

    Looks only at the local catalog (no network, no data directory).
    """
    if builders.is_offline_name(name):
        return
    if name.startswith("toy2d"):
        toy_names = [n for n in builders.OFFLINE_NAMES if n.startswith("toy2d/")]
        raise ValueError(f"config.dataset={name!r}; allowed toy2d names: {toy_names}")
    import tensorflow_datasets as tfds

    if name.split("/")[0].split(":")[0] not in tfds.list_builders(with_community_datasets=False):
        raise ValueError(
            f"config.dataset={name!r} is unknown; allowed: the offline datasets "
            f"{builders.OFFLINE_NAMES} or a TFDS catalog name (tfds.list_builders())."
        )


def _catalog_source(name: str, data_dir: str):
    """A TFDS catalog data source, downloading only where the network can be reached.

    Offline, TFDS would retry its downloads for minutes; this fails at once instead.
    """
    import tensorflow_datasets as tfds

    check_dataset_name(name)
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared() and not _name_resolves(_NETWORK_PROBE_HOST):
        raise DatasetUnavailableError(
            f"config.dataset={name!r} is a TFDS catalog dataset that is not prepared in "
            f"{data_dir!r}, and the network is unreachable. Download it first on a networked "
            f'machine (python -c "import tensorflow_datasets as tfds; tfds.data_source({name!r},'
            f' data_dir={data_dir!r})"), or use one of the offline datasets: '
            f"{', '.join(builders.OFFLINE_NAMES)}."
        )
    return tfds.data_source(name, data_dir=data_dir, download=True)


def _source(name: str, data_dir: str):
    """The dict split -> TFDS data source for `name`."""
    if builders.is_offline_name(name):
        return builders.prepare_offline(name, data_dir).as_data_source()
    return _catalog_source(name, data_dir)


def _raw_feature(example: dict) -> np.ndarray:
    for key in ("image", "x"):
        if key in example:
            return np.asarray(example[key])
    raise ValueError(f"dataset examples have no 'image' or 'x' feature: {sorted(example)}")


@functools.lru_cache(maxsize=16)
def load_raw(name: str, data_dir: str, split: str) -> dict[str, np.ndarray]:
    """Materialises one split as arrays {'x': raw values (N, ...), 'label': (N,) int32}.

    Raw values are as stored: uint8 intensities for images, float32 for toy data.
    """
    sources = _source(name, data_dir)
    if split not in sources:
        raise ValueError(f"dataset {name!r} has no split {split!r}; splits: {sorted(sources)}")
    source = sources[split]
    examples = source.__getitems__(list(range(len(source))))
    x = np.stack([_raw_feature(example) for example in examples])
    labels = np.array([int(example.get("label", 0)) for example in examples], np.int32)
    return {"x": x, "label": labels}


def _num_levels(name: str, raw_x: np.ndarray) -> int | None:
    if name in _BINARY_CATALOG_DATASETS:
        return 2
    if name == "digits8x8":
        return 17
    if raw_x.dtype == np.uint8:
        return 256
    return None


def check_preprocess_options(options) -> None:
    """Raises ValueError naming the `config.preprocess` field and its allowed values."""
    if options.binarize not in BINARIZE_MODES:
        raise ValueError(
            f"config.preprocess.binarize={options.binarize!r}; allowed: {BINARIZE_MODES}"
        )
    if options.scale not in SCALE_MODES:
        raise ValueError(f"config.preprocess.scale={options.scale!r}; allowed: {SCALE_MODES}")
    if options.logit_alpha and options.scale != "unit":
        raise ValueError(
            "config.preprocess.logit_alpha needs config.preprocess.scale='unit' "
            f"(got {options.scale!r}): the logit transform acts on [0, 1] data."
        )
    for field in ("logit_alpha", "dequantize"):
        if options[field] and options.binarize != "none":
            raise ValueError(
                f"config.preprocess.{field}={options[field]!r} cannot be combined with "
                f"config.preprocess.binarize={options.binarize!r}; allowed: binarize='none'."
            )


def check_preprocess_for_dataset(name: str, options) -> None:
    """Continuous toy data (`toy2d/*`) takes no intensity preprocessing."""
    if not name.startswith("toy2d/"):
        return
    for field, default in PREPROCESS_DEFAULTS.items():
        if options[field] != default:
            raise ValueError(
                f"config.preprocess.{field}={options[field]!r} does not apply to the continuous "
                f"2-D data of config.dataset={name!r}; allowed: {default!r}."
            )


class Preprocessor:
    """Turns raw arrays into model-space batches following `config.preprocess`.

    Order: intensities in [0, 1] -> binarize (fixed or dynamic) or uniformly dequantize ->
    scale to [-1, 1] -> logit transform. The log-Jacobian of the deterministic steps after
    the unit-interval space is returned with every batch (`log_det`).
    """

    def __init__(self, options, num_levels: int | None, seed: int):
        check_preprocess_options(options)
        self.options = options
        self.num_levels = num_levels
        self.seed = seed

    @property
    def binarized(self) -> bool:
        return self.options.binarize != "none" or self.num_levels == 2

    def intensities(self, raw_x: np.ndarray) -> np.ndarray:
        """Raw values -> float32; discrete levels are mapped onto [0, 1]."""
        if self.num_levels is None:
            return raw_x.astype(np.float32)
        return raw_x.astype(np.float32) / np.float32(self.num_levels - 1)

    def prepare_split(self, raw_x: np.ndarray, split: str) -> np.ndarray:
        """Deterministic, once-per-split work (fixed binarization)."""
        x = self.intensities(raw_x)
        if self.options.binarize == "fixed":
            # One seed per (run seed, split): no two runs or splits share a draw.
            seed = int(np.random.SeedSequence([self.seed, _SPLIT_IDS[split]]).generate_state(1)[0])
            x = preprocess.binarize_fixed(x, seed)
        return x

    def __call__(self, x: np.ndarray, raw_x: np.ndarray, rng: np.random.Generator):
        """One batch: (x in model space, log_det (B,))."""
        if self.options.binarize == "dynamic":
            x = preprocess.binarize_dynamic(x, rng)
        elif self.options.dequantize and self.num_levels and not self.binarized:
            x = preprocess.dequantize_uniform(raw_x, self.num_levels, rng)
        log_det = np.zeros((x.shape[0],), np.float32)
        if self.options.scale == "symmetric":
            x = preprocess.to_symmetric(x)
            log_det += np.float32(np.log(2.0) * np.prod(x.shape[1:]))
        if self.options.logit_alpha:
            x, logit_log_det = preprocess.logit_transform(x, self.options.logit_alpha)
            x, log_det = np.asarray(x), log_det + np.asarray(logit_log_det)
        return x.astype(np.float32), log_det

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Model space -> the unit-interval data space (for plotting samples)."""
        x = np.asarray(x, np.float32)
        if self.options.logit_alpha:
            x = np.asarray(preprocess.logit_transform_inverse(x, self.options.logit_alpha))
        elif self.options.scale == "symmetric":
            x = (x + 1.0) / 2.0
        return x

    def value_range(self) -> tuple[float, float]:
        if self.options.logit_alpha or (self.num_levels is None and not self.binarized):
            return (-np.inf, np.inf)  # logit space, or continuous data (toy2d) of any range
        return (-1.0, 1.0) if self.options.scale == "symmetric" else (0.0, 1.0)


class Dataset:
    """One dataset with its preprocessing: the spec, a train iterator and test batches."""

    def __init__(self, config):
        self.name = config.dataset
        self.data_dir = _data_dir(config)
        self.seed = config.seed
        check_preprocess_for_dataset(self.name, config.preprocess)
        train = load_raw(self.name, self.data_dir, "train")
        test = load_raw(self.name, self.data_dir, "test")
        self.preprocessor = Preprocessor(
            config.preprocess, _num_levels(self.name, train["x"]), config.seed
        )
        self._splits = {
            split: {**raw, "prepared": self.preprocessor.prepare_split(raw["x"], split)}
            for split, raw in (("train", train), ("test", test))
        }
        example_shape = tuple(train["x"].shape[1:])
        labels = train["label"]
        self.spec = DataSpec(
            name=self.name,
            example_shape=example_shape,
            num_train=len(labels),
            num_test=len(test["label"]),
            num_classes=int(labels.max()) + 1 if labels.max() > 0 else None,
            num_levels=self.preprocessor.num_levels,
            binarized=self.preprocessor.binarized,
            value_range=self.preprocessor.value_range(),
        )

    def _batch(self, split: str, indices: np.ndarray, rng: np.random.Generator) -> dict:
        arrays = self._splits[split]
        x, log_det = self.preprocessor(arrays["prepared"][indices], arrays["x"][indices], rng)
        return {"x": x, "label": arrays["label"][indices], "log_det": log_det}

    def train_iterator(self, global_batch_size: int) -> grain.DatasetIterator:
        """Endless, reshuffled-every-epoch iterator of this process's share of each batch.

        Records are sharded by `jax.process_index()` (each process owns every
        `process_count`-th record). Each epoch is a fresh permutation of the owned records
        (seeded by `config.seed` and the epoch), the epochs are laid end to end in one
        stream, and batch b is stream positions [b * B, (b + 1) * B) with B =
        `global_batch_size / process_count` (a batch may straddle two epochs). Each grain
        element is a whole batch, gathered with one NumPy index and preprocessed with a
        generator seeded by the batch index, in grain's prefetch threads. Its `get_state()` /
        `set_state()` (a single position) travel with every checkpoint.
        """
        import jax

        process_count, process_index = jax.process_count(), jax.process_index()
        local_batch_size = global_batch_size // process_count
        owned = np.arange(self.spec.num_train)[process_index::process_count]
        if len(owned) < local_batch_size:
            raise ValueError(
                f"config.batch_size={global_batch_size} exceeds the {self.spec.num_train} "
                f"training examples of {self.name!r} (per process: {len(owned)})."
            )

        @functools.lru_cache(maxsize=4)
        def epoch_order(epoch: int) -> np.ndarray:
            return owned[np.random.default_rng([self.seed, 4, epoch]).permutation(len(owned))]

        def batch_records(batch_index: int) -> np.ndarray:
            positions = batch_index * local_batch_size + np.arange(local_batch_size)
            epochs, offsets = np.divmod(positions, len(owned))
            records = np.empty(local_batch_size, np.int64)
            for epoch in np.unique(epochs):  # one, or two where the batch straddles epochs
                here = epochs == epoch
                records[here] = epoch_order(int(epoch))[offsets[here]]
            return records

        dataset = grain.MapDataset.range(_ENDLESS).random_map(
            lambda index, rng: self._batch("train", batch_records(index), rng),
            seed=self.seed + 1,
        )
        return iter(dataset.to_iter_dataset(_READ_OPTIONS))

    def num_batches(self, split: str, global_batch_size: int) -> int:
        """How many (padded) batches `eval_batches(split, global_batch_size)` yields."""
        return -(-len(self._splits[split]["label"]) // global_batch_size)

    def init_batch(self, num: int) -> np.ndarray:
        """The first `num` training examples, preprocessed (random steps seeded by
        `config.seed`): the same array in every process, for data-dependent initialisation."""
        indices = np.arange(min(num, self.spec.num_train))
        rng = np.random.default_rng([self.seed, 3])
        return self._batch("train", indices, rng)["x"]

    def unit_examples(self, split: str) -> np.ndarray:
        """Every example of `split` as intensities in the unit-interval data space, with no
        random preprocessing (no binarization, no dequantization): the one reference that
        sample-quality metrics score every model's samples against."""
        return self.preprocessor.intensities(self._splits[split]["x"])

    def _evaluation_rng(self, split: str) -> np.random.Generator:
        """The generator of a split's random preprocessing in every evaluation pass (seeded by
        the split), so every pass, and every checkpoint's, sees the same examples."""
        return np.random.default_rng([self.seed, 2, _SPLIT_IDS[split]])

    def labelled_batches(self, split: str, batch_size: int) -> Iterator[dict]:
        """Every example of `split` in order, preprocessed as `eval_batches` preprocesses them
        (random steps seeded by the split), in batches of up to `batch_size`, whole in every
        process: `x` (model space) and `label`. For host-side evaluations over a whole split
        (a linear probe)."""
        num_examples = len(self._splits[split]["label"])
        rng = self._evaluation_rng(split)
        for start in range(0, num_examples, batch_size):
            indices = np.arange(start, min(start + batch_size, num_examples))
            batch = self._batch(split, indices, rng)
            yield {"x": batch["x"], "label": batch["label"]}

    def eval_batches(self, split: str, global_batch_size: int) -> Iterator[dict]:
        """One deterministic pass over a split, padded to whole batches.

        Yields this process's share of each global batch with an extra `mask` (B,) that is
        0 on padding, and `index` (B,), the example's position in the split. Random
        preprocessing (dynamic binarization) is seeded by the split, so every evaluation of
        every checkpoint sees the same test set.
        """
        import jax

        process_count, process_index = jax.process_count(), jax.process_index()
        num_examples = len(self._splits[split]["label"])
        num_batches = self.num_batches(split, global_batch_size)
        rng = self._evaluation_rng(split)
        local = global_batch_size // process_count
        for batch_index in range(num_batches):
            positions = batch_index * global_batch_size + np.arange(global_batch_size)
            mask = positions < num_examples
            indices = np.where(mask, positions, 0)
            batch = self._batch(split, indices, rng)
            batch.update(mask=mask.astype(np.float32), index=positions.astype(np.int32))
            share = slice(process_index * local, (process_index + 1) * local)
            yield {key: value[share] for key, value in batch.items()}


def load_dataset(config) -> Dataset:
    """The one entry point: `config.dataset` (+ `config.preprocess`, `config.data_dir`)."""
    return Dataset(config)

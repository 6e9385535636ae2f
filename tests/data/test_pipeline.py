"""Tests for genjax/data/pipeline.py: `load_dataset(config)` -> spec, train iterator, eval batches.

Most tests read digits8x8 (1,442 train / 355 test images, levels 0..16). Its images are all
distinct, so with `binarize='none'` the raw image of a record (x * 16) names its train index.
The record order is a function of the seed alone (not of the preprocessing), so a second
dataset with the same seed and `binarize='none'` names the records of a binarized or
dequantized stream.
"""

import threading
import time

import jax
import numpy as np
import pytest

from genjax.data import OFFLINE_NAMES, DatasetUnavailableError, load_dataset, pipeline, preprocess
from genjax.train import base_config

NUM_TRAIN, NUM_TEST = 1442, 355
MAX_LEVEL = 16  # digits8x8 intensities are 0..16: 17 levels
EPOCH_BATCH = 206  # 1442 = 7 * 206: seven whole batches per epoch


def _config(dataset="digits8x8", seed=0, **preprocess_options):
    config = base_config()
    config.dataset = dataset
    config.seed = seed
    config.preprocess.update(preprocess_options)
    return config


def _take(dataset, global_batch_size, num_batches):
    """The first `num_batches` batches of a fresh train iterator."""
    iterator = dataset.train_iterator(global_batch_size)
    return [next(iterator) for _ in range(num_batches)]


def _concat(batches, key):
    return np.concatenate([batch[key] for batch in batches])


def _assert_batches_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.fixture(scope="module")
def raw():
    """The raw digits8x8 splits {'train'|'test': {'x': uint8 (N, 8, 8, 1), 'label': (N,)}}."""
    return {
        split: pipeline.load_raw("digits8x8", pipeline.default_data_dir(), split)
        for split in ("train", "test")
    }


@pytest.fixture(scope="module")
def train_position(raw):
    """Maps the bytes of a raw train image to its index in the train split."""
    position = {image.tobytes(): index for index, image in enumerate(raw["train"]["x"])}
    assert len(position) == NUM_TRAIN  # every image is distinct, so this names records
    return position


def _indices(x_unit, train_position):
    """Train index of each record of a binarize='none', scale='unit' stream, (N,)."""
    levels = np.rint(np.asarray(x_unit) * MAX_LEVEL).astype(np.uint8)
    return np.array([train_position[image.tobytes()] for image in levels])


def _record_stream(seed, global_batch_size, num_batches, train_position):
    """Train indices of the first records of the stream for `seed`, (num_batches * B,)."""
    batches = _take(load_dataset(_config(seed=seed)), global_batch_size, num_batches)
    return _indices(_concat(batches, "x"), train_position)


def test_data_spec_of_digits8x8_and_toy2d():
    spec = load_dataset(_config()).spec
    assert spec.example_shape == (8, 8, 1) and spec.num_dims == 64 and spec.is_image
    assert (spec.num_train, spec.num_test) == (NUM_TRAIN, NUM_TEST)
    assert spec.num_levels == 17 and spec.num_classes == 10
    assert not spec.binarized and spec.value_range == (0.0, 1.0)
    assert load_dataset(_config(binarize="dynamic")).spec.binarized

    toy = load_dataset(_config("toy2d/moons"))
    spec = toy.spec
    assert spec.example_shape == (2,) and spec.num_dims == 2 and not spec.is_image
    assert (spec.num_train, spec.num_test) == (50_000, 10_000)
    assert spec.num_levels is None and spec.num_classes is None and not spec.binarized
    batch = next(toy.train_iterator(1000))
    assert batch["x"].shape == (1000, 2) and batch["x"].dtype == np.float32
    # Continuous points pass through unchanged, inside the spec's (unbounded) value range.
    points = pipeline.load_raw("toy2d/moons", pipeline.default_data_dir(), "train")["x"]
    assert {row.tobytes() for row in batch["x"]} <= {row.tobytes() for row in points}
    assert np.all(batch["log_det"] == 0) and np.all(batch["label"] == 0)
    low, high = spec.value_range
    assert np.all((low <= points) & (points <= high))


def test_train_iterator_is_deterministic_for_a_seed_and_differs_between_seeds():
    def first_batches(seed):
        return _take(load_dataset(_config(seed=seed, binarize="dynamic")), 100, 20)

    reference = first_batches(seed=0)
    _assert_batches_equal(first_batches(seed=0), reference)
    other = first_batches(seed=1)
    assert not np.array_equal(_concat(other, "label"), _concat(reference, "label"))
    assert not np.array_equal(_concat(other, "x"), _concat(reference, "x"))


@pytest.mark.parametrize("global_batch_size", [EPOCH_BATCH, 100])
def test_each_epoch_is_a_fresh_permutation_of_the_train_split(
    raw, train_position, global_batch_size
):
    # Batches are cut from one endless stream (repeat, then batch): with B = 100 the epoch
    # boundary falls inside batch 15, and no record is dropped or repeated around it.
    num_batches = -(-2 * NUM_TRAIN // global_batch_size)
    batches = _take(load_dataset(_config()), global_batch_size, num_batches)
    assert all(batch["x"].shape == (global_batch_size, 8, 8, 1) for batch in batches)
    stream = _indices(_concat(batches, "x"), train_position)
    np.testing.assert_array_equal(_concat(batches, "label"), raw["train"]["label"][stream])
    first, second = stream[:NUM_TRAIN], stream[NUM_TRAIN : 2 * NUM_TRAIN]
    np.testing.assert_array_equal(np.sort(first), np.arange(NUM_TRAIN))
    np.testing.assert_array_equal(np.sort(second), np.arange(NUM_TRAIN))
    assert not np.array_equal(first, np.arange(NUM_TRAIN))  # shuffled
    assert np.mean(first == second) < 0.05  # reshuffled: ~1 / N of the places agree by chance


def test_set_state_resumes_exactly_where_the_iterator_stopped():
    config = _config(binarize="dynamic")
    reference = _take(load_dataset(config), 100, 40)  # crosses the epoch boundary (1442)

    interrupted = load_dataset(config).train_iterator(100)
    head = [next(interrupted) for _ in range(17)]
    state = interrupted.get_state()
    resumed = load_dataset(config).train_iterator(100)  # a new process would build anew
    for _ in range(3):
        next(resumed)  # set_state must also rewind an iterator that has moved on
    resumed.set_state(state)
    tail = [next(resumed) for _ in range(23)]
    _assert_batches_equal(head + tail, reference)  # the dynamic binarization draws too


def _by_example(values, stream):
    """A stream's records (E * N, ...) rearranged by epoch and train index, (E, N, ...)."""
    num_epochs = len(stream) // NUM_TRAIN
    epochs = np.empty((num_epochs, NUM_TRAIN, *values.shape[1:]), values.dtype)
    for epoch in range(num_epochs):
        records = slice(epoch * NUM_TRAIN, (epoch + 1) * NUM_TRAIN)
        epochs[epoch, stream[records]] = values[records]
    return epochs


def _assert_bernoulli_means(binary, levels):
    """Per raw level l, the binary values average l / 16 within 5 standard errors.

    The standard error of a mean of n draws is sqrt(p (1 - p) / n); with 15 levels, a false
    failure has a chance of ~1e-5.
    """
    assert set(np.unique(binary).tolist()) == {0.0, 1.0}
    assert np.all(binary[levels == 0] == 0) and np.all(binary[levels == MAX_LEVEL] == 1)
    for level in range(1, MAX_LEVEL):
        draws = binary[levels == level]
        p = level / MAX_LEVEL
        assert abs(draws.mean() - p) <= 5 * np.sqrt(p * (1 - p) / draws.size), level


def test_dynamic_binarization_is_bernoulli_and_fresh_every_epoch(raw, train_position):
    num_epochs, batch_size = 20, 721  # two batches per epoch
    num_batches = 2 * num_epochs
    batches = _take(load_dataset(_config(binarize="dynamic")), batch_size, num_batches)
    stream = _record_stream(0, batch_size, num_batches, train_position)
    binary = _by_example(_concat(batches, "x"), stream)  # (20, N, 8, 8, 1)
    # n >= 40,000 draws per level: standard errors <= 0.0025.
    _assert_bernoulli_means(binary, np.broadcast_to(raw["train"]["x"], binary.shape))
    # The same example in two epochs: independent draws disagree on a pixel with probability
    # 2 p (1 - p), on ~13,100 of the 92,288 pixels (standard deviation ~90).
    p = raw["train"]["x"] / MAX_LEVEL
    expected = np.sum(2 * p * (1 - p))
    for later in (1, num_epochs - 1):
        assert abs(np.sum(binary[0] != binary[later]) - expected) < 0.05 * expected


def test_fixed_binarization_is_one_draw_per_example_and_split(raw, train_position):
    dataset = load_dataset(_config(binarize="fixed"))
    batches = _take(dataset, EPOCH_BATCH, 14)  # two epochs
    stream = _record_stream(0, EPOCH_BATCH, 14, train_position)
    binary = _by_example(_concat(batches, "x"), stream)  # (2, N, 8, 8, 1)
    np.testing.assert_array_equal(binary[0], binary[1])
    # One draw per pixel: n >= 2,000 per level, standard errors <= 0.011.
    _assert_bernoulli_means(binary[0], raw["train"]["x"])

    # The test split is fixed too: the same in every evaluation and in a new Dataset.
    def evaluated_test_x(dataset):
        return np.concatenate([b["x"] for b in dataset.eval_batches("test", NUM_TEST)])

    test_x = evaluated_test_x(dataset)
    np.testing.assert_array_equal(evaluated_test_x(dataset), test_x)
    np.testing.assert_array_equal(evaluated_test_x(load_dataset(_config(binarize="fixed"))), test_x)
    _assert_bernoulli_means(test_x, raw["test"]["x"])
    # Splits (and run seeds) draw with different seeds: the same images binarize differently.
    options = _config(binarize="fixed").preprocess
    images = raw["train"]["x"]
    train_draw = pipeline.Preprocessor(options, 17, seed=0).prepare_split(images, "train")
    np.testing.assert_array_equal(train_draw, binary[0])
    test_draw = pipeline.Preprocessor(options, 17, seed=0).prepare_split(images, "test")
    other_seed = pipeline.Preprocessor(options, 17, seed=1).prepare_split(images, "train")
    # Independent draws differ on ~14% of the pixels; one shared seed would give 0%.
    assert np.mean(train_draw != test_draw) > 0.1 and np.mean(train_draw != other_seed) > 0.1


def _dequantized_pair(train_position, **options):
    """(x, log_det, train indices, unit-interval u) for 14 batches with `options`.

    u is the same stream dequantized with scale='unit' and no logit: the random draws are
    the same (same seed, same record order), so x is a transform of u.
    """
    batches = _take(load_dataset(_config(dequantize=True, **options)), EPOCH_BATCH, 14)
    unit = _take(load_dataset(_config(dequantize=True)), EPOCH_BATCH, 14)
    stream = _record_stream(0, EPOCH_BATCH, 14, train_position)
    return _concat(batches, "x"), _concat(batches, "log_det"), stream, _concat(unit, "x")


def test_uniform_dequantization_stays_in_the_bin_of_the_raw_level(raw, train_position):
    dataset = load_dataset(_config(dequantize=True))
    assert not dataset.spec.binarized and dataset.spec.value_range == (0.0, 1.0)
    x, log_det, stream, _ = _dequantized_pair(train_position)
    levels = raw["train"]["x"][stream]
    assert x.dtype == np.float32 and np.all((x >= 0) & (x < 1))
    np.testing.assert_array_equal(np.floor(x * 17), levels)
    np.testing.assert_array_equal(log_det, 0)
    # The offset inside the bin is U[0, 1): mean 1/2, variance 1/12, over ~185,000 values.
    offset = x.astype(np.float64) * 17 - levels
    assert abs(offset.mean() - 0.5) < 0.01 and abs(offset.var() - 1 / 12) < 0.01
    # A new draw every epoch: no image gets the same noise twice.
    by_example = _by_example(x, stream)  # (2, N, 8, 8, 1)
    assert not np.any(np.all(by_example[0] == by_example[1], axis=(1, 2, 3)))


def test_symmetric_scale_maps_onto_minus_one_one_with_log_det_d_log_2(train_position):
    dataset = load_dataset(_config(dequantize=True, scale="symmetric"))
    assert dataset.spec.value_range == (-1.0, 1.0)
    x, log_det, _, unit = _dequantized_pair(train_position, scale="symmetric")
    assert np.all((x >= -1) & (x <= 1))
    np.testing.assert_allclose(x, 2 * unit - 1, atol=1e-6)
    np.testing.assert_allclose(log_det, 64 * np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(dataset.preprocessor.to_unit(x), unit, atol=1e-6)


def test_logit_transform_log_det_and_inverse(train_position):
    alpha = 0.05
    dataset = load_dataset(_config(dequantize=True, logit_alpha=alpha))
    assert dataset.spec.value_range == (-np.inf, np.inf)
    x, log_det, _, unit = _dequantized_pair(train_position, logit_alpha=alpha)
    expected_x, expected_log_det = preprocess.logit_transform(unit, alpha)
    np.testing.assert_allclose(x, expected_x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(log_det, expected_log_det, rtol=1e-5)
    assert np.std(log_det) > 1  # data dependent, unlike the affine scalings
    recovered = dataset.preprocessor.to_unit(x)
    assert np.all((recovered >= 0) & (recovered <= 1))
    np.testing.assert_allclose(recovered, unit, atol=1e-5)


def test_eval_batches_cover_the_split_once_with_masked_padding(raw):
    dataset = load_dataset(_config())
    batches = list(dataset.eval_batches("test", 100))
    assert len(batches) == 4  # ceil(355 / 100)
    assert all(len(batch["mask"]) == 100 for batch in batches)
    mask, index = _concat(batches, "mask"), _concat(batches, "index")
    real = mask == 1
    assert set(np.unique(mask).tolist()) == {0.0, 1.0} and real.sum() == NUM_TEST
    np.testing.assert_array_equal(index[real], np.arange(NUM_TEST))
    assert np.all(index[~real] >= NUM_TEST)  # padding is only ever at the end
    levels = np.rint(_concat(batches, "x") * MAX_LEVEL).astype(np.uint8)
    np.testing.assert_array_equal(levels[real], raw["test"]["x"])
    np.testing.assert_array_equal(_concat(batches, "label")[real], raw["test"]["label"])

    binarized = load_dataset(_config(binarize="dynamic"))
    first = list(binarized.eval_batches("test", 100))
    _assert_batches_equal(list(binarized.eval_batches("test", 100)), first)
    _assert_batches_equal(
        list(load_dataset(_config(binarize="dynamic")).eval_batches("test", 100)), first
    )


def test_each_process_reads_its_own_share(monkeypatch, train_position):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    epochs, eval_shares = {}, {}
    for process in (0, 1):
        monkeypatch.setattr(jax, "process_index", lambda process=process: process)
        dataset = load_dataset(_config())
        batches = _take(dataset, EPOCH_BATCH, 7 * 2)  # 721 records per process: 7 x 103
        assert all(batch["x"].shape[0] == EPOCH_BATCH // 2 for batch in batches)
        stream = _indices(_concat(batches, "x"), train_position)
        epoch = stream[: NUM_TRAIN // 2]
        # Each process owns every second record and sees each once per epoch.
        np.testing.assert_array_equal(np.sort(epoch), np.arange(process, NUM_TRAIN, 2))
        np.testing.assert_array_equal(np.sort(stream[NUM_TRAIN // 2 :]), np.sort(epoch))
        epochs[process] = epoch
        eval_batches = list(dataset.eval_batches("test", 100))
        assert all(len(batch["index"]) == 50 for batch in eval_batches)
        eval_shares[process] = _concat(eval_batches, "index")[_concat(eval_batches, "mask") == 1]
    assert not set(epochs[0]) & set(epochs[1])
    assert set(epochs[0]) | set(epochs[1]) == set(range(NUM_TRAIN))
    assert not set(eval_shares[0]) & set(eval_shares[1])
    np.testing.assert_array_equal(
        np.sort(np.concatenate([eval_shares[0], eval_shares[1]])), np.arange(NUM_TEST)
    )


def test_batch_larger_than_the_train_split_is_refused():
    with pytest.raises(ValueError, match=r"config.batch_size=2000 exceeds the 1442 training"):
        load_dataset(_config()).train_iterator(2000)


def test_unprepared_catalog_dataset_fails_at_once_offline(tmp_path, monkeypatch):
    # Never try the network, even on a networked machine: pretend the mirror does not resolve.
    monkeypatch.setattr(pipeline, "_name_resolves", lambda host, timeout_s=5.0: False)
    config = _config("mnist")
    config.data_dir = str(tmp_path / "tfds")
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError) as failure:
        load_dataset(config)
    assert time.perf_counter() - start < 10
    message = str(failure.value)
    assert "'mnist' is a TFDS catalog dataset that is not prepared" in message
    assert "Download it first" in message
    assert ", ".join(OFFLINE_NAMES) in message


def test_name_resolves_is_false_for_a_reserved_name_and_bounded_by_its_timeout(monkeypatch):
    start = time.perf_counter()
    assert not pipeline._name_resolves("genjax.invalid", timeout_s=5)  # RFC 2606: never resolves
    assert time.perf_counter() - start < 6

    release = threading.Event()

    def hanging_lookup(*args):
        release.wait(30)
        raise OSError("timed out")

    monkeypatch.setattr(pipeline.socket, "getaddrinfo", hanging_lookup)
    start = time.perf_counter()
    assert not pipeline._name_resolves("example.com", timeout_s=0.2)
    assert time.perf_counter() - start < 2
    release.set()
    monkeypatch.setattr(pipeline.socket, "getaddrinfo", lambda *args: [("resolved",)])
    assert pipeline._name_resolves("example.com", timeout_s=5)


def test_unknown_dataset_name_lists_the_offline_names():
    with pytest.raises(ValueError, match="is unknown; allowed: the offline datasets") as failure:
        load_dataset(_config("no_such_dataset_anywhere"))
    assert "'digits8x8'" in str(failure.value) and "'toy2d/moons'" in str(failure.value)


@pytest.mark.parametrize(
    "options, message",
    [
        (
            dict(binarize="sometimes"),
            r"binarize='sometimes'; allowed: \('none', 'dynamic', 'fixed'\)",
        ),
        (dict(scale="wide"), r"config.preprocess.scale='wide'; allowed: \('unit', 'symmetric'\)"),
        (
            dict(scale="symmetric", logit_alpha=0.05),
            r"logit_alpha needs config.preprocess.scale='unit'",
        ),
        (
            dict(binarize="dynamic", logit_alpha=0.05),
            r"logit_alpha=0.05 cannot be combined with config.preprocess.binarize='dynamic'",
        ),
        (
            dict(binarize="fixed", dequantize=True),
            r"dequantize=True cannot be combined with config.preprocess.binarize='fixed'",
        ),
    ],
)
def test_bad_preprocess_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(_config(**options))


def test_load_dataset_refuses_intensity_preprocessing_on_toy_data():
    """Called directly (without config validation), toy data still refuses the logit transform."""
    with pytest.raises(ValueError, match=r"logit_alpha=0.05 does not apply .*'toy2d/moons'"):
        load_dataset(_config("toy2d/moons", logit_alpha=0.05))


def test_num_batches_counts_eval_batches():
    dataset = load_dataset(_config())
    for batch_size in (100, 355, 1000):
        expected = len(list(dataset.eval_batches("test", batch_size)))
        assert dataset.num_batches("test", batch_size) == expected == -(-NUM_TEST // batch_size)

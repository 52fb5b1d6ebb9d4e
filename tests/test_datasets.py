"""Data sets and the input pipeline: real data, exact batches, checkpointable positions."""

import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import write_folder
from PIL import Image
from sklearn.datasets import load_digits

from score_sde import datasets
from score_sde.datasets import synthetic
from score_sde.datasets.images import ArraySource
from score_sde.datasets.pipeline import batches
from score_sde.datasets.tfds import tfds_images


def take(ds_or_it, k):
    it = iter(ds_or_it) if not hasattr(ds_or_it, "get_state") else ds_or_it
    return [next(it) for _ in range(k)]


def cat(batch_list, key="x"):
    return np.concatenate([b[key] for b in batch_list])


def counting_source(n):
    """1 x 2 images: example i is [i, 250] (< 250 examples), label i % 7."""
    x = np.stack([np.arange(n), np.full(n, 250)], axis=1).astype(np.uint8)
    return ArraySource(x.reshape(n, 1, 2, 1), np.arange(n) % 7, 7)


def example_ids(batch):
    """(example index, flipped?) of each row of a batch of ``counting_source``."""
    pixels = np.round(batch["x"][:, 0, :, 0] * 255).astype(int)
    return pixels.min(axis=1), pixels[:, 0] == 250


# --- built-in synthetic sets ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(synthetic.DIMS))
def test_synthetic_set(name):
    dim = synthetic.DIMS[name]
    classes = len(synthetic.MIXTURES[name]().weights) if name in synthetic.MIXTURES else 0
    assert datasets.dataset_info(name) == ((dim,), 100_000, classes)
    assert datasets.dataset_info(name, split="test") == ((dim,), 10_000, classes)
    (batch,) = take(datasets.get_dataset(name, split="test", batch_size=10_000), 1)
    chex.assert_shape(batch["x"], (10_000, dim))
    assert batch["x"].dtype == np.float32 and np.all(np.isfinite(batch["x"]))
    if not classes:
        np.testing.assert_array_equal(batch["label"], -1)
    assert batch["mask"].all()
    if name in synthetic.MIXTURES:  # 6 standard deviations around the farthest mean
        m = synthetic.MIXTURES[name]()
        stds = np.sqrt(np.diagonal(np.asarray(m.covs), axis1=1, axis2=2))
        bound = np.max(np.abs(np.asarray(m.means)) + 6 * stds)
    else:
        bound = {"checkerboard": 2.0, "swiss_roll": 4.5 * np.pi / 5 + 6 * 0.05}[name]
    assert np.abs(synthetic.generate(name)).max() <= bound
    again = synthetic.generate_labelled.__wrapped__(name)
    np.testing.assert_array_equal(again[0], synthetic.generate(name))
    np.testing.assert_array_equal(again[1], synthetic.generate_labelled(name)[1])
    train = {row.tobytes() for row in synthetic.generate(name)[:100_000]}
    assert not any(row.tobytes() in train for row in batch["x"])  # train and test are disjoint


@pytest.mark.parametrize(
    "name, expected",
    [
        ("ring8", np.full(8, 1 / 8)),
        ("grid25", np.full(25, 1 / 25)),
        ("gmm16", [0.4, 0.3, 0.2, 0.1]),
    ],
)
def test_mixture_sets_follow_their_mixture(name, expected):
    x, labels = datasets.get_source(name, split="test").read(np.arange(10_000))
    mixture = synthetic.MIXTURES[name]()
    weights = np.asarray(jax.jit(mixture.mode_weights)(x))
    sigma = np.sqrt(np.multiply(expected, np.subtract(1, expected)) / len(x))
    assert np.all(np.abs(weights - expected) <= 4 * sigma), (weights, expected)
    # The label is the component drawn: the label frequencies follow the weights, and the
    # label is the most probable component of almost every point (the modes barely overlap).
    counts = np.bincount(labels, minlength=len(expected)) / len(x)
    assert np.all(np.abs(counts - expected) <= 4 * sigma), (counts, expected)
    best = np.argmax(np.asarray(jax.jit(mixture.responsibilities)(x)), axis=1)
    assert np.mean(best == labels) > 0.99
    mean = np.asarray(mixture.weights @ mixture.means)
    np.testing.assert_allclose(x.mean(0), mean, atol=0.1)
    if name == "ring8":
        np.testing.assert_allclose(np.linalg.norm(x, axis=1).mean(), 2.0, atol=0.01)


def test_checkerboard_on_black_squares():
    x = datasets.get_source("checkerboard", split="train").read(np.arange(100_000))[0]
    with jax.enable_x64(True):  # the data do not depend on the x64 flag
        again = synthetic.generate_labelled.__wrapped__("checkerboard")[0]
        np.testing.assert_array_equal(again[:100_000], x)
    assert x.min() >= -2 and x.max() < 2
    cells = np.floor(x).astype(int)
    assert np.all((cells.sum(1) % 2) == 0)
    _, counts = np.unique(cells, axis=0, return_counts=True)
    assert len(counts) == 8
    np.testing.assert_allclose(counts / len(x), 1 / 8, atol=0.005)


def test_swiss_roll_geometry():
    """The data are the noise-free roll (same draws of t) plus N(0, 0.05²) noise."""
    exact = np.asarray(synthetic.swiss_roll(jax.random.key(synthetic.SEED), 2000, noise=0.0))
    t = 5 * np.linalg.norm(exact, axis=1)
    assert t.min() >= 1.5 * np.pi - 1e-4 and t.max() <= 4.5 * np.pi + 1e-4
    angle_gap = np.angle(np.exp(1j * (np.arctan2(exact[:, 1], exact[:, 0]) - t)))
    np.testing.assert_allclose(angle_gap, 0, atol=1e-4)
    noise = synthetic.generate("swiss_roll")[:2000] - exact
    np.testing.assert_allclose(noise.mean(0), 0, atol=0.005)
    np.testing.assert_allclose(noise.std(0), 0.05, rtol=0.05)


# --- scikit-learn digits ---------------------------------------------------------------------


def test_digits_are_real_handwritten_digits():
    train, test = (datasets.get_source("digits", split=s) for s in ("train", "test"))
    assert (len(train), len(test)) == (1500, 297) and len(train) + len(test) == 1797
    assert datasets.dataset_info("digits") == ((8, 8, 1), 1500, 10)
    x_train, y_train = train.read(np.arange(1500))
    x_test, y_test = test.read(np.arange(297))
    levels = np.unique(np.concatenate([x_train, x_test]))
    np.testing.assert_array_equal(levels, np.round(np.arange(17) * 255 / 16))  # 17 grey levels
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([y_train, y_test])), np.bincount(load_digits().target)
    )

    # Class means differ (far more than with shuffled labels), and a nearest-class-mean
    # classifier fit on train works on test.
    def class_means(labels):
        return np.stack([x_train[labels == k].reshape(-1, 64).mean(0) for k in range(10)])

    def min_gap(means):
        return np.linalg.norm(means[:, None] - means[None], axis=-1)[~np.eye(10, dtype=bool)].min()

    means = class_means(y_train)
    shuffled = class_means(np.random.default_rng(0).permutation(y_train))
    assert min_gap(means) > 3 * min_gap(shuffled), (min_gap(means), min_gap(shuffled))
    dist = np.linalg.norm(x_test.reshape(-1, 1, 64) - means[None], axis=-1)
    accuracy = np.mean(dist.argmin(1) == y_test)
    assert accuracy > 0.85, accuracy


@pytest.mark.parametrize("size, resample", [(16, "nearest"), (32, "bilinear")])
def test_digits_upsampled(size, resample):
    native = datasets.get_source("digits", split="test").read(np.arange(297))[0]
    (batch,) = take(
        datasets.get_dataset(
            "digits", split="test", batch_size=297, image_size=size, channels=3, resample=resample
        ),
        1,
    )
    chex.assert_shape(batch["x"], (297, size, size, 3))
    assert batch["x"].min() == 0 and batch["x"].max() == 1
    np.testing.assert_array_equal(batch["x"][..., 0], batch["x"][..., 2])  # grey replicated
    np.testing.assert_allclose(batch["x"].mean(), native.mean() / 255, rtol=0.05)
    if resample == "nearest":  # each native pixel becomes a 2 x 2 block
        np.testing.assert_array_equal(batch["x"][:, ::2, ::2, :1] * 255, native)


# --- tensorflow-datasets ---------------------------------------------------------------------


def test_tfds_missing_data_fails_at_once_with_instructions(tmp_path):
    with pytest.raises(datasets.DatasetNotPreparedError) as err:
        datasets.get_dataset("cifar10", split="train", batch_size=8, data_dir=str(tmp_path))
    msg = str(err.value)
    assert "tfds build cifar10" in msg and str(tmp_path) in msg and "score-sde[prepare]" in msg
    with pytest.raises(datasets.DatasetNotPreparedError):
        datasets.dataset_info("cifar10", data_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or created


def test_tfds_half_made_folder_fails_with_the_message_only(tmp_path, caplog):
    """A variant folder without dataset_info.json (an interrupted build) gives the message
    without tfds's warnings about it."""
    (tmp_path / "cifar10" / "3.0.2").mkdir(parents=True)
    with caplog.at_level("WARNING"), pytest.raises(datasets.DatasetNotPreparedError) as err:
        datasets.get_dataset("cifar10", split="train", batch_size=8, data_dir=str(tmp_path))
    assert "tfds build cifar10" in str(err.value)
    assert not caplog.records, caplog.text


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
    """A real array_record tfds data set, built here without TensorFlow: image i is filled with
    the value 10·i and has label i % 3 (train: i < 10; test: 10 <= i < 14)."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))

    def png(value):
        buf = io.BytesIO()
        Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="PNG")
        return buf.getvalue()

    with tfds.core.registered.skip_registration():

        class ScoreSdeTinyImages(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                features = {
                    "image": tfds.features.Image(shape=(8, 8, 3)),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
                return tfds.core.DatasetInfo(
                    builder=self, features=tfds.features.FeaturesDict(features)
                )

            def _split_generators(self, dl_manager):
                return {
                    "train": self._generate_examples(0, 10),
                    "test": self._generate_examples(10, 14),
                }

            def _generate_examples(self, start, stop):
                for i in range(start, stop):
                    yield i, {"image": png(10 * i), "label": i % 3}

    ScoreSdeTinyImages(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


def test_tfds_array_record_pipeline(tiny_tfds):
    source = tfds_images("score_sde_tiny_images", "train", tiny_tfds, image_size=16, channels=1)
    assert (source.element_shape, len(source), source.num_classes) == ((16, 16, 1), 10, 3)
    got = take(batches(source, batch_size=4), 3)  # one pass: 4 + 4 + 2 (+2 padding)
    np.testing.assert_array_equal([b["mask"].sum() for b in got], [4, 4, 2])
    x, label, mask = cat(got), cat(got, "label"), cat(got, "mask")
    values = np.round(x[mask] * 255).reshape(10, -1)
    assert np.all(values == values[:, :1])  # constant images survive resizing
    np.testing.assert_array_equal(np.sort(values[:, 0]), 10 * np.arange(10))
    np.testing.assert_array_equal(label[mask], (values[:, 0] // 10).astype(int) % 3)


def test_tfds_registered_sets_on_mock_data():
    with tfds.testing.mock_data(num_examples=20):
        assert datasets.dataset_info("cifar10") == ((32, 32, 3), 20, 10)
        (b,) = take(
            datasets.get_dataset(
                "cifar10", split="train", batch_size=8, shuffle=True, repeat=True, random_flip=True
            ),
            1,
        )
        chex.assert_shape(b["x"], (8, 32, 32, 3))
        assert 0 <= b["x"].min() and b["x"].max() <= 1 and b["x"].std() > 0.1
        assert np.all((0 <= b["label"]) & (b["label"] < 10))
        assert datasets.dataset_info("mnist", image_size=32) == ((32, 32, 1), 20, 10)
        assert datasets.dataset_info("celeba") == ((140, 140, 3), 20, 0)
        (b,) = take(datasets.get_dataset("celeba", split="test", batch_size=3, image_size=64), 1)
        chex.assert_shape(b["x"], (3, 64, 64, 3))
        np.testing.assert_array_equal(b["label"], -1)


# --- image folders ---------------------------------------------------------------------------


def test_image_folder(tmp_path):
    write_folder(tmp_path)
    assert datasets.dataset_info("image_folder", image_size=10, data_dir=str(tmp_path)) == (
        (10, 10, 3),
        5,
        2,
    )
    (b,) = take(
        datasets.get_dataset(
            "image_folder", split="train", batch_size=5, image_size=10, data_dir=str(tmp_path)
        ),
        1,
    )
    np.testing.assert_array_equal(b["label"], [0, 0, 0, 1, 1])
    cats, dogs = b["x"][:3], b["x"][3:]
    # 40 x 20 -> 20 x 10 -> centre 10 x 10: only the green band (antialiasing may bleed at the edge)
    np.testing.assert_allclose(cats[:, :, 2:8], np.broadcast_to([0, 1, 0], (3, 10, 6, 3)))
    np.testing.assert_allclose(dogs, 128 / 255, atol=2 / 255)  # JPEG is lossy
    (t,) = take(
        datasets.get_dataset(
            "image_folder",
            split="test",
            batch_size=2,
            image_size=10,
            channels=1,
            data_dir=str(tmp_path),
        ),
        1,
    )
    chex.assert_shape(t["x"], (2, 10, 10, 1))
    np.testing.assert_array_equal(t["mask"], [True, False])
    np.testing.assert_array_equal(t["label"][:1], -1)
    with pytest.raises(datasets.DataError, match=r"split='val'.*\['test', 'train'\]"):
        datasets.get_source("image_folder", split="val", image_size=10, data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="needs image_size"):
        datasets.get_source("image_folder", split="test", data_dir=str(tmp_path))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "train" / "loose.png")
    with pytest.raises(ValueError, match="both image files and class subfolders"):
        datasets.get_source("image_folder", split="train", image_size=4, data_dir=str(tmp_path))


# --- the pipeline ------------------------------------------------------------------------------


def test_single_pass_covers_the_split_once():
    source = counting_source(23)
    for shuffle in (False, True):
        got = list(batches(source, batch_size=5, shuffle=shuffle, seed=4))
        assert [b["mask"].sum() for b in got] == [5, 5, 5, 5, 3]
        mask = cat(got, "mask")
        ids = example_ids({"x": cat(got)})[0][mask]
        np.testing.assert_array_equal(np.sort(ids), np.arange(23))
        assert shuffle != np.array_equal(ids, np.arange(23))
        np.testing.assert_array_equal(cat(got, "label")[mask], ids % 7)
    got = list(batches(source, batch_size=5, shuffle=True, drop_remainder=True))
    assert len(got) == 4 and all(b["mask"].all() for b in got)


def test_repeat_reshuffles_every_epoch():
    def stream(seed, k):
        ds = batches(counting_source(20), batch_size=5, shuffle=True, repeat=True, seed=seed)
        return example_ids({"x": cat(take(ds, k))})[0]

    epochs = stream(1, 12).reshape(3, 20)
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(20))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    np.testing.assert_array_equal(stream(1, 12), epochs.ravel())
    assert not np.array_equal(stream(2, 4), epochs[0])


def test_restored_iterator_gives_identical_batches():
    def make():
        return datasets.get_dataset(
            "digits",
            split="train",
            batch_size=32,
            shuffle=True,
            repeat=True,
            random_flip=True,
            seed=7,
        )

    it = iter(make())
    take(it, 50)  # past the first epoch (1500 / 32 = 46.9 batches)
    state = it.get_state()
    expected = take(it, 5)
    resumed = iter(make())  # a new pipeline, as after a restart
    resumed.set_state(state)
    for a, b in zip(take(resumed, 5), expected, strict=True):
        chex.assert_trees_all_equal(a, b)
    assert state == {"next_index": 50}


def test_random_flip_mirrors_half_the_images_whatever_the_batch_size():
    def stream(batch_size, k, **kw):
        ds = batches(counting_source(200), batch_size=batch_size, shuffle=True, repeat=True, **kw)
        return example_ids({"x": cat(take(ds, k))})

    ids, flipped = stream(100, 10, random_flip=True, seed=3)
    np.testing.assert_array_equal(ids, stream(100, 10, seed=3)[0])  # same order as unflipped
    assert 0.45 < flipped.mean() < 0.55, flipped.mean()
    for epoch in flipped.reshape(5, 200):  # flips are drawn anew every epoch
        assert 0.4 < epoch.mean() < 0.6
    assert 0.4 < np.mean(flipped[:200] != flipped[200:400]) < 0.6
    small_ids, small_flipped = stream(8, 125, random_flip=True, seed=3)
    np.testing.assert_array_equal(small_ids, ids)
    np.testing.assert_array_equal(small_flipped, flipped)
    # digits: each image is the original or its exact mirror.
    kwargs = dict(split="train", batch_size=500, shuffle=True, repeat=True, seed=3)
    mirrored = cat(take(datasets.get_dataset("digits", random_flip=True, **kwargs), 1))
    plain = cat(take(datasets.get_dataset("digits", **kwargs), 1))
    assert np.all(
        (mirrored == plain).all((1, 2, 3)) | (mirrored == plain[:, :, ::-1]).all((1, 2, 3))
    )
    assert not np.array_equal(mirrored, plain)


@pytest.mark.parametrize("repeat", [True, False])
def test_shards_partition_the_global_batches(repeat):
    """Process p's batch j is rows [p·B, (p+1)·B) of the single-process global batch j."""
    source, b, p = counting_source(23), 4, 3
    kwargs = dict(shuffle=True, repeat=repeat, random_flip=True, seed=5)
    single = take(
        batches(source, batch_size=b * p, shard_count=1, shard_index=0, **kwargs),
        6 if repeat else 2,
    )
    shards = [
        take(batches(source, batch_size=b, shard_index=i, shard_count=p, **kwargs), len(single))
        for i in range(p)
    ]
    if not repeat:  # equal numbers of batches on every process, however the split divides
        for i in range(p):
            assert (
                len(list(batches(source, batch_size=b, shard_index=i, shard_count=p, **kwargs)))
                == 2
            )
    for j, whole in enumerate(single):
        for key in ("x", "label", "mask"):
            np.testing.assert_array_equal(np.concatenate([s[j][key] for s in shards]), whole[key])


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown data set 'cifar11'; valid names: .*cifar10"):
        datasets.get_dataset("cifar11", split="train", batch_size=8)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size=.* must be a positive integer"):
            datasets.get_dataset("ring8", split="train", batch_size=bad)
    with pytest.raises(ValueError, match="vector data: pass image_size=None"):
        datasets.get_dataset("ring8", split="train", batch_size=8, image_size=32)
    with pytest.raises(ValueError, match="random_flip=True needs images"):
        datasets.get_dataset("ring8", split="train", batch_size=8, random_flip=True)
    with pytest.raises(ValueError, match=r"split='valid' is not a split of 'digits'"):
        datasets.get_source("digits", split="valid")
    with pytest.raises(ValueError, match="drop_remainder=True would leave no batch"):
        batches(counting_source(5), batch_size=4, shard_count=2, shard_index=0, drop_remainder=True)
    with pytest.raises(ValueError, match="0 <= shard_index < shard_count"):
        batches(counting_source(5), batch_size=1, shard_index=2, shard_count=2)


# --- scaling and dequantization ----------------------------------------------------------------


def test_scalers_are_inverse():
    x = jnp.linspace(0, 1, 11)
    for centered, lo in ((True, -1.0), (False, 0.0)):
        y = datasets.get_data_scaler(centered)(x)
        assert (y.min(), y.max()) == (lo, 1.0)
        np.testing.assert_allclose(datasets.get_data_inverse_scaler(centered)(y), x, atol=1e-7)


@pytest.mark.parametrize(
    ("name", "split", "first", "count"),
    [
        ("digits", "test[:64]", 0, 64),
        ("digits", "train[1490:]", 1490, 10),
        ("ring8", "test[5:8]", 5, 3),
    ],
)
def test_a_sliced_split_is_those_examples_of_the_split_in_order(name, split, first, count):
    whole = datasets.get_source(name, split=split.split("[")[0])
    part = datasets.get_source(name, split=split)
    assert len(part) == count and part.num_classes == whole.num_classes
    x, labels = part.read(np.arange(count))
    want_x, want_labels = whole.read(np.arange(first, first + count))
    np.testing.assert_array_equal(x, want_x)
    np.testing.assert_array_equal(labels, want_labels)
    info = datasets.dataset_info(name, split=split)
    assert info.num_examples == count and info.shape == tuple(whole.element_shape)
    batch_list = take(datasets.get_dataset(name, split=split, batch_size=count), 1)
    scale = 255.0 if name == "digits" else 1.0  # batches hold images in [0, 1]
    np.testing.assert_allclose(cat(batch_list), want_x / scale, rtol=1e-6)
    with pytest.raises(ValueError, match=r"split='test\[300:\]' selects no example: .* 297"):
        datasets.get_source("digits", split="test[300:]")

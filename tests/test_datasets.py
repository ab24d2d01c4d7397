"""The X-ray data layer: synthetic generator, real-format loaders, partitions, card, baseline.

Files are written in the real formats (np.savez archives in the MedMNIST layout, JPEG
and PNG folders in the Kermany layout) and read back with the real loaders.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from common.errors import DataError
from common.training import evaluate, train
from datasets.xray import (
    card_markdown,
    generate,
    load_kermany,
    load_pneumoniamnist,
    load_source,
    load_synthetic,
    make_card,
)
from datasets.xray.baseline import pixel_logistic_regression
from datasets.xray.partition import MIN_PER_CLASS, iid, label_skew

# Measured with seed 0 (1200 train / 400 test at 64 px, 3 epochs): CNN AUC 0.92 vs pixel
# logistic regression 0.82; over seeds 0-3 the gap was 0.07 to 0.12.
CNN_MARGIN = 0.05


# --------------------------------------------------------------------------- generator

def test_generator_is_deterministic_by_seed():
    images, labels = generate(40, size=28, seed=7)
    again_images, again_labels = generate(40, size=28, seed=7)
    other_images, _ = generate(40, size=28, seed=8)
    assert np.array_equal(images, again_images) and np.array_equal(labels, again_labels)
    assert not np.array_equal(images, other_images)


@pytest.mark.parametrize("size", [28, 64, 128])
def test_generator_shapes_dtypes_and_balance(size):
    images, labels = generate(30, size=size, seed=1)
    assert images.shape == (30, 1, size, size) and images.dtype == np.uint8
    assert labels.shape == (30,) and labels.dtype == np.int64
    assert int(labels.sum()) == round(30 * 0.73)
    assert images.std() > 20  # an image, not a flat field


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_class_balance_is_configurable(fraction):
    _, labels = generate(40, size=28, pneumonia_fraction=fraction, seed=2)
    assert int(labels.sum()) == round(40 * fraction)
    if 0 < fraction < 1:
        steps = np.diff(labels)
        assert (steps > 0).any() and (steps < 0).any()  # shuffled, not sorted


@pytest.mark.parametrize("kwargs, fragment", [
    ({"size": 4}, "size must be an integer from 8 to 1024 px"),
    ({"size": 2048}, "size must be an integer from 8 to 1024 px"),
    ({"pneumonia_fraction": 1.5}, "pneumonia_fraction"),
    ({"n": -1}, "n must be"),
])
def test_generator_rejects_bad_arguments(kwargs, fragment):
    with pytest.raises(DataError, match=fragment):
        generate(**{"n": 4, **kwargs})


@pytest.mark.parametrize("size", [8, 20, 32, 100])
def test_generator_renders_any_size_so_mocks_fit_any_upload(size):
    images, labels = generate(6, size=size, seed=1)
    assert images.shape == (6, 1, size, size) and images.dtype == np.uint8
    assert 20 < images.mean() < 235 and len(labels) == 6


def test_brightness_does_not_give_the_label_away():
    images, labels = generate(600, size=28, seed=3)
    pixels = images.reshape(len(images), -1).astype(np.float64)
    for statistic in (pixels.mean(axis=1), pixels.std(axis=1)):
        assert 0.4 < roc_auc_score(labels, statistic) < 0.6


def test_small_cnn_clearly_beats_pixel_logistic_regression():
    data = load_synthetic(n=1600, size=64, seed=0, test_fraction=0.25)
    baseline = pixel_logistic_regression(data.train, data.test, seed=0)
    trained = train(data.train.images, data.train.labels, epochs=3, seed=0)
    cnn = evaluate(data.test.images, data.test.labels, trained["weights"])
    assert 0.65 < baseline["auc"] < 0.9
    assert cnn["auc"] > baseline["auc"] + CNN_MARGIN, (cnn["auc"], baseline["auc"])
    assert isinstance(baseline["accuracy"], float) and baseline["n_test"] == 400


# --------------------------------------------------------------------------- PneumoniaMNIST

def _npz_arrays(n: int = 6, size: int = 28) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([[0], [1]] * (n // 2), dtype=np.uint8)
    return arrays


def _write_npz(path, **overrides):
    arrays = {**_npz_arrays(), **overrides}
    np.savez(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def test_pneumoniamnist_npz_loads(tmp_path):
    path = _write_npz(tmp_path / "pneumoniamnist.npz", test_labels=np.array([0, 1, 1, 1, 0, 1]))
    data = load_pneumoniamnist(path)
    assert data.train.images.shape == (6, 1, 28, 28) and data.train.images.dtype == np.uint8
    assert data.train.labels.dtype == np.int64 and data.train.labels.tolist() == [0, 1] * 3
    assert data.test.labels.tolist() == [0, 1, 1, 1, 0, 1]           # (N,) labels too
    assert np.array_equal(data.val.images[:, 0], _npz_arrays()["val_images"])
    assert not data.synthetic and "CC BY 4.0" in data.licence
    resized = load_source(f"pneumoniamnist:{path}", size=64)
    assert resized.train.images.shape == (6, 1, 64, 64) and resized.test.images.dtype == np.uint8


def test_pneumoniamnist_without_val_split(tmp_path):
    path = _write_npz(tmp_path / "noval.npz", val_images=None, val_labels=None)
    assert load_pneumoniamnist(path).val is None


def _truncated(tmp_path):
    path = _write_npz(tmp_path / "truncated.npz")
    path.write_bytes(path.read_bytes()[:3000])
    return path


BAD_NPZ = {
    "missing key": (lambda p: _write_npz(p, test_labels=None), "missing keys test_labels"),
    "half a val split": (lambda p: _write_npz(p, val_labels=None), "missing keys val_labels"),
    "float images": (lambda p: _write_npz(p, train_images=np.zeros((6, 28, 28), np.float32)),
                     "train_images has dtype float32, expected uint8"),
    "float labels": (lambda p: _write_npz(p, test_labels=np.zeros(6, np.float64)),
                     "test_labels has dtype float64"),
    "bad label value": (lambda p: _write_npz(p, train_labels=np.full((6, 1), 7, np.uint8)),
                        r"train_labels has values \[7\]"),
    "count mismatch": (lambda p: _write_npz(p, val_labels=np.zeros(5, np.uint8)),
                       "val has 6 images but 5 labels"),
    "wrong ndim": (lambda p: _write_npz(p, test_images=np.zeros((6, 784), np.uint8)),
                   r"test_images has shape \(6, 784\)"),
    "empty split": (lambda p: _write_npz(p, test_images=np.zeros((0, 28, 28), np.uint8),
                                         test_labels=np.zeros(0, np.uint8)), "test split is empty"),
    "sizes differ": (lambda p: _write_npz(p, test_images=np.zeros((6, 64, 64), np.uint8)),
                     "different image sizes"),
}


@pytest.mark.parametrize("case", sorted(BAD_NPZ))
def test_bad_npz_gives_a_one_line_data_error(tmp_path, case):
    write, fragment = BAD_NPZ[case]
    path = write(tmp_path / "bad.npz")
    with pytest.raises(DataError, match=fragment) as caught:
        load_pneumoniamnist(path)
    assert "\n" not in str(caught.value) and "bad.npz" in str(caught.value)


@pytest.mark.parametrize("content", [b"this is not a zip file", None])
def test_not_a_zip_or_truncated_npz(tmp_path, content):
    if content is None:
        path = _truncated(tmp_path)
    else:
        path = tmp_path / "bad.npz"
        path.write_bytes(content)
    with pytest.raises(DataError, match="not an .npz") as caught:
        load_pneumoniamnist(path)
    assert path.name in str(caught.value)


def test_missing_npz_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_pneumoniamnist(tmp_path / "absent.npz")


# --------------------------------------------------------------------------- Kermany folders

def _kermany(root, splits=("train", "val", "test"), per_class=2):
    rng = np.random.default_rng(0)
    for split in splits:
        for label in ("NORMAL", "PNEUMONIA"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (40 + 10 * i, 50, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"person{i}_{label.lower()}.jpeg")
            Image.new("L", (30, 30), 128).save(folder / "extra.png")
            (folder / "notes.txt").write_text("not an image")
    return root


def test_kermany_folder_loads(tmp_path):
    data = load_kermany(_kermany(tmp_path / "chest_xray"), size=28)
    assert data.train.images.shape == (6, 1, 28, 28) and data.train.images.dtype == np.uint8
    assert data.train.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.val is not None and len(data.test) == 6 and not data.synthetic
    via_spec = load_source(f"folder:{tmp_path / 'chest_xray'}", size=64)
    assert via_spec.test.images.shape == (6, 1, 64, 64)


def test_kermany_val_is_optional(tmp_path):
    assert load_kermany(_kermany(tmp_path / "x", splits=("train", "test")), size=28).val is None


def _empty(folder):
    for child in folder.iterdir():
        child.unlink()


KERMANY_FAULTS = {
    "missing split": (lambda r: shutil.rmtree(r / "test"), "test: missing split folder"),
    "missing class": (lambda r: shutil.rmtree(r / "train" / "PNEUMONIA"),
                      "PNEUMONIA: missing class folder"),
    "empty class": (lambda r: _empty(r / "val" / "NORMAL"), "NORMAL: no images"),
    "corrupt jpeg": (lambda r: (r / "train" / "PNEUMONIA" / "person9_virus.jpeg").write_bytes(
        np.random.default_rng(1).bytes(500)), "person9_virus.jpeg: unreadable image"),
    "truncated jpeg": (lambda r: (r / "test" / "NORMAL" / "cut.jpeg").write_bytes(
        (r / "test" / "NORMAL" / "person1_normal.jpeg").read_bytes()[:400]),
                       "cut.jpeg: unreadable image"),
}


@pytest.mark.parametrize("case", sorted(KERMANY_FAULTS))
def test_bad_kermany_folder_gives_a_one_line_data_error(tmp_path, case):
    root = _kermany(tmp_path / "chest_xray")
    damage, fragment = KERMANY_FAULTS[case]
    damage(root)
    with pytest.raises(DataError, match=fragment) as caught:
        load_kermany(root, size=28)
    assert "\n" not in str(caught.value)


def test_missing_kermany_root(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_source(f"folder:{tmp_path / 'nowhere'}")


# --------------------------------------------------------------------------- sources and card

def test_load_synthetic_and_unknown_source():
    data = load_source("synthetic", size=28, n=100, seed=4)
    assert (len(data.train), len(data.test), data.val) == (80, 20, None)
    assert data.synthetic and data.source == "synthetic" and "no patient data" in data.licence
    with pytest.raises(DataError, match="unknown data source 'ftp:x'"):
        load_source("ftp:x")


def test_card_is_json_and_says_synthetic():
    data = load_synthetic(n=100, size=28, seed=0)
    card = json.loads(json.dumps(make_card(data, "xray")))
    assert card["synthetic"] is True and "SYNTHETIC" in card["summary"]
    assert card["image"] == {"shape": [1, 28, 28], "dtype": "uint8"}
    assert card["labels"] == {"0": "normal", "1": "pneumonia"}
    train = card["splits"]["train"]
    assert train["images"] == 80 and train["pneumonia"] == int(data.train.labels.sum())
    assert card["n_images"] == 100 and card["pneumonia_fraction"] == 0.73
    text = card_markdown(card)
    assert "SYNTHETIC" in text and "| train | 80 |" in text and "licence" in text


def test_card_of_real_data_is_not_marked_synthetic(tmp_path):
    card = make_card(load_pneumoniamnist(_write_npz(tmp_path / "p.npz")), "pmnist")
    assert card["synthetic"] is False and "SYNTHETIC" not in card_markdown(card)
    assert set(card["splits"]) == {"train", "val", "test"} and card["pneumonia_fraction"] == 0.5


# --------------------------------------------------------------------------- partitions

def _check_cover(parts, n):
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))
    assert all(len(part) > 0 and part.dtype == np.int64 for part in parts)


def test_iid_partitions():
    labels = generate(103, size=28, seed=0)[1]
    parts = iid(labels, 4, seed=1)
    _check_cover(parts, 103)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid(labels, 4, seed=1)))


def test_label_skew_partitions_are_skewed_but_trainable():
    labels = generate(1000, size=28, seed=0)[1]
    parts = label_skew(labels, 5, alpha=0.2, seed=0)
    _check_cover(parts, 1000)
    for part in parts:
        assert np.bincount(labels[part], minlength=2).min() >= MIN_PER_CLASS
    skewed = [labels[part].mean() for part in parts]
    even = [labels[part].mean() for part in iid(labels, 5, seed=0)]
    assert max(skewed) - min(skewed) > 0.3 and max(even) - min(even) < 0.15


@pytest.mark.parametrize("call, fragment", [
    (lambda y: iid(y, 0), "positive integer"),
    (lambda y: iid(y, 11), "cannot split 10 samples into 11"),
    (lambda y: label_skew(y, 2, alpha=0), "alpha must be positive"),
    (lambda y: label_skew(y, 4), "class 1 has only 3 samples"),
])
def test_partition_arguments_are_checked(call, fragment):
    labels = np.array([0] * 7 + [1] * 3)
    with pytest.raises(DataError, match=fragment):
        call(labels)

import gzip
import struct

import datasets
import numpy as np
import PIL.Image
import pytest

from larp_hf.data import load_image_dataset, loading, read_idx


def write_idx(path, array: np.ndarray, compress: bool):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


@pytest.fixture
def fake_fashion_mnist(tmp_path):
    """A Fashion-MNIST folder in the original IDX format, 12 train and 5 test images (gzipped like Debian's)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    arrays = {}
    for split, count in (("train", 12), ("test", 5)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        images_stem, labels_stem = loading.FASHION_MNIST_FILES[split]
        write_idx(folder / images_stem, images, compress=True)
        write_idx(folder / labels_stem, labels, compress=True)
        arrays[split] = (images, labels)
    return folder, arrays


def test_read_idx_plain_and_gzipped(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (False, True):
        path = write_idx(tmp_path / f"x{compress}", array, compress)
        assert np.array_equal(read_idx(path), array)


def test_read_idx_refuses_broken_files(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x89PNG not idx")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    path = write_idx(tmp_path / "short", np.zeros((4, 5), dtype=np.uint8), compress=False)
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)


def test_fashion_mnist_from_idx_files(fake_fashion_mnist, tmp_path):
    folder, arrays = fake_fashion_mnist
    loaded = load_image_dataset("fashion_mnist", data_dir=folder, cache_dir=str(tmp_path / "cache"))
    assert isinstance(loaded, datasets.DatasetDict) and set(loaded) == {"train", "test"}
    test = loaded["test"]
    assert len(loaded["train"]) == 12 and len(test) == 5
    assert isinstance(test.features["image"], datasets.Image)
    assert test.features["label"].num_classes == 10 and test.features["label"].names[9] == "Ankle boot"
    images, labels = arrays["test"]
    for i in range(5):
        example = test[i]
        assert example["image"].mode == "L" and example["image"].size == (28, 28)
        assert np.array_equal(np.asarray(example["image"]), images[i])
        assert example["label"] == labels[i]


def test_fashion_mnist_folder_from_environment(fake_fashion_mnist, tmp_path, monkeypatch):
    folder, _ = fake_fashion_mnist
    monkeypatch.setenv("LARP_FASHION_MNIST_DIR", str(folder))
    train = load_image_dataset("fashion_mnist", split="train", cache_dir=str(tmp_path / "cache"))
    assert len(train) == 12


def test_second_load_is_a_cache_hit(fake_fashion_mnist, tmp_path, monkeypatch):
    folder, _ = fake_fashion_mnist
    cache_dir = str(tmp_path / "cache")
    first = load_image_dataset("fashion_mnist", split="train", data_dir=folder, cache_dir=cache_dir)
    parsed = []
    monkeypatch.setattr(loading, "read_idx", lambda path: parsed.append(path) or pytest.fail("IDX parsed again"))
    second = load_image_dataset("fashion_mnist", split="train", data_dir=folder, cache_dir=cache_dir)
    assert parsed == []
    assert [f["filename"] for f in second.cache_files] == [f["filename"] for f in first.cache_files]


def test_missing_fashion_mnist_folder_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_dataset("fashion_mnist", data_dir=tmp_path / "nowhere")


def test_real_fashion_mnist():
    """The Debian package `dataset-fashion-mnist` (installed by the README's commands)."""
    if loading.fashion_mnist_dir() is None:
        pytest.fail("Fashion-MNIST is not installed: run `apt-get install dataset-fashion-mnist` (see the README).")
    loaded = load_image_dataset("fashion_mnist")
    assert len(loaded["train"]) == 60_000 and len(loaded["test"]) == 10_000
    assert loaded["train"].features["label"].num_classes == 10
    assert set(loaded["test"]["label"]) == set(range(10))
    assert loaded["test"][0]["image"].size == (28, 28)


def test_imagefolder_with_class_subfolders(tmp_path):
    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        for i in range(3):
            PIL.Image.new("RGB", (20, 10), (i * 40, 0, 0)).save(tmp_path / label / f"{i}.png")
    loaded = load_image_dataset(tmp_path, split="train", cache_dir=str(tmp_path / ".cache"))
    assert len(loaded) == 6
    assert loaded.features["label"].names == ["cats", "dogs"]
    assert loaded[0]["image"].size == (20, 10)


def test_save_to_disk_folder_with_other_column_names(tmp_path):
    features = datasets.Features({"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=["x", "y"])})
    images = [PIL.Image.new("L", (8, 8), 10 * i) for i in range(4)]
    datasets.Dataset.from_dict({"img": images, "fine_label": [0, 1, 0, 1]}, features=features).save_to_disk(tmp_path)
    loaded = load_image_dataset(tmp_path)
    assert set(loaded.column_names) == {"image", "label"}
    assert loaded.features["label"].names == ["x", "y"]


def test_nonexistent_path_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_dataset(tmp_path / "missing" / "data")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_dataset("./no-such-folder")


def test_dataset_without_image_column_is_refused(tmp_path):
    datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).save_to_disk(tmp_path)
    with pytest.raises(ValueError, match="has no image column.*cast_column"):
        load_image_dataset(tmp_path)


def test_unknown_split_is_refused(tiny_image_dataset_dir):
    with pytest.raises(ValueError, match="no split 'validation'; its splits are \\['train', 'test'\\]"):
        load_image_dataset(tiny_image_dataset_dir, split="validation")


def test_a_single_saved_dataset_is_only_its_own_split(tmp_path):
    images = [PIL.Image.new("L", (8, 8), 10 * i) for i in range(4)]
    datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()})).save_to_disk(
        tmp_path
    )
    assert len(load_image_dataset(tmp_path, split="train")) == 4  # saved without a split name: it is "train"
    with pytest.raises(ValueError, match=r"holds a single split \('train'\), not 'test'"):
        load_image_dataset(tmp_path, split="test")

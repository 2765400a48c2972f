"""
`load_image_dataset` on the layouts a user's own images come in, all generated here: imagefolders with and without
class folders, metadata.jsonl / metadata.csv beside the images, a CSV of image paths, save_to_disk folders, parquet
files and folders; RGB, grey, RGBA and non-square images; string, integer and no labels. And the records that say
where a model's data came from (`larp_hf.data.provenance`).
"""

import json
import time

import datasets
import numpy as np
import PIL.Image
import pytest

from larp_hf.data import DatasetRecord, choose_dataset, load_image_dataset
from larp_hf.data.provenance import TRAINING_DATA_FILE


NAMES = ["triangle", "circle", "square"]  # not sorted: the ClassLabel sorts them


def image(mode: str, size=(12, 8), seed: int = 0) -> PIL.Image.Image:
    """A random image of a PIL mode ("RGB", "L", "RGBA") and (width, height)."""
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    array = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return PIL.Image.fromarray(array[..., 0] if channels == 1 else array, mode)


def flat_folder(folder, count: int = 6, mode: str = "RGB", size=(12, 8)):
    folder.mkdir(parents=True)
    for i in range(count):
        image(mode, size, seed=i).save(folder / f"{i}.png")
    return folder


def test_imagefolder_with_class_folders_rgba_and_non_square(tmp_path):
    for index, name in enumerate(NAMES):
        flat_folder(tmp_path / "images" / name, count=2, mode="RGBA", size=(12, 8 + index))
    train = load_image_dataset(tmp_path / "images", split="train")
    assert train.features["label"].names == sorted(NAMES)
    assert len(train) == 6 and train[0]["image"].mode == "RGBA"
    record = DatasetRecord.from_dataset(tmp_path / "images", train, split="train")
    assert record.num_channels == 4 and record.class_names == sorted(NAMES)


def test_imagefolder_without_class_folders_has_no_labels(tmp_path):
    train = load_image_dataset(flat_folder(tmp_path / "images", mode="L"), split="train")
    assert train.column_names == ["image"] and train[0]["image"].mode == "L"
    record = DatasetRecord.from_dataset(tmp_path / "images", train)
    assert record.class_names is None and record.num_channels == 1 and record.image_size == [8, 12]


def test_metadata_jsonl_string_labels_become_a_sorted_class_label(tmp_path):
    folder = flat_folder(tmp_path / "images")
    rows = [{"file_name": f"{i}.png", "label": NAMES[i % 3]} for i in range(6)]
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    train = load_image_dataset(folder, split="train")
    label = train.features["label"]
    assert isinstance(label, datasets.ClassLabel) and label.names == sorted(NAMES)
    assert [label.int2str(value) for value in train["label"]] == [row["label"] for row in rows]


def test_metadata_csv_integer_labels_and_named_columns(tmp_path):
    folder = flat_folder(tmp_path / "images")
    lines = ["file_name,kind"] + [f"{i}.png,{i % 3}" for i in range(6)]
    (folder / "metadata.csv").write_text("\n".join(lines))
    train = load_image_dataset(folder, split="train", label_column="kind")
    assert train.column_names == ["image", "label"]
    assert train.features["label"].names == ["0", "1", "2"] and train["label"][:3] == [0, 1, 2]


def test_csv_file_of_image_paths_with_its_own_column_names(tmp_path):
    flat_folder(tmp_path / "pictures")
    lines = ["path,shape"] + [f"pictures/{i}.png,{NAMES[i % 3]}" for i in range(6)]
    (tmp_path / "labels.csv").write_text("\n".join(lines))
    train = load_image_dataset(tmp_path / "labels.csv", split="train", image_column="path", label_column="shape")
    assert isinstance(train.features["image"], datasets.Image) and train[0]["image"].size == (12, 8)
    assert train.features["label"].names == sorted(NAMES)
    lines.append("pictures/missing.png,circle")
    (tmp_path / "broken.csv").write_text("\n".join(lines))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image_dataset(tmp_path / "broken.csv", image_column="path", label_column="shape")


def test_save_to_disk_string_labels_share_one_class_label_over_splits(tmp_path):
    images = [image("RGB", seed=i) for i in range(5)]
    splits = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"img": images[:3], "shape": ["square", "circle", "triangle"]}),
        "test": datasets.Dataset.from_dict({"img": images[3:], "shape": ["triangle", "triangle"]}),
    })  # fmt: skip
    splits = splits.cast_column("img", datasets.Image())
    splits.save_to_disk(str(tmp_path / "saved"))
    loaded = load_image_dataset(tmp_path / "saved", label_column="shape")
    assert loaded["train"].features["label"].names == loaded["test"].features["label"].names == sorted(NAMES)
    assert loaded["test"]["label"] == [2, 2] and loaded["train"].column_names == ["image", "label"]


def test_parquet_file_and_folder(tmp_path):
    labelled = datasets.Dataset.from_dict(
        {"image": [image("L", seed=i) for i in range(4)], "label": ["b", "a", "b", "a"]}
    ).cast_column("image", datasets.Image())
    (tmp_path / "folder").mkdir()
    labelled.to_parquet(str(tmp_path / "one.parquet"))
    labelled.to_parquet(str(tmp_path / "folder" / "train-00000.parquet"))
    for source in (tmp_path / "one.parquet", tmp_path / "folder"):
        train = load_image_dataset(source, split="train")
        assert train.features["label"].names == ["a", "b"] and train["label"] == [1, 0, 1, 0]
        assert train[0]["image"].mode == "L"


@pytest.mark.parametrize("name", ["./my_imgs", "data/x.csv", "data/imgs"])
def test_a_mistyped_local_path_is_missing_at_once(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()  # `data/imgs` beside a `data/` folder is a path, not the Hub id data/imgs
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=f"Dataset path {name} does not exist"):
        load_image_dataset(name)
    assert time.perf_counter() - start < 5  # no Hub retries


def test_named_columns_that_do_not_exist_are_refused(tmp_path):
    folder = flat_folder(tmp_path / "images")
    with pytest.raises(ValueError, match=r"no column 'photo' \(image_column\); its columns are \['image'\]"):
        load_image_dataset(folder, image_column="photo")
    with pytest.raises(ValueError, match=r"no column 'kind' \(label_column\)"):
        load_image_dataset(folder, label_column="kind")


def test_a_record_survives_its_file_and_decides_the_default(tmp_path):
    folder = flat_folder(tmp_path / "images" / "circle", count=2)
    flat_folder(tmp_path / "images" / "square", count=2)
    train = load_image_dataset(tmp_path / "images", split="train")
    record = DatasetRecord.from_dataset(tmp_path / "images", train, split="train", label_column="label")
    assert record.source == str((tmp_path / "images").resolve()) and folder.is_dir()
    record.save(tmp_path / "model")
    assert json.loads((tmp_path / "model" / TRAINING_DATA_FILE).read_text())["class_names"] == ["circle", "square"]
    again = DatasetRecord.from_folder(tmp_path / "model")
    assert again == record

    chosen = choose_dataset(None, again)
    assert (chosen.source, chosen.label_column, chosen.reason) == (record.source, "label", "from the tokenizer's record")
    given = choose_dataset("fashion_mnist", again)
    assert given.source == "fashion_mnist" and given.label_column is None
    assert given.reason == f"given; the tokenizer was trained on {record.source}"
    nothing = choose_dataset(None, DatasetRecord.from_folder(tmp_path / "elsewhere"))
    assert (nothing.source, nothing.reason) == ("fashion_mnist", "nothing recorded by the tokenizer: Fashion-MNIST")
    with pytest.raises(ValueError, match="unknown fields"):
        DatasetRecord.from_dict({**record.to_dict(), "colour": "blue"})


def test_non_square_images_are_center_cropped_when_asked(tmp_path):
    from larp_hf import LarpImageProcessor

    from tests.recipes.forked_runs import import_recipe

    array = np.zeros((8, 16, 3), dtype=np.uint8)
    array[:, 4:12] = 255  # a white centred square between black side bands
    wide = PIL.Image.fromarray(array)
    cropped = LarpImageProcessor(size={"height": 8, "width": 8}, do_center_crop=True)
    assert cropped([wide], return_tensors="pt")["pixel_values"].min() == 1.0  # only the white centre is kept
    stretched = LarpImageProcessor(size={"height": 8, "width": 8})
    assert stretched([wide], return_tensors="pt")["pixel_values"].min() == -1.0
    cropped.save_pretrained(tmp_path)  # the tokenizer's processor keeps cropping when it is loaded again
    assert LarpImageProcessor.from_pretrained(tmp_path).do_center_crop is True

    train_vqvae = import_recipe("train_vqvae")
    args = train_vqvae.parse_args(["--resolution", "16", "--center_crop", "--output_dir", str(tmp_path / "run")])
    assert args.model["image_size"] == 16 and args.center_crop

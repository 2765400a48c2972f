import datasets
import PIL.ImageOps
import pytest
import torch
import yaml

from larp_hf import LarpImageProcessor, LarpVQVAEConfig, LarpVQVAEModel, encode_dataset, token_dataset_metadata
from larp_hf.data import check_token_dataset, load_image_dataset, load_token_dataset, smallest_code_dtype


def tiny_vqvae(codebook_size=16, seed=0):
    torch.manual_seed(seed)
    config = LarpVQVAEConfig(
        in_channels=1, image_size=16, hidden_channels=[8, 8], stem_channels=8, num_res_blocks=1,
        res_hidden_channels=8, codebook_size=codebook_size, codebook_dim=4, codebook_init="random",
    )  # fmt: skip
    return LarpVQVAEModel(config).eval()


@pytest.fixture
def train_split(tiny_image_dataset_dir):
    return load_image_dataset(tiny_image_dataset_dir, split="train")


def test_schema_dtype_and_metadata(train_split):
    vqvae = tiny_vqvae()
    encoded = encode_dataset(vqvae, train_split, batch_size=16)
    assert set(encoded.column_names) == {"input_ids", "input_ids_flipped", "label"}
    assert len(encoded) == len(train_split)
    assert encoded.features["input_ids"].feature.dtype == "uint8"
    assert encoded.features["input_ids"].length == 16  # 4×4 grid
    assert encoded.features["label"] == train_split.features["label"]
    assert encoded["label"] == train_split["label"]
    metadata = token_dataset_metadata(encoded)
    assert metadata == {
        "tokenizer_hash": vqvae.tokenizer_hash(), "grid": [4, 4], "grid_size": 4, "codebook_size": 16,
        "flip_augment": True, "vocabulary": {"codes": [0, 16], "bos_token_id": 16, "class_token_offset": 17},
    }  # fmt: skip


def test_input_ids_are_the_codes_of_each_image_and_its_mirror(train_split):
    vqvae = tiny_vqvae()
    processor = LarpImageProcessor.from_vqvae_config(vqvae.config)
    encoded = encode_dataset(vqvae, train_split, batch_size=7)  # batches that do not divide the split
    for i in (0, 5, 63):
        image = train_split[i]["image"]
        codes = vqvae.encode(processor([image], return_tensors="pt")["pixel_values"]).flatten()
        mirrored = vqvae.encode(processor([PIL.ImageOps.mirror(image)], return_tensors="pt")["pixel_values"]).flatten()
        assert encoded[i]["input_ids"] == codes.tolist()
        assert encoded[i]["input_ids_flipped"] == mirrored.tolist()


def test_second_call_is_a_cache_hit(train_split, monkeypatch):
    vqvae = tiny_vqvae()
    first = encode_dataset(vqvae, train_split)
    calls = []
    monkeypatch.setattr(vqvae, "encode", lambda pixel_values: calls.append(1) or pytest.fail("encoded again"))
    second = encode_dataset(vqvae, train_split)
    assert calls == []
    assert [f["filename"] for f in second.cache_files] == [f["filename"] for f in first.cache_files]
    assert second["input_ids"] == first["input_ids"]
    # Another tokenizer is another cache entry.
    other = encode_dataset(tiny_vqvae(seed=1), train_split)
    assert other.cache_files[0]["filename"] != first.cache_files[0]["filename"]


def test_without_flips_and_with_large_codebooks():
    images = [PIL.Image.new("L", (16, 16), 40 * i) for i in range(3)]
    dataset = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    encoded = encode_dataset(tiny_vqvae(codebook_size=300), dataset, flip_augment=False)
    assert encoded.column_names == ["input_ids"]
    assert encoded.features["input_ids"].feature.dtype == "uint16"
    assert [smallest_code_dtype(k) for k in (256, 257, 65536, 65537)] == ["uint8", "uint16", "uint16", "uint32"]


def test_errors_name_the_problem():
    no_images = datasets.Dataset.from_dict({"text": ["a"]})
    with pytest.raises(ValueError, match="no `image` column"):
        encode_dataset(tiny_vqvae(), no_images)
    with pytest.raises(ValueError, match="no larp_hf token-dataset metadata"):
        token_dataset_metadata(no_images)


# ------------------------------------------------------------------------------ token datasets as Hub artefacts


@pytest.fixture
def token_splits(train_split, tiny_image_dataset_dir):
    vqvae = tiny_vqvae()
    test_split = load_image_dataset(tiny_image_dataset_dir, split="test")
    return vqvae, datasets.DatasetDict({"train": encode_dataset(vqvae, train_split), "test": encode_dataset(vqvae, test_split)})


def test_the_metadata_survives_save_to_disk_parquet_and_a_hub_style_folder(token_splits, tmp_path):
    vqvae, splits = token_splits
    expected = token_dataset_metadata(splits["train"])
    # save_to_disk
    splits.save_to_disk(tmp_path / "disk")
    # a plain parquet round trip, one file per split
    for name, split in splits.items():
        split.to_parquet(tmp_path / f"{name}.parquet")
    # the layout push_to_hub uploads (data/<split>-*.parquet) with a dataset card, as a Hub snapshot would hold it
    (tmp_path / "hub" / "data").mkdir(parents=True)
    for name, split in splits.items():
        split.to_parquet(tmp_path / "hub" / "data" / f"{name}-00000-of-00001.parquet")
    features = splits["train"].features._to_yaml_list()  # the card's dataset_info, in push_to_hub's key order
    card = yaml.safe_dump({"dataset_info": {"features": features}}, sort_keys=False)
    (tmp_path / "hub" / "README.md").write_text(f"---\n{card}---\n")
    for source in (tmp_path / "disk", tmp_path / "train.parquet", tmp_path / "hub"):
        loaded = load_token_dataset(source)
        assert token_dataset_metadata(loaded["train"]) == expected, source
        assert loaded["train"]["input_ids"] == splits["train"]["input_ids"]
        check_token_dataset(loaded["train"], tokenizer_hash=vqvae.tokenizer_hash(), num_classes=2)
    assert set(load_token_dataset(tmp_path / "hub")) == {"train", "test"}
    streamed = load_token_dataset(tmp_path / "hub", streaming=True)
    assert token_dataset_metadata(streamed["train"]) == expected
    # Cast to plain integers, the metadata is gone: such a file is not a token dataset any more.
    splits["train"].cast_column("input_ids", datasets.List(datasets.Value("int64"))).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="plain.parquet.*no larp_hf token-dataset metadata"):
        load_token_dataset(tmp_path / "plain.parquet")


def test_check_token_dataset_refuses_what_a_prior_must_not_train_on(token_splits):
    vqvae, splits = token_splits
    train = splits["train"]
    metadata = token_dataset_metadata(train)
    check_token_dataset(train, tokenizer_hash=vqvae.tokenizer_hash(), grid_size=4, codebook_size=16, num_classes=2)
    with pytest.raises(ValueError, match="made by tokenizer"):
        check_token_dataset(train, tokenizer_hash=tiny_vqvae(seed=1).tokenizer_hash())
    plain_labels = train.cast_column("label", datasets.Value("int64"))
    for bad_label in (-1, 2):
        with pytest.raises(ValueError, match=rf"label {bad_label}, outside \[0, 2\)"):
            check_token_dataset(plain_labels.map(lambda row: {"label": bad_label}), num_classes=2)
    with pytest.raises(ValueError, match="no `label` column"):
        check_token_dataset(train.remove_columns("label"), num_classes=2)

    def rebuilt(rows, length):
        feature = datasets.List(datasets.Value("uint16", id=train.features["input_ids"].feature.id), length=length)
        return datasets.Dataset.from_dict({"input_ids": rows}, features=datasets.Features({"input_ids": feature}))

    with pytest.raises(ValueError, match="15 codes long, but a 4×4 grid has 16"):
        check_token_dataset(rebuilt([[0] * 15] * 3, 15))
    with pytest.raises(ValueError, match=r"code 40, outside the codebook's \[0, 16\)"):
        check_token_dataset(rebuilt([[0] * 15 + [40]] * 3, 16), batch_size=2)
    assert metadata["grid_size"] == 4


def test_workers_decode_the_same_codes_as_this_process(train_split):
    vqvae = tiny_vqvae()
    here = encode_dataset(vqvae, train_split, batch_size=16)
    in_workers = encode_dataset(vqvae, train_split.select(range(64)), batch_size=16, num_proc=2)
    assert in_workers["input_ids"] == here["input_ids"]
    assert in_workers["input_ids_flipped"] == here["input_ids_flipped"] and in_workers["label"] == here["label"]


def test_an_image_that_cannot_be_decoded_is_named_by_its_row(train_split):
    # Decoded in DataLoader workers (num_proc=2), the row is named the same way: tests/recipes/test_encode_dataset.py's
    # broken-image test, where the workers' process exits afterwards. Here, torch would keep this process waiting
    # 5 s for each worker of an iterator that a worker's error ended.
    rows = [{"bytes": image["bytes"], "path": None} for image in train_split.cast_column("image", datasets.Image(decode=False))["image"][:8]]
    rows[5] = {"bytes": b"\x89PNG\r\n\x1a\n but cut short", "path": None}
    broken = datasets.Dataset.from_dict({"image": rows}, features=datasets.Features({"image": datasets.Image()}))
    with pytest.raises(ValueError, match=r"Row 5 of the dataset holds an image that cannot be decoded"):
        encode_dataset(tiny_vqvae(), broken, batch_size=4, num_proc=0)

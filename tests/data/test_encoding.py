import datasets
import PIL.ImageOps
import pytest
import torch

from larp_hf import LarpImageProcessor, LarpVQVAEConfig, LarpVQVAEModel, encode_dataset, token_dataset_metadata
from larp_hf.data import load_image_dataset, smallest_code_dtype


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
    assert metadata == {"tokenizer_hash": vqvae.tokenizer_hash(), "grid_size": 4, "codebook_size": 16, "flip_augment": True}


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

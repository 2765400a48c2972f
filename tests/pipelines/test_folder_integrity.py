"""A saved pipeline folder verifies itself: `larp_manifest.json` records every file `save_pretrained` wrote (size and
SHA-256), and `from_pretrained` checks it before loading anything."""

import json
import logging
import shutil
import struct

import pytest
import torch

from larp_hf import LarpPipeline
from larp_hf.pipelines.folder import MANIFEST_NAME, file_record

from ..conftest import make_tiny_pipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny pipeline saved once (with its sample grid); each test works on its own copy."""
    folder = tmp_path_factory.mktemp("saved") / "pipe"
    make_tiny_pipeline(num_classes=2).save_pretrained(folder)
    return folder


@pytest.fixture
def folder(saved, tmp_path):
    copy = tmp_path / "pipe"
    shutil.copytree(saved, copy)
    return copy


def flip_exponent_bits(weights_path, tensor_name: str, count: int = 8):
    """Flip the top exponent bit of the first `count` float32 values of `tensor_name`, in place in the file."""
    data = bytearray(weights_path.read_bytes())
    (header_length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_length])
    assert header[tensor_name]["dtype"] == "F32"
    start = 8 + header_length + header[tensor_name]["data_offsets"][0]
    for index in range(count):
        data[start + 4 * index + 3] ^= 0x40  # bit 30: the exponent's most significant bit (1.0 -> ~1e38)
    weights_path.write_bytes(bytes(data))


def test_save_records_every_file_it_wrote_but_the_card(folder):
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    written = {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}
    bookkeeping = {"README.md", MANIFEST_NAME, ".larp_hf-output.json"}  # the card, the manifest, what wrote the folder
    assert set(manifest["files"]) == written - bookkeeping
    assert {"prior/model.safetensors", "vqvae/model.safetensors", "larp_pipeline.json", "samples.png"} <= set(
        manifest["files"]
    )
    record = manifest["files"]["prior/model.safetensors"]
    assert record["bytes"] == (folder / "prior" / "model.safetensors").stat().st_size and len(record["sha256"]) == 64


def test_exponent_bit_flips_in_the_prior_embeddings_are_refused_by_name(folder):
    flip_exponent_bits(folder / "prior" / "model.safetensors", "transformer.wte.weight")
    with pytest.raises(ValueError, match=r"prior/model\.safetensors: damaged \(its SHA-256 differs") as error:
        LarpPipeline.from_pretrained(folder)
    assert "verify=False" in str(error.value) and "again" in str(error.value)
    # The opt-out loads what is there: the flipped weights, as large as the flips make them.
    pipeline = LarpPipeline.from_pretrained(folder, verify=False)
    assert pipeline.prior.transformer.wte.weight.abs().max() > 1e30


def test_missing_resized_and_added_files_are_each_named(folder):
    (folder / "vqvae" / "config.json").unlink()
    with open(folder / "image_processor" / "preprocessor_config.json", "a") as handle:
        handle.write(" ")
    (folder / "prior" / "pytorch_model.bin").write_bytes(b"a file a loader could prefer")
    with pytest.raises(ValueError) as error:
        LarpPipeline.from_pretrained(folder)
    message = str(error.value)
    assert "vqvae/config.json: missing" in message
    assert "image_processor/preprocessor_config.json: damaged (" in message and "bytes where the manifest" in message
    assert "prior/pytorch_model.bin: not in the manifest" in message


def test_an_edited_layout_or_index_is_refused(folder):
    config = json.loads((folder / "larp_pipeline.json").read_text())
    config["parts"]["vqvae"]["library"] = "diffusers"
    (folder / "larp_pipeline.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"larp_pipeline\.json: damaged"):
        LarpPipeline.from_pretrained(folder)


def test_the_card_and_files_beside_the_parts_may_change(folder):
    expected = LarpPipeline.from_pretrained(folder)(num_images=2, seed=0).codes
    (folder / "README.md").write_text("# My own card, edited on the Hub\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")  # what a Hub repo brings
    (folder / "reports").mkdir()
    (folder / "reports" / "evaluation.json").write_text("{}")
    assert torch.equal(LarpPipeline.from_pretrained(folder)(num_images=2, seed=0).codes, expected)


def test_a_recorded_evaluation_keeps_the_folder_verifiable(folder):
    pipeline = LarpPipeline.from_pretrained(folder)
    pipeline.record_evaluation(
        "evaluate", {"fid": 12.5}, feature_network="features", feature_network_sha256="0" * 64, dataset="fashion_mnist",
        split="test", num_samples=10, sampling={"temperature": 1.0},
    )  # fmt: skip
    pipeline.save_model_card(folder)
    reloaded = LarpPipeline.from_pretrained(folder)
    assert reloaded.card_info["evaluations"][0]["scores"] == {"fid": 12.5}


def test_a_damaged_manifest_is_named(folder):
    (folder / MANIFEST_NAME).write_text('{"files": ')
    with pytest.raises(ValueError, match=rf"{MANIFEST_NAME} cannot be read"):
        LarpPipeline.from_pretrained(folder)
    (folder / MANIFEST_NAME).write_text(json.dumps({"files": {"prior/model.safetensors": "x"}}))
    with pytest.raises(ValueError, match=rf"{MANIFEST_NAME} is damaged"):
        LarpPipeline.from_pretrained(folder)


def test_a_manifest_cannot_send_the_check_outside_the_folder(folder):
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    manifest["files"]["../outside.txt"] = {"bytes": 1, "sha256": "0" * 64}
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"\.\./outside\.txt: a name outside the folder"):
        LarpPipeline.from_pretrained(folder)


def test_a_lost_manifest_is_refused(folder):
    (folder / MANIFEST_NAME).unlink()
    with pytest.raises(ValueError, match=rf"has no {MANIFEST_NAME}, though its larp_pipeline.json says"):
        LarpPipeline.from_pretrained(folder)
    assert LarpPipeline.from_pretrained(folder, verify=False).num_classes == 2


def test_a_folder_saved_before_manifests_loads_with_a_warning(folder, caplog):
    (folder / MANIFEST_NAME).unlink()
    index = json.loads((folder / "larp_pipeline.json").read_text())
    del index["manifest"]  # as written before pipeline folders carried a manifest
    (folder / "larp_pipeline.json").write_text(json.dumps(index))
    with caplog.at_level(logging.WARNING, logger="larp_hf.pipelines.folder"):
        pipeline = LarpPipeline.from_pretrained(folder)
    assert pipeline.num_classes == 2
    assert f"has no {MANIFEST_NAME}" in caplog.text and "loaded unverified" in caplog.text


def test_a_hub_snapshot_of_links_into_blobs_verifies(folder, tmp_path):
    """huggingface_hub's cache holds each file once under blobs/ and links it from snapshots/COMMIT/: the manifest,
    which travels with the repo, is checked against the files the links lead to."""
    snapshot, blobs = tmp_path / "snapshots" / "0123abc", tmp_path / "blobs"
    blobs.mkdir()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            blob = blobs / file_record(path)["sha256"]
            shutil.copyfile(path, blob)
            link = snapshot / path.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(blob)
    assert LarpPipeline.from_pretrained(snapshot).num_classes == 2
    flip_exponent_bits(blobs / file_record(snapshot / "prior" / "model.safetensors")["sha256"], "transformer.wte.weight")
    with pytest.raises(ValueError, match=r"prior/model\.safetensors: damaged"):
        LarpPipeline.from_pretrained(snapshot)

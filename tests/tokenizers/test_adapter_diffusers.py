"""DiffusersVQTokenizer against diffusers' own VQModel methods, on small randomly initialised VQModels."""

import json

import pytest
import torch


diffusers = pytest.importorskip("diffusers")

from larp_hf.tokenizers import TOKENIZER_CONFIG_NAME, ImageTokenizer, as_tokenizer, load_tokenizer  # noqa: E402
from larp_hf.tokenizers.adapter_diffusers import DiffusersVQTokenizer  # noqa: E402


def tiny_vq_model(seed: int = 0, **overrides) -> "diffusers.VQModel":
    torch.manual_seed(seed)
    config = dict(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        num_vq_embeddings=32,
        norm_num_groups=4,
        sample_size=16,
    )
    model = diffusers.VQModel(**{**config, **overrides}).eval()
    # diffusers draws the codebook from U(-1/K, 1/K), far from the latents: put the codes on latents of random images
    # so that inputs use many codes and a wrong index order would show.
    with torch.no_grad():
        latents = model.encode(torch.rand(4, 3, 16, 16) * 2 - 1).latents  # (4, D, 8, 8)
        vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        model.quantize.embedding.weight.copy_(vectors[torch.randperm(vectors.shape[0])[: model.config.num_vq_embeddings]])
    return model


def library_codes(model, pixel_values):
    latents = model.encode(pixel_values).latents
    return model.quantize(latents)[2][2]  # flat (B*h*w,)


@pytest.fixture
def pixel_values():
    return torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_codes_and_decode_equal_the_library_s_own(pixel_values):
    model = tiny_vq_model()
    tokenizer = DiffusersVQTokenizer(model, value_range=(-1.0, 1.0))
    assert isinstance(tokenizer, ImageTokenizer)
    assert (tokenizer.grid, tokenizer.image_size, tokenizer.codebook_size, tokenizer.num_channels) == (
        (8, 8), (16, 16), 32, 3,
    )  # fmt: skip
    codes = tokenizer.encode(pixel_values)
    assert codes.shape == (3, 8, 8) and codes.dtype == torch.long
    with torch.no_grad():
        expected = library_codes(model, pixel_values)
    assert torch.equal(codes, expected.view(3, 8, 8))
    assert codes.unique().numel() > 4  # the comparison is not between constant grids

    # The library's own decode of the same codes: look them up, decode without quantizing again.
    with torch.no_grad():
        quantized = model.quantize.get_codebook_entry(expected, (3, 8, 8, 4))
        expected_pixels = model.decode(quantized, force_not_quantize=True).sample
        # ... and the quantize-again path of VQModel.decode gives the same images from the latents' codes.
        requantized = model.decode(model.encode(pixel_values).latents).sample
    decoded = tokenizer.decode(codes)
    torch.testing.assert_close(decoded, expected_pixels, rtol=0, atol=0)
    torch.testing.assert_close(decoded, requantized, rtol=1e-5, atol=1e-5)
    assert torch.equal(tokenizer.decode(codes.view(3, -1)), decoded)  # raster order accepted


def test_lookup_from_codebook_and_spatial_norm_decode_like_the_library(pixel_values):
    # aMUSEd's VQGAN sets lookup_from_codebook: VQModel.decode then takes the indices itself.
    # SpatialNorm builds GroupNorm(32 groups): 32 channels.
    model = tiny_vq_model(lookup_from_codebook=True, norm_type="spatial", block_out_channels=(32, 32), norm_num_groups=8)
    tokenizer = DiffusersVQTokenizer(model, value_range=(0.0, 1.0))
    codes = tokenizer.encode(pixel_values)
    with torch.no_grad():
        expected = model.decode(codes, force_not_quantize=True, shape=(3, 8, 8, 4)).sample
    torch.testing.assert_close(tokenizer.decode(codes), expected, rtol=0, atol=0)


def test_non_square_image_size(pixel_values):
    model = tiny_vq_model()
    tokenizer = DiffusersVQTokenizer(model, value_range=(-1.0, 1.0), image_size=(8, 16))
    assert tokenizer.grid == (4, 8)
    crop = pixel_values[:, :, :8, :]
    with torch.no_grad():
        expected = library_codes(model, crop).view(3, 4, 8)
        pixels = model.decode(model.quantize.get_codebook_entry(expected.reshape(-1), (3, 4, 8, 4)), force_not_quantize=True)
    assert torch.equal(tokenizer.encode(crop), expected)
    torch.testing.assert_close(tokenizer.decode(expected), pixels.sample, rtol=0, atol=0)


def test_hash_is_stable_across_save_load_and_casts_and_follows_code_weights(tmp_path, pixel_values):
    tokenizer = DiffusersVQTokenizer(tiny_vq_model(), value_range=(-1.0, 1.0))
    reference_hash, reference_codes = tokenizer.tokenizer_hash(), tokenizer.encode(pixel_values)
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert type(loaded) is DiffusersVQTokenizer
    assert loaded.tokenizer_hash() == reference_hash
    assert torch.equal(loaded.encode(pixel_values), reference_codes)

    for cast in (lambda t: t.to(torch.bfloat16), lambda t: t.half()):
        cast(loaded)
        assert loaded.tokenizer_hash() == reference_hash
        assert torch.equal(loaded.encode(pixel_values), reference_codes)  # still encodes in float32

    with torch.no_grad():
        loaded.model.decoder.conv_out.bias.add_(1.0)  # the decoder does not decide codes
    assert loaded.tokenizer_hash() == reference_hash
    with torch.no_grad():
        loaded.model.quant_conv.bias.add_(1e-3)
    assert loaded.tokenizer_hash() != reference_hash
    with torch.no_grad():
        loaded.model.quant_conv.bias.sub_(1e-3)
        loaded.model.quantize.embedding.weight[0, 0] += 1e-3
    assert loaded.tokenizer_hash() != reference_hash
    other_range = DiffusersVQTokenizer(tiny_vq_model(), value_range=(0.0, 1.0))
    assert other_range.tokenizer_hash() != reference_hash  # same weights, other pixels -> other codes


def test_folder_saved_by_vqmodel_alone_loads(tmp_path, pixel_values, caplog):
    model = tiny_vq_model()
    model.save_pretrained(tmp_path / "vq")
    with caplog.at_level("WARNING"):
        tokenizer = load_tokenizer(tmp_path / "vq")
    assert tokenizer.value_range == (-1.0, 1.0) and "value_range=(0.0, 1.0)" in caplog.text  # the choice is said
    assert torch.equal(tokenizer.encode(pixel_values), library_codes(model, pixel_values).view(3, 8, 8))
    assert load_tokenizer(tmp_path / "vq", value_range=(0.0, 1.0)).value_range == (0.0, 1.0)


def test_amused_pipeline_subfolder_defaults_to_unit_range(tmp_path):
    tiny_vq_model(lookup_from_codebook=True).save_pretrained(tmp_path / "pipe" / "vqvae")
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"_class_name": "AmusedPipeline"}))
    assert load_tokenizer(tmp_path / "pipe", subfolder="vqvae").value_range == (0.0, 1.0)
    assert load_tokenizer(tmp_path / "pipe" / "vqvae").value_range == (0.0, 1.0)


def test_saved_record_and_stale_record(tmp_path):
    tokenizer = DiffusersVQTokenizer(tiny_vq_model(), value_range=(0.0, 1.0), image_size=(8, 16))
    tokenizer.save_pretrained(tmp_path / "tok")
    record = json.loads((tmp_path / "tok" / TOKENIZER_CONFIG_NAME).read_text())
    assert record["adapter"] == "diffusers.VQModel" and record["grid"] == [4, 8] and record["value_range"] == [0.0, 1.0]
    loaded = load_tokenizer(tmp_path / "tok")
    assert (loaded.grid, loaded.value_range) == ((4, 8), (0.0, 1.0))
    # Other weights saved over the folder by the library alone: the record no longer describes them.
    tiny_vq_model(seed=5).save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="recorded\\s+tokenizer_hash differs"):
        load_tokenizer(tmp_path / "tok")


def test_codes_outside_the_codebook_are_refused():
    tokenizer = as_tokenizer(tiny_vq_model(), value_range=(-1.0, 1.0))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        tokenizer.decode(torch.full((1, 8, 8), 32))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        tokenizer.decode(torch.full((1, 8, 8), -1))
    with pytest.raises(ValueError, match="shape"):
        tokenizer.decode(torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="16×16"):
        tokenizer.encode(torch.zeros(1, 3, 32, 32))

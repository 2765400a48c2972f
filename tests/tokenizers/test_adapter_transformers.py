"""JanusVQTokenizer and Emu3VQTokenizer against transformers' own methods, on small randomly initialised models."""

import pytest
import torch
import torch.nn.functional as F
from transformers import (
    ChameleonVQVAE,
    ChameleonVQVAEConfig,
    Emu3VQVAE,
    Emu3VQVAEConfig,
    JanusConfig,
    JanusVQVAE,
    JanusVQVAEConfig,
)

from larp_hf.tokenizers import ImageTokenizer, as_tokenizer, load_tokenizer
from larp_hf.tokenizers.adapter_transformers import Emu3VQTokenizer, JanusVQTokenizer


def spread_codebook(model, pixel_values):
    """Put the codes on latents of the test images (as training would), so that many codes are in use."""
    with torch.no_grad():
        latents = model.quant_conv(model.encoder(pixel_values))
        if latents.ndim == 5:  # Emu3: (B, T, C, h, w) from the encoder; quant_conv ran over (B, C, T, h, w)
            latents = latents[:, :, 0]
        vectors = latents.transpose(0, 1).reshape(latents.shape[1], -1).t()
        weight = model.quantize.embedding.weight
        weight.copy_(vectors[torch.randperm(vectors.shape[0])[: weight.shape[0]]] * 1.5)


def tiny_janus(seed: int = 0, num_patches: int = 4) -> JanusVQVAE:
    torch.manual_seed(seed)
    config = JanusVQVAEConfig(
        embed_dim=4, num_embeddings=48, latent_channels=8, base_channels=32, channel_multiplier=[1, 1],
        num_res_blocks=1, num_patches=num_patches, projection_dim=8, image_token_embed_dim=8,
    )  # fmt: skip
    model = JanusVQVAE(config).eval()
    spread_codebook(model, torch.rand(4, 3, 2 * num_patches, 2 * num_patches) * 2 - 1)
    return model


def tiny_emu3(seed: int = 0) -> Emu3VQVAE:
    torch.manual_seed(seed)
    config = Emu3VQVAEConfig(
        codebook_size=48, embed_dim=4, latent_channels=4, base_channels=32, channel_multiplier=[1, 1],
        num_res_blocks=1, attn_resolutions=[], temporal_downsample_factor=2, hidden_size=32,
    )  # fmt: skip
    model = Emu3VQVAE(config).eval()
    with torch.no_grad():
        frames = (torch.rand(4, 3, 8, 12) * 2 - 1).unsqueeze(1).repeat(1, 2, 1, 1, 1)  # what encode feeds the encoder
        hidden = model.quant_conv(model.encoder(frames).permute(0, 2, 1, 3, 4))  # (B, D, T', h, w)
        vectors = hidden.permute(0, 2, 3, 4, 1).reshape(-1, hidden.shape[1])
        model.quantize.embedding.weight.copy_(vectors[torch.randperm(vectors.shape[0])[:48]])
    return model


@pytest.fixture
def pixel_values():
    return torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


# ----------------------------------------------------------------------------------------------------------- Janus


def test_janus_codes_and_decode_equal_the_library_s_own(pixel_values):
    model = tiny_janus()
    tokenizer = JanusVQTokenizer(model, codebook_l2_norm=False)
    assert isinstance(tokenizer, ImageTokenizer)
    assert (tokenizer.grid, tokenizer.image_size, tokenizer.codebook_size, tokenizer.value_range) == (
        (4, 4), (8, 8), 48, (-1.0, 1.0),
    )  # fmt: skip
    with torch.no_grad():
        expected = model.encode(pixel_values, return_dict=True).image_tokens  # flat (B*h*w,)
        expected_pixels = model.decode(expected.view(3, -1))
    codes = tokenizer.encode(pixel_values)
    assert torch.equal(codes, expected.view(3, 4, 4)) and codes.unique().numel() > 4
    torch.testing.assert_close(tokenizer.decode(codes), expected_pixels, rtol=0, atol=0)


def test_janus_l2_normalised_codes(pixel_values):
    """
    The default picks codes by cosine similarity (the original quantizer's codebook_l2_norm). With unit-norm codebook
    rows that is exactly transformers' own unnormalised nearest neighbour: ‖z − e‖² = ‖z‖² + 1 − 2 z·e.
    """
    model = tiny_janus()
    tokenizer = JanusVQTokenizer(model)
    codes = tokenizer.encode(pixel_values)
    with torch.no_grad():
        model.quantize.embedding.weight.copy_(F.normalize(model.quantize.embedding.weight, dim=-1))
        expected = model.encode(pixel_values, return_dict=True).image_tokens.view(3, 4, 4)
    assert torch.equal(codes, expected)
    # The rows of a trained codebook are not unit-norm: there the two rules disagree, and the hash says which is used.
    raw = tiny_janus()
    assert not torch.equal(JanusVQTokenizer(raw).encode(pixel_values), JanusVQTokenizer(raw, codebook_l2_norm=False).encode(pixel_values))
    assert JanusVQTokenizer(raw).tokenizer_hash() != JanusVQTokenizer(raw, codebook_l2_norm=False).tokenizer_hash()


def test_janus_grid_is_num_patches_of_the_saved_config(tmp_path):
    # A JanusConfig sets vq_config.num_patches from its vision tower (384 / 16 = 24 for the published models).
    config = JanusConfig(
        vision_config={"image_size": 96, "patch_size": 16},
        vq_config={"base_channels": 32, "channel_multiplier": [1, 1], "num_res_blocks": 1, "latent_channels": 8,
                   "embed_dim": 4, "num_embeddings": 48, "projection_dim": 8, "image_token_embed_dim": 8},
    )  # fmt: skip
    assert config.vq_config.num_patches == 6
    JanusVQVAE(config.vq_config).save_pretrained(tmp_path / "janus")
    tokenizer = load_tokenizer(tmp_path / "janus")
    assert type(tokenizer) is JanusVQTokenizer and tokenizer.grid == (6, 6) and tokenizer.image_size == (12, 12)


def test_janus_hash_save_load_casts(tmp_path, pixel_values):
    tokenizer = JanusVQTokenizer(tiny_janus())
    reference_hash, reference_codes = tokenizer.tokenizer_hash(), tokenizer.encode(pixel_values)
    tokenizer.save_pretrained(tmp_path / "tok")
    assert JanusVQVAE.from_pretrained(tmp_path / "tok") is not None  # the library's own folder
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.tokenizer_hash() == reference_hash and torch.equal(loaded.encode(pixel_values), reference_codes)
    loaded.to(torch.bfloat16)
    assert loaded.tokenizer_hash() == reference_hash and torch.equal(loaded.encode(pixel_values), reference_codes)
    with torch.no_grad():
        loaded.model.post_quant_conv.bias.add_(1.0)
    assert loaded.tokenizer_hash() == reference_hash
    with torch.no_grad():
        loaded.model.encoder.conv_in.weight[0, 0, 0, 0] += 1e-3
    assert loaded.tokenizer_hash() != reference_hash


def test_janus_folder_saved_by_the_library_alone(tmp_path, pixel_values):
    model = tiny_janus()
    model.save_pretrained(tmp_path / "janus")
    tokenizer = load_tokenizer(tmp_path / "janus")
    assert tokenizer.value_range == (-1.0, 1.0) and tokenizer.codebook_l2_norm
    assert torch.equal(tokenizer.encode(pixel_values), JanusVQTokenizer(model).encode(pixel_values))


# ------------------------------------------------------------------------------------------------------------ Emu3


def test_emu3_codes_and_decode_equal_the_library_s_own():
    model = tiny_emu3()
    pixel_values = torch.rand(3, 3, 8, 12, generator=torch.Generator().manual_seed(1)) * 2 - 1
    tokenizer = Emu3VQTokenizer(model, image_size=(8, 12))  # non-square: a 4×6 grid
    assert (tokenizer.grid, tokenizer.codebook_size) == ((4, 6), 48)
    with torch.no_grad():
        output = model.encode(pixel_values, image_sizes=torch.tensor([[8, 12]] * 3), return_dict=True)
        expected = torch.stack(output.image_tokens)  # a list of (h, w) grids
        expected_pixels = model.decode(expected)
    codes = tokenizer.encode(pixel_values)
    assert torch.equal(codes, expected) and codes.unique().numel() > 4
    torch.testing.assert_close(tokenizer.decode(codes), expected_pixels, rtol=0, atol=0)
    assert expected_pixels.shape == (3, 3, 8, 12)


def test_emu3_hash_save_load_casts_and_library_folder(tmp_path, caplog):
    model = tiny_emu3()
    pixel_values = torch.rand(2, 3, 8, 12) * 2 - 1
    tokenizer = Emu3VQTokenizer(model, image_size=(8, 12))
    reference_hash, reference_codes = tokenizer.tokenizer_hash(), tokenizer.encode(pixel_values)
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    assert loaded.image_size == (8, 12) and loaded.tokenizer_hash() == reference_hash
    loaded.half()
    assert loaded.tokenizer_hash() == reference_hash and torch.equal(loaded.encode(pixel_values), reference_codes)
    with torch.no_grad():
        loaded.model.quantize.embedding.weight[3, 0] += 1e-3
    assert loaded.tokenizer_hash() != reference_hash

    model.save_pretrained(tmp_path / "emu3")
    with caplog.at_level("WARNING"):
        default = load_tokenizer(tmp_path / "emu3")
    assert default.grid == (32, 32) and "image_size=" in caplog.text  # the chosen size is said
    assert load_tokenizer(tmp_path / "emu3", image_size=(8, 12)).tokenizer_hash() == reference_hash


# ---------------------------------------------------------------------------------------------------------- errors


def test_encode_only_chameleon_is_refused(tmp_path):
    config = ChameleonVQVAEConfig(
        embed_dim=4, num_embeddings=48, latent_channels=8, base_channels=32, channel_multiplier=[1, 1],
        num_res_blocks=1, attn_resolutions=[],
    )  # fmt: skip
    model = ChameleonVQVAE(config)
    with pytest.raises(ValueError, match="no decoder.*Use a tokenizer with a decoder"):
        as_tokenizer(model)
    model.save_pretrained(tmp_path / "chameleon")
    with pytest.raises(ValueError, match="ChameleonVQVAE.*no decoder"):
        load_tokenizer(tmp_path / "chameleon")


def test_codes_outside_the_codebook_are_refused():
    for tokenizer in (JanusVQTokenizer(tiny_janus()), Emu3VQTokenizer(tiny_emu3(), image_size=8)):
        with pytest.raises(ValueError, match=r"\[0, 48\) \(the codebook size\)"):
            tokenizer.decode(torch.full((1, 4, 4), 48))

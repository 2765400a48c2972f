"""LarpPipeline with tokenizers that are not ours: a diffusers VQModel (square and non-square grids), a transformers
JanusVQVAE and Emu3VQVAE, each small and randomly initialised (configurations other than the adapter tests'), and a
wrapped 32×32 grid of 32,768 codes. Each samples images the library itself decodes from the sampled codes, saves,
loads back with the library's folder under `vqvae/`, and refuses a prior of another tokenizer; the `larp-hf` commands
run on a JanusVQVAE folder saved by transformers alone."""

import json
import sys

import datasets
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import Emu3VQVAE, Emu3VQVAEConfig, GPT2LMHeadModel, JanusVQVAE, JanusVQVAEConfig


diffusers = pytest.importorskip("diffusers")

from larp_hf import LarpPipeline, prior_config  # noqa: E402
from larp_hf.tokenizers import ImageTokenizer, load_tokenizer, wrap_tokenizer  # noqa: E402
from larp_hf.tokenizers.adapter_diffusers import DiffusersVQTokenizer  # noqa: E402
from larp_hf.tokenizers.adapter_transformers import Emu3VQTokenizer, JanusVQTokenizer  # noqa: E402

from ..test_cli import larp_hf  # noqa: E402


# ------------------------------------------------------------------------------------- tiny third-party tokenizers


def vq_model(seed: int = 0) -> "diffusers.VQModel":
    """Three encoder blocks (downsampling 4×), 40 codes of dimension 3."""
    torch.manual_seed(seed)
    return diffusers.VQModel(
        block_out_channels=(8, 8, 16), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, latent_channels=3, num_vq_embeddings=40,
        norm_num_groups=4, sample_size=16,
    ).eval()  # fmt: skip


def janus_model(seed: int = 0) -> JanusVQVAE:
    """A 3×3 grid (num_patches) at 6×6 pixels, 64 codes of dimension 6."""
    torch.manual_seed(seed)
    config = JanusVQVAEConfig(
        embed_dim=6, num_embeddings=64, latent_channels=8, base_channels=32, channel_multiplier=[1, 2],
        num_res_blocks=1, num_patches=3, projection_dim=8, image_token_embed_dim=8,
    )  # fmt: skip
    return JanusVQVAE(config).eval()


def emu3_model(seed: int = 0) -> Emu3VQVAE:
    """72 codes of dimension 6, downsampling 2×."""
    torch.manual_seed(seed)
    config = Emu3VQVAEConfig(
        codebook_size=72, embed_dim=6, latent_channels=6, base_channels=32, channel_multiplier=[1, 1],
        num_res_blocks=1, attn_resolutions=[], temporal_downsample_factor=2, hidden_size=32,
    )  # fmt: skip
    return Emu3VQVAE(config).eval()


def diffusers_decode(model, codes):
    """diffusers' own decode of raw codes: the quantizer's lookup, then `decode` without quantizing again."""
    batch, height, width = codes.shape
    shape = (batch, height, width, model.quantize.vq_embed_dim)
    quantized = model.quantize.get_codebook_entry(codes.reshape(-1), shape)
    return model.decode(quantized, force_not_quantize=True).sample


# name -> (tokenizer of a seed, the library's decode of (B, h, w) codes, grid, image size, card text)
CASES = {
    "diffusers": (
        lambda seed: DiffusersVQTokenizer(vq_model(seed), value_range=(0.0, 1.0)),
        diffusers_decode, (4, 4), (16, 16), "a 4×4 grid of 40 codes from a diffusers VQModel",
    ),
    "diffusers-non-square": (
        lambda seed: DiffusersVQTokenizer(vq_model(seed), value_range=(-1.0, 1.0), image_size=(12, 20)),
        diffusers_decode, (3, 5), (12, 20), "a 3×5 grid of 40 codes from a diffusers VQModel",
    ),
    "janus": (
        lambda seed: JanusVQTokenizer(janus_model(seed)),
        lambda model, codes: model.decode(codes.flatten(1)), (3, 3), (6, 6),
        "a 3×3 grid of 64 codes from a transformers JanusVQVAE",
    ),
    "emu3-non-square": (
        lambda seed: Emu3VQTokenizer(emu3_model(seed), image_size=(10, 6)),
        lambda model, codes: model.decode(codes), (5, 3), (10, 6),
        "a 5×3 grid of 72 codes from a transformers Emu3VQVAE",
    ),
}


def in_unit_range(pixel_values, value_range):
    """Pixels in the tokenizer's value range -> [0, 1], the pipeline's `output_type="pt"` images."""
    low, high = value_range
    return ((pixel_values - low) / (high - low)).clamp(0.0, 1.0)


def tiny_prior(tokenizer, num_classes: int = 0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(1)
    return GPT2LMHeadModel(prior_config(tokenizer, preset="tiny", num_classes=num_classes, **overrides)).eval()


# ------------------------------------------------------------------------------------------------------ the round


@pytest.mark.parametrize("case", list(CASES))
def test_sample_decode_as_the_library_save_load_and_pair(case, tmp_path):
    make_tokenizer, library_decode, grid, image_size, card_text = CASES[case]
    tokenizer = make_tokenizer(0)
    assert (tokenizer.grid, tokenizer.image_size) == (grid, image_size)
    prior = tiny_prior(tokenizer, num_classes=2)
    pipe = LarpPipeline(tokenizer, prior)
    assert pipe.grid == grid and pipe.vqvae is tokenizer
    assert pipe.image_processor.size == {"height": image_size[0], "width": image_size[1]}  # from_tokenizer

    output = pipe(num_images=3, seed=4, output_type="pt")
    assert output.codes.shape == (3, *grid) and output.images.shape == (3, 3, *image_size)
    assert output.codes.unique().numel() > 3 and int(output.codes.max()) < tokenizer.codebook_size
    with torch.no_grad():
        expected = library_decode(tokenizer.model, output.codes)  # the library itself, on the sampled codes
    torch.testing.assert_close(output.images, in_unit_range(expected, tokenizer.value_range), rtol=0, atol=1e-6)
    pil = pipe(num_images=1, seed=4).images[0]
    assert pil.size == (image_size[1], image_size[0]) and pil.mode == "RGB"

    # The folder: the library's own folder under vqvae/, the parts named, no larp_hf model code at the root.
    folder = tmp_path / "pipe"
    pipe.save_pretrained(folder, sample_grid=False)
    index = json.loads((folder / "larp_pipeline.json").read_text())
    library_class = type(tokenizer.model)
    assert index["parts"]["vqvae"] == {
        "library": tokenizer.library, "class": library_class.__name__, "adapter": type(tokenizer).__name__
    }
    assert index["parts"]["prior"] == {"library": "transformers", "class": "GPT2LMHeadModel"}
    assert not list(folder.glob("modeling_*.py")) and not list(folder.glob("configuration_*.py"))
    by_library = library_class.from_pretrained(folder / "vqvae")
    by_library_state = by_library.state_dict()
    assert all(torch.equal(by_library_state[name], value) for name, value in tokenizer.model.state_dict().items())

    reloaded = LarpPipeline.from_pretrained(folder)
    assert type(reloaded.vqvae) is type(tokenizer) and reloaded.grid == grid
    assert reloaded.vqvae.tokenizer_hash() == tokenizer.tokenizer_hash()
    assert reloaded.vqvae.value_range == tokenizer.value_range and reloaded.vqvae.image_size == image_size
    for before, after in ((tokenizer.model, reloaded.vqvae.model), (prior, reloaded.prior)):
        state = after.state_dict()
        assert state.keys() == before.state_dict().keys()
        assert all(torch.equal(state[name], value) for name, value in before.state_dict().items())
    again = reloaded(num_images=3, seed=4, output_type="pt")
    assert torch.equal(again.codes, output.codes) and torch.equal(again.images, output.images)
    # The same with the tokenizer given in memory instead of the saved one.
    given = LarpPipeline.from_pretrained(folder, vqvae=tokenizer)
    assert given.vqvae is tokenizer and torch.equal(given(num_images=3, seed=4).codes, output.codes)

    # The card and describe(): what the tokenizer is and its grid, square or not.
    description = reloaded.describe()["vqvae"]
    assert description["grid"] == list(grid) and description["image_shape"] == list(image_size)
    assert description["library"] == tokenizer.library and description["class"] == library_class.__name__
    assert description["value_range"] == list(tokenizer.value_range) and description["channels"] == 3
    assert description["tokenizer_hash"] == tokenizer.tokenizer_hash()
    assert description["parameters"] == sum(p.numel() for p in tokenizer.model.parameters())
    square = grid[0] == grid[1]
    assert ("grid_size" in description) == square and ("image_size" in description) == (image_size[0] == image_size[1])
    if square:
        assert (description["grid_size"], description["image_size"]) == (grid[0], image_size[0])
        assert reloaded.grid_size == grid[0]
    else:
        with pytest.raises(ValueError, match=r"not square.*read `grid`"):
            reloaded.grid_size
    assert card_text in ModelCard.load(folder / "README.md").text

    # A prior trained on another tokenizer's codes (same shapes, other weights) is refused, built or loaded.
    other = make_tokenizer(7)
    with pytest.raises(ValueError, match="trained on codes of tokenizer"):
        LarpPipeline(other, prior)
    with pytest.raises(ValueError, match="trained on codes of tokenizer"):
        LarpPipeline.from_pretrained(folder, vqvae=other)
    with pytest.raises(ValueError, match="trained on codes of tokenizer"):
        LarpPipeline(tokenizer, tiny_prior(other))


def test_a_library_model_is_wrapped_as_it_comes(tmp_path):
    model = janus_model()
    pipe = LarpPipeline(model, tiny_prior(JanusVQTokenizer(model)))
    assert type(pipe.vqvae) is JanusVQTokenizer and pipe.vqvae.model is model
    vq = vq_model()
    pipe = LarpPipeline(vq, tiny_prior(DiffusersVQTokenizer(vq, value_range=(-1.0, 1.0))))
    assert type(pipe.vqvae) is DiffusersVQTokenizer and pipe.grid == (4, 4)
    pipe.save_pretrained(tmp_path / "pipe", sample_grid=False)
    # from_pretrained's vqvae= takes a library model too.
    reloaded = LarpPipeline.from_pretrained(tmp_path / "pipe", vqvae=vq)
    assert torch.equal(reloaded(num_images=2, seed=0).codes, pipe(num_images=2, seed=0).codes)


def wrapped_table(table: torch.nn.Embedding, grid: int) -> ImageTokenizer:
    """An embedding table as a tokenizer of `grid`×`grid` one-pixel codes (decode: look up, squash into [-1, 1])."""
    return wrap_tokenizer(
        table, encode=lambda x: torch.zeros(x.shape[0], grid, grid, dtype=torch.long),
        decode=lambda codes: table(codes).permute(0, 3, 1, 2).tanh(),
        codebook_size=table.num_embeddings, grid=(grid, grid), image_size=(grid, grid), num_channels=3,
        value_range=(-1.0, 1.0),
    )  # fmt: skip


@pytest.mark.slow
def test_a_32x32_grid_of_32768_codes_samples_1024_codes_an_image():
    table = torch.nn.Embedding(32768, 3)
    tokenizer = wrapped_table(table, 32)
    pipe = LarpPipeline(tokenizer, tiny_prior(tokenizer, n_layer=1))  # 1,024 sequential steps: one layer will do
    assert pipe.prior.config.n_positions == 1 + 1024 and pipe.grid_size == 32
    output = pipe(num_images=1, seed=0, output_type="pt")
    assert output.codes.shape == (1, 32, 32) and output.codes.unique().numel() > 500  # 1,024 draws over 32,768 codes
    with torch.no_grad():
        expected = in_unit_range(table(output.codes).permute(0, 3, 1, 2).tanh(), (-1.0, 1.0))
    torch.testing.assert_close(output.images, expected, rtol=0, atol=1e-6)


def test_a_wrapped_module_saves_and_loads_back_when_given(tmp_path):
    table = torch.nn.Embedding(32768, 3)
    tokenizer = wrapped_table(table, 4)
    pipe = LarpPipeline(tokenizer, tiny_prior(tokenizer))
    expected = pipe(num_images=2, seed=0).codes
    pipe.save_pretrained(tmp_path / "pipe", sample_grid=False)
    assert json.loads((tmp_path / "pipe" / "larp_pipeline.json").read_text())["parts"]["vqvae"] == {
        "library": "torch", "class": "Embedding", "adapter": "WrappedTokenizer"
    }
    assert "a 4×4 grid of 32,768 codes from a torch Embedding" in ModelCard.load(tmp_path / "pipe" / "README.md").text
    # A folder brings no code: the module has to be given, and the error says how.
    with pytest.raises(ValueError, match=r"wrapped Embedding module.*from_pretrained\(path, vqvae=load_tokenizer"):
        LarpPipeline.from_pretrained(tmp_path / "pipe")
    fresh = torch.nn.Embedding(32768, 3)
    loaded = load_tokenizer(tmp_path / "pipe" / "vqvae", module=fresh, encode=tokenizer.encode_function,
                            decode=lambda codes: fresh(codes).permute(0, 3, 1, 2).tanh())  # fmt: skip
    assert torch.equal(fresh.weight, table.weight)
    reloaded = LarpPipeline.from_pretrained(tmp_path / "pipe", vqvae=loaded)
    assert torch.equal(reloaded(num_images=2, seed=0).codes, expected)
    with pytest.raises(ValueError, match="trained on codes of tokenizer"):
        LarpPipeline.from_pretrained(tmp_path / "pipe", vqvae=wrapped_table(torch.nn.Embedding(32768, 3), 4))


class TableTokenizer:
    """The `ImageTokenizer` members and nothing else: no `nn.Module`, no `to`, `eval` or `parameters`."""

    codebook_size, grid, image_size, num_channels, value_range = 8, (2, 4), (2, 4), 3, (0.0, 1.0)

    def __init__(self):
        self.table = torch.linspace(0, 1, 24).view(8, 3)

    def encode(self, pixel_values):
        return torch.cdist(pixel_values.permute(0, 2, 3, 1), self.table[None]).argmin(-1)

    def decode(self, codes):
        return self.table[codes.view(-1, *self.grid)].permute(0, 3, 1, 2)

    def tokenizer_hash(self):
        return "table-" + str(self.table.sum().item())

    def save_pretrained(self, save_directory, **kwargs):
        raise NotImplementedError


def test_any_object_with_the_tokenizer_members_is_a_tokenizer():
    tokenizer = TableTokenizer()
    pipe = LarpPipeline(tokenizer, tiny_prior(tokenizer))
    assert pipe.to("cpu", torch.float32) is pipe and pipe.vqvae is tokenizer
    output = pipe(num_images=2, seed=0, output_type="pt")
    torch.testing.assert_close(output.images, tokenizer.decode(output.codes), rtol=0, atol=1e-6)
    description = pipe.describe()["vqvae"]
    assert description["parameters"] is None and description["class"] == "TableTokenizer"
    assert description["grid"] == [2, 4] and description["downsample_factor"] == 1 and "grid_size" not in description


def test_a_pipeline_of_a_library_that_is_not_installed_names_what_to_install(tmp_path, monkeypatch):
    tokenizer = DiffusersVQTokenizer(vq_model(), value_range=(-1.0, 1.0))
    LarpPipeline(tokenizer, tiny_prior(tokenizer)).save_pretrained(tmp_path / "pipe", sample_grid=False)
    tokenizer.model.save_pretrained(tmp_path / "vq")
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now fails, as without the package
    with pytest.raises(ValueError, match=r"VQModel, and diffusers is not installed.*pip install larp_hf\[diffusers\]"):
        LarpPipeline.from_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match=r"pip install larp_hf\[diffusers\]"):
        load_tokenizer(tmp_path / "vq")


# -------------------------------------------------------------------------------------------------------- the CLI


def test_cli_assemble_generate_and_info_on_a_folder_saved_by_transformers_alone(tmp_path, capsys):
    janus_model(seed=2).save_pretrained(tmp_path / "janus")  # no larp_tokenizer.json, no processor of ours
    tokenizer = load_tokenizer(tmp_path / "janus")
    tiny_prior(tokenizer).save_pretrained(tmp_path / "prior")
    larp_hf("assemble", "--vqvae", tmp_path / "janus", "--prior", tmp_path / "prior", "--output", tmp_path / "pipe",
            "--temperature", 0.9, capsys=capsys)  # fmt: skip
    assert (tmp_path / "pipe" / "samples.png").is_file()
    assert json.loads((tmp_path / "pipe" / "larp_pipeline.json").read_text())["parts"]["vqvae"]["class"] == "JanusVQVAE"

    larp_hf("generate", tmp_path / "pipe", "--num-images", 3, "--seed", 1, "--output-dataset", tmp_path / "ds",
            "--output", tmp_path / "grid.png", capsys=capsys)  # fmt: skip
    written = datasets.load_from_disk(str(tmp_path / "ds"))
    codes = torch.tensor(written["codes"]).view(3, 3, 3)
    assert written[0]["image"].size == (6, 6)
    expected = LarpPipeline.from_pretrained(tmp_path / "pipe")(num_images=3, seed=1, temperature=0.9)
    assert torch.equal(codes, expected.codes)
    # The PNGs hold the library's decoding of the written codes, as 8-bit pixels.
    with torch.no_grad():
        pixels = in_unit_range(tokenizer.model.decode(codes.flatten(1)), (-1.0, 1.0))
    first = torch.from_numpy(np.asarray(written[0]["image"], dtype=np.float32)).permute(2, 0, 1)  # (3, 6, 6)
    assert (first - (pixels[0] * 255)).abs().max() <= 1.0

    text, _ = larp_hf("info", tmp_path / "pipe", capsys=capsys)
    assert "library         transformers" in text and "class           JanusVQVAE" in text
    assert "grid            [3, 3]" in text and "grid_size       3" in text and "temperature=0.9" in text
    described = json.loads(larp_hf("info", tmp_path / "pipe", "--json", capsys=capsys)[0])
    assert described["vqvae"]["adapter"] == "JanusVQTokenizer" and described["vqvae"]["codebook_size"] == 64
    assert described["vqvae"]["tokenizer_hash"] == tokenizer.tokenizer_hash()

    # A prior over another tokenizer's codes is refused before anything is written.
    assert load_tokenizer(tmp_path / "pipe" / "vqvae").tokenizer_hash() == tokenizer.tokenizer_hash()
    tiny_prior(JanusVQTokenizer(janus_model(seed=3))).save_pretrained(tmp_path / "other-prior")
    _, err = larp_hf("assemble", "--vqvae", tmp_path / "janus", "--prior", tmp_path / "other-prior", "--output",
                     tmp_path / "bad", expect_success=False, capsys=capsys)  # fmt: skip
    assert "trained on codes of tokenizer" in err and not (tmp_path / "bad").exists()

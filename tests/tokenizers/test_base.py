"""The ImageTokenizer interface, wrap_tokenizer, load_tokenizer's recognition and errors, docstring examples."""

import doctest
import importlib
import json

import pytest
import torch
from torch import nn

from larp_hf import LarpVQVAEConfig, LarpVQVAEModel
from larp_hf.tokenizers import TOKENIZER_CONFIG_NAME, ImageTokenizer, as_tokenizer, load_tokenizer, wrap_tokenizer
from tests.test_docstrings import MarkdownDocTestParser


class TinyVQ(nn.Module):
    """A user's own VQ-VAE: 4×4 patches -> 4-dim latents -> nearest of 32 codes; a counter buffer as LlamaGen has."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 4, stride=4)
        self.codebook = nn.Embedding(32, 4)
        self.dec = nn.ConvTranspose2d(4, 3, 4, stride=4)
        self.register_buffer("codebook_used", torch.zeros(32))
        self.norm = nn.BatchNorm2d(4)  # brings an int64 num_batches_tracked buffer

    def to_codes(self, pixel_values):  # (B, 3, 8, 16) -> (B, 2, 4)
        latents = self.enc(pixel_values).permute(0, 2, 3, 1)
        return torch.cdist(latents, self.codebook.weight[None]).argmin(-1)

    def from_codes(self, codes):
        return self.dec(self.codebook(codes).permute(0, 3, 1, 2))


def tiny_wrapped(seed=0):
    torch.manual_seed(seed)
    return wrap_tokenizer(
        TinyVQ(), encode="to_codes", decode="from_codes", codebook_size=32, grid=(2, 4), image_size=(8, 16),
        num_channels=3, value_range=(-1.0, 1.0), hash_ignore=("codebook_used",),
    )  # fmt: skip


def test_wrapped_module_is_a_tokenizer_and_round_trips(tmp_path):
    tokenizer = tiny_wrapped()
    assert isinstance(tokenizer, ImageTokenizer)
    pixel_values = torch.rand(3, 3, 8, 16) * 2 - 1
    codes = tokenizer.encode(pixel_values)
    assert torch.equal(codes, tokenizer.model.to_codes(pixel_values)) and codes.shape == (3, 2, 4)
    assert torch.equal(tokenizer.decode(codes), tokenizer.model.from_codes(codes))
    reference = tokenizer.tokenizer_hash()

    # Training-only state never enters the hash; a code-deciding weight does.
    tokenizer.model.codebook_used += 5
    tokenizer.model.norm.num_batches_tracked += 1
    assert tokenizer.tokenizer_hash() == reference
    tokenizer.save_pretrained(tmp_path / "mine")
    record = json.loads((tmp_path / "mine" / TOKENIZER_CONFIG_NAME).read_text())
    assert record["adapter"] == "wrapped" and record["encode"] == "to_codes"
    with pytest.raises(ValueError, match="module=MyVQVAE"):
        load_tokenizer(tmp_path / "mine")  # a folder never names code to import
    loaded = load_tokenizer(tmp_path / "mine", module=TinyVQ())
    assert loaded.tokenizer_hash() == reference and torch.equal(loaded.encode(pixel_values), codes)
    loaded.to(torch.bfloat16)
    assert loaded.tokenizer_hash() == reference and torch.equal(loaded.encode(pixel_values), codes)
    with torch.no_grad():
        loaded.model.codebook.weight[0, 0] += 1e-3
    assert loaded.tokenizer_hash() != reference


def test_wrapped_callables_must_be_given_again(tmp_path):
    module = TinyVQ()
    tokenizer = wrap_tokenizer(
        module, encode=module.to_codes, decode=module.from_codes, codebook_size=32, grid=(2, 4), image_size=(8, 16),
        num_channels=3, value_range=(0, 1),
    )  # fmt: skip
    tokenizer.save_pretrained(tmp_path / "mine")
    fresh = TinyVQ()
    with pytest.raises(ValueError, match="encode=..., decode=..."):
        load_tokenizer(tmp_path / "mine", module=fresh)
    loaded = load_tokenizer(tmp_path / "mine", module=fresh, encode=fresh.to_codes, decode=fresh.from_codes)
    assert loaded.value_range == (0.0, 1.0) and loaded.tokenizer_hash() == tokenizer.tokenizer_hash()


def test_bad_wrapping_is_refused():
    with pytest.raises(ValueError, match="names no method"):
        wrap_tokenizer(TinyVQ(), encode="encode", decode="from_codes", codebook_size=32, grid=2, image_size=8,
                       num_channels=3, value_range=(-1, 1))  # fmt: skip
    with pytest.raises(ValueError, match="low < high"):
        wrap_tokenizer(TinyVQ(), encode="to_codes", decode="from_codes", codebook_size=32, grid=2, image_size=8,
                       num_channels=3, value_range=(1, -1))  # fmt: skip
    wrong_grid = wrap_tokenizer(TinyVQ(), encode="to_codes", decode="from_codes", codebook_size=32, grid=(1, 4),
                                image_size=(8, 16), num_channels=3, value_range=(-1, 1))  # fmt: skip
    with pytest.raises(ValueError, match="needs 4"):
        wrong_grid.encode(torch.zeros(1, 3, 8, 16))
    tokenizer = tiny_wrapped()
    with pytest.raises(ValueError, match="\\[0, 32\\)"):
        tokenizer.decode(torch.tensor([[[0, 1, 2, 32], [0, 0, 0, 0]]]))
    with pytest.raises(ValueError, match="NaN"):
        tokenizer.encode(torch.full((1, 3, 8, 16), float("nan")))
    with pytest.raises(ValueError, match="integer tensor"):
        tokenizer.decode(torch.zeros(1, 2, 4))


def test_larp_vqvae_model_is_an_image_tokenizer():
    model = LarpVQVAEModel(LarpVQVAEConfig(in_channels=1, image_size=16, codebook_size=16, hidden_channels=[8, 8]))
    assert isinstance(model, ImageTokenizer) and as_tokenizer(model) is model
    assert (model.grid, model.image_size, model.num_channels, model.value_range) == ((4, 4), (16, 16), 1, (-1.0, 1.0))


def test_larp_vqvae_folder_loads_as_itself(tmp_path):
    model = LarpVQVAEModel(LarpVQVAEConfig(in_channels=1, image_size=16, codebook_size=16, hidden_channels=[8, 8]))
    model.save_pretrained(tmp_path / "larp")
    loaded = load_tokenizer(tmp_path / "larp")
    assert type(loaded) is LarpVQVAEModel and loaded.tokenizer_hash() == model.tokenizer_hash()


def test_unknown_layouts_name_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not an image tokenizer folder.*wrap_tokenizer"):
        load_tokenizer(tmp_path / "empty")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type='bert'"):
        load_tokenizer(tmp_path / "bert")
    (tmp_path / "janus").mkdir()
    (tmp_path / "janus" / "config.json").write_text(json.dumps({"model_type": "janus"}))
    with pytest.raises(ValueError, match="whole janus model.*vqmodel.save_pretrained"):
        load_tokenizer(tmp_path / "janus")
    with pytest.raises(ValueError, match="wrap_tokenizer"):
        as_tokenizer(nn.Linear(2, 2))


@pytest.mark.parametrize(
    "name", ["larp_hf.tokenizers.base", "larp_hf.tokenizers.wrapped", "larp_hf.tokenizers.adapter_diffusers"]
)
def test_docstring_examples(name):
    if name.endswith("diffusers"):
        pytest.importorskip("diffusers")
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(parser=MarkdownDocTestParser())
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [test for test in finder.find(module) if test.examples]
    assert tests, f"{name} has no docstring example"
    for test in tests:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0

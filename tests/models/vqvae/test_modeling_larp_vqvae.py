import json

import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel
from transformers.dynamic_module_utils import get_imports, get_relative_imports

from larp_hf import LarpImageProcessor, LarpVQVAEConfig, LarpVQVAEModel, LarpVQVAEOutput
from larp_hf.models.vqvae.modeling_larp_vqvae import LarpVectorQuantizer
from tests.conftest import make_images


class LarpVQVAEModelTester:
    """Builds tiny configs and inputs, in the manner of transformers' model testers."""

    def __init__(self, in_channels=1, image_size=16, codebook_size=16, batch_size=4):
        self.in_channels = in_channels
        self.image_size = image_size
        self.codebook_size = codebook_size
        self.batch_size = batch_size

    def get_config(self, **overrides):
        kwargs = dict(
            in_channels=self.in_channels,
            image_size=self.image_size,
            hidden_channels=[8, 16],
            stem_channels=8,
            num_res_blocks=1,
            res_hidden_channels=8,
            codebook_size=self.codebook_size,
            codebook_dim=4,
        )
        kwargs.update(overrides)
        return LarpVQVAEConfig(**kwargs)

    def pixel_values(self, seed=0):
        generator = torch.Generator().manual_seed(seed)
        shape = (self.batch_size, self.in_channels, self.image_size, self.image_size)
        return torch.rand(shape, generator=generator) * 2 - 1

    def images(self, num_images=64, seed=0):
        """Real-looking PIL images (a bright rectangle on a dark background), as a dataset would hold them."""
        return make_images(num_images, size=self.image_size, channels=self.in_channels, seed=seed)

    def image_pixel_values(self, num_images=64, seed=0):
        processor = LarpImageProcessor.from_vqvae_config(self.get_config())
        return processor(self.images(num_images, seed), return_tensors="pt")["pixel_values"]


@pytest.fixture(name="tester")
def model_tester():
    return LarpVQVAEModelTester()


def trained_model(tester, steps=3, **overrides):
    """A tiny model after a few training steps, so the codebook has been initialised from data."""
    torch.manual_seed(0)
    model = LarpVQVAEModel(tester.get_config(**overrides))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(steps):
        loss = model(tester.pixel_values(seed=step)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.mark.parametrize("in_channels", [1, 3])
def test_encode_decode_shapes_dtype_and_range(in_channels):
    tester = LarpVQVAEModelTester(in_channels=in_channels, image_size=32)
    config = tester.get_config()
    model = LarpVQVAEModel(config).eval()
    codes = model.encode(tester.pixel_values())
    assert config.grid_size == 8
    assert codes.shape == (tester.batch_size, 8, 8)
    assert codes.dtype == torch.long
    assert codes.min() >= 0 and codes.max() < config.codebook_size
    images = model.decode(codes)
    assert images.shape == (tester.batch_size, in_channels, 32, 32)
    assert images.dtype == torch.float32
    # Raster-order sequences (what the prior produces) decode to the same images.
    torch.testing.assert_close(model.decode(codes.flatten(1)), images)


def test_grid_size_follows_the_downsampling():
    assert LarpVQVAEConfig(image_size=32, hidden_channels=[32, 64]).grid_size == 8
    assert LarpVQVAEConfig(image_size=32, hidden_channels=[32, 64, 64]).grid_size == 4
    assert LarpVQVAEConfig(image_size=96, hidden_channels=[32, 64, 64, 128]).grid_size == 6


def test_forward_returns_losses_codes_and_perplexity(tester):
    model = LarpVQVAEModel(tester.get_config())
    pixel_values = tester.pixel_values()
    output = model(pixel_values)
    assert isinstance(output, LarpVQVAEOutput)
    torch.testing.assert_close(output.loss, output.reconstruction_loss + output.commitment_loss)
    assert output.reconstruction.shape == pixel_values.shape
    assert output.codes.shape == (tester.batch_size, 4, 4)
    assert 1.0 <= output.perplexity.item() <= tester.codebook_size
    # Straight-through estimator: the reconstruction loss reaches the encoder through the quantizer.
    output.reconstruction_loss.backward()
    assert model.encoder.conv_in.weight.grad.abs().sum() > 0
    # The codebook is a buffer moved by EMA, never by the optimizer.
    assert "quantizer.codebook" not in dict(model.named_parameters())


def test_save_and_load_give_identical_codes(tester, tmp_path):
    model = trained_model(tester)
    pixel_values = tester.pixel_values(seed=42)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, LarpVQVAEModel)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), LarpVQVAEConfig)
    assert torch.equal(loaded.encode(pixel_values), model.encode(pixel_values))
    assert torch.equal(loaded.quantizer.codebook, model.quantizer.codebook)
    assert bool(loaded.quantizer.initialized)


def test_encode_never_updates_the_codebook(tester):
    model = trained_model(tester).train()
    before = model.quantizer.codebook.clone()
    model.encode(tester.pixel_values(seed=7))
    assert torch.equal(model.quantizer.codebook, before)


def test_eval_forward_does_not_update_the_codebook(tester):
    model = trained_model(tester)
    before = model.quantizer.codebook.clone()
    model(tester.pixel_values(seed=7))
    assert torch.equal(model.quantizer.codebook, before)


def test_first_training_forward_initialises_the_codebook_from_data(tester, monkeypatch):
    model = LarpVQVAEModel(tester.get_config(codebook_init="sample")).train()
    calls = []
    original = model.quantizer.initialize_from_data
    monkeypatch.setattr(model.quantizer, "initialize_from_data", lambda flat: calls.append(flat.shape) or original(flat))
    model.eval()(tester.pixel_values())
    assert calls == [] and not bool(model.quantizer.initialized)  # evaluation never initialises
    model.train()(tester.pixel_values())
    model(tester.pixel_values(seed=1))
    assert calls == [torch.Size([tester.batch_size * 16, 4])]  # once, on the first batch's (B*h*w, D) vectors
    assert bool(model.quantizer.initialized)


def test_codes_without_any_assignment_keep_their_random_vectors(tester):
    quantizer = LarpVectorQuantizer(tester.get_config(codebook_init="random", dead_code_threshold=0)).train()
    initial = quantizer.codebook.clone()
    flat = initial[:2] + 0.01  # only codes 0 and 1 get vectors
    quantizer(flat.T.reshape(1, 4, 1, 2))
    assert not torch.equal(quantizer.codebook[:2], initial[:2])
    assert torch.equal(quantizer.codebook[2:], initial[2:])


def test_integer_pixel_values_are_refused(tester):
    model = LarpVQVAEModel(tester.get_config())
    with pytest.raises(ValueError, match="floating-point tensor.*LarpImageProcessor"):
        model.encode(torch.zeros(2, 1, 16, 16, dtype=torch.uint8))


def test_sample_init_puts_every_code_on_an_encoder_output(tester):
    quantizer = LarpVectorQuantizer(tester.get_config(codebook_init="sample"))
    flat = torch.randn(64, 4)
    quantizer.initialize_from_data(flat)
    matches = (quantizer.codebook[:, None, :] == flat[None, :, :]).all(-1)  # (K, N)
    assert matches.any(dim=1).all()
    assert bool(quantizer.initialized)


def test_kmeans_init_quantizes_better_than_sampling(tester):
    torch.manual_seed(0)
    flat = torch.randn(2000, 4)
    errors = {}
    for init in ("sample", "kmeans"):
        torch.manual_seed(1)
        quantizer = LarpVectorQuantizer(tester.get_config(codebook_init=init, kmeans_iters=10))
        quantizer.initialize_from_data(flat)
        errors[init] = (flat - quantizer.codebook[quantizer.nearest_codes(flat)]).pow(2).sum(1).mean().item()
        assert torch.isclose(quantizer.cluster_size.sum(), torch.tensor(2000.0))
    assert errors["kmeans"] < 0.9 * errors["sample"]


def test_ema_update_follows_the_formula(tester):
    decay, eps = 0.8, 1e-5
    quantizer = LarpVectorQuantizer(
        tester.get_config(codebook_size=3, codebook_dim=2, ema_decay=decay, ema_epsilon=eps, dead_code_threshold=0)
    ).train()
    quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0]]))
    quantizer.cluster_size.copy_(torch.tensor([2.0, 2.0, 2.0]))
    quantizer.embed_sum.copy_(quantizer.codebook * 2.0)
    quantizer.initialized.fill_(True)
    # Four vectors: three near code 0, one near code 1, none near code 2.
    flat = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [9.0, 11.0]])
    latents = flat.T.reshape(1, 2, 2, 2)  # (B=1, D=2, h=2, w=2), raster order = rows of `flat`
    _, codes, _, _ = quantizer(latents)
    assert codes.flatten().tolist() == [0, 0, 0, 1]

    counts = torch.tensor([3.0, 1.0, 0.0])
    sums = torch.tensor([[2.0, 2.0], [9.0, 11.0], [0.0, 0.0]])
    cluster_size = decay * 2.0 + (1 - decay) * counts
    embed_sum = decay * torch.tensor([[0.0, 0.0], [20.0, 20.0], [-20.0, 20.0]]) + (1 - decay) * sums
    total = cluster_size.sum()
    smoothed = (cluster_size + eps) / (total + 3 * eps) * total
    torch.testing.assert_close(quantizer.cluster_size, cluster_size)
    torch.testing.assert_close(quantizer.embed_sum, embed_sum)
    torch.testing.assert_close(quantizer.codebook, embed_sum / smoothed[:, None])


def test_dead_codes_are_restarted_on_batch_vectors(tester):
    quantizer = LarpVectorQuantizer(tester.get_config(codebook_size=4, codebook_dim=2, dead_code_threshold=1.0)).train()
    quantizer.codebook.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [100.0, 100.0], [-100.0, -100.0]]))
    quantizer.cluster_size.copy_(torch.tensor([50.0, 50.0, 1.05, 50.0]))  # code 2 is about to die; 3 will live on
    quantizer.embed_sum.copy_(quantizer.codebook * quantizer.cluster_size[:, None])
    quantizer.initialized.fill_(True)
    generator = torch.Generator().manual_seed(0)
    flat = torch.cat([torch.randn(8, 2, generator=generator), 5 + torch.randn(8, 2, generator=generator)])
    latents = flat.T.reshape(1, 2, 4, 4)
    quantizer(latents)
    # Code 2 got no vectors, its EMA count fell below 1 and it now sits on one of the batch's vectors.
    assert quantizer.num_restarts.item() == 1
    assert torch.cdist(quantizer.codebook[2:3], flat).min() < 1e-6
    assert quantizer.cluster_size[2].item() == pytest.approx(1.0)
    # Code 3 was unused too, but its EMA count is still high: it is left alone.
    torch.testing.assert_close(quantizer.codebook[3], torch.tensor([-100.0, -100.0]))
    assert quantizer.codebook_usage() == 1.0


def test_training_keeps_most_of_the_codebook_in_use(tester):
    model = trained_model(tester, steps=20)
    codes = model.encode(torch.cat([tester.pixel_values(seed=s) for s in range(10)]))
    assert codes.unique().numel() >= 0.75 * tester.codebook_size


def test_wrong_channel_count_is_refused(tester):
    model = LarpVQVAEModel(tester.get_config())
    with pytest.raises(ValueError, match="expects 1-channel images but got 3 channels"):
        model.encode(torch.zeros(2, 3, 16, 16))


def test_image_too_small_for_the_grid_is_refused(tester):
    model = LarpVQVAEModel(tester.get_config())
    with pytest.raises(ValueError, match=r"too small for this tokenizer's 4×4 grid, which needs 16×16"):
        model.encode(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="must be a \\(batch, channels, height, width\\) tensor"):
        model.encode(torch.zeros(1, 16, 16))


@pytest.mark.parametrize("bad_value", [-1, 16, 1000])
def test_codes_outside_the_codebook_are_refused(tester, bad_value):
    model = LarpVQVAEModel(tester.get_config())
    codes = torch.zeros(2, 4, 4, dtype=torch.long)
    codes[1, 2, 3] = bad_value
    with pytest.raises(ValueError, match=r"indices in \[0, 16\)"):
        model.decode(codes)


def test_bad_code_shapes_and_dtypes_are_refused(tester):
    model = LarpVQVAEModel(tester.get_config())
    with pytest.raises(ValueError, match="integer tensor"):
        model.decode(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"shape \(batch, 4, 4\) or \(batch, 16\)"):
        model.decode(torch.zeros(2, 5, 5, dtype=torch.long))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"in_channels": 2}, "must be 1 \\(grayscale\\) or 3"),
        ({"image_size": 30}, "not divisible by the downsample factor 4"),
        ({"codebook_init": "zeros"}, "codebook_init"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"ema_epsilon": 0}, "ema_epsilon"),
        ({"kmeans_iters": 0}, "kmeans_iters"),
    ],
)
def test_invalid_configs_are_refused(tester, overrides, message):
    with pytest.raises(Exception, match=message):
        tester.get_config(**overrides)


# ------------------------------------------------------------------------------ loading through the Auto classes

# What the copied code may import: a folder loaded with trust_remote_code has only transformers' dependencies.
STOCK_IMPORTS = {"dataclasses", "hashlib", "json", "math", "numpy", "PIL", "torch", "torchvision", "transformers", "huggingface_hub"}


def save_tokenizer_folder(model, folder):
    """What train_vqvae.py writes: the model and its image processor in one folder."""
    model.save_pretrained(folder)
    LarpImageProcessor.from_vqvae_config(model.config).save_pretrained(folder)


def test_saved_folder_carries_auto_map_and_self_contained_code(tester, tmp_path):
    save_tokenizer_folder(LarpVQVAEModel(tester.get_config()), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_larp_vqvae.LarpVQVAEConfig",
        "AutoModel": "modeling_larp_vqvae.LarpVQVAEModel",
    }
    preprocessor = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"] == {"AutoImageProcessor": "image_processing_larp_vqvae.LarpImageProcessor"}
    code = sorted(path.name for path in tmp_path.glob("*.py"))
    assert code == ["configuration_larp_vqvae.py", "image_processing_larp_vqvae.py", "modeling_larp_vqvae.py"]
    for name in code:
        assert set(get_imports(tmp_path / name)) <= STOCK_IMPORTS, name
        assert {f"{module}.py" for module in get_relative_imports(tmp_path / name)} <= set(code), name
    # The model's code checks its input with the processor's `check_pixel_values`: a model saved alone carries it too.
    LarpVQVAEModel(tester.get_config()).save_pretrained(tmp_path / "model-only")
    assert sorted(path.name for path in (tmp_path / "model-only").glob("*.py")) == code


def test_folder_loads_with_trust_remote_code_in_a_process_without_larp_hf(tester, tmp_path, python_without_larp_hf):
    model = trained_model(tester)
    save_tokenizer_folder(model, tmp_path / "tokenizer")
    images = tester.images(seed=3)
    (tmp_path / "images").mkdir()
    for index, image in enumerate(images):
        image.save(tmp_path / "images" / f"{index:03d}.png")
    script = """
import sys
from pathlib import Path

import PIL.Image
import torch
from transformers import AutoImageProcessor, AutoModel

folder, images, out, threads = sys.argv[1:]
torch.set_num_threads(int(threads))
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
pixel_values = processor([PIL.Image.open(p) for p in sorted(Path(images).glob("*.png"))], return_tensors="pt")["pixel_values"]
codes = model.encode(pixel_values)
bf16 = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.bfloat16).eval()
torch.save({
    "classes": [type(model).__module__, type(processor).__module__],
    "larp_hf_imported": any(name.split(".")[0] == "larp_hf" for name in sys.modules),
    "pixel_values": pixel_values, "codes": codes, "decoded": model.decode(codes).detach(),
    "hashes": [model.tokenizer_hash(), bf16.tokenizer_hash()], "codes_bf16": bf16.encode(pixel_values),
}, out)
"""
    result = python_without_larp_hf(
        script, tmp_path / "tokenizer", tmp_path / "images", tmp_path / "out.pt", torch.get_num_threads(), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.load(tmp_path / "out.pt")
    assert not remote["larp_hf_imported"]
    assert all(module.startswith("transformers_modules.") for module in remote["classes"]), remote["classes"]

    processor = LarpImageProcessor.from_vqvae_config(model.config)
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(remote["pixel_values"], pixel_values, rtol=0, atol=0)
    codes = model.encode(pixel_values)
    assert codes.unique().numel() > 1  # the comparison means something
    assert torch.equal(remote["codes"], codes)
    torch.testing.assert_close(remote["decoded"], model.decode(codes).detach())
    # The copied code is the library's: bfloat16 loading and the hash behave the same there.
    assert torch.equal(remote["codes_bf16"], codes)
    assert remote["hashes"] == [model.tokenizer_hash()] * 2


@pytest.mark.parametrize("trust_remote_code", [None, True])
def test_with_larp_hf_imported_the_auto_classes_give_the_library_classes(tester, tmp_path, trust_remote_code):
    model = trained_model(tester)
    save_tokenizer_folder(model, tmp_path)
    save_tokenizer_folder(model, tmp_path)  # saving again over the copied code is fine
    kwargs = {} if trust_remote_code is None else {"trust_remote_code": trust_remote_code}
    assert type(AutoConfig.from_pretrained(tmp_path, **kwargs)) is LarpVQVAEConfig
    loaded = AutoModel.from_pretrained(tmp_path, **kwargs).eval()
    assert type(loaded) is LarpVQVAEModel
    assert type(AutoImageProcessor.from_pretrained(tmp_path, **kwargs)) is LarpImageProcessor
    pixel_values = tester.image_pixel_values()
    assert torch.equal(loaded.encode(pixel_values), model.encode(pixel_values))


# ----------------------------------------------------------------------------------------------- dtypes and hash

NARROW_DTYPES = [torch.bfloat16, torch.float16]


def assert_codes_are_computed_in_float32(model, dtype):
    assert model.dtype == dtype
    assert all(p.dtype == torch.float32 for p in model.encoder.parameters())
    assert all(p.dtype == dtype for p in model.decoder.parameters())
    buffers = dict(model.quantizer.named_buffers())
    assert {name: buffers[name].dtype for name in ("codebook", "cluster_size", "embed_sum")} == dict.fromkeys(
        ("codebook", "cluster_size", "embed_sum"), torch.float32
    )
    assert buffers["initialized"].dtype == torch.bool and buffers["num_restarts"].dtype == torch.long


@pytest.mark.parametrize("dtype", NARROW_DTYPES, ids=str)
def test_narrow_dtype_loading_encodes_like_float32(tester, tmp_path, dtype):
    model = trained_model(tester, steps=10)
    model.save_pretrained(tmp_path)
    pixel_values = tester.image_pixel_values(num_images=128, seed=3)
    codes = model.encode(pixel_values)
    assert codes.unique().numel() > 1

    loaded = LarpVQVAEModel.from_pretrained(tmp_path, dtype=dtype).eval()
    assert_codes_are_computed_in_float32(loaded, dtype)
    assert torch.equal(loaded.quantizer.codebook, model.quantizer.codebook)  # loaded as stored, never rounded
    # The encoder and quantizer are the float32 ones, so the codes are not just mostly equal: they are equal.
    assert torch.equal(loaded.encode(pixel_values), codes)
    # decode runs the decoder in the requested dtype and returns that dtype.
    images = loaded.decode(codes)
    assert images.dtype == dtype
    torch.testing.assert_close(images.float(), model.decode(codes).detach(), atol=0.05, rtol=0)
    # Same through the Auto class and by the dtype's name.
    assert AutoModel.from_pretrained(tmp_path, dtype=str(dtype).split(".")[1]).dtype == dtype


@pytest.mark.parametrize("cast", [".to(bfloat16)", ".half()", ".bfloat16()"])
def test_casting_in_memory_keeps_the_codebook_and_encoder_float32(tester, cast):
    model = trained_model(tester, steps=10)
    codebook = model.quantizer.codebook.clone()
    pixel_values = tester.image_pixel_values(seed=3)
    codes = model.encode(pixel_values)
    dtype = torch.float16 if cast == ".half()" else torch.bfloat16
    {".to(bfloat16)": lambda: model.to(torch.bfloat16), ".half()": model.half, ".bfloat16()": model.bfloat16}[cast]()
    assert_codes_are_computed_in_float32(model, dtype)
    assert torch.equal(model.quantizer.codebook, codebook)  # moved as float32, not rounded and widened back
    assert torch.equal(model.encode(pixel_values), codes)  # before the fix: "mat1 and mat2 must have the same dtype"
    assert model.decode(codes).dtype == dtype
    model.float()
    assert model.dtype == torch.float32 and torch.equal(model.encode(pixel_values), codes)


def test_gradients_present_at_a_cast_follow_their_weights(tester):
    model = trained_model(tester).train()
    model(tester.image_pixel_values(num_images=8)).loss.backward()
    model.to(torch.bfloat16)
    assert model.encoder.conv_in.weight.grad.dtype == torch.float32
    assert model.decoder.conv_in.weight.grad.dtype == torch.bfloat16


def test_training_step_in_bfloat16(tester):
    model = trained_model(tester).to(torch.bfloat16).train()
    output = model(tester.image_pixel_values(num_images=8))
    assert output.reconstruction.dtype == torch.bfloat16 and output.loss.dtype == torch.float32
    output.loss.backward()
    assert model.encoder.conv_in.weight.grad.dtype == torch.float32
    assert model.decoder.conv_in.weight.grad.dtype == torch.bfloat16
    assert model.quantizer.codebook.dtype == torch.float32  # the EMA update kept it float32


def test_autocast_runs_the_encoder_in_bfloat16_and_the_quantizer_in_float32(tester):
    model = trained_model(tester, steps=10)
    pixel_values = tester.image_pixel_values(seed=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        codes = model.encode(pixel_values)
    assert codes.dtype == torch.long and codes.shape == (64, 4, 4)


def test_tokenizer_hash_does_not_depend_on_the_dtype(tester, tmp_path):
    model = trained_model(tester, steps=10)
    model.save_pretrained(tmp_path / "a")
    expected = model.tokenizer_hash()
    loads = {dtype: LarpVQVAEModel.from_pretrained(tmp_path / "a", dtype=dtype) for dtype in (torch.float32, *NARROW_DTYPES)}
    assert {dtype: loaded.tokenizer_hash() for dtype, loaded in loads.items()} == dict.fromkeys(loads, expected)
    # Casts in memory, chained casts and widening back keep it too.
    assert LarpVQVAEModel.from_pretrained(tmp_path / "a").to(torch.bfloat16).tokenizer_hash() == expected
    assert loads[torch.bfloat16].to(torch.float16).tokenizer_hash() == expected
    assert LarpVQVAEModel.from_pretrained(tmp_path / "a").half().float().tokenizer_hash() == expected
    assert AutoModel.from_pretrained(tmp_path / "a", dtype=torch.bfloat16).tokenizer_hash() == expected


def nudge(tensor):
    """Move one value of `tensor` to the next float32 up: the smallest change a weight can make."""
    with torch.no_grad():
        tensor.view(-1)[0] = torch.nextafter(tensor.view(-1)[0], torch.tensor(float("inf")))


@pytest.mark.parametrize(
    "name, changes_the_codes",
    [
        ("encoder.conv_in.weight", True),
        ("encoder.res_blocks.0.conv2.bias", True),
        ("quantizer.codebook", True),
        ("decoder.conv_out.weight", False),
        ("decoder.up.1.bias", False),
        ("quantizer.cluster_size", False),
        ("quantizer.embed_sum", False),
    ],
)
def test_tokenizer_hash_covers_exactly_what_decides_the_codes(tester, name, changes_the_codes):
    model = trained_model(tester)
    expected = model.tokenizer_hash()
    nudge(model.get_parameter(name) if name in dict(model.named_parameters()) else model.get_buffer(name))
    assert (model.tokenizer_hash() != expected) == changes_the_codes


def test_tokenizer_hash_ignores_the_quantizer_counters(tester):
    model = trained_model(tester)
    expected = model.tokenizer_hash()
    model.quantizer.num_restarts += 3
    model.quantizer.initialized.fill_(False)
    assert model.tokenizer_hash() == expected


def test_tokenizer_hash_after_training_in_bfloat16_is_that_of_the_new_weights(tester, tmp_path):
    model = trained_model(tester, steps=10)
    expected = model.tokenizer_hash()
    model.to(torch.bfloat16).train()
    model(tester.image_pixel_values(num_images=8)).loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert model.tokenizer_hash() != expected
    # Saved in bfloat16 and loaded back in float32, the new weights hash the same: no information was lost.
    model.save_pretrained(tmp_path)
    assert LarpVQVAEModel.from_pretrained(tmp_path, dtype=torch.float32).tokenizer_hash() == model.tokenizer_hash()


def test_tokenizer_hash_of_float32_weights_is_pinned():
    # Token datasets and priors already on disk record this hash: its definition for float32 weights must not move.
    # (Every weight is set, the decoder's too, though only the encoder's and the codebook are hashed.)
    model = LarpVQVAEModel(LarpVQVAEModelTester().get_config())
    tensors = sorted([*model.named_parameters(), ("quantizer.codebook", model.quantizer.codebook)])
    with torch.no_grad():
        for index, (_, tensor) in enumerate(tensors):
            tensor.copy_(torch.linspace(-1, 1, tensor.numel()).view_as(tensor) * (index + 1) / 7)
    assert model.tokenizer_hash() == "eccbae0a9760549bd022243c6013ae851b9c3c0850ceb8bc2086f4214574010b"


# ----------------------------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
def test_encode_reads_any_float_dtype(tester, dtype):
    model = trained_model(tester, steps=10)
    pixel_values = tester.image_pixel_values(seed=3).to(dtype)
    assert torch.equal(model.encode(pixel_values), model.encode(pixel_values.float()))
    assert model(pixel_values).reconstruction.dtype == torch.float32


@pytest.mark.parametrize("method", ["encode", "forward"])
def test_non_finite_pixel_values_are_refused(tester, method):
    model = LarpVQVAEModel(tester.get_config())
    pixel_values = tester.pixel_values()
    pixel_values[1, 0, 2, 3] = float("nan")
    pixel_values[3, 0, 0, 0] = float("inf")
    pixel_values[3, 0, 0, 1] = float("-inf")
    with pytest.raises(ValueError, match=r"non-finite values \(1 NaN, 2 infinite\) in 2 of 4 images"):
        getattr(model, method)(pixel_values)


def test_the_quantizer_never_folds_non_finite_vectors_into_the_codebook(tester):
    model = trained_model(tester, steps=5)
    quantizer = model.quantizer.train()
    before = {name: buffer.clone() for name, buffer in quantizer.named_buffers()}
    latents = torch.randn(2, quantizer.codebook_dim, 4, 4)
    latents[1, 0, 2, 2] = float("nan")  # e.g. a diverged encoder (learning rate far too high)
    with pytest.raises(FloatingPointError, match="codebook was left as it was"):
        quantizer(latents)
    for name, buffer in quantizer.named_buffers():
        assert torch.equal(buffer, before[name]), name
    quantizer(torch.randn(2, quantizer.codebook_dim, 4, 4))  # finite vectors still train it
    assert not torch.equal(quantizer.embed_sum, before["embed_sum"])

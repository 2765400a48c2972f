"""LarpPipeline: sampling, determinism, classifier-free guidance, the saved folder, the Hub round trip, bad input."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import GPT2Config, GPT2LMHeadModel

from larp_hf import (
    CodebookLogitsProcessor,
    LarpPipeline,
    LarpPipelineOutput,
    LarpPriorCollator,
    LarpVQVAEConfig,
    prior_config,
    set_sampling_defaults,
)
from larp_hf.pipelines import pipeline_larp

from ..conftest import make_tiny_pipeline


K = 32  # the tiny pipeline's codebook


# ---------------------------------------------------------------------------------------------------- sampling


def test_output_types_shapes_and_batches(tiny_pipeline):
    output = tiny_pipeline(num_images=5, batch_size=2, seed=0)
    assert isinstance(output, LarpPipelineOutput)
    assert len(output.images) == 5 and all(isinstance(image, PIL.Image.Image) for image in output.images)
    assert output.images[0].size == (16, 16) and output.images[0].mode == "L"
    assert output.codes.shape == (5, 8, 8) and output.codes.dtype == torch.long
    assert 0 <= output.codes.min() and output.codes.max() < K

    array = tiny_pipeline(num_images=3, seed=0, output_type="np").images
    assert array.shape == (3, 16, 16, 1) and 0 <= array.min() and array.max() <= 1
    images, codes = tiny_pipeline(num_images=3, seed=0, output_type="pt", return_dict=False)
    assert images.shape == (3, 1, 16, 16) and codes.shape == (3, 8, 8)
    # The images are the tokenizer's decoding of the returned codes.
    expected = tiny_pipeline.image_processor.postprocess(tiny_pipeline.vqvae.decode(codes), output_type="pt")
    torch.testing.assert_close(images, expected)


def test_same_seed_same_images_and_the_global_rng_is_left_alone(tiny_pipeline):
    state = torch.random.get_rng_state()
    first = tiny_pipeline(num_images=6, batch_size=4, seed=123, output_type="np")
    assert torch.equal(torch.random.get_rng_state(), state)
    second = tiny_pipeline(num_images=6, batch_size=4, generator=torch.Generator().manual_seed(123), output_type="np")
    other = tiny_pipeline(num_images=6, batch_size=4, seed=124, output_type="np")
    assert torch.equal(first.codes, second.codes)
    np.testing.assert_array_equal(first.images, second.images)
    assert not torch.equal(first.codes, other.codes)


def test_image_i_of_a_seed_is_the_same_whatever_the_batch_size_and_the_number_asked_for(tiny_pipeline):
    reference = tiny_pipeline(num_images=8, batch_size=8, seed=7).codes
    assert torch.equal(tiny_pipeline(num_images=8, batch_size=3, seed=7).codes, reference)
    assert torch.equal(tiny_pipeline(num_images=4, batch_size=1, seed=7).codes, reference[:4])
    assert torch.equal(tiny_pipeline(num_images=3, first_image_index=5, seed=7).codes, reference[5:])
    assert len({tuple(codes.flatten().tolist()) for codes in reference}) == 8  # each image has its own stream
    guided = make_tiny_pipeline(num_classes=3)
    labels = [0, 1, 2, 0, 1]
    together = guided(num_images=5, class_labels=labels, guidance_scale=2.0, batch_size=5, seed=1).codes
    apart = guided(num_images=5, class_labels=labels, guidance_scale=2.0, batch_size=2, seed=1).codes
    assert torch.equal(together, apart)


def test_sampling_uses_the_kv_cache_one_token_per_forward(tiny_pipeline):
    lengths = []
    hook = tiny_pipeline.prior.register_forward_pre_hook(
        lambda module, args, kwargs: lengths.append(kwargs["input_ids"].shape), with_kwargs=True
    )
    try:
        tiny_pipeline(num_images=3, seed=0)
    finally:
        hook.remove()
    assert lengths[0] == (3, 1)  # the BOS prefix
    assert len(lengths) == 64 and all(shape == (3, 1) for shape in lengths[1:])


def test_no_special_token_comes_out_even_when_the_prior_prefers_them():
    # A prior whose every position predicts the special tokens (BOS) with a huge margin.
    pipeline = make_tiny_pipeline(tie_word_embeddings=False)
    prior = pipeline.prior
    with torch.no_grad():
        prior.transformer.ln_f.weight.zero_()
        prior.transformer.ln_f.bias.fill_(1.0)  # constant final hidden state
        prior.lm_head.weight[:K] = 0.01 * torch.randn(K, prior.config.n_embd)
        prior.lm_head.weight[K:] = 1.0  # logit n_embd = 64 for BOS against ~0 for codes
        bos = torch.full((4, 1), K)
        stock = prior.generate(bos, attention_mask=torch.ones_like(bos), do_sample=True, max_new_tokens=64)
    assert (stock[:, 1:] >= K).all()  # stock sampling would emit nothing but BOS
    codes = pipeline(num_images=64, seed=0, temperature=2.0).codes
    assert codes.max() < K and len(codes.unique()) > 1


def test_sampling_defaults_come_from_the_generation_config(tiny_pipeline):
    set_sampling_defaults(tiny_pipeline.prior, temperature=0.5, top_k=3)
    assert tiny_pipeline.sampling_defaults() == {"temperature": 0.5, "top_k": 3, "top_p": 1.0, "guidance_scale": 1.0}
    codes_default = tiny_pipeline(num_images=4, seed=0).codes
    codes_explicit = tiny_pipeline(num_images=4, seed=0, temperature=0.5, top_k=3).codes
    codes_off = tiny_pipeline(num_images=4, seed=0, temperature=1.0, top_k=0).codes
    assert torch.equal(codes_default, codes_explicit)
    assert not torch.equal(codes_default, codes_off)
    # Stock generate reads the same file: it samples one whole grid with these settings.
    bos = torch.full((2, 1), K)
    assert tiny_pipeline.prior.generate(bos, attention_mask=torch.ones_like(bos)).shape == (2, 65)


# ---------------------------------------------------------------------------------------- classifier-free guidance


def test_guidance_mixes_class_and_null_logits_in_one_batched_forward_per_step():
    pipeline = make_tiny_pipeline(num_classes=3)
    prior, larp = pipeline.prior, pipeline.larp
    seen_scores, batch_sizes = [], []

    class RecordingProcessor(pipeline_larp.CodebookLogitsProcessor):
        def __call__(self, input_ids, scores):
            seen_scores.append(scores.clone())  # after guidance, before the code restriction
            return super().__call__(input_ids, scores)

    hook = prior.register_forward_pre_hook(
        lambda module, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    instance_attributes = set(vars(prior))
    original = pipeline_larp.CodebookLogitsProcessor
    pipeline_larp.CodebookLogitsProcessor = RecordingProcessor
    try:
        codes = pipeline(num_images=3, class_labels=[0, 1, 2], guidance_scale=3.0, seed=0).codes.flatten(1)
    finally:
        pipeline_larp.CodebookLogitsProcessor = original
        hook.remove()
    assert batch_sizes == [6] * 64  # class and null rows together, one forward per sampled token
    assert set(vars(prior)) == instance_attributes  # nothing was patched onto the model instance

    class_prefix = torch.tensor([[larp["bos_token_id"], larp["class_token_offset"] + c] for c in range(3)])
    null_prefix = torch.tensor([[larp["bos_token_id"], larp["null_class_token_id"]]] * 3)
    with torch.no_grad():  # independent full-sequence forwards without any cache
        with_class = prior(torch.cat([class_prefix, codes], 1)).logits[:, 1:-1]
        with_null = prior(torch.cat([null_prefix, codes], 1)).logits[:, 1:-1]
    torch.testing.assert_close(torch.stack(seen_scores, 1), with_null + 3.0 * (with_class - with_null), atol=1e-5, rtol=0)


def train_noisy_class_prior(steps=150):
    """Class c's codes come from half c of the codebook 60% of the time: conditional samples are only mildly on class."""
    pipeline = make_tiny_pipeline(num_classes=2, codebook_size=16)
    prior = pipeline.prior.train()
    collator = LarpPriorCollator.from_prior_config(prior.config, class_dropout_prob=0.2, seed=0)
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    for _ in range(steps):
        labels = torch.randint(0, 2, (64,), generator=generator)
        on_class = torch.rand(64, 64, generator=generator) < 0.6
        halves = torch.where(on_class, labels[:, None], 1 - labels[:, None])  # (64, 64): which half each code is from
        codes = halves * 8 + torch.randint(0, 8, (64, 64), generator=generator)
        batch = collator([{"input_ids": c.tolist(), "label": int(l)} for c, l in zip(codes, labels)])
        loss = prior(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    prior.eval()
    return pipeline


def test_guidance_moves_samples_towards_the_requested_class():
    pipeline = train_noisy_class_prior()

    def on_class_fraction(label, guidance_scale):
        codes = pipeline(num_images=64, class_labels=label, guidance_scale=guidance_scale, seed=1).codes
        return ((codes // 8) == label).float().mean().item()

    for label in (0, 1):
        plain, guided = on_class_fraction(label, 1.0), on_class_fraction(label, 3.0)
        assert 0.5 < plain < 0.75, plain  # the model learnt the 60% it saw
        assert guided > plain + 0.15, (plain, guided)
    unconditional = ((pipeline(num_images=64, class_labels="null", seed=1).codes // 8) == 0).float().mean().item()
    assert 0.35 < unconditional < 0.65


# ------------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_images": 0}, "num_images"),
        ({"num_images": 10**9}, "GiB of images in memory"),
        ({"num_images": True}, "num_images"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
        ({"batch_size": 0}, "batch_size"),
        ({"output_type": "jpg"}, "output_type"),
        ({"seed": 0, "generator": torch.Generator()}, "either `seed` or `generator`"),
        ({"seed": -1}, "non-negative integer"),
        ({"seed": 1.5}, "non-negative integer"),
        ({"first_image_index": -1}, "first_image_index"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_k": K + 1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"class_labels": 0}, "unconditional"),
        ({"class_labels": "null"}, "unconditional"),
        ({"guidance_scale": 2.0}, "this prior is unconditional"),
    ],
)
def test_bad_arguments_unconditional(tiny_pipeline, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline(num_images=kwargs.pop("num_images", 2), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"class_labels": 3}, r"\[0, 3\)"),
        ({"class_labels": -1}, r"\[0, 3\)"),
        ({"class_labels": [0, 1, 2]}, "3 entries for 2 images"),
        ({"class_labels": 0.5}, "integers"),
        ({"class_labels": 0, "guidance_scale": 0.5}, "guidance_scale"),
        ({"class_labels": "null", "guidance_scale": 2.0}, "is the null class, the unconditional model"),
        ({"class_labels": "none"}, "None \\(every class in turn\\) or 'null'"),
    ],
)
def test_bad_arguments_class_conditional(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_tiny_pipeline(num_classes=3)(num_images=2, **kwargs)


def test_a_prior_from_another_tokenizer_is_refused(tiny_pipeline):
    other = make_tiny_pipeline(seed=1)  # same shapes, different weights and codebook
    with pytest.raises(ValueError, match=rf"{other.vqvae.tokenizer_hash()[:16]}.*{tiny_pipeline.vqvae.tokenizer_hash()[:16]}"):
        LarpPipeline(tiny_pipeline.vqvae, other.prior)
    bigger_codebook = make_tiny_pipeline(codebook_size=64)
    with pytest.raises(ValueError, match="codebook_size = 64 but the tokenizer has codebook_size = 32"):
        LarpPipeline(tiny_pipeline.vqvae, bigger_codebook.prior)
    finer_config = LarpVQVAEConfig(image_size=32, hidden_channels=[16], codebook_size=K)
    finer_grid = GPT2LMHeadModel(prior_config(finer_config, tokenizer_hash=None))
    with pytest.raises(ValueError, match="grid_size = 16 but the tokenizer has grid_size = 8"):
        LarpPipeline(tiny_pipeline.vqvae, finer_grid)
    with pytest.raises(ValueError, match="no `larp` metadata"):
        LarpPipeline(tiny_pipeline.vqvae, GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2)))


# ------------------------------------------------------------------------------------------- saving and the Hub


def test_save_load_gives_the_same_images_and_the_folder_is_complete(tiny_pipeline, tmp_path):
    tiny_pipeline.card_info = {
        "dataset": "fashion_mnist", "metrics": {"prior validation loss (nats/token)": 3.2}, "evaluations": []
    }
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    names = {path.relative_to(tmp_path / "pipe").as_posix() for path in (tmp_path / "pipe").rglob("*") if path.is_file()}
    assert {
        "larp_pipeline.json", "README.md", "samples.png", "vqvae/config.json", "vqvae/model.safetensors",
        "prior/config.json", "prior/generation_config.json", "prior/model.safetensors",
        "image_processor/preprocessor_config.json",
    } <= names
    assert not (tmp_path / "pipe" / "model_index.json").exists()  # not diffusers' file: DiffusionPipeline cannot load it
    index = json.loads((tmp_path / "pipe" / "larp_pipeline.json").read_text())
    assert index["pipeline_class"] == "LarpPipeline"
    assert index["parts"]["prior"] == {"library": "transformers", "class": "GPT2LMHeadModel"}
    assert PIL.Image.open(tmp_path / "pipe" / "samples.png").size == (8 * 18 + 2, 8 * 18 + 2)

    card = ModelCard.load(tmp_path / "pipe" / "README.md")
    assert card.data.library_name == "larp_hf" and card.data.pipeline_tag == "unconditional-image-generation"
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]
    assert "samples.png" in card.text and "| prior validation loss (nats/token) | 3.2 |" in card.text

    reloaded = LarpPipeline.from_pretrained(tmp_path / "pipe")
    assert reloaded.card_info == tiny_pipeline.card_info
    first = reloaded(num_images=16, seed=5, output_type="np")
    second = LarpPipeline.from_pretrained(tmp_path / "pipe")(num_images=16, seed=5, output_type="np")
    original = tiny_pipeline(num_images=16, seed=5, output_type="np")
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.images, original.images)


def test_a_folder_saved_before_pipelines_took_any_tokenizer_still_loads(tiny_pipeline, tmp_path):
    folder = tmp_path / "pipe"
    tiny_pipeline.save_pretrained(folder, sample_grid=False)
    index = json.loads((folder / "larp_pipeline.json").read_text())
    assert index["parts"]["vqvae"] == {"library": "larp_hf", "class": "LarpVQVAEModel"}  # as written before
    (folder / "larp_manifest.json").unlink()  # as saved before pipeline folders carried a manifest
    index = json.loads((folder / "larp_pipeline.json").read_text())
    del index["manifest"]
    (folder / "larp_pipeline.json").write_text(json.dumps(index))
    # Priors saved before non-square grids record the side alone.
    config = json.loads((folder / "prior" / "config.json").read_text())
    del config["larp"]["grid"]
    (folder / "prior" / "config.json").write_text(json.dumps(config))
    reloaded = LarpPipeline.from_pretrained(folder)
    assert type(reloaded.vqvae).__name__ == "LarpVQVAEModel" and (reloaded.grid, reloaded.grid_size) == ((8, 8), 8)
    assert torch.equal(reloaded(num_images=3, seed=2).codes, tiny_pipeline(num_images=3, seed=2).codes)
    description = reloaded.describe()["vqvae"]
    assert (description["image_size"], description["grid_size"], description["grid"]) == (16, 8, [8, 8])
    assert description["image_shape"] == [16, 16] and description["library"] == "larp_hf"
    assert description["codebook_dim"] == tiny_pipeline.vqvae.config.codebook_dim
    assert "an 8×8 grid of 32 codes from a larp_hf LarpVQVAEModel" in reloaded.model_card().text
    # Its remote code is still copied to the root, where transformers looks for it.
    assert {"modeling_larp_vqvae.py", "configuration_larp_vqvae.py"} <= {p.name for p in folder.glob("*.py")}


def test_loading_refuses_folders_that_are_not_pipelines_or_hold_a_mismatched_pair(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="no larp_pipeline.json.*larp-hf assemble"):
        LarpPipeline.from_pretrained(tmp_path)
    tiny_pipeline.save_pretrained(tmp_path / "pipe", sample_grid=False)
    make_tiny_pipeline(seed=1).prior.save_pretrained(tmp_path / "pipe" / "prior")
    with pytest.raises(ValueError, match="prior/model.safetensors: damaged"):
        LarpPipeline.from_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match="trained on codes of tokenizer"):  # the pairing check stands without it
        LarpPipeline.from_pretrained(tmp_path / "pipe", verify=False)


def test_push_to_hub_uploads_exactly_the_saved_folder(tiny_pipeline, tmp_path, monkeypatch):
    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)

    def upload_folder(self, repo_id, folder_path, **kwargs):
        calls["uploaded"] = sorted(p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*"))
        calls["upload_kwargs"] = kwargs
        return "commit-info"

    monkeypatch.setattr(pipeline_larp.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(pipeline_larp.HfApi, "upload_folder", upload_folder)
    assert tiny_pipeline.push_to_hub("org/name", private=True, sample_grid=False) == "commit-info"
    tiny_pipeline.save_pretrained(tmp_path / "pipe", sample_grid=False)
    saved = sorted(p.relative_to(tmp_path / "pipe").as_posix() for p in (tmp_path / "pipe").rglob("*"))
    assert calls["create_repo"] == ("org/name", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert calls["uploaded"] == saved


def fake_hub_snapshot(cache: "os.PathLike", repo_id: str, folder) -> str:
    """Lay `folder` out as huggingface_hub's cache would after downloading `repo_id` (refs/main -> a snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    shutil.copytree(folder, os.path.join(repo_dir, "snapshots", commit))
    os.makedirs(os.path.join(repo_dir, "refs"))
    with open(os.path.join(repo_dir, "refs", "main"), "w") as file:
        file.write(commit)
    return commit


def test_the_pipeline_and_its_parts_load_by_repo_id_from_the_hub_cache_offline(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe", sample_grid=False)
    fake_hub_snapshot(tmp_path / "hub", "larp-test/tiny-pipeline", tmp_path / "pipe")
    expected = tiny_pipeline(num_images=4, seed=0).codes
    torch.save(expected, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, GPT2LMHeadModel
        import larp_hf
        from larp_hf import LarpPipeline, LarpVQVAEModel

        repo = "larp-test/tiny-pipeline"
        pipe = LarpPipeline.from_pretrained(repo)
        assert torch.equal(pipe(num_images=4, seed=0).codes, torch.load({str(tmp_path / "expected.pt")!r}))
        half = LarpPipeline.from_pretrained(repo, dtype=torch.bfloat16, device="cpu", revision="main", token=False)
        assert half.dtype == torch.bfloat16 and half(num_images=2, seed=0).codes.shape == (2, 8, 8)
        prior = AutoModelForCausalLM.from_pretrained(repo, subfolder="prior")
        vqvae = AutoModel.from_pretrained(repo, subfolder="vqvae")
        assert type(prior) is GPT2LMHeadModel and type(vqvae) is LarpVQVAEModel
        assert vqvae.tokenizer_hash() == prior.config.larp["tokenizer_hash"]
        print("ok")
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


# -------------------------------------------------------------------------------------------- dtypes and devices


def test_from_pretrained_with_a_dtype_and_to_behave_like_diffusers(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe", sample_grid=False)
    expected_hash = tiny_pipeline.vqvae.tokenizer_hash()
    for dtype in (torch.bfloat16, torch.float16):
        pipe = LarpPipeline.from_pretrained(tmp_path / "pipe", dtype=dtype, device="cpu")
        assert pipe.dtype == dtype and pipe.device.type == "cpu"
        assert pipe.vqvae.quantizer.codebook.dtype == torch.float32  # codes do not depend on the dtype
        assert pipe.vqvae.tokenizer_hash() == expected_hash
        output = pipe(num_images=4, seed=0, output_type="pt")
        assert output.images.dtype == torch.float32 and output.codes.max() < K
    pipe = LarpPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.to(torch.bfloat16) is pipe and pipe.dtype == torch.bfloat16
    assert pipe.vqvae.quantizer.codebook.dtype == torch.float32
    pipe.to("cpu", torch.float32)
    assert pipe.dtype == torch.float32
    pipe.to(device="cpu", dtype=torch.bfloat16)
    assert pipe.dtype == torch.bfloat16 and len(pipe(num_images=2, seed=0).images) == 2
    with pytest.raises(ValueError, match="floating-point"):
        pipe.to(torch.int64)
    with pytest.raises(TypeError, match="device and/or a dtype"):
        pipe.to(3.5)


def test_saving_over_a_pipeline_swaps_it_in_whole_and_a_failed_save_changes_nothing(tiny_pipeline, tmp_path, monkeypatch):
    target = tmp_path / "pipe"
    tiny_pipeline.save_pretrained(target)  # with samples.png
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    other = make_tiny_pipeline(seed=3)

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(other.prior, "save_pretrained", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        other.save_pretrained(target, sample_grid=False)
    after = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    assert after == before  # the old pipeline, whole
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]  # no half-written folder left beside it
    monkeypatch.undo()
    other.save_pretrained(target, sample_grid=False)
    assert not (target / "samples.png").exists()  # the old grid does not survive into the new pipeline's folder
    assert LarpPipeline.from_pretrained(target).vqvae.tokenizer_hash() == other.vqvae.tokenizer_hash()
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds no pipeline"):
        other.save_pretrained(tmp_path / "notes", sample_grid=False)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


@pytest.mark.parametrize("part", ["vqvae", "prior"])
def test_a_damaged_weights_file_is_named(tiny_pipeline, tmp_path, part):
    tiny_pipeline.save_pretrained(tmp_path / "pipe", sample_grid=False)
    weights = tmp_path / "pipe" / part / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a download cut in half
    with pytest.raises(ValueError, match=rf"{part}/model.safetensors: damaged \(\d+ bytes where the manifest"):
        LarpPipeline.from_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match=rf"{part}/model.safetensors is damaged or incomplete"):  # unverified too
        LarpPipeline.from_pretrained(tmp_path / "pipe", verify=False)


def test_the_tokenizer_in_a_pipeline_folder_loads_without_larp_hf_through_subfolder(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "pipe", sample_grid=False)
    pixel_values = torch.rand(3, 1, 16, 16) * 2 - 1
    torch.save(pixel_values, tmp_path / "pixels.pt")
    expected = tiny_pipeline.vqvae.encode(pixel_values)
    script = textwrap.dedent(
        f"""
        import sys
        import torch
        from transformers import AutoImageProcessor, AutoModel

        folder = {str(tmp_path / "pipe")!r}
        vqvae = AutoModel.from_pretrained(folder, subfolder="vqvae", trust_remote_code=True).eval()
        processor = AutoImageProcessor.from_pretrained(folder, subfolder="image_processor", trust_remote_code=True)
        assert "larp_hf" not in sys.modules and type(processor).__name__ == "LarpImageProcessor"
        codes = vqvae.encode(torch.load({str(tmp_path / "pixels.pt")!r}))
        print(codes.flatten().tolist())
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected.flatten().tolist()

"""LarpPipeline's sampling loop: the codes stock `generate` draws with the same processors and seeds, on any device."""

import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig, LogitsProcessorList

from larp_hf import CodebookLogitsProcessor, LarpPipeline, prior_config
from larp_hf.generation import PerImageSamplingLogitsProcessor, image_generators
from larp_hf.prior import NEUTRAL_SAMPLING

from ..conftest import make_tiny_pipeline


K = 32  # the tiny pipeline's codebook


def tiny_pipeline(architecture: str, num_classes: int = 0) -> LarpPipeline:
    pipeline = make_tiny_pipeline(num_classes=num_classes)
    if architecture == "llama":
        torch.manual_seed(0)
        config = prior_config(
            pipeline.vqvae.config, preset="tiny", num_classes=num_classes, architecture="llama",
            tokenizer_hash=pipeline.vqvae.tokenizer_hash(),
        )  # fmt: skip
        pipeline = LarpPipeline(pipeline.vqvae, AutoModelForCausalLM.from_config(config))
    return pipeline


def stock_generate_codes(pipeline, seed, first_image_index, class_labels=None, **settings) -> torch.Tensor:
    """The images' codes as stock `generate` draws them: the pipeline's processors and per-image streams, one batch."""
    base_seed = int(torch.randint(2**62, (), generator=torch.Generator().manual_seed(seed)))
    num_images = len(class_labels)
    bos = torch.full((num_images, 1), K)
    input_ids = bos if pipeline.num_classes == 0 else torch.cat([bos, torch.tensor(class_labels)[:, None] + K + 1], 1)
    processors = [
        CodebookLogitsProcessor(K, **settings),
        PerImageSamplingLogitsProcessor(image_generators(base_seed, first_image_index, num_images)),
    ]
    config = GenerationConfig(
        **NEUTRAL_SAMPLING, do_sample=True, max_new_tokens=64, bos_token_id=K, pad_token_id=K, eos_token_id=None
    )
    with torch.no_grad():
        sequences = pipeline.prior.generate(
            input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config,
            logits_processor=LogitsProcessorList(processors),
        )  # fmt: skip
    return sequences[:, input_ids.shape[1] :].view(num_images, 8, 8)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
@pytest.mark.parametrize("num_classes", [0, 3])
def test_the_codes_are_those_stock_generate_draws_with_the_same_processors_and_seeds(architecture, num_classes):
    pipeline = tiny_pipeline(architecture, num_classes)
    settings = {"temperature": 0.9, "top_k": 12, "top_p": 0.95}
    labels = [2, 0, 1, 1, 2, 0] if num_classes else [None] * 6
    request = {"class_labels": labels} if num_classes else {}
    codes = pipeline(num_images=6, batch_size=4, seed=3, first_image_index=10, **request, **settings).codes
    assert torch.equal(codes, stock_generate_codes(pipeline, 3, 10, labels, **settings))


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_sampling_raises_no_deprecation_warning(architecture):
    # transformers deprecates arguments with a FutureWarning a few releases before removing them (`past_key_values`
    # became `cache` in 5.24, to go in 5.40): a warning here is a call that will break.
    pipeline = tiny_pipeline(architecture, num_classes=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Guided batches of 2 and 1 images: 4 rows a step through the prepacked layers, then 2 through the prior's own.
        pipeline(num_images=3, batch_size=2, class_labels=[0, 1, 2], guidance_scale=2.0, seed=0)
    deprecations = [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert not deprecations, [f"{w.filename}:{w.lineno}: {w.message}" for w in deprecations]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_sampling_on_cuda_is_deterministic_per_image_and_close_to_the_cpu(architecture):
    pipeline = tiny_pipeline(architecture, num_classes=3)
    labels = [0, 1, 2, 0, 1]
    cpu = pipeline(num_images=5, class_labels=labels, guidance_scale=2.0, seed=1, output_type="pt")
    pipeline.to("cuda")
    together = pipeline(num_images=5, class_labels=labels, guidance_scale=2.0, seed=1, batch_size=5, output_type="pt")
    apart = pipeline(num_images=5, class_labels=labels, guidance_scale=2.0, seed=1, batch_size=2, output_type="pt")
    assert together.codes.device.type == "cpu" and torch.equal(together.codes, apart.codes)
    assert 0 <= together.codes.min() and together.codes.max() < K
    # Other kernels, other rounding: a draw (and the rest of its image) may differ where two codes tie to float
    # precision, which hardly ever happens.
    assert sum(torch.equal(ours, theirs) for ours, theirs in zip(together.codes, cpu.codes)) >= 4
    unguided = pipeline(num_images=3, class_labels=[0, 1, 2], seed=4, output_type="pt").codes
    assert torch.equal(unguided, pipeline(num_images=3, class_labels=[0, 1, 2], seed=4, batch_size=1).codes)

"""Class-conditional defaults: classes take turns, `"null"` is the unconditional model, the stored guidance scale."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from larp_hf import LarpPipeline, sampling_defaults, set_sampling_defaults
from larp_hf.prior import class_token_ids

from ..conftest import make_tiny_pipeline


K, C = 32, 3  # the tiny pipeline's codebook; classes


def forward_rows(pipeline, **call) -> list[tuple[int, list[int]]]:
    """(rows, prefix of row 0) of every forward of the prior during `pipeline(**call)`: 2B rows when guided."""
    seen = []
    hook = pipeline.prior.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["input_ids"].shape[0], kwargs["input_ids"][0].tolist())),
        with_kwargs=True,
    )
    try:
        pipeline(**call)
    finally:
        hook.remove()
    return seen


def test_left_out_the_classes_take_turns_counted_from_the_first_image_index():
    pipeline = make_tiny_pipeline(num_classes=C)
    whole = pipeline(num_images=7, batch_size=3, seed=2).codes
    in_turn = [index % C for index in range(7)]
    assert torch.equal(whole, pipeline(num_images=7, class_labels=in_turn, seed=2).codes)
    # A request in parts (or processes) gets the classes, and so the images, of the whole request.
    part = pipeline(num_images=3, first_image_index=4, seed=2).codes
    assert torch.equal(part, whole[4:])
    assert torch.equal(part, pipeline(num_images=3, first_image_index=4, class_labels=[1, 2, 0], seed=2).codes)
    tokens = class_token_ids(pipeline.larp, None, num_images=30, first_image_index=5)
    labels = tokens - pipeline.larp["class_token_offset"]
    assert labels[:3].tolist() == [2, 0, 1] and torch.bincount(labels).tolist() == [10, 10, 10]  # as many of each


def test_null_samples_the_unconditional_model_unguided_whatever_the_stored_scale():
    pipeline = make_tiny_pipeline(num_classes=C)
    set_sampling_defaults(pipeline.prior, guidance_scale=3.0)
    null = pipeline.larp["null_class_token_id"]
    rows = forward_rows(pipeline, num_images=2, class_labels="null", seed=0)
    assert rows[0] == (2, [K, null]) and all(count == 2 for count, _ in rows)  # the null prefix, no guidance rows
    assert torch.equal(class_token_ids(pipeline.larp, "null", 4), torch.full((4,), null))
    with pytest.raises(ValueError, match="is the null class, the unconditional model"):
        pipeline(num_images=2, class_labels="null", guidance_scale=2.0)
    with pytest.raises(ValueError, match="None \\(every class in turn\\) or 'null'"):
        pipeline(num_images=2, class_labels="unconditional")


def test_the_stored_guidance_scale_guides_classes_unless_a_scale_is_given():
    pipeline = make_tiny_pipeline(num_classes=C)
    labels = [0, 2, 1, 1]
    unguided = pipeline(num_images=4, class_labels=labels, seed=5).codes
    set_sampling_defaults(pipeline.prior, guidance_scale=2.5)
    assert pipeline.sampling_defaults()["guidance_scale"] == 2.5
    guided = pipeline(num_images=4, class_labels=labels, seed=5).codes
    assert torch.equal(guided, pipeline(num_images=4, class_labels=labels, guidance_scale=2.5, seed=5).codes)
    assert not torch.equal(guided, unguided)
    assert torch.equal(unguided, pipeline(num_images=4, class_labels=labels, guidance_scale=1.0, seed=5).codes)
    # Classes in turn are guided too: class and null rows go through the prior together.
    rows = forward_rows(pipeline, num_images=3, seed=0)
    assert rows[0] == (6, [K, K + 1]) and all(count == 6 for count, _ in rows)


def test_unconditional_priors_sample_as_before_and_refuse_classes_and_guidance():
    pipeline = make_tiny_pipeline()
    assert pipeline.sampling_defaults()["guidance_scale"] == 1.0
    rows = forward_rows(pipeline, num_images=2, seed=0)
    assert rows[0] == (2, [K]) and len(rows) == 64  # BOS alone, no class token, no guidance rows
    assert torch.equal(pipeline(num_images=2, seed=0, guidance_scale=1.0).codes, pipeline(num_images=2, seed=0).codes)
    for bad in ({"class_labels": "null"}, {"class_labels": 0}, {"guidance_scale": 2.0}):
        with pytest.raises(ValueError, match="unconditional"):
            pipeline(num_images=2, **bad)
    with pytest.raises(ValueError, match="this prior is unconditional"):
        set_sampling_defaults(pipeline.prior, guidance_scale=2.0)
    set_sampling_defaults(pipeline.prior, guidance_scale=1.0)  # no guidance is fine


def test_the_scale_is_stored_in_config_json_where_stock_generate_does_not_read_it(tmp_path):
    pipeline = make_tiny_pipeline(num_classes=C)
    prior = pipeline.prior
    set_sampling_defaults(prior, temperature=0.9, guidance_scale=3.0)
    set_sampling_defaults(prior, top_k=5)  # None keeps the stored scale
    assert sampling_defaults(prior) == {"temperature": 0.9, "top_k": 5, "top_p": 1.0, "guidance_scale": 3.0}
    for bad in (0.5, float("nan"), float("inf"), True, "2"):
        with pytest.raises(ValueError, match="guidance_scale"):
            set_sampling_defaults(prior, temperature=0.5, guidance_scale=bad)
    assert sampling_defaults(prior) == {"temperature": 0.9, "top_k": 5, "top_p": 1.0, "guidance_scale": 3.0}

    pipeline.save_pretrained(tmp_path / "pipe", sample_grid=False)
    assert json.loads((tmp_path / "pipe" / "prior" / "config.json").read_text())["larp"]["guidance_scale"] == 3.0
    assert "guidance_scale" not in json.loads((tmp_path / "pipe" / "prior" / "generation_config.json").read_text())
    assert LarpPipeline.from_pretrained(tmp_path / "pipe").sampling_defaults()["guidance_scale"] == 3.0
    # Stock transformers: the stored scale is metadata it carries, not a setting of its own generate.
    stock = AutoModelForCausalLM.from_pretrained(tmp_path / "pipe" / "prior")
    assert stock.generation_config.guidance_scale is None and stock.config.larp["guidance_scale"] == 3.0
    bos = torch.full((2, 1), K)
    with torch.no_grad():
        sequences = stock.generate(bos, attention_mask=torch.ones_like(bos))
    assert sequences.shape == (2, 65) and sequences[:, 1:].max() < K

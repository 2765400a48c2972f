"""with_prepacked_linears: the prior's own forward, oneDNN-packed linear layers, weights shared, kept while valid."""

import gc
import weakref

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from larp_hf import CodebookLogitsProcessor
from larp_hf.generation import image_generators, sample_tokens
from larp_hf.generation import prepacked
from larp_hf.generation.decoding import PREPACK_MIN_ROWS
from larp_hf.generation.prepacked import PrepackedLinear, can_prepack, onednn_linear_available, with_prepacked_linears

from ..conftest import make_tiny_pipeline
from .test_decoding import K, prefixes, tiny_prior


pytestmark = pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no oneDNN linear operators")


def linear_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if type(module) in (nn.Linear, Conv1D)]


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_the_copy_computes_the_priors_logits_with_its_own_weights(architecture):
    prior = tiny_prior(architecture, num_classes=3)
    layers = linear_layers(prior)
    twin = with_prepacked_linears(prior)
    assert twin is not prior and twin.config is prior.config
    assert linear_layers(twin) == [] and sum(isinstance(m, PrepackedLinear) for m in twin.modules()) == len(layers)
    assert linear_layers(prior) == layers  # the prior itself is untouched
    assert {id(p) for p in twin.parameters()} <= {id(p) for p in prior.parameters()}  # shared, not copied
    assert twin.get_input_embeddings().weight is prior.get_input_embeddings().weight
    tokens = torch.randint(0, K, (5, 12))
    with torch.no_grad():
        torch.testing.assert_close(twin(tokens).logits, prior(tokens).logits, rtol=0, atol=1e-5)


def test_the_copy_is_kept_until_weights_modes_or_hooks_change():
    prior = tiny_prior("llama")
    twin = with_prepacked_linears(prior)
    assert with_prepacked_linears(prior) is twin
    tokens = torch.randint(0, K, (3, 6))
    with torch.no_grad():
        prior.model.layers[0].mlp.down_proj.weight.mul_(3.0)  # in place, as an optimizer step does
        changed = with_prepacked_linears(prior)
        assert changed is not twin
        torch.testing.assert_close(changed(tokens).logits, prior(tokens).logits, rtol=0, atol=1e-5)
    prior.train()
    assert with_prepacked_linears(prior).training
    prior.eval()
    again = with_prepacked_linears(prior)
    assert not again.training and with_prepacked_linears(prior) is again
    prior.register_forward_hook(lambda module, args, output: None)
    assert with_prepacked_linears(prior) is not again
    with torch.inference_mode():  # weights made here keep no version counter: each call packs them anew
        loaded = tiny_prior("llama")
    assert with_prepacked_linears(loaded) is not with_prepacked_linears(loaded)
    with torch.inference_mode():
        packed_logits = with_prepacked_linears(loaded)(tokens).logits
        torch.testing.assert_close(packed_logits, loaded(tokens).logits, rtol=0, atol=1e-5)
    # The kept copy does not keep its model alive.
    alive = weakref.ref(prior)
    del prior, twin, changed, again
    gc.collect()
    assert alive() is None


def test_the_availability_check_leaves_the_global_rng_alone():
    onednn_linear_available.cache_clear()
    state = torch.random.get_rng_state()
    assert onednn_linear_available()
    assert torch.equal(torch.random.get_rng_state(), state)  # sampling without generators draws from it


def test_models_it_cannot_pack_come_back_unchanged(monkeypatch):
    prior = tiny_prior("gpt2")
    assert can_prepack(prior)
    assert with_prepacked_linears(prior.to(torch.bfloat16)) is prior
    assert not can_prepack(nn.Sequential(nn.Linear(4, 4)))  # not a transformers model
    prior.float()
    monkeypatch.setattr(prepacked, "onednn_linear_available", lambda: False)
    assert with_prepacked_linears(prior) is prior


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_sampling_with_packed_linears_draws_the_same_tokens(architecture):
    prior = tiny_prior(architecture, num_classes=3)
    calls = []
    prior.lm_head.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    processor = CodebookLogitsProcessor(K, temperature=0.9, top_k=20)

    def sample(rows: int, prepack_linears: bool | None) -> tuple[torch.Tensor, bool]:
        """The tokens, and whether the packed copy did the work (the prior's own lm_head never ran)."""
        calls.clear()
        generators = image_generators(seed=2, first_index=0, count=rows)
        tokens = sample_tokens(prior, prefixes(prior, rows), processor, 64, generators, prepack_linears=prepack_linears)
        assert calls in ([], [rows] * 64)
        return tokens, calls == []

    packed, was_packed = sample(6, prepack_linears=None)
    assert was_packed  # automatic: 6 rows a step are enough
    own, was_packed = sample(6, prepack_linears=False)
    assert not was_packed and torch.equal(own, packed)
    assert not sample(PREPACK_MIN_ROWS - 1, prepack_linears=None)[1]  # automatic: too few rows, the prior's own layers
    assert sample(PREPACK_MIN_ROWS - 1, prepack_linears=True)[1]  # asked for: packed whatever the rows


def test_the_pipeline_switch_picks_the_layers_and_keeps_the_images():
    pipeline = make_tiny_pipeline(num_classes=3)
    calls = []
    pipeline.prior.lm_head.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    request = {"num_images": 4, "class_labels": [0, 1, 2, 0], "guidance_scale": 2.0, "seed": 0, "output_type": "pt"}
    automatic = pipeline(**request).codes
    assert calls == []  # 8 rows a step: the packed copy
    own = pipeline(**request, prepack_linears=False).codes
    assert calls == [8] * 64 and torch.equal(own, automatic)
    calls.clear()
    pipeline(num_images=1, seed=0, prepack_linears=True)
    assert calls == []  # one row a step, packed as asked
    with pytest.raises(ValueError, match="`prepack_linears` must be None, True or False"):
        pipeline(num_images=1, prepack_linears="yes")

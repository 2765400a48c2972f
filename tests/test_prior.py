import json

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LogitsProcessorList

from larp_hf import (
    PRIOR_PRESETS,
    CodebookLogitsProcessor,
    LarpVQVAEConfig,
    LarpVQVAEModel,
    prior_config,
    prior_metadata,
    sampling_defaults,
    set_sampling_defaults,
)
from larp_hf.data.token_dataset import make_metadata
from larp_hf.prior import (
    NEUTRAL_SAMPLING,
    class_token_ids,
    null_prefix_ids,
    prefix_ids,
    prefix_layout,
    vocabulary_layout,
)


VQVAE = LarpVQVAEConfig(in_channels=1, image_size=32, codebook_size=512)


def test_unconditional_layout():
    config = prior_config(VQVAE, preset="tiny", tokenizer_hash=None)
    assert isinstance(config, GPT2Config)
    assert config.vocab_size == 513 and config.bos_token_id == 512 and config.eos_token_id is None
    assert config.n_positions == 64 + 1
    larp = prior_metadata(config)
    assert (larp["prefix_length"], larp["class_token_offset"], larp["null_class_token_id"]) == (1, None, None)
    assert (larp["codebook_size"], larp["grid_size"]) == (512, 8)


def test_class_conditional_layout():
    config = prior_config(VQVAE, preset="tiny", num_classes=10, tokenizer_hash=None)
    larp = prior_metadata(config)
    assert config.vocab_size == 512 + 1 + 10 + 1
    assert larp["class_token_offset"] == 513 and larp["null_class_token_id"] == 523
    assert config.n_positions == 64 + 2 and larp["prefix_length"] == 2


@pytest.mark.parametrize("num_classes", [0, 1, 10])
def test_prior_configs_and_token_datasets_share_one_vocabulary_layout(num_classes):
    layout = vocabulary_layout(codebook_size=512, grid_size=8, num_classes=num_classes)
    config = prior_config(VQVAE, preset="tiny", num_classes=num_classes, tokenizer_hash="abc")
    larp = prior_metadata(config)
    assert config.vocab_size == layout.pop("vocab_size")
    assert {key: larp[key] for key in layout} == layout
    assert set(larp) - set(layout) == {"tokenizer_hash", "preset", "architecture"}
    recorded = make_metadata("abc", grid_size=8, codebook_size=512, flip_augment=False)["vocabulary"]
    assert recorded == {"codes": [0, 512], "bos_token_id": 512, "class_token_offset": 513}
    if num_classes:  # a class-conditional prior gives the token dataset's labels the ids it records
        assert recorded["bos_token_id"] == larp["bos_token_id"]
        assert recorded["class_token_offset"] == larp["class_token_offset"]


def test_prefixes_follow_the_layout_for_conditional_and_unconditional_priors():
    unconditional = prior_metadata(prior_config(VQVAE, preset="tiny", tokenizer_hash=None))
    assert prefix_ids(unconditional, 3).tolist() == [[512]] * 3
    conditional = prior_metadata(prior_config(VQVAE, preset="tiny", num_classes=10, tokenizer_hash=None))
    tokens = class_token_ids(conditional, [0, 9, 4], 3)
    prefix = prefix_ids(conditional, 3, tokens)
    assert prefix.dtype == torch.long and prefix.shape == (3, conditional["prefix_length"])
    assert prefix.tolist() == [[512, 513], [512, 522], [512, 517]]
    with pytest.raises(ValueError, match="needs `class_tokens`"):
        prefix_ids(conditional, 3)
    with pytest.raises(ValueError, match="leave `class_tokens` out"):
        prefix_ids(unconditional, 3, tokens)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        prefix_ids(conditional, 2, tokens)


def test_the_null_prefix_puts_the_null_class_in_the_layouts_class_slot():
    larp = prior_metadata(prior_config(VQVAE, preset="tiny", num_classes=10, tokenizer_hash=None))
    null = null_prefix_ids(larp, 4)
    assert null.shape == (4, larp["prefix_length"])
    assert torch.equal(null, prefix_ids(larp, 4, class_token_ids(larp, "null", 4)))  # the class slot, whichever it is
    assert torch.all(null[:, 0] == larp["bos_token_id"]) and torch.all(null[:, -1] == larp["null_class_token_id"])
    with pytest.raises(ValueError, match="no null class"):
        null_prefix_ids(prior_metadata(prior_config(VQVAE, preset="tiny", tokenizer_hash=None)), 4)
    # A prefix layout of given ids (as the collator has) builds the same prefixes.
    given = prefix_layout(larp["bos_token_id"], larp["class_token_offset"], larp["null_class_token_id"])
    assert given["prefix_length"] == 2 and torch.equal(null_prefix_ids(given, 4), null)
    with pytest.raises(ValueError, match="go together"):
        prefix_layout(512, class_token_offset=513)


def test_overrides_reach_the_gpt2_config():
    config = prior_config(VQVAE, preset="small", attn_pdrop=0.2, n_layer=6, tokenizer_hash="abc")
    assert (config.attn_pdrop, config.n_layer, config.n_embd) == (0.2, 6, 256)
    assert prior_metadata(config)["tokenizer_hash"] == "abc"


def num_parameters(config) -> int:
    with torch.device("meta"):
        return GPT2LMHeadModel(config).num_parameters()


def test_presets_span_tests_to_100m_parameters():
    counts = {name: num_parameters(prior_config(VQVAE, preset=name, tokenizer_hash=None)) for name in PRIOR_PRESETS}
    assert counts["tiny"] < 200_000
    assert 3.0e6 < counts["small"] < 3.6e6  # the baseline's 4 layers, width 256, 8 heads
    assert max(counts.values()) >= 100e6
    assert list(counts.values()) == sorted(counts.values())


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Unknown prior preset 'huge'; choose one of"):
        prior_config(VQVAE, preset="huge", tokenizer_hash=None)
    with pytest.raises(ValueError, match="num_classes"):
        prior_config(VQVAE, num_classes=-1, tokenizer_hash=None)
    with pytest.raises(ValueError, match="divisible"):
        prior_config(VQVAE, preset="tiny", n_embd=65, tokenizer_hash=None)
    with pytest.raises(ValueError, match="not a larp_hf prior"):
        prior_metadata(GPT2Config())


STOCK_LOADER = """
import json, sys
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
assert not any(name.startswith("larp_hf") for name in sys.modules), "larp_hf was imported"
input_ids = torch.tensor(json.loads(sys.argv[2]))
with torch.no_grad():
    logits = model(input_ids).logits
print(json.dumps({"larp": model.config.larp, "logits": logits[0, -1].tolist(), "type": type(model).__name__}))
"""


def test_saved_prior_loads_with_stock_transformers_in_a_process_without_larp_hf(tmp_path, python_without_larp_hf):
    torch.manual_seed(0)
    vqvae = LarpVQVAEModel(LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[8, 8], codebook_size=16))
    config = prior_config(vqvae.config, preset="tiny", num_classes=3, tokenizer_hash=vqvae.tokenizer_hash())
    prior = GPT2LMHeadModel(config).eval()
    prior.save_pretrained(tmp_path)
    input_ids = [[16, 18] + list(range(16))]  # BOS, class 1, then 16 codes
    with torch.no_grad():
        expected = prior(torch.tensor(input_ids)).logits[0, -1]
    result = python_without_larp_hf(STOCK_LOADER, tmp_path, json.dumps(input_ids), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["type"] == "GPT2LMHeadModel"
    assert loaded["larp"] == prior_metadata(config)
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, rtol=1e-5, atol=1e-5)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), GPT2LMHeadModel)


# ------------------------------------------------------------------------------------------ the sampling policy


def prior_that_prefers_special_tokens(num_classes=3, codebook_size=16):
    """An untrained prior whose raw scores put nearly all mass on the special tokens (BOS, classes, null)."""
    torch.manual_seed(0)
    vqvae_config = LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[8], codebook_size=codebook_size)
    prior = GPT2LMHeadModel(
        prior_config(
            vqvae_config, preset="tiny", num_classes=num_classes, tie_word_embeddings=False, tokenizer_hash=None
        )
    ).eval()
    with torch.no_grad():
        prior.transformer.ln_f.weight.zero_()
        prior.transformer.ln_f.bias.fill_(1.0)  # constant final hidden state
        prior.lm_head.weight[:codebook_size] = 0.01 * torch.randn(codebook_size, prior.config.n_embd)
        prior.lm_head.weight[codebook_size:] = 1.0  # logit 64 for every special token against ~0 for codes
    return prior


def test_set_sampling_defaults_stores_the_whole_policy_and_keeps_what_is_not_given():
    prior = prior_that_prefers_special_tokens()
    set_sampling_defaults(prior)
    config = prior.generation_config
    assert config.do_sample and config.max_new_tokens == config.min_new_tokens == 64
    assert config.suppress_tokens == list(range(16, 16 + 1 + 3 + 1))  # BOS, 3 classes, null
    assert sampling_defaults(prior) == {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "guidance_scale": 1.0}
    set_sampling_defaults(prior, temperature=0.8, top_k=5, top_p=0.9)
    set_sampling_defaults(prior, top_k=7)  # e.g. `larp-hf sweep --write-generation-config` over top-k only
    assert sampling_defaults(prior) == {"temperature": 0.8, "top_k": 7, "top_p": 0.9, "guidance_scale": 1.0}
    for bad in ({"top_k": -1}, {"top_p": 0.0}, {"temperature": float("nan")}):
        with pytest.raises(ValueError):
            set_sampling_defaults(prior, **bad)
    # Nothing half-written.
    assert sampling_defaults(prior) == {"temperature": 0.8, "top_k": 7, "top_p": 0.9, "guidance_scale": 1.0}


STOCK_GENERATE = """
import json, sys
import torch
from transformers import AutoModelForCausalLM

prior = AutoModelForCausalLM.from_pretrained(sys.argv[1])
bos = torch.full((int(sys.argv[2]), 1), prior.generation_config.bos_token_id)
torch.manual_seed(0)
with torch.no_grad():
    sequences = prior.generate(bos)  # nothing but the saved generation_config.json
assert "larp_hf" not in sys.modules
print(json.dumps({"shape": list(sequences.shape), "largest_id": int(sequences[:, 1:].max()),
                  "distinct_codes": int(sequences[:, 1:].unique().numel())}))
"""


def test_stock_generate_in_a_process_without_larp_hf_samples_only_code_ids(tmp_path, python_without_larp_hf):
    prior = prior_that_prefers_special_tokens()
    bos = torch.full((4, 1), 16)
    with torch.no_grad():  # without the saved policy, stock sampling emits nothing but special tokens
        raw = prior.generate(bos, attention_mask=torch.ones_like(bos), do_sample=True, max_new_tokens=64)
    assert (raw[:, 1:] >= 16).all()
    set_sampling_defaults(prior, temperature=1.5)
    prior.save_pretrained(tmp_path)
    result = python_without_larp_hf(STOCK_GENERATE, tmp_path, 256)
    assert result.returncode == 0, result.stderr[-2000:]
    sampled = json.loads(result.stdout.strip().splitlines()[-1])
    assert sampled["shape"] == [256, 65]  # BOS + one whole 8x8 grid each, no more, no less
    assert sampled["largest_id"] < 16  # 0 non-code ids in 256 x 64 sampled tokens
    assert sampled["distinct_codes"] > 1


def test_the_processor_and_the_stored_defaults_apply_each_setting_once():
    prior = prior_that_prefers_special_tokens(num_classes=0)
    with torch.no_grad():
        prior.lm_head.weight[:16] = torch.randn(16, prior.config.n_embd)  # codes with distinct scores
        raw = prior(torch.full((1, 1), 16)).logits[0, -1, :16].double()
    set_sampling_defaults(prior, temperature=0.5, top_k=5)
    once = torch.full((16,), float("-inf"), dtype=torch.float64)
    kept = raw.topk(5).indices
    once[kept] = raw[kept] / 0.5
    expected = once.softmax(-1)

    def first_step_distribution(**kwargs):
        bos = torch.full((1, 1), 16)
        with torch.no_grad():
            out = prior.generate(bos, max_new_tokens=1, min_new_tokens=1, output_scores=True,
                                 return_dict_in_generate=True, **kwargs)  # fmt: skip
        return out.scores[0][0].double().softmax(-1)

    stock = first_step_distribution()  # the stored policy alone
    with_processor = first_step_distribution(logits_processor=LogitsProcessorList([CodebookLogitsProcessor(16)]))
    # The pipeline's way: the processor carries the settings, generate's own warpers are off.
    defaults = sampling_defaults(prior)
    policy = {name: defaults[name] for name in NEUTRAL_SAMPLING}  # temperature, top-k, top-p; not the guidance scale
    processor_only = first_step_distribution(
        logits_processor=LogitsProcessorList([CodebookLogitsProcessor(16, **policy)]),
        **NEUTRAL_SAMPLING,
    )
    for distribution in (stock, with_processor, processor_only):
        torch.testing.assert_close(distribution[:16], expected, atol=1e-5, rtol=0)
        assert distribution[16:].sum() == 0


# ------------------------------------------------------------------------------------------ the Llama-style prior


def test_llama_prior_has_the_same_layout_metadata_and_parameter_budget():
    for preset in ("tiny", "small"):
        gpt2 = prior_config(VQVAE, preset=preset, num_classes=10, tokenizer_hash=None)
        llama = prior_config(VQVAE, preset=preset, num_classes=10, architecture="llama", tokenizer_hash=None)
        assert llama.model_type == "llama" and llama.hidden_act == "silu"  # SwiGLU, RMSNorm, RoPE: stock Llama
        assert (llama.vocab_size, llama.max_position_embeddings, llama.bos_token_id) == (
            gpt2.vocab_size, gpt2.n_positions, gpt2.bos_token_id
        )
        assert {k: v for k, v in llama.larp.items() if k != "architecture"} == {
            k: v for k, v in gpt2.larp.items() if k != "architecture"
        }
        sizes = [AutoModelForCausalLM.from_config(c).num_parameters() for c in (gpt2, llama)]
        assert abs(sizes[1] - sizes[0]) / sizes[0] < 0.03, sizes
    assert prior_config(VQVAE, architecture="llama", num_hidden_layers=3, tokenizer_hash=None).num_hidden_layers == 3
    with pytest.raises(ValueError, match="architecture"):
        prior_config(VQVAE, architecture="mamba", tokenizer_hash=None)


def test_llama_prior_trains_with_attention_dropout_and_samples_through_the_pipeline(tmp_path, python_without_larp_hf):
    from larp_hf import LarpPipeline, LarpPriorCollator

    torch.manual_seed(0)
    vqvae = LarpVQVAEModel(LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[16], codebook_size=16))
    config = prior_config(vqvae.config, preset="tiny", num_classes=2, tokenizer_hash=vqvae.tokenizer_hash(),
                          architecture="llama")  # fmt: skip
    prior = AutoModelForCausalLM.from_config(config)
    collator = LarpPriorCollator.from_prior_config(config, attention_dropout=0.3, class_dropout_prob=0.2, seed=0)
    batch = collator([{"input_ids": list(range(16)) * 4, "label": i % 2} for i in range(4)])
    assert batch["attention_mask"].shape == (4, 1, 66, 66)
    loss = prior(**batch).loss
    loss.backward()
    with torch.no_grad():  # the mask reaches the attention: dropping keys changes the loss
        plain = prior(input_ids=batch["input_ids"], labels=batch["labels"]).loss
    assert loss.item() != pytest.approx(plain.item(), abs=1e-6)

    pipe = LarpPipeline(vqvae, prior)
    codes = pipe(num_images=4, class_labels=[0, 1, 0, 1], guidance_scale=2.0, seed=0).codes
    assert codes.shape == (4, 8, 8) and codes.max() < 16
    assert torch.equal(pipe(num_images=2, seed=3).codes, pipe(num_images=4, batch_size=1, seed=3).codes[:2])
    pipe.save_pretrained(tmp_path / "pipe", sample_grid=False)
    reloaded = LarpPipeline.from_pretrained(tmp_path / "pipe")
    assert type(reloaded.prior).__name__ == "LlamaForCausalLM"
    assert torch.equal(reloaded(num_images=2, seed=3).codes, pipe(num_images=2, seed=3).codes)
    result = python_without_larp_hf(STOCK_GENERATE, tmp_path / "pipe" / "prior", 64)
    assert result.returncode == 0, result.stderr[-2000:]
    sampled = json.loads(result.stdout.strip().splitlines()[-1])
    assert sampled["shape"] == [64, 65] and sampled["largest_id"] < 16  # stock Llama generate: code ids only

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from larp_hf import PRIOR_PRESETS, LarpVQVAEConfig, LarpVQVAEModel, prior_config, prior_metadata


VQVAE = LarpVQVAEConfig(in_channels=1, image_size=32, codebook_size=512)


def test_unconditional_layout():
    config = prior_config(VQVAE, preset="tiny")
    assert isinstance(config, GPT2Config)
    assert config.vocab_size == 513 and config.bos_token_id == 512 and config.eos_token_id is None
    assert config.n_positions == 64 + 1
    larp = prior_metadata(config)
    assert (larp["prefix_length"], larp["class_token_offset"], larp["null_class_token_id"]) == (1, None, None)
    assert (larp["codebook_size"], larp["grid_size"]) == (512, 8)


def test_class_conditional_layout():
    config = prior_config(VQVAE, preset="tiny", num_classes=10)
    larp = prior_metadata(config)
    assert config.vocab_size == 512 + 1 + 10 + 1
    assert larp["class_token_offset"] == 513 and larp["null_class_token_id"] == 523
    assert config.n_positions == 64 + 2 and larp["prefix_length"] == 2


def test_overrides_reach_the_gpt2_config():
    config = prior_config(VQVAE, preset="small", attn_pdrop=0.2, n_layer=6, tokenizer_hash="abc")
    assert (config.attn_pdrop, config.n_layer, config.n_embd) == (0.2, 6, 256)
    assert prior_metadata(config)["tokenizer_hash"] == "abc"


def num_parameters(config) -> int:
    with torch.device("meta"):
        return GPT2LMHeadModel(config).num_parameters()


def test_presets_span_tests_to_100m_parameters():
    counts = {name: num_parameters(prior_config(VQVAE, preset=name)) for name in PRIOR_PRESETS}
    assert counts["tiny"] < 200_000
    assert 3.0e6 < counts["small"] < 3.6e6  # the baseline's 4 layers, width 256, 8 heads
    assert max(counts.values()) >= 100e6
    assert list(counts.values()) == sorted(counts.values())


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Unknown prior preset 'huge'; choose one of"):
        prior_config(VQVAE, preset="huge")
    with pytest.raises(ValueError, match="num_classes"):
        prior_config(VQVAE, num_classes=-1)
    with pytest.raises(ValueError, match="divisible"):
        prior_config(VQVAE, preset="tiny", n_embd=65)
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


def test_saved_prior_loads_with_stock_transformers_in_a_process_without_larp_hf(tmp_path):
    torch.manual_seed(0)
    vqvae = LarpVQVAEModel(LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[8, 8], codebook_size=16))
    config = prior_config(vqvae.config, preset="tiny", num_classes=3, tokenizer_hash=vqvae.tokenizer_hash())
    prior = GPT2LMHeadModel(config).eval()
    prior.save_pretrained(tmp_path)
    input_ids = [[16, 18] + list(range(16))]  # BOS, class 1, then 16 codes
    with torch.no_grad():
        expected = prior(torch.tensor(input_ids)).logits[0, -1]
    result = subprocess.run(
        [sys.executable, "-c", STOCK_LOADER, str(tmp_path), json.dumps(input_ids)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["type"] == "GPT2LMHeadModel"
    assert loaded["larp"] == prior_metadata(config)
    torch.testing.assert_close(torch.tensor(loaded["logits"]), expected, rtol=1e-5, atol=1e-5)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), GPT2LMHeadModel)

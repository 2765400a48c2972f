import sys

import pytest
import torch
import yaml

from larp_hf import LarpVQVAEConfig, LarpVQVAEModel

from .forked_runs import ROOT


def save_tiny_vqvae(path, seed=0):
    torch.manual_seed(seed)
    config = LarpVQVAEConfig(
        in_channels=1, image_size=16, hidden_channels=[8, 8], stem_channels=8, num_res_blocks=1,
        res_hidden_channels=8, codebook_size=16, codebook_dim=4, codebook_init="random",
    )  # fmt: skip
    LarpVQVAEModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tokens(tmp_path_factory, tiny_image_dataset_dir):
    """
    A tiny tokenizer and the token dataset `python recipes/encode_dataset.py` makes of the tiny image dataset with it,
    in a fresh interpreter as a user runs it; the prior's tests train on it.
    """
    from .test_train_vqvae import run

    folder = tmp_path_factory.mktemp("prior")
    vqvae = save_tiny_vqvae(folder / "vqvae")
    output = folder / "tokens"
    encode = ROOT / "recipes" / "encode_dataset.py"
    run([sys.executable, str(encode), "--vqvae", str(vqvae), "--dataset", tiny_image_dataset_dir, "--output_dir", str(output)])
    return vqvae, output


@pytest.fixture(scope="session")
def prior_config_file(tmp_path_factory, tokens):
    """A config for the tiny prior over `tokens`, validated and checkpointed every step, with attention dropout."""
    vqvae, token_dataset = tokens
    config = {
        "vqvae": str(vqvae),
        "token_dataset": str(token_dataset),
        "preset": "tiny",
        "train_batch_size": 8,
        "eval_batch_size": 16,
        "lr_warmup_steps": 0,
        "validation_steps": 1,
        "checkpointing_steps": 1,
        "attention_dropout": 0.2,
    }
    path = tmp_path_factory.mktemp("prior-config") / "prior.yaml"
    path.write_text(yaml.safe_dump(config))
    return path

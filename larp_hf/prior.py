"""The prior is a stock `GPT2LMHeadModel`: this module builds its config from a tokenizer's and names its tokens.

Vocabulary layout (codes first, so a sampled code token *is* its codebook index):

    0 … K-1            codebook indices (K = codebook_size)
    K                  BOS, the first token of every sequence
    K+1 … K+C          one token per class (class-conditional priors only, C = num_classes)
    K+C+1              the null class, used for classifier-free guidance (class-conditional priors only)

A sequence is `[BOS, (class token)] + h·w codes in raster order`; `n_positions` is exactly that length. The layout and
the tokenizer the prior was trained on are stored under `larp` in the prior's `config.json`, which stock
`transformers` loads and keeps (no `trust_remote_code`).
"""

import copy

from transformers import GPT2Config

from .models.vqvae.configuration_larp_vqvae import LarpVQVAEConfig


# (layers, width, heads). "small" is the 3.3M-parameter GPT-2 of the Fashion-MNIST baseline; "large" is ~200M.
PRIOR_PRESETS = {
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2},
    "small": {"n_layer": 4, "n_embd": 256, "n_head": 8},
    "medium": {"n_layer": 8, "n_embd": 512, "n_head": 8},
    "base": {"n_layer": 12, "n_embd": 768, "n_head": 12},
    "large": {"n_layer": 16, "n_embd": 1024, "n_head": 16},
}


def prior_config(
    vqvae_config: LarpVQVAEConfig,
    preset: str = "small",
    num_classes: int = 0,
    tokenizer_hash: str | None = None,
    **overrides,
) -> GPT2Config:
    """
    The `GPT2Config` of a prior over `vqvae_config`'s code grids.

    Args:
        vqvae_config: the tokenizer's config (codebook size and grid).
        preset: one of `PRIOR_PRESETS` (`tiny`, `small`, `medium`, `base`, `large`).
        num_classes: 0 for an unconditional prior; otherwise one class token per class plus a null token.
        tokenizer_hash: `LarpVQVAEModel.tokenizer_hash()` of the tokenizer, so mismatched pairs can be refused.
        **overrides: any `GPT2Config` field (e.g. `attn_pdrop=0.1`, `n_layer=6`).

    Example:

    ```python
    >>> from larp_hf import LarpVQVAEConfig, prior_config
    >>> config = prior_config(LarpVQVAEConfig(codebook_size=512), preset="small", num_classes=10)
    >>> config.vocab_size, config.n_positions, config.bos_token_id, config.larp["null_class_token_id"]
    (524, 66, 512, 523)
    ```
    """
    if preset not in PRIOR_PRESETS:
        raise ValueError(f"Unknown prior preset {preset!r}; choose one of {sorted(PRIOR_PRESETS)}.")
    if num_classes < 0:
        raise ValueError(f"`num_classes` must be >= 0 (0 = unconditional), got {num_classes}.")
    codebook_size, grid_size = vqvae_config.codebook_size, vqvae_config.grid_size
    bos_token_id = codebook_size
    conditional = num_classes > 0
    prefix_length = 2 if conditional else 1
    larp = {
        "codebook_size": codebook_size,
        "grid_size": grid_size,
        "num_classes": num_classes,
        "bos_token_id": bos_token_id,
        "class_token_offset": bos_token_id + 1 if conditional else None,
        "null_class_token_id": bos_token_id + num_classes + 1 if conditional else None,
        "prefix_length": prefix_length,
        "tokenizer_hash": tokenizer_hash,
        "preset": preset,
    }
    kwargs = {
        **PRIOR_PRESETS[preset],
        "vocab_size": codebook_size + 1 + (num_classes + 1 if conditional else 0),
        "n_positions": grid_size * grid_size + prefix_length,
        "bos_token_id": bos_token_id,
        # Sequences have a fixed length: generation stops by length, never on an end token.
        "eos_token_id": None,
        "pad_token_id": None,
        "larp": larp,
    }
    kwargs.update(overrides)
    config = GPT2Config(**kwargs)
    if config.n_embd % config.n_head != 0:
        raise ValueError(f"`n_embd`={config.n_embd} must be divisible by `n_head`={config.n_head}.")
    return config


def prior_metadata(config) -> dict:
    """The `larp` entry of a prior's config, with a clear error for a GPT-2 that is not a larp_hf prior."""
    larp = getattr(config, "larp", None)
    if not isinstance(larp, dict) or "codebook_size" not in larp:
        raise ValueError(
            "This GPT-2 config has no `larp` metadata, so it is not a larp_hf prior. Build priors with "
            "larp_hf.prior_config(vqvae.config, ...)."
        )
    return copy.deepcopy(larp)


__all__ = ["PRIOR_PRESETS", "prior_config", "prior_metadata"]

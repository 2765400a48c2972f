"""Batches of token-dataset examples for the prior: flip choice, prefix tokens, labels and attention dropout."""

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from ..prior import prefix_ids, prefix_layout, prior_metadata


@dataclass
class LarpPriorCollator:
    """
    Turns token-dataset examples into `GPT2LMHeadModel` inputs.

    - `input_ids`: `[BOS, (class token)] + codes`, (B, T) int64 with T = prefix_length + h·w; the prefix is
      `larp_hf.prior.prefix_ids`'.
    - `labels`: `input_ids` with the prefix set to -100 (the model never predicts BOS or the class; GPT-2 shifts
      labels itself).
    - Training only (`train=True`): each example uses its flipped codes with probability `flip_prob` (when the
      dataset has `input_ids_flipped`); the class token is replaced by the null token with probability
      `class_dropout_prob` (for classifier-free guidance); and with `attention_dropout > 0` every query loses each
      key it may attend to with that probability, except its own position and the prefix. The result is a boolean
      `attention_mask` of shape (B, 1, T, T), True where attention is allowed, which transformers passes unchanged to
      the SDPA attention (the default).

    The random choices of a batch come from a generator seeded by `seed` and the batch's codes, not from the global
    RNG: a batch gets the same augmentation however it is loaded (worker processes, accelerate's prefetch, a resumed
    run).

    Args:
        bos_token_id: the prior's BOS id (`config.larp["bos_token_id"]`).
        class_token_offset: id of class 0's token; `None` for an unconditional prior.
        null_class_token_id: id of the null class token; `None` for an unconditional prior.
        train: apply flips, class dropout and attention dropout.
        flip_prob, class_dropout_prob, attention_dropout: the probabilities above.
        seed: base seed of the augmentation.
    """

    bos_token_id: int
    class_token_offset: int | None = None
    null_class_token_id: int | None = None
    train: bool = True
    flip_prob: float = 0.5
    class_dropout_prob: float = 0.1
    attention_dropout: float = 0.0
    seed: int = 0

    def __post_init__(self):
        for name in ("flip_prob", "class_dropout_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` must be in [0, 1], got {getattr(self, name)}.")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"`attention_dropout` must be in [0, 1), got {self.attention_dropout}.")
        prefix_layout(self.bos_token_id, self.class_token_offset, self.null_class_token_id)  # validates the ids

    @classmethod
    def from_prior_config(cls, config, **kwargs) -> "LarpPriorCollator":
        """The collator for a prior built by `larp_hf.prior_config`."""
        larp = prior_metadata(config)
        return cls(
            bos_token_id=larp["bos_token_id"],
            class_token_offset=larp["class_token_offset"],
            null_class_token_id=larp["null_class_token_id"],
            **kwargs,
        )

    @property
    def conditional(self) -> bool:
        return self.class_token_offset is not None

    @property
    def layout(self) -> dict:
        """The prefix part of the prior's vocabulary layout (`larp_hf.prior.prefix_layout`) these ids make."""
        return prefix_layout(self.bos_token_id, self.class_token_offset, self.null_class_token_id)

    @property
    def prefix_length(self) -> int:
        return self.layout["prefix_length"]

    def _generator(self, codes: torch.Tensor) -> torch.Generator:
        digest = hashlib.sha256(codes.numpy().tobytes()).digest()
        return torch.Generator().manual_seed((self.seed * 1_000_003 + int.from_bytes(digest[:6], "little")) % 2**63)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        codes = torch.as_tensor(np.array([example["input_ids"] for example in examples]), dtype=torch.long)  # (B, N)
        batch_size = len(examples)
        generator = self._generator(codes) if self.train else None
        if self.train and self.flip_prob > 0 and "input_ids_flipped" in examples[0]:
            flipped = torch.as_tensor(np.array([example["input_ids_flipped"] for example in examples]), dtype=torch.long)
            use_flipped = torch.rand(batch_size, generator=generator) < self.flip_prob
            codes = torch.where(use_flipped[:, None], flipped, codes)

        class_tokens = None
        if self.conditional:
            if "label" not in examples[0]:
                raise ValueError("A class-conditional prior needs a `label` column in the token dataset.")
            labels = torch.tensor([example["label"] for example in examples], dtype=torch.long)
            class_tokens = self.class_token_offset + labels
            if self.train and self.class_dropout_prob > 0:
                dropped = torch.rand(batch_size, generator=generator) < self.class_dropout_prob
                class_tokens = torch.where(dropped, self.null_class_token_id, class_tokens)
        input_ids = torch.cat([prefix_ids(self.layout, batch_size, class_tokens), codes], dim=1)  # (B, T)
        targets = input_ids.clone()
        targets[:, : self.prefix_length] = -100
        batch = {"input_ids": input_ids, "labels": targets}
        if self.train and self.attention_dropout > 0:
            batch["attention_mask"] = self.attention_dropout_mask(batch_size, input_ids.shape[1], generator)
        return batch

    def attention_dropout_mask(self, batch_size: int, length: int, generator: torch.Generator | None = None):
        """(B, 1, T, T) bool: causal, minus random keys; the diagonal and the prefix columns are always kept."""
        causal = torch.ones(length, length, dtype=torch.bool).tril()  # (T, T): query i sees keys j <= i
        dropped = torch.rand(batch_size, 1, length, length, generator=generator) < self.attention_dropout
        protected = torch.eye(length, dtype=torch.bool)
        protected[:, : self.prefix_length] = True
        return causal & ~(dropped & ~protected)


__all__ = ["LarpPriorCollator"]

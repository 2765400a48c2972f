import pytest
import torch
from transformers import GPT2LMHeadModel

from larp_hf import LarpPriorCollator, LarpVQVAEConfig, prior_config
from larp_hf.prior import class_token_ids, null_prefix_ids, prefix_ids


CODES = 16  # 4×4 grid


def examples(batch_size=4, seed=0, with_labels=True):
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(batch_size):
        codes = torch.randint(0, 8, (CODES,), generator=generator)
        row = {"input_ids": codes.tolist(), "input_ids_flipped": (codes + 100).tolist()}
        if with_labels:
            row["label"] = i % 3
        rows.append(row)
    return rows


def test_unconditional_inputs_and_labels():
    batch = LarpPriorCollator(bos_token_id=8, train=False)(examples())
    assert batch["input_ids"].shape == (4, 1 + CODES) and batch["input_ids"].dtype == torch.long
    assert torch.all(batch["input_ids"][:, 0] == 8)
    assert torch.all(batch["labels"][:, 0] == -100)
    assert torch.equal(batch["labels"][:, 1:], batch["input_ids"][:, 1:])
    assert "attention_mask" not in batch  # evaluation: plain causal attention, no augmentation
    assert batch["input_ids"][:, 1:].max() < 8  # never the flipped codes in evaluation


def test_class_tokens_and_class_dropout():
    collator = LarpPriorCollator(bos_token_id=8, class_token_offset=9, null_class_token_id=12, train=False)
    batch = collator(examples())
    assert batch["input_ids"][:, 1].tolist() == [9, 10, 11, 9]
    assert torch.all(batch["labels"][:, :2] == -100)
    always_null = LarpPriorCollator(8, 9, 12, train=True, class_dropout_prob=1.0, flip_prob=0.0)(examples())
    assert torch.all(always_null["input_ids"][:, 1] == 12)
    with pytest.raises(ValueError, match="needs a `label` column"):
        collator(examples(with_labels=False))


@pytest.mark.parametrize("num_classes", [0, 3])
def test_the_prefix_is_the_priors_and_dropped_classes_are_its_null_prefix(num_classes):
    config = prior_config(LarpVQVAEConfig(codebook_size=8), preset="tiny", num_classes=num_classes, tokenizer_hash=None)
    larp = config.larp
    rows = examples()
    batch = LarpPriorCollator.from_prior_config(config, train=False)(rows)
    tokens = class_token_ids(larp, [row["label"] for row in rows], 4) if num_classes else None
    assert torch.equal(batch["input_ids"][:, : larp["prefix_length"]], prefix_ids(larp, 4, tokens))
    if num_classes:  # what training saw for a dropped class is what guidance samples the null class with
        dropped = LarpPriorCollator.from_prior_config(config, class_dropout_prob=1.0, flip_prob=0.0)(rows)
        assert torch.equal(dropped["input_ids"][:, : larp["prefix_length"]], null_prefix_ids(larp, 4))


def test_flip_choice():
    rows = examples(batch_size=64)
    always = LarpPriorCollator(bos_token_id=8, flip_prob=1.0)(rows)["input_ids"][:, 1:]
    never = LarpPriorCollator(bos_token_id=8, flip_prob=0.0)(rows)["input_ids"][:, 1:]
    assert torch.all(always >= 100) and torch.all(never < 100)
    half = LarpPriorCollator(bos_token_id=8, flip_prob=0.5)(rows)["input_ids"][:, 1]
    assert 16 < (half >= 100).sum() < 48


@pytest.mark.parametrize("conditional", [False, True])
def test_attention_dropout_mask_properties(conditional):
    kwargs = {"class_token_offset": 9, "null_class_token_id": 12} if conditional else {}
    collator = LarpPriorCollator(bos_token_id=8, attention_dropout=0.3, **kwargs)
    mask = collator(examples(batch_size=32))["attention_mask"]
    length = collator.prefix_length + CODES
    assert mask.shape == (32, 1, length, length) and mask.dtype == torch.bool
    future = torch.ones(length, length, dtype=torch.bool).triu(1)
    assert not mask[:, :, future].any()  # causal
    assert mask.diagonal(dim1=-2, dim2=-1).all()  # every query keeps itself
    prefix_keys = torch.ones(length, length, dtype=torch.bool).tril()
    prefix_keys[:, collator.prefix_length :] = False
    assert mask[:, :, prefix_keys].all()  # the BOS/class prefix is always visible
    droppable = torch.ones(length, length, dtype=torch.bool).tril(-1)
    droppable[:, : collator.prefix_length] = False
    dropped_fraction = (~mask[:, :, droppable]).float().mean().item()
    assert 0.25 < dropped_fraction < 0.35


def test_augmentation_is_a_function_of_the_batch():
    collator = LarpPriorCollator(bos_token_id=8, attention_dropout=0.2)
    first, again = collator(examples(seed=3)), collator(examples(seed=3))
    other = collator(examples(seed=4))
    assert torch.equal(first["attention_mask"], again["attention_mask"])
    assert torch.equal(first["input_ids"], again["input_ids"])
    assert not torch.equal(first["attention_mask"], other["attention_mask"])
    reseeded = LarpPriorCollator(bos_token_id=8, attention_dropout=0.2, seed=1)(examples(seed=3))
    assert not torch.equal(first["attention_mask"], reseeded["attention_mask"])


def test_masks_reach_gpt2_through_sdpa():
    torch.manual_seed(0)
    vqvae_config = LarpVQVAEConfig(image_size=16, hidden_channels=[8, 8], codebook_size=8)
    config = prior_config(vqvae_config, preset="tiny", tokenizer_hash=None)
    model = GPT2LMHeadModel(config).eval()
    assert model.config._attn_implementation == "sdpa"
    collator = LarpPriorCollator.from_prior_config(config, attention_dropout=0.5, flip_prob=0.0)
    batch = collator(examples())
    plain = model(input_ids=batch["input_ids"]).logits
    causal = torch.ones(17, 17, dtype=torch.bool).tril().expand(4, 1, 17, 17)
    torch.testing.assert_close(model(input_ids=batch["input_ids"], attention_mask=causal).logits, plain)
    dropped = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert torch.equal(dropped[:, :2], plain[:, :2])  # the first two queries have nothing to drop
    assert not torch.allclose(dropped[:, 2:], plain[:, 2:])
    loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_invalid_settings():
    with pytest.raises(ValueError, match="attention_dropout"):
        LarpPriorCollator(bos_token_id=8, attention_dropout=1.0)
    with pytest.raises(ValueError, match="flip_prob"):
        LarpPriorCollator(bos_token_id=8, flip_prob=1.5)
    with pytest.raises(ValueError, match="both or neither"):
        LarpPriorCollator(bos_token_id=8, class_token_offset=9)

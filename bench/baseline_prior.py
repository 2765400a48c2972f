"""The plain-PyTorch prior baseline the quick prior config is measured against (issue: token datasets and the prior).

    python bench/baseline_prior.py --token_dataset outputs/tokens-fashion-mnist-quick --minutes 10

A stock 3.3M-parameter GPT-2 (4 layers, width 256, 8 heads; the `small` preset's shape) trained with a bare PyTorch
loop: AdamW at 1e-3, 200 linear warmup steps then constant, batch 64, no augmentation, no attention dropout, for a
fixed wall-clock budget. Then the held-out split is scored exactly as recipes/train_prior.py scores it (loss in nats
per predicted code token, top-5 accuracy), and the numbers are printed and written to --output_json.
"""

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel

from larp_hf.data import load_token_dataset, token_dataset_metadata


def batches(codes: np.ndarray, bos: int, batch_size: int, generator: torch.Generator):
    """Endless shuffled batches of (B, 1 + N) token ids: BOS then the codes."""
    while True:
        for index in torch.randperm(len(codes), generator=generator).split(batch_size):
            if len(index) < batch_size:
                break
            tokens = torch.from_numpy(codes[index.numpy()].astype(np.int64))
            yield torch.cat([torch.full((batch_size, 1), bos), tokens], dim=1)


def baseline_model(codebook_size: int, num_codes: int) -> GPT2LMHeadModel:
    """The `small` preset's GPT-2 (4 layers, width 256, 8 heads, GPT-2's default dropout) over BOS + the codes."""
    config = GPT2Config(
        vocab_size=codebook_size + 1, n_positions=num_codes + 1, n_embd=256, n_layer=4, n_head=8,
        bos_token_id=codebook_size, eos_token_id=None,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def training_steps(model, codes: np.ndarray, bos: int, batch_size: int = 64, seed: int = 0):
    """
    The bare loop, one optimizer step per iteration, for as long as it is iterated: yields each step's loss (a tensor;
    reading it is the caller's choice). bench/bench_prior_overhead.py times the recipe's steps against these.
    """
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 200))
    model.train()
    for input_ids in batches(codes, bos, batch_size, torch.Generator().manual_seed(seed)):
        labels = input_ids.clone()
        labels[:, 0] = -100  # BOS is given, never predicted
        loss = model(input_ids=input_ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        yield loss


@torch.no_grad()
def score(model, codes: np.ndarray, bos: int, batch_size: int = 256) -> dict:
    model.eval()
    nll, correct5, count = 0.0, 0.0, 0
    for start in range(0, len(codes), batch_size):
        tokens = torch.from_numpy(codes[start : start + batch_size].astype(np.int64))
        input_ids = torch.cat([torch.full((len(tokens), 1), bos), tokens], dim=1)
        logits = model(input_ids=input_ids).logits[:, :-1].float()  # position t predicts token t+1 (codes only)
        targets = input_ids[:, 1:]
        nll += F.cross_entropy(logits.transpose(1, 2), targets, reduction="sum").item()
        correct5 += (logits.topk(5, dim=-1).indices == targets[..., None]).any(-1).sum().item()
        count += targets.numel()
    return {"val_loss": nll / count, "val_bits_per_token": nll / count / math.log(2), "val_top5_accuracy": correct5 / count}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token_dataset", required=True)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    splits = load_token_dataset(args.token_dataset)
    train = np.asarray(splits["train"].with_format("numpy")["input_ids"])
    test = np.asarray(splits["test"].with_format("numpy")["input_ids"])
    codebook_size = token_dataset_metadata(splits["train"])["codebook_size"]
    bos = codebook_size
    model = baseline_model(codebook_size, train.shape[1])
    step, start = 0, time.perf_counter()
    for loss in training_steps(model, train, bos, batch_size=64, seed=args.seed):
        step += 1
        if step % 50 == 0:
            print(f"step {step}: train loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
        if time.perf_counter() - start >= args.minutes * 60:
            break
    train_seconds = time.perf_counter() - start

    result = {
        "steps": step,
        "train_seconds": round(train_seconds, 1),
        "num_parameters": model.num_parameters(),
        "threads": torch.get_num_threads(),
        **score(model, test, bos),
    }
    print(json.dumps(result, indent=2))
    if args.output_json:
        with open(args.output_json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()

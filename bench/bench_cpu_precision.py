"""fp32, bf16 autocast and torch.compile on the CPU: throughput and quality of the quick prior and tokenizer.

    python bench/bench_cpu_precision.py --vqvae outputs/vqvae-fashion-mnist-quick \
        --token_dataset outputs/tokens-fashion-mnist-quick
    # longer: torch.compile too, and the quick configs' own lengths for the quality runs
    python bench/bench_cpu_precision.py ... --compile --prior_quality_steps 400 --vqvae_quality_steps 500 \
        --eval_samples 10000

Throughput, each variant a model of its own (the same initial weights) trained on the same batches, one step of each
in turn in one process, so that a machine whose load drifts (it may be shared) compares like with like; the first
--warmup steps are left out, and a compiled variant's first step (compilation) is reported apart:
- prior: the `small` preset's GPT-2 (bench/baseline_prior.py's bare loop), batch 64, in predicted tokens per second;
- tokenizer: the quick config's LarpVQVAEModel, batch 128 of Fashion-MNIST training images, forward (reconstruction
  and commitment loss, EMA codebook update), backward and AdamW, in images per second;
- encoding: `LarpVQVAEModel.encode` of --eval_samples test images in batches of 256 (encode_dataset's), in images per
  second, and the fraction of codes that equal fp32's.
Variants: fp32; bf16 (`torch.autocast("cpu", torch.bfloat16)`, what accelerate's CPU bf16 does); with --compile also
compiled (`torch.compile` of the model, default inductor, from a cold cache), without and with bf16 autocast: the
first step (compilation) is reported apart, with the steps it takes to pay for itself against eager mode at the same
precision.

Quality at equal steps, each run a recipe of its own with `--mixed_precision no` and `bf16`:
- prior: recipes/train_prior.py with the quick config for --prior_quality_steps steps; the held-out loss in nats per
  token (bf16 should be within 0.01 of fp32);
- tokenizer: recipes/train_vqvae.py with the quick config for --vqvae_quality_steps steps; the validation PSNR (bf16
  should be within 0.2 dB of fp32).
Each on the first --eval_samples test examples, twice: as the recipe validates (in the run's precision) and rescored
in fp32 from the saved model, as the pipeline and the encoding use it.
"""

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from transformers import AutoModelForCausalLM


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from baseline_prior import baseline_model, batches

from larp_hf import LarpImageProcessor, LarpPriorCollator, LarpVQVAEConfig, LarpVQVAEModel
from larp_hf.data import load_image_dataset, load_token_dataset, pixels_dataset, read_pixels, token_dataset_metadata
from larp_hf.training import cpu_has_bf16


PRIOR_CONFIG = ROOT / "recipes" / "configs" / "prior_fashion_mnist_quick.yaml"
VQVAE_CONFIG = ROOT / "recipes" / "configs" / "vqvae_fashion_mnist_quick.yaml"


def autocast(variant: str):
    return torch.autocast("cpu", dtype=torch.bfloat16) if variant.endswith("bf16") else contextlib.nullcontext()


def in_turns(steps: dict, num_steps: int) -> dict[str, list[float]]:
    """Seconds of each of `num_steps` calls of every `steps[variant]()`, the variants in turn (rotating)."""
    names, times = list(steps), {name: [] for name in steps}
    for index in range(num_steps):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def summarise(title: str, times: dict[str, list[float]], warmup: int, unit: str, per_step: int) -> dict:
    """Print the median rate of each variant, its ratio to fp32 and a compiled variant's first step."""
    print(f"\n{title}")
    fp32 = statistics.median(times["fp32"][warmup:])
    summary = {}
    for name, seconds in times.items():
        median = statistics.median(seconds[warmup:])
        paired = statistics.median(f / s for f, s in zip(times["fp32"][warmup:], seconds[warmup:]))
        line = f"  {name:13s} {per_step / median:9.0f} {unit}/s   x{fp32 / median:.2f} of fp32 (paired {paired:.2f})"
        if name.startswith("compiled"):  # against the same precision in eager mode
            eager = "bf16" if name.endswith("bf16") else "fp32"
            saved = statistics.median(times[eager][warmup:]) - median
            repaid = f"repaid after {(seconds[0] - median) / saved:.0f} steps" if saved > 0 else "never repaid"
            line += f"; first step {seconds[0]:.1f} s (compilation), against {eager} eager {repaid}"
        print(line, flush=True)
        summary[name] = {"rate": per_step / median, "ratio_to_fp32": fp32 / median, "first_step_seconds": seconds[0]}
    return summary


def prior_throughput(args, variants: list[str]) -> dict:
    train = load_token_dataset(args.token_dataset)["train"]
    codes = np.asarray(train.with_format("numpy")["input_ids"])
    codebook_size = token_dataset_metadata(train)["codebook_size"]
    steps = {}
    for variant in variants:
        torch.manual_seed(0)
        model = baseline_model(codebook_size, codes.shape[1]).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        forward = torch.compile(model) if variant.startswith("compiled") else model
        data = batches(codes, codebook_size, 64, torch.Generator().manual_seed(0))

        def step(forward=forward, optimizer=optimizer, data=data, variant=variant):
            input_ids = next(data)
            labels = input_ids.clone()
            labels[:, 0] = -100
            with autocast(variant):
                loss = forward(input_ids=input_ids, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steps[variant] = step
    times = in_turns(steps, args.steps)
    tokens = 64 * codes.shape[1]
    return summarise(
        f"Prior training, small GPT-2, batch 64 ({tokens} predicted tokens a step):",
        times,
        args.warmup,
        "tokens",
        tokens,
    )


def fashion_mnist_pixels(args, split: str, count: int, image_processor) -> torch.Tensor:
    """(count, 1, 32, 32) normalised pixel values of the first `count` images of a Fashion-MNIST split."""
    images = load_image_dataset("fashion_mnist", split=split, data_dir=args.dataset_dir).select(range(count))
    pixels = read_pixels(pixels_dataset(images, image_processor))
    return image_processor(pixels, do_resize=False, return_tensors="pt")["pixel_values"]


def vqvae_throughput(args, variants: list[str]) -> dict:
    config = LarpVQVAEConfig(**yaml.safe_load(VQVAE_CONFIG.read_text())["model"])
    image_processor = LarpImageProcessor.from_vqvae_config(config)
    pixel_values = fashion_mnist_pixels(args, "train", 128 * 8, image_processor)
    steps = {}
    for variant in variants:
        torch.manual_seed(0)
        model = LarpVQVAEModel(config).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.99))
        forward = torch.compile(model) if variant.startswith("compiled") else model
        data = iter(pixel_values.split(128) * (args.steps // 8 + 1))

        def step(forward=forward, optimizer=optimizer, data=data, variant=variant):
            with autocast(variant):
                loss = forward(next(data)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        steps[variant] = step
    times = in_turns(steps, args.steps)
    return summarise(
        "Tokenizer training, quick LarpVQVAEModel, batch 128 (32×32 grey):", times, args.warmup, "images", 128
    )


def encoding(args, variants: list[str]) -> dict:
    vqvae = LarpVQVAEModel.from_pretrained(args.vqvae).eval()
    image_processor = LarpImageProcessor.from_pretrained(args.vqvae)
    count = max(args.eval_samples // 256, 1) * 256  # whole batches: a compiled encoder sees one shape
    chunks = list(fashion_mnist_pixels(args, "test", count, image_processor).split(256))
    encoders = {name: torch.compile(vqvae.encode) if name.startswith("compiled") else vqvae.encode for name in variants}
    first_call = {}
    for name in variants:  # warm-up, and compilation
        start = time.perf_counter()
        encode_batch(encoders[name], chunks[0], name)
        first_call[name] = time.perf_counter() - start
    codes = {name: [] for name in variants}
    batches_in_turn = {name: iter(chunks) for name in variants}
    times = in_turns(
        {
            name: lambda name=name: codes[name].append(encode_batch(encoders[name], next(batches_in_turn[name]), name))
            for name in variants
        },
        len(chunks),
    )
    print(f"\nEncoding, {count} Fashion-MNIST test images in batches of 256:")
    fp32_codes, fp32_seconds = torch.cat(codes["fp32"]), sum(times["fp32"])
    summary = {}
    for name in variants:
        seconds = sum(times[name])
        same = (torch.cat(codes[name]) == fp32_codes).float().mean().item()
        line = f"  {name:13s} {count / seconds:9.0f} images/s   x{fp32_seconds / seconds:.2f} of fp32"
        line += f"; codes equal to fp32's: {same:.2%}"
        if name.startswith("compiled"):
            line += f"; first batch {first_call[name]:.1f} s (compilation)"
        print(line, flush=True)
        summary[name] = {"images_per_second": count / seconds, "codes_equal_to_fp32": same}
    return summary


@torch.no_grad()
def encode_batch(encode, pixel_values, variant: str) -> torch.Tensor:
    with autocast(variant):
        return encode(pixel_values)


def run_recipe(recipe: str, flags: list[str], output_dir: str) -> dict:
    """metrics.json of a recipe run in its own process."""
    command = [sys.executable, str(ROOT / "recipes" / recipe), *flags, "--output_dir", output_dir]
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return json.loads((Path(output_dir) / "metrics.json").read_text())


@torch.no_grad()
def prior_loss_fp32(prior_dir: str, token_dataset: str, count: int) -> float:
    """A saved prior's loss in nats per code token on the first `count` test grids, computed in fp32."""
    prior = AutoModelForCausalLM.from_pretrained(prior_dir).eval()
    collator = LarpPriorCollator.from_prior_config(prior.config, train=False)
    test = load_token_dataset(token_dataset)["test"].select(range(count)).with_format("numpy")
    nll, tokens = 0.0, 0
    for start in range(0, count, 256):
        batch = collator([test[i] for i in range(start, min(start + 256, count))])
        logits = prior(input_ids=batch["input_ids"]).logits[:, :-1]  # position t predicts t+1
        targets = batch["labels"][:, 1:]
        nll += F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="sum").item()
        tokens += (targets != -100).sum().item()
    return nll / tokens


@torch.no_grad()
def tokenizer_psnr_fp32(args, vqvae_dir: str, count: int) -> float:
    """A saved tokenizer's PSNR (dB, [0, 1] scale, padding cropped) on the first `count` test images, in fp32."""
    vqvae = LarpVQVAEModel.from_pretrained(vqvae_dir).eval()
    image_processor = LarpImageProcessor.from_pretrained(vqvae_dir)
    squared_error, num_pixels = 0.0, 0
    for pixel_values in fashion_mnist_pixels(args, "test", count, image_processor).split(512):
        reconstruction = image_processor.crop_padding(vqvae(pixel_values).reconstruction.clamp(-1, 1))
        original = image_processor.crop_padding(pixel_values)
        squared_error += ((reconstruction - original) / 2).pow(2).sum().item()
        num_pixels += original.numel()
    return 10 * math.log10(num_pixels / squared_error)


def quality(args) -> dict:
    """fp32 against bf16 autocast at equal steps, each a recipe run: the recipes' own metrics and fp32 rescoring."""
    summary = {}
    if args.prior_quality_steps > 0:
        steps = args.prior_quality_steps
        common = ["--config", str(PRIOR_CONFIG), "--vqvae", args.vqvae, "--token_dataset", args.token_dataset]
        common += ["--max_steps", str(steps), "--validation_steps", str(steps), "--checkpointing_steps", str(steps)]
        common += ["--max_validation_samples", str(args.eval_samples)]
        runs = {}
        for name in ("no", "bf16"):
            with tempfile.TemporaryDirectory() as output_dir:
                metrics = run_recipe("train_prior.py", [*common, "--mixed_precision", name], output_dir)
                runs[name] = {
                    "val_loss": metrics["val_loss"],
                    "val_loss_fp32": prior_loss_fp32(output_dir, args.token_dataset, args.eval_samples),
                    "train_seconds": metrics["train_seconds"],
                }
        print(
            f"\nPrior quality, train_prior.py with the quick config, {steps} steps, {args.eval_samples} held-out grids:"
        )
        for key, what in (
            ("val_loss", "the recipe's validation (in its precision)"),
            ("val_loss_fp32", "rescored in fp32"),
        ):
            gap = runs["bf16"][key] - runs["no"][key]
            print(
                f"  {what}: fp32 {runs['no'][key]:.4f}, bf16 {runs['bf16'][key]:.4f} nats/token, bf16 - fp32 "
                f"{gap:+.4f} ({'within' if abs(gap) <= 0.01 else 'NOT within'} 0.01)"
            )
        print(
            f"  training seconds {runs['no']['train_seconds']:.0f} (fp32), {runs['bf16']['train_seconds']:.0f} (bf16), "
            "separate runs: only as steady as the machine's load",
            flush=True,
        )
        summary["prior"] = runs
    if args.vqvae_quality_steps > 0:
        steps = args.vqvae_quality_steps
        common = ["--config", str(VQVAE_CONFIG), "--max_steps", str(steps), "--validation_steps", str(steps)]
        common += ["--checkpointing_steps", str(steps), "--max_validation_samples", str(args.eval_samples)]
        common += ["--num_grid_images", "8"] + (["--dataset_dir", args.dataset_dir] if args.dataset_dir else [])
        runs = {}
        for name in ("no", "bf16"):
            with tempfile.TemporaryDirectory() as output_dir:
                metrics = run_recipe("train_vqvae.py", [*common, "--mixed_precision", name], output_dir)
                runs[name] = {
                    "val_psnr": metrics["val_psnr"],
                    "val_psnr_fp32": tokenizer_psnr_fp32(args, output_dir, args.eval_samples),
                    "codebook_usage": metrics["codebook_usage"],
                    "train_seconds": metrics["train_seconds"],
                }
        print(
            f"\nTokenizer quality, train_vqvae.py, quick config, {steps} steps, {args.eval_samples} test images:"
        )
        for key, what in (
            ("val_psnr", "the recipe's validation (in its precision)"),
            ("val_psnr_fp32", "rescored in fp32"),
        ):
            gap = runs["bf16"][key] - runs["no"][key]
            print(
                f"  {what}: fp32 {runs['no'][key]:.2f} dB, bf16 {runs['bf16'][key]:.2f} dB PSNR, bf16 - fp32 "
                f"{gap:+.2f} dB ({'within' if abs(gap) <= 0.2 else 'NOT within'} 0.2)"
            )
        print(
            f"  codebook usage {runs['no']['codebook_usage']:.1%} (fp32), {runs['bf16']['codebook_usage']:.1%} (bf16); "
            f"training seconds {runs['no']['train_seconds']:.0f}, {runs['bf16']['train_seconds']:.0f}; separate runs",
            flush=True,
        )
        summary["tokenizer"] = runs
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vqvae", required=True, help="A trained quick tokenizer (for encoding and the prior runs).")
    parser.add_argument("--token_dataset", required=True, help="Its token dataset of Fashion-MNIST (with labels).")
    parser.add_argument("--dataset_dir", default=None, help="Folder of the Fashion-MNIST IDX files.")
    parser.add_argument("--steps", type=int, default=24, help="Training steps of each variant in the throughput runs.")
    parser.add_argument("--warmup", type=int, default=4, help="Steps left out of the throughput medians.")
    parser.add_argument("--eval_samples", type=int, default=2048, help="Images encoded; held-out examples scored.")
    parser.add_argument("--prior_quality_steps", type=int, default=100, help="0 skips the prior's quality runs.")
    parser.add_argument("--vqvae_quality_steps", type=int, default=100, help="0 skips the tokenizer's quality runs.")
    parser.add_argument(
        "--compile", action="store_true",
        help="Also time torch.compile, without and with bf16 autocast (cold compilation: about a minute in all).",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads, here and in the recipe runs (default: torch's). On a machine shared with other jobs, 1 "
        "keeps the ratios meaningful: 2 threads contending for 2 busy cores wait at every OpenMP barrier.",
    )  # fmt: skip
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args()
    if args.steps <= args.warmup + 1:
        parser.error("--steps must exceed --warmup + 1.")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # for the recipe runs

    variants = ["fp32", "bf16"] + (["compiled", "compiled+bf16"] if args.compile else [])
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}, bf16 in hardware: {cpu_has_bf16()}; load average "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="inductor-") as compile_cache:
        # A cold compilation cache, as a first run has: the compile times are what a user waits for.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = compile_cache
        result = {
            "prior_training": prior_throughput(args, variants),
            "tokenizer_training": vqvae_throughput(args, variants),
            "encoding": encoding(args, variants),
        }
    result["quality"] = quality(args)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

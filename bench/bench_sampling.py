"""Sampling speed of LarpPipeline against generating without the KV cache, side by side in one run.

    python bench/bench_sampling.py [--model outputs/larp-fashion-mnist-quick] [--num_images 512] [--batch_size 64]

ours:        `LarpPipeline.__call__`: `generate` with the KV cache (one new token per forward), the code-only
             processor, then the tokenizer's decode.
alternative: the same `generate` call with `use_cache=False`, which runs the whole prefix again at every step.

Both sides draw the same codes for the same seed (checked), so the ratio is the cache's alone. Without --model, a
freshly initialised `small` prior over the quick tokenizer's shapes is timed (speed does not depend on the weights).
Prints images/s for each, their ratio, and ours at several batch sizes.
"""

import argparse
import copy
import time

import torch
from transformers import GPT2LMHeadModel

from larp_hf import LarpPipeline, LarpVQVAEConfig, LarpVQVAEModel, prior_config


def timed(function, repeats: int):
    function()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        result = function()
    return (time.perf_counter() - start) / repeats, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pipeline folder or Hub id (default: an untrained quick-sized pipeline)")
    parser.add_argument("--num_images", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    if args.model:
        pipe = LarpPipeline.from_pretrained(args.model)
    else:
        vqvae = LarpVQVAEModel(LarpVQVAEConfig(in_channels=1, image_size=32, codebook_size=512))
        prior = GPT2LMHeadModel(prior_config(vqvae.config, preset="small", tokenizer_hash=vqvae.tokenizer_hash()))
        pipe = LarpPipeline(vqvae, prior)
    pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    print(f"device {args.device}, {torch.get_num_threads()} threads, {args.num_images} images in batches of {args.batch_size}")

    def sample(use_cache: bool, batch_size: int = args.batch_size):
        original = pipe.prior.generate
        def generate(*args, generation_config, **kwargs):  # the pipeline's call, with the flag under test
            generation_config = copy.deepcopy(generation_config)
            generation_config.use_cache = use_cache
            return original(*args, generation_config=generation_config, **kwargs)

        pipe.prior.generate = generate
        try:
            return pipe(num_images=args.num_images, batch_size=batch_size, seed=0, output_type="pt").codes
        finally:
            del pipe.prior.generate

    cached_seconds, cached_codes = timed(lambda: sample(True), args.repeats)
    uncached_seconds, uncached_codes = timed(lambda: sample(False), max(1, args.repeats // 2))
    same = torch.equal(cached_codes, uncached_codes)
    print(f"ours (KV cache):        {args.num_images / cached_seconds:8.1f} images/s")
    print(f"alternative (no cache): {args.num_images / uncached_seconds:8.1f} images/s")
    print(f"ratio: {uncached_seconds / cached_seconds:.2f}x faster with the cache; identical codes: {same}")
    for batch_size in (16, 64, 256):
        seconds, _ = timed(lambda: sample(True, batch_size), 1)
        print(f"ours at batch size {batch_size:>3}: {args.num_images / seconds:8.1f} images/s")


if __name__ == "__main__":
    main()

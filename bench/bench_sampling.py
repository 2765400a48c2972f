"""Sampling speed of LarpPipeline against stock `generate`, with and without its KV cache, side by side in one run.

    python bench/bench_sampling.py [--model outputs/larp-fashion-mnist-quick] [--architecture llama]
                                   [--batch_sizes 1,64,256] [--repeats 3] [--threads 1] [--guidance_scale 2]
                                   [--grid 16] [--codebook_size 16384] [--no_uncached]

pipeline:            `LarpPipeline.__call__`: `larp_hf.generation.sample_tokens` (the prior's own forward, one token a
                     step, into a KV cache allocated once, per-image Gumbel draws read 16 steps at a time; on a CPU
                     its float32 linear layers prepacked for oneDNN, `with_prepacked_linears`), then the tokenizer's
                     decode.
own linear layers:   the pipeline with that prepacking off (`prepack_linears=False`): the prior's layers as they
                     are (MKL's float32 products on a CPU). Printed under each row: what the loop gives alone.
generate:            the same call with the codes sampled by stock `generate` (its dynamic KV cache) and the same
                     processors: the code-only `CodebookLogitsProcessor`, then `PerImageSamplingLogitsProcessor` (one
                     random stream per image) — the pipeline's sampler before. It draws the same codes (the share
                     of equal grids is printed: prepacked products round sums differently, so a near-tie may rarely
                     go the other way and change the rest of that grid).
generate, no cache:  that `generate` call with `use_cache=False`: the whole prefix again at every step.

With --guidance_scale > 1 the prior is class-conditional (10 classes, or the model's) and the images are guided; stock
`generate` has no guidance of this kind, so the reference is the guided loop the pipeline had before (the prior's
forward with transformers' dynamic cache, the processors, then `torch.multinomial`), with and without its cache.

Without --model, a freshly initialised `small` prior over the quick tokenizer's shapes is timed (speed does not depend
on the weights); --grid and --codebook_size change the tokenizer's grid (tokens per image: grid²) and codebook, e.g.
`--grid 16 --codebook_size 16384` for the 256-token grids of a pretrained f16 VQGAN at 256 pixels, `--grid 32` for
1,024 tokens. --no_uncached skips the no-cache reference (quadratic in the grid's length: minutes at 1,024 tokens). Each round runs the pipeline and the cached reference back to back, in alternating order, and their
ratio is taken per round (pairing makes it robust to the load of a shared machine); the medians over --repeats rounds
are printed, with the range of the ratio. The no-cache reference is timed once per batch size (it is 10-40x slower).

Last, on a CPU where the prior can be prepacked, one decoding step (the prior's forward on one token per row, without
a cache: mostly its linear layers) at --step_rows rows, with its own linear layers and with the prepacked copy in turn,
median microseconds: where the two cross is where `sample_tokens` starts prepacking (`PREPACK_MIN_ROWS`).

--bf16 also times the pipeline with its prior's weights in bfloat16 (the decoding loop unchanged, logits cast to float32
before the processors) against the float32 reference of the same round. That is not the same per-step distribution: the
line gives the share of its grids equal to the float32 pipeline's; `larp-hf evaluate --dtype bfloat16` scores its samples.
"""

import argparse
import copy
import os
import statistics
import time

import torch
from transformers import AutoModelForCausalLM, GenerationConfig, LogitsProcessorList

from larp_hf import LarpPipeline, LarpVQVAEConfig, LarpVQVAEModel, prior_config
from larp_hf.generation import PerImageSamplingLogitsProcessor
from larp_hf.generation.decoding import PREPACK_MIN_ROWS
from larp_hf.generation.prepacked import can_prepack, with_prepacked_linears
from larp_hf.prior import NEUTRAL_SAMPLING, null_prefix_ids


def generate_sampler(pipe, use_cache: bool):
    """A stand-in for `pipe._sample_codes` that samples with stock `generate` (or the old guided loop)."""
    larp = pipe.larp

    def sample_codes(input_ids, codes_processor, generators, guidance_scale, prepack_linears=None):
        processors = LogitsProcessorList([codes_processor, PerImageSamplingLogitsProcessor(generators)])
        num_codes = pipe.grid[0] * pipe.grid[1]
        with torch.random.fork_rng(devices=[pipe.device] if pipe.device.type == "cuda" else []):
            if guidance_scale > 1:
                null_input_ids = null_prefix_ids(larp, input_ids.shape[0], device=input_ids.device)
                return guided_loop(
                    pipe.prior, input_ids, null_input_ids, processors, guidance_scale, num_codes, use_cache
                )
            config = GenerationConfig(
                **NEUTRAL_SAMPLING, do_sample=True, max_new_tokens=num_codes, bos_token_id=larp["bos_token_id"],
                pad_token_id=larp["bos_token_id"], eos_token_id=None, use_cache=use_cache,
            )  # fmt: skip
            sequences = pipe.prior.generate(
                input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config,
                logits_processor=processors,
            )  # fmt: skip
            return sequences[:, input_ids.shape[1] :]

    return sample_codes


def guided_loop(prior, input_ids, null_input_ids, processors, guidance_scale, max_new_tokens, use_cache):
    """The pipeline's guided loop before `sample_tokens` (transformers' dynamic cache), or without any cache."""
    batch_size, prefix_length = input_ids.shape
    sequences, null_sequences = input_ids, null_input_ids
    step_ids, cache = torch.cat([input_ids, null_input_ids]), None
    for _ in range(max_new_tokens):
        if not use_cache:
            step_ids = torch.cat([sequences, null_sequences])
        outputs = prior(input_ids=step_ids, cache=cache, use_cache=use_cache)
        cache = outputs.cache if use_cache else None
        logits = outputs.logits[:, -1].float()
        conditional, null = logits[:batch_size], logits[batch_size:]
        scores = processors(sequences, null + guidance_scale * (conditional - null))
        next_tokens = torch.multinomial(scores.softmax(dim=-1), num_samples=1)
        sequences, null_sequences = torch.cat([sequences, next_tokens], 1), torch.cat([null_sequences, next_tokens], 1)
        step_ids = torch.cat([next_tokens, next_tokens])
    return sequences[:, prefix_length:]


def step_microseconds(prior, token_id: int, rows: int, repeats: int) -> tuple[float, float]:
    """Median microseconds of one step's forward on (rows, 1) tokens, the prior's own layers and the prepacked copy
    taking turns."""
    decoders = {"own": prior, "prepacked": with_prepacked_linears(prior)}
    input_ids = torch.full((rows, 1), token_id, device=prior.device)
    times = {name: [] for name in decoders}
    with torch.inference_mode():
        for repeat in range(repeats + 5):  # the first 5 warm up
            for name, decoder in decoders.items():
                start = time.perf_counter()
                decoder(input_ids=input_ids, use_cache=False, logits_to_keep=1)
                if repeat >= 5:
                    times[name].append(time.perf_counter() - start)
    return statistics.median(times["own"]) * 1e6, statistics.median(times["prepacked"]) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pipeline folder or Hub id (default: an untrained quick-sized pipeline)")
    parser.add_argument("--architecture", default="gpt2", choices=["gpt2", "llama"], help="of the untrained prior")
    parser.add_argument("--batch_sizes", default="1,64,256")
    parser.add_argument("--min_images", type=int, default=32, help="images per timing: max(batch size, this)")
    parser.add_argument("--repeats", type=int, default=3, help="paired rounds per batch size")
    parser.add_argument("--guidance_scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="also time the pipeline with a bfloat16 prior")
    parser.add_argument("--step_rows", default="1,2,3,4", help="rows of the single-step timing ('' to skip it)")
    parser.add_argument("--grid", type=int, default=8, help="code grid a side of the untrained pipeline's tokenizer")
    parser.add_argument("--codebook_size", type=int, default=512, help="codes of the untrained pipeline's tokenizer")
    parser.add_argument("--no_uncached", action="store_true", help="skip the no-cache reference")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    guided = args.guidance_scale > 1
    if args.model:
        pipe = LarpPipeline.from_pretrained(args.model)
    else:
        torch.manual_seed(0)
        # The quick tokenizer's network (4× downsampling) at the image size that gives the asked grid.
        vqvae = LarpVQVAEModel(
            LarpVQVAEConfig(in_channels=1, image_size=4 * args.grid, codebook_size=args.codebook_size)
        )
        config = prior_config(
            vqvae.config, preset="small", num_classes=10 if guided else 0, tokenizer_hash=vqvae.tokenizer_hash(),
            architecture=args.architecture,
        )  # fmt: skip
        pipe = LarpPipeline(vqvae, AutoModelForCausalLM.from_config(config))
    pipe.to(args.device)
    pipe.set_progress_bar_config(disable=True)
    bf16_pipe = None
    if args.bf16:
        bf16_pipe = copy.deepcopy(pipe)
        bf16_pipe.prior.to(torch.bfloat16)
    prior = pipe.prior.config
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"device {args.device}, {torch.get_num_threads()} threads (load average {load}); {prior.model_type} prior, "
        f"{sum(p.numel() for p in pipe.prior.parameters()) / 1e6:.1f} M parameters, {prior.num_hidden_layers} layers, "
        f"width {prior.hidden_size}; {pipe.grid[0]}x{pipe.grid[1]} grids, vocabulary {prior.vocab_size}"
        + (f"; guided, scale {args.guidance_scale}, classes in turn" if guided else "")
    )
    reference = "guided loop" if guided else "generate"

    def sample(batch_size, num_images, sampler=None, pipeline=pipe, own_linears=False):
        """Seconds for one `pipeline(...)` call and its codes; `sampler` replaces the pipeline's own sampling."""
        if sampler is not None:
            pipe._sample_codes = sampler
        try:
            start = time.perf_counter()
            codes = pipeline(
                num_images=num_images, batch_size=batch_size, seed=0, output_type="pt",
                guidance_scale=args.guidance_scale if guided else None, prepack_linears=False if own_linears else None,
            ).codes  # fmt: skip
            return time.perf_counter() - start, codes
        finally:
            if sampler is not None:
                del pipe._sample_codes

    header = (
        f"{'batch':>5} {'images':>6} {'pipeline':>9} {reference:>11} {'no cache':>9}   {'pipeline / ' + reference:>24}"
        f" {reference + ' / no cache':>22}   grids equal to the pipeline's"
    )
    print(header + "\n" + " " * 13 + "images/s   images/s  images/s" + " " * 5 + "median (range) of rounds")
    for batch_size in [int(size) for size in args.batch_sizes.split(",")]:
        num_images = max(batch_size, args.min_images)
        cached = generate_sampler(pipe, use_cache=True)
        sample(batch_size, min(num_images, batch_size))  # warm-up
        sample(batch_size, min(num_images, batch_size), own_linears=True)  # warm-up
        ours, theirs, ratios, own_ratios, bf16_ratios = [], [], [], [], []
        if bf16_pipe is not None:
            sample(batch_size, min(num_images, batch_size), pipeline=bf16_pipe)  # warm-up
        for round_index in range(args.repeats):
            order = [None, cached] if round_index % 2 == 0 else [cached, None]
            results = {id(sampler): sample(batch_size, num_images, sampler) for sampler in order}
            (our_seconds, our_codes), (their_seconds, their_codes) = results[id(None)], results[id(cached)]
            ours.append(our_seconds)
            theirs.append(their_seconds)
            ratios.append(their_seconds / our_seconds)
            own_ratios.append(their_seconds / sample(batch_size, num_images, own_linears=True)[0])
            if bf16_pipe is not None:
                bf16_seconds, bf16_codes = sample(batch_size, num_images, pipeline=bf16_pipe)
                bf16_ratios.append(their_seconds / bf16_seconds)
        same = (our_codes == their_codes).flatten(1).all(dim=1).double().mean().item()  # share of equal grids
        rates = [num_images / statistics.median(seconds) for seconds in (ours, theirs)]
        ratio = f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        if args.no_uncached:
            uncached = f"{'-':>9}   {ratio:>24} {'-':>22}   {same:.0%}"
        else:
            uncached_seconds, uncached_codes = sample(batch_size, num_images, generate_sampler(pipe, use_cache=False))
            same_uncached = (our_codes == uncached_codes).flatten(1).all(dim=1).double().mean().item()
            uncached = (
                f"{num_images / uncached_seconds:>9.1f}   {ratio:>24} "
                f"{uncached_seconds / statistics.median(theirs):>21.2f}x   {same:.0%}, {same_uncached:.0%} (no cache)"
            )
        print(f"{batch_size:>5} {num_images:>6} {rates[0]:>9.1f} {rates[1]:>11.1f} {uncached}")
        print(
            f"{'':>13}own linear layers (no prepacking): {statistics.median(own_ratios):.2f}x {reference} "
            f"({min(own_ratios):.2f}-{max(own_ratios):.2f})"
        )
        if bf16_pipe is not None:
            identical = (bf16_codes == our_codes).flatten(1).all(dim=1).double().mean().item()
            print(
                f"{'':>13}bfloat16 prior: {statistics.median(bf16_ratios):.2f}x {reference} "
                f"({min(bf16_ratios):.2f}-{max(bf16_ratios):.2f}); {identical:.0%} of its grids equal the float32 "
                "pipeline's (one differing draw changes the rest of a grid)"
            )

    if args.step_rows and can_prepack(pipe.prior):
        print(
            "one decoding step (the prior's forward on one token a row, no cache: mostly its linear layers), median "
            f"µs of {20 * args.repeats} paired calls; sample_tokens prepacks from {PREPACK_MIN_ROWS} rows a step"
        )
        for rows in [int(rows) for rows in args.step_rows.split(",")]:
            own, packed = step_microseconds(pipe.prior, pipe.larp["bos_token_id"], rows, repeats=20 * args.repeats)
            print(
                f"{rows:>5} rows: own linear layers {own:8.1f} µs, prepacked {packed:8.1f} µs "
                f"(own / prepacked {own / packed:.2f})"
            )


if __name__ == "__main__":
    main()

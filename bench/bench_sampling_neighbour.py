"""Sampling (or encoding) speed alone and beside a busy neighbour process, with larp_hf's thread policy and with
torch's default.

    python bench/bench_sampling_neighbour.py [--model DIR] [--batch_size 16] [--num_images 32] [--repeats 3]
                                             [--preset small] [--grid 8] [--codebook_size 512] [--encode]

With `--encode`, the tokenizer encodes `--num_images` images at `--batch_size` instead (the policy for whole batches,
`torch_threads(batched=True)`, as `encode_dataset` runs: the CPUs other processes leave free).

The pipeline samples `--num_images` images at `--batch_size` (`LarpPipeline.__call__`), timed `--repeats` times (median
images/s), in each of these situations:

neighbours:  none; a Python busy loop (`while True: pass`, one core); a torch matmul loop (512×512 products with
             torch's default threads), each started as a separate process before the timing and stopped after it.
threads:     larp_hf's policy (`larp_hf.threads`: one thread on a machine of at most 2 CPUs, otherwise torch's count
             less the CPUs other processes keep busy) and torch's default count (`LARP_HF_NUM_THREADS` set to it).

Printed: images/s per situation with the thread count in force, the slowdown each neighbour causes (alone / beside it)
under each setting, and the policy's speed over torch default's. The target (issue 23): a neighbour costs at most
about 2× with the policy. Numbers from a machine that other work loads are not final: run it on an idle machine (on a
loaded one, torch default's runs alone can take minutes: 2 threads on 2 busy cores ran 10-40× slower than 1 here).
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
from transformers import AutoModelForCausalLM

from larp_hf import LarpPipeline, LarpVQVAEConfig, LarpVQVAEModel, prior_config
from larp_hf.threads import NUM_THREADS_ENV, available_cpus, choose_num_threads, torch_threads


NEIGHBOURS = {
    "none": None,
    "python busy loop": "while True: pass",
    "torch matmul loop": "import torch\na = torch.randn(512, 512)\nwhile True: a @ a",
}


def build_pipeline(args) -> LarpPipeline:
    if args.model:
        return LarpPipeline.from_pretrained(args.model)
    torch.manual_seed(0)
    # The quick tokenizer's network (4× downsampling) at the image size that gives the asked grid; speed does not
    # depend on the weights.
    vqvae = LarpVQVAEModel(LarpVQVAEConfig(in_channels=1, image_size=4 * args.grid, codebook_size=args.codebook_size))
    config = prior_config(vqvae, preset=args.preset)
    return LarpPipeline(vqvae, AutoModelForCausalLM.from_config(config))


def images_per_second(pipe, args) -> float:
    timings = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        if args.encode:
            encode(pipe, args)
        else:
            pipe(num_images=args.num_images, batch_size=args.batch_size, seed=0, output_type="pt")
        timings.append(time.perf_counter() - start)
    return args.num_images / statistics.median(timings)


@torch.no_grad()
def encode(pipe, args):
    """The tokenizer's codes of `--num_images` random images, a batch at a time, as encode_dataset's loop runs."""
    config = pipe.vqvae.config
    pixels = torch.rand(args.num_images, config.in_channels, config.image_size, config.image_size) * 2 - 1
    with torch_threads(batched=True):
        for batch in pixels.split(args.batch_size):
            pipe.vqvae.encode(batch)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="pipeline folder (default: an untrained pipeline of --preset over --grid)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--grid", type=int, default=8)
    parser.add_argument("--codebook_size", type=int, default=512)
    parser.add_argument("--encode", action="store_true", help="time the tokenizer's encoding instead of sampling")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds a neighbour runs before the timing")
    args = parser.parse_args()
    if os.environ.get(NUM_THREADS_ENV) or os.environ.get("OMP_NUM_THREADS"):
        raise SystemExit(f"Unset {NUM_THREADS_ENV} and OMP_NUM_THREADS: the bench compares the policy with torch's.")

    torch_default = torch.get_num_threads()
    pipe = build_pipeline(args)
    pipe.set_progress_bar_config(disable=True)
    pipe(num_images=2, batch_size=2, seed=0)  # first-call work (prepacking, allocations) out of the timings
    if args.encode:
        encode(pipe, args)  # and the encoder's (oneDNN's kernels for these shapes)
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"{available_cpus()} CPUs, torch default {torch_default} threads, load average {load}; "
        f"{pipe.grid[0]}x{pipe.grid[1]} grids, {sum(p.numel() for p in pipe.prior.parameters()) / 1e6:.1f} M prior "
        f"parameters; {'encoding' if args.encode else 'sampling'} {args.num_images} images at batch {args.batch_size}, "
        f"median of {args.repeats}"
    )
    settings = {"larp_hf policy": None, "torch default": str(torch_default)}
    results = {}
    for neighbour, code in NEIGHBOURS.items():
        process = None if code is None else subprocess.Popen([sys.executable, "-c", code])
        try:
            time.sleep(args.warmup if process else 0)
            for setting, value in settings.items():
                if value is None:
                    os.environ.pop(NUM_THREADS_ENV, None)
                else:
                    os.environ[NUM_THREADS_ENV] = value
                count = choose_num_threads(batched=args.encode) or torch.get_num_threads()
                speed = images_per_second(pipe, args)
                results[neighbour, setting] = speed
                print(f"  neighbour {neighbour:<18} {setting:<15} {count} thread(s): {speed:7.1f} images/s")
        finally:
            os.environ.pop(NUM_THREADS_ENV, None)
            if process is not None:
                process.kill()
                process.wait()
    print("Slowdown beside a neighbour (alone / beside it; target: at most ~2x with the policy):")
    for neighbour in list(NEIGHBOURS)[1:]:
        ratios = ", ".join(
            f"{setting} {results['none', setting] / results[neighbour, setting]:.2f}x" for setting in settings
        )
        print(f"  {neighbour:<18} {ratios}")
    print("Policy over torch default (images/s ratio):")
    for neighbour in NEIGHBOURS:
        ratio = results[neighbour, "larp_hf policy"] / results[neighbour, "torch default"]
        print(f"  neighbour {neighbour:<18} {ratio:.2f}x")


if __name__ == "__main__":
    main()

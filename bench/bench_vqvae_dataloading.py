"""Tokenizer training throughput: images read a batch at a time from the dataset against pixels held in memory.

    python bench/bench_vqvae_dataloading.py [--steps 40] [--runs 3] [--workers 0,2]

Runs recipes/train_vqvae.py with the quick Fashion-MNIST config (batch 128, 32×32 grey) for --steps steps, in turns:
- in memory: `--pixels_in_memory always`, the splits preprocessed once (cached by datasets) and held as a uint8 tensor;
- streamed:  `--pixels_in_memory never`, each batch read from the memory-mapped dataset, decoded and resized, by the
  training process (0 workers) or by DataLoader workers (each count in --workers).
Both train on the very same pixels in the same order. Prints the median training throughput (images per second of
the training loop, from metrics.json's train_seconds) and the whole-process wall time of each, the ratios to the
in-memory path (the median of the ratios to the in-memory run of the same turn: pairing keeps them meaningful when
the machine's load drifts), and the load average, since the machine may be shared. One warm-up run per variant fills
the caches.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "vqvae_fashion_mnist_quick.yaml"
BATCH_SIZE = 128


def run_recipe(flags: list[str], steps: int) -> tuple[float, float]:
    """(training images per second, wall seconds of the whole process) of one run."""
    with tempfile.TemporaryDirectory() as output_dir:
        command = [sys.executable, str(ROOT / "recipes" / "train_vqvae.py"), "--config", str(CONFIG), *flags]
        command += ["--max_steps", str(steps), "--validation_steps", str(steps), "--checkpointing_steps", str(steps)]
        command += ["--max_validation_samples", "512", "--output_dir", output_dir]
        env = {**os.environ, "TQDM_DISABLE": "1", "HF_DATASETS_OFFLINE": "1"}
        start = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
        train_seconds = json.loads((Path(output_dir) / "metrics.json").read_text())["train_seconds"]
    return steps * BATCH_SIZE / train_seconds, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--runs", type=int, default=3, help="Measured runs of each variant (after one warm-up).")
    parser.add_argument("--workers", default="0,2", help="DataLoader worker counts to try for the streamed path.")
    args = parser.parse_args()

    variants = {"in memory": ["--pixels_in_memory", "always"]}
    for workers in (int(count) for count in args.workers.split(",")):
        variants[f"streamed, {workers} workers"] = ["--pixels_in_memory", "never", "--dataloader_num_workers", str(workers)]
    for flags in variants.values():
        run_recipe(flags, steps=2)  # warm-up: the datasets caches, the page cache
    results = {name: [] for name in variants}
    loads = []
    for _ in range(args.runs):  # in turns, so that a change in the machine's load hits every variant alike
        for name, flags in variants.items():
            results[name].append(run_recipe(flags, args.steps))
            loads.append(os.getloadavg()[0])

    print(f"Fashion-MNIST quick config, {args.steps} steps of {BATCH_SIZE}, torch threads {os.cpu_count()} cores; "
          f"load average during the runs {min(loads):.2f}-{max(loads):.2f}")  # fmt: skip
    reference = results["in memory"]
    for name, runs in results.items():
        rate, wall = statistics.median(r for r, _ in runs), statistics.median(w for _, w in runs)
        rate_ratio = statistics.median(r / ref for (r, _), (ref, _) in zip(runs, reference))
        wall_ratio = statistics.median(w / ref for (_, w), (_, ref) in zip(runs, reference))
        print(
            f"{name:22s} {rate:7.1f} images/s in training ({rate_ratio:5.2f}x in memory), whole run {wall:5.1f} s "
            f"({wall_ratio:4.2f}x); runs: {', '.join(f'{r:.0f}' for r, _ in runs)} images/s"
        )


if __name__ == "__main__":
    main()

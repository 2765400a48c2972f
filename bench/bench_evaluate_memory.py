#!/usr/bin/env python
"""
Peak resident memory of `larp-hf evaluate` at two sample counts: does it grow with the number of samples?

The script makes what the command needs in `--work-dir`: a 64×64 RGB pipeline (untrained tokenizer with an 8×8
grid, `tiny` GPT-2 prior), a feature network for those images, a synthetic image dataset (`train` and `test` splits
of blobby images) and its token dataset. Each `larp-hf evaluate` runs as a child process (with a fresh feature cache,
so real features are computed, not read). Its peak resident set comes from `os.wait4`; it counts the pages of
memory-mapped files read (Arrow datasets), which the kernel can drop at will, so the peak of the anonymous part
(RssAnon: what the process allocated), sampled from /proc every 50 ms, is printed beside it. The machine's load
average is printed with each figure, since the machine may be shared. `--code-dir` runs the command from another checkout,
e.g. the code before a change:

    git worktree add /tmp/eval-before <commit>
    python bench/bench_evaluate_memory.py --code-dir /tmp/eval-before --code-dir .
"""

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE, CHANNELS = 64, 3


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/bench-evaluate-memory"))
    parser.add_argument("--num-samples", default="2000,20000", help="comma-separated sample counts")
    parser.add_argument("--train-images", type=int, default=20000, help="images in the synthetic train split")
    parser.add_argument("--test-images", type=int, default=5000, help="images in the synthetic test split")
    parser.add_argument("--code-dir", type=Path, action="append", help="checkout to run larp-hf from (repeatable)")
    args = parser.parse_args()
    args.num_samples = [int(n) for n in args.num_samples.split(",")]
    args.code_dir = [path.resolve() for path in args.code_dir or [ROOT]]
    return args


def blob_images(count: int, seed: int) -> np.ndarray:
    """(count, H, W, C) uint8: a bright rectangle of a random colour on a dark background."""
    rng = np.random.default_rng(seed)
    images = np.full((count, IMAGE_SIZE, IMAGE_SIZE, CHANNELS), 20, dtype=np.uint8)
    for image in images:
        top, left = rng.integers(0, IMAGE_SIZE // 2, 2)
        height, width = rng.integers(IMAGE_SIZE // 4, IMAGE_SIZE // 2, 2)
        image[top : top + height, left : left + width] = rng.integers(64, 256, CHANNELS)
    return images


def make_inputs(work_dir: Path, train_images: int, test_images: int):
    """pipe/, features/, images/ and tokens/ in `work_dir` (made once; delete the folder to remake them)."""
    import datasets
    import torch
    from transformers import GPT2LMHeadModel

    from larp_hf import LarpPipeline, LarpVQVAEConfig, LarpVQVAEModel, encode_dataset, prior_config
    from larp_hf.models.classifier import LarpClassifierConfig, LarpClassifierModel

    if (work_dir / "tokens").is_dir():
        return
    torch.manual_seed(0)
    vqvae = LarpVQVAEModel(
        LarpVQVAEConfig(in_channels=CHANNELS, image_size=IMAGE_SIZE, hidden_channels=[8, 16, 16], stem_channels=8,
                        num_res_blocks=1, res_hidden_channels=8, codebook_size=64, codebook_dim=4)
    )  # fmt: skip
    prior = GPT2LMHeadModel(prior_config(vqvae.config, preset="tiny", tokenizer_hash=vqvae.tokenizer_hash()))
    LarpPipeline(vqvae, prior).save_pretrained(work_dir / "pipe", sample_grid=False, overwrite=True)
    config = LarpClassifierConfig(in_channels=CHANNELS, image_size=IMAGE_SIZE, hidden_channels=[8, 16], feature_dim=16)
    LarpClassifierModel(config).save_pretrained(work_dir / "features")
    (work_dir / "features" / "metrics.json").write_text('{"dataset": "blobs"}')
    features = datasets.Features({"image": datasets.Image()})
    splits = {
        split: datasets.Dataset.from_dict({"image": list(blob_images(count, seed))}, features=features)
        for split, count, seed in (("train", train_images, 0), ("test", test_images, 1))
    }
    datasets.DatasetDict(splits).save_to_disk(str(work_dir / "images"))
    tokens = encode_dataset(vqvae, datasets.load_from_disk(str(work_dir / "images"))["train"])
    datasets.DatasetDict({"train": tokens}).save_to_disk(str(work_dir / "tokens"))


def watch_anonymous_memory(pid: int, peak: list[int]):
    """Keep `peak[0]` at the largest RssAnon (KiB) of process `pid` seen, polling until it is gone."""
    path = Path(f"/proc/{pid}/status")
    while True:
        try:
            fields = dict(line.split(":", 1) for line in path.read_text().splitlines())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            return
        if "RssAnon" not in fields:  # a zombie: it has exited
            return
        peak[0] = max(peak[0], int(fields["RssAnon"].split()[0]))
        time.sleep(0.05)


def peak_memory_of_evaluate(code_dir: Path, work_dir: Path, num_samples: int) -> tuple[float, float, float, int]:
    """(peak resident MiB, peak anonymous MiB, seconds, exit status) of one `larp-hf evaluate` run from `code_dir`."""
    output_dir, cache_dir = work_dir / f"eval-{num_samples}", work_dir / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)  # real features computed in every run
    command = [
        sys.executable, "-m", "larp_hf.cli", "evaluate", str(work_dir / "pipe"), "--feature-network",
        str(work_dir / "features"), "--dataset", str(work_dir / "images"), "--token-dataset", str(work_dir / "tokens"),
        "--num-samples", str(num_samples), "--output-dir", str(output_dir), "--cache-dir", str(cache_dir),
        "--no-record-in-card", "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code_dir), "TQDM_DISABLE": "1", "HF_DATASETS_OFFLINE": "1"}
    start = time.perf_counter()
    with open(work_dir / f"evaluate-{num_samples}.log", "w") as log:
        child = subprocess.Popen(command, cwd=code_dir, env=env, stdout=log, stderr=subprocess.STDOUT)
        anonymous = [0]
        watcher = threading.Thread(target=watch_anonymous_memory, args=(child.pid, anonymous), daemon=True)
        watcher.start()
        _, status, usage = os.wait4(child.pid, 0)
        watcher.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    return usage.ru_maxrss / 1024, anonymous[0] / 1024, seconds, child.returncode  # KiB on Linux


def describe(code_dir: Path) -> str:
    commit = subprocess.run(["git", "-C", str(code_dir), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(code_dir), "status", "--porcelain", "larp_hf"], capture_output=True, text=True)
    return f"{code_dir} @ {commit.stdout.strip()}{' + changes' if dirty.stdout.strip() else ''}"


def main():
    args = parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    make_inputs(args.work_dir, args.train_images, args.test_images)
    print(f"`larp-hf evaluate`, {CHANNELS}×{IMAGE_SIZE}×{IMAGE_SIZE} images, real splits of {args.train_images:,} "
          f"(train, token dataset with mirrored grids) and {args.test_images:,} (test) images, {os.cpu_count()} CPUs")  # fmt: skip
    print("| code | samples | peak RSS (MiB) | peak anonymous RSS (MiB) | seconds | load average before / after |")
    print("| --- | --- | --- | --- | --- | --- |")
    for code_dir in args.code_dir:
        for num_samples in args.num_samples:
            load_before = os.getloadavg()[0]
            peak, anonymous, seconds, status = peak_memory_of_evaluate(code_dir, args.work_dir, num_samples)
            failed = "" if status == 0 else f" (exit {status}: see {args.work_dir}/evaluate-{num_samples}.log)"
            print(f"| {describe(code_dir)} | {num_samples:,} | {peak:,.0f}{failed} | {anonymous:,.0f} | {seconds:.0f} | "
                  f"{load_before:.2f} / {os.getloadavg()[0]:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

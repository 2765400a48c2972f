"""Peak resident memory of a short tokenizer run at two dataset sizes: does it grow with the number of images?

    python bench/bench_vqvae_memory.py [--sizes 10000,80000] [--steps 20] [--runs 3]
    git worktree add /tmp/before <commit> && python bench/bench_vqvae_memory.py --code_dir /tmp/before

Makes synthetic 64 px RGB image datasets of each size (bench/synthetic_images.py; a 500-image test split), then runs
recipes/train_vqvae.py on each for --steps steps of batch 64 (a small 8×8-grid tokenizer), once per mode:
`--pixels_in_memory never` (each batch read from the memory-mapped dataset) and `always` (the split preprocessed
once and held as one tensor), side by side. With --code_dir the recipe of that checkout runs instead, as it is (no
mode flag), e.g. the code before a change. Each run is a child process; two peaks are taken, each of the largest
single process (DataLoader workers included):
- peak RSS, from `os.wait4`: everything resident, including the pages of memory-mapped dataset files that the
  process has touched (page cache that the kernel reclaims when memory is short);
- peak anonymous RSS (`RssAnon`, sampled from /proc every 20 ms): the memory the processes hold themselves.
One warm-up run per case fills the datasets cache; the median of --runs is printed, with the growth from the smaller
to the larger dataset as a share of the extra raw pixel bytes (H·W·3 per image), and the load average, since the
machine may be shared.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import datasets
import yaml

from synthetic_images import write_synthetic_dataset


ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = 64
TOKENIZER = {
    "in_channels": 3, "image_size": IMAGE_SIZE, "hidden_channels": [16, 32, 64], "stem_channels": 16,
    "num_res_blocks": 1, "res_hidden_channels": 16, "codebook_size": 256, "codebook_dim": 16,
}  # fmt: skip


def anonymous_rss_kib(pid: int) -> int:
    """RssAnon of `pid` and of each of its descendants: the largest, in KiB (0 once they are gone)."""
    largest = 0
    try:
        with open(f"/proc/{pid}/status") as status:
            largest = next((int(line.split()[1]) for line in status if line.startswith("RssAnon:")), 0)
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            for child in children.read().split():
                largest = max(largest, anonymous_rss_kib(int(child)))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return largest


def peak_memory_mib(command: list[str], env: dict) -> tuple[float, float]:
    """Run `command`: (peak RSS, peak anonymous RSS) of its largest process, MiB."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_anonymous, done = [0], threading.Event()

    def sample():
        while not done.wait(0.02):
            peak_anonymous[0] = max(peak_anonymous[0], anonymous_rss_kib(process.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    stderr = process.stderr.read()  # until the child closes it, at its exit
    _, status, usage = os.wait4(process.pid, 0)
    done.set()
    sampler.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    return usage.ru_maxrss / 1024, peak_anonymous[0] / 1024  # kilobytes on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,80000", help="Comma-separated numbers of training images.")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="Measured runs per case (after one warm-up).")
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/bench-vqvae-memory"))
    parser.add_argument("--code_dir", type=Path, default=None, help="Run the recipe of this checkout, as it is.")
    parser.add_argument("--dataloader_num_workers", type=int, default=0)
    parser.add_argument("--modes", default="never,always", help="--pixels_in_memory values to run, comma-separated.")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    datasets.disable_progress_bars()

    for size in sizes:
        folder = args.work_dir / f"images-{size}"
        if not (folder / "dataset_dict.json").exists():
            write_synthetic_dataset(folder, size, image_size=IMAGE_SIZE)
    config = {
        "train_batch_size": 64, "eval_batch_size": 256, "max_steps": args.steps, "lr_warmup_steps": 0,
        "validation_steps": args.steps, "checkpointing_steps": args.steps, "max_validation_samples": 256,
        "num_grid_images": 8, "dataloader_num_workers": args.dataloader_num_workers, "model": TOKENIZER,
    }  # fmt: skip
    config_path = args.work_dir / "tokenizer.yaml"
    config_path.write_text(yaml.safe_dump(config))

    code_dir = (args.code_dir or ROOT).resolve()
    env = {**os.environ, "PYTHONPATH": str(code_dir), "TQDM_DISABLE": "1", "HF_DATASETS_OFFLINE": "1"}
    modes = [None] if args.code_dir else args.modes.split(",")
    raw_bytes = IMAGE_SIZE * IMAGE_SIZE * 3
    print(
        f"recipe: {code_dir / 'recipes/train_vqvae.py'}; {args.steps} steps of 64 images, {IMAGE_SIZE} px RGB, "
        f"{args.dataloader_num_workers} DataLoader workers"
    )
    extra = (sizes[-1] - sizes[0]) * raw_bytes / 2**20
    for mode in modes:
        name = f"--pixels_in_memory {mode}" if mode else "as it is"
        medians = []
        for size in sizes:
            with tempfile.TemporaryDirectory() as output_dir:
                command = [sys.executable, str(code_dir / "recipes" / "train_vqvae.py"), "--config", str(config_path)]
                command += ["--dataset", str(args.work_dir / f"images-{size}"), "--overwrite_output_dir"]
                command += ["--output_dir", output_dir] + (["--pixels_in_memory", mode] if mode else [])
                peaks = [peak_memory_mib(command, env) for _ in range(args.runs + 1)][1:]
            medians.append([statistics.median(peak[kind] for peak in peaks) for kind in (0, 1)])
            print(
                f"  {name}: {size:6d} images: peak RSS {medians[-1][0]:6.0f} MiB, anonymous {medians[-1][1]:6.0f} MiB"
                f" (medians; runs {'; '.join(f'{rss:.0f}, {anonymous:.0f}' for rss, anonymous in peaks)}; load average "
                f"{os.getloadavg()[0]:.2f})"
            )
        for kind, label in ((0, "peak RSS"), (1, "anonymous")):
            growth = medians[-1][kind] - medians[0][kind]
            print(f"  {name}: {label} grows {growth:+.0f} MiB for {extra:.0f} MiB more raw pixels: {growth / extra:.1%}")
    print(f"finished {time.strftime('%H:%M:%S')}, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

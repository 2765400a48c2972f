"""Encoding throughput of recipes/encode_dataset.py on one process against two, side by side in one run.

    python bench/bench_encode_processes.py [--num_images 10000] [--runs 3]

Encodes the first --num_images of Fashion-MNIST's test split (written once as a save_to_disk folder) with the quick
config's tokenizer (untrained: encoding costs the same), flips included, in turns:
- 1 process: `python recipes/encode_dataset.py` (torch's threads on every core);
- 1 process, --num_proc 1: the same, the images decoded and resized by a DataLoader worker;
- 2 processes: `torchrun --nproc_per_node 2` (one thread each, as torchrun sets), each encoding its own half.
Every run starts with an empty datasets cache, so it really encodes. Prints the median images per second (from the
recipe's encode_seconds) and whole-process wall time of each, the ratios to one process, and the load average, since
the machine may be shared. The token datasets of all runs are checked to be identical, row for row.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import datasets
import yaml


ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "vqvae_fashion_mnist_quick.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def encode(launcher: list[str], flags: list[str], work_dir: Path, output_dir: Path) -> tuple[float, float]:
    """(images per second of encoding, wall seconds of the whole command); the output is left in output_dir."""
    command = [*launcher, str(ROOT / "recipes" / "encode_dataset.py"), "--vqvae", str(work_dir / "vqvae")]
    command += ["--dataset", str(work_dir / "images"), "--output_dir", str(output_dir), *flags]
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "HF_DATASETS_CACHE": cache, "TQDM_DISABLE": "1", "ACCELERATE_USE_CPU": "1"}
        start = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    summary = json.loads((output_dir / "larp_token_dataset.json").read_text())
    return sum(summary["splits"].values()) / summary["encode_seconds"], wall


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3, help="Measured runs of each variant (after one warm-up).")
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/bench-encode-processes"))
    args = parser.parse_args()
    datasets.disable_progress_bars()

    from larp_hf import LarpVQVAEConfig, LarpVQVAEModel
    from larp_hf.data import load_image_dataset

    images_dir = args.work_dir / "images"
    if not (images_dir / "state.json").exists():
        test = load_image_dataset("fashion_mnist", split="test")
        test.select(range(min(args.num_images, len(test)))).save_to_disk(str(images_dir))
    LarpVQVAEModel(LarpVQVAEConfig(**yaml.safe_load(CONFIG.read_text())["model"])).save_pretrained(args.work_dir / "vqvae")

    python = [sys.executable]
    variants = {
        "1 process": (python, []),
        "1 process, --num_proc 1": (python, ["--num_proc", "1"]),
        "2 processes (torchrun)": (None, []),
    }

    def run(name: str, output_dir: Path):
        launcher, flags = variants[name]
        if launcher is None:  # a new port each time
            launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}"]
        return encode(launcher, flags, args.work_dir, output_dir)

    results, loads, outputs = {name: [] for name in variants}, [], {}
    for name in variants:
        outputs[name] = args.work_dir / f"tokens-{len(outputs)}"
        run(name, outputs[name])  # warm-up: imports, page cache
    for _ in range(args.runs):  # in turns, so that a change in the machine's load hits every variant alike
        for name in variants:
            results[name].append(run(name, outputs[name]))
            loads.append(os.getloadavg()[0])
    tokens = [datasets.load_from_disk(str(folder))["train"] for folder in outputs.values()]
    assert all(other["input_ids"] == tokens[0]["input_ids"] for other in tokens[1:]), "different codes"

    print(
        f"{len(tokens[0])} Fashion-MNIST images (and their mirrors) through the quick tokenizer, {os.cpu_count()} cores;"
        f" load average during the runs {min(loads):.2f}-{max(loads):.2f}; token datasets identical row for row"
    )
    reference_rate = statistics.median(rate for rate, _ in results["1 process"])
    reference_wall = statistics.median(wall for _, wall in results["1 process"])
    for name, runs in results.items():
        rate, wall = statistics.median(r for r, _ in runs), statistics.median(w for _, w in runs)
        print(
            f"{name:24s} {rate:7.1f} images/s encoding ({rate / reference_rate:4.2f}x one process), whole command "
            f"{wall:5.1f} s ({wall / reference_wall:4.2f}x); runs: {', '.join(f'{r:.0f}' for r, _ in runs)} images/s"
        )


if __name__ == "__main__":
    main()

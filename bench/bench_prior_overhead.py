"""The prior recipe's training step against the bare PyTorch loop of bench/baseline_prior.py, step for step.

    python bench/bench_prior_overhead.py --vqvae outputs/vqvae-fashion-mnist-quick \
        --token_dataset outputs/tokens-fashion-mnist-quick [--steps 40] [--rounds 2] [--mixed_precision no]

Runs recipes/train_prior.py with the quick Fashion-MNIST config (the `small` preset's 3.3M-parameter GPT-2, batch
64), unconditional as the baseline is (`--num_classes 0`: BOS then the 64 codes), on --token_dataset, and after each
of its optimizer steps one step of the bare loop (`baseline_prior.training_steps`: the same GPT-2, batch 64, shuffled
codes after BOS, forward, backward, AdamW, schedule, zero_grad) in the same process, at the same precision
(--mixed_precision: `no` is fp32 for both, `bf16` CPU autocast for both). Single steps in turn, in one process,
compare like with like even when the machine's load drifts (it may be shared); separate runs cannot.

A recipe step is the time from the end of the bare step before it to the recipe's next `TrainingState.count_step`:
reading and collating the batch (flip pick, class dropout, attention-dropout mask), the forward and backward, the
loss check, clipping, the optimizer and the schedule, logging and the progress bar. The bare loop draws its dropout
from a forked random state, so the recipe trains exactly as it would alone. Each round runs the recipe without flips
(as the Fashion-MNIST quick config, whose images are not mirror-symmetric) and with `--flip_augment` (which needs a
token dataset encoded with mirrored codes; without them the two variants are the same). The first --warmup steps are
left out. Prints the median step times and the recipe's cost relative to the bare loop: the median of the per-step
ratios (each recipe step against the bare step right after it), and the ratio of the medians.
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "recipes" / "configs" / "prior_fashion_mnist_quick.yaml"
VARIANTS = {"recipe": ["--no-flip_augment"], "recipe+flips": ["--flip_augment"]}


def interleaved_step_times(args, recipe_flags: list[str]) -> dict[str, list[float]]:
    """Seconds of each recipe step and of the bare step after it, both in this process."""
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "recipes"))
    sys.path.insert(0, str(ROOT / "bench"))
    import train_prior
    from baseline_prior import baseline_model, training_steps

    from larp_hf.data import load_token_dataset, token_dataset_metadata
    from larp_hf.training.state import TrainingState

    train = load_token_dataset(args.token_dataset)["train"]
    codes = np.asarray(train.with_format("numpy")["input_ids"])
    codebook_size = token_dataset_metadata(train)["codebook_size"]
    torch.manual_seed(0)
    bare_steps = training_steps(baseline_model(codebook_size, codes.shape[1]), codes, bos=codebook_size, batch_size=64)
    bf16 = args.mixed_precision == "bf16"

    times = {"recipe": [], "bare": []}
    resumed = []  # when the recipe's loop got control back
    count_step = TrainingState.count_step

    def count_step_then_bare_step(self):
        count_step(self)
        now = time.perf_counter()
        if resumed:
            times["recipe"].append(now - resumed[-1])
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.random.fork_rng(devices=[]), autocast:
            next(bare_steps)
        resumed.append(time.perf_counter())
        times["bare"].append(resumed[-1] - now)

    TrainingState.count_step = count_step_then_bare_step
    with tempfile.TemporaryDirectory(dir=args.scratch_dir) as output_dir:
        train_prior.main(
            [
                "--config", str(CONFIG), "--vqvae", args.vqvae, "--token_dataset", args.token_dataset,
                "--output_dir", output_dir, "--max_steps", str(args.steps), "--validation_steps", str(args.steps),
                "--checkpointing_steps", str(args.steps), "--max_validation_samples", "64",
                "--mixed_precision", args.mixed_precision, "--num_classes", "0", *recipe_flags,
            ]
        )  # fmt: skip
    times["bare"] = times["bare"][1:]  # the first recipe step has no start stamp: pair the rest
    return times


def run_variant(args, variant: str) -> dict[str, list[float]]:
    """One run of the recipe (with the bare loop between its steps), in a process of its own."""
    command = [sys.executable, __file__, "--vqvae", args.vqvae, "--token_dataset", args.token_dataset]
    command += ["--steps", str(args.steps), "--mixed_precision", args.mixed_precision, "--child", variant]
    if args.scratch_dir is not None:
        command += ["--scratch_dir", args.scratch_dir]
    # The progress bar stays on, as in a user's run (its output is captured).
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    times = json.loads(result.stdout.strip().splitlines()[-1])
    return {name: values[args.warmup :] for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vqvae", required=True, help="The tokenizer that made --token_dataset.")
    parser.add_argument("--token_dataset", required=True)
    parser.add_argument("--steps", type=int, default=40, help="Optimizer steps per run (of each loop).")
    parser.add_argument("--warmup", type=int, default=5, help="Steps of each run left out.")
    parser.add_argument("--rounds", type=int, default=2, help="Runs of each variant, in turns.")
    parser.add_argument("--mixed_precision", default="no", choices=["no", "bf16"], help="For both loops.")
    parser.add_argument("--scratch_dir", default=None, help="Where the recipe's runs write (a temporary folder).")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads (default: torch's). On a machine shared with other jobs, 1 keeps the timings meaningful: "
        "2 threads contending for 2 busy cores wait at every OpenMP barrier.",
    )  # fmt: skip
    parser.add_argument("--child", default=None, choices=sorted(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps <= args.warmup + 2:
        parser.error("--steps must exceed --warmup + 2.")
    if args.threads is not None:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # read by torch in the runs' processes

    if args.child is not None:  # one run, in its own process: print the step times
        print(json.dumps(interleaved_step_times(args, VARIANTS[args.child])))
        return

    import torch

    runs = {name: [] for name in VARIANTS}
    for turn in range(args.rounds):
        for name in VARIANTS:
            times = run_variant(args, name)
            runs[name].append(times)
            print(
                f"round {turn + 1}/{args.rounds}, {name}: recipe {statistics.median(times['recipe']) * 1e3:.0f} ms, "
                f"bare {statistics.median(times['bare']) * 1e3:.0f} ms; load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )

    precision = "fp32" if args.mixed_precision == "no" else "bf16 autocast"
    print(
        f"\nSmall prior, batch 64, {precision}, {torch.get_num_threads()} threads; {args.rounds} run(s) of "
        f"{args.steps} steps per variant ({args.warmup} warm-up), each step followed by a bare-loop step:"
    )
    for name, variant_runs in runs.items():
        recipe = [step for times in variant_runs for step in times["recipe"]]
        bare = [step for times in variant_runs for step in times["bare"]]
        paired = [r / b for times in variant_runs for r, b in zip(times["recipe"], times["bare"])]
        recipe_ms, bare_ms = statistics.median(recipe) * 1e3, statistics.median(bare) * 1e3
        print(
            f"  {name:12s} recipe {recipe_ms:5.0f} ms, bare {bare_ms:5.0f} ms a step; recipe / bare: "
            f"{statistics.median(paired):.3f} (per-step ratios), {recipe_ms / bare_ms:.3f} (medians)"
        )


if __name__ == "__main__":
    main()

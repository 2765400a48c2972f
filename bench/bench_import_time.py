"""Start-up time of `import larp_hf` and `larp-hf --help` against `import torch`, side by side in one run.

    python bench/bench_import_time.py [--repeats 5] [--baseline_tree /path/to/an/older/checkout]

Each statement runs in a fresh interpreter (`python -c`, PYTHONPATH set to the tree measured), in turn with the
others, --repeats rounds; the median wall time of each is printed, with `uptime`'s load average (the machine is
shared: compare rows of one run, not runs). The ratio column is each row's median over `import torch`'s, which is
what the rows are bound by once they load torch.

- `import torch`: the floor of anything that touches a model.
- `import larp_hf`: the package alone; its names load from their modules on first use (larp_hf/lazy_exports.py).
- `larp-hf --help` (`python -m larp_hf.cli --help`): the parser of every sub-command, none of them run.
- `from larp_hf import LarpPipeline`: what a sampling script pays (torch, transformers, the pipeline).
- `import larp_hf; AutoModel`: `from transformers import AutoModel` after `import larp_hf`, which registers larp_hf's
  models with the Auto classes as transformers loads.

--baseline_tree runs the same statements against another checkout (e.g. `git worktree add /tmp/before COMMIT`), in
the same rounds, for a before/after table.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
STATEMENTS = {
    "import torch": "import torch",
    "import larp_hf": "import larp_hf",
    "larp-hf --help": "import sys; sys.argv = ['larp-hf', '--help']; import larp_hf.cli as c; c.main()",
    "from larp_hf import LarpPipeline": "from larp_hf import LarpPipeline",
    "import larp_hf; AutoModel": "import larp_hf; from transformers import AutoModel",
}


def wall_time(statement: str, tree: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], env=env, cwd=tree, check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline_tree", type=Path, default=None, help="another checkout, timed alongside")
    args = parser.parse_args()
    trees = {"this tree": ROOT, **({"baseline": args.baseline_tree.resolve()} if args.baseline_tree else {})}
    times = {(tree, name): [] for tree in trees for name in STATEMENTS}
    load = os.getloadavg()
    for _ in range(args.repeats):
        for tree, path in trees.items():
            for name, statement in STATEMENTS.items():
                times[tree, name].append(wall_time(statement, path))
    print(f"load average at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; now: {os.getloadavg()[0]:.2f}")
    print(f"median of {args.repeats} fresh interpreters, seconds (x: over `import torch` of the same tree)")
    for tree in trees:
        torch_median = statistics.median(times[tree, "import torch"])
        print(f"\n{tree}:")
        for name in STATEMENTS:
            median = statistics.median(times[tree, name])
            print(f"  {name:36s} {median:6.2f} s  {median / torch_median:5.2f}x")


if __name__ == "__main__":
    main()

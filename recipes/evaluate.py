#!/usr/bin/env python
"""Evaluate a LarpPipeline: the same command as `larp-hf evaluate` (see `python recipes/evaluate.py --help`).

    python recipes/evaluate.py outputs/larp-fashion-mnist-quick --num-samples 10000 \
        --token-dataset outputs/tokens-fashion-mnist-quick --output-dir outputs/eval-fashion-mnist-quick

Under `accelerate launch` (e.g. `accelerate launch --num_processes 8 recipes/evaluate.py ...`) each process samples
its share of the batches of the one seeded sequence and the main process scores what they gather: the same numbers as
one process, sooner. (torchrun works too; on CPUs set ACCELERATE_USE_CPU=1, as `accelerate launch --cpu` does.)

The work is in `larp_hf.evaluation` (`evaluate_pipeline`, then `write_evaluation_reports` and, for a local pipeline
folder, `record_evaluation_in_card`); this file and the console script parse the same arguments.
"""

import sys

from larp_hf.cli import main


if __name__ == "__main__":
    main(["evaluate", *sys.argv[1:]])

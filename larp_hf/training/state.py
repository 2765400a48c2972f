"""What a resumed run gets back beside the Accelerator's objects: the training state and the random states."""

import contextlib
import math
import random
import time

import numpy as np
import torch


class TrainingState:
    """
    What the Accelerator does not know about: the step count, the time spent, the best validation loss and the
    validation history, so a resumed run continues all four, and `started_from`: where a run started from another
    run's checkpoint came from (the checkpoint, its step and lineage; None for a run started afresh), which its
    checkpoints and metrics.json carry on. `resume_or_start_afresh` makes one, registers it for checkpointing and sets
    the two facts about the run itself that `save_checkpoint` writes into each manifest: `lineage` (the runs that led
    to this one, see `checkpoint_format.py`) and `config` (the run's settings).
    """

    def __init__(self):
        self.step = 0
        self.train_seconds = 0.0
        self.best_val_loss = math.inf
        self.best_step = 0
        self.history = []  # one entry per validation: its metrics, `step` and `train_seconds`
        self.started_from = None
        self.lineage = []
        self.config = {}
        self._clock_start = None

    def start_clock(self):
        """Start timing the training loop, counting on from the time a resumed run had spent already."""
        self._clock_start = time.perf_counter() - self.train_seconds

    def count_step(self):
        """Count an optimizer step and the time spent up to it."""
        self.step += 1
        self.train_seconds = time.perf_counter() - self._clock_start

    def state_dict(self):
        return {
            "step": self.step,
            "train_seconds": self.train_seconds,
            "best_val_loss": self.best_val_loss,
            "best_step": self.best_step,
            "history": self.history,
            "started_from": self.started_from,
        }

    def load_state_dict(self, state):
        self.step = int(state["step"])
        self.train_seconds = float(state["train_seconds"])
        self.best_val_loss = float(state["best_val_loss"])
        self.best_step = int(state["best_step"])
        self.history = list(state["history"])
        self.started_from = state.get("started_from")  # absent in checkpoints of older versions


def capture_rng_state() -> dict:
    """This process's Python, NumPy, torch and CUDA random states, in a form `checkpoint_format.write_state` stores."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict):
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserve_random_state():
    """
    Run a block (validation) without moving any global random state, so that training draws the same numbers
    whether or not, and however often, it validates. Iterating a DataLoader alone draws a seed from torch's global
    generator; a run validated at its last step and then extended would otherwise not match a longer run.
    """
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)

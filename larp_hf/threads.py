"""
How many threads torch uses while larp_hf samples (and, through the same helper, encodes).

torch's intra-op threads meet at the end of every operation, and a sampling step is a few hundred small operations:
when a neighbour process takes one of their cores, every step waits for the pre-empted thread, so two threads beside
one busy process can run several times slower than one thread does (`bench/bench_sampling_neighbour.py` measures it,
alone and beside a busy neighbour, with this policy and with torch's default). So, unless told otherwise:

- on a machine (or CPU affinity) of at most `SMALL_MACHINE_CPUS` CPUs, one thread: the second core buys little on
  the small per-step products and costs most when a neighbour appears;
- on a larger one, torch's count, less the CPUs other processes keep busy at the start of the call (runnable threads
  of other processes in `/proc/loadavg`, the lowest of a few readings; the 1-minute load average where there is no
  `/proc`), at least one.

The knobs, first match wins:

1. a `num_threads=` argument (`sample_tokens(..., num_threads=4)`),
2. the environment variable `LARP_HF_NUM_THREADS` (a positive integer),
3. a thread count the user chose is left alone: `OMP_NUM_THREADS` or `MKL_NUM_THREADS` set, or `torch.set_num_threads`
   called with another count than torch had when larp_hf was imported (a count equal to torch's own default cannot be
   told from it: pin that one with `LARP_HF_NUM_THREADS`),
4. the policy above.

The count is set for the duration of the call (`torch_threads`) and restored after it. It covers the sampling loop
(`larp_hf.generation.sample_tokens`), the hundreds of small steps a neighbour stalls; the tokenizer's decode, one
batched pass whose float sums depend on the thread count, runs at the caller's count and so matches the library's own.
The prior's float sums may depend on the count too, so where the load (and with it the count) varies between runs a
near-tie may rarely tip a code: set `LARP_HF_NUM_THREADS` for reruns that must match bit for bit.
"""

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import torch


NUM_THREADS_ENV = "LARP_HF_NUM_THREADS"
USER_THREAD_ENVS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
SMALL_MACHINE_CPUS = 2
# torch's count before larp_hf set any: a different count at call time was set by the user.
TORCH_THREADS_AT_IMPORT = torch.get_num_threads()


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), else `os.cpu_count()`."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _own_running_threads() -> int:
    count = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the thread ended between the listing and the read
            continue
        state = text[text.rfind(")") + 2 :].split(" ", 1)[0]  # after "pid (name) "; a name may hold spaces
        count += state == "R"
    return count


def busy_cpus(readings: int = 3, interval: float = 0.002) -> float:
    """
    How many CPUs other processes keep busy now: the runnable threads in `/proc/loadavg` less this process's own
    (which may still spin after its last parallel region), the lowest of `readings` readings `interval` seconds apart.
    Without `/proc`, the 1-minute load average (0 where there is none).
    """
    try:
        lowest = None
        for reading in range(readings):
            if reading:
                time.sleep(interval)
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
            others = max(0, running - _own_running_threads())
            lowest = others if lowest is None else min(lowest, others)
        return float(lowest)
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def _positive_int(value, what: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer (a thread count), got {value!r}.")
    return value


def user_chose_threads() -> bool:
    """Whether the thread count was chosen by the user (see the module docstring), so larp_hf must leave it."""
    return any(os.environ.get(name) for name in USER_THREAD_ENVS) or torch.get_num_threads() != TORCH_THREADS_AT_IMPORT


def choose_num_threads(num_threads: int | None = None, batched: bool = False) -> int | None:
    """
    The thread count to sample with: `num_threads` if given, else `$LARP_HF_NUM_THREADS`, else `None` (leave torch's
    count) when the user chose one, else the module's policy for this machine's CPUs and their load now.

    `batched`: for whole batches of convolutions (encoding images), which gain from a second thread where decoding one
    token at a time does not: a small machine is then left its free CPUs too, rather than one thread.
    """
    if num_threads is not None:
        return _positive_int(num_threads, "`num_threads`")
    if os.environ.get(NUM_THREADS_ENV, "").strip():
        return _positive_int(os.environ[NUM_THREADS_ENV], f"The environment variable {NUM_THREADS_ENV}")
    if user_chose_threads():
        return None
    cpus = available_cpus()
    if cpus <= SMALL_MACHINE_CPUS and not batched:
        return 1
    free = cpus - round(busy_cpus())
    return max(1, min(torch.get_num_threads(), free))


@contextlib.contextmanager
def torch_threads(num_threads: int | None = None, batched: bool = False) -> Iterator[int]:
    """
    Run the block with `choose_num_threads(num_threads, batched)` torch threads (yields the count in force) and
    restore the count after it.

        with torch_threads():
            codes = sample_tokens(...)
    """
    chosen = choose_num_threads(num_threads, batched)
    previous = torch.get_num_threads()
    if chosen is None or chosen == previous:
        yield previous
        return
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(previous)


__all__ = [
    "NUM_THREADS_ENV",
    "SMALL_MACHINE_CPUS",
    "available_cpus",
    "busy_cpus",
    "choose_num_threads",
    "torch_threads",
    "user_chose_threads",
]

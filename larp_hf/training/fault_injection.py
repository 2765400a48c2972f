"""
Named points of a run's saves where tests kill the process, as a power cut would. With LARP_HF_KILL_AT=NAME (or
NAME#N: its N-th passage) in the environment, `fault_point(NAME)` kills the process with SIGKILL; without the
variable it does nothing. tests/recipes/test_fault_injection.py interrupts checkpoints, the final model and the
replacement of an old run at each of their points and checks what the next run finds.
"""

import os
import signal


_passages: dict[str, int] = {}


def fault_point(name: str):
    """Kill this process here if LARP_HF_KILL_AT names this point (and this passage of it); otherwise do nothing."""
    wanted = os.environ.get("LARP_HF_KILL_AT")
    if not wanted:
        return
    _passages[name] = _passages.get(name, 0) + 1
    target, _, count = wanted.partition("#")
    if target == name and _passages[name] == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["fault_point"]

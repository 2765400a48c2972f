"""
The recipes run as scripts, each in a process of its own forked from a server that has imported them (with torch,
transformers, datasets and accelerate) once, so that a run pays for its own work and not for a fresh interpreter's
imports. A forked run is the script's `main(argv)` with its own `sys.argv`, environment, working folder, stdout,
stderr and exit status, as `python recipes/NAME.py ARGS` has them; `processes=2` forks two of them with torchrun's
environment, a gloo world as `torchrun --nproc_per_node 2` makes it.

What only a fresh interpreter shows (the `if __name__ == "__main__"` entry point, `accelerate launch` and torchrun
themselves) is shown by the tests that still launch each script once as users launch it: train_vqvae.py under
`accelerate launch` (test_train_vqvae's test_launch_*[1]), train_prior.py and train_classifier.py under torchrun
with 2 processes (test_train_prior's test_launch_*[2], test_train_classifier's two-process test), encode_dataset.py
under `python` (tests/recipes/conftest.py's `tokens`).
"""

import importlib
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path

import torch


ROOT = Path(__file__).resolve().parents[2]
RECIPE_NAMES = ("train_vqvae", "train_prior", "train_classifier", "encode_dataset")
# The scripts that are the console script, with the command they put first: `larp-hf ARGS`, and recipes/evaluate.py,
# `larp-hf evaluate ARGS` (not imported as a module: it would take the name of the `evaluate` library).
CLI_SCRIPTS = {"larp-hf": [], "evaluate": ["evaluate"]}
# What a test's subprocess gets on top of the test process's environment (tests/recipes/test_train_vqvae.py's run).
# ACCELERATE_USE_CPU makes Accelerate read torchrun's world as a gloo CPU world (else every rank runs alone).
RUN_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1", "ACCELERATE_USE_CPU": "1"}


def import_recipe(name: str):
    """A recipe script imported as a module, to call its parse_args or main in this process."""
    sys.path.insert(0, str(ROOT / "recipes"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "recipes"))


# The server imports the miniature recipe and this module (and through it the recipes) before it forks anything.
RECIPES = {name: import_recipe(name) for name in RECIPE_NAMES}
_context = multiprocessing.get_context("forkserver")
# The server is a fresh interpreter: without ROOT ahead of site-packages on its path it would import another
# `tests` package (torch-fidelity's wheel installs one at the top level of site-packages) instead of ours.
_paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
os.environ["PYTHONPATH"] = os.pathsep.join(_paths)
_context.set_forkserver_preload(["tests.recipes.tiny_training", __name__])


def start(target, *args) -> multiprocessing.Process:
    """Start `target(*args)` in a process forked from the preloaded server."""
    process = _context.Process(target=target, args=args)
    process.start()
    return process


def redirect_output(stdout_path: str, stderr_path: str | None = None):
    """
    The child's file descriptors 1 and 2 (which the server's loggers and C code write to) and sys.stdout/stderr, to
    files of its own; without `stderr_path` both go to one file.
    """
    stdout = open(stdout_path, "w", buffering=1)
    stderr = open(stderr_path, "w", buffering=1) if stderr_path else stdout
    os.dup2(stdout.fileno(), 1)
    os.dup2(stderr.fileno(), 2)
    sys.stdout, sys.stderr = stdout, stderr


def _script_main(name: str, argv: list[str], environment: dict, cwd: str, stdout_path: str, stderr_path: str):
    from larp_hf import cli
    from larp_hf.training import run_lock

    redirect_output(stdout_path, stderr_path)
    # A process forked from the server inherits its default start method, "forkserver"; the script's own DataLoader
    # workers and pools must start as in a fresh interpreter (by default, forked from the process that needs them).
    multiprocessing.set_start_method(None, force=True)
    os.environ.clear()
    os.environ.update(environment)
    if "OMP_NUM_THREADS" in environment:  # read when torch starts, which the server did before this process existed
        torch.set_num_threads(int(environment["OMP_NUM_THREADS"]))
    os.chdir(cwd)
    # argparse's `prog` and the run lock's `command` come from sys.argv, as in the script.
    sys.argv = ["larp-hf" if name == "larp-hf" else str(ROOT / "recipes" / f"{name}.py"), *argv]
    try:
        if name in CLI_SCRIPTS:
            cli.main([*CLI_SCRIPTS[name], *argv])
        else:
            RECIPES[name].main(argv)
    finally:
        run_lock.release_held_locks()  # what interpreter exit does; a forked child leaves through os._exit
        sys.stdout.flush()
        sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_environment(processes: int, port: int, rank: int) -> dict:
    """The variables `torchrun --nproc_per_node PROCESSES` gives rank RANK on one machine."""
    return {
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(processes),
        "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(processes), "GROUP_RANK": "0", "OMP_NUM_THREADS": "1",
    }  # fmt: skip


def run_recipe(
    name: str, *args, processes: int = 1, expect_success: bool = True, cwd: Path = ROOT, timeout: float = 600
) -> subprocess.CompletedProcess:
    """
    `python recipes/NAME.py ARGS` (or `torchrun --nproc_per_node PROCESSES recipes/NAME.py ARGS`), forked; NAME
    "larp-hf" is the console script (larp_hf.cli.main), "evaluate" recipes/evaluate.py. The returncode is the first
    non-zero exit status of its processes, stdout and stderr are theirs, rank by rank.
    """
    argv = [str(arg) for arg in args]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix=f"{name}-") as logs:
        ranks = []
        for rank in range(processes):
            environment = {**os.environ, **RUN_ENVIRONMENT}
            if processes > 1:
                environment.update(torchrun_environment(processes, port, rank))
            paths = (f"{logs}/stdout-{rank}", f"{logs}/stderr-{rank}")
            ranks.append((start(_script_main, name, argv, environment, str(cwd), *paths), paths))
        join_as_torchrun_does([process for process, _ in ranks], timeout)
        stdout = "".join(read(paths[0]) for _, paths in ranks)
        stderr = "".join(read(paths[1]) for _, paths in ranks)
    codes = [process.exitcode for process, _ in ranks]
    returncode = next((code for code in codes if code != 0), 0)
    script = name if name == "larp-hf" else f"recipes/{name}.py"
    command = [*(["python"] if processes == 1 else ["torchrun", f"--nproc_per_node={processes}"]), script, *argv]
    result = subprocess.CompletedProcess(command, returncode, stdout, stderr)
    if expect_success:
        assert returncode == 0, f"{' '.join(command)} failed ({codes}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return result


def join_as_torchrun_does(processes: list[multiprocessing.Process], timeout: float, grace: float = 10):
    """Wait for every process; once one has failed (or `timeout` has passed), kill those still running after `grace`."""
    deadline = time.monotonic() + timeout
    running = list(processes)
    while running:
        failed = any(process.exitcode not in (None, 0) for process in processes)
        limit = min(deadline, time.monotonic() + grace) if failed else deadline
        finished = wait([process.sentinel for process in running], timeout=max(0.0, limit - time.monotonic()))
        if not finished:
            if time.monotonic() < limit:
                continue
            for process in running:
                process.kill()
        for process in running:
            if process.sentinel in finished or not finished:
                process.join()
        running = [process for process in running if process.exitcode is None]


def read(path: str) -> str:
    return Path(path).read_text() if Path(path).exists() else ""

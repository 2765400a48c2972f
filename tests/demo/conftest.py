"""Serving a demo in a subprocess for the tests: a free port on localhost, a bounded wait, always killed."""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

from ..conftest import make_tiny_pipeline


# Gradio reports usage unless told not to (it reads this when a page is built); tests never touch the network.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
SERVER_START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(args: list, log_path, cwd=None):
    """
    Run `python ARGS` with GRADIO_SERVER_PORT set to a free port and yield (url, launched_at) once the page answers;
    the process is killed on the way out, whatever happened.
    """
    port = free_port()
    env = {
        **os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
    }  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "w") as log:
        launched_at = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, *map(str, args)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = launched_at + SERVER_START_TIMEOUT_S
            while True:
                if process.poll() is not None:
                    pytest.fail(f"the demo exited with code {process.returncode}:\n{open(log_path).read()[-3000:]}")
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"the demo did not answer within {SERVER_START_TIMEOUT_S} s:\n{open(log_path).read()[-3000:]}"
                    )
                try:
                    urllib.request.urlopen(url, timeout=2).close()
                    break
                except OSError:
                    time.sleep(0.2)
            yield url, launched_at
        finally:
            process.kill()
            process.wait(timeout=30)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """
    The tiny models gain nothing from threads, and on a busy 2-core machine torch's threads wait on each other: one
    guided sample of 6 images took 8 s with 2 threads and 0.2 s with 1. The served demos get OMP_NUM_THREADS=1.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def class_conditional_pipeline_dir(tmp_path_factory):
    """A saved tiny pipeline with 3 classes (so the page shows the class selector and the guidance slider)."""
    folder = tmp_path_factory.mktemp("demo") / "tiny-pipeline"
    make_tiny_pipeline(num_classes=3).save_pretrained(folder, sample_grid=False)
    return folder

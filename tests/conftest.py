import os

# Tests never touch the network: everything they load is made here or shipped by Debian.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import pytest  # noqa: E402


def spread_features(model):
    """
    An untrained classifier as a feature network whose features spread as a trained one's do: default init shrinks
    them through its layers to a std of ~1e-7, which evaluation refuses as degenerate (FID would round to 0). Seeded
    He-normal weights keep their scale; a bias of 1 keeps the last ReLU open.
    """
    import torch

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.normal_(0.0, (2 / module.weight[0].numel()) ** 0.5, generator=generator)
            if isinstance(module, torch.nn.Linear):
                module.bias.fill_(1.0)
    return model


def make_images(num_images: int, size: int = 16, channels: int = 1, seed: int = 0) -> list[PIL.Image.Image]:
    """Blobby images with structure a tiny VQ-VAE can learn: a bright rectangle on a dark background."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(num_images):
        array = np.full((size, size, channels), 20, dtype=np.uint8)
        top, left = rng.integers(0, size // 2, 2)
        height, width = rng.integers(size // 4, size // 2, 2)
        array[top : top + height, left : left + width] = rng.integers(128, 256, channels)
        images.append(PIL.Image.fromarray(array[..., 0] if channels == 1 else array))
    return images


@pytest.fixture(scope="session")
def tiny_image_dataset_dir(tmp_path_factory) -> str:
    """A save_to_disk DatasetDict with `train` (64) and `test` (16) splits of 16×16 grey images and 2 labels."""
    folder = tmp_path_factory.mktemp("tiny_images")
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    splits = {}
    for split, count, seed in (("train", 64, 0), ("test", 16, 1)):
        images = make_images(count, seed=seed)
        splits[split] = datasets.Dataset.from_dict(
            {"image": images, "label": [i % 2 for i in range(count)]}, features=features
        )
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return str(folder)


def make_tiny_pipeline(num_classes: int = 0, codebook_size: int = 32, seed: int = 0, **prior_overrides):
    """An untrained 16×16 grey pipeline: a 2×-downsampling tokenizer (8×8 grid) and a `tiny` GPT-2 prior."""
    import torch
    from transformers import GPT2LMHeadModel

    from larp_hf import LarpPipeline, LarpVQVAEConfig, LarpVQVAEModel, prior_config

    torch.manual_seed(seed)
    vqvae = LarpVQVAEModel(
        LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[16], stem_channels=8, codebook_size=codebook_size)
    )
    config = prior_config(
        vqvae.config, preset="tiny", num_classes=num_classes, tokenizer_hash=vqvae.tokenizer_hash(), **prior_overrides
    )
    return LarpPipeline(vqvae, GPT2LMHeadModel(config))


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: tiny models gain nothing from threads, and on a busy machine torch's threads
    wait on each other (`pytestmark = pytest.mark.usefixtures("one_torch_thread")` in a module)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_pipeline():
    return make_tiny_pipeline()


# A server for `python_without_larp_hf`: it imports what a stock transformers user's script imports, never larp_hf,
# and runs each job it reads (one JSON line) in a child it forks, answering with the child's exit status.
STOCK_PYTHON_SERVER = r"""
import json, os, sys, traceback
import PIL.Image, torch, transformers
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM

for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.chdir(job["cwd"])
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)
        sys.argv = ["-c", *job["args"]]
        code = 0
        try:
            exec(compile(job["script"], "<string>", "exec"), {"__name__": "__main__"})
        except SystemExit as stop:
            if stop.code is not None and not isinstance(stop.code, int):
                print(stop.code, file=sys.stderr)  # what Python does with SystemExit("message")
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print("job done", json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
"""


@pytest.fixture(scope="session")
def python_without_larp_hf(tmp_path_factory):
    """
    `python -c SCRIPT ARGS` as a user's own script that never imports larp_hf runs it (`run(script, *args,
    cwd=...)` -> CompletedProcess): each call is a process forked from one server that imported torch and
    transformers once, so a test pays for its script, not for a fresh interpreter's imports. Dynamic modules
    (trust_remote_code) land in a folder of the session's, not in the user's cache.
    """
    import json
    import select
    import subprocess
    import sys
    import time

    folder = tmp_path_factory.mktemp("python_without_larp_hf")
    environment = {**os.environ, "HF_MODULES_CACHE": str(folder / "modules")}  # read when transformers is imported
    server = subprocess.Popen(
        [sys.executable, "-c", STOCK_PYTHON_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
        cwd=folder, env=environment,
    )  # fmt: skip
    jobs, pending = 0, b""

    def answer(timeout: float) -> dict:
        nonlocal pending
        deadline = time.monotonic() + timeout
        while True:
            line, newline, rest = pending.partition(b"\n")
            if newline:
                pending = rest
                if line.startswith(b"job done "):  # the server's own output, if any, is not an answer
                    return json.loads(line.removeprefix(b"job done "))
                continue
            ready, _, _ = select.select([server.stdout], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(server.stdout.fileno(), 65536) if ready else b""
            assert chunk, f"no answer in {timeout} s from the server (exit status {server.poll()})"
            pending += chunk

    def run(script: str, *args, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
        nonlocal jobs
        jobs += 1
        out, err = folder / f"job-{jobs}.out", folder / f"job-{jobs}.err"
        job = {"script": script, "args": [str(arg) for arg in args], "cwd": str(cwd or folder)}
        server.stdin.write((json.dumps({**job, "stdout": str(out), "stderr": str(err)}) + "\n").encode())
        returncode = answer(timeout)["returncode"]
        read = lambda path: path.read_text() if path.exists() else ""  # noqa: E731
        return subprocess.CompletedProcess(["python", "-c", script, *job["args"]], returncode, read(out), read(err))

    yield run
    server.stdin.close()
    server.wait(timeout=60)

"""
The quantizer under torch.distributed: two gloo processes on loopback must keep one identical codebook. The two
processes are forked from the test suite's preloaded server (tests/recipes/forked_runs.py), which has imported torch
and larp_hf once, and hand their buffers back in safetensors files.
"""

from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

from larp_hf import LarpVQVAEConfig
from larp_hf.models.vqvae.modeling_larp_vqvae import LarpVectorQuantizer

from tests.recipes.forked_runs import free_port, redirect_output, start


CONFIG = dict(codebook_size=8, codebook_dim=3, ema_decay=0.8, dead_code_threshold=1.0, codebook_init="kmeans")


def rank_data(rank: int, step: int) -> torch.Tensor:
    """(1, D, 4, 4) latents that differ between ranks and steps."""
    generator = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(1, 3, 4, 4, generator=generator) + 3.0 * rank


def run_two_ranks(worker, folder: Path) -> list[dict[str, torch.Tensor]]:
    """`worker(rank, world_size, port, results_path)` in 2 processes; the buffers each saved to results_path."""
    port = free_port()
    processes = [start(in_own_log, worker, rank, 2, port, str(folder)) for rank in range(2)]
    for process in processes:
        process.join(120)
    logs = [(folder / f"rank-{rank}.log").read_text() for rank in range(2)]
    assert [process.exitcode for process in processes] == [0, 0], logs
    return [load_file(folder / f"rank-{rank}.safetensors") for rank in range(2)]


def in_own_log(worker, rank: int, world_size: int, port: int, folder: str):
    redirect_output(f"{folder}/rank-{rank}.log")
    worker(rank, world_size, port, f"{folder}/rank-{rank}.safetensors")


def save_buffers(quantizer: LarpVectorQuantizer, path: str):
    save_file({name: buffer.clone().contiguous() for name, buffer in quantizer.named_buffers()}, path)


def worker(rank: int, world_size: int, port: int, results_path: str):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(1234 + rank)  # different local RNG: shared choices must come from rank 0's broadcast
        quantizer = LarpVectorQuantizer(LarpVQVAEConfig(**CONFIG)).train()
        for step in range(4):
            quantizer(rank_data(rank, step))
        save_buffers(quantizer, results_path)
    finally:
        dist.destroy_process_group()


def test_two_processes_keep_identical_codebooks(tmp_path):
    rank0, rank1 = run_two_ranks(worker, tmp_path)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    assert bool(rank0["initialized"])
    # Both ranks' vectors counted: the EMA mass is that of 2 × 16 vectors per step, not 16.
    assert rank0["cluster_size"].sum().item() > 16.0 * 1.5


def quantizer_with_fixed_codebook() -> LarpVectorQuantizer:
    """Initialised by hand and without restarts, so one EMA step is deterministic."""
    quantizer = LarpVectorQuantizer(LarpVQVAEConfig(**{**CONFIG, "dead_code_threshold": 0})).train()
    corners = [[0, 0, 0], [3, 3, 3], [-3, -3, -3], [3, 0, 0], [0, 3, 0], [0, 0, 3], [-3, 0, 0], [0, -3, 0]]
    quantizer.codebook.copy_(torch.tensor(corners, dtype=torch.float32))
    quantizer.cluster_size.fill_(2.0)
    quantizer.embed_sum.copy_(quantizer.codebook * 2.0)
    quantizer.initialized.fill_(True)
    return quantizer


def one_step_worker(rank: int, world_size: int, port: int, results_path: str):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        quantizer = quantizer_with_fixed_codebook()
        quantizer(rank_data(rank, 0))
        save_buffers(quantizer, results_path)
    finally:
        dist.destroy_process_group()


def test_statistics_are_summed_across_processes(tmp_path):
    """One EMA step on two ranks equals one step of a single process that saw both ranks' vectors."""
    expected = quantizer_with_fixed_codebook()
    expected(torch.cat([rank_data(0, 0), rank_data(1, 0)]))  # (2, D, 4, 4): both ranks' data in one batch
    got = run_two_ranks(one_step_worker, tmp_path)[0]
    torch.testing.assert_close(got["cluster_size"], expected.cluster_size)
    torch.testing.assert_close(got["embed_sum"], expected.embed_sum)
    torch.testing.assert_close(got["codebook"], expected.codebook)

"""The quantizer under torch.distributed: two gloo processes on loopback must keep one identical codebook."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from larp_hf import LarpVQVAEConfig
from larp_hf.models.vqvae.modeling_larp_vqvae import LarpVectorQuantizer


CONFIG = dict(codebook_size=8, codebook_dim=3, ema_decay=0.8, dead_code_threshold=1.0, codebook_init="kmeans")


def rank_data(rank: int, step: int) -> torch.Tensor:
    """(1, D, 4, 4) latents that differ between ranks and steps."""
    generator = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(1, 3, 4, 4, generator=generator) + 3.0 * rank


def worker(rank: int, world_size: int, port: int, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(1234 + rank)  # different local RNG: shared choices must come from rank 0's broadcast
        quantizer = LarpVectorQuantizer(LarpVQVAEConfig(**CONFIG)).train()
        for step in range(4):
            quantizer(rank_data(rank, step))
        results[rank] = {name: buffer.clone() for name, buffer in quantizer.named_buffers()}
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_keep_identical_codebooks():
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(worker, args=(2, free_port(), results), nprocs=2, join=True)
        rank0, rank1 = dict(results[0]), dict(results[1])
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


def one_step_worker(rank: int, world_size: int, port: int, results):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        quantizer = quantizer_with_fixed_codebook()
        quantizer(rank_data(rank, 0))
        results[rank] = {name: buffer.clone() for name, buffer in quantizer.named_buffers()}
    finally:
        dist.destroy_process_group()


def test_statistics_are_summed_across_processes():
    """One EMA step on two ranks equals one step of a single process that saw both ranks' vectors."""
    expected = quantizer_with_fixed_codebook()
    expected(torch.cat([rank_data(0, 0), rank_data(1, 0)]))  # (2, D, 4, 4): both ranks' data in one batch
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(one_step_worker, args=(2, free_port(), results), nprocs=2, join=True)
        got = dict(results[0])
    torch.testing.assert_close(got["cluster_size"], expected.cluster_size)
    torch.testing.assert_close(got["embed_sum"], expected.embed_sum)
    torch.testing.assert_close(got["codebook"], expected.codebook)

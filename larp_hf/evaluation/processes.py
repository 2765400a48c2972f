"""
Evaluation across processes (`accelerate launch`, torchrun): each process takes a contiguous share of whole batches
and what the shares give is gathered in process order. Batches, not images, are what is shared out, so one process
and many sample, decode and featurise the very same batches: the same seed gives the same numbers.
"""

import torch
from accelerate import PartialState
from accelerate.utils import broadcast_object_list, gather, pad_across_processes, parse_flag_from_env


def evaluation_state() -> PartialState:
    """
    This process's place among those `accelerate launch` (or torchrun) started; one process when nothing launched it.
    `ACCELERATE_USE_CPU=1` (what `accelerate launch --cpu` sets) makes several CPU processes one gloo world, as it does
    for an `Accelerator`.
    """
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def batches_of_this_process(num_items: int, batch_size: int, state: PartialState) -> list[range]:
    """This process's contiguous share of the batches `range(num_items)` is cut into (`batch_size` items each)."""
    batches = [range(start, min(start + batch_size, num_items)) for start in range(0, num_items, batch_size)]
    with state.split_between_processes(batches) as share:
        return share


def gather_rows(rows: torch.Tensor, state: PartialState) -> torch.Tensor:
    """
    Every process's `rows` (any number, even none), concatenated in process order, on every process (on the CPU).
    Integer types NCCL cannot send (int16) must be widened first.
    """
    if state.num_processes == 1:
        return rows
    sizes = gather(torch.tensor([len(rows)], device=state.device)).tolist()
    padded = gather(pad_across_processes(rows.to(state.device), dim=0)).cpu()  # (processes · longest, ...)
    longest = max(sizes)
    return torch.cat([padded[rank * longest : rank * longest + size] for rank, size in enumerate(sizes)])


def from_main_process(value, state: PartialState):
    """The main process's `value` (anything picklable) on every process."""
    if state.num_processes == 1:
        return value
    return broadcast_object_list([value])[0]


__all__ = ["batches_of_this_process", "evaluation_state", "from_main_process", "gather_rows"]

"""Model and optimizer states across processes: gathered whole from FSDP shards, loaded back, checked alike."""

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch.distributed.tensor import DTensor

from .accelerator import writes_files


def is_sharded(accelerator: Accelerator, model: torch.nn.Module | None) -> bool:
    """Whether each process holds a shard of the weights: FSDP (1 or 2, through Accelerate or `fully_shard`)."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    return model is not None and any(isinstance(p, DTensor) for p in model.parameters())


def _state_dict_options(full_on_every_process: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Full (unsharded) tensors on the CPU: on process 0 only, unless every node's local main process writes its own.
    return StateDictOptions(full_state_dict=True, cpu_offload=not full_on_every_process)


def gather_model_state(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """
    The full state dict of a prepared model, gathered from its shards where it is sharded (a collective then: call it
    on every process). None on processes that do not write files.
    """
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        state_dict = accelerator.get_state_dict(model)  # ZeRO-3 gathers the 16-bit weights on process 0
    elif is_sharded(accelerator, model):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        options = _state_dict_options(accelerator.project_configuration.save_on_each_node)
        state_dict = {name: tensor.cpu() for name, tensor in get_model_state_dict(model, options=options).items()}
    else:
        state_dict = accelerator.unwrap_model(model, keep_torch_compile=False).state_dict()
    return state_dict if writes_files(accelerator) and state_dict else None


def gather_optimizer_state(accelerator: Accelerator, optimizer, model: torch.nn.Module) -> dict | None:
    """
    The full state dict of a prepared optimizer that steps `model`'s parameters, gathered from the shards where the
    model is sharded (a collective then: call it on every process). None on processes that do not write files.
    """
    if is_sharded(accelerator, model):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        options = _state_dict_options(accelerator.project_configuration.save_on_each_node)
        state = get_optimizer_state_dict(model, getattr(optimizer, "optimizer", optimizer), options=options)
    else:
        state = optimizer.state_dict()
    return state if writes_files(accelerator) else None


def load_model_state(accelerator: Accelerator, model: torch.nn.Module, state_dict: dict):
    """Load a full state dict (as `gather_model_state` returns it) into a prepared model, sharding it where needed."""
    if is_sharded(accelerator, model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True))
    else:
        accelerator.unwrap_model(model, keep_torch_compile=False).load_state_dict(state_dict)


def load_optimizer_state(accelerator: Accelerator, optimizer, model: torch.nn.Module, state: dict):
    """
    Load a full optimizer state (as `gather_optimizer_state` returns it) into a prepared optimizer that steps
    `model`'s parameters, sharding it where the model is sharded.
    """
    if is_sharded(accelerator, model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        inner = getattr(optimizer, "optimizer", optimizer)
        set_optimizer_state_dict(model, inner, state, options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state)


def first_non_finite(value, name: str) -> str | None:
    """The name of the first floating tensor in `value` (nested dicts and lists) holding a NaN or an infinity."""
    if isinstance(value, torch.Tensor):
        return name if value.is_floating_point() and not torch.isfinite(value).all() else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    return next((bad for key, item in items if (bad := first_non_finite(item, f"{name}.{key}"))), None)


def check_weights_identical(accelerator: Accelerator, model: torch.nn.Module):
    """Data parallelism must leave every process with the same weights: check it rather than assume it."""
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type == DistributedType.FSDP and not any(
        isinstance(p, DTensor) for p in unwrapped.parameters()
    ):
        accelerator.print("Parameters sharded by FSDP: one copy of the weights, nothing to compare.")
        return
    # A sharded (DTensor) parameter is compared whole; each process holds only its own shard of it.
    parameters = [p.full_tensor() if isinstance(p, DTensor) else p for p in unwrapped.parameters()]
    checksum = torch.stack([p.detach().double().sum() for p in parameters]).sum().reshape(1)
    checksums = accelerator.gather(checksum.to(accelerator.device))
    if not torch.all(checksums == checksums[0]):
        raise RuntimeError(f"The processes ended with different weights (parameter sums {checksums.tolist()}).")
    accelerator.print(f"Parameters identical across {accelerator.num_processes} process(es).")


__all__ = [
    "check_weights_identical",
    "first_non_finite",
    "gather_model_state",
    "gather_optimizer_state",
    "is_sharded",
    "load_model_state",
    "load_optimizer_state",
]

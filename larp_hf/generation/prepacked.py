"""Linear layers with weights prepacked for oneDNN, for decoding on a CPU, and a prior's decoding copy that uses them.

A decoding step multiplies a few rows (one per image) by every weight matrix of the prior. On a CPU, `F.linear` hands
that to the BLAS torch was built with (MKL), which on some CPUs runs well behind oneDNN's float32 kernels on weights
reordered once into oneDNN's blocked layout, the layout torch inductor's `freezing` gives a compiled model's linear
layers. Both are float32 matrix products: the results differ only in the rounding of sums (~1e-6 on a prior's
logits), not in the distribution. `bench/bench_sampling.py` measures what it is worth on the machine it runs on (the
README quotes a run).
"""

import copy
import functools
import itertools
import weakref

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D


@functools.cache
def onednn_linear_available() -> bool:
    """Whether this torch build runs oneDNN's prepacked linear operators (`torch.ops.mkldnn`) on this CPU."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        # Fixed values, not random ones: the check must not consume the global RNG that sampling may draw from.
        weight, rows = torch.linspace(-1, 1, 128).view(8, 16), torch.linspace(-2, 2, 64).view(4, 16)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        result = torch.ops.mkldnn._linear_pointwise(rows, packed, None, "none", [], "")
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return torch.allclose(result, rows @ weight.T, atol=1e-4)


class PrepackedLinear(nn.Module):
    r"""
    `y = x Wᵀ + b` with `W` reordered once into oneDNN's blocked layout (a float32 copy of the weight, on the CPU).

    Args:
        weight (`torch.Tensor`): (out_features, in_features) float32 weight, as `nn.Linear` holds it.
        bias (`torch.Tensor`, *optional*): (out_features,) bias, kept by reference.

    Example:

    ```python
    >>> import torch
    >>> from larp_hf.generation.prepacked import PrepackedLinear
    >>> linear = torch.nn.Linear(16, 8)
    >>> packed = PrepackedLinear(linear.weight, linear.bias)  # where onednn_linear_available()
    >>> rows = torch.randn(4, 16)
    >>> torch.allclose(packed(rows), linear(rows), atol=1e-5)
    True
    ```
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        # Without a batch-size hint: the layout it picks ran 1, 64, 128 and 256 rows as fast as the hinted ones.
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous())
        self.bias = None if bias is None else bias.detach()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(hidden_states, self.packed_weight, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _packable_weight(module: nn.Module) -> torch.Tensor | None:
    """The (out, in) weight of a plain `nn.Linear` or GPT-2 `Conv1D` (stored (in, out)); None for anything else."""
    if type(module) is nn.Linear:
        return module.weight
    if type(module) is Conv1D:
        return module.weight.T
    return None


def can_prepack(model: nn.Module) -> bool:
    """
    Whether `with_prepacked_linears` would replace anything: oneDNN runs here, the model is a transformers model (not
    a compiled wrapper) with plain linear layers, all of them float32 on the CPU, and no accelerate hooks (offloading,
    device maps) move weights during its forward.
    """
    weights = [weight for weight in map(_packable_weight, model.modules()) if weight is not None]
    hooked = any(hasattr(module, "_hf_hook") for module in model.modules())
    return (
        isinstance(model, PreTrainedModel)
        and bool(weights)
        and not hooked
        and all(weight.device.type == "cpu" and weight.dtype == torch.float32 for weight in weights)
        and onednn_linear_available()
    )


# model -> (fingerprint, its prepacked copy); an entry goes with its model.
_PREPACKED = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple | None:
    """What a prepacked copy depends on: each linear layer's weight and bias tensors, their in-place versions, and
    every module's train/eval mode and hooks (the copy carries the hooks the model had when it was made). None where
    a weight was made under `torch.inference_mode` (such tensors keep no version counter): the copy is then made
    anew."""
    state = []
    for module in model.modules():
        state.append((module.training, tuple(module._forward_pre_hooks), tuple(module._forward_hooks)))
        if _packable_weight(module) is not None:
            for tensor in (module.weight, module.bias):
                if tensor is not None and tensor.is_inference():
                    return None
                state.append(None if tensor is None else (id(tensor), tensor.data_ptr(), tensor._version))
    return tuple(state)


def with_prepacked_linears(model: PreTrainedModel) -> PreTrainedModel:
    r"""
    A copy of `model` for decoding on a CPU: the same module tree, its parameters, buffers and config shared (no
    weight is copied, tied weights stay tied), with every `nn.Linear` and GPT-2 `Conv1D` replaced by a
    `PrepackedLinear`. Its forward is the model's own; `model` itself is left untouched. Returns `model` where
    `can_prepack` says no.

    The copy is made once and kept while `model` lives: a later call returns it again as long as the linear layers
    hold the same weight tensors, unchanged in place (an optimizer step or `load_state_dict` changes their version),
    and every module keeps its train/eval mode and hooks; otherwise (and for weights made under
    `torch.inference_mode`, which keep no version) the copy is made again. Its packed weights are a second
    float32 copy of the linear layers.

    Args:
        model: a causal LM (`GPT2LMHeadModel`, `LlamaForCausalLM`, ...).
    """
    if not can_prepack(model):
        return model
    fingerprint = _fingerprint(model)
    cached = _PREPACKED.get(model)
    if cached is not None and fingerprint is not None and cached[0] == fingerprint:
        return cached[1]
    shared = {id(model.config): model.config}
    shared.update((id(tensor), tensor) for tensor in itertools.chain(model.parameters(), model.buffers()))
    twin = copy.deepcopy(model, memo=shared)
    with torch.no_grad():
        for module in list(twin.modules()):
            for name, child in list(module.named_children()):
                weight = _packable_weight(child)
                if weight is not None:
                    setattr(module, name, PrepackedLinear(weight, child.bias))
    _PREPACKED[model] = (fingerprint, twin)
    return twin


__all__ = ["PrepackedLinear", "can_prepack", "onednn_linear_available", "with_prepacked_linears"]

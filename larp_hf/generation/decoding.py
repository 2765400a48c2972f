"""The prior's sampling loop: the model's own forward, one new token per step, into a KV cache allocated once."""

import torch
from transformers import LogitsProcessor, PreTrainedModel
from transformers.cache_utils import Cache, DynamicLayer

from ..threads import torch_threads
from .guidance import guided_logits, with_null_rows
from .logits_process import gumbel_noise
from .prepacked import with_prepacked_linears


# The fewest rows a step must have for `with_prepacked_linears` to pay: with 1 or 2 rows MKL's matrix-vector products
# are about as fast as oneDNN's prepacked kernels, and the prior's own layers need no second copy of the weights
# (`bench/bench_sampling.py` prints a step at 1-4 rows each way; the README quotes it).
PREPACK_MIN_ROWS = 3

# Steps of Gumbel noise drawn at a time: one generator call per image per block, and (B, 16, V) float64 in memory.
NOISE_STEPS = 16


class PreallocatedLayer(DynamicLayer):
    r"""
    A `DynamicLayer` whose keys and values are views of buffers allocated once for `max_length` positions: a step
    writes its position in place. `DynamicLayer` concatenates the whole cache again at every step (a copy that grows
    with the length, O(T²) bytes over a sequence); the views give attention exactly the positions written so far, so
    no mask is needed, as with the dynamic cache. Made for `sample_tokens`' steps; reordering the batch (beam search's
    `batch_select_indices`) is not supported.

    Args:
        max_length (`int`): the most positions the layer will hold.
    """

    def __init__(self, max_length: int):
        super().__init__()
        self.max_length = max_length

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        super().lazy_initialization(key_states, value_states)
        batch_size, num_heads, _, head_dim = key_states.shape
        self.key_buffer = key_states.new_empty(batch_size, num_heads, self.max_length, head_dim)
        self.value_buffer = value_states.new_empty(batch_size, num_heads, self.max_length, value_states.shape[-1])
        self.keys, self.values = self.key_buffer[:, :, :0], self.value_buffer[:, :, :0]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.keys.shape[-2]
        end = start + key_states.shape[-2]
        if end > self.max_length:
            raise ValueError(f"The cache holds {self.max_length} positions; position {end - 1} does not fit.")
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values


def preallocated_cache(prior: PreTrainedModel, max_length: int) -> Cache:
    """A `Cache` of one `PreallocatedLayer` per layer of `prior`, for sequences of at most `max_length` tokens."""
    num_layers = prior.config.get_text_config(decoder=True).num_hidden_layers
    return Cache(layers=[PreallocatedLayer(max_length) for _ in range(num_layers)])


def sample_tokens(
    prior: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessor,
    max_new_tokens: int,
    generators: list[torch.Generator] | None = None,
    null_input_ids: torch.LongTensor | None = None,
    guidance_scale: float = 1.0,
    prepack_linears: bool | None = None,
    num_threads: int | None = None,
) -> torch.LongTensor:
    r"""
    Sample `max_new_tokens` tokens after `input_ids`, with the same per-step distribution as
    `prior.generate(input_ids, do_sample=True, logits_processor=logits_processor)` and without its per-step work.

    Each step is one call of the model's own forward on the new token (`logits_to_keep=1`), with a `PreallocatedLayer`
    cache and, for a float32 prior on a CPU, its linear layers prepacked for oneDNN (`with_prepacked_linears`: the
    same float32 products, in kernels that outrun MKL's on some CPUs); `logits_processor` shapes the float32
    next-token scores (as `generate` calls it: on the sequences so far);
    the token is drawn from their softmax. With `generators` (one CPU `torch.Generator` per row, see
    `image_generators`), row b draws `argmax(scores + g)` with Gumbel noise `g` from its own generator (the Gumbel-max
    trick: an exact draw from the softmax): the same stream as `PerImageSamplingLogitsProcessor`, read
    `NOISE_STEPS` steps at a time, so the tokens equal those of `generate` with that processor last, and a row's
    tokens do not depend on the other rows. Without them, `torch.multinomial` draws from the global RNG.

    With `null_input_ids` (classifier-free guidance, Ho & Salimans 2022; see `guidance.py`) the B conditional rows and
    the B null rows go through the prior together (2B rows, `with_null_rows`: one forward and one cache per step) and
    the processor sees `null + guidance_scale · (class − null)` (`guided_logits`); both halves get the drawn token.

    Args:
        prior: a causal LM (`GPT2LMHeadModel` or any `*ForCausalLM`) in eval mode.
        input_ids: (B, P) prefixes.
        logits_processor: called as `logits_processor(sequences, scores)` on (B, V) float32 scores; returns new ones.
        max_new_tokens: tokens to sample.
        generators: one generator per row for per-row random streams, or `None` for the global RNG.
        null_input_ids: (B, P) the prefixes with the null class (`larp_hf.prior.null_prefix_ids`), for guidance.
        guidance_scale: the guidance scale s (with `null_input_ids`).
        prepack_linears: decode with `with_prepacked_linears(prior)` (where `can_prepack` allows: a float32 prior
            on a CPU with oneDNN): `None` (the default) when a step has at least `PREPACK_MIN_ROWS` rows (2B with
            guidance), `True` whatever the rows, `False` never (the prior's own linear layers). The per-step
            distribution is the same either way; float32 sums round differently, so a near-tie may rarely tip.
        num_threads: torch threads for the loop; `None` (the default): `$LARP_HF_NUM_THREADS`, else a count the
            user set, else fewer than torch's default on a small or busy machine (`larp_hf.threads`), restored after.

    Returns:
        (B, max_new_tokens) sampled token ids, on `input_ids`' device.
    """
    batch_size, prefix_length = input_ids.shape
    if generators is not None and len(generators) != batch_size:
        raise ValueError(f"There are {len(generators)} generators for {batch_size} rows.")
    step_ids = input_ids
    if null_input_ids is not None:
        step_ids = with_null_rows(input_ids, null_input_ids)  # (2B, P)
    # The last token is never fed back, so the cache holds the prefix and max_new_tokens - 1 tokens.
    cache = preallocated_cache(prior, prefix_length + max_new_tokens - 1)
    if prepack_linears is None:
        prepack_linears = step_ids.shape[0] >= PREPACK_MIN_ROWS
    decoder = with_prepacked_linears(prior) if prepack_linears else prior
    # Inference mode: no autograd bookkeeping at all (version counters, view tracking) on a step's ~100 operations.
    with torch.inference_mode(), torch_threads(num_threads):
        sequences = torch.empty(batch_size, prefix_length + max_new_tokens, dtype=torch.long, device=input_ids.device)
        sequences[:, :prefix_length] = input_ids  # what the processor sees, as in generate: (B, P + t) views of this
        for step in range(max_new_tokens):
            logits = decoder(input_ids=step_ids, cache=cache, use_cache=True, logits_to_keep=1).logits
            logits = logits[:, -1].float()  # (B, V), or (2B, V) with guidance
            if null_input_ids is not None:
                logits = guided_logits(logits, guidance_scale)  # (B, V)
            scores = logits_processor(sequences[:, : prefix_length + step], logits)  # (B, V)
            if generators is None:
                next_tokens = torch.multinomial(scores.softmax(dim=-1), num_samples=1)[:, 0]
            else:
                if step % NOISE_STEPS == 0:
                    steps = min(NOISE_STEPS, max_new_tokens - step)
                    noise = gumbel_noise(generators, steps, scores.shape[-1]).to(scores.device)  # (B, steps, V)
                next_tokens = (scores.double() + noise[:, step % NOISE_STEPS]).argmax(dim=-1)  # (B,)
            sequences[:, prefix_length + step] = next_tokens
            step_ids = next_tokens[:, None]
            if null_input_ids is not None:
                step_ids = with_null_rows(step_ids, step_ids)  # both halves continue with the drawn token
    return sequences[:, prefix_length:].clone()  # a clone is an ordinary tensor again, free to modify in place


__all__ = ["PreallocatedLayer", "preallocated_cache", "sample_tokens"]

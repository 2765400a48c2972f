"""The prior is a stock `GPT2LMHeadModel` or `LlamaForCausalLM`: this module builds its config from a tokenizer's,
names its tokens, holds the pairing rules and the sampling policy stored with it.

Vocabulary layout (codes first, so a sampled code token *is* its codebook index):

    0 … K-1            codebook indices (K = codebook_size)
    K                  BOS, the first token of every sequence
    K+1 … K+C          one token per class (class-conditional priors only, C = num_classes)
    K+C+1              the null class, used for classifier-free guidance (class-conditional priors only)

A sequence is `[BOS, (class token)] + h·w codes in raster order` over the tokenizer's (h, w) grid, square or not;
`n_positions` is exactly that length. The layout and the tokenizer the prior was trained on are stored under `larp` in
the prior's `config.json`, which stock `transformers` loads and keeps (no `trust_remote_code`). The grid is stored as
`grid: [h, w]`, and for a square grid also as `grid_size: h`, the one field priors saved before non-square grids have
(`layout_grid` reads either).

This module is the one home of that layout (`vocabulary_layout`, `prefix_layout`) and of the prefixes built from it
(`prefix_ids`, `null_prefix_ids`): the collator, the pipeline and the token datasets read them here.
"""

import copy

import torch
from transformers import GPT2Config, LlamaConfig, PreTrainedModel

from .generation import CodebookLogitsProcessor, check_guidance_scale
from .tokenizers.base import as_pair


# (layers, width, heads). "small" is the 3.3M-parameter GPT-2 of the Fashion-MNIST baseline; "large" is ~200M.
PRIOR_PRESETS = {
    "tiny": {"n_layer": 2, "n_embd": 64, "n_head": 2},
    "small": {"n_layer": 4, "n_embd": 256, "n_head": 8},
    "medium": {"n_layer": 8, "n_embd": 512, "n_head": 8},
    "base": {"n_layer": 12, "n_embd": 768, "n_head": 12},
    "large": {"n_layer": 16, "n_embd": 1024, "n_head": 16},
}


ARCHITECTURES = ("gpt2", "llama")


def llama_intermediate_size(hidden_size: int) -> int:
    """SwiGLU width that gives the MLP GPT-2's 8·d² weights (3 matrices of d × 8d/3), rounded up to a multiple of 64."""
    return -(-8 * hidden_size // 3 // 64) * 64


def prefix_layout(
    bos_token_id: int, class_token_offset: int | None = None, null_class_token_id: int | None = None
) -> dict:
    """
    The prefix part of a prior's vocabulary layout: `bos_token_id`, `class_token_offset` (class 0's token),
    `null_class_token_id` and `prefix_length`, the number of tokens before the codes: 1 (`[BOS]`) for an unconditional
    prior (`class_token_offset` and `null_class_token_id` both `None`), 2 (`[BOS, class token]`) for a
    class-conditional one. `prefix_ids` and `null_prefix_ids` build prefixes from it.
    """
    if (class_token_offset is None) != (null_class_token_id is None):
        raise ValueError("`class_token_offset` and `null_class_token_id` go together (both or neither).")
    return {
        "bos_token_id": bos_token_id,
        "class_token_offset": class_token_offset,
        "null_class_token_id": null_class_token_id,
        "prefix_length": 1 if class_token_offset is None else 2,
    }


def grid_fields(grid=None, grid_size: int | None = None) -> dict:
    """
    How a prior's `larp` metadata and a token dataset's record a code grid: `{"grid": [h, w]}`, plus `"grid_size": h`
    when the grid is square (what larp_hf wrote before non-square grids, so older readers keep working). `grid` is an
    int (square) or `(h, w)`; `grid_size`, the older keyword, a square grid's side (give one of the two).
    """
    if (grid is None) == (grid_size is None):
        raise ValueError("Give the code grid once: `grid` (an int or (h, w)) or `grid_size` (the side of a square grid).")
    height, width = as_pair(grid if grid is not None else grid_size, "grid")
    return {"grid": [height, width], **({"grid_size": height} if height == width else {})}


def layout_grid(layout: dict) -> tuple[int, int]:
    """
    `(h, w)` of the code grid recorded in a prior's `larp` metadata, a `vocabulary_layout` or a token dataset's
    metadata: its `grid`, or the `grid_size` of a square grid recorded before `grid` was.
    """
    if "grid" in layout:
        return as_pair(layout["grid"], "grid")
    return as_pair(layout["grid_size"], "grid_size")


def codebook_and_grid(tokenizer) -> tuple[int, tuple[int, int]]:
    """
    The codebook size and `(h, w)` code grid of an `ImageTokenizer` (its `codebook_size` and `grid`), or of a
    `LarpVQVAEConfig` (its `codebook_size` and square `grid_size`), read through those members alone.
    """
    grid = getattr(tokenizer, "grid", None)
    if grid is None:
        grid = getattr(tokenizer, "grid_size", None)  # a LarpVQVAEConfig: square grids
    codebook_size = getattr(tokenizer, "codebook_size", None)
    if grid is None or codebook_size is None:
        raise ValueError(
            f"{type(tokenizer).__name__} is neither an image tokenizer (codebook_size, grid, ...: see "
            "larp_hf.tokenizers.ImageTokenizer) nor a LarpVQVAEConfig. Load one with larp_hf.load_tokenizer(folder)."
        )
    return int(codebook_size), as_pair(grid, "grid")


def vocabulary_layout(codebook_size: int, grid=None, num_classes: int = 0, *, grid_size: int | None = None) -> dict:
    """
    The token ids of a prior over `grid` grids (an int for a square grid, or `(h, w)`) of `codebook_size` codes, with
    `num_classes` classes (0: unconditional), as the module docstring lays them out: `codebook_size`, the grid
    (`grid_fields`: `grid`, and `grid_size` when square), `num_classes`, the `prefix_layout` entries (`bos_token_id`,
    `class_token_offset`, `null_class_token_id`, `prefix_length`) and `vocab_size`. `prior_config` stores all but
    `vocab_size` (a field of the config itself) as `config.larp`. `grid_size=` is the older keyword for a square grid.

    Example:

    ```python
    >>> from larp_hf.prior import vocabulary_layout
    >>> layout = vocabulary_layout(codebook_size=512, grid=8, num_classes=10)
    >>> layout["bos_token_id"], layout["class_token_offset"], layout["null_class_token_id"], layout["vocab_size"]
    (512, 513, 523, 524)
    >>> vocabulary_layout(codebook_size=16384, grid=(24, 32))["grid"]
    [24, 32]
    ```
    """
    if num_classes < 0:
        raise ValueError(f"`num_classes` must be >= 0 (0 = unconditional), got {num_classes}.")
    grid = grid_fields(grid, grid_size)
    bos_token_id = codebook_size
    conditional = num_classes > 0
    prefix = prefix_layout(
        bos_token_id,
        class_token_offset=bos_token_id + 1 if conditional else None,
        null_class_token_id=bos_token_id + num_classes + 1 if conditional else None,
    )
    last_token_id = bos_token_id if not conditional else prefix["null_class_token_id"]
    return {
        "codebook_size": codebook_size,
        **grid,
        "num_classes": num_classes,
        **prefix,
        "vocab_size": last_token_id + 1,
    }


def prefix_ids(layout: dict, batch_size: int, class_tokens: torch.Tensor | None = None) -> torch.LongTensor:
    """
    (B, prefix_length) int64: the `[BOS, (class token)]` prefix of `batch_size` sequences of the prior whose
    vocabulary layout is given (`config.larp`, `vocabulary_layout(...)` or `prefix_layout(...)`). `class_tokens`,
    (B,) token ids (e.g. from `class_token_ids`), fills the class slot of a class-conditional prior and must be left
    out for an unconditional one. On `class_tokens`' device, else the CPU.

    Example:

    ```python
    >>> import torch
    >>> from larp_hf.prior import prefix_ids, vocabulary_layout
    >>> prefix_ids(vocabulary_layout(16, 4, num_classes=3), 2, class_tokens=torch.tensor([17, 19]))
    tensor([[16, 17],
            [16, 19]])
    >>> prefix_ids(vocabulary_layout(16, 4), 2)
    tensor([[16],
            [16]])
    ```
    """
    conditional = layout["class_token_offset"] is not None
    if conditional and class_tokens is None:
        raise ValueError("A class-conditional prior's prefix needs `class_tokens`, one per sequence.")
    if not conditional and class_tokens is not None:
        raise ValueError("An unconditional prior's prefix is BOS alone; leave `class_tokens` out.")
    device = None if class_tokens is None else class_tokens.device
    bos = torch.full((batch_size, 1), layout["bos_token_id"], dtype=torch.long, device=device)
    if not conditional:
        return bos
    if class_tokens.shape != (batch_size,):
        raise ValueError(f"`class_tokens` must have shape ({batch_size},), got {tuple(class_tokens.shape)}.")
    return torch.cat([bos, class_tokens.long()[:, None]], dim=1)


def null_prefix_ids(layout: dict, batch_size: int, device: torch.device | str | None = None) -> torch.LongTensor:
    """
    (B, prefix_length) int64: `prefix_ids` with the null class in the class slot, the prefix of a class-conditional
    prior's unconditional model that classifier-free guidance steers away from.
    """
    if layout["null_class_token_id"] is None:
        raise ValueError("An unconditional prior has no null class: classifier-free guidance needs class tokens.")
    null_tokens = torch.full((batch_size,), layout["null_class_token_id"], dtype=torch.long, device=device)
    return prefix_ids(layout, batch_size, class_tokens=null_tokens)


# `prior_config`'s default `tokenizer_hash`: the tokenizer's own. `None` passed on purpose makes a prior without one.
FROM_TOKENIZER = "from the tokenizer"


def prior_config(
    tokenizer,
    preset: str = "small",
    num_classes: int = 0,
    tokenizer_hash: str | None = FROM_TOKENIZER,
    architecture: str = "gpt2",
    class_names: list[str] | None = None,
    **overrides,
) -> GPT2Config | LlamaConfig:
    """
    The config of a prior over `tokenizer`'s code grids: a stock `GPT2Config` (`architecture="gpt2"`) or
    `LlamaConfig` (`"llama"`: RoPE, SwiGLU, RMSNorm, the recipe of LlamaGen), with the same vocabulary layout, metadata
    and presets. Its positions follow the grid: `h·w` codes plus the prefix (1,025 for an unconditional prior over
    32×32 grids). Build the model with `AutoModelForCausalLM.from_config(config)`.

    Args:
        tokenizer: an `ImageTokenizer` (any: `load_tokenizer(folder)`, a `LarpVQVAEModel`, an adapter), whose
            `codebook_size` and `grid` (square or not) are read; or a `LarpVQVAEConfig` (codebook size, square grid).
        preset: one of `PRIOR_PRESETS` (`tiny`, `small`, `medium`, `base`, `large`): layers, width and heads; a Llama
            prior's SwiGLU width keeps its parameter count close to the GPT-2 of the same preset.
        num_classes: 0 for an unconditional prior; otherwise one class token per class plus a null token.
        tokenizer_hash: the `tokenizer_hash()` of the tokenizer whose codes the prior models, so that another
            tokenizer is refused (`check_pair`); defaults to `tokenizer`'s own. A `LarpVQVAEConfig` has none: pass the
            model's (`tokenizer_hash=vqvae.tokenizer_hash()`), or `None` on purpose for a prior paired by codebook
            size and grid only, which pairing then refuses unless told `allow_unverified_pair=True`.
        architecture: `"gpt2"` or `"llama"`.
        class_names: the name of each class, in label order (a `ClassLabel`'s `names`): the config's standard
            `id2label` / `label2id` (one entry per class, `"0"`, `"1"`, ... without names; none for an
            unconditional prior, where transformers would otherwise invent `LABEL_0` and `LABEL_1`).
        **overrides: any field of the architecture's config (e.g. `attn_pdrop=0.1`, `n_layer=6` for GPT-2;
            `num_hidden_layers=6`, `rope_theta=1e4` for Llama).

    Example:

    ```python
    >>> from larp_hf import LarpVQVAEConfig, prior_config
    >>> config = prior_config(LarpVQVAEConfig(codebook_size=512), preset="small", num_classes=10, tokenizer_hash=None)
    >>> config.vocab_size, config.n_positions, config.bos_token_id, config.larp["null_class_token_id"]
    (524, 66, 512, 523)
    >>> llama = prior_config(
    ...     LarpVQVAEConfig(codebook_size=512), preset="small", architecture="llama", tokenizer_hash=None
    ... )
    >>> llama.model_type, llama.vocab_size, llama.max_position_embeddings, llama.intermediate_size
    ('llama', 513, 65, 704)
    >>> from larp_hf.tokenizers import wrap_tokenizer
    >>> import torch
    >>> tokenizer = wrap_tokenizer(torch.nn.Identity(), encode=lambda x: x, decode=lambda c: c, codebook_size=16384,
    ...                            grid=(24, 32), image_size=(384, 512), num_channels=3, value_range=(-1.0, 1.0))
    >>> config = prior_config(tokenizer, preset="tiny")
    >>> config.larp["grid"], config.n_positions, config.larp["tokenizer_hash"] == tokenizer.tokenizer_hash()
    ([24, 32], 769, True)
    ```
    """
    if preset not in PRIOR_PRESETS:
        raise ValueError(f"Unknown prior preset {preset!r}; choose one of {sorted(PRIOR_PRESETS)}.")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown prior architecture {architecture!r}; choose one of {ARCHITECTURES}.")
    codebook_size, (height, width) = codebook_and_grid(tokenizer)
    if tokenizer_hash is FROM_TOKENIZER:
        if not callable(getattr(tokenizer, "tokenizer_hash", None)):
            raise ValueError(
                f"`tokenizer` is a {type(tokenizer).__name__}, which has no tokenizer_hash(), so the prior could not "
                "tell its tokenizer from another. Pass `tokenizer_hash` (the model's: tokenizer_hash=vqvae."
                "tokenizer_hash()), or tokenizer_hash=None for a prior paired by codebook size and grid only."
            )
        tokenizer_hash = tokenizer.tokenizer_hash()
    elif tokenizer_hash is not None and not isinstance(tokenizer_hash, str):
        raise ValueError(f"`tokenizer_hash` must be a string (a tokenizer_hash()) or None, got {tokenizer_hash!r}.")
    layout = vocabulary_layout(codebook_size, (height, width), num_classes)
    vocab_size = layout.pop("vocab_size")  # a field of the config itself
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(class_names)} names for num_classes = {num_classes}; give one per class."
        )
    # PretrainedConfig's default is two labels whatever the classes; a prior's labels are its classes.
    id2label = {i: str(name) for i, name in enumerate(class_names or range(num_classes))}
    larp = {**layout, "tokenizer_hash": tokenizer_hash, "preset": preset, "architecture": architecture}
    sequence_length = height * width + layout["prefix_length"]
    shared = {
        "vocab_size": vocab_size,
        "bos_token_id": layout["bos_token_id"],
        # Sequences have a fixed length: generation stops by length, never on an end token.
        "eos_token_id": None,
        "pad_token_id": None,
        "larp": larp,
        "id2label": id2label,
        "label2id": {name: i for i, name in id2label.items()},
    }
    layers, width, heads = (PRIOR_PRESETS[preset][key] for key in ("n_layer", "n_embd", "n_head"))
    if architecture == "gpt2":
        kwargs = {**shared, "n_layer": layers, "n_embd": width, "n_head": heads, "n_positions": sequence_length}
        config = GPT2Config(**{**kwargs, **overrides})
    else:
        kwargs = {
            **shared,
            "num_hidden_layers": layers,
            "hidden_size": width,
            "num_attention_heads": heads,
            "num_key_value_heads": heads,
            "intermediate_size": llama_intermediate_size(width),
            "max_position_embeddings": sequence_length,
            "tie_word_embeddings": True,  # as GPT-2: the code embeddings double as the output layer
        }
        config = LlamaConfig(**{**kwargs, **overrides})
    if config.hidden_size % config.num_attention_heads != 0:
        raise ValueError(
            f"The width ({config.hidden_size}) must be divisible by the number of heads ({config.num_attention_heads})."
        )
    return config


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def layout_problems(larp: dict, vocab_size: int, num_positions: int | None = None) -> list[str]:
    """
    What is wrong with a prior's `larp` layout against its vocabulary of `vocab_size` tokens and its `num_positions`
    positions (`None`: not checked), one sentence per problem, naming the field; empty for a sound layout. Codes are
    `0 … codebook_size-1`; BOS, the class tokens and the null class must lie above them, inside the vocabulary, and
    apart from each other, and a sequence (prefix and grid) must fit the positions.
    """
    codebook_size, num_classes = larp.get("codebook_size"), larp.get("num_classes", 0)
    if not _is_int(codebook_size) or codebook_size < 1:
        return [f"`codebook_size` is {codebook_size!r}, not a positive integer"]
    if not _is_int(num_classes) or num_classes < 0:
        return [f"`num_classes` is {num_classes!r}, not an integer >= 0"]
    codes = f"the code range [0, {codebook_size})"
    problems = []

    def check_token(field: str) -> int | None:
        token = larp.get(field)
        if not _is_int(token):
            problems.append(f"`{field}` is {token!r}, not a token id")
        elif token < codebook_size:
            problems.append(f"`{field}` = {token} lies inside {codes}: a code would be read as it")
        elif token >= vocab_size:
            problems.append(f"`{field}` = {token} lies beyond the vocabulary (vocab_size = {vocab_size})")
        else:
            return token
        return None

    bos = check_token("bos_token_id")
    offset, null = larp.get("class_token_offset"), larp.get("null_class_token_id")
    if num_classes == 0:
        if offset is not None or null is not None:
            problems.append(
                f"`num_classes` is 0 (unconditional) but `class_token_offset` = {offset!r} and `null_class_token_id` = "
                f"{null!r} (both must be null)"
            )
    else:
        offset, null = check_token("class_token_offset"), check_token("null_class_token_id")
        if offset is not None:
            last = offset + num_classes - 1
            if last >= vocab_size:
                problems.append(
                    f"`num_classes` = {num_classes} from `class_token_offset` = {offset} needs tokens up to {last}, "
                    f"beyond the vocabulary (vocab_size = {vocab_size})"
                )
            if bos is not None and offset <= bos <= last:
                problems.append(f"`bos_token_id` = {bos} is the token of class {bos - offset}")
            if null is not None and offset <= null <= last:
                problems.append(f"`null_class_token_id` = {null} points at class {null - offset}, a real class")
        if null is not None and null == bos:
            problems.append(f"`null_class_token_id` = {null} is the BOS token")
    prefix_length = 1 if num_classes == 0 else 2
    if larp.get("prefix_length", prefix_length) != prefix_length:
        problems.append(
            f"`prefix_length` = {larp.get('prefix_length')!r}, but a prior with num_classes = {num_classes} has "
            f"{prefix_length}"
        )
    try:
        height, width = layout_grid(larp)
    except (KeyError, TypeError, ValueError) as error:
        problems.append(f"`grid` does not name a code grid ({error})")
    else:
        if num_positions is not None and height * width + prefix_length > num_positions:
            problems.append(
                f"`grid` {height}×{width} plus the {prefix_length}-token prefix needs "
                f"{height * width + prefix_length} positions, more than the model's {num_positions} (n_positions)"
            )
    return problems


def prior_metadata(config) -> dict:
    """
    The `larp` entry of a prior's config, checked against the config's vocabulary and positions
    (`layout_problems`): a config that is not a larp_hf prior, or whose layout was edited into one that cannot hold
    (a class token among the codes, the null class on a real class, classes beyond the vocabulary, a grid longer than
    the positions), raises a `ValueError` naming the field.
    """
    larp = getattr(config, "larp", None)
    if not isinstance(larp, dict) or "codebook_size" not in larp:
        raise ValueError(
            "This GPT-2 config has no `larp` metadata, so it is not a larp_hf prior. Build priors with "
            "larp_hf.prior_config(tokenizer, ...)."
        )
    vocab_size = getattr(config, "vocab_size", None)
    if _is_int(vocab_size):
        problems = layout_problems(larp, vocab_size, getattr(config, "max_position_embeddings", None))
        if problems:
            raise ValueError(
                "The prior's `larp` layout (in its config.json) does not fit its vocabulary: "
                + "; ".join(problems)
                + ". The layout was edited or damaged: restore the prior's config.json, or build the config again "
                "with larp_hf.prior_config(tokenizer, ...)."
            )
    return copy.deepcopy(larp)


# "Off" for each sampling setting: one convention for the processor, the generation config, the CLI and the YAML.
NEUTRAL_SAMPLING = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
# `class_labels="null"`: a class-conditional prior's null class, i.e. its unconditional model.
NULL_CLASS = "null"


def sampling_defaults(prior: PreTrainedModel) -> dict:
    """
    The prior's stored sampling policy: `temperature`, `top_k` and `top_p` from its `generation_config.json`, with
    `1.0` / `0` / `1.0` (off) for a setting it does not store, and `guidance_scale` from the `larp` metadata of its
    `config.json` (`1.0`, no guidance, if unset): the scale `LarpPipeline` guides class labels with by default.
    """
    config = prior.generation_config
    stored = {"temperature": config.temperature, "top_k": config.top_k, "top_p": config.top_p}
    defaults = {name: NEUTRAL_SAMPLING[name] if value is None else value for name, value in stored.items()}
    guidance_scale = (getattr(prior.config, "larp", None) or {}).get("guidance_scale")
    defaults["guidance_scale"] = 1.0 if guidance_scale is None else guidance_scale
    return defaults


def set_sampling_defaults(prior: PreTrainedModel, temperature=None, top_k=None, top_p=None, guidance_scale=None):
    """
    Store the whole sampling policy with the prior.

    `prior.generation_config` (saved as `generation_config.json`) gets what stock `prior.generate(prefix)` (the
    `[BOS, (class token)]` prefix of `prefix_ids`) — in a process that never imports larp_hf, a serving engine, a
    user's own loop — needs to sample exactly one code grid
    of code ids: `do_sample`, `temperature`, `top_k`, `top_p`, `max_new_tokens` = `min_new_tokens` = grid length, and
    `suppress_tokens` = every id that is not a code (BOS, class tokens, null class).

    `guidance_scale` (>= 1; 1 = none; above 1 for class-conditional priors only) goes to the `larp` metadata of
    `prior.config` (saved in `config.json`), not to `generation_config.guidance_scale`: stock `generate` would run its
    own classifier-free guidance with it, on inputs that carry no null-class prefix. `LarpPipeline` guides class labels
    with it when its `guidance_scale` is left out.

    A setting left as `None` keeps the value already stored (off if none is). `top_k=0` and `top_p=1.0` mean off.

    Example:

    ```python
    >>> from transformers import GPT2LMHeadModel
    >>> from larp_hf import LarpVQVAEConfig, prior_config, sampling_defaults, set_sampling_defaults
    >>> config = prior_config(LarpVQVAEConfig(codebook_size=16), preset="tiny", num_classes=2, tokenizer_hash=None)
    >>> prior = GPT2LMHeadModel(config)
    >>> set_sampling_defaults(prior, temperature=0.9, top_k=8, guidance_scale=2.0)
    >>> config = prior.generation_config
    >>> config.temperature, config.top_k, config.top_p, config.max_new_tokens, config.suppress_tokens
    (0.9, 8, 1.0, 64, [16, 17, 18, 19])
    >>> sampling_defaults(prior)["guidance_scale"], config.guidance_scale
    (2.0, None)
    ```
    """
    larp = prior_metadata(prior.config)
    current = sampling_defaults(prior)
    settings = {
        "temperature": current["temperature"] if temperature is None else temperature,
        "top_k": current["top_k"] if top_k is None else top_k,
        "top_p": current["top_p"] if top_p is None else top_p,
    }
    CodebookLogitsProcessor(larp["codebook_size"], **settings)  # validates the values
    if guidance_scale is not None:
        # Validated as a request for the prior's classes (all of them in turn), so an unconditional prior refuses > 1.
        guidance_scale = check_guidance_scale(guidance_scale, None, larp["num_classes"])
    height, width = layout_grid(larp)
    num_codes = height * width
    config = prior.generation_config
    config.do_sample = True
    config.max_new_tokens = num_codes
    config.min_new_tokens = num_codes
    config.bos_token_id = larp["bos_token_id"]
    config.pad_token_id = larp["bos_token_id"]  # never used: sequences have a fixed length
    config.eos_token_id = None
    config.suppress_tokens = list(range(larp["codebook_size"], prior.config.vocab_size))
    config.temperature = float(settings["temperature"])
    config.top_k = int(settings["top_k"])
    config.top_p = float(settings["top_p"])
    if guidance_scale is not None:
        prior.config.larp = {**prior.config.larp, "guidance_scale": guidance_scale}


def check_pair(
    tokenizer,
    prior: PreTrainedModel,
    prior_name: str = "prior",
    vqvae_name: str = "tokenizer",
    allow_unverified_pair: bool = False,
):
    """
    Raise a `ValueError` naming both sides when `prior` was not trained on `tokenizer`'s codes: another codebook size,
    another grid, or another `tokenizer_hash()` than the one the prior records. `tokenizer` is any `ImageTokenizer`.

    A prior that records no tokenizer hash (built with `prior_config(..., tokenizer_hash=None)`) cannot show that
    the codes are this tokenizer's: it is refused unless `allow_unverified_pair=True`, where codebook size and grid
    alone are checked.
    """
    larp = prior_metadata(prior.config)
    codebook_size, grid = codebook_and_grid(tokenizer)
    if larp["codebook_size"] != codebook_size:
        raise ValueError(
            f"The {prior_name} models codebook_size = {larp['codebook_size']} but the {vqvae_name} has codebook_size = "
            f"{codebook_size}: they do not belong together. Pair a prior with the tokenizer whose token dataset it was "
            "trained on."
        )
    prior_grid = layout_grid(larp)
    if prior_grid != grid:
        # Square grids are named by their side, as priors saved before non-square grids record them.
        if prior_grid[0] == prior_grid[1] and grid[0] == grid[1]:
            mismatch = f"grid_size = {prior_grid[0]} but the {vqvae_name} has grid_size = {grid[0]}"
        else:
            mismatch = f"a {prior_grid[0]}×{prior_grid[1]} grid but the {vqvae_name} has a {grid[0]}×{grid[1]} grid"
        raise ValueError(
            f"The {prior_name} models {mismatch}: they do not belong together. Pair a prior with the tokenizer whose "
            "token dataset it was trained on."
        )
    expected = larp.get("tokenizer_hash")
    if expected is None:
        if allow_unverified_pair:
            return
        raise ValueError(
            f"The {prior_name} records no tokenizer hash, so nothing shows it was trained on the {vqvae_name}'s codes "
            "(codebook size and grid match, but another tokenizer of that shape would too). If you know they belong "
            "together, pass `allow_unverified_pair=True`, or record the tokenizer in the prior: "
            "prior.config.larp['tokenizer_hash'] = tokenizer.tokenizer_hash(), then save it."
        )
    actual = tokenizer.tokenizer_hash()
    if actual != expected:
        raise ValueError(
            f"The {prior_name} was trained on codes of tokenizer {str(expected)[:16]}…, but the {vqvae_name} is "
            f"{actual[:16]}… (its tokenizer_hash()). Its codes mean something else to this tokenizer; "
            "pair the prior with the tokenizer its token dataset was encoded with."
        )


def class_token_ids(larp: dict, class_labels, num_images: int, first_image_index: int = 0) -> torch.Tensor | None:
    """
    (N,) prefix class tokens for `num_images` sequences of the prior whose `larp` metadata is given, or `None` for an
    unconditional prior. `class_labels` is one label for all images, one per image, `None` for every class in turn
    (image i, counted from `first_image_index`, gets class `(first_image_index + i) % num_classes`, so a request
    sampled in parts or processes gets the same classes as in one call) or `"null"` for the null class (the
    unconditional model). Out-of-range, non-integer or miscounted labels raise a `ValueError` that says so.
    """
    if larp["num_classes"] == 0:
        if class_labels is not None:
            raise ValueError(
                "This prior is unconditional (trained without classes); leave `class_labels` out or load a "
                "class-conditional prior (train_prior.py --num_classes N)."
            )
        return None
    if class_labels is None:
        labels = torch.arange(first_image_index, first_image_index + num_images) % larp["num_classes"]
        return labels + larp["class_token_offset"]
    if isinstance(class_labels, str):
        if class_labels != NULL_CLASS:
            raise ValueError(
                f"`class_labels` must be class indices, None (every class in turn) or {NULL_CLASS!r} (the null class: "
                f"the unconditional model), got {class_labels!r}."
            )
        return torch.full((num_images,), larp["null_class_token_id"], dtype=torch.long)
    labels = torch.as_tensor(class_labels).reshape(-1)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"`class_labels` must be integers, got {labels.dtype}.")
    if labels.numel() == 1:
        labels = labels.expand(num_images)
    if labels.numel() != num_images:
        raise ValueError(
            f"`class_labels` has {labels.numel()} entries for {num_images} images; pass one label, or one per image."
        )
    if labels.min() < 0 or labels.max() >= larp["num_classes"]:
        raise ValueError(
            f"`class_labels` must be in [0, {larp['num_classes']}) for this prior, got values from {int(labels.min())} "
            f"to {int(labels.max())}."
        )
    return labels.long() + larp["class_token_offset"]


__all__ = [
    "ARCHITECTURES",
    "NEUTRAL_SAMPLING",
    "NULL_CLASS",
    "PRIOR_PRESETS",
    "check_pair",
    "class_token_ids",
    "codebook_and_grid",
    "grid_fields",
    "layout_grid",
    "layout_problems",
    "null_prefix_ids",
    "prefix_ids",
    "prefix_layout",
    "prior_config",
    "prior_metadata",
    "sampling_defaults",
    "set_sampling_defaults",
    "vocabulary_layout",
]

"""`LarpPipeline`: a tokenizer (any `ImageTokenizer`) and a prior in one folder; `__call__` samples code grids and
decodes them to images."""

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from huggingface_hub import HfApi, snapshot_download
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, PreTrainedModel

from ..generation import CodebookLogitsProcessor, image_generators, resolve_guidance_scale, sample_tokens
from ..local_paths import check_local_path
from ..models import LarpImageProcessor
from ..prior import (
    check_pair,
    class_token_ids,
    layout_grid,
    null_prefix_ids,
    prefix_ids,
    prior_metadata,
    sampling_defaults,
    set_sampling_defaults,
)
from ..tokenizers import ImageTokenizer, as_tokenizer, load_tokenizer
from .class_names import class_indices, prior_class_names
from .folder import (
    PIPELINE_CONFIG_NAME,
    SAMPLE_GRID_NAME,
    check_no_remote_code,
    check_part_library,
    is_pipeline_folder,
    load_part,
    read_pipeline_index,
    swap_pipeline_folder,
    verify_pipeline_folder,
    write_pipeline_manifest,
)
from .image_grid import image_grid
from .model_card import describe_pipeline, evaluation_record, merge_evaluation, pipeline_model_card, write_model_card

OUTPUT_TYPES = ("pil", "np", "pt")
MAX_OUTPUT_BYTES = 8 * 2**30  # one call's decoded images


@dataclass
class LarpPipelineOutput:
    """
    Output of `LarpPipeline.__call__`.

    Args:
        images: a list of PIL images, a (N, H, W, C) float array in [0, 1] (`output_type="np"`) or a (N, C, H, W)
            float tensor in [0, 1] (`output_type="pt"`).
        codes: (N, h, w) int64 tensor, the sampled codebook indices the images were decoded from.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    codes: torch.Tensor


class LarpPipeline:
    r"""
    Image generation with a latent-autoregressive model: the prior (a stock `GPT2LMHeadModel` or `LlamaForCausalLM`)
    samples a grid of codebook indices with `larp_hf.generation.sample_tokens` (its own forward, one token a step,
    into a KV cache allocated once, on a CPU with its linear layers prepacked for oneDNN: the draws of `generate` with
    the same processors, without its per-step work; with classifier-free guidance, class and null rows in one
    forward), the tokenizer decodes it to pixels. The tokenizer is any `larp_hf.tokenizers.ImageTokenizer`: larp_hf's
    `LarpVQVAEModel`, a diffusers `VQModel`, a transformers `JanusVQVAE` or `Emu3VQVAE` (raw or through their
    adapters), a converted checkpoint or a `wrap_tokenizer` module; its grid `(h, w)` need not be square.

    A saved pipeline is one folder (or Hub repo): `vqvae/` (the tokenizer, written by its own `save_pretrained`),
    `prior/`, `image_processor/`, `larp_pipeline.json` naming each part's library and class, `README.md` (the model
    card) and `samples.png`. The parts load on their own: the prior with stock `transformers`
    (`AutoModelForCausalLM.from_pretrained(path, subfolder="prior")`, whose `generate` samples code ids only, given the
    prefix the prior was trained with: `larp_hf.prior.prefix_ids`, `[BOS, class token]` for a class-conditional
    prior, whose grid BOS alone would shift by one), the
    tokenizer with `larp_hf.load_tokenizer(path, subfolder="vqvae")` or its library's own class
    (`VQModel.from_pretrained(path, subfolder="vqvae")` for a diffusers VQModel; larp_hf's `LarpVQVAEModel` with
    `AutoModel.from_pretrained(path, subfolder="vqvae", trust_remote_code=True)`, natively after `import larp_hf`).

    Args:
        vqvae (`ImageTokenizer` or a diffusers `VQModel` / transformers `JanusVQVAE` / `Emu3VQVAE`): the tokenizer;
            a library model is wrapped with `larp_hf.tokenizers.as_tokenizer`.
        prior (`GPT2LMHeadModel`): a prior built with `larp_hf.prior_config` over this tokenizer's codes; a pair whose
            metadata disagree (codebook size, grid, tokenizer hash) is refused.
        image_processor (`LarpImageProcessor`, *optional*): turns decoded pixels into images; defaults to
            `LarpImageProcessor.from_tokenizer(tokenizer)` (its image size, channels and value range).
        allow_unverified_pair (`bool`, *optional*, defaults to `False`): accept a prior that records no tokenizer
            hash (paired by codebook size and grid only); see `larp_hf.check_pair`.

    Example:

    ```python
    >>> import torch
    >>> from transformers import GPT2LMHeadModel
    >>> from larp_hf import LarpPipeline, LarpVQVAEConfig, LarpVQVAEModel, prior_config
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> vqvae = LarpVQVAEModel(LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[16], codebook_size=32))
    >>> prior = GPT2LMHeadModel(prior_config(vqvae, preset="tiny"))
    >>> pipe = LarpPipeline(vqvae, prior)
    >>> output = pipe(num_images=4, temperature=0.9, top_k=8, generator=torch.Generator().manual_seed(0))
    >>> len(output.images), output.images[0].size, tuple(output.codes.shape)
    (4, (16, 16), (4, 8, 8))
    ```

    Any tokenizer, here a non-square 2×3 grid of 16 codes from a wrapped embedding table:

    ```python
    >>> from larp_hf.tokenizers import wrap_tokenizer
    >>> table = torch.nn.Embedding(16, 3)
    >>> tokenizer = wrap_tokenizer(
    ...     table, encode=lambda x: torch.cdist(x.permute(0, 2, 3, 1), table.weight[None]).argmin(-1),
    ...     decode=lambda codes: table(codes).permute(0, 3, 1, 2).tanh(),
    ...     codebook_size=16, grid=(2, 3), image_size=(2, 3), num_channels=3, value_range=(-1.0, 1.0),
    ... )
    >>> pipe = LarpPipeline(tokenizer, GPT2LMHeadModel(prior_config(tokenizer, preset="tiny")))
    >>> output = pipe(num_images=2, seed=0)
    >>> pipe.grid, tuple(output.codes.shape), output.images[0].size
    ((2, 3), (2, 2, 3), (3, 2))
    ```
    """

    def __init__(
        self,
        vqvae,
        prior: PreTrainedModel,
        image_processor: LarpImageProcessor | None = None,
        allow_unverified_pair: bool = False,
    ):
        tokenizer = as_tokenizer(vqvae)
        check_pair(tokenizer, prior, allow_unverified_pair=allow_unverified_pair)
        self.vqvae = tokenizer.eval() if callable(getattr(tokenizer, "eval", None)) else tokenizer
        self.prior = prior.eval()
        self.image_processor = image_processor or LarpImageProcessor.from_tokenizer(tokenizer)
        self.larp = prior_metadata(prior.config)
        self._class_names = prior_class_names(prior.config)  # checked once: names that do not fit are refused here
        # What the model card says beyond the parts' configs: training dataset, training metrics, evaluations.
        self.card_info = {"dataset": None, "metrics": {}, "evaluations": []}
        self._progress_bar_config = {}

    # ------------------------------------------------------------------ properties

    @property
    def tokenizer(self) -> ImageTokenizer:
        """The image tokenizer (the same object as `vqvae`, the name of its folder and argument)."""
        return self.vqvae

    @property
    def device(self) -> torch.device:
        return self.prior.device

    @property
    def dtype(self) -> torch.dtype:
        return self.prior.dtype

    @property
    def codebook_size(self) -> int:
        return self.larp["codebook_size"]

    @property
    def grid(self) -> tuple[int, int]:
        """`(h, w)` of the code grids the prior samples and the tokenizer decodes; need not be square."""
        return layout_grid(self.larp)

    @property
    def grid_size(self) -> int:
        """The side of a square code grid (`grid` is `(grid_size, grid_size)`); a non-square grid has none."""
        height, width = self.grid
        if height != width:
            raise ValueError(
                f"This pipeline's code grid is {height}×{width}, not square, so it has no `grid_size`: read `grid` "
                "((height, width)) instead."
            )
        return height

    @property
    def num_classes(self) -> int:
        return self.larp["num_classes"]

    @property
    def class_names(self) -> list[str] | None:
        """
        The names of the classes by index, from the prior's config `id2label` (`train_prior.py` writes a dataset's
        `ClassLabel` names there), or `None` for an unconditional prior or one that names no classes (transformers'
        default `LABEL_0`, ...): its classes are indices alone.
        """
        return None if self._class_names is None else list(self._class_names)

    def class_indices(self, class_labels):
        """
        `class_labels` with class names (`"circle"`) replaced by their indices, as `__call__` reads them; indices,
        `None` and `"null"` pass unchanged. An unknown name raises a `ValueError` that lists the prior's classes.
        """
        return class_indices(class_labels, self._class_names, self.num_classes)

    def to(self, *args, **kwargs) -> "LarpPipeline":
        """
        Move both models, as diffusers' pipelines do: `pipe.to("cuda")`, `pipe.to(torch.bfloat16)`,
        `pipe.to("cuda", torch.float16)` or `pipe.to(device=..., dtype=...)`. The tokenizer's quantizer and codebook
        stay in float32 whatever the dtype (a library adapter's whole model does), so the codes (and the tokenizer
        hash) do not change. A tokenizer without a `to` method stays where it is.
        """
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"LarpPipeline.to() got unexpected keyword arguments {sorted(kwargs)}.")
        for arg in args:
            if isinstance(arg, torch.dtype):
                dtype = arg
            elif isinstance(arg, (str, torch.device, int)):
                device = arg
            else:
                raise TypeError(f"LarpPipeline.to() takes a device and/or a dtype, got {arg!r}.")
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"`dtype` must be a floating-point dtype, got {dtype}.")
        moves = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
        self.prior.to(**moves)
        if callable(getattr(self.vqvae, "to", None)):  # the interface does not require it: a tokenizer may not move
            self.vqvae.to(**moves)
        return self

    def set_progress_bar_config(self, **kwargs):
        """Options for the tqdm bar over batches, e.g. `disable=True`."""
        self._progress_bar_config = kwargs

    def sampling_defaults(self) -> dict:
        """
        `temperature`, `top_k` (0 = off) and `top_p` (1.0 = off) stored in the prior's generation config, and the
        `guidance_scale` (1.0 = none) stored in its `larp` metadata (see `larp_hf.set_sampling_defaults`).
        """
        return sampling_defaults(self.prior)

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(
        self,
        num_images: int = 1,
        batch_size: int = 64,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        class_labels: int | str | list[int | str] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        first_image_index: int = 0,
        prepack_linears: bool | None = None,
    ):
        r"""
        Sample `num_images` images.

        Args:
            num_images: how many images.
            batch_size: images sampled together (one forward of the prior per code); a tqdm bar counts the batches.
                It changes the speed and the memory used, not the images.
            temperature: > 0; defaults to the prior's generation config (1.0 if unset).
            top_k: sample among the `top_k` most likely codes; 0 turns it off; defaults to the generation config.
            top_p: nucleus mass in (0, 1]; defaults to the generation config (1.0, off, if unset).
            class_labels: class-conditional priors only: one class for every image, or one per image, each a
                class index or a class name (`class_names`: the prior config's `id2label`, e.g. `["circle",
                "square"]`; a string of digits that names no class is an index). Left out, the classes take turns, as many images of each: image i (counted from `first_image_index`) gets
                class `(first_image_index + i) % num_classes`. `"null"` samples the null class, i.e. the
                unconditional model (a class named "null" is reached by its index).
            guidance_scale: classifier-free guidance, >= 1 (1 = none): the logits become
                `null + guidance_scale · (class - null)`, with both halves computed in one batched forward per step.
                Left out: the prior's stored scale (`sampling_defaults()["guidance_scale"]`, 1.0 unless set with
                `larp_hf.set_sampling_defaults`) when sampling classes, 1 for the null class and unconditional priors.
            generator: a `torch.Generator` that makes the result reproducible: the call draws one seed s from it,
                and image i draws from its own stream seeded by (s, i), so image i is the same whatever `batch_size`
                and `num_images` (`num_images=4` gives the first four images of `num_images=8`).
            seed: shorthand for `generator=torch.Generator().manual_seed(seed)`.
            output_type: `"pil"` (list of PIL images), `"np"` ((N, H, W, C) in [0, 1]) or `"pt"` ((N, C, H, W) in
                [0, 1]).
            return_dict: return a `LarpPipelineOutput` (default) or the tuple `(images, codes)`.
            first_image_index: the index of the first image in the seeded sequence: with the same seed,
                `first_image_index=4, num_images=4` gives images 4…7 of `num_images=8`, so a large request can be
                sampled in parts (or split across processes) and still give the same images.
            prepack_linears: decode with a copy of the prior whose linear layers are prepacked for oneDNN (a float32
                prior on a CPU only; see `larp_hf.generation.sample_tokens`): `None` (default) from 3 rows a step
                (`PREPACK_MIN_ROWS`; 2 per image with guidance), where it pays, `True` whenever possible, `False`
                never (the prior's own layers). The per-step distribution is the same either way.
        """
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"`num_images` must be a positive integer, got {num_images!r}.")
        height, width = self.vqvae.image_size
        image_bytes = 4 * self.vqvae.num_channels * height * width  # float32 pixels, all held until the call returns
        if num_images * image_bytes > MAX_OUTPUT_BYTES:
            raise ValueError(
                f"`num_images`={num_images:,} would hold {num_images * image_bytes / 2**30:.1f} GiB of images in memory "
                f"(at most {MAX_OUTPUT_BYTES // 2**30} GiB, {MAX_OUTPUT_BYTES // image_bytes:,} images of this size, per "
                "call). Sample in parts with `first_image_index`, or use `larp-hf generate`, which writes images to disk as it "
                "goes."
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if isinstance(first_image_index, bool) or not isinstance(first_image_index, int) or first_image_index < 0:
            raise ValueError(f"`first_image_index` must be a non-negative integer, got {first_image_index!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if seed is not None and generator is not None:
            raise ValueError("Pass either `seed` or `generator`, not both.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"`seed` must be a non-negative integer, got {seed!r}.")
        if prepack_linears is not None and not isinstance(prepack_linears, bool):
            raise ValueError(f"`prepack_linears` must be None, True or False, got {prepack_linears!r}.")
        # Image i draws from its own stream, seeded by (base seed, i): the same seed gives the same image i whatever
        # the batch size and however many images are asked for.
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)
        base_seed = int(torch.randint(2**62, (), generator=generator))  # the global RNG when no generator is given

        defaults = self.sampling_defaults()
        temperature = defaults["temperature"] if temperature is None else temperature
        top_k = defaults["top_k"] if top_k is None else top_k
        top_p = defaults["top_p"] if top_p is None else top_p
        codes_processor = CodebookLogitsProcessor(self.codebook_size, temperature, top_k, top_p)

        class_labels = self.class_indices(class_labels)
        class_tokens = class_token_ids(self.larp, class_labels, num_images, first_image_index)  # (N,) or None
        stored_scale = defaults["guidance_scale"]
        guidance_scale = resolve_guidance_scale(guidance_scale, class_labels, self.num_classes, stored_scale)

        all_codes = []
        starts = range(0, num_images, batch_size)
        bar = tqdm(starts, desc="Sampling", unit="batch", **{"disable": len(starts) == 1, **self._progress_bar_config})
        for start in bar:
            size = min(batch_size, num_images - start)
            batch_class_tokens = None if class_tokens is None else class_tokens[start : start + size]
            input_ids = prefix_ids(self.larp, size, batch_class_tokens).to(self.device)  # (b, prefix_length)
            generators = image_generators(base_seed, first_image_index + start, size)
            all_codes.append(self._sample_codes(input_ids, codes_processor, generators, guidance_scale, prepack_linears))
        codes = torch.cat(all_codes).view(num_images, *self.grid)  # (N, h, w)

        pixel_values = torch.cat([self.vqvae.decode(chunk).float() for chunk in codes.split(batch_size)])
        images = self.image_processor.postprocess(pixel_values, output_type=output_type)
        codes = codes.cpu()
        if not return_dict:
            return images, codes
        return LarpPipelineOutput(images=images, codes=codes)

    def _sample_codes(
        self, input_ids, codes_processor, generators, guidance_scale: float, prepack_linears: bool | None = None
    ) -> torch.Tensor:
        """(b, prefix) -> (b, h·w) codes; row r draws from `generators[r]`, so the global RNG is left alone."""
        height, width = self.grid
        num_codes = height * width
        null_input_ids = None
        if guidance_scale > 1:
            null_input_ids = null_prefix_ids(self.larp, input_ids.shape[0], device=input_ids.device)
        codes = sample_tokens(
            self.prior, input_ids, codes_processor, num_codes, generators=generators, null_input_ids=null_input_ids,
            guidance_scale=guidance_scale, prepack_linears=prepack_linears,
        )  # fmt: skip
        if codes.shape[1] != num_codes or codes.max() >= self.codebook_size:  # cannot happen with the processor above
            raise RuntimeError(f"Sampling returned {tuple(codes.shape)} tokens outside the codebook.")
        return codes

    # ------------------------------------------------------------------ saving and loading

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        vqvae=None,
        dtype: torch.dtype | str | None = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        verify: bool = True,
        allow_unverified_pair: bool = False,
    ) -> "LarpPipeline":
        """
        Load a pipeline saved with `save_pretrained` from a folder, or from the Hub (`"org/name"`, downloaded once
        with `huggingface_hub.snapshot_download`, then offline with `HF_HUB_OFFLINE=1`).

        The tokenizer is rebuilt from `vqvae/` by `larp_hf.tokenizers.load_tokenizer` (its library's own
        `from_pretrained`, never with `trust_remote_code`); the library `larp_pipeline.json` names for it must be
        installed (`pip install larp_hf[diffusers]` for a diffusers `VQModel`).

        Before anything is loaded, the folder is checked against the `larp_manifest.json` that `save_pretrained`
        wrote (it travels with the folder to the Hub and back): every file it lists must have its recorded size and
        SHA-256, and the parts' sub-folders no other file, or a `ValueError` names each damaged, missing or added
        file (`larp_hf.pipelines.folder.verify_pipeline_folder`). The model card `README.md` is not listed: it may be
        edited. A folder saved before pipelines carried a manifest (its `larp_pipeline.json` names none) loads with
        a warning that it was not verified; one whose manifest went missing is refused.

        Args:
            pretrained_model_name_or_path: a pipeline folder or a Hub repo id.
            vqvae (`ImageTokenizer` or a library VQ model, *optional*): use this tokenizer instead of the saved one,
                e.g. a `wrap_tokenizer` module (whose code a folder cannot bring) or the same tokenizer already in
                memory. It is paired with the prior as any tokenizer is: another tokenizer's codes are refused.
            dtype: load the prior (and cast the tokenizer) in this dtype (e.g. `torch.bfloat16`); the tokenizer's
                quantizer stays float32.
            device: move the pipeline there after loading (`"cuda"`, `"cpu"`, ...).
            revision, token, cache_dir, local_files_only: as for `snapshot_download` (Hub ids only).
            verify: check the folder against its manifest first (default); `False` for a folder whose files were
                changed on purpose (save it again to record them).
            allow_unverified_pair: accept a prior that records no tokenizer hash (see `larp_hf.check_pair`).
        """
        path = Path(pretrained_model_name_or_path)
        check_local_path(pretrained_model_name_or_path, "pretrained_model_name_or_path")  # never a Hub retry loop
        if not path.is_dir():
            path = Path(
                snapshot_download(
                    str(pretrained_model_name_or_path), revision=revision, token=token, cache_dir=cache_dir,
                    local_files_only=local_files_only,
                )
            )  # fmt: skip
        if not isinstance(verify, bool):
            raise ValueError(f"`verify` must be True or False, got {verify!r}.")
        if verify and is_pipeline_folder(path):  # not a pipeline at all: read_pipeline_index says so
            verify_pipeline_folder(path, pretrained_model_name_or_path)
        index = read_pipeline_index(path, cls.__name__, pretrained_model_name_or_path)
        if vqvae is None:
            check_part_library(index, "vqvae", pretrained_model_name_or_path)
            vqvae = load_part(load_tokenizer, path / "vqvae")
        tokenizer_dtype = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype  # "auto": as saved
        if isinstance(tokenizer_dtype, torch.dtype) and callable(getattr(vqvae, "to", None)):
            vqvae.to(dtype=tokenizer_dtype)
        # A folder never brings code to run: a prior whose config names a module of its own is refused, never asked about.
        prior_kwargs = {"trust_remote_code": False} if dtype is None else {"dtype": dtype, "trust_remote_code": False}
        check_no_remote_code(path / "prior")
        prior = load_part(AutoModelForCausalLM.from_pretrained, path / "prior", **prior_kwargs)
        image_processor = load_part(LarpImageProcessor.from_pretrained, path / "image_processor")
        try:
            pipeline = cls(vqvae, prior, image_processor, allow_unverified_pair=allow_unverified_pair)
        except ValueError as error:
            raise ValueError(f"{pretrained_model_name_or_path}: {error}") from None
        pipeline.card_info = {**pipeline.card_info, **index.get("model_card", {})}
        return pipeline.to(device) if device is not None else pipeline

    def save_pretrained(self, save_directory: str | os.PathLike, sample_grid: bool = True, overwrite: bool = False):
        """
        Write the pipeline to `save_directory`: `vqvae/` (the tokenizer's own `save_pretrained`: for a library
        adapter, the library's folder plus `larp_tokenizer.json`), `prior/` (with the whole sampling policy in its
        `generation_config.json`), `image_processor/`, `larp_pipeline.json`, `README.md` (the model card) and, with
        `sample_grid=True`, `samples.png`: 64 images sampled with seed 0 at the sampling defaults.

        Last comes `larp_manifest.json`: the size and SHA-256 of every file written but the card, which
        `from_pretrained` checks before it loads anything.

        The folder is written beside the target and swapped in by renames, so a crash never leaves the old pipeline
        gone and the new one incomplete. An existing pipeline folder is replaced; a non-empty folder that holds no
        pipeline is refused unless `overwrite=True`.
        """
        save_directory = Path(save_directory)
        set_sampling_defaults(self.prior)  # the whole policy in generation_config.json, stored values kept
        with swap_pipeline_folder(save_directory, overwrite=overwrite) as folder:
            self.vqvae.save_pretrained(folder / "vqvae")
            self.prior.save_pretrained(folder / "prior")
            self.image_processor.save_pretrained(folder / "image_processor")
            # transformers looks for remote code at the repo's root even with `subfolder=`: a copy there lets
            # `AutoModel.from_pretrained(repo, subfolder="vqvae", trust_remote_code=True)` work without larp_hf.
            # Only larp_hf's own parts bring such code; a library's folder (diffusers, transformers) has none.
            top_level = [PIPELINE_CONFIG_NAME]
            for code in [*(folder / "vqvae").glob("*.py"), *(folder / "image_processor").glob("*.py")]:
                shutil.copyfile(code, folder / code.name)
                top_level.append(code.name)
            if sample_grid:
                images = self(num_images=64, seed=0, output_type="pt").images
                image_grid(images, nrow=8).save(folder / SAMPLE_GRID_NAME)
                top_level.append(SAMPLE_GRID_NAME)
            self.save_model_card(folder)
            write_pipeline_manifest(folder, top_level)

    def save_model_card(self, save_directory: str | os.PathLike):
        """Write `larp_pipeline.json` and `README.md` of `save_directory` from `card_info`, merged with the records the
        folder holds now, and record the new `larp_pipeline.json` in the folder's manifest
        (`larp_hf.pipelines.model_card.write_model_card`); the weights are untouched."""
        write_model_card(self, save_directory)

    def push_to_hub(
        self,
        repo_id: str,
        private: bool | None = None,
        token: str | None = None,
        revision: str | None = None,
        commit_message: str = "Upload LarpPipeline",
        sample_grid: bool = True,
    ):
        """
        Save the pipeline (as `save_pretrained` does) to a temporary folder and upload it with `huggingface_hub`
        (`create_repo(exist_ok=True)` then `upload_folder`). Returns the commit info.
        """
        api = HfApi(token=token)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, sample_grid=sample_grid)
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            return api.upload_folder(
                repo_id=repo_id, folder_path=folder, revision=revision, commit_message=commit_message, repo_type="model"
            )

    # ------------------------------------------------------------------ description and model card

    def describe(self) -> dict:
        """The pipeline in plain values: the parts and their sizes, the sampling defaults and the card's records."""
        return describe_pipeline(self)

    def model_card(self, has_sample_grid: bool = False):
        """The pipeline's model card (a `huggingface_hub.ModelCard`); see `larp_hf.pipelines.model_card`."""
        return pipeline_model_card(self.describe(), has_sample_grid=has_sample_grid)

    def record_evaluation(self, command: str, scores: dict, **details):
        """
        Add one evaluation of this pipeline's samples to `card_info` (shown on the card's table and as model-index
        entries); `details` are `evaluation_record`'s keyword arguments. An earlier record of the same command, data,
        feature network and settings is replaced. Call `save_model_card(folder)` to write it.
        """
        record = evaluation_record(command, scores, **details)
        self.card_info["evaluations"] = merge_evaluation(self.card_info.get("evaluations") or [], record)


__all__ = ["LarpPipeline", "LarpPipelineOutput"]

"""`LarpPipeline`: a tokenizer and a prior in one folder; `__call__` samples code grids and decodes them to images."""

import contextlib
import json
import math
import os
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from huggingface_hub import HfApi, ModelCard, ModelCardData, snapshot_download
from torchvision.utils import make_grid
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    ClassifierFreeGuidanceLogitsProcessor,
    GenerationConfig,
    LogitsProcessorList,
    PreTrainedModel,
)

from ..generation import CodebookLogitsProcessor
from ..models import LarpImageProcessor, LarpVQVAEModel
from ..prior import prior_metadata


MODEL_INDEX_NAME = "model_index.json"
SAMPLE_GRID_NAME = "samples.png"
OUTPUT_TYPES = ("pil", "np", "pt")
# Hub dataset ids of the seed datasets, for the model card's metadata.
HUB_DATASETS = {
    "fashion_mnist": "zalando-datasets/fashion_mnist",
    "cifar10": "uoft-cs/cifar10",
    "stl10": "tanganke/stl10",
    "faces": "Dmini/FFHQ-64x64",
}


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


def check_pair(vqvae: LarpVQVAEModel, prior: PreTrainedModel, prior_name: str = "prior", vqvae_name: str = "tokenizer"):
    """Raise a `ValueError` naming both sides when `prior` was not trained on `vqvae`'s codes."""
    larp = prior_metadata(prior.config)
    vqvae_config = vqvae.config
    for key, tokenizer_value in (("codebook_size", vqvae_config.codebook_size), ("grid_size", vqvae_config.grid_size)):
        if larp[key] != tokenizer_value:
            raise ValueError(
                f"The {prior_name} models {key} = {larp[key]} but the {vqvae_name} has {key} = {tokenizer_value}: "
                "they do not belong together. Pair a prior with the tokenizer whose token dataset it was trained on."
            )
    expected = larp.get("tokenizer_hash")
    if expected is not None:
        actual = vqvae.tokenizer_hash()
        if actual != expected:
            raise ValueError(
                f"The {prior_name} was trained on codes of tokenizer {expected[:16]}…, but the {vqvae_name} is "
                f"{actual[:16]}… (LarpVQVAEModel.tokenizer_hash()). Its codes mean something else to this tokenizer; "
                "pair the prior with the tokenizer its token dataset was encoded with."
            )


def set_sampling_defaults(prior: PreTrainedModel, temperature=None, top_k=None, top_p=None):
    """
    Write sampling defaults into `prior.generation_config` (saved as `generation_config.json`).

    `LarpPipeline` reads them when a call leaves `temperature`/`top_k`/`top_p` unset; stock
    `prior.generate(bos_ids)` samples a whole grid with them too (without the code-only restriction). `top_k=0` and
    `top_p=1.0` mean "off".
    """
    larp = prior_metadata(prior.config)
    CodebookLogitsProcessor(  # validates the values
        larp["codebook_size"],
        1.0 if temperature is None else temperature,
        top_k or None,
        top_p,
    )
    config = prior.generation_config
    config.do_sample = True
    config.max_new_tokens = larp["grid_size"] ** 2
    config.bos_token_id = larp["bos_token_id"]
    config.pad_token_id = larp["bos_token_id"]  # never used: sequences have a fixed length
    config.temperature = 1.0 if temperature is None else float(temperature)
    config.top_k = int(top_k or 0)
    config.top_p = 1.0 if top_p is None else float(top_p)


@contextlib.contextmanager
def _null_class_in_the_same_batch(prior: PreTrainedModel, null_class_token_id: int):
    """
    Classifier-free guidance in one batched forward per step (as MusicGen does it): while this is active, every
    forward of `generate` runs the B sequences twice, as given and with their class token (position 1) replaced by the
    null class. The logits come back as 2B rows, which `ClassifierFreeGuidanceLogitsProcessor` mixes back into B rows;
    the KV cache holds all 2B rows, so both halves cost one step each, together.
    """
    prepare = prior.prepare_inputs_for_generation

    def prepare_with_null_class(input_ids, *args, **kwargs):
        model_inputs = prepare(input_ids, *args, **kwargs)
        step_ids = model_inputs["input_ids"]  # (B, t): the whole prefix first, then one new token per step
        cache = model_inputs.get("past_key_values")
        seen = cache.get_seq_length() if cache is not None else 0
        unconditional = step_ids.clone()
        if seen <= 1 < seen + step_ids.shape[1]:
            unconditional[:, 1 - seen] = null_class_token_id
        model_inputs["input_ids"] = torch.cat([step_ids, unconditional])  # (2B, t)
        for key in ("attention_mask", "position_ids"):
            if isinstance(model_inputs.get(key), torch.Tensor):
                model_inputs[key] = torch.cat([model_inputs[key], model_inputs[key]])
        return model_inputs

    prior.prepare_inputs_for_generation = prepare_with_null_class
    try:
        yield
    finally:
        del prior.prepare_inputs_for_generation  # the class's method again


def image_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> PIL.Image.Image:
    """(N, C, H, W) images in [0, 1] -> one PIL image, `nrow` per row (default: a square-ish grid), white gaps."""
    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    grid = make_grid(images.float().cpu(), nrow=nrow, padding=padding, pad_value=1.0)  # (3, H', W')
    array = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return PIL.Image.fromarray(array[..., 0] if images.shape[1] == 1 else array)  # mode L for grey, RGB otherwise


class LarpPipeline:
    r"""
    Image generation with a latent-autoregressive model: the prior (a stock `GPT2LMHeadModel`) samples a grid of
    codebook indices with `generate`, the tokenizer (`LarpVQVAEModel`) decodes it to pixels.

    A saved pipeline is one folder (or Hub repo): `vqvae/`, `prior/`, `image_processor/`, `model_index.json` naming
    the parts, `README.md` (the model card) and `samples.png`. The parts load on their own with stock `transformers`
    (`AutoModelForCausalLM.from_pretrained(path, subfolder="prior")`; the tokenizer with `AutoModel` after
    `import larp_hf`).

    Args:
        vqvae (`LarpVQVAEModel`): the tokenizer.
        prior (`GPT2LMHeadModel`): a prior built with `larp_hf.prior_config` over this tokenizer's codes; a pair whose
            metadata disagree (codebook size, grid, tokenizer hash) is refused.
        image_processor (`LarpImageProcessor`, *optional*): turns decoded pixels into images; defaults to
            `LarpImageProcessor.from_vqvae_config(vqvae.config)`.

    Example:

    ```python
    >>> import torch
    >>> from transformers import GPT2LMHeadModel
    >>> from larp_hf import LarpPipeline, LarpVQVAEConfig, LarpVQVAEModel, prior_config
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> vqvae = LarpVQVAEModel(LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[16], codebook_size=32))
    >>> prior = GPT2LMHeadModel(prior_config(vqvae.config, preset="tiny", tokenizer_hash=vqvae.tokenizer_hash()))
    >>> pipe = LarpPipeline(vqvae, prior)
    >>> output = pipe(num_images=4, temperature=0.9, top_k=8, generator=torch.Generator().manual_seed(0))
    >>> len(output.images), output.images[0].size, tuple(output.codes.shape)
    (4, (16, 16), (4, 8, 8))
    ```
    """

    def __init__(
        self, vqvae: LarpVQVAEModel, prior: PreTrainedModel, image_processor: LarpImageProcessor | None = None
    ):
        check_pair(vqvae, prior)
        self.vqvae = vqvae.eval()
        self.prior = prior.eval()
        self.image_processor = image_processor or LarpImageProcessor.from_vqvae_config(vqvae.config)
        self.larp = prior_metadata(prior.config)
        # What the model card says beyond the parts' configs: training dataset and measured metrics.
        self.card_info = {"dataset": None, "metrics": {}}
        self._progress_bar_config = {}

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        return self.prior.device

    @property
    def codebook_size(self) -> int:
        return self.larp["codebook_size"]

    @property
    def grid_size(self) -> int:
        return self.larp["grid_size"]

    @property
    def num_classes(self) -> int:
        return self.larp["num_classes"]

    def to(self, device) -> "LarpPipeline":
        self.vqvae.to(device)
        self.prior.to(device)
        return self

    def set_progress_bar_config(self, **kwargs):
        """Options for the tqdm bar over batches, e.g. `disable=True`."""
        self._progress_bar_config = kwargs

    def sampling_defaults(self) -> dict:
        """`temperature`, `top_k` (0 = off) and `top_p` from the prior's generation config, 1.0 / 0 / 1.0 if unset."""
        config = self.prior.generation_config
        return {
            "temperature": 1.0 if config.temperature is None else config.temperature,
            "top_k": config.top_k or 0,
            "top_p": 1.0 if config.top_p is None else config.top_p,
        }

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(
        self,
        num_images: int = 1,
        batch_size: int = 64,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        class_labels: int | list[int] | torch.Tensor | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        r"""
        Sample `num_images` images.

        Args:
            num_images: how many images.
            batch_size: images sampled together (one `generate` call each); a tqdm bar counts the batches.
            temperature: > 0; defaults to the prior's generation config (1.0 if unset).
            top_k: sample among the `top_k` most likely codes; 0 turns it off; defaults to the generation config.
            top_p: nucleus mass in (0, 1]; defaults to the generation config (1.0, off, if unset).
            class_labels: class-conditional priors only: one class index for every image, or one per image. Left
                out, a class-conditional prior samples from its null class (the unconditional model).
            guidance_scale: classifier-free guidance, >= 1 (1 = none): the logits become
                `null + guidance_scale · (class - null)`, with both halves computed in one batched forward per step.
            generator: a `torch.Generator` that makes the result reproducible; the same seed gives the same images.
            seed: shorthand for `generator=torch.Generator().manual_seed(seed)`.
            output_type: `"pil"` (list of PIL images), `"np"` ((N, H, W, C) in [0, 1]) or `"pt"` ((N, C, H, W) in
                [0, 1]).
            return_dict: return a `LarpPipelineOutput` (default) or the tuple `(images, codes)`.
        """
        if not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"`num_images` must be a positive integer, got {num_images!r}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if seed is not None and generator is not None:
            raise ValueError("Pass either `seed` or `generator`, not both.")
        if seed is not None:
            generator = torch.Generator().manual_seed(seed)

        defaults = self.sampling_defaults()
        temperature = defaults["temperature"] if temperature is None else temperature
        top_k = defaults["top_k"] if top_k is None else top_k
        top_p = defaults["top_p"] if top_p is None else top_p
        if isinstance(top_k, int) and top_k == 0:
            top_k = None
        codes_processor = CodebookLogitsProcessor(self.codebook_size, temperature, top_k, top_p)

        class_tokens = self._class_tokens(class_labels, num_images)  # (N,) or None
        guidance_scale = 1.0 if guidance_scale is None else guidance_scale
        if not isinstance(guidance_scale, (int, float)) or guidance_scale < 1:
            raise ValueError(
                f"`guidance_scale` must be a number >= 1 (1 = no guidance), got {guidance_scale!r}. To sample from "
                "the unconditional model, leave `class_labels` out."
            )
        if guidance_scale > 1 and class_labels is None:
            raise ValueError(
                "`guidance_scale` > 1 steers samples towards `class_labels`; pass `class_labels` (this prior has "
                f"{self.num_classes} classes)."
            )

        all_codes = []
        starts = range(0, num_images, batch_size)
        bar = tqdm(starts, desc="Sampling", unit="batch", **{"disable": len(starts) == 1, **self._progress_bar_config})
        for start in bar:
            size = min(batch_size, num_images - start)
            prefix = [torch.full((size, 1), self.larp["bos_token_id"], dtype=torch.long)]
            if class_tokens is not None:
                prefix.append(class_tokens[start : start + size, None])
            input_ids = torch.cat(prefix, dim=1).to(self.device)  # (b, prefix_length)
            batch_seed = None if generator is None else int(torch.randint(2**62, (), generator=generator))
            all_codes.append(self._sample_codes(input_ids, codes_processor, guidance_scale, batch_seed))
        codes = torch.cat(all_codes).view(num_images, self.grid_size, self.grid_size)  # (N, h, w)

        pixel_values = torch.cat([self.vqvae.decode(chunk) for chunk in codes.split(batch_size)])
        images = self.image_processor.postprocess(pixel_values, output_type=output_type)
        codes = codes.cpu()
        if not return_dict:
            return images, codes
        return LarpPipelineOutput(images=images, codes=codes)

    def _class_tokens(self, class_labels, num_images: int) -> torch.Tensor | None:
        """(N,) prefix class tokens: the requested classes, the null class, or `None` for an unconditional prior."""
        if self.num_classes == 0:
            if class_labels is not None:
                raise ValueError(
                    "This prior is unconditional (trained without classes); leave `class_labels` out or load a "
                    "class-conditional prior (train_prior.py --num_classes N)."
                )
            return None
        if class_labels is None:
            return torch.full((num_images,), self.larp["null_class_token_id"], dtype=torch.long)
        labels = torch.as_tensor(class_labels).reshape(-1)
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"`class_labels` must be integers, got {labels.dtype}.")
        if labels.numel() == 1:
            labels = labels.expand(num_images)
        if labels.numel() != num_images:
            raise ValueError(
                f"`class_labels` has {labels.numel()} entries for {num_images} images; pass one label, or one per image."
            )
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"`class_labels` must be in [0, {self.num_classes}) for this prior, got values from {int(labels.min())} "
                f"to {int(labels.max())}."
            )
        return labels.long() + self.larp["class_token_offset"]

    def _sample_codes(self, input_ids, codes_processor, guidance_scale: float, seed: int | None) -> torch.Tensor:
        """One `generate` call with plain sampling: (b, prefix) -> (b, h·w) codes."""
        num_codes = self.grid_size**2
        # Sampling policy lives in the processors; the stock warpers stay off so nothing is applied twice.
        generation_config = GenerationConfig(
            do_sample=True,
            max_new_tokens=num_codes,
            min_new_tokens=None,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            bos_token_id=self.larp["bos_token_id"],
            pad_token_id=self.larp["bos_token_id"],
            eos_token_id=None,
            use_cache=True,
        )
        processors = [codes_processor]
        guided = contextlib.nullcontext()
        if guidance_scale > 1:
            processors.insert(0, ClassifierFreeGuidanceLogitsProcessor(guidance_scale))
            guided = _null_class_in_the_same_batch(self.prior, self.larp["null_class_token_id"])
        devices = [self.device] if self.device.type == "cuda" else []
        # `generate` draws from the global RNG; a seeded fork of it makes the batch reproducible and leaves the
        # caller's RNG state as it was.
        rng = torch.random.fork_rng(devices=devices) if seed is not None else contextlib.nullcontext()
        with rng, guided:
            if seed is not None:
                torch.manual_seed(seed)
            sequences = self.prior.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=generation_config,
                logits_processor=LogitsProcessorList(processors),
            )
        codes = sequences[:, input_ids.shape[1] :]
        if codes.shape[1] != num_codes or codes.max() >= self.codebook_size:  # cannot happen with the processor above
            raise RuntimeError(f"generate returned {tuple(codes.shape)} tokens outside the codebook.")
        return codes

    # ------------------------------------------------------------------ saving and loading

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, revision: str | None = None, **kwargs):
        """
        Load a pipeline saved with `save_pretrained` from a folder, or from the Hub (`"org/name"`, cached by
        `huggingface_hub`; works offline with `HF_HUB_OFFLINE=1` once cached). `kwargs` (e.g. `token`, `cache_dir`)
        go to `huggingface_hub.snapshot_download`.
        """
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            path = Path(snapshot_download(str(pretrained_model_name_or_path), revision=revision, **kwargs))
        index_path = path / MODEL_INDEX_NAME
        if not index_path.is_file():
            raise ValueError(
                f"{pretrained_model_name_or_path} has no {MODEL_INDEX_NAME}, so it is not a LarpPipeline. Build one from "
                "a trained tokenizer and prior with `larp-hf assemble --vqvae DIR --prior DIR --output DIR`."
            )
        index = json.loads(index_path.read_text())
        if index.get("_class_name") != cls.__name__:
            raise ValueError(f"{index_path} describes a {index.get('_class_name')!r}, not a {cls.__name__}.")
        for part in ("vqvae", "prior", "image_processor"):
            if not (path / part).is_dir():
                raise ValueError(f"{path} lacks the `{part}/` folder that {MODEL_INDEX_NAME} names.")
        vqvae = LarpVQVAEModel.from_pretrained(path / "vqvae")
        prior = AutoModelForCausalLM.from_pretrained(path / "prior")
        image_processor = LarpImageProcessor.from_pretrained(path / "image_processor")
        try:
            pipeline = cls(vqvae, prior, image_processor)
        except ValueError as error:
            raise ValueError(f"{pretrained_model_name_or_path}: {error}") from None
        pipeline.card_info = {"dataset": None, "metrics": {}, **index.get("model_card", {})}
        return pipeline

    def save_pretrained(self, save_directory: str | os.PathLike, sample_grid: bool = True):
        """
        Write the pipeline to `save_directory`: `vqvae/`, `prior/` (with the sampling defaults in its
        `generation_config.json`), `image_processor/`, `model_index.json`, `README.md` (the model card) and, with
        `sample_grid=True`, `samples.png`: 64 images sampled with seed 0 at the sampling defaults.
        """
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        self.vqvae.save_pretrained(save_directory / "vqvae")
        self.prior.save_pretrained(save_directory / "prior")
        self.image_processor.save_pretrained(save_directory / "image_processor")
        index = {
            "_class_name": type(self).__name__,
            "_larp_hf_version": version("larp_hf"),
            "vqvae": ["larp_hf", type(self.vqvae).__name__],
            "prior": ["transformers", type(self.prior).__name__],
            "image_processor": ["larp_hf", type(self.image_processor).__name__],
            "model_card": self.card_info,
        }
        (save_directory / MODEL_INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
        if sample_grid:
            images = self(num_images=64, seed=0, output_type="pt").images
            image_grid(images, nrow=8).save(save_directory / SAMPLE_GRID_NAME)
        self.model_card(has_sample_grid=(save_directory / SAMPLE_GRID_NAME).is_file()).save(save_directory / "README.md")

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

    # ------------------------------------------------------------------ model card

    def model_card(self, has_sample_grid: bool = False) -> ModelCard:
        """The pipeline's model card: Hub metadata header, what the model is, data, sizes, sampling defaults, metrics."""
        dataset = self.card_info.get("dataset")
        metrics = self.card_info.get("metrics") or {}
        conditional = self.num_classes > 0
        card_data = ModelCardData(
            library_name="larp_hf",
            license="apache-2.0",
            pipeline_tag="unconditional-image-generation",
            tags=["larp_hf", "vq-vae", "gpt2", "image-generation", "latent-autoregressive"]
            + (["class-conditional"] if conditional else []),
            # Only Hub dataset ids belong in the metadata; a local folder is named in the text alone.
            datasets=[HUB_DATASETS[dataset]] if dataset in HUB_DATASETS else [dataset] if _is_hub_id(dataset) else None,
        )
        vqvae_config, prior_config = self.vqvae.config, self.prior.config
        vqvae_parameters = sum(p.numel() for p in self.vqvae.parameters())
        prior_parameters = sum(p.numel() for p in self.prior.parameters())
        defaults = self.sampling_defaults()
        side = vqvae_config.image_size
        lines = [
            "# LARP latent-autoregressive image model",
            "",
            f"A `larp_hf` pipeline{f' trained on `{dataset}`' if dataset else ''}: "
            f"a VQ-VAE tokenizer turns {side}×{side} images with {vqvae_config.in_channels} channel(s) into "
            f"{self.grid_size}×{self.grid_size} grids of indices into a {self.codebook_size}-code codebook, and a GPT-2 "
            f"prior samples such grids{' given a class (classifier-free guidance available)' if conditional else ''}; "
            "the tokenizer decodes them back to pixels.",
            "",
        ]
        if has_sample_grid:
            lines += ["![64 samples, seed 0, sampling defaults](samples.png)", ""]
        lines += [
            "| part | class | parameters | details |",
            "|---|---|---|---|",
            f"| `vqvae/` | `LarpVQVAEModel` | {vqvae_parameters:,} | {self.codebook_size} codes of dimension "
            f"{vqvae_config.codebook_dim}, {self.grid_size}×{self.grid_size} grid, downsampling "
            f"{vqvae_config.downsample_factor}× |",
            f"| `prior/` | `{type(self.prior).__name__}` | {prior_parameters:,} | {prior_config.n_layer} layers, width "
            f"{prior_config.n_embd}, {prior_config.n_head} heads, {prior_config.n_positions} positions, "
            f"{self.num_classes or 'no'} classes |",
            "",
            f"Sampling defaults (`prior/generation_config.json`): temperature {defaults['temperature']}, top-k "
            f"{defaults['top_k'] or 'off'}, top-p {defaults['top_p']}.",
            "",
            "## Use",
            "",
            "```python",
            "from larp_hf import LarpPipeline",
            "",
            'pipe = LarpPipeline.from_pretrained("path/or/repo_id")',
            "images = pipe(num_images=16, seed=0).images"
            if not conditional
            else "images = pipe(num_images=16, class_labels=0, guidance_scale=2.0, seed=0).images",
            "```",
            "",
            "or `larp-hf generate path/or/repo_id --num-images 64 --seed 0 --output grid.png`.",
            "",
        ]
        if metrics:
            lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
            lines += [f"| {name} | {_format_metric(value)} |" for name, value in metrics.items()]
            lines += [""]
        return ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/"))


def _format_metric(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


__all__ = ["LarpPipeline", "LarpPipelineOutput", "check_pair", "image_grid", "set_sampling_defaults"]

"""LARP VQ-VAE: a convolutional image tokenizer with an EMA-updated codebook.

encode: pixel_values (B, C, H, W) -> codes (B, h, w) LongTensor
decode: codes (B, h, w) or (B, h*w) -> pixel_values (B, C, H, W)
"""

import hashlib
import json
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_larp_vqvae import LarpVQVAEConfig
from .image_processing_larp_vqvae import check_pixel_values


@dataclass
class LarpVQVAEOutput(ModelOutput):
    """
    Output of [`LarpVQVAEModel.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `reconstruction_loss + commitment_loss`: what the optimizer minimises.
        reconstruction_loss (`torch.FloatTensor` of shape `()`):
            Mean squared error between `pixel_values` and `reconstruction` (in the normalised pixel space).
        commitment_loss (`torch.FloatTensor` of shape `()`):
            `commitment_weight * ‖z_e − sg(quantized)‖²`, which keeps the encoder close to its codes.
        reconstruction (`torch.FloatTensor` of shape `(batch_size, channels, height, width)`):
            The decoded images.
        codes (`torch.LongTensor` of shape `(batch_size, grid_size, grid_size)`):
            The codebook indices of each image.
        perplexity (`torch.FloatTensor` of shape `()`):
            `exp(entropy)` of the batch's code histogram: how many codes the batch effectively uses.
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    perplexity: torch.FloatTensor | None = None


def _is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class LarpVectorQuantizer(nn.Module):
    """
    Nearest-neighbour quantizer whose codebook follows exponential moving averages of the encoder outputs assigned to
    each code (VQ-VAE-2, Razavi et al. 2019), instead of receiving gradients.

    Three things keep the codebook in use:
    - data-dependent initialisation: the first training batch initialises the codebook (k-means or samples);
    - dead-code restart: a code whose EMA cluster size drops below `dead_code_threshold` is moved onto a random
      encoder output of the current batch (Dhariwal et al. 2020, Jukebox, §3.3 "random restarts");
    - usage tracking: `cluster_size` is the EMA of assignments per code and `num_restarts` counts restarts.

    Under `torch.distributed` the statistics are summed across processes and the random choices are made on rank 0
    and broadcast, so every rank holds the same codebook.
    """

    def __init__(self, config: LarpVQVAEConfig):
        super().__init__()
        self.codebook_size = config.codebook_size
        self.codebook_dim = config.codebook_dim
        self.decay = config.ema_decay
        self.epsilon = config.ema_epsilon
        self.dead_code_threshold = config.dead_code_threshold
        self.codebook_init = config.codebook_init
        self.kmeans_iters = config.kmeans_iters
        # Buffers, not parameters: the codebook moves by EMA, and buffers are saved with the weights. They are float32
        # whatever the model's dtype (`_keep_in_fp32_modules_strict`), so the dtype is explicit:
        # `from_pretrained(dtype=torch.bfloat16)` builds the model with bfloat16 as the default dtype.
        fp32 = torch.float32
        self.register_buffer("codebook", torch.randn(config.codebook_size, config.codebook_dim, dtype=fp32))  # (K, D)
        self.register_buffer("cluster_size", torch.zeros(config.codebook_size, dtype=fp32))  # (K,) EMA of assignments
        self.register_buffer("embed_sum", torch.zeros(config.codebook_size, config.codebook_dim, dtype=fp32))  # (K, D)
        self.register_buffer("initialized", torch.tensor(config.codebook_init == "random"))
        self.register_buffer("num_restarts", torch.zeros((), dtype=torch.long))

    def nearest_codes(self, flat: torch.Tensor) -> torch.Tensor:
        """(N, D) vectors of any float dtype -> (N,) index of the closest code in squared Euclidean distance."""
        flat = flat.float()  # the distances are float32 like the codebook: bf16 distances tie between close codes
        # ‖x − e‖² = ‖x‖² − 2 x·e + ‖e‖²; ‖x‖² is the same for every code so it is left out of the argmin.
        distances = torch.addmm(self.codebook.pow(2).sum(1)[None, :], flat, self.codebook.t(), alpha=-2.0)
        return distances.argmin(dim=1)

    @torch.no_grad()
    def _sample_vectors(self, flat: torch.Tensor, num: int) -> torch.Tensor:
        """`num` rows of `flat` drawn at random (with replacement only when there are too few), same on all ranks."""
        if flat.shape[0] >= num:
            picked = flat[torch.randperm(flat.shape[0], device=flat.device)[:num]]
        else:
            picked = flat[torch.randint(0, flat.shape[0], (num,), device=flat.device)]
        picked = picked.clone()
        if _is_distributed():
            dist.broadcast(picked, src=0)
        return picked

    @torch.no_grad()
    def _kmeans(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Lloyd's k-means on (N, D) vectors; returns (centroids (K, D), cluster counts (K,))."""
        centroids = self._sample_vectors(flat, self.codebook_size)
        counts = torch.zeros(self.codebook_size, device=flat.device)
        for _ in range(self.kmeans_iters):
            distances = torch.addmm(centroids.pow(2).sum(1)[None, :], flat, centroids.t(), alpha=-2.0)
            assign = distances.argmin(dim=1)
            counts = torch.bincount(assign, minlength=self.codebook_size).float()
            sums = torch.zeros_like(centroids).index_add_(0, assign, flat)
            if _is_distributed():
                dist.all_reduce(counts)
                dist.all_reduce(sums)
            # Empty clusters keep their previous centroid instead of collapsing to the origin.
            centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        return centroids, counts

    @torch.no_grad()
    def initialize_from_data(self, flat: torch.Tensor):
        """Set the codebook from (N, D) encoder outputs, as `codebook_init` says."""
        if self.codebook_init == "kmeans":
            centroids, counts = self._kmeans(flat)
        elif self.codebook_init == "sample":
            centroids = self._sample_vectors(flat, self.codebook_size)
            world_size = dist.get_world_size() if _is_distributed() else 1
            # Counts are global, like the all-reduced k-means and EMA counts.
            counts = torch.full((self.codebook_size,), world_size * flat.shape[0] / self.codebook_size, device=flat.device)
        else:
            raise ValueError(f"Unknown codebook_init {self.codebook_init!r}.")
        self.codebook.copy_(centroids)
        self.cluster_size.copy_(counts)
        self.embed_sum.copy_(centroids * counts[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, flat: torch.Tensor, indices: torch.Tensor):
        """Move each code towards the mean of the vectors assigned to it; restart codes that fell out of use."""
        counts = torch.bincount(indices, minlength=self.codebook_size).to(flat.dtype)  # (K,)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat)  # (K, D)
        if _is_distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.lerp_(counts, 1.0 - self.decay)
        self.embed_sum.lerp_(sums, 1.0 - self.decay)
        # Laplace smoothing keeps the total mass while giving every code a little, so no division by zero.
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        # A code that never had any mass (random init, empty k-means cluster) keeps its vector instead of going to 0.
        has_mass = self.cluster_size[:, None] > 0
        self.codebook.copy_(torch.where(has_mass, self.embed_sum / smoothed[:, None], self.codebook))

        if self.dead_code_threshold > 0:
            dead = self.cluster_size < self.dead_code_threshold  # (K,) bool, identical on all ranks
            num_dead = int(dead.sum())
            if num_dead > 0:
                replacements = self._sample_vectors(flat, num_dead)
                self.codebook[dead] = replacements
                self.cluster_size[dead] = self.dead_code_threshold
                self.embed_sum[dead] = replacements * self.dead_code_threshold
                self.num_restarts += num_dead

    def forward(self, latents: torch.Tensor):
        """
        latents (B, D, h, w) -> (quantized (B, D, h, w) with straight-through gradients, codes (B, h, w),
        commitment term ‖z_e − sg(e)‖² (unweighted), perplexity).
        """
        batch, dim, height, width = latents.shape
        # The codebook statistics are kept in float32 even under autocast: bf16 sums of thousands of vectors drift.
        with torch.autocast(device_type=latents.device.type, enabled=False):
            latents = latents.float()
            flat = latents.permute(0, 2, 3, 1).reshape(-1, dim)  # (B*h*w, D)
            if self.training:
                self._refuse_non_finite(flat)
            if self.training and not bool(self.initialized):
                self.initialize_from_data(flat.detach())
            indices = self.nearest_codes(flat.detach())  # (B*h*w,)
            # Look the codes up before the EMA step: a restart may move a code this batch was assigned to.
            quantized = self.codebook[indices].view(batch, height, width, dim).permute(0, 3, 1, 2)
            if self.training:
                self.ema_update(flat.detach(), indices)
            commitment = F.mse_loss(latents, quantized.detach())
            # Straight-through estimator: the decoder's gradient flows to the encoder as if quantization were identity.
            quantized = latents + (quantized - latents).detach()
            probs = torch.bincount(indices, minlength=self.codebook_size).float() / indices.numel()
            perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        return quantized, indices.view(batch, height, width), commitment, perplexity

    def _refuse_non_finite(self, flat: torch.Tensor):
        """Raise on every rank, before any codebook statistic moves, when any rank's encoder outputs are not finite."""
        bad = (~torch.isfinite(flat).all()).to(torch.int32)
        if _is_distributed():
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bool(bad):
            raise FloatingPointError(
                "The encoder produced NaN or infinite vectors; the codebook was left as it was. Training has diverged "
                "(lower the learning rate, or resume from the last checkpoint)."
            )

    def codebook_usage(self) -> float:
        """Fraction of codes whose EMA cluster size is at least `dead_code_threshold` (or above 0 if that is 0)."""
        alive = self.cluster_size >= self.dead_code_threshold if self.dead_code_threshold > 0 else self.cluster_size > 0
        return alive.float().mean().item()


class LarpResidualBlock(nn.Module):
    """x + Conv1x1(ReLU(Conv3x3(ReLU(x)))), the residual block of the original VQ-VAE (van den Oord et al., 2017)."""

    def __init__(self, channels: int, hidden_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden_channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(hidden_channels, channels, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.conv1(F.relu(hidden_states))
        hidden_states = self.conv2(F.relu(hidden_states))
        return residual + hidden_states


class LarpVQVAEEncoder(nn.Module):
    """
    (B, C, H, W) images -> (B, D, h, w) latents. Float32 in every model dtype (`_keep_in_fp32_modules_strict`): in
    bfloat16 the latents move by ~0.3%, which changed 0.6-4% of the codes of briefly trained tokenizers (the tests'
    tiny configs and the quick config's architecture, on synthetic blob images; 15% for one seed) while
    `tokenizer_hash` would say the tokenizer is the same. Under `torch.autocast` it runs in the autocast dtype: that is
    an explicit choice.
    """

    def __init__(self, config: LarpVQVAEConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(config.in_channels, config.stem_channels, kernel_size=3, padding=1)
        channels = [config.stem_channels, *config.hidden_channels]
        # Each stage halves height and width: (B, c_i, H, W) -> (B, c_{i+1}, H/2, W/2).
        self.down = nn.ModuleList(
            nn.Conv2d(channels[i], channels[i + 1], kernel_size=4, stride=2, padding=1) for i in range(len(channels) - 1)
        )
        self.res_blocks = nn.ModuleList(
            LarpResidualBlock(channels[-1], config.res_hidden_channels) for _ in range(config.num_res_blocks)
        )
        self.conv_out = nn.Conv2d(channels[-1], config.codebook_dim, kernel_size=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv_in(pixel_values)  # (B, stem, H, W)
        for down in self.down:
            hidden_states = down(F.relu(hidden_states))
        for block in self.res_blocks:
            hidden_states = block(hidden_states)  # (B, c_last, h, w)
        return self.conv_out(F.relu(hidden_states))  # (B, D, h, w)


class LarpVQVAEDecoder(nn.Module):
    def __init__(self, config: LarpVQVAEConfig):
        super().__init__()
        channels = [config.stem_channels, *config.hidden_channels]
        self.conv_in = nn.Conv2d(config.codebook_dim, channels[-1], kernel_size=3, padding=1)
        self.res_blocks = nn.ModuleList(
            LarpResidualBlock(channels[-1], config.res_hidden_channels) for _ in range(config.num_res_blocks)
        )
        # Mirror of the encoder: each stage doubles height and width.
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(channels[i + 1], channels[i], kernel_size=4, stride=2, padding=1)
            for i in reversed(range(len(channels) - 1))
        )
        self.conv_out = nn.Conv2d(config.stem_channels, config.in_channels, kernel_size=3, padding=1)

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv_in(quantized)  # (B, c_last, h, w)
        for block in self.res_blocks:
            hidden_states = block(hidden_states)
        for up in self.up:
            hidden_states = up(F.relu(hidden_states))
        return self.conv_out(F.relu(hidden_states))  # (B, C, H, W)


class LarpVQVAEPreTrainedModel(PreTrainedModel):
    config: LarpVQVAEConfig
    config_class = LarpVQVAEConfig
    base_model_prefix = "vqvae"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # What decides the codes stays float32 in every dtype; only the decoder follows `dtype`. A bf16 codebook rounds
    # every code to 8 bits of mantissa, and bf16 EMA sums of thousands of vectors drift. transformers applies this list
    # in `from_pretrained(dtype=torch.bfloat16 or torch.float16)`; `_apply` below applies it to casts in memory. The
    # quantizer's buffers are named one by one: the name "quantizer" would also turn its `initialized` (bool) and
    # `num_restarts` (int64) into float32 when loading.
    _keep_in_fp32_modules_strict = ["encoder", "quantizer.codebook", "quantizer.cluster_size", "quantizer.embed_sum"]

    def _apply(self, fn, recurse=True):
        # `.to(dtype)`, `.half()`, `.bfloat16()`, `.float()`, `.cuda()` all come through here, and transformers reads
        # `_keep_in_fp32_modules_strict` only in `from_pretrained`. The tensors it lists (and their gradients) still
        # move to the new device but stay float32: their float32 values are moved, never rounded and widened back.
        kept = [
            tensor
            for name, tensor in (*self.named_parameters(), *self.named_buffers())
            if any(name == entry or name.startswith(f"{entry}.") for entry in self._keep_in_fp32_modules_strict)
        ]
        kept += [tensor.grad for tensor in kept if tensor.grad is not None]
        kept_ids = {id(tensor) for tensor in kept}  # `kept` holds them alive, so no other tensor takes their id

        def keep_float32(tensor):
            moved = fn(tensor)
            if id(tensor) in kept_ids and moved.is_floating_point() and moved.dtype != torch.float32:
                return tensor.detach().to(device=moved.device, dtype=torch.float32)
            return moved

        return super()._apply(keep_float32, recurse)

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            # PyTorch's default conv initialisation; the library-wide N(0, 0.02) starves a deep ReLU conv net.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, LarpVectorQuantizer):
            init.normal_(module.codebook, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.cluster_size)
            init.zeros_(module.embed_sum)
            init.constant_(module.initialized, self.config.codebook_init == "random")
            init.zeros_(module.num_restarts)


class LarpVQVAEModel(LarpVQVAEPreTrainedModel):
    """
    The LARP image tokenizer: `encode` turns images into a grid of codebook indices, `decode` turns such a grid back
    into images, and `forward` does both and returns the training losses.

    In bfloat16 or float16 (`from_pretrained(..., dtype=torch.bfloat16)`, `.to(torch.float16)`, `.half()`) only the
    decoder changes dtype: the encoder and the quantizer stay float32, so `encode` gives the codes of the float32 model
    and `tokenizer_hash` does not change. `model.dtype` is the decoder's, the dtype `decode` returns.

    Example:

    ```python
    >>> import torch
    >>> from larp_hf import LarpVQVAEConfig, LarpVQVAEModel
    >>> model = LarpVQVAEModel(LarpVQVAEConfig(in_channels=1, image_size=32, codebook_size=64)).eval()
    >>> codes = model.encode(torch.rand(2, 1, 32, 32) * 2 - 1)
    >>> codes.shape, codes.dtype
    (torch.Size([2, 8, 8]), torch.int64)
    >>> model.decode(codes).shape
    torch.Size([2, 1, 32, 32])
    ```
    """

    def __init__(self, config: LarpVQVAEConfig):
        super().__init__(config)
        self.encoder = LarpVQVAEEncoder(config)
        self.quantizer = LarpVectorQuantizer(config)
        self.decoder = LarpVQVAEDecoder(config)
        self.post_init()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the model was loaded or cast in: the decoder's (the encoder and quantizer are float32 always)."""
        return self.decoder.conv_in.weight.dtype

    # The `larp_hf.tokenizers.ImageTokenizer` interface: what every consumer of a tokenizer reads, whoever made it.
    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the code grid `encode` returns (square for this model)."""
        return (self.config.grid_size, self.config.grid_size)

    @property
    def image_size(self) -> tuple[int, int]:
        """(h, w) of the pixel values `encode` takes."""
        return (self.config.image_size, self.config.image_size)

    @property
    def num_channels(self) -> int:
        return self.config.in_channels

    @property
    def value_range(self) -> tuple[float, float]:
        """The range of the pixel values `encode` expects: `LarpImageProcessor`'s output (mean 0.5, std 0.5)."""
        return (-1.0, 1.0)

    # The config fields that decide which codes an image gets: the encoder's architecture, the codebook's shape and the
    # image size `encode` reads. Training-only settings (EMA decay, restarts, commitment weight) are left out.
    _CODE_FIELDS = (
        "in_channels", "image_size", "hidden_channels", "stem_channels", "num_res_blocks", "res_hidden_channels",
        "codebook_size", "codebook_dim",
    )  # fmt: skip

    def tokenizer_hash(self) -> str:
        """
        SHA-256 (hex) of exactly what decides `encode`'s codes: the config fields in `_CODE_FIELDS`, the encoder's
        weights and the codebook, as float32 values in the order of their names. Token datasets and priors record it,
        so that a prior is refused with a tokenizer whose codes mean something else.

        Left out: the decoder (it reads codes, it does not decide them: a retrained or cast decoder keeps the hash) and
        the quantizer's training statistics (`cluster_size`, `embed_sum`, `num_restarts`, `initialized`), which
        `encode` never reads. What is hashed is float32 in every dtype (`_keep_in_fp32_modules_strict`), so the hash is
        the same in bfloat16 and float16. The image processor, which decides the pixel values an image becomes, is
        saved beside the model (`preprocessor_config.json`) and not part of the hash.
        """
        digest = hashlib.sha256()
        fields = {name: getattr(self.config, name) for name in self._CODE_FIELDS}
        digest.update(json.dumps(fields, sort_keys=True).encode())
        tensors = {f"encoder.{name}": tensor for name, tensor in self.encoder.state_dict().items()}
        tensors["quantizer.codebook"] = self.quantizer.codebook
        for name in sorted(tensors):
            digest.update(name.encode())
            digest.update(tensors[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        grid = self.config.grid_size
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise ValueError(f"`codes` must be an integer tensor of codebook indices, got {getattr(codes, 'dtype', type(codes))}.")
        if codes.ndim == 2 and codes.shape[1] == grid * grid:
            codes = codes.view(codes.shape[0], grid, grid)  # (B, h*w) raster order -> (B, h, w)
        if codes.ndim != 3 or tuple(codes.shape[1:]) != (grid, grid):
            raise ValueError(
                f"`codes` must have shape (batch, {grid}, {grid}) or (batch, {grid * grid}), got {tuple(codes.shape)}."
            )
        if codes.numel() > 0 and (codes.min() < 0 or codes.max() >= self.config.codebook_size):
            raise ValueError(
                f"`codes` must be indices in [0, {self.config.codebook_size}) (the codebook size), got values in "
                f"[{int(codes.min())}, {int(codes.max())}]. Sequences from a prior may contain special tokens "
                "(BOS, class ids): strip them before decoding."
            )
        return codes.long()

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """
        (B, C, H, W) normalised images of any float dtype (read as float32) -> (B, h, w) codebook indices. Never
        updates the codebook. Refuses NaN and infinite pixels.
        """
        check_pixel_values(pixel_values, self.config)
        pixel_values = pixel_values.to(self.encoder.conv_in.weight.dtype)  # any float dtype is read as float32
        latents = self.encoder(pixel_values)  # (B, D, h, w)
        with torch.autocast(device_type=latents.device.type, enabled=False):
            flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
            indices = self.quantizer.nearest_codes(flat)  # float32 distances to the float32 codebook
        return indices.view(latents.shape[0], latents.shape[2], latents.shape[3])

    def decode(self, codes: torch.LongTensor) -> torch.FloatTensor:
        """
        (B, h, w) or (B, h*w) codebook indices -> (B, C, H, W) images in the normalised pixel space, in the model's
        dtype (`LarpImageProcessor.postprocess` takes any).
        """
        codes = self._check_codes(codes)
        quantized = self.quantizer.codebook[codes].permute(0, 3, 1, 2)  # (B, D, h, w) float32
        return self.decoder(quantized.to(self.dtype))

    def forward(self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs) -> LarpVQVAEOutput:
        check_pixel_values(pixel_values, self.config)
        pixel_values = pixel_values.to(self.encoder.conv_in.weight.dtype)
        latents = self.encoder(pixel_values)  # (B, D, h, w)
        quantized, codes, commitment, perplexity = self.quantizer(latents)
        reconstruction = self.decoder(quantized.to(self.dtype))  # (B, C, H, W)
        reconstruction_loss = F.mse_loss(reconstruction.float(), pixel_values.float())
        commitment_loss = self.config.commitment_weight * commitment
        output = LarpVQVAEOutput(
            loss=reconstruction_loss + commitment_loss,
            reconstruction_loss=reconstruction_loss,
            commitment_loss=commitment_loss,
            reconstruction=reconstruction,
            codes=codes,
            perplexity=perplexity,
        )
        return output if return_dict is not False else output.to_tuple()


# `save_pretrained` copies this file and the files it imports relatively (configuration_larp_vqvae.py,
# image_processing_larp_vqvae.py) into the folder and writes `auto_map`, so
# `AutoModel.from_pretrained(folder, trust_remote_code=True)` works without larp_hf. Keep the imports to those two
# files, transformers, torch and the standard library.
LarpVQVAEModel.register_for_auto_class("AutoModel")


__all__ = ["LarpVQVAEModel", "LarpVQVAEPreTrainedModel", "LarpVQVAEOutput", "LarpVectorQuantizer"]

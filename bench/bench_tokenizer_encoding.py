"""Encoding throughput of each tokenizer adapter against calling its library directly, side by side in one run.

    python bench/bench_tokenizer_encoding.py [--batch_size 16] [--repeats 9] [--threads N] [--device cpu]

For diffusers' `VQModel` and transformers' `JanusVQVAE` and `Emu3VQVAE`, a randomly initialised model of a moderate
size (16×16 grids of 8,192 / 16,384 / 32,768 codes) encodes the same batch two ways, taking turns in every round:

adapter:  `tokenizer.encode(pixel_values)`: the input check, the float32 / autocast-off guard, the library's calls,
          the reshape to (B, h, w).
direct:   the library's own calls and nothing else, as a user would write them: `VQModel.encode(...).latents` then
          its `quantize(...)` indices; `JanusVQVAE.encode(...).image_tokens`; `Emu3VQVAE.encode(..., image_sizes=...)`.

The Janus adapter is timed with `codebook_l2_norm=False` (the same computation as `JanusVQVAE.encode`); the cosine
quantizer it uses by default is timed on its own line against it, since it is a different computation, not overhead.
Each line prints the median images/s of both, the median per-round ratio adapter / direct time and its range: the
overhead the adapter adds (goal: under 5%). Speed does not depend on the weights.
"""

import argparse
import os
import statistics
import time

import torch
from diffusers import VQModel
from transformers import Emu3VQVAE, Emu3VQVAEConfig, JanusVQVAE, JanusVQVAEConfig

from larp_hf.tokenizers import DiffusersVQTokenizer, Emu3VQTokenizer, JanusVQTokenizer


def models(image_size: int):
    """(name, adapter, direct encode) for each library, with 16×16 grids at `image_size` = 64 pixels (f4)."""
    torch.manual_seed(0)
    grid = image_size // 4
    vqmodel = VQModel(
        block_out_channels=(32, 64, 128), down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1, norm_num_groups=32, num_vq_embeddings=8192,
        vq_embed_dim=8, latent_channels=8, sample_size=image_size,
    ).eval()  # fmt: skip

    def vqmodel_direct(pixel_values):
        latents = vqmodel.encode(pixel_values).latents
        return vqmodel.quantize(latents)[2][2]

    janus = JanusVQVAE(
        JanusVQVAEConfig(
            embed_dim=8, num_embeddings=16384, latent_channels=8, base_channels=32, channel_multiplier=[1, 2, 4],
            num_res_blocks=1, num_patches=grid, projection_dim=8, image_token_embed_dim=8,
        )
    ).eval()  # fmt: skip

    def janus_direct(pixel_values):
        return janus.encode(pixel_values, return_dict=True).image_tokens

    emu3 = Emu3VQVAE(
        Emu3VQVAEConfig(
            codebook_size=32768, embed_dim=8, latent_channels=8, base_channels=32, channel_multiplier=[1, 2, 2],
            num_res_blocks=1, attn_resolutions=[], temporal_downsample_factor=2, hidden_size=64,
        )
    ).eval()  # fmt: skip
    sizes = None

    def emu3_direct(pixel_values):
        nonlocal sizes
        if sizes is None or sizes.shape[0] != pixel_values.shape[0]:
            sizes = torch.tensor([[image_size, image_size]] * pixel_values.shape[0])
        return emu3.encode(pixel_values, image_sizes=sizes, return_dict=True).image_tokens

    return [
        ("diffusers VQModel", DiffusersVQTokenizer(vqmodel, value_range=(-1.0, 1.0)), vqmodel_direct),
        ("transformers JanusVQVAE", JanusVQTokenizer(janus, codebook_l2_norm=False), janus_direct),
        ("transformers Emu3VQVAE", Emu3VQTokenizer(emu3, image_size=image_size), emu3_direct),
    ], JanusVQTokenizer(janus)


def paired(first, second, pixel_values, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds of `first(pixel_values)` and `second(pixel_values)`, alternating which goes first in each round."""
    times = ([], [])
    with torch.no_grad():
        first(pixel_values), second(pixel_values)  # warm-up
        for round_index in range(repeats):
            order = (0, 1) if round_index % 2 == 0 else (1, 0)
            for index in order:
                start = time.perf_counter()
                (first, second)[index](pixel_values)
                times[index].append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--image_size", type=int, default=64, help="pixels a side (16×16 grids at the default)")
    parser.add_argument("--repeats", type=int, default=9, help="paired rounds per tokenizer")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    synchronize = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"device {args.device}, {torch.get_num_threads()} threads (load average {load}); batch {args.batch_size} of "
        f"{args.image_size}×{args.image_size} RGB images; median of {args.repeats} paired rounds"
    )
    print(f"{'tokenizer':<26} {'grid':>7} {'codes':>6} {'adapter':>9} {'direct':>9}   adapter / direct time")
    print(f"{'':<26} {'':>7} {'':>6} {'images/s':>9} {'images/s':>9}   median (range)")
    pixel_values = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=args.device) * 2 - 1
    entries, janus_cosine = models(args.image_size)

    def timed(fn):
        def call(pixel_values):
            result = fn(pixel_values)
            synchronize()
            return result

        return call

    for name, tokenizer, direct in entries:
        tokenizer.to(args.device)
        codes = tokenizer.encode(pixel_values)
        with torch.no_grad():
            reference = direct(pixel_values)
        if isinstance(reference, (list, tuple)):  # Emu3: one (h, w) grid per image
            reference = torch.stack(list(reference))
        same = torch.equal(codes.flatten().cpu(), reference.flatten().cpu())
        ours, theirs = paired(timed(tokenizer.encode), timed(direct), pixel_values, args.repeats)
        ratios = [a / b for a, b in zip(ours, theirs)]
        print(
            f"{name:<26} {'×'.join(map(str, tokenizer.grid)):>7} {tokenizer.codebook_size:>6} "
            f"{args.batch_size / statistics.median(ours):>9.1f} {args.batch_size / statistics.median(theirs):>9.1f}   "
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"
            + ("" if same else "   CODES DIFFER")
        )
    janus_cosine.to(args.device)
    cosine, plain = paired(timed(janus_cosine.encode), timed(entries[1][1].encode), pixel_values, args.repeats)
    ratios = [a / b for a, b in zip(cosine, plain)]
    print(
        f"JanusVQTokenizer's default cosine quantizer (codebook_l2_norm=True) / transformers' own: "
        f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) of the time"
    )


if __name__ == "__main__":
    main()

"""How the tokenizer recipe feeds batches, against the straightforward alternative, side by side in one run.

    python bench/bench_vqvae_dataloading.py [--num_batches 50] [--batch_size 128]

1. Loading the preprocessed split into memory:
   ours:        a fixed-shape `Array3D` uint8 column, turned into one tensor by `with_format("torch")[:]`.
   alternative: the same pixels as nested lists (what `map` stores without `features=`).
2. Serving batches:
   ours:        the uint8 tensor in memory, normalised per batch by the processor.
   alternative: the processor's float output stored in the Arrow table, read row by row through `with_format("torch")`.

Both sides produce identical tensors from Fashion-MNIST's test split. Prints the times and ratios; the time of one
training step of the quick config's model is printed for scale.
"""

import argparse
import time

import datasets
import torch

from larp_hf import LarpImageProcessor, LarpVQVAEConfig, LarpVQVAEModel
from larp_hf.data import load_image_dataset


def batches_per_second(dataloader, num_batches: int) -> float:
    iterator = iter(dataloader)
    next(iterator)  # warm-up
    start = time.perf_counter()
    for _ in range(num_batches):
        next(iterator)
    return num_batches / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_batches", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)

    processor = LarpImageProcessor(num_channels=1)
    dataset = load_image_dataset("fashion_mnist", split="test")
    def to_uint8(batch):
        pixels = processor(batch["image"], do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
        return {"pixels": pixels.round().to(torch.uint8).numpy()}

    map_kwargs = {"batched": True, "remove_columns": dataset.column_names, "load_from_cache_file": False}
    array3d = datasets.Features({"pixels": datasets.Array3D(shape=(1, 32, 32), dtype="uint8")})
    uint8 = dataset.map(to_uint8, features=array3d, **map_kwargs)
    nested = dataset.map(to_uint8, **map_kwargs)
    start = time.perf_counter()
    pixels = uint8.with_format("torch")[:]["pixels"]
    array3d_seconds = time.perf_counter() - start
    start = time.perf_counter()
    nested_pixels = nested.with_format("torch")[:]["pixels"]
    nested_seconds = time.perf_counter() - start
    assert torch.equal(pixels, nested_pixels)
    floats = uint8.with_format("torch").map(
        lambda b: {"pixel_values": processor(b["pixels"], do_resize=False, return_tensors="pt")["pixel_values"].numpy()},
        batched=True, remove_columns=["pixels"], load_from_cache_file=False,
    ).with_format("torch")  # fmt: skip

    ours = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(pixels),
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=lambda ex: processor(torch.stack([p for (p,) in ex]), do_resize=False, return_tensors="pt")["pixel_values"],
    )
    alternative = torch.utils.data.DataLoader(
        floats, batch_size=args.batch_size, shuffle=True, collate_fn=lambda ex: torch.stack([e["pixel_values"] for e in ex])
    )
    # Same pixels either way.
    first = floats[0]["pixel_values"]
    second = processor(pixels[:1], do_resize=False, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(first, second, atol=1e-6, rtol=0)

    ours_rate = batches_per_second(ours, args.num_batches)
    alternative_rate = batches_per_second(alternative, args.num_batches)

    model = LarpVQVAEModel(LarpVQVAEConfig(in_channels=1)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = next(iter(ours))
    for i in range(6):
        if i == 1:
            start = time.perf_counter()
        model(batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    step_seconds = (time.perf_counter() - start) / 5

    print(f"threads: {torch.get_num_threads()}, {len(dataset)} images, batch size {args.batch_size}")
    print(f"load split as a tensor, ours (Array3D):       {array3d_seconds:8.3f} s")
    print(f"load split as a tensor, alternative (nested): {nested_seconds:8.3f} s")
    print(f"ratio alternative / ours: {nested_seconds / array3d_seconds:.0f}x")
    print(f"serving {args.num_batches} batches:")
    print(f"ours (uint8 in memory + per-batch normalise): {ours_rate:8.1f} batches/s ({1000 / ours_rate:6.1f} ms/batch)")
    print(f"alternative (Arrow rows, with_format torch):  {alternative_rate:8.1f} batches/s ({1000 / alternative_rate:6.1f} ms/batch)")
    print(f"ratio ours / alternative: {ours_rate / alternative_rate:.1f}x")
    print(f"one training step of the quick config's model: {step_seconds * 1000:.0f} ms")


if __name__ == "__main__":
    main()

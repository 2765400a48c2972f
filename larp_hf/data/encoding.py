"""Encoding image datasets into token datasets: the codes of every image, once, cached by `datasets`, on every process."""

import math

import datasets
import torch
from accelerate import PartialState
from datasets.fingerprint import Hasher

from ..models.vqvae.image_processing_larp_vqvae import LarpImageProcessor
from ..prior import codebook_and_grid
from ..threads import torch_threads
from ..tokenizers import ImageTokenizer
from .preprocessed_images import PreprocessedImages, collate_images
from .provenance import DatasetRecord
from .token_dataset import code_feature, make_metadata


def encode_dataset(
    vqvae: ImageTokenizer,
    dataset: datasets.Dataset,
    image_processor: LarpImageProcessor | None = None,
    batch_size: int = 256,
    flip_augment: bool = True,
    num_proc: int | None = None,
    dataset_record: DatasetRecord | None = None,
) -> datasets.Dataset:
    """
    Turn an image dataset into a token dataset, a batch at a time: `num_proc` DataLoader workers read, decode and
    resize the images (`PreprocessedImages`), the tokenizer encodes them in this process, on its device, and the codes
    are written to the datasets cache as they come (`Dataset.from_generator`). Memory follows the batch, not the
    dataset, and a second call with the same tokenizer, processor and data is a cache hit: the cache key is built from
    the source's fingerprint and the tokenizer's hash, not from pickling the model.

    Columns: `input_ids` (the h·w codes of each image in raster order, in the narrowest unsigned integer type that
    holds the codebook: uint8 up to 256 codes, uint16 up to 65,536),
    `input_ids_flipped` (the codes of the horizontally flipped image, when `flip_augment`) and `label` when the source
    has one. The tokenizer's hash, grid `(h, w)` and codebook size are stored in the `input_ids` feature, where they
    survive `save_to_disk`, parquet and `push_to_hub` (see `larp_hf.data.token_dataset`). The tokenizer encodes in
    float32, with autocast off, whatever the caller's precision settings.

    Under `accelerate launch` or `torchrun` (a `torch.distributed` process group is up), call it on every process:
    each one encodes its own contiguous part of the rows, then reads the other parts from the datasets cache, which
    every process must see (one machine, or a shared `HF_DATASETS_CACHE`), and returns the whole token dataset. The
    parts end on batch boundaries, so every image is encoded in the same batch as by one process, and the result is
    the same, row for row.

    Args:
        vqvae: any `ImageTokenizer` (`larp_hf.load_tokenizer(folder)`, a `LarpVQVAEModel`, an adapter); put it on
            the device you want the encoding to run on.
        dataset: a `datasets.Dataset` with an `image` column (see `load_image_dataset`).
        image_processor: defaults to `LarpImageProcessor.from_tokenizer(vqvae)`: images resized to the tokenizer's
            `image_size`, converted to its `num_channels` and rescaled to its `value_range`.
        batch_size: images encoded per forward pass.
        flip_augment: also store the codes of the mirrored images.
        num_proc: processes that decode and resize the images (DataLoader workers); `None` or 0: this process.
        dataset_record: where the images came from (`DatasetRecord`), kept in the metadata as `dataset`, so that a
            prior trained on the token dataset records it too.

    Raises:
        ValueError: the dataset has no `image` column, or a row's image cannot be decoded (the error names the row).
    """
    if "image" not in dataset.column_names:
        raise ValueError(f"The dataset has no `image` column (columns: {dataset.column_names}); see load_image_dataset.")
    codebook_size, grid = codebook_and_grid(vqvae)
    image_processor = image_processor or LarpImageProcessor.from_tokenizer(vqvae)
    tokenizer_hash = vqvae.tokenizer_hash()
    record = None if dataset_record is None else dataset_record.to_dict()
    metadata = make_metadata(tokenizer_hash, grid, codebook_size, flip_augment, dataset=record)
    features = {"input_ids": code_feature(metadata)}
    if flip_augment:
        features["input_ids_flipped"] = code_feature(metadata)
    if "label" in dataset.column_names:
        features["label"] = dataset.features["label"]
    features = datasets.Features(features)
    if isinstance(vqvae, torch.nn.Module):
        vqvae.eval()

    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    state = PartialState() if distributed else None
    num_processes, process_index = (state.num_processes, state.process_index) if distributed else (1, 0)
    num_batches = math.ceil(len(dataset) / batch_size)
    bounds = [min(len(dataset), batch_size * (num_batches * rank // num_processes)) for rank in range(num_processes + 1)]

    def encode_rows(start: int, stop: int) -> datasets.Dataset:
        if start == stop:
            return datasets.Dataset.from_dict({name: [] for name in features}, features=features)
        fingerprint = Hasher.hash(
            [dataset._fingerprint, start, stop, tokenizer_hash, image_processor.to_dict(), flip_augment, features.to_dict()]
        )
        try:
            return datasets.Dataset.from_generator(
                _encoded_rows,
                features=features,
                gen_kwargs={
                    "vqvae": vqvae, "batch_size": batch_size, "flip_augment": flip_augment, "num_proc": num_proc,
                    "images": PreprocessedImages(dataset.select(range(start, stop)), image_processor, first_row=start),
                },  # fmt: skip
                fingerprint=fingerprint,
                split=datasets.NamedSplit(str(dataset.split or "train")),
            )
        except datasets.exceptions.DatasetGenerationError as error:
            if isinstance(error.__cause__, ValueError):  # a row that cannot be decoded: say which, not "generation failed"
                raise error.__cause__ from None
            raise

    own_part = encode_rows(bounds[process_index], bounds[process_index + 1])
    if not distributed:
        return own_part
    state.wait_for_everyone()  # every part is in the cache now
    parts = [encode_rows(bounds[rank], bounds[rank + 1]) for rank in range(num_processes)]
    return datasets.concatenate_datasets(parts)


def tokenizer_device(tokenizer) -> torch.device:
    """The device an `ImageTokenizer` encodes on: its `device`, else that of its first parameter, else the CPU."""
    device = getattr(tokenizer, "device", None)
    if device is not None:
        return torch.device(device)
    parameter = next(iter(tokenizer.parameters()), None) if isinstance(tokenizer, torch.nn.Module) else None
    return torch.device("cpu") if parameter is None else parameter.device


def _encoded_rows(vqvae, images: PreprocessedImages, batch_size: int, flip_augment: bool, num_proc: int | None):
    device = tokenizer_device(vqvae)
    batches = torch.utils.data.DataLoader(
        images, batch_size=batch_size, num_workers=num_proc or 0, collate_fn=collate_images
    )
    # float32 in, autocast off: the codes are those of the tokenizer_hash recorded, whatever precision the caller runs.
    # Threads as larp_hf.threads chooses them for batches: the free CPUs, so that a busy neighbour does not make
    # torch's threads wait on each other (LARP_HF_NUM_THREADS or a count the user set overrides it).
    with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False), torch_threads(batched=True):
        for batch in batches:
            pixel_values = batch["pixel_values"].to(device, torch.float32)
            columns = {"input_ids": vqvae.encode(pixel_values).flatten(1).cpu().numpy()}  # (B, h·w)
            if flip_augment:
                columns["input_ids_flipped"] = vqvae.encode(pixel_values.flip(-1)).flatten(1).cpu().numpy()
            if "label" in batch:
                columns["label"] = batch["label"].numpy()
            for row in range(len(pixel_values)):
                yield {name: values[row] for name, values in columns.items()}


__all__ = ["encode_dataset", "tokenizer_device"]

"""Image streams (`datasets.IterableDataset`) for DataLoaders: epochs of a fixed number of full batches, in an order
fixed by the seed and the epoch, so that a resumed run sees the batches an uninterrupted one would."""

import datasets
import torch


class StreamedImages(torch.utils.data.IterableDataset):
    """
    The rows of an image stream, for a DataLoader whose collate function preprocesses them a batch at a time (in its
    workers, when there are workers; see `preprocess_images`). Nothing but the shuffle buffer is kept in memory.

    For training, give `num_examples` (the rows an epoch takes) and `batch_size`: every epoch is then exactly
    `num_examples // batch_size` full batches, whatever the number of DataLoader workers. Each worker reads its own
    shards of the stream (datasets shares them out) and yields its share of the batches, starting its shards again
    if they run out first (uneven shards). With `seed`, the stream is shuffled (shard order and a buffer of
    `shuffle_buffer` rows): a new order every epoch (`set_epoch`), the same in every run. So `len(dataloader)` is
    exact and a resumed run that skips the batches already trained on sees the batches an uninterrupted run would.

    Without `num_examples` (validation) it is one pass over the stream, in its order.

    Args:
        stream: a `datasets.IterableDataset` with an `image` column (`load_image_dataset(..., streaming=True)`).
        num_examples: rows per epoch (training); `None`: one pass.
        batch_size: with `num_examples`, the rows of one step: the DataLoader's batch size, times the number of
            processes where accelerate gives each process its share of every step's rows (`IterableDatasetShard`).
        seed: shuffle with this seed; `None`: the stream's order.
        shuffle_buffer: rows in the shuffle buffer.
    """

    def __init__(
        self,
        stream: datasets.IterableDataset,
        num_examples: int | None = None,
        batch_size: int | None = None,
        seed: int | None = None,
        shuffle_buffer: int = 1000,
    ):
        if num_examples is not None and (batch_size is None or num_examples < batch_size):
            raise ValueError(f"An epoch of num_examples={num_examples} needs a batch_size of at most that many.")
        self.stream = stream if seed is None else stream.shuffle(seed=seed, buffer_size=shuffle_buffer)
        self.num_examples, self.batch_size = num_examples, batch_size

    def __len__(self) -> int:
        if self.num_examples is None:
            raise TypeError("A one-pass stream (no num_examples) has no length.")
        return self.num_examples // self.batch_size * self.batch_size

    def set_epoch(self, epoch: int):
        self.stream.set_epoch(epoch)

    def __iter__(self):
        if self.num_examples is None:
            yield from self.stream  # in a DataLoader worker, datasets gives it its share of the shards
            return
        worker = torch.utils.data.get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker else (0, 1)
        # The DataLoader takes batches from its workers in turn: worker k yields batches k, k + K, k + 2K, ...
        quota = len(range(worker_id, self.num_examples // self.batch_size, num_workers)) * self.batch_size
        yielded = 0
        while yielded < quota:
            before = yielded
            for row in self.stream:
                yield row
                yielded += 1
                if yielded == quota:
                    return
            if yielded == before:
                raise ValueError(
                    f"DataLoader worker {worker_id} of {num_workers} got no rows of the stream: it has "
                    f"{self.stream.n_shards} shard(s); use at most that many workers."
                )


__all__ = ["StreamedImages"]

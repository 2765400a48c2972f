import datasets
import pytest
import torch

from larp_hf.data import PreprocessedImages, StreamedImages, collate_images, load_image_dataset
from larp_hf import LarpImageProcessor


def labels_of_an_epoch(stream: StreamedImages, epoch: int, num_workers: int, batch_size: int = 4) -> list[list[int]]:
    stream.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(
        stream, batch_size=batch_size, num_workers=num_workers, collate_fn=lambda rows: [row["label"] for row in rows]
    )
    return list(loader)


def numbered_stream(count: int, num_shards: int) -> datasets.IterableDataset:
    return datasets.Dataset.from_dict({"label": list(range(count))}).to_iterable_dataset(num_shards=num_shards)


@pytest.mark.parametrize("num_workers", [0, 2, 3])
def test_every_epoch_is_the_same_number_of_full_batches_in_an_order_fixed_by_seed_and_epoch(num_workers):
    # 30 rows in 5 uneven shards, epochs of 26: 6 batches of 4, whatever the workers (one of 3 workers gets 1 shard).
    stream = StreamedImages(numbered_stream(30, 5), num_examples=26, batch_size=4, seed=0, shuffle_buffer=8)
    assert len(torch.utils.data.DataLoader(stream, batch_size=4)) == 6
    first = labels_of_an_epoch(stream, 0, num_workers)
    assert [len(batch) for batch in first] == [4] * 6
    assert labels_of_an_epoch(stream, 0, num_workers) == first  # a resumed run replays it
    assert labels_of_an_epoch(stream, 1, num_workers) != first  # the next epoch is shuffled anew
    if num_workers == 0:
        assert len(set(sum(first, []))) == 24  # one pass: no row twice
    one_pass = StreamedImages(numbered_stream(30, 5))
    assert sorted(sum(labels_of_an_epoch(one_pass, 0, num_workers), [])) == list(range(30))


def test_more_workers_than_shards_is_an_error():
    stream = StreamedImages(numbered_stream(12, 1), num_examples=12, batch_size=4, seed=0)
    with pytest.raises(Exception, match="got no rows of the stream: it has 1 shard"):
        labels_of_an_epoch(stream, 0, num_workers=2)


def test_streaming_loads_memory_mapped_splits_as_sized_streams(tiny_image_dataset_dir):
    streams = load_image_dataset(tiny_image_dataset_dir, streaming=True)
    assert isinstance(streams, datasets.IterableDatasetDict) and set(streams) == {"train", "test"}
    assert streams["train"].info.splits["train"].num_examples == 64 and streams["train"].n_shards == 16
    first = next(iter(streams["test"]))
    processor = LarpImageProcessor(num_channels=1, size={"height": 16, "width": 16})
    expected = PreprocessedImages(load_image_dataset(tiny_image_dataset_dir, split="test"), processor)[0]
    assert first["label"] == expected["label"]
    assert torch.equal(collate_images([expected])["pixel_values"][0], processor([first["image"]], return_tensors="pt")["pixel_values"][0])

"""save_samples: the writer behind `larp-hf generate` and the demo; to_pil_images: the one tensor -> PIL conversion."""

import datasets
import numpy as np
import PIL.Image
import pytest
import torch

from larp_hf.pipelines import image_grid, save_samples, samples, to_pil_images

from ..conftest import make_tiny_pipeline


def test_to_pil_images_gives_the_pipelines_pil_images():
    pipeline = make_tiny_pipeline()
    as_tensors = pipeline(num_images=3, seed=4, output_type="pt").images
    for ours, theirs in zip(to_pil_images(as_tensors), pipeline(num_images=3, seed=4).images, strict=True):
        assert ours.mode == theirs.mode == "L" and ours.tobytes() == theirs.tobytes()
    rgb = to_pil_images(torch.tensor([0.0, 0.5, 1.2]).view(1, 3, 1, 1))[0]
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (0, 128, 255)  # rounded half to even, clamped


def test_what_is_written_is_what_one_pipeline_call_samples(tmp_path, monkeypatch):
    pipeline = make_tiny_pipeline(num_classes=3)
    monkeypatch.setattr(samples, "PART_IMAGES", 4)  # 6 images in parts of 4 and 2
    saved = save_samples(
        pipeline, 6, grid_path=tmp_path / "grid.png", image_dir=tmp_path / "pngs", output_dataset=tmp_path / "ds",
        batch_size=3, seed=2, keep_images=True, temperature=0.9,
    )  # fmt: skip
    expected = pipeline(num_images=6, seed=2, temperature=0.9, class_labels=[0, 1, 2, 0, 1, 2])
    assert np.array_equal(saved.codes, expected.codes.numpy()) and saved.seconds > 0
    dataset = datasets.load_from_disk(str(tmp_path / "ds"))
    assert dataset["label"] == [0, 1, 2, 0, 1, 2] and dataset["codes"] == expected.codes.flatten(1).tolist()
    assert len(saved.dataset) == 6 and not list(tmp_path.glob(".larp-generate-*"))
    pngs = sorted((tmp_path / "pngs").glob("*.png"))  # beside them, the mark of what wrote them
    for path, kept, image in zip(pngs, saved.images, expected.images, strict=True):
        assert PIL.Image.open(path).tobytes() == kept.tobytes() == image.tobytes()
    # The grid: class 0's two images on the first row, then class 1's, then class 2's.
    by_class = torch.stack([torch.from_numpy(np.array(expected.images[i])) for i in (0, 3, 1, 4, 2, 5)])[:, None] / 255
    assert PIL.Image.open(tmp_path / "grid.png").tobytes() == saved.grid.tobytes() == image_grid(by_class, 2).tobytes()


def test_bad_requests_are_refused_before_anything_is_written(tmp_path):
    pipeline = make_tiny_pipeline()
    with pytest.raises(ValueError, match="`grid_path` names the grid image and must end in .png"):
        save_samples(pipeline, 2, grid_path=tmp_path / "grid.jpg")
    with pytest.raises(ValueError, match="`grid_path` draws one grid of at most 4096 images"):
        save_samples(pipeline, 4097, grid_path=tmp_path / "grid.png")
    with pytest.raises(ValueError, match="`num_images` must be a positive integer"):
        save_samples(pipeline, 0, image_dir=tmp_path / "none")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="pick another `output_dataset` or pass `overwrite`"):
        save_samples(pipeline, 2, output_dataset=tmp_path / "full")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["full"]
    assert [path.name for path in (tmp_path / "full").iterdir()] == ["keep.txt"]

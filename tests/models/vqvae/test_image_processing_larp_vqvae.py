import json

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoImageProcessor

from larp_hf import LarpImageProcessor, LarpVQVAEConfig


def pixel_values(processor, images, **kwargs):
    return processor(images, return_tensors="pt", **kwargs)["pixel_values"]


COLOR = (200, 40, 90)
GREY = PIL.Image.new("RGB", (1, 1), COLOR).convert("L").getpixel((0, 0))  # PIL's luma of COLOR: 94


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "I;16", "I", "F", "CMYK"])
@pytest.mark.parametrize("num_channels", [1, 3])
def test_any_pil_mode_and_size_becomes_model_input(mode, num_channels):
    image = PIL.Image.new("RGB", (45, 27), COLOR).convert(mode)
    # 16-bit and float modes are read on their own scales (0-65535, 0-1); these were converted from 8-bit, so say so.
    input_scale = 255 if mode in ("I;16", "I", "F") else None
    processor = LarpImageProcessor(num_channels=num_channels, size={"height": 32, "width": 32}, input_scale=input_scale)
    values = pixel_values(processor, [image, image])
    assert values.shape == (2, num_channels, 32, 32)
    assert values.dtype == torch.float32
    assert values.min() >= -1.0 and values.max() <= 1.0
    if mode in ("1", "P"):
        return  # dithered / palette-mapped by PIL: no single expected level
    # The intensity survives the mode: the colour itself where there is one, else its grey level.
    if mode in ("RGB", "RGBA", "CMYK"):
        expected = [sum(w * c for w, c in zip((0.299, 0.587, 0.114), COLOR))] if num_channels == 1 else list(COLOR)
    else:
        expected = [GREY] * num_channels
    expected = torch.tensor(expected).view(1, -1, 1, 1) / 255 * 2 - 1
    torch.testing.assert_close(values, expected.expand_as(values), atol=2 / 255, rtol=0)


@pytest.mark.parametrize(
    "array",
    [
        np.full((28, 28), 255, dtype=np.uint8),  # (H, W) uint8
        np.ones((28, 28, 3), dtype=np.float32),  # (H, W, C) floats in [0, 1]
        np.full((3, 28, 28), 65535, dtype=np.uint16),  # (C, H, W) 16-bit
        torch.ones(1, 28, 28, dtype=torch.bool),  # (C, H, W) tensor
    ],
    ids=["hw-uint8", "hwc-float", "chw-uint16", "chw-bool-tensor"],
)
def test_arrays_of_any_layout_and_dtype_are_scaled_to_white(array):
    processor = LarpImageProcessor(num_channels=1)
    values = pixel_values(processor, [array])
    assert values.shape == (1, 1, 32, 32)
    torch.testing.assert_close(values, torch.ones_like(values))


def test_grayscale_and_rgb_conversions():
    red = PIL.Image.new("RGB", (32, 32), (255, 0, 0))
    grey = pixel_values(LarpImageProcessor(num_channels=1), [red])
    # PIL's luma weights: L = 0.299 R + 0.587 G + 0.114 B.
    expected = 0.299 * 255 / 255 * 2 - 1
    torch.testing.assert_close(grey, torch.full_like(grey, expected), atol=1e-5, rtol=0)
    rgb_from_grey = pixel_values(LarpImageProcessor(num_channels=3), [PIL.Image.new("L", (32, 32), 128)])
    assert rgb_from_grey.shape == (1, 3, 32, 32)
    assert torch.equal(rgb_from_grey[:, 0], rgb_from_grey[:, 1]) and torch.equal(rgb_from_grey[:, 1], rgb_from_grey[:, 2])
    # Transparent pixels become white, as in transformers' convert_to_rgb.
    transparent = PIL.Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    torch.testing.assert_close(pixel_values(LarpImageProcessor(), [transparent]), torch.ones(1, 3, 32, 32))


@pytest.mark.parametrize("num_channels", [1, 3])
def test_postprocess_inverts_preprocess(num_channels):
    rng = np.random.default_rng(0)
    shape = (32, 32) if num_channels == 1 else (32, 32, 3)
    images = [PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(3)]
    processor = LarpImageProcessor(num_channels=num_channels)
    restored = processor.postprocess(pixel_values(processor, images), output_type="pil")
    assert [image.mode for image in restored] == [images[0].mode] * 3
    for original, back in zip(images, restored):
        assert np.array_equal(np.asarray(original), np.asarray(back))
    as_numpy = processor.postprocess(pixel_values(processor, images), output_type="np")
    assert as_numpy.shape == (3, 32, 32, num_channels) and as_numpy.min() >= 0 and as_numpy.max() <= 1


def test_resize_stretches_and_pad_letterboxes():
    white = PIL.Image.new("L", (28, 28), 255)
    resized = pixel_values(LarpImageProcessor(num_channels=1), [white])
    assert torch.all(resized == 1.0)
    padded = pixel_values(LarpImageProcessor(num_channels=1, do_pad=True), [white])[0, 0]
    assert torch.all(padded[2:30, 2:30] == 1.0)  # the 28×28 image, centred, not enlarged
    assert torch.all(padded[:2] == -1.0) and torch.all(padded[:, :2] == -1.0)
    wide = PIL.Image.new("L", (64, 32), 255)  # shrunk to 32×16 keeping its aspect ratio, then padded
    padded_wide = pixel_values(LarpImageProcessor(num_channels=1, do_pad=True), [wide])[0, 0]
    assert torch.all(padded_wide[8:24] == 1.0)
    assert torch.all(padded_wide[:8] == -1.0) and torch.all(padded_wide[24:] == -1.0)


def test_mixed_sizes_without_resize_or_pad_raise():
    processor = LarpImageProcessor(num_channels=1, do_resize=False)
    images = [PIL.Image.new("L", (28, 28)), PIL.Image.new("L", (32, 32))]
    with pytest.raises(ValueError, match="different shapes"):
        processor(images, return_tensors="pt")


def test_negative_floats_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="`postprocess`"):
        LarpImageProcessor()(torch.rand(3, 32, 32) * 2 - 1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_pixels_are_refused(bad):
    image = np.random.default_rng(0).random((28, 28)).astype(np.float32)
    image[3, 4] = bad
    with pytest.raises(ValueError, match="non-finite values"):
        LarpImageProcessor()(image, return_tensors="pt")


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="`num_channels` must be 1"):
        LarpImageProcessor(num_channels=4)
    with pytest.raises(ValueError, match="`output_type` must be one of"):
        LarpImageProcessor().postprocess(torch.zeros(1, 3, 32, 32), output_type="jpeg")
    with pytest.raises(TypeError, match="Expected a PIL image"):
        LarpImageProcessor().process_image("not an image")


def test_saved_processor_loads_with_auto_image_processor(tmp_path):
    config = LarpVQVAEConfig(in_channels=1, image_size=64, hidden_channels=[8, 8, 8])
    processor = LarpImageProcessor.from_vqvae_config(config, do_pad=True)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "LarpImageProcessor" and saved["num_channels"] == 1
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, LarpImageProcessor)
    assert (loaded.num_channels, loaded.size.height, loaded.do_pad) == (1, 64, True)
    image = PIL.Image.new("RGB", (50, 40), (10, 200, 30))
    assert torch.equal(pixel_values(loaded, [image]), pixel_values(processor, [image]))


@pytest.mark.parametrize("native", [(28, 28), (27, 30), (32, 32)])
def test_padding_is_lossless_and_postprocess_crops_it_off(native, tmp_path):
    height, width = native
    images = np.random.default_rng(0).integers(0, 256, (3, height, width), dtype=np.uint8)
    processor = LarpImageProcessor(num_channels=1, do_pad=True, native_size={"height": height, "width": width})
    values = pixel_values(processor, list(images))
    assert values.shape == (3, 1, 32, 32)
    back = processor.postprocess(values, output_type="np")[..., 0]  # (3, H, W) in [0, 1]
    assert back.shape == (3, height, width) and np.array_equal(np.round(back * 255).astype(np.uint8), images)
    assert [image.size for image in processor.postprocess(values)] == [(width, height)] * 3
    assert processor.postprocess(values, output_type="pt", native_size=False).shape == (3, 1, 32, 32)
    assert processor.output_size == {"height": height, "width": width}
    processor.save_pretrained(tmp_path)  # the native size travels with the processor
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert loaded.native_size == {"height": height, "width": width}
    assert np.array_equal(loaded.postprocess(values, output_type="np"), processor.postprocess(values, output_type="np"))


def test_native_size_is_what_padding_keeps_of_an_image():
    processor = LarpImageProcessor(num_channels=1, do_pad=True)
    assert processor.native_size_for(28, 28) == {"height": 28, "width": 28}
    assert processor.native_size_for(64, 48) == {"height": 32, "width": 24}  # shrunk to fit, aspect kept
    wide = PIL.Image.new("L", (64, 48), 255)
    cropped = LarpImageProcessor(num_channels=1, do_pad=True, native_size=processor.native_size_for(48, 64))
    assert torch.all(cropped.postprocess(pixel_values(cropped, [wide]), output_type="pt") == 1.0)  # no border left
    assert LarpImageProcessor().output_size == {"height": 32, "width": 32}


def test_bad_native_sizes_are_refused():
    with pytest.raises(ValueError, match="needs `do_pad=True`"):
        LarpImageProcessor(native_size={"height": 28, "width": 28})
    with pytest.raises(ValueError, match="does not fit"):
        LarpImageProcessor(do_pad=True, native_size={"height": 40, "width": 28})
    with pytest.raises(ValueError, match="positive integers"):
        LarpImageProcessor(do_pad=True, native_size={"height": 28})

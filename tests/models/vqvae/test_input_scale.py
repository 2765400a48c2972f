"""The value of white is decided per dataset (by type, or `input_scale`), never guessed from one image's values."""

import io

import numpy as np
import PIL.Image
import pytest
import torch

from larp_hf import LarpImageProcessor


def level(processor, image, **kwargs) -> float:
    """The [0, 1] level of a flat image after the processor (its normalisation undone)."""
    values = processor([image], return_tensors="pt", **kwargs)["pixel_values"]
    return float(values.mean()) / 2 + 0.5


PROCESSOR = LarpImageProcessor(num_channels=1, size={"height": 8, "width": 8})


def sixteen_bit_png(value: int) -> PIL.Image.Image:
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.full((8, 8), value, dtype=np.uint16)).save(buffer, format="PNG")
    buffer.seek(0)
    return PIL.Image.open(buffer)


def test_a_nearly_black_16_bit_image_stays_nearly_black():
    png = sixteen_bit_png(300)  # 300 / 65535: below 0.5 % grey
    assert png.mode in ("I;16", "I")
    assert level(PROCESSOR, png) == pytest.approx(300 / 65535, abs=1e-6)
    assert level(PROCESSOR, png.convert("I")) == pytest.approx(300 / 65535, abs=1e-6)  # older Pillow's mode
    assert level(PROCESSOR, np.full((8, 8), 300, dtype=np.uint16)) == pytest.approx(300 / 65535, abs=1e-6)
    # A darker and a brighter image of the same dataset are on the same scale: no per-image maximum.
    assert level(PROCESSOR, sixteen_bit_png(200)) == pytest.approx(200 / 65535, abs=1e-6)


def test_floats_are_read_on_0_1_unless_the_dataset_says_otherwise():
    on_255 = np.full((8, 8), 200.0, dtype=np.float32)
    with pytest.raises(ValueError, match="pass `input_scale`"):
        PROCESSOR([on_255])
    assert level(PROCESSOR, on_255, input_scale=255) == pytest.approx(200 / 255, abs=1e-6)
    assert level(LarpImageProcessor(num_channels=1, size={"height": 8, "width": 8}, input_scale=255), on_255) == (
        pytest.approx(200 / 255, abs=1e-6)
    )
    # A dark float image in [0, 1] is not taken for a 0-255 one, nor the reverse.
    assert level(PROCESSOR, np.full((8, 8), 0.75, dtype=np.float32)) == pytest.approx(0.75, abs=1e-6)
    assert level(PROCESSOR, np.full((8, 8), 0.75, dtype=np.float32), input_scale=255) == (
        pytest.approx(0.75 / 255, abs=1e-6)
    )


@pytest.mark.parametrize("array", [np.full((8, 8), -3), np.full((8, 8), -1, dtype=np.int16), torch.full((8, 8), -5)])
def test_negative_integer_pixels_are_refused_not_clamped(array):
    with pytest.raises(ValueError, match="negative values"):
        PROCESSOR([array])


def test_plain_integer_arrays_are_8_bit_and_larger_values_need_a_declared_scale():
    assert level(PROCESSOR, np.full((8, 8), 51)) == pytest.approx(0.2, abs=1e-6)  # NumPy's default int64
    with pytest.raises(ValueError, match="above 255"):
        PROCESSOR([np.full((8, 8), 1000)])
    assert level(PROCESSOR, np.full((8, 8), 1000), input_scale=4095) == pytest.approx(1000 / 4095, abs=1e-6)


def test_the_scale_is_said_and_a_bad_one_refused(tmp_path):
    assert LarpImageProcessor.input_scale_of(sixteen_bit_png(1)) == 65535
    assert LarpImageProcessor.input_scale_of(np.zeros((2, 2), dtype=np.float32)) == 1.0
    assert LarpImageProcessor.input_scale_of(PIL.Image.new("L", (2, 2))) == 255
    for bad in (0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="`input_scale`"):
            LarpImageProcessor(input_scale=bad)
    LarpImageProcessor(input_scale=4095).save_pretrained(tmp_path)
    assert LarpImageProcessor.from_pretrained(tmp_path).input_scale == 4095

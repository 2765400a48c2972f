"""Classifier-free guidance's one home: the scale's checks and defaults, the class and null rows, the mixed logits."""

import pytest
import torch

from larp_hf.generation import check_guidance_scale, guided_logits, resolve_guidance_scale, with_null_rows


def test_the_scale_is_a_finite_number_of_at_least_one_and_guides_classes_only():
    assert check_guidance_scale(None, None, num_classes=3) == 1.0
    assert check_guidance_scale(2, [0, 1], num_classes=3) == 2.0
    for bad in (0.5, float("inf"), float("nan"), True, "2"):
        with pytest.raises(ValueError, match="finite number >= 1"):
            check_guidance_scale(bad, None, num_classes=3)
    with pytest.raises(ValueError, match="this prior is unconditional"):
        check_guidance_scale(2.0, None, num_classes=0)
    with pytest.raises(ValueError, match="is the null class"):
        check_guidance_scale(2.0, "null", num_classes=3)
    assert check_guidance_scale(1.0, "null", num_classes=3) == 1.0


def test_a_request_without_a_scale_takes_the_stored_one_for_classes_and_none_otherwise():
    assert resolve_guidance_scale(None, None, num_classes=3, stored_scale=2.5) == 2.5
    assert resolve_guidance_scale(None, [0, 2], num_classes=3, stored_scale=2.5) == 2.5
    assert resolve_guidance_scale(None, "null", num_classes=3, stored_scale=2.5) == 1.0  # nothing to steer towards
    assert resolve_guidance_scale(None, None, num_classes=0, stored_scale=1.0) == 1.0
    assert resolve_guidance_scale(1.5, None, num_classes=3, stored_scale=2.5) == 1.5  # a given scale wins
    with pytest.raises(ValueError, match="is the null class"):
        resolve_guidance_scale(2.0, "null", num_classes=3, stored_scale=2.5)


def test_class_rows_come_first_and_the_guided_logits_mix_each_row_with_its_null_row():
    input_ids, null_input_ids = torch.tensor([[9, 1], [9, 2]]), torch.tensor([[9, 3], [9, 3]])
    assert with_null_rows(input_ids, null_input_ids).tolist() == [[9, 1], [9, 2], [9, 3], [9, 3]]
    conditional, null = torch.randn(2, 5), torch.randn(2, 5)
    logits = with_null_rows(conditional, null)  # (4, 5): what one forward of the doubled rows returns
    assert torch.equal(guided_logits(logits, 3.0), null + 3.0 * (conditional - null))
    torch.testing.assert_close(guided_logits(logits, 1.0), conditional)  # scale 1: the conditional model
    with pytest.raises(ValueError, match="must have the same shape"):
        with_null_rows(input_ids, null_input_ids[:1])
    with pytest.raises(ValueError, match="odd 3 rows"):
        guided_logits(torch.randn(3, 5), 2.0)

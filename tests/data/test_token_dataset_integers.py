"""
Token datasets hold integers: a code or label column of floats (whose fractions `int()` would cut off, then train
on), booleans or strings is refused by `check_token_dataset`, naming the column and the fix, whatever its source.
"""

import datasets
import pytest

from larp_hf.data import check_token_dataset, load_token_dataset
from larp_hf.data.token_dataset import code_feature, make_metadata


METADATA = make_metadata("abc", (2, 2), 16)


def tokens(codes, dtype: str | None = None, labels=None, label_feature=None, column: str = "input_ids") -> datasets.Dataset:
    """Rows of 2×2 codes in `column` (beside integer `input_ids` when it is another), stored as `dtype` when given."""
    feature = code_feature(METADATA)
    if dtype is not None:
        feature = datasets.List(datasets.Value(dtype, id=feature.feature.id), length=4)
    values, features = {column: codes}, {column: feature}
    if column != "input_ids":
        values["input_ids"], features["input_ids"] = [[0, 1, 2, 3]] * len(codes), code_feature(METADATA)
    if labels is not None:
        values["label"] = labels
        features["label"] = label_feature or datasets.ClassLabel(num_classes=2)
    return datasets.Dataset.from_dict(values, features=datasets.Features(features))


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("column", ["input_ids", "input_ids_flipped"])
def test_fractional_codes_are_refused_naming_the_column(dtype, column):
    with pytest.raises(ValueError) as error:
        check_token_dataset(tokens([[1.5, 2.0, 3.7, 4.0]], dtype, column=column), codebook_size=16)
    message = str(error.value)
    assert f"`{column}` column holds {dtype} values, but codes are integers" in message
    assert "Re-encode the images (recipes/encode_dataset.py)" in message and "cast_column" in message


def test_whole_floats_are_refused_too():
    # Whole today is no promise: the column's type is what lets fractions in.
    with pytest.raises(ValueError, match="holds float32 values, but codes are integers"):
        check_token_dataset(tokens([[1.0, 2.0, 3.0, 4.0]], "float32"))


@pytest.mark.parametrize("dtype", ["bool", "string"])
def test_codes_of_other_types_are_refused(dtype):
    codes = [[True, False, True, True]] if dtype == "bool" else [["1", "2", "3", "4"]]
    with pytest.raises(ValueError, match=f"holds {dtype} values, but codes are integers"):
        check_token_dataset(tokens(codes, dtype))


def test_fractional_labels_are_refused_for_a_class_conditional_prior():
    data = tokens([[0, 1, 2, 3]], labels=[0.5], label_feature=datasets.Value("float32"))
    with pytest.raises(ValueError, match="`label` column holds float32 values, but labels are integers"):
        check_token_dataset(data, num_classes=2)
    check_token_dataset(data)  # an unconditional prior reads no labels


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "int64"])
def test_integer_codes_of_any_width_pass(dtype):
    assert check_token_dataset(tokens([[0, 1, 15, 3]], dtype), codebook_size=16)["codebook_size"] == 16


def test_float_codes_from_parquet_are_refused(tmp_path):
    path = tmp_path / "tokens.parquet"
    tokens([[1.5, 2.0, 3.0, 4.0]], "float32").to_parquet(str(path))
    (split,) = load_token_dataset(path).values()
    with pytest.raises(ValueError, match="`input_ids` column holds float"):
        check_token_dataset(split, name=f"--token_dataset {path}")


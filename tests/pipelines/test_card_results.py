"""Evaluation results on a pipeline's model card: a score against other data than the training set says so, and
`larp-hf card` (`larp_hf.pipelines.card_results`) lists and removes results, keeping the rest of the card."""

import json

import pytest
from huggingface_hub import ModelCard

from larp_hf.pipelines.card_results import card_results, remove_card_results

from ..conftest import make_tiny_pipeline
from ..test_cli import larp_hf


SAMPLING = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}


def record(pipeline, dataset: str, fid: float, num_samples: int = 100):
    pipeline.record_evaluation(
        "larp-hf evaluate", {"fid": fid, "precision": 0.5}, feature_network="features", feature_network_sha256="f" * 64,
        dataset=dataset, split="test", num_samples=num_samples, sampling=SAMPLING,
    )  # fmt: skip


@pytest.fixture
def scored_folder(tmp_path):
    """A pipeline trained on fashion_mnist with three results (its own data twice, cifar10 once) and a user's edits."""
    pipeline = make_tiny_pipeline()
    pipeline.card_info["dataset"] = "fashion_mnist"
    record(pipeline, "fashion_mnist", 12.0)
    record(pipeline, "uoft-cs/cifar10", 99.0)
    record(pipeline, "zalando-datasets/fashion_mnist", 11.0, num_samples=200)  # fashion_mnist by its Hub id
    folder = tmp_path / "pipe"
    pipeline.save_pretrained(folder, sample_grid=False)
    card = ModelCard.load(folder / "README.md")
    card.data.base_model = "org/base"  # metadata and a section the user added on the Hub
    card.text += "\n## Notes\n\nMy own words.\n"
    card.save(folder / "README.md")
    return folder


def test_a_score_on_other_data_than_the_training_set_says_so(scored_folder):
    card = ModelCard.load(scored_folder / "README.md")
    fids = [result for result in card.data.eval_results if result.metric_type == "fid"]
    assert sorted(result.metric_value for result in fids) == [11.0, 12.0, 99.0]
    for result in fids:  # fashion_mnist by its seed name or its Hub id is the training data; cifar10 is not
        marked = result.dataset_name == "uoft-cs/cifar10 (not the training data, fashion_mnist)"
        assert marked == (result.metric_value == 99.0), result
        assert ("not the training data" in result.metric_config) == marked
    text = (scored_folder / "README.md").read_text()
    assert "| uoft-cs/cifar10 test † |" in text and "| fashion_mnist test |" in text
    assert "† The real images are not the training data (`fashion_mnist`)" in text
    # Nothing recorded about the training data: nothing to compare with, so no result is marked.
    unknown = make_tiny_pipeline()
    record(unknown, "uoft-cs/cifar10", 99.0)
    assert "†" not in str(unknown.model_card()) and "not the training data" not in str(unknown.model_card())


def test_removing_results_rewrites_the_records_and_the_model_index_and_keeps_the_rest(scored_folder):
    assert [r["dataset"] for r in card_results(scored_folder)] == [
        "fashion_mnist", "uoft-cs/cifar10", "zalando-datasets/fashion_mnist"
    ]  # fmt: skip
    removed = remove_card_results(scored_folder, ["uoft-cs/cifar10"])
    assert [r["scores"]["fid"] for r in removed] == [99.0]
    assert [r["scores"]["fid"] for r in card_results(scored_folder)] == [12.0, 11.0]
    card = ModelCard.load(scored_folder / "README.md")
    assert {result.metric_value for result in card.data.eval_results if result.metric_type == "fid"} == {12.0, 11.0}
    assert card.data.base_model == "org/base" and "## Notes\n\nMy own words." in card.text
    assert "cifar10" not in card.text and "†" not in card.text and "| 2 | `larp-hf evaluate` |" in card.text

    # A seed name and its Hub id are one dataset: both fashion_mnist results go.
    remove_card_results(scored_folder, ["fashion_mnist"])
    card = ModelCard.load(scored_folder / "README.md")
    assert card_results(scored_folder) == [] and card.data.eval_results is None and card.data.model_name is None
    assert "## Evaluation" not in card.text and "model-index" not in (scored_folder / "README.md").read_text()
    assert "## Notes\n\nMy own words." in card.text and card.data.base_model == "org/base"
    # The pipeline loads with its card info as written.
    from larp_hf import LarpPipeline

    assert LarpPipeline.from_pretrained(scored_folder).card_info["evaluations"] == []


def test_remove_by_number_and_all(scored_folder):
    assert [r["scores"]["fid"] for r in remove_card_results(scored_folder, [1, 3])] == [12.0, 11.0]
    assert [r["dataset"] for r in card_results(scored_folder)] == ["uoft-cs/cifar10"]
    assert len(remove_card_results(scored_folder, remove_all=True)) == 1 and card_results(scored_folder) == []
    assert remove_card_results(scored_folder, remove_all=True) == []  # nothing left: nothing written


def test_what_the_card_does_not_hold_is_refused_before_anything_is_written(scored_folder, tmp_path):
    before = {name: (scored_folder / name).read_bytes() for name in ("README.md", "larp_pipeline.json")}
    with pytest.raises(ValueError, match=r"`results` names result #4, but the card of .* holds results #1…#3"):
        remove_card_results(scored_folder, [1, 4])
    with pytest.raises(ValueError, match=r"names the dataset 'mnist', but the card .* holds results on 'fashion_mnist'"):
        remove_card_results(scored_folder, ["mnist"])
    with pytest.raises(ValueError, match="or pass `remove_all`, one of the two"):
        remove_card_results(scored_folder)
    with pytest.raises(ValueError, match="not a local LarpPipeline folder"):
        remove_card_results(tmp_path, remove_all=True)
    assert before == {name: (scored_folder / name).read_bytes() for name in before}


def test_the_card_command_lists_and_removes(scored_folder, capsys):
    out, _ = larp_hf("card", scored_folder, capsys=capsys)
    assert "trained on fashion_mnist" in out
    assert "#2  larp-hf evaluate  uoft-cs/cifar10 test (not the training data)  n = 100" in out
    assert json.loads(larp_hf("card", scored_folder, "--list", "--json", capsys=capsys)[0])["results"][1]["dataset"] == (
        "uoft-cs/cifar10"
    )
    out, _ = larp_hf("card", scored_folder, "--remove", 2, "--remove", "zalando-datasets/fashion_mnist", capsys=capsys)
    assert "Removed 3 result(s)" in out  # the Hub id names both fashion_mnist results
    _, error = larp_hf("card", scored_folder, "--remove", 7, expect_success=False, capsys=capsys)
    assert "`--remove` names result #7, but the card of" in error

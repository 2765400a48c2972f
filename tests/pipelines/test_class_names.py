"""Class names: the prior config's `id2label` is their one home; the pipeline, `save_samples`, `larp-hf generate` /
`info`, the model card read them there, and a prior that names none keeps its indices."""

import datasets
import pytest
import torch

from larp_hf import LarpPipeline
from larp_hf.pipelines import save_samples

from ..conftest import make_tiny_pipeline
from ..test_cli import larp_hf


SHAPES = {0: "circle", 1: "square", 2: "triangle"}


@pytest.fixture(scope="module")
def named():
    return make_tiny_pipeline(num_classes=3, id2label=SHAPES)


def test_class_labels_by_name_sample_what_their_indices_sample(named):
    assert named.class_names == ["circle", "square", "triangle"]
    by_name = named(num_images=3, class_labels=["triangle", "circle", "square"], seed=0, output_type="pt")
    by_index = named(num_images=3, class_labels=[2, 0, 1], seed=0, output_type="pt")
    assert torch.equal(by_name.codes, by_index.codes)
    mixed = named(num_images=3, class_labels=["triangle", 0, "1"], seed=0, output_type="pt")  # "1" names no class
    assert torch.equal(mixed.codes, by_index.codes)
    one = named(num_images=2, class_labels="square", seed=3, output_type="pt").codes
    assert torch.equal(one, named(num_images=2, class_labels=1, seed=3, output_type="pt").codes)


def test_an_unknown_name_is_refused_naming_the_classes(named):
    with pytest.raises(ValueError, match=r"'circel' is not a class of this prior\. Its classes are 'circle', 'square'"):
        named(num_images=2, class_labels=["circle", "circel"])


def test_a_prior_with_transformers_default_id2label_keeps_its_indices():
    # prior_config without class names: the indices as names ("0", "1", "2")
    assert make_tiny_pipeline(num_classes=3).class_names is None
    # A prior saved before prior_config named classes: GPT2Config's default, LABEL_0, LABEL_1 (2 for 3 classes)
    pipeline = make_tiny_pipeline(num_classes=3, id2label={0: "LABEL_0", 1: "LABEL_1"})
    assert pipeline.class_names is None
    by_digits = pipeline(num_images=2, class_labels="2", seed=0).codes  # what a command line passes
    assert torch.equal(by_digits, pipeline(num_images=2, class_labels=2, seed=0).codes)
    with pytest.raises(ValueError, match="this prior's classes have no names .* pass class indices 0…2"):
        pipeline(num_images=1, class_labels="circle")
    assert "Classes: indices 0…2 (the prior's `id2label` names none)." in str(pipeline.model_card())


def test_names_that_do_not_fit_the_prior_are_refused_when_it_is_paired():
    with pytest.raises(ValueError, match=r"has 3 classes but its config's `id2label` names 2 \(\['circle', 'sq"):
        make_tiny_pipeline(num_classes=3, id2label={0: "circle", 1: "square"})
    with pytest.raises(ValueError, match=r"names two classes alike \(\['circle'\]\)"):
        make_tiny_pipeline(num_classes=2, id2label={0: "circle", 1: "circle"})


def test_names_survive_saving_and_reach_the_card_and_the_samples_dataset(named, tmp_path):
    named.save_pretrained(tmp_path / "pipe", sample_grid=False)
    loaded = LarpPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.class_names == ["circle", "square", "triangle"]
    card = (tmp_path / "pipe" / "README.md").read_text()
    assert "Classes (`prior/config.json`'s `id2label`): 0 `circle`, 1 `square`, 2 `triangle`." in card
    assert 'class_labels="circle"' in card and "--class-label circle" in card
    saved = save_samples(loaded, 3, output_dataset=tmp_path / "samples", class_labels=["square", "triangle", 0], seed=0)
    assert saved.dataset.features["label"] == datasets.ClassLabel(names=["circle", "square", "triangle"])
    assert saved.dataset["label"] == [1, 2, 0]


def test_the_cli_takes_names_and_info_lists_them(named, tmp_path, capsys):
    named.save_pretrained(tmp_path / "pipe", sample_grid=False)
    larp_hf("generate", tmp_path / "pipe", "--num-images", 2, "--class-label", "square,triangle", "--output-dataset",
            tmp_path / "samples", capsys=capsys)  # fmt: skip
    assert datasets.load_from_disk(str(tmp_path / "samples"))["label"] == [1, 2]
    _, error = larp_hf("generate", tmp_path / "pipe", "--class-label", "hexagon", expect_success=False, capsys=capsys)
    assert "`--class-label`: 'hexagon' is not a class of this prior. Its classes are 'circle'" in error
    text, _ = larp_hf("info", tmp_path / "pipe", capsys=capsys)
    assert "classes: 0 circle, 1 square, 2 triangle" in text
    make_tiny_pipeline(num_classes=2).save_pretrained(tmp_path / "unnamed", sample_grid=False)
    text, _ = larp_hf("info", tmp_path / "unnamed", capsys=capsys)
    assert "classes: 0…1 (unnamed: the prior's id2label is the default)" in text

"""Evaluation: `larp-hf evaluate` and `larp-hf sweep` on tiny generated data (the classifier recipe is tested in tests/recipes)."""

import contextlib
import csv
import json
import shutil
import sys
import types
from pathlib import Path

import datasets
import huggingface_hub
import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import ModelCard

from larp_hf import LarpPipeline, set_sampling_defaults
from larp_hf.evaluation import FeatureNetwork, evaluate_pipeline, memorisation
from larp_hf.models.classifier import LarpClassifierConfig, LarpClassifierModel

from .conftest import make_tiny_pipeline, spread_features
from .pipelines.test_pipeline_larp import fake_hub_snapshot
from .recipes.test_train_vqvae import ROOT
from .test_cli import larp_hf


def test_memorisation_counts_copies_and_hamming_distances():
    generator = torch.Generator().manual_seed(0)
    training = torch.randint(0, 32, (100, 64), generator=generator)
    generated = training[:10].clone()
    generated[5:, :3] = (generated[5:, :3] + 1) % 32  # 5 copies, 5 grids 3 codes away from their source
    fresh = torch.randint(0, 32, (10, 64), generator=generator)
    result = memorisation(torch.cat([generated, fresh]).view(20, 8, 8), training, chunk_size=3)
    expected = (torch.cat([generated, fresh])[:, None] != training[None]).sum(-1).min(1).values
    assert result["exact_copies"] == 0.25
    assert result["hamming_to_nearest_mean"] == pytest.approx(expected.double().mean().item())
    assert result["hamming_to_nearest_histogram"][0] == 5 and result["hamming_to_nearest_histogram"][3] == 5
    assert sum(result["hamming_to_nearest_histogram"]) == 20 and result["hamming_to_nearest_quantiles"]["min"] == 0


def test_feature_network_refuses_images_of_another_shape():
    network = FeatureNetwork(LarpClassifierModel(LarpClassifierConfig(image_size=32)), "test features")
    with pytest.raises(ValueError, match="takes 1×32×32 images but these images are 1×16×16.*--image_size"):
        network(torch.rand(4, 1, 16, 16))


@pytest.fixture(scope="module")
def tiny_evaluation_setup(tmp_path_factory):
    """
    A tiny pipeline folder and a feature network folder (untrained, 8 features), both for 16×16 grey images. The
    network recipes/train_classifier.py trains, and its loading as a FeatureNetwork, are tested in tests/recipes.
    """
    folder = tmp_path_factory.mktemp("evaluation")
    make_tiny_pipeline().save_pretrained(folder / "pipe", sample_grid=False)
    torch.manual_seed(0)
    config = LarpClassifierConfig(image_size=16, hidden_channels=[8, 16], feature_dim=8, num_classes=2)
    spread_features(LarpClassifierModel(config)).save_pretrained(folder / "features")
    (folder / "features" / "metrics.json").write_text(json.dumps({"dataset": "tiny"}))  # as the recipe names it
    return folder


def run_cli(capsys, *args, expect_success=True):
    return larp_hf(*args, expect_success=expect_success, capsys=capsys)


def test_evaluate_writes_json_and_markdown(tiny_evaluation_setup, tiny_image_dataset_dir, tmp_path, capsys):
    setup = tiny_evaluation_setup
    common = ["--feature-network", setup / "features", "--dataset", tiny_image_dataset_dir, "--cache-dir", tmp_path / "cache"]
    run_cli(capsys, "evaluate", setup / "pipe", *common, "--num-samples", 24, "--output-dir", tmp_path / "eval")
    results = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    for part in ("samples", "reconstructions", "real_baseline"):
        assert set(results[part]) == {"fid", "precision", "recall", "density", "coverage"}
        assert results[part]["fid"] >= 0 and 0 <= results[part]["precision"] <= 1
    assert 0 <= results["memorisation"]["exact_copies"] <= 1
    assert sum(results["memorisation"]["hamming_to_nearest_histogram"]) == 24
    network = LarpClassifierModel.from_pretrained(setup / "features")
    assert results["settings"]["feature_network_sha256"] == network.weights_sha256()
    table = (tmp_path / "eval" / "evaluation.md").read_text()
    assert "FID (" in table and "classifier features)" in table and "Memorisation" in table
    assert list((tmp_path / "cache" / "features").glob("*.safetensors"))  # real features cached on disk

    _, err = run_cli(capsys, "evaluate", setup / "pipe", *common, "--num-samples", 5, "--output-dir", tmp_path / "x",
                     expect_success=False)
    assert "`--num-samples` = 5 is too few" in err and "more samples than dimensions" in err  # the flag, not `num_samples`
    wide = LarpClassifierModel(LarpClassifierConfig(image_size=32, feature_dim=8))
    wide.save_pretrained(tmp_path / "wide")
    _, err = run_cli(capsys, "evaluate", setup / "pipe", "--feature-network", tmp_path / "wide", "--dataset",
                     tiny_image_dataset_dir, "--output-dir", tmp_path / "y", expect_success=False)
    assert "takes 1×32×32 images but the pipeline's images are 1×16×16" in err


def test_sweep_writes_its_files_and_can_store_the_best_setting(tiny_evaluation_setup, tiny_image_dataset_dir, tmp_path, capsys):
    setup = tiny_evaluation_setup
    pipeline = make_tiny_pipeline()  # setup / "pipe" without the records other tests leave on its card
    set_sampling_defaults(pipeline.prior, top_p=0.95)  # not swept: must survive --write-generation-config
    pipeline.save_pretrained(tmp_path / "pipe", sample_grid=True)
    grid_before = PIL.Image.open(tmp_path / "pipe" / "samples.png").tobytes()
    out, _ = run_cli(
        capsys, "sweep", tmp_path / "pipe", "--feature-network", setup / "features", "--dataset", tiny_image_dataset_dir,
        "--temperature", "0.5,1.0", "--top-k", "0,4", "--num-samples", 16, "--output-dir", tmp_path / "sweep",
        "--cache-dir", tmp_path / "cache", "--write-generation-config",
    )  # fmt: skip
    with open(tmp_path / "sweep" / "sweep.csv") as file:
        rows = list(csv.DictReader(file))
    assert [(float(r["temperature"]), int(r["top_k"])) for r in rows] == [(0.5, 0), (1.0, 0), (0.5, 4), (1.0, 4)]
    best = min(rows, key=lambda row: float(row["fid"]))
    assert f"Best by FID: temperature {best['temperature']}" in (tmp_path / "sweep" / "sweep.md").read_text()
    assert PIL.Image.open(tmp_path / "sweep" / "sweep.png").size[0] > 500
    defaults = LarpPipeline.from_pretrained(tmp_path / "pipe").sampling_defaults()
    assert defaults == {
        "temperature": float(best["temperature"]), "top_k": int(best["top_k"]), "top_p": 0.95, "guidance_scale": 1.0
    }  # fmt: skip
    assert float(best["top_p"]) == 0.95  # what the sweep sampled with
    if (defaults["temperature"], defaults["top_k"]) != (1.0, 0):  # the card's grid shows the new defaults
        assert PIL.Image.open(tmp_path / "pipe" / "samples.png").tobytes() != grid_before
    # The best setting's scores are on the model card, with the setting they were sampled with.
    (record,) = [r for r in ModelCard.load(tmp_path / "pipe" / "README.md").data.eval_results if r.metric_type == "fid"]
    assert record.metric_value == round(float(best["fid"]), 4)
    assert f"temperature {best['temperature']}" in record.metric_config and "top-p 0.95" in record.metric_config
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["best"]["fid"] == pytest.approx(float(best["fid"]))

    _, err = run_cli(capsys, "sweep", tmp_path / "pipe", "--feature-network", setup / "features", "--dtype", "bfloat16",
                     "--write-generation-config", "--output-dir", tmp_path / "bad", expect_success=False)
    assert "loaded without --dtype" in err  # saving a bfloat16 copy over the float32 weights would lose them
    _, err = run_cli(capsys, "sweep", setup / "pipe", "--feature-network", setup / "features", "--top-k", "64",
                     "--output-dir", tmp_path / "bad", expect_success=False)
    assert "between 0 (off) and the codebook size (32), got 64" in err
    _, err = run_cli(capsys, "sweep", setup / "pipe", "--feature-network", tmp_path / "nothing", "--output-dir",
                     tmp_path / "bad", expect_success=False)
    assert "train_classifier.py" in err


def test_evaluate_records_its_fid_on_the_model_card(tiny_evaluation_setup, tiny_image_dataset_dir, tmp_path, capsys):
    setup = tiny_evaluation_setup
    pipeline = make_tiny_pipeline()
    pipeline.card_info["dataset"] = "fashion_mnist"  # trained on the Hub's Fashion-MNIST, evaluated on a local folder
    pipeline.save_pretrained(tmp_path / "pipe", sample_grid=False)
    common = ["--feature-network", setup / "features", "--dataset", tiny_image_dataset_dir, "--cache-dir", tmp_path / "cache",
              "--num-samples", 24, "--top-k", 8]  # fmt: skip
    out, _ = run_cli(capsys, "evaluate", tmp_path / "pipe", *common, "--output-dir", tmp_path / "eval")
    fid = json.loads((tmp_path / "eval" / "evaluation.json").read_text())["samples"]["fid"]
    assert f"{fid:.3f}" in out

    card = ModelCard.load(tmp_path / "pipe" / "README.md")
    by_metric = {result.metric_type: result for result in card.data.eval_results}
    assert set(by_metric) == {"fid", "precision", "recall", "density", "coverage"}
    assert by_metric["fid"].metric_value == round(fid, 4)
    assert by_metric["fid"].dataset_split == "test" and "top-k 8" in by_metric["fid"].metric_config
    assert "24 samples" in by_metric["fid"].metric_config
    assert card.data.datasets == ["zalando-datasets/fashion_mnist"]  # Hub ids only: not the local evaluation folder
    assert "| `larp-hf evaluate` |" in card.text and tiny_image_dataset_dir in card.text
    info, _ = run_cli(capsys, "info", tmp_path / "pipe")
    assert f"larp-hf evaluate ({tiny_image_dataset_dir} test, n = 24): fid {fid:.4g}" in info

    before = (tmp_path / "pipe" / "README.md").read_text()
    run_cli(capsys, "evaluate", tmp_path / "pipe", *common, "--seed", 1, "--output-dir", tmp_path / "x", "--no-record-in-card")
    assert (tmp_path / "pipe" / "README.md").read_text() == before


def test_evaluate_leaves_the_card_of_a_hub_model_alone(tiny_evaluation_setup, tiny_image_dataset_dir, tmp_path, capsys,
                                                      monkeypatch):  # fmt: skip
    setup = tiny_evaluation_setup
    fake_hub_snapshot(tmp_path / "hub", "larp-test/tiny-pipeline", setup / "pipe")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    card_files = sorted((tmp_path / "hub").rglob("README.md"))
    before = [path.read_text() for path in card_files]
    args = ["evaluate", "larp-test/tiny-pipeline", "--feature-network", setup / "features", "--dataset",
            tiny_image_dataset_dir, "--cache-dir", tmp_path / "cache", "--num-samples", 24]  # fmt: skip
    _, err = run_cli(capsys, *args, "--output-dir", tmp_path / "a", "--record-in-card", expect_success=False)
    assert "is not a local pipeline folder" in err and not (tmp_path / "a").exists()
    out, _ = run_cli(capsys, *args, "--output-dir", tmp_path / "b")
    assert "Note: larp-test/tiny-pipeline is not a local pipeline folder" in out
    assert (tmp_path / "b" / "evaluation.json").is_file() and [path.read_text() for path in card_files] == before


def test_library_errors_name_the_functions_arguments(tiny_evaluation_setup):
    pipeline = make_tiny_pipeline()
    network = FeatureNetwork.from_pretrained(tiny_evaluation_setup / "features")
    with pytest.raises(ValueError, match=r"^`num_samples` = 5 is too few for 8-dimensional features") as error:
        evaluate_pipeline(pipeline, network, num_samples=5)
    assert "--" not in str(error.value)
    with pytest.raises(ValueError, match="`top_k` must be an integer between 0") as error:
        evaluate_pipeline(pipeline, network, num_samples=24, top_k=99)
    assert "--" not in str(error.value)


def test_one_batching_loop_gives_the_same_features_whatever_the_batch_size():
    network = FeatureNetwork(LarpClassifierModel(LarpClassifierConfig(image_size=16, hidden_channels=[8])), "test")
    images = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    whole, batched = network(images), network(images, batch_size=3)
    assert whole.shape == (10, network.feature_dim) and whole.dtype == torch.float64
    torch.testing.assert_close(whole, batched)


def test_inception_features_go_through_the_same_batching_loop(monkeypatch, tmp_path):
    """torch-fidelity's network replaced by a stand-in that records what it is given: uint8 RGB batches of 100."""
    from safetensors.torch import save_file
    seen = []

    class StandInInception(torch.nn.Module):
        def __init__(self, name, features_list, feature_extractor_weights_path=None):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))

        def forward(self, pixels):
            seen.append((pixels.dtype, tuple(pixels.shape)))
            return (pixels.float().mean(dim=(2, 3)).repeat(1, 683)[:, :2048] * self.weight,)  # (B, 2048)

    module = types.ModuleType("torch_fidelity.feature_extractor_inceptionv3")
    module.FeatureExtractorInceptionV3 = StandInInception
    module.load_state_dict_from_url = None  # replaced by the tensors of the weights file
    save_file({"weight": torch.ones(1)}, tmp_path / "weights.safetensors")
    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", module)
    from larp_hf.evaluation import load_feature_network

    network = load_feature_network(f"inception:{tmp_path / 'weights.safetensors'}")
    features = network(torch.rand(250, 1, 16, 16))
    assert features.shape == (250, 2048) and features.dtype == torch.float64 and len(network.weights_sha256) == 64
    assert seen == [(torch.uint8, (100, 3, 16, 16)), (torch.uint8, (100, 3, 16, 16)), (torch.uint8, (50, 3, 16, 16))]
    with pytest.raises(ValueError, match="grey or RGB images, but these images have 2 channels"):
        network(torch.rand(4, 2, 16, 16))


def test_evaluate_pipeline_in_bfloat16(tiny_evaluation_setup, tiny_image_dataset_dir, tmp_path):
    """What `--dtype bfloat16` gives evaluate: sampling, reconstructions and encoded training grids in bfloat16."""
    pipeline = make_tiny_pipeline().to(torch.bfloat16)
    network = FeatureNetwork.from_pretrained(tiny_evaluation_setup / "features")
    results = evaluate_pipeline(pipeline, network, dataset=tiny_image_dataset_dir, num_samples=24, cache_dir=tmp_path)
    assert all(torch.isfinite(torch.tensor(results[part]["fid"])) for part in ("samples", "reconstructions", "real_baseline"))
    assert sum(results["memorisation"]["hamming_to_nearest_histogram"]) == 24 and results["settings"]["dtype"] == "bfloat16"


def test_a_padding_tokenizer_is_judged_on_the_datasets_own_pixels(tmp_path):
    """12×12 images padded into a 16×16 tokenizer: samples, reconstructions and real images all meet at 12×12."""
    from larp_hf import LarpImageProcessor
    from larp_hf.evaluation import real_image_dataset
    from larp_hf.evaluation.real_data import image_batch

    from .conftest import make_images

    images = make_images(40, size=12)
    folder = tmp_path / "small_images"
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])})
    split = datasets.Dataset.from_dict({"image": images, "label": [i % 2 for i in range(40)]}, features=features)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(folder))

    # Real images at their own size keep their pixels; a larger size pads them, centred, rather than stretching them.
    pixels, _ = real_image_dataset(str(folder), "test", (12, 12), 1, pad=True)
    raw = torch.stack([torch.from_numpy(np.array(image)) for image in images])[:, None]  # (40, 1, 12, 12) uint8
    assert torch.equal(image_batch(pixels, range(40)), raw)
    padded, _ = real_image_dataset(str(folder), "test", 16, 1, pad=True)
    assert torch.equal(image_batch(padded, range(40))[..., 2:14, 2:14], raw)

    def padding(**kwargs):
        return LarpImageProcessor(num_channels=1, size={"height": 16, "width": 16}, do_pad=True, **kwargs)

    pipeline = make_tiny_pipeline()
    pipeline.image_processor = padding(native_size={"height": 12, "width": 12})
    assert pipeline(num_images=2, seed=0, output_type="pt").images.shape == (2, 1, 12, 12)
    config = LarpClassifierConfig(image_size=16, hidden_channels=[8], feature_dim=4, num_classes=2)
    square = FeatureNetwork(LarpClassifierModel(config), "16×16 features")
    with pytest.raises(ValueError, match="takes 1×16×16 images but the pipeline's images are 1×12×12"):
        evaluate_pipeline(pipeline, square, dataset=str(folder), num_samples=8, cache_dir=tmp_path)
    network = FeatureNetwork(spread_features(LarpClassifierModel(config)), "padding features", padding(native_size={"height": 12, "width": 12}))
    results = evaluate_pipeline(pipeline, network, dataset=str(folder), num_samples=8, cache_dir=tmp_path)
    assert all(np.isfinite(results[part]["fid"]) for part in ("samples", "reconstructions", "real_baseline"))


def test_a_sweep_over_guidance_scales_stores_the_best_one_with_the_prior(tiny_evaluation_setup, tiny_image_dataset_dir,
                                                                        tmp_path):
    from larp_hf.evaluation import save_best_setting, sweep_markdown, sweep_pipeline, write_sweep_reports

    network = FeatureNetwork.from_pretrained(tiny_evaluation_setup / "features")
    pipeline = make_tiny_pipeline(num_classes=2)
    results = sweep_pipeline(pipeline, network, [1.0], [0], guidance_scales=[1.0, 4.0], dataset=tiny_image_dataset_dir,
                             num_samples=24, cache_dir=tmp_path)  # fmt: skip
    rows = results["rows"]
    assert [row["guidance_scale"] for row in rows] == [1.0, 4.0] and rows[0]["fid"] != rows[1]["fid"]
    # Each row is what the pipeline samples with that scale: the classes in turn, guided.
    guided = pipeline(num_images=24, seed=0, guidance_scale=4.0, output_type="pt").images
    assert torch.allclose(network(guided), network(pipeline(num_images=24, seed=0, class_labels=[0, 1] * 12,
                                                            guidance_scale=4.0, output_type="pt").images))  # fmt: skip
    best = results["best"]["guidance_scale"]
    table = sweep_markdown(results)
    assert "| temperature | top-k | guidance |" in table and f"top-k off, guidance {best} (FID" in table
    assert {path.name for path in write_sweep_reports(results, tmp_path / "sweep")} >= {"sweep.png", "sweep.md"}

    save_best_setting(pipeline, results, tmp_path / "pipe")
    loaded = LarpPipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.sampling_defaults()["guidance_scale"] == best
    assert "guidance_scale" not in json.loads((tmp_path / "pipe" / "prior" / "generation_config.json").read_text())

    unconditional = make_tiny_pipeline()
    with pytest.raises(ValueError, match="unconditional"):
        sweep_pipeline(unconditional, network, [1.0], [0], guidance_scales=[2.0], dataset=tiny_image_dataset_dir,
                       num_samples=24, cache_dir=tmp_path)  # fmt: skip
    assert "guidance" not in sweep_markdown(sweep_pipeline(
        unconditional, network, [1.0], [0], dataset=tiny_image_dataset_dir, num_samples=24, cache_dir=tmp_path
    ))  # fmt: skip


def test_inception_features_say_what_they_need(tmp_path):
    from larp_hf.evaluation import load_feature_network

    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install torch-fidelity"):
            load_feature_network("inception")
    else:
        with pytest.raises(ValueError, match="weights-inception-2015-12-05-6726825d.pth"):
            load_feature_network(f"inception:{tmp_path / 'missing.pth'}")
    with pytest.raises(ValueError, match="No feature network in"):
        load_feature_network(tmp_path)


def test_a_folder_that_is_not_a_feature_network_is_refused(tiny_evaluation_setup, tmp_path):
    from safetensors.torch import load_file, save_file

    from larp_hf.evaluation import load_feature_network

    with pytest.raises(ValueError, match="holds a 'larp_vqvae' model, not a feature network"):
        load_feature_network(tiny_evaluation_setup / "pipe" / "vqvae")  # a tokenizer would score random features
    shutil.copytree(tiny_evaluation_setup / "features", tmp_path / "partial")
    weights = load_file(tmp_path / "partial" / "model.safetensors")
    kept = {name: tensor for name, tensor in weights.items() if not name.startswith("feature_layer")}
    save_file(kept, tmp_path / "partial" / "model.safetensors")  # the layer the features come from is missing
    with pytest.raises(ValueError, match="lacks trained weights for .*feature_layer"):
        load_feature_network(tmp_path / "partial")


def test_feature_network_reads_integer_images_as_0_to_255(tiny_image_dataset_dir):
    from larp_hf.evaluation import image_batch, real_image_dataset

    pixels, _ = real_image_dataset(tiny_image_dataset_dir, "test", 16, 1)
    images = image_batch(pixels, range(len(pixels)))
    assert images.shape == (16, 1, 16, 16) and images.dtype == torch.uint8 and images.max() > 1
    assert torch.equal(image_batch(pixels, [5, 2]), images[[5, 2]])
    network = FeatureNetwork(LarpClassifierModel(LarpClassifierConfig(image_size=16, hidden_channels=[8])), "test")
    as_uint8, as_int64, as_float = network(images), network(images.long()), network(images.float() / 255)
    assert torch.equal(as_uint8, as_int64) and torch.equal(as_uint8, as_float)


def test_training_grids_come_from_any_token_dataset_source_and_only_from_the_same_tokenizer(
    tiny_evaluation_setup, tiny_image_dataset_dir, tmp_path
):
    from larp_hf import LarpPipeline, encode_dataset, load_image_dataset
    from larp_hf.evaluation import code_grid_batches, training_token_split

    pipeline = LarpPipeline.from_pretrained(tiny_evaluation_setup / "pipe")
    tokens = encode_dataset(pipeline.vqvae, load_image_dataset(tiny_image_dataset_dir, split="train"))
    tokens.to_parquet(tmp_path / "train.parquet")  # a parquet file: its single split is `train`
    split = training_token_split(tmp_path / "train.parquet", "train", pipeline.vqvae.tokenizer_hash())
    batches = list(code_grid_batches(split, batch_size=40))  # rows 0-39 and their mirrors, then rows 40-63 and theirs
    assert [tuple(batch.shape) for batch in batches] == [(40, 64), (40, 64), (24, 64), (24, 64)]
    assert batches[0].dtype == torch.uint8  # read as stored, not widened to int64
    codes = tokens.with_format("torch")[:]
    assert torch.equal(torch.cat(batches[::2]).long(), codes["input_ids"])
    assert torch.equal(torch.cat(batches[1::2]).long(), codes["input_ids_flipped"])
    with pytest.raises(ValueError, match="made by tokenizer"):
        training_token_split(tmp_path / "train.parquet", "train", make_tiny_pipeline(seed=4).vqvae.tokenizer_hash())
    with pytest.raises(ValueError, match="no 'test' split"):
        training_token_split(tmp_path / "train.parquet", "test")


def test_nearest_hamming_distances_in_blocks_equal_the_whole_comparison():
    from larp_hf.evaluation import nearest_hamming_distances

    generator = torch.Generator().manual_seed(1)
    training = torch.randint(0, 4, (300, 16), generator=generator, dtype=torch.uint8)  # few codes: close neighbours
    generated = torch.randint(0, 4, (50, 4, 4), generator=generator, dtype=torch.uint8)
    generated[7] = training[123].view(4, 4)
    expected = (generated.flatten(1)[:, None] != training[None]).sum(-1).min(1).values
    # Batches as a token dataset gives them; blocks of 7 generated × 2 training grids × 16 codes (a bool and an int16
    # each).
    batches = iter(training.split(64))
    nearest = nearest_hamming_distances(generated, batches, chunk_size=7, block_bytes=3 * 7 * 2 * 16)
    assert torch.equal(nearest, expected) and nearest[7] == 0
    assert torch.equal(nearest_hamming_distances(generated, training.int()), expected)  # any integer type
    assert torch.equal(nearest_hamming_distances(generated, []), torch.full((50,), 17))  # no grid: h·w + 1
    with pytest.raises(ValueError, match="`generated_codes` grids have 16 codes but `training_codes` grids 9"):
        nearest_hamming_distances(generated, torch.zeros(3, 9))
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer"):
        nearest_hamming_distances(generated, training, chunk_size=0)


def test_evaluation_samples_in_parts_and_reads_real_images_in_batches(tiny_evaluation_setup, tiny_image_dataset_dir,
                                                                       tmp_path, monkeypatch):  # fmt: skip
    """Parts of 2 batches and network batches of 5 give the numbers of one part; no call sees more than it should."""
    from larp_hf.evaluation import scores

    pipeline = LarpPipeline.from_pretrained(tiny_evaluation_setup / "pipe")
    network = FeatureNetwork.from_pretrained(tiny_evaluation_setup / "features")
    options = {"dataset": tiny_image_dataset_dir, "num_samples": 26, "batch_size": 4}
    whole = evaluate_pipeline(pipeline, network, cache_dir=tmp_path / "a", **options)

    calls, seen = [], []
    sample = pipeline.__call__
    monkeypatch.setattr(type(pipeline), "__call__", lambda self, **kwargs: calls.append(kwargs) or sample(**kwargs))
    monkeypatch.setattr(scores, "SAMPLE_PART_BYTES", 2 * 4 * (4 * 16 * 16))  # 2 batches of 4 float32 16×16 images
    features = network._features
    monkeypatch.setattr(network, "_features", lambda pixels: seen.append(len(pixels)) or features(pixels))
    monkeypatch.setattr(network, "batch_size", 5)
    parts = evaluate_pipeline(pipeline, network, cache_dir=tmp_path / "b", **options)

    assert [(call["first_image_index"], call["num_images"]) for call in calls] == [(0, 8), (8, 8), (16, 8), (24, 2)]
    assert max(seen) == 5  # samples a sampling batch (4) at a time; real images a network batch (5) at a time
    for part in ("samples", "reconstructions", "real_baseline"):
        # Real images go through the network 5 at a time instead of 500: float32 convolutions round a little
        # differently with the batch size (features of a non-degenerate network differ by ~1e-7 relative).
        assert parts[part] == pytest.approx(whole[part], rel=1e-6)
    assert parts["memorisation"] == whole["memorisation"] and parts["settings"] == whole["settings"]


@contextlib.contextmanager
def one_thread():
    """torch on one thread, as OMP_NUM_THREADS=1 sets it in the launched processes: the same arithmetic in both."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_evaluate(processes: int, pipe, *args, capsys) -> dict:
    """
    The evaluation of `pipe`: in this process through the CLI for 1 process (one thread), or `recipes/evaluate.py`
    launched with 2 CPU processes (one thread each); its evaluation.json.
    """
    from .recipes.test_train_vqvae import launcher, run

    output_dir = Path(args[args.index("--output-dir") + 1])
    if processes == 1:
        with one_thread():
            stdout, _ = run_cli(capsys, "evaluate", pipe, *args)
    else:
        stdout = run([*launcher(processes), str(ROOT / "recipes" / "evaluate.py"), str(pipe), *map(str, args)]).stdout
    assert f"{processes} process(es)" in stdout
    evaluation = json.loads((output_dir / "evaluation.json").read_text())
    evaluation["settings"].pop("seconds")
    return evaluation


def test_two_processes_give_the_numbers_of_one(tiny_evaluation_setup, tiny_image_dataset_dir, tmp_path, monkeypatch,
                                               capsys):  # fmt: skip
    """
    Each process samples its share of the batches of the one seeded sequence (26 samples in batches of 8: 2 batches
    and 2) and of the real and training images; the main process scores what is gathered. The same numbers as one
    process, with and without a token dataset, with the real features computed and read from the cache. The
    2-process runs go through `recipes/evaluate.py`, so this also shows the recipe is the `evaluate` command.
    """
    from larp_hf import encode_dataset, load_image_dataset

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic in every process of both runs
    setup = tiny_evaluation_setup
    tokens = encode_dataset(LarpPipeline.from_pretrained(setup / "pipe").vqvae,
                            load_image_dataset(tiny_image_dataset_dir, split="train"))  # fmt: skip
    tokens.save_to_disk(str(tmp_path / "tokens"))
    common = ["--feature-network", setup / "features", "--dataset", tiny_image_dataset_dir, "--num-samples", 26,
              "--batch-size", 8, "--no-record-in-card"]  # fmt: skip
    one = run_evaluate(1, setup / "pipe", *common, "--cache-dir", tmp_path / "c1", "--output-dir", tmp_path / "one",
                       capsys=capsys)
    two = run_evaluate(2, setup / "pipe", *common, "--cache-dir", tmp_path / "c2", "--output-dir", tmp_path / "two",
                       capsys=capsys)
    assert two == one
    assert sum(one["memorisation"]["hamming_to_nearest_histogram"]) == 26
    assert one["settings"]["reconstructed_images"] == 16 and one["settings"]["baseline_images"] == 26

    with_tokens = [*common, "--token-dataset", tmp_path / "tokens"]  # and the real features from the caches
    one_t = run_evaluate(1, setup / "pipe", *with_tokens, "--cache-dir", tmp_path / "c1", "--output-dir",
                         tmp_path / "t1", capsys=capsys)
    two_t = run_evaluate(2, setup / "pipe", *with_tokens, "--cache-dir", tmp_path / "c2", "--output-dir",
                         tmp_path / "t2", capsys=capsys)
    assert two_t == one_t
    assert {part: one_t[part] for part in ("samples", "reconstructions", "real_baseline")} == {
        part: one[part] for part in ("samples", "reconstructions", "real_baseline")
    }


def test_a_sweep_over_two_processes_gives_the_numbers_of_one(tiny_evaluation_setup, tiny_image_dataset_dir, tmp_path,
                                                             monkeypatch, capsys):  # fmt: skip
    from .recipes.test_train_vqvae import launcher, run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the same arithmetic in every process of both runs
    results = []
    for processes in (1, 2):
        output_dir = tmp_path / f"sweep{processes}"
        args = ["sweep", str(tiny_evaluation_setup / "pipe"), "--feature-network", str(tiny_evaluation_setup / "features"),
                "--dataset", tiny_image_dataset_dir, "--temperature", "0.5,1.0", "--top-k", "0", "--num-samples", "20",
                "--batch-size", "8", "--cache-dir", str(tmp_path / f"cache{processes}"), "--output-dir", str(output_dir),
                "--no-record-in-card"]  # fmt: skip
        if processes == 1:
            with one_thread():
                stdout, _ = run_cli(capsys, *args)
        else:
            stdout = run([*launcher(processes), "-m", "larp_hf.cli", *args]).stdout
        assert f"{processes} process(es)" in stdout
        results.append(json.loads((output_dir / "sweep.json").read_text()))
    assert results[1] == results[0] and len(results[0]["rows"]) == 2

"""
One tiny run per tokenizer source, from images to a pipeline another process loads: a folder saved by diffusers'
`VQModel`, transformers' `JanusVQVAE` and `Emu3VQVAE` (non-square), and folders converted from the taming VQGAN and
LlamaGen golden checkpoints. Each goes: load_tokenizer -> encode_dataset -> a class-conditional prior trained a few
steps -> `larp-hf assemble` -> `larp-hf generate` -> `evaluate_pipeline` with the token dataset -> the pipeline
loaded in a fresh process samples the same codes.
"""

import json
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel


pytest.importorskip("diffusers")

from larp_hf import (  # noqa: E402
    LarpPipeline,
    LarpPriorCollator,
    encode_dataset,
    load_image_dataset,
    prior_config,
)
from larp_hf.evaluation import evaluate_pipeline  # noqa: E402
from larp_hf.tokenizers import convert_checkpoint, load_tokenizer  # noqa: E402
from larp_hf.tokenizers.adapter_transformers import Emu3VQTokenizer  # noqa: E402

from ..test_cli import larp_hf  # noqa: E402
from .test_checkpoint_conversion import LLAMAGEN, TAMING  # noqa: E402
from .test_evaluation_any_tokenizer import feature_network  # noqa: E402
from .test_pipeline_any_tokenizer import emu3_model, janus_model, vq_model  # noqa: E402


# name -> writes a tokenizer folder the way its users get one
SOURCES = {
    "diffusers-VQModel": lambda folder: vq_model(0).save_pretrained(folder),  # the library's own folder, nothing else
    "transformers-JanusVQVAE": lambda folder: janus_model(0).save_pretrained(folder),
    "transformers-Emu3VQVAE": lambda folder: Emu3VQTokenizer(emu3_model(0), image_size=(8, 12)).save_pretrained(folder),
    "taming-VQGAN": lambda folder: convert_checkpoint(TAMING, folder, image_size=16),
    "LlamaGen-VQ": lambda folder: convert_checkpoint(LLAMAGEN, folder, layout="llamagen"),
}
NUM_IMAGES = 4


@pytest.fixture(scope="module")
def runs(tiny_image_dataset_dir, tmp_path_factory):
    """name -> the run's folder and what it found; each source runs once, when a test first asks for it."""
    done = {}

    def run(name: str, capsys) -> dict:
        if name not in done:
            done[name] = one_run(name, tmp_path_factory.mktemp(name), tiny_image_dataset_dir, capsys)
        return done[name]

    return run


def one_run(name: str, folder, dataset_dir: str, capsys) -> dict:
    SOURCES[name](folder / "tokenizer")
    tokenizer = load_tokenizer(folder / "tokenizer")

    # Encode the training split (64 grey 16×16 images, read at the tokenizer's size and channels).
    images = load_image_dataset(dataset_dir, split="train")
    tokens = encode_dataset(tokenizer, images, batch_size=32)
    datasets.DatasetDict({"train": tokens}).save_to_disk(str(folder / "tokens"))

    # A class-conditional prior, a few steps on those tokens.
    torch.manual_seed(0)
    config = prior_config(tokenizer, preset="tiny", num_classes=2)
    prior = GPT2LMHeadModel(config)
    collator = LarpPriorCollator.from_prior_config(config)
    optimizer = torch.optim.AdamW(prior.parameters(), lr=3e-3)
    losses = []
    for step in range(6):
        batch = collator([tokens[i] for i in range(16 * (step % 4), 16 * (step % 4) + 16)])
        loss = prior(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    prior.save_pretrained(folder / "prior")

    # Assemble and generate through the CLI.
    larp_hf("assemble", "--vqvae", folder / "tokenizer", "--prior", folder / "prior", "--output", folder / "pipe",
            capsys=capsys)  # fmt: skip
    larp_hf("generate", folder / "pipe", "--num-images", NUM_IMAGES, "--seed", 0, "--output", folder / "samples.png",
            capsys=capsys)  # fmt: skip

    pipeline = LarpPipeline.from_pretrained(folder / "pipe")
    samples = pipeline(num_images=NUM_IMAGES, seed=0, output_type="pt")
    np.save(folder / "codes.npy", samples.codes.numpy())
    network = feature_network(pipeline.vqvae.num_channels, pipeline.vqvae.image_size)
    scores = evaluate_pipeline(
        pipeline, network, dataset=dataset_dir, token_dataset=folder / "tokens", num_samples=10, batch_size=5,
        cache_dir=folder / "cache",
    )  # fmt: skip
    return {
        "folder": folder, "tokenizer": tokenizer, "images": images["image"][:4], "tokens": tokens, "losses": losses, "pipeline": pipeline,
        "samples": samples, "scores": scores,
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SOURCES))
def test_images_to_tokens_to_prior_to_pipeline_to_scores(name, runs, capsys):
    run = runs(name, capsys)
    tokenizer, pipeline = run["tokenizer"], run["pipeline"]
    height, width = tokenizer.grid

    # The token dataset holds the tokenizer's own codes of the images, in the narrowest type.
    first = torch.tensor(run["tokens"]["input_ids"][:4], dtype=torch.long)
    pixel_values = pipeline.image_processor(run["images"], return_tensors="pt")["pixel_values"]
    assert torch.equal(first, tokenizer.encode(pixel_values).flatten(1))
    assert run["tokens"].features["input_ids"].feature.dtype == ("uint8" if tokenizer.codebook_size <= 256 else "uint16")
    assert all(np.isfinite(run["losses"])) and run["losses"][-1] < run["losses"][0]

    # The pipeline holds the tokenizer it was assembled from, and decodes its samples as the tokenizer does.
    assert type(pipeline.vqvae) is type(tokenizer) and pipeline.vqvae.tokenizer_hash() == tokenizer.tokenizer_hash()
    codes, images = run["samples"].codes, run["samples"].images
    assert codes.shape == (NUM_IMAGES, height, width) and int(codes.max()) < tokenizer.codebook_size
    assert torch.allclose(images, pipeline.image_processor.postprocess(tokenizer.decode(codes), output_type="pt"))
    assert (run["folder"] / "samples.png").is_file()
    index = json.loads((run["folder"] / "pipe" / "larp_pipeline.json").read_text())
    assert index["parts"]["vqvae"]["class"] == type(getattr(tokenizer, "model", tokenizer)).__name__

    # The evaluation scored 10 samples at the tokenizer's grid against its own token dataset.
    scores = run["scores"]
    assert np.isfinite(scores["samples"]["fid"]) and np.isfinite(scores["reconstructions"]["fid"])
    assert scores["memorisation"]["grid"] == [height, width]
    assert sum(scores["memorisation"]["hamming_to_nearest_histogram"]) == 10


def test_every_pipeline_loads_and_samples_the_same_codes_in_a_fresh_process(runs, capsys):
    folders = [str(runs(name, capsys)["folder"]) for name in SOURCES]
    script = (
        "import sys, numpy as np\n"
        "from larp_hf import LarpPipeline\n"
        "for folder in sys.argv[1:]:\n"
        "    pipe = LarpPipeline.from_pretrained(folder + '/pipe')\n"
        f"    codes = pipe(num_images={NUM_IMAGES}, seed=0, output_type='pt').codes.numpy()\n"
        "    assert np.array_equal(codes, np.load(folder + '/codes.npy')), folder\n"
        "    print('same codes', type(pipe.vqvae).__name__, pipe.grid)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *folders], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("same codes") == len(SOURCES)

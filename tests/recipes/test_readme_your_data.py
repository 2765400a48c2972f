"""
README's "Your own data" runs as written: its commands, in order, on a generated imagefolder of RGB shapes with string
labels in metadata.jsonl and no test split, each with tiny-model and few-step flags appended (argparse takes the last
value), and checked for what the README says each step does.
"""

import json
import re
import shlex

import numpy as np
import PIL.Image
import pytest

from .forked_runs import ROOT, run_recipe


CLASSES = ["circle", "square", "triangle"]
# Appended to each command: tiny models and a few steps; everything else is as the README writes it.
SMALL = {
    "train_vqvae": ["--max_steps", 2, "--validation_steps", 2, "--checkpointing_steps", 2, "--train_batch_size", 16,
                    "--model.hidden_channels", "8,8", "--model.stem_channels", 8, "--model.num_res_blocks", 1,
                    "--model.res_hidden_channels", 8, "--model.codebook_size", 32, "--model.codebook_dim", 8],
    "train_prior": ["--preset", "tiny", "--max_steps", 2, "--validation_steps", 2, "--checkpointing_steps", 2,
                    "--train_batch_size", 8],
    "train_classifier": ["--epochs", 12, "--batch_size", 16, "--model.hidden_channels", "8,8",
                         "--model.feature_dim", 8],
    "evaluate": ["--num-samples", 24, "--batch-size", 24],
}  # fmt: skip


def readme_commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Your own data\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def write_shapes(folder, count: int = 96, size: int = 32):
    """`count` RGB images of a bright circle, square or triangle on a dark noisy background, labels in metadata.jsonl."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:size, :size]
    rows = []
    for index in range(count):
        name = CLASSES[index % 3]
        cy, cx, r = *rng.integers(10, size - 10, 2), int(rng.integers(5, 9))
        mask = {"circle": (y - cy) ** 2 + (x - cx) ** 2 <= r * r,
                "square": (abs(y - cy) <= r) & (abs(x - cx) <= r),
                "triangle": (y - cy <= r) & (y - cy >= -r) & (abs(x - cx) <= (y - cy + r) / 2)}[name]  # fmt: skip
        array = rng.integers(0, 40, (size, size, 3), dtype=np.uint8)
        array[mask] = rng.integers(150, 256, 3, dtype=np.uint8)
        PIL.Image.fromarray(array).save(folder / f"{index:03d}.png")
        rows.append({"file_name": f"{index:03d}.png", "label": name})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_the_readme_your_own_data_commands_run_as_written(tmp_path):
    commands = readme_commands()
    assert [command[0] for command in commands][:3] == ["accelerate", "python", "accelerate"]
    (tmp_path / "recipes").symlink_to(ROOT / "recipes")  # the README's commands run from the repository's root
    write_shapes(tmp_path / "my_images")
    outputs = {}
    for command in commands:
        if command[:2] == ["larp-hf", "demo"]:  # a server; the page it would serve is built instead
            from larp_hf import LarpPipeline
            from larp_hf.demo import build_demo
            from larp_hf.demo.app import class_names

            pipeline = LarpPipeline.from_pretrained(tmp_path / command[2])
            assert class_names(pipeline) == CLASSES and build_demo(pipeline) is not None
            continue
        if command[0] == "accelerate":
            assert command[1] == "launch"
            command = ["python", *command[2:]]
        if command[0] == "python":
            name, args = command[1].removeprefix("recipes/").removesuffix(".py"), command[2:]
        else:
            assert command[0] == "larp-hf"
            name, args = "larp-hf", command[1:]
        small = SMALL.get(args[0] if name == "larp-hf" else name, [])
        result = run_recipe(name, *args, *small, cwd=tmp_path)
        outputs[args[0] if name == "larp-hf" else name] = result.stdout + result.stderr

    # Every step after the tokenizer took the data from its record, and said so.
    source = str((tmp_path / "my_images").resolve())
    assert f"Dataset: {source} (from the tokenizer's record)" in outputs["encode_dataset"]
    assert "holding out" in outputs["train_vqvae"]  # no validation split: some images held out, not 1,000
    prior = json.loads((tmp_path / "outputs/prior-my-images/config.json").read_text())
    assert prior["id2label"] == {"0": "circle", "1": "square", "2": "triangle"}
    assert (tmp_path / "outputs/circles.png").is_file()
    assert source in outputs["train_classifier"]
    classifier = json.loads((tmp_path / "outputs/features-my-images/config.json").read_text())
    assert classifier["in_channels"] == 3
    assert f"Dataset: {source} (from the pipeline's record)" in outputs["evaluate"]
    evaluation = json.loads((tmp_path / "outputs/eval-my-images/evaluation.json").read_text())
    assert evaluation["settings"]["dataset"] == source
    card = (tmp_path / "outputs/larp-my-images/README.md").read_text()
    assert "`circle`" in card and "FID" in card


@pytest.mark.parametrize("flags", [[], ["--dataset", "fashion_mnist"]])
def test_evaluate_has_no_feature_network_default_for_other_data(tmp_path, flags):
    """Left out, --feature-network is the Fashion-MNIST classifier only for Fashion-MNIST, never for other data."""
    from larp_hf.cli import build_parser
    from larp_hf.evaluation.scores import choose_real_dataset, default_feature_network

    args = build_parser().parse_args(["evaluate", "pipe", "--output-dir", "out", *flags])
    assert args.feature_network is None

    class Recorded:  # a pipeline whose record names a folder of the user's
        card_info = {"training_data": {"source": str(tmp_path / "my_images")}}

    choice = choose_real_dataset(Recorded(), args.dataset, args.image_column, args.label_column, args.dataset_dir)
    expected = "outputs/features-fashion-mnist" if flags else None
    assert default_feature_network(choice) == expected


def test_evaluate_without_a_feature_network_stops_before_sampling_on_other_data(tmp_path, monkeypatch):
    """The CLI path of the rule above: a pipeline trained on a user's folder, --feature-network left out."""
    from larp_hf import LarpPipeline, cli

    from ..conftest import make_tiny_pipeline

    pipeline = make_tiny_pipeline(num_classes=3)
    pipeline.card_info["training_data"] = {"source": str(tmp_path / "my_images")}
    pipeline.save_pretrained(tmp_path / "pipe", sample_grid=False)

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before the refusal")

    monkeypatch.setattr(LarpPipeline, "__call__", no_sampling)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["evaluate", str(tmp_path / "pipe"), "--output-dir", str(tmp_path / "eval")])
    message = str(exit_info.value.code)  # SystemExit(message): printed to stderr, exit status 1
    assert message.startswith("error: ")
    assert f"--feature-network: name the feature space for {tmp_path / 'my_images'}" in message
    assert "'inception'" in message and "'random'" in message and not (tmp_path / "eval").exists()

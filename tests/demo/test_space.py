"""`export_space`: the folder's files and Spaces header, and its app.py served locally against the shipped pipeline."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import SpaceCard
from packaging.requirements import Requirement

from larp_hf import LarpPipeline
from larp_hf.demo import export_space
from larp_hf.demo.commands import main as demo_main

from .conftest import served


gradio = pytest.importorskip("gradio", reason='the demo tests need Gradio: pip install -e ".[test]"')


def test_a_shipped_pipelines_space_folder_serves_it_with_its_own_copy_of_larp_hf(
    class_conditional_pipeline_dir, tmp_path
):
    space = tmp_path / "space"
    demo_main(["export-space", str(class_conditional_pipeline_dir), str(space), "--ship-pipeline", "--title", "Tiny"])
    assert sorted(path.name for path in space.iterdir()) == [
        ".larp_hf-output.json",  # what the export wrote, so that --overwrite replaces only that
        "README.md",
        "app.py",
        "larp_hf",
        "pipeline",
        "requirements.txt",
    ]
    card = SpaceCard.load(space / "README.md")
    assert card.data.sdk == "gradio" and card.data.app_file == "app.py" and card.data.sdk_version == gradio.__version__
    assert card.data.title == "Tiny" and card.data.models is None  # a shipped folder has no model repo to link
    requirements = (space / "requirements.txt").read_text().splitlines()
    assert any(line.startswith("torch>=") for line in requirements) and any(
        line.startswith("transformers") for line in requirements
    )
    assert not any(line.startswith(("pytest", "gradio")) for line in requirements)  # no extras; Gradio is sdk_version's
    assert _requirement_of(space, "diffusers") is None  # its tokenizer is larp_hf's own

    # Run from the folder, `import larp_hf` finds the copy beside app.py, as it would on the Space.
    found = subprocess.run(
        [sys.executable, "-c", "import larp_hf; print(larp_hf.__file__)"],
        cwd=space,
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == str(space / "larp_hf" / "__init__.py")

    from gradio_client import Client

    with served(["app.py"], tmp_path / "space.log", cwd=space) as (url, _):
        client = Client(url, verbose=False, download_files=str(tmp_path / "downloads"))
        gallery, _, info, files = client.predict(
            num_images=3, seed=5, class_label=2, guidance_scale=2.0, api_name="/generate"
        )
    expected = LarpPipeline.from_pretrained(class_conditional_pipeline_dir)(
        num_images=3, seed=5, class_labels=2, guidance_scale=2.0
    )
    assert len(gallery) == 3 and info.startswith("3 images in")
    assert np.array_equal(np.load(next(path for path in files if path.endswith(".npy"))), expected.codes.numpy())


def test_a_hub_ids_space_links_the_model_and_loads_it_at_start_up(
    class_conditional_pipeline_dir, tmp_path, monkeypatch
):
    space = export_space("org/larp-tiny", tmp_path / "space", revision="v1")
    card = SpaceCard.load(space / "README.md")
    assert card.data.models == ["org/larp-tiny"] and card.data.title == "LARP: org/larp-tiny"
    app = (space / "app.py").read_text()
    assert (
        "PIPELINE = 'org/larp-tiny'\nREVISION = 'v1'\n" in app
        and "https://huggingface.co/org/larp-tiny" in (space / "README.md").read_text()
    )
    compile(app, "app.py", "exec")
    assert not (space / "pipeline").exists()
    # Offline, the pipeline's parts cannot be read: every tokenizer library's extra is listed, and the file says so.
    assert _requirement_of(space, "diffusers") is not None
    assert "could not be read" in (space / "requirements.txt").read_text()

    # Shipping a Hub id downloads it (here: from a stand-in for snapshot_download) and copies it in.
    downloads = []
    monkeypatch.setattr(
        "larp_hf.demo.space.snapshot_download",
        lambda repo, revision: downloads.append((repo, revision)) or str(class_conditional_pipeline_dir),
    )
    space = export_space("org/larp-tiny", tmp_path / "space", ship_pipeline=True, overwrite=True)
    assert downloads == [("org/larp-tiny", None)] and (space / "pipeline" / "larp_pipeline.json").is_file()
    assert SpaceCard.load(space / "README.md").data.models == ["org/larp-tiny"]
    assert "PIPELINE = Path(__file__).parent / 'pipeline'\nREVISION = None\n" in (space / "app.py").read_text()


def test_export_space_refuses_what_would_not_make_a_working_space(class_conditional_pipeline_dir, tmp_path):
    with pytest.raises(ValueError, match="is a local folder, which a Space cannot read: pass `ship_pipeline`"):
        export_space(class_conditional_pipeline_dir, tmp_path / "space")
    with pytest.raises(ValueError, match="holds no LarpPipeline"):
        export_space(tmp_path, tmp_path / "space", ship_pipeline=True)
    with pytest.raises(ValueError, match="neither a pipeline folder nor a Hub repo id"):
        export_space("not a repo", tmp_path / "space")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not empty; pick another `output_dir` or pass `overwrite`"):
        export_space("org/name", tmp_path / "taken")
    export_space("org/name", tmp_path / "taken", overwrite=True)  # replaces only what an export writes
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine" and (tmp_path / "taken" / "app.py").is_file()
    with pytest.raises(SystemExit, match="error: PIPELINE .* is a local folder, which a Space cannot read"):
        demo_main(["export-space", str(class_conditional_pipeline_dir), str(tmp_path / "space2")])


def _requirement_of(space: Path, name: str) -> Requirement | None:
    """The line of the Space's requirements.txt that names the distribution `name`, parsed; None when none does."""
    text = (space / "requirements.txt").read_text()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    found = [Requirement(line) for line in lines if Requirement(line).name.lower() == name]
    assert len(found) <= 1, f"{name} is listed twice: {found}"
    return found[0] if found else None


@pytest.fixture(scope="module")
def vqmodel_pipeline_dir(class_conditional_pipeline_dir, tmp_path_factory):
    """The tiny pipeline's folder with its tokenizer replaced by a diffusers VQModel's adapter folder."""
    from larp_hf.tokenizers.adapter_diffusers import DiffusersVQTokenizer

    from ..tokenizers.test_adapter_diffusers import tiny_vq_model

    folder = tmp_path_factory.mktemp("vq_space") / "pipeline"
    shutil.copytree(class_conditional_pipeline_dir, folder)
    shutil.rmtree(folder / "vqvae")
    DiffusersVQTokenizer(tiny_vq_model(), value_range=(-1.0, 1.0)).save_pretrained(folder / "vqvae")
    return folder


def test_the_space_of_a_pipeline_over_a_vqmodel_installs_diffusers(
    vqmodel_pipeline_dir, class_conditional_pipeline_dir, tmp_path, monkeypatch, caplog
):
    import diffusers

    def assert_installs_diffusers(space):
        requirement = _requirement_of(space, "diffusers")
        assert requirement is not None and requirement.specifier.contains(diffusers.__version__)
        assert "larp_hf[diffusers]" in (space / "requirements.txt").read_text()
        assert _requirement_of(space, "torch") is not None  # larp_hf's own dependencies too

    # Shipped: read from the tokenizer's larp_tokenizer.json (the adapter's library).
    assert_installs_diffusers(export_space(vqmodel_pipeline_dir, tmp_path / "a", ship_pipeline=True))
    # A tokenizer folder that VQModel.save_pretrained wrote alone: read from its config.json.
    bare = tmp_path / "bare"
    shutil.copytree(vqmodel_pipeline_dir, bare)
    (bare / "vqvae" / "larp_tokenizer.json").unlink()
    assert_installs_diffusers(export_space(bare, tmp_path / "b", ship_pipeline=True))
    # The pipeline's index naming the part's library (as the pipeline records its parts), whatever the folder holds.
    recorded = tmp_path / "recorded"
    shutil.copytree(class_conditional_pipeline_dir, recorded)
    index = json.loads((recorded / "larp_pipeline.json").read_text())
    index["parts"]["vqvae"] = {"library": "diffusers", "class": "VQModel"}
    (recorded / "larp_pipeline.json").write_text(json.dumps(index))
    assert_installs_diffusers(export_space(recorded, tmp_path / "c", ship_pipeline=True))

    # A Hub id: its JSON files alone are read from the Hub (here: a stand-in for hf_hub_download).
    asked = []

    def hub_file(repo_id, filename, revision=None):
        asked.append((repo_id, filename, revision))
        path = vqmodel_pipeline_dir / filename
        if not path.is_file():
            raise FileNotFoundError(filename)  # huggingface_hub's missing-entry errors are OSErrors too
        return str(path)

    monkeypatch.setattr("larp_hf.demo.space.hf_hub_download", hub_file)
    with caplog.at_level(logging.WARNING):
        space = export_space("org/vq-pipeline", tmp_path / "d", revision="v2")
    assert_installs_diffusers(space)
    assert "could not be read" not in (space / "requirements.txt").read_text() and not caplog.records
    assert ("org/vq-pipeline", "larp_pipeline.json", "v2") in asked and not (space / "pipeline").exists()

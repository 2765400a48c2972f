"""
No command destroys its own inputs or a user's files: an output that is, contains or lies inside an input is refused
by name before any work; `overwrite` replaces only what an earlier run of the same command wrote (its mark); a
re-saved pipeline keeps what no save wrote; a Space never ships a link out of the pipeline; a write never goes
through a link.
"""

import hashlib
import json
import os
import stat

import pytest
import torch

from larp_hf import cli
from larp_hf.atomic_files import swap_folder
from larp_hf.output_folders import (
    OUTPUT_MARK,
    claim_folder,
    entries_written_by,
    how_paths_meet,
    links_out_of,
    write_mark,
)
from larp_hf.pipelines import LarpPipelineOutput, save_samples
from larp_hf.pipelines.folder import SAVE_COMMAND

from .conftest import make_tiny_pipeline


def snapshot(folder) -> dict[str, str]:
    files = (path for path in sorted(folder.rglob("*")) if path.is_file() and not path.is_symlink())
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


def cli_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(arg) for arg in args])
    assert isinstance(exit_info.value.code, str), exit_info.value.code  # a refusal, not argparse's usage error
    capsys.readouterr()
    return exit_info.value.code


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("safety") / "pipe"
    make_tiny_pipeline().save_pretrained(folder, sample_grid=False)
    return folder


class StubPipeline:
    """What `save_samples` calls, without a model: the folder rules are under test here, not sampling."""

    num_classes = 0
    class_names = None

    def class_indices(self, labels):
        return labels

    def __call__(self, num_images, first_image_index=0, **kwargs):
        images = torch.full((num_images, 1, 4, 4), 0.5)
        return LarpPipelineOutput(images=images, codes=torch.zeros(num_images, 2, 2, dtype=torch.long))


# ---- the shared rule ---------------------------------------------------------------------------------------------


def test_paths_meet_by_equality_containment_or_not_at_all(tmp_path):
    assert how_paths_meet(tmp_path / "a", tmp_path / "a") == "is"
    assert how_paths_meet(tmp_path, tmp_path / "a" / "b") == "contains"
    assert how_paths_meet(tmp_path / "a" / "b", tmp_path / "a") == "lies inside"
    assert how_paths_meet(tmp_path / "ab", tmp_path / "a") is None  # a shared prefix is not a parent
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert how_paths_meet(tmp_path / "link" / "x", tmp_path / "real") == "lies inside"


def test_links_out_of_a_folder_are_found_and_links_inside_it_are_not(tmp_path):
    folder = tmp_path / "pipe"
    (folder / "prior").mkdir(parents=True)
    (folder / "prior" / "config.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("secret")
    os.symlink(folder / "prior" / "config.json", folder / "inside.json")
    os.symlink(tmp_path / "secret.txt", folder / "prior" / "notes.txt")
    os.symlink("..", folder / "prior" / "loop")
    os.symlink(tmp_path / "gone", folder / "dangling")
    found = {path.name for path, _ in links_out_of(folder)}
    assert found == {"notes.txt", "loop", "dangling"}


def test_a_swap_keeps_what_the_writer_names_by_links_and_never_follows_a_link(tmp_path):
    target = tmp_path / "target"
    (target / "reports").mkdir(parents=True)
    (target / "reports" / "sweep.json").write_text("scores")
    (target / "old.bin").write_text("old")
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink(tmp_path / "outside.txt", target / "link.txt")
    with swap_folder(target, keep=lambda folder: ["reports", "link.txt"]) as partial:
        (partial / "new.bin").write_text("new")
    assert sorted(os.listdir(target)) == ["link.txt", "new.bin", "reports"]
    assert (target / "reports" / "sweep.json").read_text() == "scores"
    assert (target / "link.txt").is_symlink() and (tmp_path / "outside.txt").read_text() == "outside"


# ---- assemble ----------------------------------------------------------------------------------------------------


def test_assemble_refuses_an_output_among_its_inputs_and_a_folder_it_did_not_write(tmp_path, capsys):
    tokenizer = tmp_path / "vqvae-run"
    (tokenizer / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (tokenizer / "config.json").write_text("{}")
    (tokenizer / "metrics.json").write_text("{}")
    prior = tmp_path / "prior-run"
    prior.mkdir()
    (prior / "config.json").write_text("{}")
    before = snapshot(tmp_path)

    error = cli_error(capsys, "assemble", "--vqvae", tokenizer, "--prior", prior, "--output", tokenizer, "--overwrite")
    assert f"--output {tokenizer} is --vqvae {tokenizer}" in error
    error = cli_error(capsys, "assemble", "--vqvae", tokenizer, "--prior", prior, "--output", prior / "sub")
    assert " lies inside --prior " in error
    # Another run's training folder is not an input here, and still no assemble wrote it: refused, naming it.
    other = tmp_path / "other-run"
    other.mkdir()
    (other / "metrics.json").write_text("{}")
    error = cli_error(capsys, "assemble", "--vqvae", tokenizer, "--prior", prior, "--output", other, "--overwrite")
    assert f"--output {other} is not empty and holds no pipeline (metrics.json)" in error
    assert snapshot(tmp_path) == {**before, "other-run/metrics.json": snapshot(other)["metrics.json"]}


def test_a_pipeline_saved_again_keeps_the_files_no_save_wrote(tmp_path):
    pipeline = make_tiny_pipeline()
    folder = tmp_path / "pipe"
    pipeline.save_pretrained(folder, sample_grid=False)
    assert entries_written_by(folder, SAVE_COMMAND) >= {"prior", "vqvae", "README.md", "larp_pipeline.json"}
    (folder / "sweep.json").write_text("reports of a sweep")
    (folder / "reports").mkdir()
    (folder / "reports" / "evaluation.json").write_text("{}")
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main")
    pipeline.save_pretrained(folder, sample_grid=False)
    assert (folder / "sweep.json").read_text() == "reports of a sweep"
    assert (folder / "reports" / "evaluation.json").is_file() and (folder / ".git" / "HEAD").is_file()
    # A folder saved before saves were marked: what a save writes goes (an old grid), the rest stays.
    (folder / OUTPUT_MARK).unlink()
    (folder / "samples.png").write_bytes(b"an old grid")
    pipeline.save_pretrained(folder, sample_grid=False)
    assert not (folder / "samples.png").exists() and (folder / "sweep.json").is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask  # the user's umask, not mkdtemp's 0700


def test_sweep_storing_its_best_setting_keeps_the_reports_it_wrote_in_the_pipeline(tmp_path):
    from larp_hf.evaluation import save_best_setting

    pipeline = make_tiny_pipeline()
    folder = tmp_path / "pipe"
    pipeline.save_pretrained(folder, sample_grid=False)
    for name in ("sweep.json", "sweep.csv", "sweep.md", "sweep.png", "my-notes.txt"):
        (folder / name).write_text(name)
    save_best_setting(pipeline, {"best": {"temperature": 0.9, "top_k": 5, "top_p": 1.0}}, folder)
    assert all((folder / name).read_text() == name for name in ("sweep.json", "sweep.md", "my-notes.txt"))
    assert json.loads((folder / "prior" / "generation_config.json").read_text())["temperature"] == 0.9


def test_reports_go_in_the_pipeline_folder_but_not_into_its_parts_nor_the_other_inputs(pipeline_dir, tmp_path, capsys):
    error = cli_error(capsys, "evaluate", pipeline_dir, "--output-dir", pipeline_dir / "prior" / "eval")
    assert "lies inside the pipeline's prior/ folder" in error
    features = tmp_path / "features"
    features.mkdir()
    (features / "config.json").write_text("{}")
    error = cli_error(capsys, "sweep", pipeline_dir, "--output-dir", features, "--feature-network", features)
    assert f"--output-dir {features} is --feature-network {features}" in error


def test_convert_tokenizer_refuses_an_output_that_holds_its_checkpoint(tmp_path, capsys):
    checkpoint = tmp_path / "vq.ckpt"
    checkpoint.write_bytes(b"not read")
    error = cli_error(capsys, "convert-tokenizer", checkpoint, tmp_path)
    assert f"OUTPUT {tmp_path} contains CHECKPOINT {checkpoint}" in error


# ---- generate ----------------------------------------------------------------------------------------------------


def test_generate_refuses_outputs_in_the_pipeline_folder(pipeline_dir, capsys):
    before = snapshot(pipeline_dir)
    error = cli_error(capsys, "generate", pipeline_dir, "--image-dir", pipeline_dir, "--overwrite")
    assert f"--image-dir {pipeline_dir} is MODEL {pipeline_dir}" in error
    error = cli_error(capsys, "generate", pipeline_dir, "--output", pipeline_dir / "samples.png")
    assert " lies inside MODEL " in error
    assert snapshot(pipeline_dir) == before


def test_outputs_of_one_sampling_are_kept_apart(tmp_path):
    with pytest.raises(ValueError, match="`image_dir` .* lies inside `output_dataset`"):
        save_samples(StubPipeline(), 2, image_dir=tmp_path / "ds" / "pngs", output_dataset=tmp_path / "ds")
    with pytest.raises(ValueError, match="`grid_path` .* is named as one of the images"):
        save_samples(StubPipeline(), 2, image_dir=tmp_path / "pngs", grid_path=tmp_path / "pngs" / "00001.png")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_only_the_images_an_earlier_sampling_wrote(tmp_path):
    images = tmp_path / "pngs"
    save_samples(StubPipeline(), 4, image_dir=images)
    (images / "notes.txt").write_text("mine")
    save_samples(StubPipeline(), 2, image_dir=images, overwrite=True)
    assert sorted(os.listdir(images)) == sorted(["00000.png", "00001.png", "notes.txt", OUTPUT_MARK])
    # A count, not a name per image: the mark of a request of 10^9 images is as short as this one's.
    assert json.loads((images / OUTPUT_MARK).read_text())["images"] == 2
    # A file of the user's under an image's name is in the way: refused by name, before any sampling.
    (images / "00005.png").write_text("my own picture")
    with pytest.raises(ValueError, match=r"holds 00005\.png, which no earlier sampling into it wrote"):
        save_samples(StubPipeline(), 6, image_dir=images, overwrite=True)
    assert (images / "00005.png").read_text() == "my own picture"


def test_a_link_in_the_image_folder_is_never_written_through(tmp_path):
    images = tmp_path / "pngs"
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    images.mkdir()
    os.symlink(outside, images / "00001.png")  # planted: no sampling wrote it
    with pytest.raises(ValueError, match=r"holds 00001\.png"):
        save_samples(StubPipeline(), 2, image_dir=images, overwrite=True)
    os.unlink(images / "00001.png")
    save_samples(StubPipeline(), 2, image_dir=images)
    os.unlink(images / "00001.png")
    os.symlink(outside, images / "00001.png")  # in place of an image the mark lists
    save_samples(StubPipeline(), 2, image_dir=images, overwrite=True)
    assert outside.read_text() == "precious"
    assert not (images / "00001.png").is_symlink() and (images / "00001.png").read_bytes().startswith(b"\x89PNG")


def test_a_dataset_folder_is_replaced_only_when_a_sampling_wrote_all_of_it(tmp_path):
    dataset = tmp_path / "ds"
    save_samples(StubPipeline(), 2, output_dataset=dataset)
    save_samples(StubPipeline(), 3, output_dataset=dataset, overwrite=True)
    (dataset / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds notes\.txt, which no earlier sampling into it wrote"):
        save_samples(StubPipeline(), 2, output_dataset=dataset, overwrite=True)
    assert (dataset / "notes.txt").read_text() == "mine"


def test_a_sampling_that_fails_leaves_no_folder_it_made(tmp_path):
    class Failing(StubPipeline):
        def __call__(self, num_images, **kwargs):
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        save_samples(Failing(), 2, image_dir=tmp_path / "pngs", output_dataset=tmp_path / "ds")
    assert list(tmp_path.iterdir()) == []


def test_a_second_sampling_into_a_claimed_folder_is_refused_at_once(tmp_path):
    images = tmp_path / "pngs"
    with claim_folder(images, "image_dir"):  # as a `larp-hf generate` still at work holds it
        with pytest.raises(ValueError, match="`image_dir`: .* is in use by another run"):
            save_samples(StubPipeline(), 2, image_dir=images)
        assert os.listdir(images) == [".larp_hf-output.lock"]
    save_samples(StubPipeline(), 2, image_dir=images)  # released: free again
    assert sorted(os.listdir(images)) == sorted(["00000.png", "00001.png", OUTPUT_MARK])


# ---- export-space ------------------------------------------------------------------------------------------------


@pytest.fixture
def export_space():
    pytest.importorskip("gradio")
    from larp_hf.demo.space import export_space

    return export_space


def test_export_space_refuses_a_space_in_or_around_its_pipeline(pipeline_dir, export_space):
    before = snapshot(pipeline_dir)
    with pytest.raises(ValueError, match="`output_dir` .* is `pipeline`"):
        export_space(pipeline_dir, pipeline_dir, ship_pipeline=True, overwrite=True)
    with pytest.raises(ValueError, match="`output_dir` .* lies inside `pipeline`"):
        export_space(pipeline_dir, pipeline_dir / "space", ship_pipeline=True)
    with pytest.raises(ValueError, match="`output_dir` .* contains `pipeline`"):
        export_space(pipeline_dir, pipeline_dir.parent, ship_pipeline=True, overwrite=True)
    assert snapshot(pipeline_dir) == before and not (pipeline_dir / "space").exists()


def test_export_space_overwrites_only_what_an_export_wrote(export_space, tmp_path):
    space = tmp_path / "space"
    space.mkdir()
    for name in ("README.md", "requirements.txt"):
        (space / name).write_text(f"the user's {name}")
    (space / "larp_hf").mkdir()
    (space / "larp_hf" / "mine.py").write_text("x = 1")
    before = snapshot(space)
    with pytest.raises(ValueError, match=r"holds requirements\.txt, README\.md, larp_hf, which no earlier export"):
        export_space("org/name", space, overwrite=True)
    assert snapshot(space) == before
    other = tmp_path / "other"
    export_space("org/name", other)
    (other / "notes.txt").write_text("mine")
    export_space("org/name", other, overwrite=True, title="Again")
    assert "title: Again" in (other / "README.md").read_text() and (other / "notes.txt").read_text() == "mine"


def test_export_space_ships_no_link_out_of_the_pipeline(pipeline_dir, export_space, tmp_path):
    pipeline = tmp_path / "pipe"
    pipeline.mkdir()
    for entry in pipeline_dir.iterdir():
        os.symlink(entry, pipeline / entry.name) if entry.is_dir() else pipeline.joinpath(entry.name).write_bytes(
            entry.read_bytes()
        )
    with pytest.raises(ValueError, match=r"holds links that lead out of it or loop.*prior -> "):
        export_space(pipeline, tmp_path / "space", ship_pipeline=True)
    assert not (tmp_path / "space").exists()


def test_the_mark_names_the_command_and_what_it_wrote(tmp_path):
    write_mark(tmp_path, "export_space", ["app.py", ".larp_hf-output.lock", "README.md"])
    mark = json.loads((tmp_path / OUTPUT_MARK).read_text())
    assert mark == {"command": "export_space", "entries": ["README.md", "app.py"]}
    assert entries_written_by(tmp_path, "export_space") == {"README.md", "app.py"}
    assert entries_written_by(tmp_path, "save_samples image_dir") == set()  # another command's mark gives nothing


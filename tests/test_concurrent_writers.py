"""
Commands that write the same pipeline card at the same time all land: each merges its records into the card as it
is on disk, under the card's lock, instead of rewriting the card it loaded at its start.
"""

import json
import multiprocessing
import time

from huggingface_hub import ModelCard

from larp_hf import LarpPipeline
from larp_hf.pipelines.model_card import card_lock

from .conftest import make_tiny_pipeline


def record(pipeline, command: str, fid: float, temperature: float = 1.0):
    scores = dict(fid=fid, precision=0.5, recall=0.5, density=1.0, coverage=0.5)
    pipeline.record_evaluation(
        command, scores, feature_network="features", feature_network_sha256="0" * 64, dataset="fashion_mnist",
        split="test", num_samples=8, sampling={"temperature": temperature, "top_k": 0, "top_p": 1.0},
    )  # fmt: skip


def recorded(folder) -> list[tuple[str, float]]:
    index = json.loads((folder / "larp_pipeline.json").read_text())
    return [(entry["command"], entry["scores"]["fid"]) for entry in index["model_card"]["evaluations"]]


def test_two_commands_that_loaded_the_same_card_both_land(tmp_path):
    folder = tmp_path / "pipe"
    make_tiny_pipeline().save_pretrained(folder, sample_grid=False)
    first, second = LarpPipeline.from_pretrained(folder), LarpPipeline.from_pretrained(folder)
    record(first, "larp-hf evaluate", 12.5)
    first.save_model_card(folder)
    record(second, "larp-hf sweep", 11.0, temperature=0.9)
    second.save_model_card(folder)  # loaded before the first one wrote: its card knew nothing of it
    assert recorded(folder) == [("larp-hf evaluate", 12.5), ("larp-hf sweep", 11.0)]
    card = ModelCard.load(folder / "README.md").text
    assert "`larp-hf evaluate`" in card and "`larp-hf sweep`" in card
    # The same command and settings again: its record is replaced, not doubled.
    record(second, "larp-hf evaluate", 10.0)
    second.save_model_card(folder)
    assert recorded(folder) == [("larp-hf sweep", 11.0), ("larp-hf evaluate", 10.0)]


def _write_a_record(folder, loaded, go):
    pipeline = LarpPipeline.from_pretrained(folder)
    record(pipeline, "larp-hf evaluate", 9.0, temperature=0.8)
    loaded.set()
    go.wait(60)
    pipeline.save_model_card(folder)


def test_a_card_writer_waits_for_the_one_that_holds_the_card(tmp_path):
    folder = tmp_path / "pipe"
    make_tiny_pipeline().save_pretrained(folder, sample_grid=False)
    holder = LarpPipeline.from_pretrained(folder)
    before = (folder / "larp_pipeline.json").read_text()
    context = multiprocessing.get_context("fork")
    loaded, go = context.Event(), context.Event()
    child = context.Process(target=_write_a_record, args=(folder, loaded, go))
    child.start()  # before the lock is taken: a child forked later would inherit it
    assert loaded.wait(60)
    with card_lock(folder):  # as another command merging its records holds it
        go.set()
        time.sleep(1)  # the child is writing its card now, unless it waits for the lock
        assert child.is_alive() and (folder / "larp_pipeline.json").read_text() == before
        record(holder, "larp-hf sweep", 11.0)
    child.join(60)
    assert child.exitcode == 0
    holder.save_model_card(folder)
    assert sorted(recorded(folder)) == [("larp-hf evaluate", 9.0), ("larp-hf sweep", 11.0)]


def test_a_sweep_saving_its_best_setting_keeps_what_another_command_recorded_meanwhile(tmp_path):
    from larp_hf.evaluation import save_best_setting

    folder = tmp_path / "pipe"
    make_tiny_pipeline().save_pretrained(folder, sample_grid=False)
    sweep, evaluate = LarpPipeline.from_pretrained(folder), LarpPipeline.from_pretrained(folder)
    record(evaluate, "larp-hf evaluate", 12.5)
    evaluate.save_model_card(folder)
    record(sweep, "larp-hf sweep", 11.0, temperature=0.9)
    save_best_setting(sweep, {"best": {"temperature": 0.9, "top_k": 5, "top_p": 1.0}}, folder)  # the folder swapped
    assert recorded(folder) == [("larp-hf evaluate", 12.5), ("larp-hf sweep", 11.0)]
    assert (folder / ".larp_pipeline.lock").is_file()  # the card's lock file went along: writers share one lock

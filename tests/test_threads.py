"""The thread policy of sampling: fewer threads than torch's default on a small or busy machine, the user's choice
(argument, LARP_HF_NUM_THREADS, OMP_NUM_THREADS, torch.set_num_threads) always kept, the count restored after."""

from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor

from larp_hf import threads
from larp_hf.generation import sample_tokens
from larp_hf.threads import choose_num_threads, torch_threads

from .conftest import make_tiny_pipeline


@pytest.fixture(autouse=True)
def no_user_choice(monkeypatch):
    """As if the user had chosen nothing: no thread variables, torch at the count it had when larp_hf was imported."""
    for name in (threads.NUM_THREADS_ENV, *threads.USER_THREAD_ENVS):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "TORCH_THREADS_AT_IMPORT", before)
    yield
    torch.set_num_threads(before)


def on_machine(monkeypatch, cpus: int, busy: float, torch_count: int):
    monkeypatch.setattr(threads, "available_cpus", lambda: cpus)
    monkeypatch.setattr(threads, "busy_cpus", lambda: busy)
    torch.set_num_threads(torch_count)
    monkeypatch.setattr(threads, "TORCH_THREADS_AT_IMPORT", torch_count)


def test_a_small_machine_samples_with_one_thread(monkeypatch):
    on_machine(monkeypatch, cpus=2, busy=0.0, torch_count=2)
    assert choose_num_threads() == 1


def test_batched_work_takes_the_free_cpus_even_on_a_small_machine(monkeypatch):
    on_machine(monkeypatch, cpus=2, busy=0.0, torch_count=2)
    assert choose_num_threads(batched=True) == 2  # encoding alone: both cores
    on_machine(monkeypatch, cpus=2, busy=1.0, torch_count=2)
    assert choose_num_threads(batched=True) == 1  # beside one busy process: the core it leaves


def test_a_larger_machine_leaves_the_busy_cpus_to_their_processes(monkeypatch):
    on_machine(monkeypatch, cpus=8, busy=0.0, torch_count=8)
    assert choose_num_threads() == 8
    on_machine(monkeypatch, cpus=8, busy=3.2, torch_count=8)
    assert choose_num_threads() == 5
    on_machine(monkeypatch, cpus=8, busy=20.0, torch_count=8)
    assert choose_num_threads() == 1
    on_machine(monkeypatch, cpus=16, busy=0.0, torch_count=8)
    assert choose_num_threads() == 8  # never more than torch's own count


def test_the_users_choice_wins(monkeypatch):
    on_machine(monkeypatch, cpus=2, busy=0.0, torch_count=2)
    assert choose_num_threads(2) == 2
    monkeypatch.setenv(threads.NUM_THREADS_ENV, "2")
    assert choose_num_threads() == 2
    assert choose_num_threads(3) == 3  # the argument before the variable
    monkeypatch.delenv(threads.NUM_THREADS_ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_num_threads() is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    torch.set_num_threads(1)  # the user's own call, before larp_hf samples
    assert choose_num_threads() is None


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_a_bad_thread_count_is_refused_by_name(monkeypatch, value):
    monkeypatch.setenv(threads.NUM_THREADS_ENV, value)
    with pytest.raises(ValueError, match=f"{threads.NUM_THREADS_ENV} must be a positive integer"):
        choose_num_threads()
    with pytest.raises(ValueError, match="`num_threads` must be a positive integer"):
        choose_num_threads(0)


class ThreadSpy(LogitsProcessor):
    """Records torch's thread count at each step and changes nothing."""

    def __init__(self):
        self.counts = set()

    def __call__(self, input_ids, scores):
        self.counts.add(torch.get_num_threads())
        return scores


def test_sampling_runs_with_the_chosen_count_and_restores_the_users(monkeypatch):
    on_machine(monkeypatch, cpus=2, busy=0.0, torch_count=3)
    prior = make_tiny_pipeline().prior
    input_ids = torch.full((2, 1), prior.config.larp["bos_token_id"])
    spy = ThreadSpy()
    sample_tokens(prior, input_ids, spy, 4)
    assert spy.counts == {1} and torch.get_num_threads() == 3
    spy = ThreadSpy()
    sample_tokens(prior, input_ids, spy, 4, num_threads=2)
    assert spy.counts == {2} and torch.get_num_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    spy = ThreadSpy()
    sample_tokens(prior, input_ids, spy, 4)
    assert spy.counts == {3}


def test_the_count_is_restored_after_an_error(monkeypatch):
    on_machine(monkeypatch, cpus=2, busy=0.0, torch_count=2)
    with pytest.raises(RuntimeError, match="boom"):
        with torch_threads() as count:
            assert count == 1 and torch.get_num_threads() == 1
            raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_busy_cpus_takes_this_process_threads_away(monkeypatch):
    if not Path("/proc/loadavg").is_file():
        pytest.skip("no /proc: the load average is read instead")
    monkeypatch.setattr(threads, "_own_running_threads", lambda: 0)
    assert threads.busy_cpus() >= 1  # the reading thread itself is runnable
    monkeypatch.setattr(threads, "_own_running_threads", lambda: 10**6)
    assert threads.busy_cpus() == 0.0

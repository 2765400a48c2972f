"""
A miniature recipe for the fault-injection tests: the `larp_hf.training` calls of recipes/train_*.py, in their order,
around a one-layer GPT-2 (with dropout, so that every step draws random numbers) on random tokens. The tests run it
in processes forked from a server that has imported everything once (tests/recipes/forked_runs.py), so a run starts in a fraction
of a second and can be killed, damaged and resumed dozens of times within the suite's budget.
"""

import argparse
import os
import time
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import GPT2Config, GPT2LMHeadModel

from larp_hf import training
from larp_hf.training import run_lock

from .forked_runs import redirect_output, start


DEFAULTS = {
    "output_dir": "out",
    "overwrite_output_dir": False,
    "resume_from_checkpoint": None,
    "seed": 0,
    "max_steps": 6,
    "learning_rate": 1e-2,
    "lr_scheduler": "constant",
    "validation_steps": 2,
    "checkpointing_steps": 1,
    "checkpoints_total_limit": None,
    "gradient_accumulation_steps": 1,
    "save_on_each_node": False,
}


def tiny_gpt2() -> GPT2LMHeadModel:
    config = GPT2Config(
        n_layer=1, n_head=2, n_embd=16, vocab_size=32, n_positions=8, bos_token_id=0, eos_token_id=0,
        resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def collate(rows) -> dict:
    return {"input_ids": torch.stack([tokens for (tokens,) in rows])}


@torch.no_grad()
def evaluate(model, dataloader, accelerator) -> dict:
    model.eval()
    losses = [accelerator.gather_for_metrics(model(**batch, labels=batch["input_ids"]).loss.reshape(1)) for batch in dataloader]
    model.train()
    return {"val_loss": torch.cat(losses).mean().item()}


def train(options: dict):
    """One run, as a recipe's main() does it. `options`: DEFAULTS' flags plus the test hooks read below."""
    args = argparse.Namespace(**{name: options.get(name, value) for name, value in DEFAULTS.items()})
    output_dir = Path(args.output_dir)
    accelerator = training.make_accelerator(
        output_dir, args.seed, gradient_accumulation_steps=args.gradient_accumulation_steps,
        save_on_each_node=args.save_on_each_node,
    )  # fmt: skip
    training.claim_output_dir(accelerator, args)

    model = tiny_gpt2()
    if options.get("fully_shard"):
        # FSDP2 as Accelerate's FSDP plugin prepares it on GPUs (on CPUs the plugin falls back to plain data
        # parallelism): the model is sharded before its optimizer is made, and registered below as `prepare` would.
        from torch.distributed.fsdp import fully_shard

        PartialState()  # the process group
        fully_shard(model.transformer.h[0])
        fully_shard(model)
    tokens = torch.randint(0, 32, (48, 8), generator=torch.Generator().manual_seed(1))
    train_dataloader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(tokens[:40]), batch_size=4, shuffle=True, drop_last=True, collate_fn=collate,
        generator=torch.Generator().manual_seed(args.seed),
    )  # fmt: skip
    val_dataloader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens[40:]), batch_size=4, collate_fn=collate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    lr_scheduler = training.get_lr_scheduler(accelerator, args.lr_scheduler, optimizer, 0, args.max_steps)
    if options.get("fully_shard"):
        optimizer, train_dataloader, val_dataloader, lr_scheduler = accelerator.prepare(
            optimizer, train_dataloader, val_dataloader, lr_scheduler
        )
        accelerator._models.append(model)
    else:
        model, optimizer, train_dataloader, val_dataloader, lr_scheduler = accelerator.prepare(
            model, optimizer, train_dataloader, val_dataloader, lr_scheduler
        )
    state = training.resume_or_start_afresh(
        accelerator, args.resume_from_checkpoint, output_dir, config=training.run_config(args)
    )

    model.train()
    state.start_clock()
    for batch in training.train_batches(accelerator, train_dataloader, state, args.max_steps):
        with accelerator.accumulate(model):
            loss = model(**batch, labels=batch["input_ids"]).loss
            if state.step + 1 == options.get("nan_at_step") and accelerator.process_index in options.get("nan_on", [0]):
                loss = loss * float("nan")
            training.backward_and_step(accelerator, loss, model, optimizer, lr_scheduler, max_grad_norm=1.0)
        if not accelerator.sync_gradients:
            continue
        state.count_step()
        print(f"step {state.step}", flush=True)
        time.sleep(options.get("step_sleep", 0.0))
        if training.is_due(state.step, args.validation_steps, args.max_steps):
            with training.preserve_random_state():
                metrics = evaluate(model, val_dataloader, accelerator)
            training.record_validation(accelerator, state, metrics, output_dir)
        if training.is_due(state.step, args.checkpointing_steps, args.max_steps):
            training.save_checkpoint(accelerator, output_dir, state.step, args.checkpoints_total_limit)

    training.save_final_model(accelerator, model, output_dir)
    if accelerator.is_main_process:
        training.write_final_metrics(output_dir, state)
    accelerator.end_training()


def child_main(options: dict, log_path: str, environment: dict, cwd: str):
    """The entry point of a forked child: its own log, environment (kill point, distributed world) and folder."""
    redirect_output(log_path)
    os.environ.update(environment)
    os.chdir(cwd)
    torch.set_num_threads(1)
    try:
        train(options)
    finally:
        run_lock.release_held_locks()  # what interpreter exit does; a forked child leaves through os._exit


def start_in_child(options: dict, log_path: Path, environment: dict | None = None, cwd: Path | None = None):
    """Start `train(options)` in a process forked from the preloaded server; returns the started Process."""
    environment = {"TQDM_DISABLE": "1", **(environment or {})}
    return start(child_main, options, str(log_path), environment, str(cwd or Path.cwd()))

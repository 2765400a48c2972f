"""
Checkpoints of a sharded model: a tiny GPT-2 under torch's `fully_shard` (FSDP2) on 2 gloo CPU processes, saved with
its full state gathered, checksummed, resumed bit-exactly and saved as a final model stock transformers loads.
Accelerate's FSDP plugin needs GPUs (with `cpu=True` it falls back to plain data parallelism), so the model is
sharded by the test's miniature recipe and registered as `accelerator.prepare` would register it.
"""

import torch
from transformers import GPT2LMHeadModel

from larp_hf.training import checkpoint_format

from .test_fault_injection import assert_same_weights, start_world, succeeds, weights


def test_a_sharded_run_saves_full_checksummed_checkpoints_and_resumes_bit_exactly(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    ranks = [succeeds(rank.wait()) for rank in start_world(tmp_path, "straight", fully_shard=True, output_dir=str(straight), max_steps=4)]
    assert "Parameters identical across 2 process(es)." in ranks[0].output

    # The checkpoint holds the whole model (tied embeddings once), verified against its manifest.
    checkpoint = straight / "checkpoints" / "checkpoint-4"
    manifest, unlisted = checkpoint_format.verify_checkpoint(checkpoint)
    assert manifest["world_size"] == 2 and unlisted == []
    assert {"random_states_0.safetensors", "random_states_1.safetensors", "optimizer.safetensors"} <= set(manifest["files"])
    final = GPT2LMHeadModel.from_pretrained(straight)
    for name, tensor in checkpoint_format.read_weights(checkpoint / "model.safetensors").items():
        assert torch.equal(final.state_dict()[name], tensor), name
    optimizer = checkpoint_format.read_state(checkpoint, "optimizer")
    assert set(optimizer["state"]) == {name for name, p in final.named_parameters()}  # full, keyed by name

    # Interrupted after step 2 (simulated by a 2-step run), resumed to 4 in two new processes.
    for rank in start_world(tmp_path, "first", fully_shard=True, output_dir=str(interrupted), max_steps=2):
        succeeds(rank.wait())
    resumed = start_world(
        tmp_path, "resumed", fully_shard=True, output_dir=str(interrupted), max_steps=4, resume_from_checkpoint="latest"
    )
    assert "Resuming from " in succeeds(resumed[0].wait()).output and "checkpoint-2" in resumed[0].output
    succeeds(resumed[1].wait())
    assert_same_weights(interrupted, weights(straight))

"""A recipe run as a script follows the error policy of larp_hf.errors: one line naming the path, exit 1, no
traceback (the in-process details are in tests/test_error_policy.py)."""

import sys

from ..conftest import make_tiny_pipeline
from .forked_runs import ROOT
from .test_train_vqvae import run


def test_a_prior_folder_given_as_the_tokenizer_is_one_line_naming_it(tmp_path):
    prior = tmp_path / "prior"
    make_tiny_pipeline().prior.save_pretrained(prior)
    (tmp_path / "tokens").mkdir()  # there, so that the tokenizer is what the run stops at
    script = ROOT / "recipes" / "train_prior.py"
    result = run([sys.executable, str(script), "--vqvae", str(prior), "--token_dataset", str(tmp_path / "tokens"),
                  "--output_dir", str(tmp_path / "out"), "--max_steps", "1"], expect_success=False)  # fmt: skip
    assert result.returncode == 1
    assert f"error: {prior} is not an image tokenizer folder" in result.stderr
    assert "Traceback" not in result.stderr

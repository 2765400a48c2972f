"""
`import larp_hf` and `larp-hf --help` load neither torch nor transformers (their start-up time:
bench/bench_import_time.py), and the Auto classes still load larp_hf's models after `import larp_hf`.
"""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
LAZY_PACKAGES = ["larp_hf", "larp_hf.data", "larp_hf.demo", "larp_hf.evaluation", "larp_hf.generation",
                 "larp_hf.pipelines", "larp_hf.training"]  # fmt: skip


def python(code: str, cwd: Path = ROOT) -> str:
    """`code` in a fresh interpreter on this tree; its stdout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_import_and_help_load_no_heavy_library():
    heavy = "('torch', 'transformers', 'datasets', 'accelerate', 'gradio', 'PIL')"
    code = (
        "import sys, contextlib, io\n"
        "import larp_hf\n"
        f"print(sorted(m for m in {heavy} if m in sys.modules))\n"
        "from larp_hf.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['generate', '--help'])\n"
        "assert '(default: 64)' in out.getvalue()\n"
        f"print(sorted(m for m in {heavy} if m in sys.modules))\n"
    )
    assert python(code).split("\n")[:2] == ["[]", "[]"]


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_exported_name_loads(package):
    module = importlib.import_module(package)
    assert set(module.__all__) <= set(dir(module))
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError, match="has no attribute 'nosuch'"):
        module.nosuch


def test_a_function_named_as_its_module_stays_the_function():
    code = (
        "import larp_hf.pipelines.image_grid\n"
        "from larp_hf.pipelines import image_grid\n"
        "print(callable(image_grid))\n"
    )
    assert python(code).split() == ["True"]


def test_auto_classes_load_larp_models_after_import_larp_hf(tmp_path):
    from larp_hf import LarpClassifierConfig, LarpClassifierModel, LarpImageProcessor, LarpVQVAEConfig, LarpVQVAEModel

    vqvae = LarpVQVAEConfig(in_channels=1, image_size=16, hidden_channels=[8], stem_channels=8, codebook_size=16, codebook_dim=4)
    LarpVQVAEModel(vqvae).save_pretrained(tmp_path / "vqvae")
    LarpImageProcessor.from_vqvae_config(vqvae).save_pretrained(tmp_path / "vqvae")
    LarpClassifierModel(LarpClassifierConfig(num_classes=2, image_size=16, in_channels=1, hidden_channels=[8])).save_pretrained(
        tmp_path / "classifier"
    )
    # In a fresh interpreter: `import larp_hf` first, transformers after it (the order a script usually has).
    code = (
        "import sys\n"
        "import larp_hf\n"
        "assert 'transformers' not in sys.modules\n"
        "from transformers import AutoImageProcessor, AutoModel\n"
        "print(type(AutoModel.from_pretrained('vqvae')).__name__, type(AutoModel.from_pretrained('classifier')).__name__,\n"
        "      type(AutoImageProcessor.from_pretrained('vqvae')).__name__)\n"
    )
    assert python(code, cwd=tmp_path).split() == ["LarpVQVAEModel", "LarpClassifierModel", "LarpImageProcessor"]

"""What the README promises is checked: its Python examples run, and its test command is what CI runs."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from larp_hf.data.loading import FASHION_MNIST_LABELS

from .conftest import make_tiny_pipeline


ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_PIPELINE = "outputs/larp-fashion-mnist-quick"
QUICKSTART_PRIOR_CONFIG = ROOT / "recipes" / "configs" / "prior_fashion_mnist_quick.yaml"
QUICKSTART_CLASSES = yaml.safe_load(QUICKSTART_PRIOR_CONFIG.read_text())["num_classes"]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(code_blocks("python"))))
def test_python_example_runs(index, tmp_path, monkeypatch):
    """Runs the block as a user would paste it; the block's own asserts and any exception fail the test."""
    run_python_block(index, tmp_path, monkeypatch)


def run_python_block(index: int, tmp_path, monkeypatch) -> dict:
    """Run README python block `index` in `tmp_path`, checking that every top-level assert ran; its namespace."""
    code = code_blocks("python")[index]
    assert "import" in code, "a README example should be self-contained"
    monkeypatch.chdir(tmp_path)
    if QUICKSTART_PIPELINE in code:
        # What `make quickstart` leaves there, in miniature: an untrained pipeline with a 128-code codebook and, as
        # prior_fashion_mnist_quick.yaml trains it, a prior conditioned on Fashion-MNIST's 10 classes.
        pipeline = make_tiny_pipeline(
            codebook_size=128, num_classes=QUICKSTART_CLASSES, id2label=dict(enumerate(FASHION_MNIST_LABELS))
        )
        pipeline.save_pretrained(tmp_path / QUICKSTART_PIPELINE, sample_grid=False)
    tree, checks = counted_asserts(code)
    assert checks, f"README python block {index} should assert what it promises"
    namespace = {"__name__": "__readme__", "__checks_passed__": 0}
    exec(compile(tree, f"README.md python block {index}", "exec"), namespace)
    assert namespace["__checks_passed__"] == checks  # every promise in the block was checked, none skipped
    return namespace


def test_the_stock_generate_example_prompts_the_class_conditional_prior_as_it_was_trained(tmp_path, monkeypatch):
    """The quick prior is class-conditional: from BOS alone, stock `generate` would put a code in the class slot and
    shift the grid by one, without an error; the README's prompt must be the `[BOS, class token]` prefix."""
    index = next(i for i, code in enumerate(code_blocks("python")) if ".generate(" in code)
    namespace = run_python_block(index, tmp_path, monkeypatch)
    config, sequences = namespace["prior"].config, namespace["sequences"]
    larp = config.larp
    assert larp["num_classes"] == QUICKSTART_CLASSES
    assert sequences.shape[1] == config.n_positions  # the whole trained sequence: [BOS, class token] + 64 codes
    assert (sequences[:, 0] == larp["bos_token_id"]).all()
    class_slot = sequences[:, 1]
    assert ((class_slot >= larp["class_token_offset"]) & (class_slot < larp["null_class_token_id"])).all()


def counted_asserts(code: str) -> tuple[ast.Module, int]:
    """The block's syntax tree with a counter bumped after each top-level `assert`, and how many there are."""
    tree = ast.parse(code)
    body, checks = [], 0
    for node in tree.body:
        body.append(node)
        if isinstance(node, ast.Assert):
            checks += 1
            body.append(ast.parse("__checks_passed__ += 1").body[0])
    tree.body = body
    return ast.fix_missing_locations(tree), checks


def test_counted_asserts_counts_only_the_asserts_that_ran():
    tree, checks = counted_asserts("x = 1\nassert x == 1\nif x > 1:\n    raise SystemExit\nassert x\n")
    namespace = {"__checks_passed__": 0}
    exec(compile(tree, "example", "exec"), namespace)
    assert checks == 2 and namespace["__checks_passed__"] == 2
    tree, checks = counted_asserts("assert True\nimport sys\nsys.exit(0)\nassert False\n")
    with pytest.raises(SystemExit):  # a block that stops early never reaches its second promise
        exec(compile(tree, "example", "exec"), {"__checks_passed__": 0})


def setup_commands() -> list[str]:
    first_block = code_blocks("bash")[0]
    return [line.split("#")[0].strip() for line in first_block.splitlines() if line.split("#")[0].strip()]


def test_readme_top_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = setup_commands()
    assert len(commands) == 2, commands
    main_command, test_command = commands
    assert "test" in test_command
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert any(line.strip() == test_command for line in ci_script.splitlines()), ci_script


def test_readme_commands_exist_in_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    for command in setup_commands():
        target = command.removeprefix("make ").strip()
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), f"no `{target}` target in the Makefile"


def test_readme_names_only_configs_that_exist():
    for name in set(re.findall(r"(\w+\.yaml)", README)):
        matches = list((ROOT / "recipes").rglob(name))
        assert matches, f"README mentions {name}, which is not in recipes/"

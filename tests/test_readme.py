"""What the README promises is checked: its Python examples run, and its test command is what CI runs."""

import ast
import re
from pathlib import Path

import pytest

from .conftest import make_tiny_pipeline


ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_PIPELINE = "outputs/larp-fashion-mnist-quick"
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


@pytest.mark.parametrize("index", range(len(code_blocks("python"))))
def test_python_example_runs(index, tmp_path, monkeypatch):
    """Runs the block as a user would paste it; the block's own asserts and any exception fail the test."""
    code = code_blocks("python")[index]
    assert "import" in code, "a README example should be self-contained"
    monkeypatch.chdir(tmp_path)
    if QUICKSTART_PIPELINE in code:
        # What `make quickstart` leaves there, in miniature (an untrained pipeline with a 128-code codebook).
        make_tiny_pipeline(codebook_size=128).save_pretrained(tmp_path / QUICKSTART_PIPELINE, sample_grid=False)
    tree, checks = counted_asserts(code)
    assert checks, f"README python block {index} should assert what it promises"
    namespace = {"__name__": "__readme__", "__checks_passed__": 0}
    exec(compile(tree, f"README.md python block {index}", "exec"), namespace)
    assert namespace["__checks_passed__"] == checks  # every promise in the block was checked, none skipped


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

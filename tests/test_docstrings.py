"""The examples in docstrings run and print what they claim."""

import doctest
import importlib
import re

import pytest


MODULES = [
    "larp_hf.prior",
    "larp_hf.models.vqvae.configuration_larp_vqvae",
    "larp_hf.models.vqvae.modeling_larp_vqvae",
    "larp_hf.models.vqvae.image_processing_larp_vqvae",
    "larp_hf.data.loading",
    "larp_hf.generation.guidance",
    "larp_hf.generation.logits_process",
    "larp_hf.generation.prepacked",
    "larp_hf.pipelines.pipeline_larp",
    "larp_hf.metrics.functional",
    "larp_hf.models.classifier.configuration_larp_classifier",
    "larp_hf.models.classifier.modeling_larp_classifier",
]


class MarkdownDocTestParser(doctest.DocTestParser):
    """Docstring examples sit in ```python fences; the fence lines are not part of any expected output."""

    def parse(self, string, name="<string>"):
        return super().parse(re.sub(r"^\s*```\w*\s*$", "", string, flags=re.MULTILINE), name)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(parser=MarkdownDocTestParser())
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [test for test in finder.find(module) if test.examples]
    assert tests, f"{name} has no docstring example"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0

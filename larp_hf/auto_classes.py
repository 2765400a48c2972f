"""
larp_hf's models in transformers' Auto classes (`AutoConfig`, `AutoModel`, `AutoImageProcessor`), registered by
their packages (`larp_hf.models.vqvae`, `larp_hf.models.classifier`) as they load, and by `import larp_hf` as soon as
transformers is loaded, without loading transformers itself.
"""

import importlib
import importlib.abc
import importlib.util
import sys


MODEL_PACKAGES = ("larp_hf.models.vqvae", "larp_hf.models.classifier")


def register_model_packages():
    """
    Load the model packages, which register their classes with the Auto classes. A package that is loading now
    (its import is what loaded transformers) is left to finish: it registers at its end.
    """
    for name in MODEL_PACKAGES:
        module = sys.modules.get(name)
        if module is not None and getattr(module.__spec__, "_initializing", False):
            continue
        importlib.import_module(name)


class _AfterTransformersLoads(importlib.abc.MetaPathFinder):
    """
    A post-import hook: finds `transformers` as the other finders do, and has its loader register the model packages
    once transformers' own `__init__` has run (transformers has no plugin entry points to do this).
    """

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)  # once, and so that the lookup below finds the real spec
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module):
            spec.loader.exec_module = exec_module  # as it was: a loader may load other modules too
            exec_module(module)
            register_model_packages()

        spec.loader.exec_module = exec_then_register
        return spec


def register_when_transformers_loads():
    """Register the model packages now if transformers is loaded, else as soon as it is (`import larp_hf` calls it)."""
    if "transformers" in sys.modules:
        register_model_packages()
    elif not any(isinstance(finder, _AfterTransformersLoads) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterTransformersLoads())


__all__ = ["MODEL_PACKAGES", "register_model_packages", "register_when_transformers_loads"]

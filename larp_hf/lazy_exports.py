"""
Packages whose names are imported from their modules on first use (PEP 562), as transformers' `_LazyModule` does:
`import larp_hf` and `larp-hf --help` then load neither torch nor transformers (bench/bench_import_time.py).
"""

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """
    The `__getattr__` and `__dir__` of `package`, whose public `exports` (name -> the module that defines it,
    relative to `package`, e.g. `".collator"`) are imported when first read and then kept as the package's own.

        __getattr__, __dir__ = lazy_exports(__name__, {"LarpPriorCollator": ".collator"})
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(importlib.import_module(package), name, value)  # read once; later reads skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(importlib.import_module(package))) | set(exports))

    return __getattr__, __dir__


__all__ = ["lazy_exports"]

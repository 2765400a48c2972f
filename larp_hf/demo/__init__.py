"""A Gradio demo of a `LarpPipeline` (`build_demo`, `launch_demo`) and a Hugging Face Space folder for it
(`export_space`). Gradio is the optional `demo` extra; it is imported when a page is built, not here."""

from ..lazy_exports import lazy_exports


# Imported from their modules when first used (see larp_hf/lazy_exports.py).
_EXPORTS = {
    "API_NAME": ".app",
    "add_demo_commands": ".commands",
    "build_demo": ".app",
    "class_names": ".app",
    "export_space": ".space",
    "import_gradio": ".app",
    "launch_demo": ".app",
    "sample": ".app",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "API_NAME",
    "add_demo_commands",
    "build_demo",
    "class_names",
    "export_space",
    "import_gradio",
    "launch_demo",
    "sample",
]

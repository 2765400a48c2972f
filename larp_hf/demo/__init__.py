"""A Gradio demo of a `LarpPipeline` (`build_demo`, `launch_demo`) and a Hugging Face Space folder for it
(`export_space`). Gradio is the optional `demo` extra; it is imported when a page is built, not here."""

from .app import API_NAME, build_demo, class_names, import_gradio, launch_demo, sample
from .commands import add_demo_commands
from .space import export_space


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

"""A Hugging Face Space folder for a pipeline's demo: `app.py`, `requirements.txt`, a README with the Spaces header."""

import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from importlib.metadata import requires
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData, hf_hub_download, snapshot_download

from .. import __version__
from ..atomic_files import write_text_atomic
from ..output_folders import (
    OUTPUT_MARK,
    claim_folder,
    entries_written_by,
    folder_entries,
    links_out_of,
    names_list,
    output_overlap,
    remove_entry,
    write_mark,
)
from ..pipelines import PIPELINE_CONFIG_NAME, hub_dataset_id, is_pipeline_folder
from ..pipelines.folder import read_pipeline_index
from ..tokenizers import TOKENIZER_CONFIG_NAME
from .app import API_NAME, HUB_ID_PATTERN, import_gradio


logger = logging.getLogger(__name__)
SHIPPED_PIPELINE_DIR = "pipeline"
# The extras of larp_hf that bring a tokenizer's library (transformers' and torch's are larp_hf's own dependencies).
TOKENIZER_LIBRARY_EXTRAS = ("diffusers",)
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
# What export_space writes, and so what `overwrite=True` replaces (where the folder's mark says an export wrote it).
SPACE_FILES = ("app.py", "requirements.txt", "README.md", "larp_hf", SHIPPED_PIPELINE_DIR)
SPACE_COMMAND = "export_space"

APP_TEMPLATE = '''"""The Gradio demo of the LARP pipeline {name}: `python app.py` serves it, as a Space does.

Written by `larp-hf export-space` with larp_hf {version}, which is the `larp_hf/` folder beside this file.
"""

from pathlib import Path

import torch

from larp_hf import LarpPipeline
from larp_hf.demo import build_demo, launch_demo


# {pipeline_comment}
PIPELINE = {pipeline}
REVISION = {revision!r}

pipeline = LarpPipeline.from_pretrained(
    PIPELINE, revision=REVISION, device="cuda" if torch.cuda.is_available() else "cpu"
)
demo = build_demo(pipeline, title={title!r}, model_id={model_id!r})

if __name__ == "__main__":
    launch_demo(demo)  # Gradio reads GRADIO_SERVER_NAME and GRADIO_SERVER_PORT, as Spaces set them
'''

README_BODY = """
# {title}

A Gradio demo of the LARP latent-autoregressive image pipeline {model}: pick the number of images, a seed (or a
random one), the temperature, top-k and top-p (and, for a class-conditional prior, a class and the guidance scale),
press **Generate**, and download the grid PNG and the sampled codes (`.npy`).

Written by `larp-hf export-space` with larp_hf {version}. The folder is the whole Space:

- `app.py` loads the pipeline once and serves the page (`python app.py`);
- `larp_hf/` is the library that wrote it (it is not on PyPI), `requirements.txt` its dependencies and those of the
  pipeline's parts (a diffusers tokenizer needs diffusers); the Space installs Gradio {gradio_version} itself, from
  `sdk_version` above;{pipeline_text}

Run it locally with `pip install -r requirements.txt "gradio=={gradio_version}"` and `python app.py`. Publish it with

```python
from huggingface_hub import HfApi

api = HfApi()
api.create_repo("you/larp-demo", repo_type="space", space_sdk="gradio", exist_ok=True)
api.upload_folder(folder_path=".", repo_id="you/larp-demo", repo_type="space")
```

Programs call it with `gradio_client`: `Client("you/larp-demo").predict(num_images=16, seed=0, api_name="/{api_name}")`
returns the images, the grid, the time it took and the two files; the other settings (`random_seed`, `temperature`,
`top_k`, `top_p`, `class_label` (-1 = every class in turn, -2 = the unconditional model), `guidance_scale`) default
to the page's.
"""


def _requirements_of(extra: str | None) -> list[str]:
    """The requirements larp_hf declares for `extra` (None: its own dependencies), as the installed package says."""
    lines = []
    for requirement in requires("larp_hf") or []:
        name, _, marker = requirement.partition(";")
        found = _EXTRA_MARKER.search(marker)
        if (found.group(1) if found else None) == extra:
            lines.append(name.strip())
    return lines


def pipeline_libraries(read_json: Callable[[str], dict | None]) -> set[str]:
    """
    The libraries a saved pipeline's parts come from: what `larp_pipeline.json` records for each part, what the
    tokenizer's `larp_tokenizer.json` records (an adapter's library), and diffusers for a tokenizer folder that
    diffusers wrote (`VQModel.save_pretrained` alone). `read_json(path)` reads a JSON file of the pipeline folder by
    its relative path (None when there is none).
    """
    libraries = set()
    index = read_json(PIPELINE_CONFIG_NAME) or {}
    libraries.update(part["library"] for part in (index.get("parts") or {}).values() if part.get("library"))
    tokenizer_record = read_json(f"vqvae/{TOKENIZER_CONFIG_NAME}") or {}
    if tokenizer_record.get("library"):
        libraries.add(tokenizer_record["library"])
    if "_diffusers_version" in (read_json("vqvae/config.json") or {}):
        libraries.add("diffusers")
    return libraries


def _distribution_name(requirement: str) -> str:
    """`"transformers<6,>=5.24"` -> `"transformers"`; names compared as pip does (case, `-` and `_` alike)."""
    return re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0].strip().lower().replace("-", "_")


def _requirements(libraries: set[str] | None) -> str:
    """
    requirements.txt: larp_hf's own dependencies and those of the extra of each library the pipeline's parts come
    from (`larp_hf[diffusers]` for a diffusers VQModel tokenizer). `libraries` None (the pipeline could not be read):
    the extras of every tokenizer library larp_hf adapts, so that whichever it holds loads.
    """
    lines = _requirements_of(None)
    own = {_distribution_name(line) for line in lines} | {"larp_hf"}
    sections = []
    if libraries is None:
        wanted = [line for extra in TOKENIZER_LIBRARY_EXTRAS for line in _requirements_of(extra)]
        sections.append(("The pipeline could not be read here: every tokenizer library larp_hf adapts.", wanted))
    else:
        for library in sorted({name for name in libraries if _distribution_name(name) not in own}):
            from_extra = _requirements_of(library)
            if from_extra:
                sections.append((f"{library}: the library of a part of the pipeline (larp_hf[{library}]).", from_extra))
            else:
                sections.append((f"{library}: the library of a part of the pipeline (no larp_hf extra).", [library]))
    text = "# larp_hf's dependencies (larp_hf itself is the folder beside app.py); Gradio comes from sdk_version.\n"
    text += "\n".join(lines) + "\n"
    for comment, section in sections:
        text += f"# {comment}\n" + "\n".join(section) + "\n"
    return text


def _local_json(folder: Path) -> Callable[[str], dict | None]:
    def read(relative: str) -> dict | None:
        path = folder / relative
        return json.loads(path.read_text()) if path.is_file() else None

    return read


def _hub_libraries(repo_id: str, revision: str | None) -> set[str] | None:
    """`pipeline_libraries` of a Hub pipeline, reading its JSON files alone; None when its index cannot be read."""

    def read(relative: str) -> dict | None:
        try:
            return json.loads(Path(hf_hub_download(repo_id, relative, revision=revision)).read_text())
        except OSError:  # missing file, missing repo, no network or HF_HUB_OFFLINE: huggingface_hub's errors
            return None

    if read(PIPELINE_CONFIG_NAME) is None:
        return None
    return pipeline_libraries(read)


def export_space(
    pipeline: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    ship_pipeline: bool = False,
    revision: str | None = None,
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """
    Write a folder that `HfApi().upload_folder(repo_type="space", ...)` publishes as a working demo of `pipeline`:
    `app.py` (the page of `build_demo`), `requirements.txt`, `README.md` whose header says `sdk: gradio`,
    `app_file: app.py` and links the model, and a copy of the `larp_hf` package that wrote it. requirements.txt holds
    larp_hf's dependencies and the extra of each library the pipeline's parts come from (`pipeline_libraries`: e.g.
    diffusers for a `VQModel` tokenizer); for a Hub id it reads the pipeline's JSON files from the Hub, and lists every
    tokenizer library's extra when it cannot.

    Args:
        pipeline: a Hub model repo id, which the Space loads at start-up, or a local pipeline folder, which must be
            shipped.
        output_dir: the Space folder to write.
        ship_pipeline: copy the pipeline into `output_dir/pipeline/` (a Hub id is downloaded first), so the Space
            needs no model repo.
        revision: the Hub revision to load or download (Hub ids only).
        title: the Space's and the page's title (default: "LARP: " and the pipeline's name).
        overwrite: replace what an earlier export wrote in `output_dir` (its mark lists it); otherwise
            `output_dir` must be empty. A file of the user's under one of the export's names is refused, never
            deleted; other files are kept.

    `output_dir` may not be, contain or lie inside a local `pipeline`, and a shipped pipeline may hold no link that
    leads out of it (a Space is published whole). Returns the folder.
    """
    gradio = import_gradio()  # the Space runs the Gradio version the app was written against
    source = Path(pipeline)
    is_local = source.is_dir()
    if is_local and not is_pipeline_folder(source):
        raise ValueError(f"{source} is a folder but holds no LarpPipeline ({PIPELINE_CONFIG_NAME} is missing).")
    if is_local and not ship_pipeline:
        raise ValueError(
            f"`pipeline` {source} is a local folder, which a Space cannot read: pass `ship_pipeline` to copy it into "
            "the Space, or the Hub id it was pushed to."
        )
    if not is_local and not HUB_ID_PATTERN.match(str(pipeline)):
        raise ValueError(f"`pipeline` {pipeline!r} is neither a pipeline folder nor a Hub repo id (`org/name`).")
    if is_local and revision is not None:
        raise ValueError("`revision` names a Hub revision; leave it out for a local pipeline folder.")

    output_dir = Path(output_dir)
    if is_local:
        refusal = output_overlap(output_dir, {"`pipeline`": source}, "`output_dir`")
        if refusal:
            raise ValueError(refusal)
        _refuse_links_out(source, source)
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"`output_dir` {output_dir} is a file; pick another `output_dir` (a folder).")
    if folder_entries(output_dir) and not overwrite:
        raise ValueError(f"{output_dir} is not empty; pick another `output_dir` or pass `overwrite`.")
    written = [name for name in SPACE_FILES if name != SHIPPED_PIPELINE_DIR or ship_pipeline]
    with claim_folder(output_dir, "output_dir"):
        # Only what an earlier export wrote (its mark lists it) is replaced; a user's own file of one of these names
        # is refused, never deleted.
        ours = entries_written_by(output_dir, SPACE_COMMAND)
        present = set(folder_entries(output_dir))
        in_the_way = [name for name in SPACE_FILES if name in present and name not in ours]
        if in_the_way:
            raise ValueError(
                f"{output_dir} holds {names_list(in_the_way)}, which no earlier export wrote (its mark {OUTPUT_MARK} "
                "does not list them); `overwrite` replaces only what an export wrote. Move them away or pick another "
                "`output_dir`."
            )
        write_mark(output_dir, SPACE_COMMAND, ours | set(written))  # before the work: a failed export is ours too
        for name in sorted(ours & present):
            remove_entry(output_dir / name)
        _write_space(source, pipeline, output_dir, is_local, ship_pipeline, revision, title, gradio)
        write_mark(output_dir, SPACE_COMMAND, written)
    return output_dir


def _refuse_links_out(folder: Path, root: Path):
    """A folder copied for publishing follows no link out of `root` (a secret, a home folder), nor one in a loop."""
    links = links_out_of(folder, root)
    if links:
        shown = names_list([f"{link} -> {target}" for link, target in links])
        raise ValueError(
            f"`pipeline` {folder} holds links that lead out of it or loop, and a Space is published whole: {shown}. "
            "Replace each link by the file it stands for, or remove it."
        )


def _write_space(source, pipeline, output_dir, is_local, ship_pipeline, revision, title, gradio):
    model_id = None if is_local else str(pipeline)
    name = source.resolve().name if is_local else str(pipeline)
    title = title or f"LARP: {name}"
    if ship_pipeline:
        folder = source if is_local else Path(snapshot_download(str(pipeline), revision=revision))
        if not is_local:  # a Hub cache's snapshot is links into the repo's blobs: those are its own
            _refuse_links_out(folder, folder.parent.parent)
        shutil.copytree(folder, output_dir / SHIPPED_PIPELINE_DIR, ignore=shutil.ignore_patterns(".*"))
        index = read_pipeline_index(output_dir / SHIPPED_PIPELINE_DIR, "LarpPipeline", pipeline)
        card_info = index.get("model_card") or {}
        libraries = pipeline_libraries(_local_json(output_dir / SHIPPED_PIPELINE_DIR))
        pipeline_line = f"Path(__file__).parent / {SHIPPED_PIPELINE_DIR!r}"
        comment = "The pipeline folder shipped beside this file."
    else:
        card_info = {}
        libraries = _hub_libraries(model_id, revision)
        if libraries is None:
            logger.warning(
                "Could not read %s's %s from the Hub: requirements.txt lists the libraries of every tokenizer larp_hf "
                "adapts (%s), whichever the pipeline holds.", model_id, PIPELINE_CONFIG_NAME,
                ", ".join(TOKENIZER_LIBRARY_EXTRAS),
            )  # fmt: skip
        pipeline_line = repr(model_id)
        comment = "The pipeline's Hub model repo, downloaded when the Space starts."
    package = Path(__file__).resolve().parents[1]
    shutil.copytree(package, output_dir / "larp_hf", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))

    write_text_atomic(
        output_dir / "app.py",
        APP_TEMPLATE.format(
            name=name, version=__version__, pipeline_comment=comment, pipeline=pipeline_line,
            revision=None if ship_pipeline else revision, title=title, model_id=model_id or name,
        ),
    )  # fmt: skip
    write_text_atomic(output_dir / "requirements.txt", _requirements(libraries))

    dataset = hub_dataset_id(card_info.get("dataset"))
    card_data = SpaceCardData(
        title=title, emoji="🧵", colorFrom="indigo", colorTo="gray", sdk="gradio",
        sdk_version=gradio.__version__, python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
        app_file="app.py", pinned=False, license="apache-2.0", models=[model_id] if model_id else None,
        datasets=[dataset] if dataset else None, short_description="Sample images from a LARP pipeline",
    )  # fmt: skip
    body = README_BODY.format(
        title=title, version=__version__, gradio_version=gradio.__version__, api_name=API_NAME,
        model=f"[{model_id}](https://huggingface.co/{model_id})" if model_id else f"`{name}`",
        pipeline_text=f"\n- `{SHIPPED_PIPELINE_DIR}/` is the pipeline (a `LarpPipeline.save_pretrained` folder)."
        if ship_pipeline else f"\n- the pipeline is the Hub model `{model_id}`, loaded when the Space starts.",
    )  # fmt: skip
    write_text_atomic(output_dir / "README.md", str(SpaceCard(f"---\n{card_data.to_yaml()}\n---\n{body}")))


__all__ = ["TOKENIZER_LIBRARY_EXTRAS", "export_space", "pipeline_libraries"]

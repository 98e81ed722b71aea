"""Inputs mapped to outputs, every output path checked before any work (stdlib + Pillow; no PyTorch).

:func:`plan_jobs` expands folders of images and names each output; it refuses, before anything is read or
written, outputs that cannot be written or must not be replaced: an empty path, an unknown or missing suffix,
an output that is a folder, FIFO or device, an existing file that is not an image (unless ``force``), an
input as its own output (unless ``force``), two inputs writing one file, a folder that cannot be created or
written (:func:`metasr.fileio.check_output_path`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from metasr.runtime.image_io import ImageError
from metasr.runtime.image_write import IMAGE_SUFFIXES
from PIL import Image

from metasr.fileio import check_output_path

__all__ = ["Job", "plan_jobs"]


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def _check_target(target: Path, force: bool) -> None:
    """An output file that may be written (:func:`~metasr.fileio.check_output_path`), and an existing one only
    if it is an image (or ``force``)."""
    try:
        check_output_path(target)
    except ValueError as e:
        raise ImageError(str(e)) from None
    if target.is_file() and not target.is_symlink() and not force and not _is_image(target):
        raise ImageError(f"refusing to overwrite {target}: it is not an image (remove it, or use --force)")


def _is_image(path: Path) -> bool:
    try:
        with Image.open(path):
            return True
    except Exception:  # anything Pillow cannot open as an image
        return False


def _sources(inputs: list[str]) -> list[Path]:
    sources: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not found:
                raise ImageError(f"no images in folder {p}")
            sources += found
        elif p.is_file():
            sources.append(p)
        else:
            raise ImageError(f"no such file or folder: {p}")
    return sources


def plan_jobs(inputs: list[str], out: str, force: bool = False) -> list[Job]:
    """Map inputs (files, or folders of images) to outputs, checking every output before any work.

    ``out`` is a file when there is exactly one input file and ``out`` has an image suffix; a folder when it
    is one, ends with a path separator, or (several inputs) has no suffix. Refused: an empty ``out``, an
    unknown suffix (``result.txt``, ``result.gif``), a single input with no suffix (``-o result``: a file or a
    folder? say ``result.png`` or ``result/``), outputs that are folders, FIFOs or existing non-image files,
    and unwritable folders. An input is never a target unless ``force`` (which also allows replacing a
    non-image file).
    """
    if not out:
        raise ImageError("the output path is empty")
    sources = _sources(inputs)
    out_path = Path(out)
    suffix = out_path.suffix.lower()
    single = len(sources) == 1 and not Path(inputs[0]).is_dir()
    as_folder = out.endswith(("/", os.sep)) or out_path.is_dir()
    if as_folder:
        jobs = [Job(s, out_path / s.name) for s in sources]
    elif suffix in IMAGE_SUFFIXES:
        if not single:
            raise ImageError(f"{out_path} names a file; {len(sources)} inputs need an output folder")
        jobs = [Job(sources[0], out_path)]
    elif suffix:
        raise ImageError(
            f"cannot write {suffix} files; name a {'/'.join(sorted(set(IMAGE_SUFFIXES)))} file or a folder "
            f"(an existing one, or one written with a trailing /)"
        )
    elif out_path.exists() or out_path.is_symlink():
        raise ImageError(f"{out_path} exists and is not a folder (an output file needs one of {list(IMAGE_SUFFIXES)})")
    elif single:
        raise ImageError(f"-o {out} has no image suffix: name a file ({out}.png) or a folder ({out}/)")
    else:
        jobs = [Job(s, out_path / s.name) for s in sources]
    names = [j.target.resolve() for j in jobs]
    if len(set(names)) != len(names):
        raise ImageError("two inputs would write the same output file (same name in different folders)")
    inputs_resolved = {s.resolve() for s in sources}
    clash = [j.target for j in jobs if j.target.resolve() in inputs_resolved]
    if clash and not force:
        raise ImageError(f"refusing to overwrite input {clash[0]} (use --force)")
    for j in jobs:
        _check_target(j.target, force)
    return jobs

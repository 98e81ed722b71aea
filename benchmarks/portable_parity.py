"""Parity of the portable graphs with the two-graph runtime: uint8 level differences and output sizes.

    python benchmarks/portable_parity.py --artifacts DIR [--sets Set5 Set14] [--precisions fp32 fp16 int8 int8.cpu]
        [--backend ort|openvino] [--form scale|inv] [--scales 1.1 1.5 2 2.3 2.7 3.3 3.7 4] [--size 333x517]

Per set, precision and case it prints the largest difference in uint8 levels, the share of identical values
and whether every output size agreed, between ``metasr.portable.onnx`` (one call: uint8 image and scale in,
uint8 image out) and :class:`~metasr.runtime.pipeline.Pipeline` (the two-graph runtime, plan computed in
Python, tiled) on the same backend and precision. The exact-size case runs ``metasr.portable.size.onnx`` on the
centre ``--size-lr`` crop of each image at least that large (default 150x240, the scale 333/150 = 2.22 with 111
phases: an exact size from a whole image needs a scale with hundreds of phases, whose untiled filters take GBs;
docs/portable.md) against the runtime's
``scale_for_size`` output centre-cropped, as ``metasr upscale --size``. Then the float32 edge cases that
``runtime/projection.py`` documents (sizes only, on random images). Shared data: METASR_DATA.

``--form`` (default: the backend's, :data:`~metasr.runtime.backends.BACKEND_PORTABLE_FORMS`): "scale" runs the
float64 graphs above, "inv" ``metasr.portable.inv.onnx`` (output size and float32(1 / scale) in; OpenVINO's form).
The inv form has no size graph: its exact-size case runs it at the ``scale_for_size`` scale and centre-crops, as
``metasr upscale --size --graph portable`` does there. ``int8.cpu`` / ``int8.trt``: INT8 with that Q/DQ form of the
feature graph (both the two-graph and the portable runs), whatever the backend's own (``int8``) is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from metasr.runtime.backends import BACKEND_PORTABLE_FORMS, BACKEND_TARGETS, open_backend
from metasr.runtime.batch import scale_for_size
from metasr.runtime.manifest import Manifest
from metasr.runtime.pipeline import Pipeline
from metasr.runtime.projection import output_size
from PIL import Image

from metasr.bundled import find_shared_data
from metasr.cli.common import parse_pair

SCALES = (1.1, 1.5, 2.0, 2.3, 2.7, 3.3, 3.7, 4.0)
# (h, w, scale) where float32 / float64 rounding decides the size or the projection (runtime/projection.py)
EDGE_CASES = ((45, 45, 1.4), (50, 50, 2.3), (13, 7, 2.3), (10, 10, 2.7), (27, 27, 3.7), (100, 3, 1.1))


class Tally:
    """Running max level difference, identical share and size agreement."""

    def __init__(self) -> None:
        self.max_diff, self.same, self.total, self.sizes_ok, self.n = 0, 0, 0, True, 0

    def add(self, got: np.ndarray, ref: np.ndarray) -> None:
        self.n += 1
        if got.shape != ref.shape:
            self.sizes_ok = False
            return
        d = np.abs(got.astype(np.int16) - ref.astype(np.int16))
        self.max_diff = max(self.max_diff, int(d.max()))
        self.same += int((d == 0).sum())
        self.total += d.size

    def __str__(self) -> str:
        share = 100.0 * self.same / max(self.total, 1)
        return f"max {self.max_diff} level(s), {share:.4f}% identical, sizes {'equal' if self.sizes_ok else 'DIFFER'}"


def _images(data: Path, name: str) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in sorted((data / name).iterdir()) if p.suffix == ".png"]


def _crop(img: np.ndarray, h: int, w: int) -> np.ndarray:
    y, x = max(0, (img.shape[0] - h) // 2), max(0, (img.shape[1] - w) // 2)
    return np.ascontiguousarray(img[y : y + h, x : x + w])


def run(art: Path, sets: list[str], precisions: list[str], backend: str, form: str, scales, size, size_lr) -> None:
    data = find_shared_data()
    if data is None:
        raise SystemExit("shared data not found (set METASR_DATA)")
    manifest = Manifest.read(art)
    default_target = BACKEND_TARGETS[backend]
    for label in precisions:
        precision, _, qdq = label.partition(".")
        BACKEND_TARGETS[backend] = {"cpu": "ort-cpu", "trt": "tensorrt"}.get(qdq, default_target)
        tag = f"{backend} {form} {label}"
        portable_opts = {"precision": precision, "graph": "portable", "portable_form": form}
        with Pipeline(art, backend, precision=precision) as two, Pipeline(art, backend, **portable_opts) as portable:
            sized = None
            if form == "scale":
                spec = manifest.graph("portable-size", "onnx", precision, BACKEND_TARGETS[backend])
                sized = open_backend(backend, spec, (art / spec.file).read_bytes())
            print(f"{tag}: {portable._portable.spec.file} against {two.feature_spec.file} + {two.upscale_spec.file}")
            for name in sets:
                images = _images(data, name)
                for scale in scales:
                    t = Tally()
                    for img in images:
                        t.add(portable(img, scale), two(img, scale))
                    print(f"{tag} {name} x{scale:g} ({t.n} images): {t}", flush=True)
                t = Tally()
                th, tw = size
                for img in images:
                    if img.shape[0] < size_lr[0] or img.shape[1] < size_lr[1]:
                        continue  # (Set5 woman, 228 wide: another scale, 517/228, with 517 phases)
                    lr = _crop(img, *size_lr)
                    r = scale_for_size(lr.shape[0], lr.shape[1], tw, th, two.max_scale)
                    full = two(lr, r)
                    y0, x0 = (full.shape[0] - th) // 2, (full.shape[1] - tw) // 2
                    if sized is not None:
                        got = sized.infer({"image": lr, "size": np.array([th, tw], dtype=np.int64)})["sr_image"]
                    else:  # the inv form: the covering scale's whole output, centre-cropped here
                        got = portable(lr, r)[y0 : y0 + th, x0 : x0 + tw]
                    t.add(got, full[y0 : y0 + th, x0 : x0 + tw])
                print(f"{tag} {name} size {tw}x{th} from {size_lr[1]}x{size_lr[0]}: {t}", flush=True)
            if sized is not None:
                sized.close()
            t = Tally()
            rng = np.random.default_rng(0)
            for h, w, scale in EDGE_CASES:
                img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
                got = portable(img, scale)
                assert got.shape[:2] == output_size(h, w, scale)
                t.add(got, two(img, scale))
            print(f"{tag} float32 edge cases {EDGE_CASES}: {t}", flush=True)
    BACKEND_TARGETS[backend] = default_target


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", required=True, type=Path)
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    precisions = ["fp32", "fp16", "int8", "int8.cpu", "int8.trt"]  # int8: the backend's Q/DQ form
    ap.add_argument("--precisions", nargs="+", default=["fp32"], choices=precisions)
    ap.add_argument("--backend", default="ort", choices=["ort", "openvino"])
    ap.add_argument("--form", choices=["scale", "inv"], help="the portable form (default: the backend's)")
    ap.add_argument("--scales", nargs="+", type=float, default=list(SCALES))
    ap.add_argument("--size", default="333x517", help="exact output size HxW")
    ap.add_argument("--size-lr", default="150x240", help="LR crop (HxW) the exact size is made from")
    args = ap.parse_args()
    form = args.form or BACKEND_PORTABLE_FORMS.get(args.backend, "scale")
    run(args.artifacts, args.sets, args.precisions, args.backend, form, args.scales,
        parse_pair(args.size, "--size", "333x517"), parse_pair(args.size_lr, "--size-lr", "150x240"))  # fmt: skip


if __name__ == "__main__":
    main()

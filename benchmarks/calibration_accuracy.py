"""Accuracy of the calibrated precisions against FP32 on Set5 and Set14 (ONNX Runtime CPU, all forms).

    python benchmarks/calibration_accuracy.py --artifacts artifacts/small   # after metasr calibrate (int8, fp16)

Prints, per variant and test set, each scale's Y-PSNR change against FP32 (dB) / the lowest PSNR of an image's
output against the FP32 output (dB), then the worst cell per variant. LR images: the Set5_LR convention at
x2/x3/x4, the official Meta-SR rule at x1.5/x2.5/x3.5 (metasr.calibration.evaluate).
"""

from __future__ import annotations

import argparse
import os
import time

from metasr.calibration.evaluate import Variant, evaluate_precisions, format_cells

from metasr.bundled import find_shared_data

VARIANTS = {
    "fp16": Variant("fp16", "fp16"),
    "int8-cpu": Variant("int8 CPU form", "int8", "ort-cpu"),
    "int8-trt": Variant("int8 TensorRT form", "int8", "tensorrt"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", required=True)
    ap.add_argument("--data", default=str(find_shared_data() or "../shared/data"))
    ap.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    ap.add_argument("--scales", type=float, nargs="+", default=[2.0, 3.0, 4.0, 1.5, 2.5, 3.5])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    t0 = time.perf_counter()
    cells = evaluate_precisions(
        args.artifacts,
        [os.path.join(args.data, s) for s in args.sets],
        args.scales,
        [VARIANTS[v] for v in args.variants],
    )
    print(format_cells(cells))
    print(f"\n({time.perf_counter() - t0:.0f} s; load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()

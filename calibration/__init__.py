"""FP16 conversion and INT8 post-training quantization of the exported graphs (`metasr calibrate`).

Needs numpy, onnx, onnxruntime and onnxconverter-common (the `onnx` extra), not torch. Entry point:
:func:`metasr.calibration.calibrate.calibrate`; see docs/int8.md and docs/calibration-gate.md.
"""

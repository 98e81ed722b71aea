"""FP16 conversion and INT8 post-training quantization (planned: see the project issues)."""

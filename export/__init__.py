"""PyTorch -> ONNX export and TensorRT engine building (planned: see the project issues)."""

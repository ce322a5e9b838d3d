"""pdd.export — PyTorch → ONNX graphs → TensorRT engines; the engine bundle writer."""

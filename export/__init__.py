"""Export: trained PyTorch checkpoints -> a verified ONNX model bundle (see models/README.md)."""

__version__ = "0.1.0"

"""Errors a user can trigger by handing the frontend a model it cannot compile."""

from __future__ import annotations


class ModelError(ValueError):
    """The model is malformed, unreadable, or cannot be made static."""


class UnsupportedOpError(ModelError):
    """The model uses an ONNX op (or an op variant) that ember does not import."""

    def __init__(self, op_type: str, node_name: str, opset: int, detail: str = ""):
        self.op_type = op_type
        self.node_name = node_name
        self.opset = opset
        message = f"unsupported ONNX op {op_type} (node '{node_name}', opset {opset})"
        super().__init__(f"{message}: {detail}" if detail else message)

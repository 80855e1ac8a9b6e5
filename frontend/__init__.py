"""ONNX -> graph dialect.

`onnx_importer.py` is the driver (`import_onnx`, `import_model`); converters, one module per ONNX
family, are in `ops/` and use the context in `context.py` (see frontend/ops/__init__.py for
which op is where).
"""

from ember.frontend.errors import ModelError, UnsupportedOpError
from ember.frontend.onnx_importer import ImportedModel, import_model, import_onnx, io_names

__all__ = [
    "ImportedModel",
    "ModelError",
    "UnsupportedOpError",
    "import_model",
    "import_onnx",
    "io_names",
]

"""ONNX -> graph dialect (see onnx_importer.py for the module layout it produces)."""

from ember.frontend.errors import ModelError, UnsupportedOpError
from ember.frontend.onnx_importer import ImportedModel, import_model, import_onnx, io_names

# Converter modules register themselves with the importer when imported.
from ember.frontend import ops_structural  # noqa: E402, F401  # isort: skip
from ember.frontend import ops_elementwise  # noqa: E402, F401  # isort: skip
from ember.frontend import ops_control_flow  # noqa: E402, F401  # isort: skip
from ember.frontend import ops_recurrent  # noqa: E402, F401  # isort: skip
from ember.frontend import ops_quantization  # noqa: E402, F401  # isort: skip

__all__ = [
    "ImportedModel",
    "ModelError",
    "UnsupportedOpError",
    "import_model",
    "import_onnx",
    "io_names",
]

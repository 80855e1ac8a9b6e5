"""ember: an MLIR-style compiler that lowers ONNX models to native CPU code.

    import ember
    model = ember.compile("model.onnx")          # JIT: ONNX -> dialects -> LLVM -> native
    model = ember.compile("m.onnx", input_shapes={"x": [1, 128]})  # pin symbolic input dims
    outputs = model.run({"input": x})             # dict of numpy arrays
    y, = model(x)                                 # positional form
    session = ember.InferenceSession("model.onnx")  # onnxruntime's API: `import ember as ort`
    report = ember.check("model.onnx")            # every problem to fix before compiling
    ember.quantize("model.onnx", "model.int8.onnx", calibration="calib/")  # int8 QDQ model

The compiler is imported lazily: `import ember.runtime` (loading an ahead-of-time artifact)
must work where xDSL and llvmlite are not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ember.engine.check import CheckReport, check
    from ember.engine.compile import CompiledModel, compile
    from ember.engine.predictor import Config, Predictor, create_predictor
    from ember.engine.quantize import quantize
    from ember.engine.session import (
        ExecutionMode,
        GraphOptimizationLevel,
        InferenceSession,
        RunOptions,
        SessionOptions,
        get_available_providers,
    )
    from ember.engine.specialize import SpecializingModel
    from ember.engine.structured import StructuredModel

_LAZY = {
    "compile": ("ember.engine.compile", "compile"),
    "CompiledModel": ("ember.engine.compile", "CompiledModel"),
    "SpecializingModel": ("ember.engine.specialize", "SpecializingModel"),
    "StructuredModel": ("ember.engine.structured", "StructuredModel"),
    "Config": ("ember.engine.predictor", "Config"),
    "Predictor": ("ember.engine.predictor", "Predictor"),
    "create_predictor": ("ember.engine.predictor", "create_predictor"),
    "check": ("ember.engine.check", "check"),
    "quantize": ("ember.engine.quantize", "quantize"),
    "CheckReport": ("ember.engine.check", "CheckReport"),
    # onnxruntime's session API (engine/session.py): `import ember as ort` runs ort code.
    **{
        name: ("ember.engine.session", name)
        for name in (
            "InferenceSession",
            "SessionOptions",
            "RunOptions",
            "GraphOptimizationLevel",
            "ExecutionMode",
            "get_available_providers",
        )
    },
    **{
        name: ("ember.runtime.errors", name)
        for name in (
            "EmberError",
            "ModelError",
            "UnsupportedOpError",
            "RuntimeOperandError",
            "ResourceLimitError",
            "InputError",
            "ArtifactError",
            "KernelError",
            "InternalCompilerError",
            "PassOptionError",
        )
    },
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ember' has no attribute '{name}'")


__all__ = [
    "ArtifactError",
    "CheckReport",
    "CompiledModel",
    "Config",
    "EmberError",
    "ExecutionMode",
    "GraphOptimizationLevel",
    "InferenceSession",
    "InputError",
    "InternalCompilerError",
    "KernelError",
    "ModelError",
    "PassOptionError",
    "Predictor",
    "ResourceLimitError",
    "RunOptions",
    "SessionOptions",
    "SpecializingModel",
    "StructuredModel",
    "UnsupportedOpError",
    "__version__",
    "check",
    "compile",
    "create_predictor",
    "get_available_providers",
    "quantize",
]

"""ember: an MLIR-style compiler that lowers ONNX models to native CPU code.

    import ember
    model = ember.compile("model.onnx")          # JIT: ONNX -> dialects -> LLVM -> native
    model = ember.compile("m.onnx", input_shapes={"x": [1, 128]})  # pin symbolic input dims
    outputs = model.run({"input": x})             # dict of numpy arrays
    y, = model(x)                                 # positional form

The compiler is imported lazily: `import ember.runtime` (loading an ahead-of-time artifact)
must work where xDSL and llvmlite are not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ember.tools.compile import CompiledModel, compile
    from ember.tools.engine import Config, Predictor, create_predictor
    from ember.tools.specialize import SpecializingModel

_LAZY = {
    "compile": ("ember.tools.compile", "compile"),
    "CompiledModel": ("ember.tools.compile", "CompiledModel"),
    "SpecializingModel": ("ember.tools.specialize", "SpecializingModel"),
    "Config": ("ember.tools.engine", "Config"),
    "Predictor": ("ember.tools.engine", "Predictor"),
    "create_predictor": ("ember.tools.engine", "create_predictor"),
    **{
        name: ("ember.runtime.errors", name)
        for name in (
            "EmberError",
            "ModelError",
            "UnsupportedOpError",
            "ResourceLimitError",
            "InputError",
            "ArtifactError",
            "KernelError",
            "InternalCompilerError",
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
    "CompiledModel",
    "Config",
    "EmberError",
    "InputError",
    "InternalCompilerError",
    "KernelError",
    "ModelError",
    "Predictor",
    "ResourceLimitError",
    "SpecializingModel",
    "UnsupportedOpError",
    "__version__",
    "compile",
    "create_predictor",
]

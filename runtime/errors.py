"""ember's error classes: every refusal a user can trigger is one of these.

They live in the runtime because the runtime imports nothing from the compiler; the compiler's
stages raise the same classes, so `except ember.EmberError` catches every refusal, from import
to a native kernel's bounds check. Each also subclasses the builtin a caller would expect
(`ValueError` for bad models and inputs, `RuntimeError` for failures while running).
"""

from __future__ import annotations


class EmberError(Exception):
    """Base of every error ember raises on purpose."""


class ModelError(EmberError, ValueError):
    """The model is malformed, violates the ONNX spec, or cannot be compiled as given."""


class UnsupportedOpError(ModelError):
    """The model uses an ONNX op (or an op variant) that ember does not import."""

    def __init__(self, op_type: str, node_name: str, opset: int, detail: str = ""):
        self.op_type = op_type
        self.node_name = node_name
        self.opset = opset
        message = f"unsupported ONNX op {op_type} (node '{node_name}', opset {opset})"
        super().__init__(f"{message}: {detail}" if detail else message)


class RuntimeOperandError(UnsupportedOpError):
    """An operand that must be known at compile time (a shape, axes, k, bounds, ...) is computed
    from graph inputs at run time.

    `inputs` names the graph inputs it is computed from (empty when it depends on none that a
    caller could supply, e.g. only on values computed inside the graph): compiling again with
    those inputs' values given as constants (value specialisation, engine/specialize.py) removes
    this refusal when every op between them and the operand folds.
    """

    def __init__(
        self, op_type: str, node_name: str, opset: int, detail: str, inputs: tuple[str, ...]
    ):
        self.inputs = inputs
        self.detail = detail
        if inputs:
            detail += f"; it is computed from graph input(s) {', '.join(map(repr, inputs))}"
        super().__init__(op_type, node_name, opset, detail)


class ResourceLimitError(ModelError):
    """A tensor, arena or constant would exceed a size limit (the message names it and the bytes)."""


class InputError(EmberError, ValueError):
    """A run was given inputs that do not match the compiled model (name, shape, dtype, type)."""


class ArtifactError(EmberError, ValueError):
    """An artifact that cannot be loaded on this machine (corrupt, tampered, incompatible, wrong CPU)."""


class KernelError(EmberError, RuntimeError):
    """A compiled kernel refused its data at run time (an index out of range, ...).

    When known: the ONNX `op_type` and `node_name` of the failing kernel and the offending
    `value` (see runtime/status.py).
    """

    def __init__(
        self,
        message: str,
        *,
        op_type: str | None = None,
        node_name: str | None = None,
        value: int | None = None,
    ):
        self.op_type = op_type
        self.node_name = node_name
        self.value = value
        super().__init__(message)


class PassOptionError(EmberError, ValueError):
    """A pass option out of range, or one the compile target cannot honour (the message names
    the pass, the option and the values it takes)."""


class InternalCompilerError(EmberError, RuntimeError):
    """ember broke its own invariants while compiling (a bug to report, not a user error)."""

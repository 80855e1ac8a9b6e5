"""Weights live outside the IR: ops name them, the WeightStore holds the numpy buffers.

The compile context that carries a program's WeightStore (with the Target) through the passes
is `ember.core.context.EmberContext`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Attribute
from xdsl.irdl import prop_def


class WeightStore:
    """Named numpy buffers referenced from `graph.constant` / `kernel.weight` ops."""

    def __init__(self, arrays: dict[str, np.ndarray] | None = None):
        self._arrays: dict[str, np.ndarray] = {}
        self._fresh = itertools.count()
        for name, array in (arrays or {}).items():
            self[name] = array

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(f"weight '{name}' is not in the weight store") from None

    def __setitem__(self, name: str, array: np.ndarray) -> None:
        # ascontiguousarray would turn a 0-d array into shape (1,).
        self._arrays[name] = np.ascontiguousarray(array).reshape(np.shape(array))

    def __delitem__(self, name: str) -> None:
        del self._arrays[name]

    def __contains__(self, name: object) -> bool:
        return name in self._arrays

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def add(self, array: np.ndarray, hint: str = "const") -> str:
        """Store `array` under a fresh name derived from `hint`; return the name."""
        name = hint
        while name in self._arrays:
            name = f"{hint}.{next(self._fresh)}"
        self[name] = array
        return name

    def copy(self) -> WeightStore:
        clone = WeightStore()
        clone._arrays = dict(self._arrays)
        clone._fresh = itertools.count(next(self._fresh))
        return clone

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self._arrays.values())


class WeightRef:
    """An op naming an entry of the WeightStore by `ref` (graph.constant, kernel.weight): the
    reference interpreter reads its value from the store."""

    ref = prop_def(StringAttr)
    assembly_format = "$ref attr-dict `:` type($output)"

    def __init__(self, ref: str, result_type: Attribute):
        super().__init__(properties={"ref": StringAttr(ref)}, result_types=[result_type])  # type: ignore[call-arg]

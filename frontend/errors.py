"""Errors a user can trigger by handing the frontend a model it cannot compile.

The classes are defined in `ember.runtime.errors` (the one module every stage may import) and
re-exported here for the frontend's callers.
"""

from __future__ import annotations

from ember.runtime.errors import (
    ModelError,
    ResourceLimitError,
    RuntimeOperandError,
    UnsupportedOpError,
)

__all__ = ["ModelError", "ResourceLimitError", "RuntimeOperandError", "UnsupportedOpError"]

"""The small AOT artifact shared by the runtime and tools tests."""

from tests.runtime.util import small_artifact

__all__ = ["small_artifact"]

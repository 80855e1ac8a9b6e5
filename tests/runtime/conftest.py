"""The small AOT artifact shared by the runtime and tools tests."""

from ember.tests.runtime.util import small_artifact

__all__ = ["small_artifact"]

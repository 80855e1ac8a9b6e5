"""The thin runtime: call a compiled entry point on numpy buffers.

Imports only numpy and ctypes, never the compiler, so an ahead-of-time artifact runs where xDSL
and llvmlite are not installed. The entry point's ABI is
`void main(inputs..., outputs..., arena, weights)`, every argument a pointer.

    exe = ember.runtime.load("out/")          # an artifact written by `ember compile`
    outputs = exe.run({"input": x})
"""

from ember.runtime.artifact import ArtifactError, LoadedArtifact, load, read_manifest
from ember.runtime.executable import Executable, Manifest, TensorSpec

__all__ = [
    "ArtifactError",
    "Executable",
    "LoadedArtifact",
    "Manifest",
    "TensorSpec",
    "load",
    "read_manifest",
]

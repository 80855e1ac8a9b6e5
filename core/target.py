"""What the code is compiled for: CPU name, features, SIMD width, threads.

Passes choose tile sizes and vector widths from the Target; codegen hands its cpu name and
features to LLVM. Lives in passes/ so that both passes and codegen can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ember.runtime.threads import default_threads


@dataclass(frozen=True)
class Target:
    cpu: str = "x86-64-v3"
    features: str = ""
    # float32 lanes in one SIMD register: 8 (AVX2) or 16 (AVX-512).
    vector_width: int = 8
    # Architectural SIMD registers: 16 (AVX2) or 32 (AVX-512); drives register blocking.
    vector_registers: int = 16
    threads: int = field(default_factory=default_threads)

    @property
    def has_avx512(self) -> bool:
        return self.vector_width == 16


def host_target(threads: int | None = None) -> Target:
    """The machine we are running on, as LLVM sees it."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    avx512 = bool(features.get("avx512f")) and bool(features.get("avx512vl"))
    return Target(
        cpu=llvm.get_host_cpu_name(),
        features=features.flatten(),
        vector_width=16 if avx512 else 8,
        vector_registers=32 if avx512 else 16,
        threads=threads or default_threads(),
    )


def host_cpu_description() -> str:
    """The host as people name it, then as LLVM does (which codegen uses):
    "x86_64_v4 (avx512 + vnni + bf16), LLVM cpu znver5"."""
    import llvmlite.binding as llvm

    from ember.runtime.cpu_features import host_microarchitecture

    return f"{host_microarchitecture()}, LLVM cpu {llvm.get_host_cpu_name()}"


def named_target(cpu: str, threads: int | None = None) -> Target:
    """A portable target by LLVM cpu name, e.g. "x86-64-v3" (AVX2) or "x86-64-v4" (AVX-512)."""
    avx512 = cpu in ("x86-64-v4", "skylake-avx512", "icelake-server", "sapphirerapids", "znver4")
    return Target(
        cpu=cpu,
        features="",
        vector_width=16 if avx512 else 8,
        vector_registers=32 if avx512 else 16,
        threads=threads or default_threads(),
    )

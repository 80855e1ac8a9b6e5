"""Which instruction-set extensions this CPU has, and which ones an artifact needs.

Reads /proc/cpuinfo rather than executing cpuid-probing code: running a probe compiled for the
wrong CPU is exactly the SIGILL we are trying to avoid. LLVM and Linux spell feature names
differently (`sse4.1` vs `sse4_1`, `lzcnt` vs `abm`), so requirements are translated through
`LLVM_TO_CPUINFO` first. Features absent from that table carry no instructions the code
generator emits for tensor code (tuning flags, `64bit`, ...) and are not checked.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable

# LLVM feature name -> flag in /proc/cpuinfo (x86).
LLVM_TO_CPUINFO: dict[str, str] = {
    "cmov": "cmov",
    "cx8": "cx8",
    "cx16": "cx16",
    "mmx": "mmx",
    "fxsr": "fxsr",
    "sse": "sse",
    "sse2": "sse2",
    "sse3": "pni",
    "ssse3": "ssse3",
    "sse4.1": "sse4_1",
    "sse4.2": "sse4_2",
    "sse4a": "sse4a",
    "popcnt": "popcnt",
    "sahf": "lahf_lm",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "fma4": "fma4",
    "f16c": "f16c",
    "bmi": "bmi1",
    "bmi2": "bmi2",
    "lzcnt": "abm",
    "movbe": "movbe",
    "xsave": "xsave",
    "xsaveopt": "xsaveopt",
    "xsavec": "xsavec",
    "xsaves": "xsaves",
    "aes": "aes",
    "pclmul": "pclmulqdq",
    "vaes": "vaes",
    "vpclmulqdq": "vpclmulqdq",
    "gfni": "gfni",
    "sha": "sha_ni",
    "adx": "adx",
    # Not rdrnd/rdseed: LLVM emits them only for their intrinsics, which ember never calls, and
    # Linux hides rdseed on Zen 5 (an erratum) while cpuid still reports it, so a host build
    # that listed it could not be loaded on the machine that compiled it.
    "avxvnni": "avx_vnni",
    "avx512f": "avx512f",
    "avx512cd": "avx512cd",
    "avx512dq": "avx512dq",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512ifma": "avx512ifma",
    "avx512vbmi": "avx512vbmi",
    "avx512vbmi2": "avx512_vbmi2",
    "avx512vnni": "avx512_vnni",
    "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq",
    "avx512bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16",
    "amx-tile": "amx_tile",
    "amx-int8": "amx_int8",
    "amx-bf16": "amx_bf16",
}

# What the portable x86-64 micro-architecture levels promise (psABI), as LLVM features.
_V2 = ("cx16", "sahf", "popcnt", "sse3", "sse4.1", "sse4.2", "ssse3")
_V3 = (*_V2, "avx", "avx2", "bmi", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave")
_V4 = (*_V3, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
_ICELAKE = (
    *_V4,
    *("avx512vnni", "avx512vbmi", "avx512vbmi2", "avx512bitalg", "avx512vpopcntdq"),
    *("avx512ifma", "vaes", "vpclmulqdq", "gfni"),
)
# Targets `ember compile --target-cpu` accepts besides `host`: the portable levels and the
# micro-architectures whose feature sets are spelled out here (LLVM implies them from the name,
# and the manifest must list them for the loader to check).
CPU_LEVEL_FEATURES: dict[str, tuple[str, ...]] = {
    "x86-64": ("cmov", "cx8", "fxsr", "mmx", "sse", "sse2"),
    "x86-64-v2": _V2,
    "x86-64-v3": _V3,
    "x86-64-v4": _V4,
    "haswell": _V3,
    "broadwell": (*_V3, "adx", "rdseed"),
    "skylake": (*_V3, "adx", "rdseed"),
    "alderlake": (*_V3, "adx", "rdseed", "avxvnni", "vaes", "vpclmulqdq", "gfni"),
    "skylake-avx512": _V4,
    "cascadelake": (*_V4, "avx512vnni"),
    "icelake-server": _ICELAKE,
    "sapphirerapids": (
        *_ICELAKE,
        "avx512bf16",
        "avx512fp16",
        "avxvnni",
        "amx-tile",
        "amx-int8",
        "amx-bf16",
    ),
    "znver1": (*_V3, "sse4a"),
    "znver2": (*_V3, "sse4a"),
    "znver3": (*_V3, "sse4a", "vaes", "vpclmulqdq"),
    "znver4": (*_ICELAKE, "sse4a", "avx512bf16"),
}


def required_features(cpu: str, features: str | Iterable[str]) -> list[str]:
    """The checkable LLVM features code compiled for (`cpu`, `features`) may use.

    `features` is LLVM's comma-separated `+a,-b` string (or its items); only enabled ones count.
    The host target carries an explicit feature list; a named cpu (`x86-64-v3`, `znver3`)
    implies its features, expanded from `CPU_LEVEL_FEATURES`.
    """
    items = features.split(",") if isinstance(features, str) else list(features)
    enabled = {f[1:] for f in items if f.startswith("+")}
    enabled.update(CPU_LEVEL_FEATURES.get(cpu, ()))
    return sorted(f for f in enabled if f in LLVM_TO_CPUINFO)


def host_cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str] | None:
    """The `flags` of the first processor in /proc/cpuinfo, or None where it cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        return None
    return None


def missing_features(required: Iterable[str], flags: set[str] | None = None) -> list[str]:
    """LLVM names of `required` features that the host's cpuinfo flags lack.

    Returns [] when the flags cannot be read (not Linux): the check is then skipped.
    """
    flags = host_cpu_flags() if flags is None else flags
    if flags is None:
        return []
    return [f for f in required if f in LLVM_TO_CPUINFO and LLVM_TO_CPUINFO[f] not in flags]


def host_arch() -> str:
    return platform.machine().lower()


# The portable x86-64 levels, highest first, as archspec names them (LLVM: x86-64-v4).
_LEVELS = ("x86-64-v4", "x86-64-v3", "x86-64-v2", "x86-64")


def host_isa_summary(flags: set[str] | None = None) -> str:
    """The host's widest vector ISA and its dot-product / matrix extras from cpuinfo flags:
    "avx512 + vnni + bf16", "avx2 + vnni", "" when the flags cannot be read."""
    flags = host_cpu_flags() if flags is None else flags
    if not flags:
        return ""
    if "avx512f" in flags:
        parts = ["avx512"]
    elif "avx2" in flags:
        parts = ["avx2"]
    elif "sse4_2" in flags:
        parts = ["sse4.2"]
    elif "asimd" in flags:  # AArch64's cpuinfo `Features`
        parts = ["neon"] + (["sve"] if "sve" in flags else [])
    else:
        parts = []
    extras = {
        "vnni": ("avx512_vnni", "avx_vnni"),
        "bf16": ("avx512_bf16",),
        "fp16": ("avx512_fp16",),
        "amx": ("amx_tile",),
    }
    parts += [name for name, spellings in extras.items() if any(s in flags for s in spellings)]
    return " + ".join(parts)


def host_level(flags: set[str] | None = None) -> str | None:
    """The highest portable x86-64 level (archspec's spelling, `x86_64_v3`) the host's
    cpuinfo flags meet, or None (not x86, flags unreadable)."""
    flags = host_cpu_flags() if flags is None else flags
    if not flags or host_arch() not in ("x86_64", "amd64"):
        return None
    for level in _LEVELS:
        if not missing_features(CPU_LEVEL_FEATURES[level], flags):
            return level.replace("-", "_")
    return None


def host_microarchitecture() -> str:
    """The host CPU for people: "zen5 (x86_64_v4, avx512 + vnni)".

    The micro-architecture name comes from archspec (the Spack/pip library that names CPUs
    from cpuinfo), when it is installed; a CPU it only knows by its features (in a VM that
    hides some flags) is named by its generic level. Code generation keeps LLVM's cpu name.
    """
    flags = host_cpu_flags()
    name: str | None = None
    level = host_level(flags)
    try:
        import archspec.cpu

        host = archspec.cpu.host()
        name = host.name
        level = host.generic.name if host.generic.name != "x86_64" or level is None else level
    except Exception:  # not installed, or an unknown machine: the level is still right
        pass
    details = [d for d in (level if level != name else None, host_isa_summary(flags)) if d]
    name = name or level or host_arch()
    return f"{name} ({', '.join(details)})" if details else name

"""The host CPU as people name it: archspec's micro-architecture, the x86-64 level, the ISA."""

from __future__ import annotations

import json

import pytest

from ember.runtime import cpu_features
from ember.runtime.cpu_features import (
    CPU_LEVEL_FEATURES,
    LLVM_TO_CPUINFO,
    host_isa_summary,
    host_level,
    host_microarchitecture,
)


def flags_of(level: str, *extra: str) -> set[str]:
    return {LLVM_TO_CPUINFO[f] for f in CPU_LEVEL_FEATURES[level]} | set(extra)


@pytest.mark.parametrize(
    ("flags", "level", "isa"),
    [
        (flags_of("x86-64-v2"), "x86_64_v2", "sse4.2"),
        (flags_of("x86-64-v3"), "x86_64_v3", "avx2"),
        (flags_of("x86-64-v3", "avx_vnni"), "x86_64_v3", "avx2 + vnni"),
        (flags_of("znver4"), "x86_64_v4", "avx512 + vnni + bf16"),
        (flags_of("sapphirerapids"), "x86_64_v4", "avx512 + vnni + bf16 + fp16 + amx"),
        # AVX-512F without the rest of v4 (Knights Landing) is a v3 machine with avx512.
        (flags_of("x86-64-v3", "avx512f"), "x86_64_v3", "avx512"),
    ],
)
def test_level_and_isa_from_cpuinfo_flags(
    flags: set[str], level: str, isa: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpu_features, "host_arch", lambda: "x86_64")
    assert host_level(flags) == level
    assert host_isa_summary(flags) == isa


def test_unreadable_flags_name_no_level() -> None:
    assert host_level(set()) is None and host_isa_summary(set()) == ""


def test_host_description_names_the_level_and_isa() -> None:
    flags = cpu_features.host_cpu_flags()
    if flags is None or cpu_features.host_arch() != "x86_64":
        pytest.skip("needs an x86-64 Linux host")
    text = host_microarchitecture()
    # archspec names the micro-architecture (or just the level); a level is always there.
    assert host_level(flags) is not None and "x86_64" in text
    assert f"{host_isa_summary(flags)})" in text


def test_check_bench_and_manifest_show_the_host(tmp_path, capsys) -> None:
    import onnx

    from ember.tests.tools.test_profile import twin_convs
    from ember.tools import cli

    path = tmp_path / "twin.onnx"
    onnx.save(twin_convs(4, 4), str(path))
    described = host_microarchitecture()
    assert cli.main(["check", str(path)]) == 0
    assert f"host: {described}, LLVM cpu " in capsys.readouterr().out
    assert cli.main(["compile", str(path), "-o", str(tmp_path / "twin.ember")]) == 0
    manifest = json.loads((tmp_path / "twin.ember" / "manifest.json").read_text())
    assert manifest["target"]["built_on"] == described
    capsys.readouterr()
    assert cli.main(["bench", str(tmp_path / "twin.ember"), "--runs", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["machine"]["microarchitecture"] == described

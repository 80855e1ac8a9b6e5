"""The compile driver logs stage and pass timings at debug level on the `ember` logger."""

from __future__ import annotations

import logging

import onnx
import pytest

from ember.core.target import host_target
from ember.engine.compile import compile_program
from ember.tests.tools.test_profile import twin_convs
from ember.tools import cli


def test_passes_and_import_are_timed_at_debug_level(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="ember"):
        compile_program(twin_convs(4, 4), host_target(1))
    messages = [r.getMessage() for r in caplog.records if r.name == "ember.compile"]
    assert messages[0].startswith("import: ") and "(5 ONNX nodes)" in messages[0]
    passes = [m.split()[1].rstrip(":") for m in messages if m.startswith("pass ")]
    assert "fuse-conv-activation" in passes and passes[-1] == "lower-kernels-to-loops"


def test_silent_above_debug(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ember"):
        compile_program(twin_convs(4, 4), host_target(1))
    assert not [r for r in caplog.records if r.name == "ember.compile"]


def test_artifact_build_stages_are_timed(tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "twin.onnx"
    onnx.save(twin_convs(4, 4), str(path))
    with caplog.at_level(logging.DEBUG, logger="ember"):
        assert cli.main(["compile", str(path), "-o", str(tmp_path / "twin.ember"), "-v"]) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "ember.compile"]
    assert any(m.startswith("link model.so: ") for m in messages), messages

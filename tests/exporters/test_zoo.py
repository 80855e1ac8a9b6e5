"""The exporter zoo (tests/exporters/zoo.py) exported with torch.onnx and checked the way a
user tries a model: ember.compile + run against onnxruntime, a SpecializingModel run on
several shapes, pinned shapes, and (one configuration) `ember compile` + ember.runtime.load.

Slow, and only where torch is installed (transformers too, for the transformer models):

    pip install torch transformers onnxscript
    HF_HUB_OFFLINE=1 python -m pytest tests/exporters --runslow -q

Tolerance per model (ZooModel.rtol/atol, 1e-4 by default): |ember - onnxruntime| <=
atol + rtol * max(|onnxruntime|, 1) per output. A model torch itself cannot export in a
configuration is skipped with torch's reason (not an ember failure).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ember.tests.exporters import zoo  # noqa: E402  (needs torch)
from ember.tests.exporters.harness import check_model  # noqa: E402

# (exporter, opset, dynamic axes, initializers listed as graph inputs, ahead of time too)
CONFIGS = {
    "torchscript-17-dynamic": ("torchscript", 17, True, False, False),
    "dynamo-18-dynamic": ("dynamo", 18, True, False, False),
    "torchscript-14-static-aot": ("torchscript", 14, False, True, True),
}
NEEDS_TRANSFORMERS = {
    "bert", "distilbert", "roberta", "albert", "gpt2", "vit", "t5_encoder", "whisper_encoder",
    "gpt2_kv", "t5",
}  # fmt: skip
MODELS = [m.name for m in zoo.zoo()]


@pytest.mark.slow
@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name", MODELS)
def test_exported_model_matches_onnxruntime(name: str, config: str, tmp_path: Path) -> None:
    if name in NEEDS_TRANSFORMERS and importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed")
    exporter, opset, dynamic, inits_as_inputs, aot = CONFIGS[config]
    if exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        pytest.skip("the dynamo exporter needs onnxscript")
    entry = zoo.by_name(name)
    if exporter == "dynamo" and not entry.dynamo_ok:
        pytest.skip("a torch.jit.script module: the dynamo exporter does not take one")
    path = tmp_path / f"{name}.onnx"
    try:
        zoo.export(
            entry,
            path,
            dynamo=exporter == "dynamo",
            opset=opset,
            dynamic=dynamic,
            initializers_as_inputs=inits_as_inputs,
        )
    except Exception as e:  # noqa: BLE001 - torch's failure, not ember's
        pytest.skip(f"torch.onnx.export fails: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    feeds = [entry.inputs(1, 0)]
    if dynamic:
        feeds.append(entry.inputs(2, 1))  # another batch
        if entry.second_shape is not None:
            feeds.append(entry.second_shape(2))  # another spatial size / sequence length
    result = check_model(
        path, feeds, rtol=entry.rtol, atol=entry.atol, aot_dir=tmp_path / "aot" if aot else None
    )
    for note in result.notes:
        print(note)  # shown with -rP / -s: shapes the exported graph cannot run anywhere
    assert result.ok(), "\n".join(f"{f.step}: {f.kind}: {f.message}" for f in result.findings)

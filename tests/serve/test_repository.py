"""The model repository of `ember serve`: config files, the thread plan, batching decisions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from ember.runtime.errors import ArtifactError, ModelError
from ember.tests.serve.models import masked_mean_model
from ember.tools.serve_models import (
    ModelSettings,
    find_models,
    load_model,
    read_settings,
    thread_plan,
)


def _config(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


def test_config_overrides_defaults(tmp_path: Path) -> None:
    settings = read_settings(
        _config(
            tmp_path,
            {
                "max_batch_size": 16,
                "preferred_batch_sizes": [4, 16],
                "max_queue_delay_ms": 1.5,
                "sequence": {"inputs": {"ids": [1, 0]}, "outputs": {"h": 1}, "buckets": [8, 16]},
            },
        ),
        ModelSettings(instances=2),
    )
    assert settings.instances == 2 and settings.max_batch_size == 16
    policy = settings.policy()
    assert policy.batch_sizes == (4, 16) and policy.max_queue_delay == 0.0015
    assert policy.sequence is not None and policy.sequence.bucket(9) == 16


@pytest.mark.parametrize(
    "document, message",
    [
        ({"max_batch_szie": 4}, "field 'max_batch_szie' must be absent: unknown setting"),
        ({"max_batch_size": 0}, "field 'max_batch_size' must be an integer from 1 to 4096, got 0"),
        ({"max_queue_delay_ms": "2"}, "field 'max_queue_delay_ms' must be a number"),
        ({"sequence": {"inputs": {"ids": [0, 0]}, "buckets": [8]}}, "sequence.inputs.ids[0]"),
        ({"sequence": {"inputs": {"ids": [1, 0]}, "buckets": [16, 8]}}, "ascending"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, document: object, message: str) -> None:
    with pytest.raises(ArtifactError, match=r".*config\.json.*") as caught:
        read_settings(_config(tmp_path, document), ModelSettings())
    assert message in str(caught.value)


def test_thread_plan_never_oversubscribes_by_default() -> None:
    plan = thread_plan({"a": ModelSettings(instances=2), "b": ModelSettings()}, cpus=6)
    assert plan == {"a": 2, "b": 2}  # 3 instances share 6 cores
    pinned = {"a": ModelSettings(threads_per_instance=4), "b": ModelSettings()}
    assert thread_plan(pinned, cpus=6) == {"a": 4, "b": 2}
    too_many = {"a": ModelSettings(instances=2, threads_per_instance=2)}
    with pytest.raises(ModelError, match="ask for 4 threads .* but 2 cores"):
        thread_plan(too_many, cpus=2)
    assert thread_plan(too_many, cpus=2, oversubscribe=True) == {"a": 2}


def test_find_models(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no models"):
        find_models(tmp_path)
    onnx.save(masked_mean_model(), str(tmp_path / "pool.onnx"))
    (tmp_path / "notes").mkdir()
    assert find_models(tmp_path) == {"pool": tmp_path / "pool.onnx"}


def test_symbolic_sequence_without_padding_batches_equal_lengths(tmp_path: Path) -> None:
    path = tmp_path / "pool.onnx"
    onnx.save(masked_mean_model(), str(path))
    served = load_model("pool", path, ModelSettings(), threads=1)
    # The check ran with a sequence of 8; no sequence config: nothing is padded along it.
    assert served.batching and served.settings.sequence is None
    feeds = {"tokens": np.ones((2, 3, 4), np.float32), "mask": np.ones((2, 3), np.float32)}
    assert served.run(feeds)["pooled"].shape == (2, 4)


def test_cli_refuses_a_missing_repository(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import logging

    from ember.tools.cli import main

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert main(["serve", str(tmp_path / "absent"), "--port", "0"]) == 1
    finally:
        root.handlers[:], root.level = handlers, level
    err = capsys.readouterr().err
    assert "ember serve: error:" in err and "not a folder" in err


def test_json_logs_carry_the_fields() -> None:
    import logging

    from ember.tools.serve import JsonFormatter

    record = logging.makeLogRecord(
        {"name": "ember.serve", "levelname": "INFO", "msg": "model %s loaded", "args": ("m",)}
    )
    record.model = "m"
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "model m loaded" and line["model"] == "m"
    assert line["level"] == "INFO"


def test_warm_up_compiles_every_variant_ahead(tmp_path: Path) -> None:
    from ember.tools.serve_models import warm_up

    path = tmp_path / "pool.onnx"
    onnx.save(masked_mean_model(), str(path))
    settings = ModelSettings(max_batch_size=2, warmup_dims={"seq": (3, 5)})
    served = load_model("pool", path, settings, threads=1)
    assert warm_up(served) == 4
    shapes = {tuple(s["tokens"]) for s in served.model.specialized_shapes}
    # One program per batch size, though the model is batch-separable: the server compiles
    # without batch polymorphism, so a batch runs the batched kernels.
    assert {(1, 3, 4), (2, 3, 4), (1, 5, 4), (2, 5, 4)} <= shapes
    # Without sizes for `seq`, nothing can be compiled ahead.
    assert warm_up(load_model("pool", path, ModelSettings(), threads=1)) == 0


def test_warm_up_keeps_more_variants_than_the_default_bound(tmp_path: Path) -> None:
    from ember.engine.specialize import MAX_SPECIALIZATIONS
    from ember.runtime.batching import SequencePadding
    from ember.tools.serve_models import warm_up

    path = tmp_path / "pool.onnx"
    onnx.save(masked_mean_model(), str(path))
    # 3 buckets x 4 batch sizes = 12 variants, past the default bound of 8: the server keeps
    # them all, so no run recompiles one dropped by the others.
    padding = SequencePadding({"tokens": (1, 0.0), "mask": (1, 0.0)}, {}, (2, 4, 8))
    settings = ModelSettings(max_batch_size=8, sequence=padding)
    served = load_model("pool", path, settings, threads=1)
    assert 3 * 4 > MAX_SPECIALIZATIONS
    assert warm_up(served) == 12
    assert served.model.max_variants >= 12
    compiled = served.model.compiles
    for batch in (1, 2, 4, 8):
        for length in (2, 4, 8):
            feeds = {
                "tokens": np.ones((batch, length, 4), np.float32),
                "mask": np.ones((batch, length), np.float32),
            }
            served.run(feeds)
    assert served.model.compiles == compiled
    assert len(served.model.specialized_shapes) == 12


def test_sequence_padding_must_cover_the_model(tmp_path: Path) -> None:
    from ember.runtime.batching import SequencePadding

    path = tmp_path / "pool.onnx"
    onnx.save(masked_mean_model(), str(path))
    # Padding the tokens but not the mask would feed the model inputs of two lengths.
    partial = ModelSettings(sequence=SequencePadding({"tokens": (1, 0.0)}, {}, (4, 8)))
    with pytest.raises(
        ModelError, match="input 'mask' has the padded dim 'seq' .* not in sequence.inputs"
    ):
        load_model("pool", path, partial, threads=1)
    fixed_axis = ModelSettings(sequence=SequencePadding({"tokens": (2, 0.0)}, {}, (4, 8)))
    with pytest.raises(ModelError, match="axis 2 of input 'tokens' .* is no named dim"):
        load_model("pool", path, fixed_axis, threads=1)


def test_sequence_padding_that_changes_answers_is_refused(tmp_path: Path) -> None:
    from ember.runtime.batching import SequencePadding

    path = tmp_path / "pool.onnx"
    onnx.save(masked_mean_model(), str(path))
    # A mask padded with 1 counts the padded positions: the answers would change.
    wrong = SequencePadding({"tokens": (1, 0.0), "mask": (1, 1.0)}, {}, (4, 8))
    with pytest.raises(ModelError, match="sequence padding changes output 'pooled'"):
        load_model("pool", path, ModelSettings(sequence=wrong), threads=1)
    right = SequencePadding({"tokens": (1, 0.0), "mask": (1, 0.0)}, {}, (4, 8))
    assert load_model("pool", path, ModelSettings(sequence=right), threads=1).batching


def test_a_model_compiled_once_is_batched_without_padding(tmp_path: Path) -> None:
    """A model whose one program runs every shape (compiled once) gets batches at their own
    size: padding a batch of 3 to 4 rows would compute a row for nobody. A model specialised
    per shape keeps the preferred sizes, which bound how many variants it compiles."""
    from ember.tests.serve.models import dense_feeds, dense_model
    from ember.tools.serve import ModelRepository
    from ember.tools.serve_models import describe_settings

    onnx.save(dense_model(), str(tmp_path / "dense.onnx"))
    onnx.save(masked_mean_model(), str(tmp_path / "pool.onnx"))
    dense = load_model("dense", tmp_path / "dense.onnx", ModelSettings(), threads=1)
    pool = load_model("pool", tmp_path / "pool.onnx", ModelSettings(), threads=1)
    assert dense.batching and dense.runs_any_shape
    assert dense.policy().padded_rows(3) == 3
    assert "each run at its own size" in dense.batching_reason
    assert describe_settings(dense)["runs_any_shape"] is True
    assert pool.batching and not pool.runs_any_shape  # its reduction is refused compile-once
    assert pool.policy().padded_rows(3) == 4
    repository = ModelRepository({"dense": dense, "pool": pool})
    try:
        assert repository.batchers["dense"].policy.any_shape
        assert not repository.batchers["pool"].policy.any_shape
        # A batch of 3 rows on the program compiled once equals its rows run alone (to the
        # rounding of a different summation order).
        rows = [dense_feeds(1, seed) for seed in range(3)]
        together = dense.run({n: np.concatenate([r[n] for r in rows]) for n in rows[0]})
        for index, row in enumerate(rows):
            alone = dense.run(row)
            for name, value in alone.items():
                np.testing.assert_allclose(
                    together[name][index : index + 1], value, rtol=1e-5, atol=1e-6
                )
    finally:
        repository.close()


class _Perturbed:
    """A served model's runner with `change(outputs, rows)` applied to its float outputs."""

    def __init__(self, model: object, change: object) -> None:
        self.model, self.change = model, change

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.model.run(feeds)  # type: ignore[attr-defined]
        rows = next(iter(feeds.values())).shape[0]
        return {
            name: self.change(value, rows) if value.dtype.kind == "f" else value  # type: ignore[operator]
            for name, value in outputs.items()
        }


def test_the_batching_check_tells_rounding_from_mixing(tmp_path: Path) -> None:
    """A row alone may round differently from the same row in a batch (other blocking, other
    summation order): that is held to a 10x looser tolerance than the batch's own copies,
    which differ from the batch only in the other rows' values. BERT-base was refused for
    3-4e-5 of its output's scale between a row alone and batched (docs/serving.md)."""
    from ember.tests.serve.models import dense_model
    from ember.tools.serve_models import _probe_rows

    onnx.save(dense_model(), str(tmp_path / "dense.onnx"))
    served = load_model("dense", tmp_path / "dense.onnx", ModelSettings(), threads=1)
    assert served.batching
    model = served.model
    # Rounding that depends on the batch size only, 3e-4 relative (past the strict 1e-4).
    served.model = _Perturbed(model, lambda y, rows: y * np.float32(1 + 3e-4 * (rows - 1)))
    assert _probe_rows(served, served.settings) == ""
    # A row that moves with the other rows' values by as little: refused.
    served.model = _Perturbed(model, lambda y, rows: y + 3e-4 * y.mean(axis=0, keepdims=True))
    assert "changes with the other rows" in _probe_rows(served, served.settings)
    # Batch-size dependence past the looser tolerance: refused too.
    served.model = _Perturbed(model, lambda y, rows: y * np.float32(1 + 1e-2 * (rows - 1)))
    assert "changes with the other rows" in _probe_rows(served, served.settings)

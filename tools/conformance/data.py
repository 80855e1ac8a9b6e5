"""The node-test data: ONNX's node test cases written to disk once per onnx version, read back.

The onnx wheel ships the node-test generators but not their data, so the first run writes each
case's `model.onnx` and `test_data_set_*/{input,output}_*.pb` under
`$EMBER_CACHE_DIR/onnx-node-tests/onnx-<version>/` (default `~/.cache/ember`), plus a
`cases.json` catalogue mapping each case to the op it tests.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from ember.runtime.cache import touch

CATALOGUE = "cases.json"
_EXPANDED = re.compile(r"^(?P<base>.+)_expanded(?:_ver\d+)?$")


def cache_root() -> Path:
    from ember.runtime.cache import cache_root

    return cache_root() / "onnx-node-tests"


def data_dir(root: Path | None = None, regenerate: bool = False) -> Path:
    """The node-test data for the installed onnx version, written on first use."""
    root = root or cache_root()
    target = root / f"onnx-{onnx.__version__}"
    if (target / CATALOGUE).exists() and not regenerate:
        touch(target)  # its last use, for `ember cache list` and `clear --older-than`
        return target
    root.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed, so concurrent runs never see half a suite.
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        write_node_tests(staging)
        if target.exists():
            shutil.rmtree(target)
        try:
            staging.rename(target)
        except OSError:
            if not (target / CATALOGUE).exists():  # another process won the race otherwise
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in root.glob("onnx-*"):
        if stale != target:
            shutil.rmtree(stale, ignore_errors=True)
    return target


def _value_proto(value: Any, type_proto: onnx.TypeProto, name: str) -> bytes:
    if isinstance(value, onnx.TensorProto):
        return value.SerializeToString()
    if type_proto.HasField("sequence_type"):
        return numpy_helper.from_list(value, name).SerializeToString()
    if type_proto.HasField("optional_type"):
        return numpy_helper.from_optional(value, name).SerializeToString()
    if type_proto.HasField("map_type"):
        return numpy_helper.from_dict(value, name).SerializeToString()
    return numpy_helper.from_array(np.asarray(value), name).SerializeToString()


def _load_value(path: Path, type_proto: onnx.TypeProto) -> Any:
    raw = path.read_bytes()
    if type_proto.HasField("sequence_type"):
        seq = onnx.SequenceProto()
        seq.ParseFromString(raw)
        return numpy_helper.to_list(seq)
    if type_proto.HasField("optional_type"):
        opt = onnx.OptionalProto()
        opt.ParseFromString(raw)
        return numpy_helper.to_optional(opt)
    if type_proto.HasField("map_type"):
        mapping = onnx.MapProto()
        mapping.ParseFromString(raw)
        return numpy_helper.to_dict(mapping)
    tensor = onnx.TensorProto()
    tensor.ParseFromString(raw)
    return numpy_helper.to_array(tensor)


def write_node_tests(dest: Path, cases: Sequence[Any] | None = None) -> dict[str, dict[str, Any]]:
    """Write ONNX's node test cases (default: all of them) under `dest`, with a catalogue."""
    import warnings

    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        cases = list(node_cases.collect_testcases() if cases is None else cases)
    tested_nodes: dict[str, onnx.NodeProto] = node_cases._existing_names
    catalogue: dict[str, dict[str, Any]] = {}
    for case in cases:
        match = _EXPANDED.match(case.name)
        base = match["base"] if match and case.name not in tested_nodes else case.name
        node = tested_nodes.get(base)
        if node is None:  # hand-made cases: the op is the model's only (first) node
            node = case.model.graph.node[0]
        catalogue[case.name] = {
            "op": _op_label(node.domain, node.op_type),
            "expanded": base != case.name,
            "rtol": case.rtol,
            "atol": case.atol,
        }
        case_dir = dest / case.name
        case_dir.mkdir(parents=True)
        (case_dir / "model.onnx").write_bytes(case.model.SerializeToString())
        graph = case.model.graph
        for index, (inputs, outputs) in enumerate(case.data_sets):
            set_dir = case_dir / f"test_data_set_{index}"
            set_dir.mkdir()
            for j, value in enumerate(inputs):
                info = graph.input[j]
                (set_dir / f"input_{j}.pb").write_bytes(_value_proto(value, info.type, info.name))
            for j, value in enumerate(outputs):
                info = graph.output[j]
                (set_dir / f"output_{j}.pb").write_bytes(_value_proto(value, info.type, info.name))
    meta = {"onnx_version": onnx.__version__, "cases": catalogue}
    (dest / CATALOGUE).write_text(json.dumps(meta, indent=1, sort_keys=True))
    return catalogue


def _op_label(domain: str, op_type: str) -> str:
    return op_type if domain in ("", "ai.onnx") else f"{domain}.{op_type}"


def load_catalogue(data: Path) -> dict[str, dict[str, Any]]:
    return json.loads((data / CATALOGUE).read_text())["cases"]


def load_case(case_dir: Path) -> tuple[onnx.ModelProto, list[tuple[list[Any], list[Any]]]]:
    """A case's model and its data sets, each (inputs, expected outputs) in graph order."""
    model = onnx.load(str(case_dir / "model.onnx"))
    data_sets = []
    for set_dir in sorted(case_dir.glob("test_data_set_*")):
        n_in = len(list(set_dir.glob("input_*.pb")))
        n_out = len(list(set_dir.glob("output_*.pb")))
        inputs = [
            _load_value(set_dir / f"input_{i}.pb", model.graph.input[i].type) for i in range(n_in)
        ]
        outputs = [
            _load_value(set_dir / f"output_{i}.pb", model.graph.output[i].type)
            for i in range(n_out)
        ]
        data_sets.append((inputs, outputs))
    return model, data_sets

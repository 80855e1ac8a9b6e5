"""The KServe v2 wire format alone (tools/serve_protocol.py): parsing never converts silently."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ember.runtime.errors import InputError
from ember.tools.serve_protocol import InferRequest, encode_response, parse_request

DTYPES = {"x": "float32", "ids": "int64", "flag": "bool", "half": "float16"}


def _json(*inputs: dict, **extra: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def test_json_and_binary_tensors() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    head = json.dumps(
        {
            "id": "7",
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 24},
                },
                {"name": "ids", "shape": [2, 1], "datatype": "INT64", "data": [[1], [2]]},
                {"name": "flag", "shape": [2], "datatype": "BOOL", "data": [True, False]},
                {"name": "half", "shape": [1], "datatype": "FP16", "data": [0.5]},
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
        }
    ).encode()
    request = parse_request(head + x.tobytes(), str(len(head)), DTYPES)
    np.testing.assert_array_equal(request.inputs["x"], x)
    assert request.inputs["ids"].dtype == np.int64 and request.inputs["ids"].tolist() == [[1], [2]]
    assert request.inputs["flag"].tolist() == [True, False]
    assert request.inputs["half"].dtype == np.float16
    assert request.id == "7" and request.outputs == ["y", "z"] and request.binary_outputs == {"y"}


@pytest.mark.parametrize(
    "body, header, message",
    [
        (b"[1]", None, "not a JSON object"),
        (_json(), None, "'inputs' must be a non-empty list"),
        (_json({"name": "ids", "shape": [2], "datatype": "INT64", "data": [1.5, 2]}), None,
         "INT64 takes integers, 'data' holds floats"),
        (_json({"name": "ids", "shape": [1], "datatype": "INT8", "data": [300]}), None,
         "expected datatype INT64, given INT8"),
        (_json({"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}), None,
         "2 values in 'data', but shape [3] holds 3"),
        (_json({"name": "x", "shape": [2], "datatype": "FP32", "data": [[1], [2, 3]]}), None,
         "not a regular array"),
        (_json({"name": "x", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}), None,
         "datatype 'BYTES' is not supported"),
        (_json({"name": "x", "shape": [2], "datatype": "FP32",
                "parameters": {"binary_data_size": 8}}), "1000", "outside the body"),
        (_json({"name": "flag", "shape": [1], "datatype": "BOOL", "data": [1]}), None,
         "BOOL takes true/false"),
        (_json({"name": "x", "shape": [-1], "datatype": "FP32", "data": []}), None,
         "'shape' must be a list of sizes >= 0"),
        (_json({"name": "x", "shape": [1], "datatype": "FP32", "data": [1]},
               {"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}), None, "given twice"),
    ],
)  # fmt: skip
def test_malformed_requests_name_the_problem(body: bytes, header: str | None, message: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_request(body, header, DTYPES)
    assert message in str(caught.value)


def test_binary_sizes_must_match() -> None:
    def binary(size: int, extra: bytes) -> tuple[bytes, str]:
        tensor = {
            "name": "x",
            "shape": [2],
            "datatype": "FP32",
            "parameters": {"binary_data_size": size},
        }
        head = _json(tensor)
        return head + extra, str(len(head))

    with pytest.raises(
        InputError, match="4 bytes of binary data, but shape \\[2\\] of FP32 needs 8"
    ):
        parse_request(*binary(4, b"\0" * 4), DTYPES)
    with pytest.raises(InputError, match="4 bytes after the tensors belong to no input"):
        parse_request(*binary(8, b"\0" * 12), DTYPES)


def test_integer_range_is_checked_for_the_models_type() -> None:
    dtypes = {"small": "int8"}
    tensor = {"name": "small", "shape": [2], "datatype": "INT8", "data": [5, 300]}
    with pytest.raises(InputError, match="values 5..300 do not fit INT8"):
        parse_request(_json(tensor), None, dtypes)


def test_response_json_and_binary() -> None:
    outputs = {"y": np.array([[1.5, 2.0]], np.float32), "z": np.array([3], np.int64)}
    request = InferRequest("r", {}, None, {"y"})
    body, length = encode_response("m", request, outputs, ["y", "z"])
    assert length is not None
    head = json.loads(body[:length])
    assert head["id"] == "r" and head["outputs"][0]["parameters"] == {"binary_data_size": 8}
    assert head["outputs"][1]["data"] == [3] and head["outputs"][1]["datatype"] == "INT64"
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32), [1.5, 2.0])
    plain, none = encode_response("m", InferRequest(None, {}, ["z"]), outputs, ["y", "z"])
    assert none is None and [o["name"] for o in json.loads(plain)["outputs"]] == ["z"]


@pytest.mark.parametrize("fast", [True, False], ids=["orjson", "json.dumps"])
def test_json_outputs_read_back_exactly(fast: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON outputs are written by orjson when it is installed (18x faster on BERT-base's
    output), else by json.dumps: either way a client reads back the exact values, and NaN and
    infinities as NaN and Infinity (orjson would write null: those take json.dumps)."""
    from ember.tools import serve_protocol

    if fast:
        pytest.importorskip("orjson")
    else:
        monkeypatch.setattr(serve_protocol, "orjson", None)
    rng = np.random.default_rng(0)
    outputs = {
        "f32": rng.standard_normal((2, 5)).astype(np.float32) * 1e-3,
        "f16": rng.standard_normal(4).astype(np.float16),
        "f64": rng.standard_normal(3),
        "i64": np.array([-(2**63), 2**63 - 1, 0], np.int64),
        "u8": np.array([0, 255], np.uint8),
        "flag": np.array([True, False]),
        "tiny": np.array([1e-45, 3.4028235e38, -0.0], np.float32),
    }
    body, length = encode_response("m", InferRequest(None, {}, None), outputs, list(outputs))
    assert length is None
    for tensor in json.loads(body)["outputs"]:
        expected = outputs[tensor["name"]]
        read = np.array(tensor["data"]).astype(expected.dtype).reshape(tensor["shape"])
        np.testing.assert_array_equal(read, expected)
        assert np.array_equal(np.signbit(read), np.signbit(expected))
    special = {"y": np.array([np.nan, np.inf, -np.inf, 1.5], np.float32)}
    body, _ = encode_response("m", InferRequest(None, {}, None), special, ["y"])
    assert b"NaN" in body and b"-Infinity" in body
    read = np.array(json.loads(body)["outputs"][0]["data"], np.float32)
    np.testing.assert_array_equal(read, special["y"])

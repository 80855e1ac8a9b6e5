"""Speech and OCR models built in the tests (tools/model_zoo.py, seeded weights), each compiled
once and compared with onnxruntime at several inputs.

- vad_model: a Silero-VAD-shaped voice-activity detector: an `If` on Equal(sr, 16000) given at
  run time picks the |STFT|-as-Conv1D branch, a Conv1D stack, an LSTM whose state is a graph
  input and output (streamed: each chunk's hn/cn feed the next chunk).
- crnn_model: conv stack, width turned into a sequence, bidirectional LSTM, per-step
  MatMul + LogSoftmax.
- The third model of the set, a greedy decoder driven by `Loop` with a run-time trip count and
  a scan output (model_zoo.greedy_decoder), is tested in tests/e2e/test_control_flow.py
  (test_greedy_decoder_loop_matches_onnxruntime).

Tolerance: max |ember - onnxruntime| <= 1e-5 x max |onnxruntime| per output (`assert_close`):
the LSTMs accumulate float32 sums of different order over their steps.
"""

from __future__ import annotations

import numpy as np
import pytest

import ember
from ember.tests.oracle import assert_close, onnxruntime_outputs
from ember.tools.model_zoo import crnn_model, vad_model

RTOL = 1e-5
HIDDEN = 32


@pytest.fixture(scope="module")
def vad() -> tuple:
    model = vad_model(hidden=HIDDEN)
    return model, ember.compile(model)


def _vad_feeds(rng: np.random.Generator, sr: int, h: np.ndarray, c: np.ndarray) -> dict:
    return {
        "audio": (rng.standard_normal((1, 512)) * 0.3).astype(np.float32),
        "sr": np.array(sr, np.int64),
        "h0": h,
        "c0": c,
    }


@pytest.mark.parametrize("sr", [16000, 8000])
def test_vad_streams_its_lstm_state_and_picks_the_branch_at_run_time(vad, sr: int) -> None:
    model, compiled = vad
    rng = np.random.default_rng(sr)
    h = c = np.zeros((1, 1, HIDDEN), np.float32)
    for _ in range(3):  # three chunks, the state carried from one to the next
        feeds = _vad_feeds(rng, sr, h, c)
        got = compiled.run(feeds)
        expected = onnxruntime_outputs(model, feeds)
        assert_close(got, expected, RTOL)
        h, c = expected["hn"], expected["cn"]


def test_vad_branches_differ(vad) -> None:
    """The If is decided at run time: the same audio and state give another probability and
    state at 8 kHz than at 16 kHz (so the comparison above exercises both branches)."""
    _, compiled = vad
    rng = np.random.default_rng(7)
    state = (rng.standard_normal((1, 1, HIDDEN)) * 0.5).astype(np.float32)
    feeds = _vad_feeds(rng, 16000, state, state)
    at_16k = compiled.run(feeds)
    at_8k = compiled.run({**feeds, "sr": np.array(8000, np.int64)})
    assert not np.allclose(at_16k["cn"], at_8k["cn"])


def test_crnn_matches_onnxruntime() -> None:
    model = crnn_model()
    compiled = ember.compile(model)
    rng = np.random.default_rng(3)
    for _ in range(3):
        feeds = {"input": rng.standard_normal((1, 1, 32, 64)).astype(np.float32)}
        got = compiled.run(feeds)
        expected = onnxruntime_outputs(model, feeds)
        assert_close(got, expected, RTOL)
        np.testing.assert_array_equal(
            got["logprobs"].argmax(-1), expected["logprobs"].argmax(-1)
        )  # the greedy CTC path

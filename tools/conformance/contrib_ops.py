"""The onnxruntime contrib ops (domain com.microsoft) ember converts, one line each on what it
computes them as, for docs/ops.md's section on them (ONNX's conformance suite has no test of
them: tests/frontend/test_ms_transformer_ops.py, test_ms_quantized_ops.py,
test_quantization.py, tests/e2e/test_converter_patterns.py and
test_onnxruntime_written_models.py check them against onnxruntime). Kept equal to the
registry's com.microsoft converters by tests/conformance/test_runner.py."""

from __future__ import annotations

# Written by: "optimizer" = onnxruntime's graph optimizer / onnxruntime.transformers'
# optimize_model; "quantizer" = onnxruntime.quantization (QOperator, quantize_dynamic,
# MatMulNBitsQuantizer); "genai" = onnxruntime-genai's model builder; "cuda" = CUDA-only
# fusions (onnxruntime's CPU session refuses them).
CONTRIB_OPS: dict[str, tuple[str, str]] = {
    "Attention": (
        "optimizer",
        "packed QKV projections + ai.onnx Attention; mask_index [B], [2B], [B, T], [B, S, T] "
        "(not 4-D), unidirectional, past/present, attention_bias, qkv_hidden_sizes",
    ),
    "BiasAdd": ("cuda", "x + bias + skip"),
    "BiasGelu": ("optimizer", "Gelu(x + bias), exact"),
    "BiasSplitGelu": ("cuda", "left half * Gelu(right half) of x + bias"),
    "DequantizeLinear": ("quantizer", "as ai.onnx DequantizeLinear"),
    "DynamicQuantizeMatMul": ("optimizer", "DynamicQuantizeLinear -> MatMulIntegerToFloat"),
    "EmbedLayerNormalization": (
        "optimizer",
        "word/position/segment Gathers + LayerNormalization; mask_index = count of 1s per row",
    ),
    "FastGelu": ("optimizer", "Gelu(x + bias), tanh approximation"),
    "FusedConv": ("optimizer", "Conv [+ Z] + activation"),
    "FusedGemm": ("optimizer", "Gemm + activation"),
    "FusedMatMul": ("optimizer", "alpha * MatMul with transA/transB (not transBatch)"),
    "Gelu": ("optimizer", "ai.onnx Gelu"),
    "GemmFastGelu": ("cuda", "FastGelu(X @ W [+ bias])"),
    "GatherBlockQuantized": (
        "quantizer",
        "uint8-packed 2/4/8-bit or int4/uint4 constant table dequantized at compile time + "
        "Gather; an out-of-range index gives zeros, as onnxruntime",
    ),
    "GroupQueryAttention": (
        "genai",
        "causal GQA over a KV cache placed by seqlens_k, local window, rotary, softcap, "
        "packed QKV (no attention_bias, head_sink, quantized cache)",
    ),
    "MatMulIntegerToFloat": ("quantizer", "dequantized A @ dequantized B [+ bias]"),
    "MatMulNBits": (
        "quantizer",
        "2/4/8-bit block-quantized constant weight dequantized at compile time + MatMul",
    ),
    "MultiHeadAttention": (
        "optimizer",
        "separate Q/K/V (3-D, or K/V as [B, N, L, H]) + ai.onnx Attention; key_padding_mask, "
        "past_key/past_value, present outputs",
    ),
    "NhwcMaxPool": ("optimizer", "Transpose -> MaxPool -> Transpose (ORT_ENABLE_ALL layout)"),
    "QLinearConv": (
        "optimizer",
        "ai.onnx QLinearConv; channels_last=1 between Transposes (ORT_ENABLE_ALL layout)",
    ),
    "QAttention": ("quantizer", "dequantized input and weights -> Attention"),
    "QEmbedLayerNormalization": ("quantizer", "dequantized tables -> EmbedLayerNormalization"),
    "QGemm": ("quantizer", "dequantize -> Gemm [-> quantize]"),
    "QLinearAdd": ("quantizer", "dequantize -> Add -> quantize"),
    "QLinearAveragePool": ("quantizer", "dequantize -> AveragePool -> quantize (NCHW or NHWC)"),
    "QLinearConcat": ("quantizer", "dequantize -> Concat -> quantize"),
    "QLinearGlobalAveragePool": ("quantizer", "dequantize -> GlobalAveragePool -> quantize"),
    "QLinearLeakyRelu": ("quantizer", "dequantize -> LeakyRelu -> quantize"),
    "QLinearMul": ("quantizer", "dequantize -> Mul -> quantize"),
    "QLinearSigmoid": ("quantizer", "dequantize -> Sigmoid -> quantize"),
    "QLinearSoftmax": ("quantizer", "dequantize -> Softmax (its opset's semantics) -> quantize"),
    "QLinearWhere": ("quantizer", "Where of the dequantized branches -> quantize"),
    "QuantizeLinear": ("quantizer", "as ai.onnx QuantizeLinear"),
    "QuickGelu": ("optimizer", "x * Sigmoid(alpha * x)"),
    "RotaryEmbedding": (
        "optimizer",
        "ai.onnx RotaryEmbedding; a 1-element position_ids is an offset",
    ),
    "SkipLayerNormalization": ("optimizer", "LayerNormalization(x + skip [+ bias]), sum output"),
    "SkipSimplifiedLayerNormalization": (
        "optimizer",
        "RMSNormalization(x + skip [+ bias]), sum output",
    ),
}


def contrib_section() -> list[str]:
    """docs/ops.md's lines on the com.microsoft ops."""
    lines = [
        f"## onnxruntime contrib ops (com.microsoft): converted ({len(CONTRIB_OPS)} ops)",
        "",
        "No ONNX node tests exist for these; each is decomposed into ONNX ops and checked "
        "against onnxruntime (`tests/frontend/test_ms_transformer_ops.py`, "
        "`test_ms_quantized_ops.py`, `test_quantization.py`, "
        "`tests/e2e/test_converter_patterns.py`, `test_onnxruntime_written_models.py`; the "
        "CUDA-only ones against their ContribOperators.md definition). An attribute or input "
        "form a converter does not compute is refused naming it (docs/architecture.md).",
        "",
        "| op | written by | computed as |",
        "|---|---|---|",
    ]
    lines += [f"| {op} | {by} | {how} |" for op, (by, how) in sorted(CONTRIB_OPS.items())]
    return [*lines, ""]

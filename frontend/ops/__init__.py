"""The ONNX op converters, one module per ONNX family (as onnx-mlir's ONNXToKrnl is split).

Each converter is registered with `@converts` (frontend/registry.py) next to its code and
receives the import's `ImportContext` (frontend/context.py). Where an op lives (every
registered op is listed, checked by tests/frontend/test_registry.py):

| module | ops |
|---|---|
| `tensor.py` | Constant, ConstantOfShape, Range, EyeLike, Trilu, Shape, Size, Cast, CastLike, BitCast, Identity, Dropout |
| `shape.py` | Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Concat, Split, Slice, Expand, Tile, Pad, CenterCropPad, DepthToSpace, SpaceToDepth |
| `indexing.py` | Gather, GatherElements, GatherND, ScatterElements, Scatter, ScatterND, OneHot, Compress, ReverseSequence, TensorScatter |
| `elementwise.py` | Add, Sub, Mul, Div, Pow, Mod, Sum, Max, Min, Mean, Equal, Greater, GreaterOrEqual, Less, LessOrEqual, And, Or, Xor, Not, BitwiseAnd, BitwiseOr, BitwiseXor, BitwiseNot, BitShift, Where |
| `math.py` | Exp, Log, Sqrt, Erf, Neg, Abs, Reciprocal, Sign, Floor, Ceil, Round, Relu, Sigmoid, Tanh, Sin, Cos, Tan, Asin, Acos, Atan, Sinh, Cosh, Asinh, Acosh, Atanh, IsNaN, IsInf |
| `activation.py` | LeakyRelu, Clip, Softplus, Elu, Selu, Celu, HardSigmoid, HardSwish, Softsign, Shrink, ThresholdedRelu, Mish, Gelu, PRelu, Softmax, LogSoftmax, Hardmax |
| `matmul.py` | MatMul, Gemm, Einsum |
| `conv.py` | Conv, ConvTranspose, Col2Im (the window helpers they share with pooling: `window.py`) |
| `pooling.py` | MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool, GlobalLpPool, MaxUnpool |
| `normalization.py` | BatchNormalization, LRN, LayerNormalization, RMSNormalization, SimplifiedLayerNormalization, MeanVarianceNormalization, LpNormalization, InstanceNormalization, GroupNormalization, ImageScaler |
| `reduction.py` | ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare, ArgMax, ArgMin, CumSum, CumProd, TopK |
| `resize.py` | Resize, Upsample |
| `sampling.py` | GridSample |
| `linalg.py` | Det |
| `detection.py` | RoiAlign, DeformConv |
| `signal.py` | DFT, STFT, MelWeightMatrix |
| `loss.py` | NegativeLogLikelihoodLoss, SoftmaxCrossEntropyLoss |
| `attention.py` | Attention; com.microsoft Attention, MultiHeadAttention, GroupQueryAttention |
| `recurrent.py` | LSTM, GRU, RNN |
| `quantization.py` | QuantizeLinear, DequantizeLinear, QLinearConv, QLinearMatMul, MatMulInteger, ConvInteger; com.microsoft QuantizeLinear, DequantizeLinear, QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu, QLinearAveragePool, QLinearGlobalAveragePool, QLinearConcat, QGemm, MatMulIntegerToFloat, QLinearSoftmax, QLinearWhere, DynamicQuantizeMatMul, QAttention, QEmbedLayerNormalization, MatMulNBits, GatherBlockQuantized, QLinearConv (channels_last), NhwcMaxPool |
| `control_flow.py` | If, Loop, Scan |
| `contrib.py` | com.microsoft FusedConv, FusedGemm, FusedMatMul, BiasGelu, FastGelu, SkipLayerNormalization, EmbedLayerNormalization, SkipSimplifiedLayerNormalization, QuickGelu, RotaryEmbedding, BiasSplitGelu, BiasAdd, GemmFastGelu (what onnxruntime's optimizers save; its Gelu is activation.py's, its Attention attention.py's) |
| `data_dependent.py` | NonZero, Unique, NonMaxSuppression; their bounded forms (domain ai.ember.bounded) |
| `sequence.py` | SequenceConstruct, SequenceEmpty, SequenceLength, SequenceAt, SequenceInsert, SequenceErase, SplitToSequence, ConcatFromSequence, SequenceMap, Optional, OptionalHasElement, OptionalGetElement |

`sequence.py` also holds the converters used instead of Loop's and If's own when a node reads
or gives a sequence or an optional (`registry.STRUCTURED_CONVERTERS`): such a Loop is unrolled
at import, such an If compiled per value of its condition.
"""

from ember.frontend.ops import (  # noqa: F401  (each module registers its converters)
    activation,
    attention,
    contrib,
    control_flow,
    conv,
    data_dependent,
    detection,
    elementwise,
    indexing,
    linalg,
    loss,
    math,
    matmul,
    normalization,
    pooling,
    quantization,
    recurrent,
    reduction,
    resize,
    sampling,
    sequence,
    shape,
    signal,
    tensor,
)

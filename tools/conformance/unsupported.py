"""Why ember does not support an op (or some of its cases): one entry per op, keyed as the
conformance report names ops ("Op" for ai.onnx, "domain.Op" for other domains). Rendered by
`render_docs` into docs/ops.md next to the ops that fail, and listed for the ONNX ops that have
no node test and that ember neither converts nor expands (`unconverted_ops`)."""

from __future__ import annotations

_STRINGS = (
    "string tensors: ember compiles numeric (and bool) tensors only; its kernels have no "
    "string element type, so a graph with a STRING input or value is refused at import"
)
_ML = (
    "ai.onnx.ml domain (traditional machine learning, as scikit-learn converters write it): "
    "ember compiles the ai.onnx neural-network domain; run these with onnxruntime"
)
_TRAINING = (
    "training (ai.onnx.preview.training: optimizer updates and gradients): ember compiles "
    "inference graphs"
)
_RANDOM = (
    "random numbers: no two engines draw the same values, so a result could not be checked "
    "against a reference (the node tests compare values); ember refuses the op by name "
    "(UnsupportedOpError) rather than sample"
)

REASONS: dict[str, str] = {
    # Strings
    "StringSplit": _STRINGS,
    "StringNormalizer": _STRINGS,
    "StringConcat": _STRINGS,
    "RegexFullMatch": _STRINGS,
    "Equal": "equal_string*: " + _STRINGS,
    # Not a tensor program
    "ImageDecoder": (
        "decodes encoded image files (JPEG, PNG, BMP, ... bytes): file-format I/O, not a "
        "tensor program; decode the image before calling ember"
    ),
    "TfIdfVectorizer": (
        "n-gram counting against a pool of n-grams (a dictionary lookup at every position, "
        "with skips): text featurisation from traditional-ML pipelines, not implemented"
    ),
    # Random
    "Bernoulli": _RANDOM + " (its function body draws with RandomUniformLike)",
    "RandomUniform": _RANDOM,
    "RandomUniformLike": _RANDOM,
    "RandomNormal": _RANDOM,
    "RandomNormalLike": _RANDOM,
    "Multinomial": _RANDOM,
    "Dropout": (
        "training_dropout*: training mode with a ratio > 0 drops random elements; ember "
        "refuses it (UnsupportedOpError naming the ratio) and compiles inference-mode Dropout "
        "(and training mode with ratio 0) as the identity with an all-true mask"
    ),
    # Training
    "ai.onnx.preview.training.Adam": _TRAINING,
    "ai.onnx.preview.training.Adagrad": _TRAINING,
    "ai.onnx.preview.training.Momentum": _TRAINING,
    "ai.onnx.preview.training.Gradient": _TRAINING,
    # Traditional ML
    **{
        f"ai.onnx.ml.{op}": _ML
        for op in (
            "ArrayFeatureExtractor",
            "Binarizer",
            "CastMap",
            "CategoryMapper",
            "DictVectorizer",
            "FeatureVectorizer",
            "Imputer",
            "LabelEncoder",
            "LinearClassifier",
            "LinearRegressor",
            "Normalizer",
            "OneHotEncoder",
            "SVMClassifier",
            "SVMRegressor",
            "Scaler",
            "TreeEnsemble",
            "TreeEnsembleClassifier",
            "TreeEnsembleRegressor",
            "ZipMap",
        )
    },
    # Variants of supported ops
    "DFT": (
        "dft_inverse*: values differ only where the exact result is 0: ember gives ~1e-15, "
        "the reference's float32 rounding noise is ~2e-7, above the suite's atol of 1e-7 "
        "(onnxruntime fails these cases too, at 20 elements)"
    ),
    "MaxRoiPool": (
        "not implemented (no node test; exporters write RoiAlign, which ember supports)"
    ),
}


def reason(op: str) -> str:
    return REASONS.get(op, "")


def unconverted_ops(tested: set[str]) -> list[str]:
    """ONNX ops (not deprecated) outside `tested` that ember has no converter for and that no
    function body defines (so they cannot be expanded either), named as the report names
    ops."""
    import onnx

    from ember.frontend import onnx_importer  # noqa: F401  (registers the converters)
    from ember.frontend.registry import has_converter

    names = set()
    for schema in onnx.defs.get_all_schemas():
        if schema.deprecated or has_converter(schema.name, schema.domain):
            continue
        if schema.has_function or schema.has_context_dependent_function:
            continue
        name = f"{schema.domain}.{schema.name}" if schema.domain else schema.name
        if name not in tested:
            names.add(name)
    return sorted(names)

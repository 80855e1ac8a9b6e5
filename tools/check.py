"""`ember check model.onnx`: the command line of `ember.check` (engine/check.py).

    ember check model.onnx [--input-shape x=1x3x224x224] [--json]

Exit status: 0 no problems, 1 problems (listed), 2 the model cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ember.engine.check import check
from ember.runtime.errors import ModelError
from ember.tools.options import add_input_shape_option
from ember.tools.verbosity import apply_verbosity, verbosity_options


def main(argv: Sequence[str] | None = None) -> int:
    """`ember check`: 0 no problems, 1 problems (listed), 2 the model cannot be read."""
    parser = argparse.ArgumentParser(
        parents=[verbosity_options()],
        prog="ember check",
        description="List every problem to fix before a model compiles.",
    )
    parser.add_argument("model", help="the .onnx file")
    add_input_shape_option(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    apply_verbosity(args)
    try:
        report = check(args.model, args.input_shapes or None)
    except ModelError as err:
        print(f"ember check: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

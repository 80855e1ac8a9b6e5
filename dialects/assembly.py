"""Custom directives shared by the assembly formats of the graph and kernel dialects.

The declarative format decides whether an optional group is present from its first element
alone, so two optional operand types in a row, `(`,` type($bias)^)? (`,` type($residual)^)?`,
read a lone residual type back as the bias type. The operand list is keyword-tagged
(`bias %b`, `residual %r`), so by the time the types are parsed it is known which optional
operands exist: `TypeIfPresent` uses that to parse exactly the types that were printed.
"""

from __future__ import annotations

from xdsl.irdl.declarative_assembly_format import (
    CustomDirective,
    OptionalOperandVariable,
    ParsingState,
    PrintingState,
    PunctuationDirective,
    TypeDirective,
    irdl_custom_directive,
)
from xdsl.irdl.operations import IRDLOperation
from xdsl.parser import Parser
from xdsl.printer import Printer


@irdl_custom_directive
class TypeIfPresent(CustomDirective):
    """`, type` of an optional operand when the operand was given, nothing otherwise.

    Use as `custom<TypeIfPresent>(ref($bias), type($bias))` after the operand itself has
    been parsed (it must be in a keyword-tagged group such as `(`bias` $bias^)?`). Prints the
    same text as `(`,` type($bias)^)?`, but parses the type only if `$bias` was parsed."""

    operand: OptionalOperandVariable
    operand_type: TypeDirective

    def parse(self, parser: Parser, state: ParsingState) -> None:
        if state.operands[self.operand.index]:
            parser.parse_punctuation(",")
            self.operand_type.inner.parse_single_type(parser, state)
        else:
            self.operand_type.inner.set_types(state, ())

    def print(self, printer: Printer, state: PrintingState, op: IRDLOperation) -> None:
        if self.operand.is_present(op):
            PunctuationDirective(",").print(printer, state, op)
            self.operand_type.print(printer, state, op)

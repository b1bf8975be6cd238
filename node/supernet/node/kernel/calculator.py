"""A safe arithmetic evaluator for the ``calculator`` tool: Python's AST, a whitelist, no ``eval``.

>>> evaluate("2 * (3 + 4) ** 2")
98
>>> evaluate("sqrt(16) + pi")
7.141592653589793
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

import mpmath

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 10**100
MAX_ROUND_DIGITS = 100  # round(x, n) with |n| past the magnitude bound only costs time (10**|n|)
MAX_EXACT_INT = 2**63  # larger integer results are returned as floats: traces hold 64-bit integers

WORKING_BITS = 160
"""Precision of the transcendental functions and float powers, rounded once to a double at the end.
The platform's math library is not correctly rounded (glibc, musl and macOS differ in the last
bits), so a validator on another platform re-ran an honest node's ``exp`` to another double and
flagged it; mpmath computes with integers, the same everywhere, and 107 bits past a double's 53
make its rounding the correctly rounded one but for the rarest arguments (the same on every
platform even then)."""


def _exactly(function: Callable[..., Any], *args: float) -> float:
    """``function`` of ``args`` at `WORKING_BITS`, rounded to the nearest double."""
    with mpmath.workprec(WORKING_BITS):
        result = float(function(*(mpmath.mpf(a) for a in args)))
    if math.isinf(result):
        raise OverflowError("result too large")
    return result


def _positive(x: float) -> float:
    if x <= 0:
        raise ValueError("math domain error")
    return x


def _power(base: Any, exponent: Any) -> Any:
    """``base ** exponent``: exact for integers (a non-negative integer exponent), else the
    correctly rounded double of it (Python's float power is the platform's ``pow``)."""
    if isinstance(base, int) and isinstance(exponent, int) and exponent >= 0:
        return base**exponent
    if base == 0 and exponent < 0:
        raise ZeroDivisionError("division by zero")
    if base < 0 and not float(exponent).is_integer():
        raise CalculatorError("complex result")
    return _exactly(lambda b, x: b**x, base, exponent)


_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,  # IEEE-754 rounds it correctly on every platform
    "log": lambda x: _exactly(mpmath.log, _positive(x)),
    "log10": lambda x: _exactly(mpmath.log10, _positive(x)),
    "exp": lambda x: _exactly(mpmath.exp, x),
    "sin": lambda x: _exactly(mpmath.sin, x),
    "cos": lambda x: _exactly(mpmath.cos, x),
    "tan": lambda x: _exactly(mpmath.tan, x),
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


_ERRORS = {
    ZeroDivisionError: "division by zero",
    OverflowError: "result too large",
    ValueError: "math domain error",
    TypeError: "wrong argument types",
}


class CalculatorError(ValueError):
    """The expression is not plain arithmetic, or its result is out of bounds."""


def evaluate(expression: str) -> int | float:
    """Evaluate an arithmetic expression (numbers, + - * / // % **, a few math functions).

    Raises:
        CalculatorError: Anything else (names, attributes, huge powers, division by zero ...).
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    if not expression.isascii():  # Python's identifiers and digits follow its Unicode version
        raise CalculatorError("an expression holds ASCII characters only")
    # Every message is the calculator's own, never Python's text (which changes between Python
    # versions): a validator compares a failed call's error text with its re-run's, since agents
    # hand that text to the model or the user (tool_check.check_tools).
    try:
        tree = ast.parse(expression.strip().replace("^", "**"), mode="eval")
    except SyntaxError:
        raise CalculatorError("not an arithmetic expression") from None
    try:
        result = _eval(tree.body)
    except (ArithmeticError, ValueError, TypeError) as exc:
        if isinstance(exc, CalculatorError):
            raise
        raise CalculatorError(_ERRORS.get(type(exc), "invalid operation")) from None
    result = _finite(result)
    if isinstance(result, int) and abs(result) >= MAX_EXACT_INT:
        return float(result)
    return result


def _eval(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _finite(node.value)  # a literal too: "1e400" parses to inf
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _finite(_CONSTANTS[node.id])
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent above {MAX_EXPONENT}")
        return _bounded(_BINARY[type(node.op)](left, right))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        args = [_eval(arg) for arg in node.args]
        if (
            node.func.id == "round"
            and len(args) > 1
            and not (isinstance(args[1], int) and abs(args[1]) <= MAX_ROUND_DIGITS)
        ):
            raise CalculatorError(f"round's digits must be an integer within ±{MAX_ROUND_DIGITS}")
        return _bounded(_FUNCTIONS[node.func.id](*args))
    raise CalculatorError(f"not allowed in an expression: {type(node).__name__}")


def _finite(value: Any) -> Any:
    """Every number the evaluator sees or makes (literals and constants included) is finite: a
    trace holds no NaN or infinity (it would record ``null``, not what the agent computed with), so
    such a number is the calculator's error, the same on a node and on a validator's re-run."""
    if isinstance(value, float) and not math.isfinite(value):
        raise CalculatorError(f"non-finite number ({value}): a trace holds only finite numbers")
    return value


def _bounded(value: Any) -> Any:
    """The result of an operation: a finite real number of at most `MAX_MAGNITUDE`."""
    if isinstance(value, complex):
        raise CalculatorError("complex result")
    _finite(value)
    if abs(value) > MAX_MAGNITUDE:
        raise CalculatorError("result too large")
    return value

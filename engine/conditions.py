"""A small, safe expression language for conditions over earlier results. Never `eval`.

Conditions are parsed with Python's own parser (`ast`, mode "eval") and then only a
whitelist of node types is accepted and interpreted here: names of earlier sub-tasks
(their results), literals, comparisons, `and`/`or`/`not`, `in`, arithmetic, indexing
and field access on results, and the functions `len`, `lower`, `contains`. Anything
else (calls to other functions, attributes on non-results, lambdas, comprehensions)
is refused at validation time with the reason.

Nothing a condition computes may grow without bound, because a plan (the planner's, or
a workflow file) is not trusted to be kind: `*` and `%` work on numbers only (no text or
list repetition, no `%` formatting: `'a' * 10**9` would allocate a gigabyte), `+` builds
at most `MAX_SIZE` characters or items, and numbers stay within `MAX_NUMBER`. Where the
operands are literals this is refused at validation; otherwise when evaluated, since an
earlier step's result (a long `summary`) is only known then.

    count > 3 and check
    "error" in summary.lower()      # refused: method calls are not allowed
    contains(lower(summary), "error")
    report.severity == "high" or len(files) >= 2
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

from foreman.errors import ConditionError

MAX_LENGTH = 500
MAX_DEPTH = 20
MAX_SIZE = 100_000  # characters or items `+` may build; a condition compares, it does not assemble documents
MAX_NUMBER = 10**30  # far beyond any count or size a condition compares; keeps big-int arithmetic cheap
CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "lower": lambda s: str(s).lower(),
    "contains": lambda haystack, needle: needle in haystack,
}
COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Mod: operator.mod,
}
SYMBOLS: dict[type, str] = {
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%", ast.Pow: "** (power)",
    ast.FloorDiv: "//", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|", ast.BitAnd: "&",
    ast.BitXor: "^", ast.MatMult: "@",
}
NUMBERS_ONLY = (ast.Mult, ast.Mod)  # on text or lists these repeat or format: unbounded allocation


class Condition:
    """A parsed condition: the names it reads, and a safe evaluator."""

    def __init__(self, source: str) -> None:
        if len(source) > MAX_LENGTH:
            raise ConditionError(f"condition is {len(source)} characters; the limit is {MAX_LENGTH}")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ConditionError(f"condition {source!r} does not parse: {exc.msg}") from None
        self.source = source
        self._tree = tree.body
        self.names: set[str] = set()
        self._check(self._tree, depth=0)

    def _check(self, node: ast.AST, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ConditionError(f"condition {self.source!r} nests deeper than {MAX_DEPTH}")
        match node:
            case ast.Constant(value=value) if isinstance(value, (str, int, float, bool, type(None))):
                if isinstance(value, int) and abs(value) > MAX_NUMBER:
                    raise ConditionError(f"condition {self.source!r} has a number larger than 10**30, "
                                         "the limit for numbers in conditions")
                return
            case ast.Name(id=name):
                if name not in CONSTANTS:
                    self.names.add(name)
                return
            case ast.BoolOp(values=values):
                children = values
            case ast.UnaryOp(op=ast.Not() | ast.USub(), operand=operand):
                children = [operand]
            case ast.BinOp(op=op, left=left, right=right) if type(op) in ARITH:
                self._check_operands(op, left, right)
                children = [left, right]
            case ast.BinOp(op=op):
                raise ConditionError(
                    f"condition {self.source!r} uses {SYMBOLS.get(type(op), type(op).__name__)}, which the "
                    "condition language does not allow; its arithmetic is + - * / % on numbers"
                )
            case ast.Compare(left=left, ops=ops, comparators=comparators) if all(type(o) in COMPARE for o in ops):
                children = [left, *comparators]
            case ast.Attribute(value=value, attr=attr) if not attr.startswith("_"):
                children = [value]
            case ast.Subscript(value=value, slice=index):
                children = [value, index]
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                children = elts
            case ast.Call(func=ast.Name(id=fn), args=args, keywords=[]) if fn in FUNCTIONS:
                children = args
            case ast.Call():
                raise ConditionError(
                    f"condition {self.source!r} calls something other than {', '.join(FUNCTIONS)}; "
                    "write e.g. contains(lower(summary), 'error')"
                )
            case _:
                raise ConditionError(
                    f"condition {self.source!r} uses {type(node).__name__}, which the condition "
                    "language does not allow (use comparisons, and/or/not, in, len, lower, contains)"
                )
        for child in children:
            self._check(child, depth + 1)

    def _check_operands(self, op: ast.operator, left: ast.AST, right: ast.AST) -> None:
        """Refuse `*` and `%` on text or lists already at validation, where the operand shows it."""
        if isinstance(op, ast.Mult) and {_kind(left), _kind(right)} & {"text", "list"}:
            raise ConditionError(
                f"condition {self.source!r} repeats text or a list with *; in conditions * multiplies "
                "numbers only (repetition can allocate gigabytes)"
            )
        if isinstance(op, ast.Mod) and _kind(left) in ("text", "list"):
            raise ConditionError(
                f"condition {self.source!r} formats text with %; in conditions % is the remainder of "
                "two numbers only (write contains(...) or == to test text)"
            )

    def evaluate(self, results: Mapping[str, Any]) -> bool:
        """True or False from the results of earlier sub-tasks (by id)."""
        missing = self.names - results.keys()
        if missing:
            raise ConditionError(f"condition {self.source!r} needs results of {sorted(missing)}, which are not available")
        try:
            return bool(self._eval(self._tree, results))
        except ConditionError:
            raise
        except Exception as exc:  # noqa: BLE001  (a type mismatch in a result, say)
            raise ConditionError(f"condition {self.source!r} failed on these results: {type(exc).__name__}: {exc}") from None

    def _eval(self, node: ast.AST, env: Mapping[str, Any]) -> Any:
        match node:
            case ast.Constant(value=value):
                return value
            case ast.Name(id=name):
                return CONSTANTS[name] if name in CONSTANTS else env[name]
            case ast.BoolOp(op=ast.And(), values=values):
                return all(self._eval(v, env) for v in values)
            case ast.BoolOp(op=ast.Or(), values=values):
                return any(self._eval(v, env) for v in values)
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return not self._eval(operand, env)
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return -self._eval(operand, env)
            case ast.BinOp(op=op, left=left, right=right):
                return self._arith(op, self._eval(left, env), self._eval(right, env))
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                current = self._eval(left, env)
                for op, right_node in zip(ops, comparators):
                    right = self._eval(right_node, env)
                    if not COMPARE[type(op)](current, right):
                        return False
                    current = right
                return True
            case ast.Attribute(value=value, attr=attr):
                target = self._eval(value, env)
                if isinstance(target, Mapping):
                    return target[attr]
                raise ConditionError(f"condition {self.source!r} reads .{attr} of a {type(target).__name__}")
            case ast.Subscript(value=value, slice=index):
                return self._eval(value, env)[self._eval(index, env)]
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                return [self._eval(e, env) for e in elts]
            case ast.Call(func=ast.Name(id=fn), args=args):
                return FUNCTIONS[fn](*(self._eval(a, env) for a in args))
        raise ConditionError(f"unexpected {type(node).__name__} in {self.source!r}")  # pragma: no cover

    def _arith(self, op: ast.operator, left: Any, right: Any) -> Any:
        """One arithmetic step, refused before it could build something huge from a result."""
        symbol = SYMBOLS[type(op)]
        if isinstance(op, NUMBERS_ONLY) and not (_is_number(left) and _is_number(right)):
            raise ConditionError(
                f"condition {self.source!r}: {symbol} works on numbers only in conditions, not on "
                f"{type(left).__name__} and {type(right).__name__}"
            )
        if isinstance(op, ast.Add) and _is_sized(left) and _is_sized(right) and len(left) + len(right) > MAX_SIZE:
            raise ConditionError(
                f"condition {self.source!r}: + would build {len(left) + len(right)} characters or items; "
                f"the limit is {MAX_SIZE}"
            )
        for value in (left, right):
            self._bounded(value)
        return self._bounded(ARITH[type(op)](left, right))

    def _bounded(self, value: Any) -> Any:
        if isinstance(value, int) and abs(value) > MAX_NUMBER:
            raise ConditionError(f"condition {self.source!r}: a number in its arithmetic exceeds 10**30, "
                                 "the limit for numbers in conditions")
        return value


def _kind(node: ast.AST) -> str | None:
    """'text', 'list' or 'number' when a node's type shows without the results; None when it does not."""
    match node:
        case ast.Constant(value=str()):
            return "text"
        case ast.Constant(value=int() | float()) | ast.UnaryOp(op=ast.USub()):
            return "number"
        case ast.List() | ast.Tuple():
            return "list"
        case ast.Call(func=ast.Name(id="lower")):
            return "text"
        case ast.Call(func=ast.Name(id="len")):
            return "number"
        case ast.BinOp(op=ast.Add(), left=left, right=right):
            kinds = {_kind(left), _kind(right)}
            return next((k for k in ("text", "list") if k in kinds), "number" if kinds == {"number"} else None)
        case ast.BinOp():
            return "number"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def _is_sized(value: Any) -> bool:
    return isinstance(value, str | list | tuple)


def parse_condition(source: str) -> Condition:
    """The parsed condition, or `ConditionError` saying what is not in the language (validation)."""
    return Condition(source)

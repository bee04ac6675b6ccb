"""Questions about a finished front, without searching again: ``--where`` filters and ``--pick``.

``--where`` takes a tiny expression language, parsed here by hand (never ``eval``)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := atom ("and" atom)*
    atom       := "(" expr ")" | comparison
    comparison := NAME OP NUMBER | NUMBER OP NAME        OP in < <= > >= == !=

NAME is a metric of the front: an objective or measured value (``top1``, ``latency_ms``,
``size_mb``, a per-target ``latency_ms@cpu_ort_epyc``, ``emulated_layers``, ...) or a prediction
(``top1_pred``, ...). NUMBER must be finite (``1e999`` is refused). An expression is at most
:data:`MAX_WHERE_CHARS` characters with parentheses nested at most :data:`MAX_WHERE_NESTING` deep.
A bad expression raises one :class:`~nasq.errors.NasqError` line naming the expression (cut to 80
characters) and what is wrong.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from nasq.errors import NasqError
from nasq.search.pareto import Front, FrontPoint
from nasq.specs import show

PICKS = ("knee", "max-top1", "min-latency")
MAX_WHERE_CHARS = 4096  # a filter a person types; beyond it is not a question about a front
MAX_WHERE_NESTING = 32  # parentheses: the parser (and the test it builds) recurse once per level
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt}
_FLIP = {"<": ">", ">": "<", "<=": ">=", ">=": "<=", "==": "==", "!=": "!="}
_TOKEN = re.compile(r"\s*(?:(?P<num>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)|(?P<op><=|>=|==|!=|<|>)"
                    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*(?:@[A-Za-z0-9][A-Za-z0-9._-]*)?)|(?P<paren>[()]))")

_WHAT = {"num": "a number", "op": "a comparison (< <= > >= == !=)", "name": "a metric name"}
Values = dict[str, float]


@dataclass(frozen=True)
class Where:
    """A parsed ``--where`` expression: call it with a point's values."""

    text: str
    test: Callable[[Values], bool]
    names: frozenset[str]

    def __call__(self, values: Values) -> bool:
        return self.test(values)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise NasqError(f"--where {show(text)}: unexpected {show(text[pos:].strip()[:12])} at character {pos + 1}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "name" and value.lower() in ("and", "or"):
            kind, value = "bool", value.lower()
        out.append((kind, value))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str):
        self.text, self.toks, self.i, self.names, self.depth = text, _tokens(text), 0, set(), 0

    def error(self, what: str) -> NasqError:
        return NasqError(f"--where {show(self.text)}: {what}")

    def peek(self) -> tuple[str, str]:
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self, kind: str) -> str:
        got = self.peek()
        if got[0] != kind:
            raise self.error(f"expected {_WHAT[kind]}, got {show(got[1] or 'the end')}")
        self.i += 1
        return got[1]

    def expr(self) -> Callable[[Values], bool]:
        parts = [self.and_expr()]
        while self.peek() == ("bool", "or"):
            self.i += 1
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else (lambda v: any(p(v) for p in parts))

    def and_expr(self) -> Callable[[Values], bool]:
        parts = [self.atom()]
        while self.peek() == ("bool", "and"):
            self.i += 1
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else (lambda v: all(p(v) for p in parts))

    def atom(self) -> Callable[[Values], bool]:
        kind, value = self.peek()
        if kind == "paren" and value == "(":
            self.i += 1
            self.depth += 1
            if self.depth > MAX_WHERE_NESTING:
                raise self.error(f"parentheses nested deeper than {MAX_WHERE_NESTING} levels")
            inner = self.expr()
            if self.peek() != ("paren", ")"):
                raise self.error("missing ')'")
            self.i += 1
            self.depth -= 1
            return inner
        if kind == "num":
            number = self.number()
            op = _FLIP[self.take("op")]
            name = self.take("name")
        else:
            name = self.take("name")
            op = self.take("op")
            number = self.number()
        self.names.add(name)
        compare = _OPS[op]
        return lambda v: compare(v[name], number)

    def number(self) -> float:
        text = self.take("num")
        value = float(text)  # the token is digits, a point and an exponent: float() never fails on it
        if not math.isfinite(value):
            raise self.error(f"number {show(text)} is not finite")
        return value


def parse_where(text: str, known: set[str] | None = None) -> Where:
    """Parse ``text``; with ``known``, every metric name must be one of them."""
    if not text or not text.strip():
        raise NasqError("--where '': empty expression")
    if len(text) > MAX_WHERE_CHARS:
        raise NasqError(f"--where {show(text)}: longer than {MAX_WHERE_CHARS} characters ({len(text):,})")
    parser = _Parser(text)
    test = parser.expr()
    if parser.i != len(parser.toks):
        raise parser.error(f"unexpected {show(parser.peek()[1])} after a complete expression")
    if known is not None:
        unknown = sorted(parser.names - known)
        if unknown:
            raise parser.error(f"unknown metric {show(unknown[0])} (known: {', '.join(sorted(known))})")
    return Where(text, test, frozenset(parser.names))


def point_values(point: FrontPoint) -> Values:
    """Measured values where known, predictions otherwise; predictions also as ``<name>_pred``."""
    values = {k: float(point.value(k)) for k in {*point.predicted, *point.measured}}
    values.update({f"{k}_pred": float(v) for k, v in point.predicted.items()})
    if point.emulated_layers is not None:
        values["emulated_layers"] = float(point.emulated_layers)
    return values


def known_metrics(front: Front) -> set[str]:
    return set().union(*(point_values(p) for p in front.points)) if front.points else set(front.objectives)


def select(front: Front, where: str | None = None) -> list[int]:
    """Indices of the points that satisfy ``where`` (all points when None)."""
    if where is None:
        return list(range(len(front.points)))
    test = parse_where(where, known_metrics(front))
    return [i for i, p in enumerate(front.points) if all(n in point_values(p) for n in test.names)
            and test(point_values(p))]


def check_pick(how: str) -> str:
    """``how`` if it is one of :data:`PICKS`, else one NasqError line."""
    if how not in PICKS:
        raise NasqError(f"--pick {show(how)}: unknown (known: {', '.join(PICKS)})")
    return how


def pick(front: Front, how: str, among: list[int] | None = None) -> int:
    """The index (into ``front.points``) of the ``knee``/``max-top1``/``min-latency`` point among
    ``among`` (all points when None)."""
    check_pick(how)
    among = list(range(len(front.points))) if among is None else among
    if not among:
        raise NasqError("no point of the front to pick from (the --where filter matched none)")
    if how == "min-latency" and "latency_ms" not in known_metrics(front):
        raise NasqError("--pick min-latency: the front has no latency_ms")
    sub = Front(front.objectives, [front.points[i] for i in among], front.lineage)
    return among[sub.pick(how)]

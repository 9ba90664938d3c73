"""VNN-LIB 1.0 reader: ``.vnnlib`` text -> :class:`VnnlibQuery` -> :class:`~certify.problem.Problem`.

A VNN-LIB file declares inputs ``X_i`` and outputs ``Y_j`` (``declare-const ... Real``) and
asserts constraints over them; the property is VIOLATED iff some assignment satisfies *all*
asserts.  The conjunction of the asserts is put in disjunctive normal form; each DNF term is a
box on ``X`` plus rows ``A y <= b`` on ``Y``.  Terms with the same box are grouped into one
:class:`Case`, whose ``unsafe`` disjuncts are exactly the :class:`~certify.problem.HalfSpaces`
of :class:`~certify.problem.Problem`.

Supported (what VNN-COMP uses): ``<= >= < > =`` (chains allowed), ``and``/``or`` nested
arbitrarily, linear terms built with ``+``, ``-`` (unary and binary), ``*`` and ``/`` by
constants, and ``true``/``false``.  Strict ``<``/``>`` are read as ``<=``/``>=``: this
over-approximates the unsafe set by its boundary, which is sound for proving that a property
holds; at worst a counterexample lies exactly on the boundary of a strict constraint.

Every syntax or semantic error raises :class:`~certify.errors.SpecError` as
``"<file>:<line>: <what>"``.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import os
import re
from dataclasses import dataclass

import numpy as np

from certify.errors import ShapeMismatch, SpecError
from certify.network import Network
from certify.problem import Box, HalfSpaces, Problem

__all__ = ["Case", "VnnlibQuery", "parse_vnnlib", "parse_vnnlib_text", "to_problems"]

log = logging.getLogger(__name__)

#: The most DNF terms a query may expand to before we give up.
MAX_TERMS = 100_000
#: The deepest parenthesis nesting accepted (the DNF conversion recurses over it).
MAX_DEPTH = 200

_COMMENT = re.compile(r";[^\n]*")
_TOKEN = re.compile(r"[()]|[^\s()]+")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\Z")
_LOOKS_NUMERIC = re.compile(r"[-+]?\.?\d")
_VARIABLE = re.compile(r"([XY])_(\d+)\Z")
_IDENTIFIER = re.compile(r"[A-Za-z_][\w.]*\Z")
#: SMT-LIB commands that carry no constraint and are skipped.
_IGNORED_COMMANDS = frozenset({"set-logic", "set-info", "set-option", "check-sat", "get-model", "exit"})
_COMPARISONS = frozenset({"<=", ">=", "<", ">", "="})

#: A linear expression: ({variable index: coefficient}, constant); X_i is i, Y_j is n_inputs + j.
Linear = tuple[dict[int, float], float]
#: A bound on one input, ``(is_upper, i, value)``: ``X_i <= value`` or ``X_i >= value``.
Bound = tuple[bool, int, float]
#: A row on the outputs, ``(output indices, coefficients, rhs)``: ``sum coef * Y_j <= rhs``.
Row = tuple[tuple[int, ...], tuple[float, ...], float]
#: A DNF term: the conjunction of its bounds and its rows.
Term = tuple[tuple[Bound, ...], tuple[Row, ...]]


@dataclass(frozen=True, slots=True, eq=False)
class Case:
    """One input box with the output disjuncts that go with it.

    ``lower``, ``upper``: ``[n_inputs]`` float64 (read-only); ``unsafe``: rows over the
    flattened output vector.  A term without output constraints gets the single row
    ``0 @ y <= 0`` (every output is unsafe).
    """

    lower: np.ndarray
    upper: np.ndarray
    unsafe: tuple[HalfSpaces, ...]

    def __post_init__(self) -> None:
        if self.lower.ndim != 1 or self.lower.shape != self.upper.shape:
            raise ValueError(f"case bounds must be equal-length vectors: {self.lower.shape}, {self.upper.shape}")
        if not self.unsafe:
            raise ValueError("a case needs at least one unsafe disjunct")


@dataclass(frozen=True, slots=True, eq=False)
class VnnlibQuery:
    """The content of a VNN-LIB file: VIOLATED iff for some case, some ``x`` in its box
    has ``net(x)`` in one of its disjuncts.  No cases means no assignment can satisfy the
    asserts (the property holds trivially)."""

    n_inputs: int
    n_outputs: int
    cases: tuple[Case, ...]


def parse_vnnlib(path: str | os.PathLike[str]) -> VnnlibQuery:
    """Read a ``.vnnlib`` (or ``.vnnlib.gz``) file; errors name ``path`` and the line."""
    source = os.fspath(path)
    try:
        if source.endswith(".gz"):
            with gzip.open(source, "rt", encoding="utf-8") as fh:
                text = fh.read()
        else:
            with open(source, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{source}: cannot read VNN-LIB file: {exc}") from exc
    return parse_vnnlib_text(text, source)


def parse_vnnlib_text(text: str, source: str = "<string>") -> VnnlibQuery:
    """Parse VNN-LIB ``text``; ``source`` names it in error messages."""
    return _Reader(text, source).read()


def to_problems(query: VnnlibQuery, network: Network, name: str = "") -> list[Problem]:
    """One :class:`Problem` per case, its box reshaped (row-major) to ``network.input_shape``.

    The property is violated iff any returned problem is (an empty list: no input satisfies
    the input constraints, so it holds).  Raises :class:`~certify.errors.ShapeMismatch` when
    the query's sizes do not fit ``network``.
    """
    if query.n_inputs != network.input_size:
        raise ShapeMismatch(
            f"VNN-LIB query has {query.n_inputs} inputs, network {network.name!r} has "
            f"{network.input_size} (input shape {network.input_shape})"
        )
    if query.n_outputs != network.output_size:
        raise ShapeMismatch(
            f"VNN-LIB query has {query.n_outputs} outputs, network {network.name!r} has "
            f"{network.output_size} (output shape {network.output_shape})"
        )
    shape = network.input_shape
    many = len(query.cases) > 1
    problems = []
    for k, case in enumerate(query.cases):
        label = (f"{name}#case{k}" if name else f"case{k}") if many else name
        box = Box(case.lower.reshape(shape), case.upper.reshape(shape))
        problems.append(Problem(network, box, case.unsafe, name=label))
    return problems


class _Reader:
    """Tokens, the s-expression tree and the conversion to a query, for one text.

    The tree holds token indices only: a list node is ``[index of its '(', child, ...]`` and
    an atom is the ``int`` index of its token; line numbers are recovered from an index
    only when an error is raised.
    """

    def __init__(self, text: str, source: str) -> None:
        # Removing comments keeps every newline, so line numbers are unchanged.
        self.text = _COMMENT.sub("", text)
        self.source = source
        self.tokens: list[str] = _TOKEN.findall(self.text)
        self.variables: dict[str, int] = {}  # X_i -> i, Y_j -> n_inputs + j
        self.n_inputs = 0
        self.n_outputs = 0

    # -- errors --------------------------------------------------------------------------
    def error(self, where: int | list, message: str) -> SpecError:
        index = where[0] if isinstance(where, list) else where
        match = next(itertools.islice(_TOKEN.finditer(self.text), index, None), None)
        offset = len(self.text) if match is None else match.start()
        line = self.text.count("\n", 0, offset) + 1
        return SpecError(f"{self.source}:{line}: {message}")

    # -- syntax --------------------------------------------------------------------------
    def tree(self) -> list:
        """The top-level s-expressions, parsed iteratively."""
        root: list = [-1]
        stack = [root]
        current = root
        for i, token in enumerate(self.tokens):
            if token == "(":
                node = [i]
                current.append(node)
                stack.append(node)
                current = node
                if len(stack) > MAX_DEPTH:
                    raise self.error(i, f"parentheses nested deeper than {MAX_DEPTH}")
            elif token == ")":
                if len(stack) == 1:
                    raise self.error(i, "unbalanced ')'")
                stack.pop()
                current = stack[-1]
            else:
                current.append(i)
        if len(stack) > 1:  # point at the outermost command that never closes
            raise self.error(stack[1], "unbalanced '(': this command is never closed")
        return root[1:]

    def head(self, node: list) -> str:
        if len(node) < 2 or isinstance(node[1], list):
            raise self.error(node, "expected an operator after '('")
        return self.tokens[node[1]]

    # -- top level -----------------------------------------------------------------------
    def read(self) -> VnnlibQuery:
        asserts = []
        declared: dict[str, int] = {}
        for node in self.tree():
            if not isinstance(node, list):
                raise self.error(node, f"unexpected token {self.tokens[node]!r} outside a command")
            command = self.head(node)
            if command == "declare-const":
                self.declare(node, declared)
            elif command == "declare-fun":
                if len(node) != 5 or not isinstance(node[3], list) or len(node[3]) != 1:
                    raise self.error(node, "declare-fun must read (declare-fun NAME () Real)")
                self.declare([node[0], node[1], node[2], node[4]], declared)
            elif command == "assert":
                if len(node) != 3:
                    raise self.error(node, "assert takes exactly one formula")
                asserts.append(node[2])
            elif command not in _IGNORED_COMMANDS:
                raise self.error(node, f"unknown command {command!r}")
        self.number_variables(declared)
        terms = self.dnf_and(asserts)
        return self.query(terms)

    def declare(self, node: list, declared: dict[str, int]) -> None:
        if len(node) != 4 or isinstance(node[2], list) or isinstance(node[3], list):
            raise self.error(node, "declaration must read (declare-const NAME Real)")
        name, sort = self.tokens[node[2]], self.tokens[node[3]]
        if sort != "Real":
            raise self.error(node, f"unsupported: variable {name} of sort {sort!r} (only Real)")
        if not _VARIABLE.match(name):
            raise self.error(node, f"unsupported: variable name {name!r} (expected X_<i> or Y_<j>)")
        if name in declared:
            raise self.error(node, f"{name} declared twice")
        declared[name] = node[0]

    def number_variables(self, declared: dict[str, int]) -> None:
        """Give X_i the index i and Y_j the index n_inputs + j; the indices must be 0..n-1."""
        indices: dict[str, dict[int, str]] = {"X": {}, "Y": {}}
        for name in declared:
            kind, number = _VARIABLE.match(name).groups()  # type: ignore[union-attr]
            if int(number) in indices[kind]:
                raise self.error(declared[name], f"{name} and {indices[kind][int(number)]} name the same variable")
            indices[kind][int(number)] = name
        for kind in "XY":
            if not indices[kind]:
                raise SpecError(f"{self.source}: no {kind}_ variables declared")
            last = max(indices[kind])
            missing = sorted(set(range(last)) - set(indices[kind]))
            if missing:
                raise self.error(declared[indices[kind][last]],
                                 f"{kind}_{missing[0]} is not declared but {indices[kind][last]} is")
        self.n_inputs = len(indices["X"])
        self.n_outputs = len(indices["Y"])
        self.variables = {name: i for i, name in indices["X"].items()}
        self.variables.update({name: self.n_inputs + j for j, name in indices["Y"].items()})

    # -- formulas -> DNF: a list of terms (bounds, rows), each a tuple of atoms ---------
    def dnf(self, node: int | list) -> list[Term]:
        if not isinstance(node, list):
            token = self.tokens[node]
            if token == "true":
                return [((), ())]
            if token == "false":
                return []
            raise self.error(node, f"expected a formula, found {token!r}")
        op = self.head(node)
        args = node[2:]
        if op == "and":
            return self.dnf_and(args)
        if op == "or":
            terms: list[Term] = []
            for arg in args:
                terms.extend(self.dnf(arg))
                if len(terms) > MAX_TERMS:
                    raise self.error(node, f"formula expands to more than {MAX_TERMS} DNF terms")
            return terms
        if op in _COMPARISONS:
            return self.comparison(node, op, args)
        raise self.error(node, f"unsupported: formula operator {op!r}")

    def dnf_and(self, args: list) -> list[Term]:
        bounds: list[Bound] = []  # atoms of the arguments that are a single term
        rows: list[Row] = []
        branching: list[list[Term]] = []
        for arg in args:
            terms = self.dnf(arg)
            if not terms:
                return []
            if len(terms) == 1:
                bounds.extend(terms[0][0])
                rows.extend(terms[0][1])
            else:
                branching.append(terms)
        result = [(tuple(bounds), tuple(rows))]
        for terms in branching:
            if len(result) * len(terms) > MAX_TERMS:
                raise self.error(args[0], f"formula expands to more than {MAX_TERMS} DNF terms")
            # ``t + ()`` is ``t`` itself, so terms that add no bounds share one bounds tuple.
            result = [(lb + rb, lr + rr) for lb, lr in result for rb, rr in terms]
        return result

    def comparison(self, node: list, op: str, args: list) -> list[Term]:
        """A chain ``(op a b c ...)``: the conjunction of ``a op b``, ``b op c``, ...; one term."""
        if len(args) < 2:
            raise self.error(node, f"{op!r} needs at least two arguments")
        sides = [self.linear(arg) for arg in args]
        bounds: list[Bound] = []
        rows: list[Row] = []
        for left, right in zip(sides, sides[1:]):
            # Strict comparisons are read as non-strict (sound over-approximation, see module doc).
            if op in ("<=", "<", "=") and not self.constrain(node, left, right, bounds, rows):
                return []
            if op in (">=", ">", "=") and not self.constrain(node, right, left, bounds, rows):
                return []
        return [(tuple(bounds), tuple(rows))]

    def constrain(self, node: list, left: Linear, right: Linear, bounds: list[Bound], rows: list[Row]) -> bool:
        """Add ``left <= right`` to ``bounds`` (one X) or ``rows`` (Ys); False if it never holds."""
        coefs = dict(left[0])
        for k, c in right[0].items():
            coefs[k] = coefs.get(k, 0.0) - c
        coefs = {k: c for k, c in coefs.items() if c != 0.0}
        const = left[1] - right[1]  # the constraint is now sum coefs * var + const <= 0
        if not coefs:
            return const <= 0.0
        inputs = [k for k in coefs if k < self.n_inputs]
        if not inputs:
            rows.append((tuple(k - self.n_inputs for k in coefs), tuple(coefs.values()), -const))
        elif len(inputs) != len(coefs):
            raise self.error(node, "unsupported: constraint mixes inputs X and outputs Y")
        elif len(inputs) > 1:
            raise self.error(node, "unsupported: linear constraint over several inputs (only bounds on one X_i)")
        else:
            (i, c), = coefs.items()
            bounds.append((c > 0, i, -const / c))
        return True

    # -- linear expressions: ({variable index: coefficient}, constant) --------------------
    def linear(self, node: int | list) -> Linear:
        if not isinstance(node, list):
            return self.leaf(node)
        op = self.head(node)
        args = node[2:]
        if not args:
            raise self.error(node, f"{op!r} needs arguments")
        parts = [self.linear(arg) for arg in args]
        if op == "+":
            return _combine(parts, [1.0] * len(parts))
        if op == "-":
            if len(parts) == 1:
                return _combine(parts, [-1.0])
            return _combine(parts, [1.0] + [-1.0] * (len(parts) - 1))
        if op == "*":
            scale = 1.0
            variable = None
            for part in parts:
                if part[0]:
                    if variable is not None:
                        raise self.error(node, "unsupported: product of variables (nonlinear)")
                    variable = part
                else:
                    scale *= part[1]
            if variable is None:
                return {}, scale
            return _combine([variable], [scale])
        if op == "/":
            if len(parts) != 2 or parts[1][0]:
                raise self.error(node, "unsupported: '/' only divides by one constant")
            if parts[1][1] == 0.0:
                raise self.error(node, "division by zero")
            (coefs, const), divisor = parts[0], parts[1][1]
            return {k: c / divisor for k, c in coefs.items()}, const / divisor
        raise self.error(node, f"unsupported: term operator {op!r}")

    def leaf(self, index: int) -> Linear:
        token = self.tokens[index]
        variable = self.variables.get(token)
        if variable is not None:
            return {variable: 1.0}, 0.0
        if _NUMBER.match(token):
            value = float(token)
            if value != value or abs(value) == float("inf"):
                raise self.error(index, f"bad number {token!r} (not finite)")
            return {}, value
        if _LOOKS_NUMERIC.match(token):
            raise self.error(index, f"bad number {token!r}")
        if _IDENTIFIER.match(token):
            raise self.error(index, f"undeclared variable {token!r}")
        raise self.error(index, f"unknown token {token!r}")

    # -- DNF terms -> cases ---------------------------------------------------------------
    def query(self, terms: list[Term]) -> VnnlibQuery:
        n_out = self.n_outputs
        boxes: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}  # id(bounds) -> box
        cases: dict[bytes, tuple[np.ndarray, np.ndarray, dict[bytes, HalfSpaces]]] = {}
        for t, (bounds, rows) in enumerate(terms):
            if id(bounds) not in boxes:
                where = "" if len(terms) == 1 else f" in DNF term {t + 1} of {len(terms)}"
                boxes[id(bounds)] = self.box(bounds, where)
            box = boxes[id(bounds)]
            if box is None:
                continue
            key = box[0].tobytes() + box[1].tobytes()
            unsafe = cases.setdefault(key, (*box, {}))[2]
            A = np.zeros((max(len(rows), 1), n_out))
            b = np.zeros(A.shape[0])
            for r, (outputs, coefs, rhs) in enumerate(rows):
                A[r, list(outputs)] = coefs
                b[r] = rhs
            A.setflags(write=False)
            b.setflags(write=False)
            unsafe.setdefault(A.tobytes() + b.tobytes(), HalfSpaces(A, b))
        return VnnlibQuery(
            self.n_inputs, n_out,
            tuple(Case(lo, hi, tuple(unsafe.values())) for lo, hi, unsafe in cases.values()),
        )

    def box(self, bounds: tuple[Bound, ...], where: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The read-only ``(lower, upper)`` the bounds give, or None when it is empty."""
        lower = np.full(self.n_inputs, -np.inf)
        upper = np.full(self.n_inputs, np.inf)
        if bounds:
            is_upper, index, value = (np.array(column) for column in zip(*bounds))
            np.maximum.at(lower, index[~is_upper], value[~is_upper])
            np.minimum.at(upper, index[is_upper], value[is_upper])
        for bound, name in ((lower, "lower"), (upper, "upper")):
            unbounded = np.flatnonzero(~np.isfinite(bound))
            if unbounded.size:
                raise SpecError(f"{self.source}: X_{unbounded[0]} has no {name} bound{where} "
                                "(every input needs finite bounds)")
        if np.any(lower > upper):
            log.debug("%s: empty input box%s; dropped", self.source, where)
            return None
        lower += 0.0  # -0.0 -> 0.0, so equal boxes have equal bytes
        upper += 0.0
        lower.setflags(write=False)
        upper.setflags(write=False)
        return lower, upper


def _combine(parts: list[Linear], scales: list[float]) -> Linear:
    """``sum_k scales[k] * parts[k]``."""
    coefs: dict[int, float] = {}
    const = 0.0
    for (part_coefs, part_const), scale in zip(parts, scales):
        const += scale * part_const
        for k, c in part_coefs.items():
            coefs[k] = coefs.get(k, 0.0) + scale * c
    return coefs, const


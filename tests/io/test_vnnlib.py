"""Tests of the VNN-LIB reader: real VNN-COMP files, semantics against a direct interpreter,
and the errors users see."""

from __future__ import annotations

import gzip
import operator
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certify.errors import ShapeMismatch, SpecError
from certify.io.vnnlib import MAX_TERMS, VnnlibQuery, parse_vnnlib, parse_vnnlib_text, to_problems
from certify.network import Network, Node, Op

BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks" / "vnncomp2021"
FILES = sorted(p for d in ("acasxu", "mnistfc", "test") for p in (BENCHMARKS / d).glob("*.vnnlib"))


def test_benchmark_files_are_present() -> None:
    """The shared benchmarks must be beside the project (a missing folder fails, never skips)."""
    assert len(FILES) >= 40, BENCHMARKS

NUM = r"([-+]?[\d.]+(?:[eE][-+]?\d+)?)"


def bounds_in(text: str, op: str) -> dict[int, list[float]]:
    """``{i: [values]}`` for every ``(op X_i value)`` in ``text``, in file order."""
    found: dict[int, list[float]] = {}
    for i, value in re.findall(rf"\({re.escape(op)} X_(\d+) {NUM}\)", text):
        found.setdefault(int(i), []).append(float(value))
    return found


def satisfied(query: VnnlibQuery, x: np.ndarray, y: np.ndarray) -> bool:
    """``x`` in some case's box and ``y`` in one of that case's disjuncts."""
    return any(
        np.all(case.lower <= x) and np.all(x <= case.upper) and any(hs.margin(y) <= 0 for hs in case.unsafe)
        for case in query.cases
    )


# -- real files ----------------------------------------------------------------------------

@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_benchmark_file_parses(path: Path) -> None:
    query = parse_vnnlib(path)
    assert query.cases
    for case in query.cases:
        assert case.lower.shape == case.upper.shape == (query.n_inputs,)
        assert np.all(np.isfinite(case.lower)) and np.all(np.isfinite(case.upper))
        assert np.all(case.lower <= case.upper)
        assert case.unsafe and all(hs.A.shape[1] == query.n_outputs for hs in case.unsafe)


def test_acasxu_prop_1_box_and_output_row() -> None:
    path = BENCHMARKS / "acasxu" / "prop_1.vnnlib"
    text = path.read_text()
    query = parse_vnnlib(path)
    assert (query.n_inputs, query.n_outputs, len(query.cases)) == (5, 5, 1)
    (case,) = query.cases
    assert len(case.unsafe) == 1
    uppers, lowers = bounds_in(text, "<="), bounds_in(text, ">=")
    assert [uppers[i][0] for i in range(5)] == case.upper.tolist()
    assert [lowers[i][0] for i in range(5)] == case.lower.tolist()
    # (assert (>= Y_0 c)) is the row -Y_0 <= -c.
    (threshold,) = re.findall(rf"\(>= Y_0 {NUM}\)", text)
    (hs,) = case.unsafe
    assert hs.A.tolist() == [[-1.0, 0.0, 0.0, 0.0, 0.0]]
    assert hs.b.tolist() == [-float(threshold)]


def test_acasxu_prop_6_has_two_input_boxes() -> None:
    path = BENCHMARKS / "acasxu" / "prop_6.vnnlib"
    text = path.read_text()
    query = parse_vnnlib(path)
    assert len(query.cases) == 2
    uppers, lowers = bounds_in(text, "<="), bounds_in(text, ">=")
    for k, case in enumerate(query.cases):
        assert case.upper.tolist() == [uppers[i][k] for i in range(5)]
        assert case.lower.tolist() == [lowers[i][k] for i in range(5)]
        # "unsafe if coc is not minimal": Y_j <= Y_0 for some j in 1..4, rows Y_j - Y_0 <= 0.
        rows = sorted(tuple(hs.A[0]) for hs in case.unsafe)
        assert rows == sorted(tuple(np.eye(5)[j] - np.eye(5)[0]) for j in range(1, 5))
        assert all(hs.b.tolist() == [0.0] for hs in case.unsafe)


@pytest.mark.parametrize("path", sorted((BENCHMARKS / "mnistfc").glob("*.vnnlib")), ids=lambda p: p.name)
def test_mnist_box_and_nine_disjuncts(path: Path) -> None:
    text = path.read_text()
    query = parse_vnnlib(path)
    assert (query.n_inputs, query.n_outputs, len(query.cases)) == (784, 10, 1)
    (case,) = query.cases
    uppers, lowers = bounds_in(text, "<="), bounds_in(text, ">=")
    assert case.upper.tolist() == [uppers[i][0] for i in range(784)]
    assert case.lower.tolist() == [lowers[i][0] for i in range(784)]
    assert len(case.unsafe) == 9
    # (>= Y_j Y_label) is the row Y_label - Y_j <= 0.
    pairs = re.findall(r"\(>= Y_(\d+) Y_(\d+)\)", text)
    expected = sorted(tuple(np.eye(10)[int(label)] - np.eye(10)[int(j)]) for j, label in pairs)
    assert sorted(tuple(hs.A[0]) for hs in case.unsafe) == expected
    assert all(hs.A.shape == (1, 10) and hs.b.tolist() == [0.0] for hs in case.unsafe)


# -- semantics: the parsed query agrees with a direct interpreter ----------------------------

def sexprs(text: str) -> list:
    """A tiny independent s-expression reader (comments dropped)."""
    tokens = re.findall(r"[()]|[^\s()]+", re.sub(r";[^\n]*", "", text))
    stack: list[list] = [[]]
    for token in tokens:
        if token == "(":
            stack.append([])
        elif token == ")":
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(token)
    assert len(stack) == 1
    return stack[0]


# Strict comparisons are read as non-strict by the parser (documented); mirror that here.
COMPARE = {"<=": operator.le, "<": operator.le, ">=": operator.ge, ">": operator.ge, "=": operator.eq}


def evaluate(expr, env: dict[str, float]):
    if isinstance(expr, str):
        if expr in ("true", "false"):
            return expr == "true"
        return env[expr] if expr in env else float(expr)
    op, *args = expr
    if op == "and":
        return all(evaluate(a, env) for a in args)
    if op == "or":
        return any(evaluate(a, env) for a in args)
    values = [evaluate(a, env) for a in args]
    if op in COMPARE:
        return all(COMPARE[op](a, b) for a, b in zip(values, values[1:]))
    if op == "+":
        return sum(values)
    if op == "-":
        return -values[0] if len(values) == 1 else values[0] - sum(values[1:])
    if op == "*":
        return float(np.prod(values))
    if op == "/":
        return values[0] / values[1]
    raise AssertionError(f"interpreter does not know {op}")


def holds_directly(text: str, x: np.ndarray, y: np.ndarray) -> bool:
    env = {f"X_{i}": float(v) for i, v in enumerate(x)} | {f"Y_{j}": float(v) for j, v in enumerate(y)}
    return all(evaluate(cmd[1], env) for cmd in sexprs(text) if cmd[0] == "assert")


# Halves and small integer factors keep every computation exact in float64, so points on a
# constraint's boundary are decided identically by both sides.
HALVES = st.integers(-4, 4).map(lambda k: k / 2)


def number(value: float) -> str:
    return repr(value) if value >= 0 or value != int(value) else str(int(value))


@st.composite
def y_term(draw, ny: int, depth: int = 1) -> str:
    kind = draw(st.sampled_from(["leaf", "leaf", "+", "neg", "-", "*", "*r", "/"])) if depth else "leaf"
    if kind == "leaf":  # one draw: an output variable or a constant
        k = draw(st.integers(0, ny + 8))
        return f"Y_{k}" if k < ny else number((k - ny - 4) / 2)
    sub = y_term(ny, depth - 1)
    if kind == "+":
        return f"(+ {' '.join(draw(st.lists(sub, min_size=1, max_size=3)))})"
    if kind == "neg":
        return f"(- {draw(sub)})"
    if kind == "-":
        return f"(- {draw(sub)} {draw(sub)})"
    factor = number(float(draw(st.integers(-2, 2))))
    if kind == "*":
        return f"(* {factor} {draw(sub)})"
    if kind == "*r":
        return f"(* {draw(sub)} {factor})"
    return f"(/ {draw(sub)} 2)"


@st.composite
def y_formula(draw, ny: int, depth: int = 2) -> str:
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        op = draw(st.sampled_from(["<=", ">=", "<", ">", "="]))
        return f"({op} {draw(y_term(ny))} {draw(y_term(ny))})"
    connective = draw(st.sampled_from(["and", "or"]))
    parts = draw(st.lists(y_formula(ny, depth - 1), min_size=1, max_size=2))
    return f"({connective} {' '.join(parts)})"


@st.composite
def x_bounds(draw, nx: int) -> list[str]:
    """Finite lower and upper bounds for every input, in a random order and spelling."""
    atoms = []
    for i in range(nx):
        lo = draw(HALVES)
        hi = lo + draw(st.integers(-1, 4)) / 2  # sometimes lo > hi: an empty box, dropped
        atoms.append(draw(st.sampled_from([f"(>= X_{i} {number(lo)})", f"(<= {number(lo)} X_{i})",
                                           f"(<= (- X_{i}) {number(-lo)})"])))
        atoms.append(draw(st.sampled_from([f"(<= X_{i} {number(hi)})", f"(> {number(hi)} X_{i})",
                                           f"(<= (* 2 X_{i}) {number(2 * hi)})"])))
    return draw(st.permutations(atoms))


@st.composite
def query_text(draw) -> tuple[str, int, int]:
    nx, ny = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    names = [f"X_{i}" for i in range(nx)] + [f"Y_{j}" for j in range(ny)]
    lines = [f"(declare-const {name} Real) ; declared in any order" for name in draw(st.permutations(names))]
    if draw(st.booleans()):
        lines += [f"(assert {atom})" for atom in draw(x_bounds(nx))]
    else:  # ACAS Xu prop_6 style: a disjunction of boxes, some carrying output constraints
        blocks = []
        for _ in range(draw(st.integers(1, 3))):
            extra = draw(st.lists(y_formula(ny, 1), max_size=1))
            blocks.append(f"(and {' '.join(draw(x_bounds(nx)) + extra)})")
        lines.append(f"(assert (or\n  {chr(10).join(blocks)}\n))")
    lines += [f"(assert {f})" for f in draw(st.lists(y_formula(ny), max_size=2))]
    return "\n".join(lines) + "\n", nx, ny


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=query_text(), seed=st.integers(0, 2**32 - 1))
def test_parsed_query_matches_direct_evaluation(query: tuple[str, int, int], seed: int) -> None:
    text, nx, ny = query
    parsed = parse_vnnlib_text(text)
    assert (parsed.n_inputs, parsed.n_outputs) == (nx, ny)
    # Points on the half-integer grid, plus the corners of every box, where bounds are tight.
    rng = np.random.default_rng(seed)
    xs = list(rng.integers(-5, 6, size=(20, nx)) / 2)
    for case in parsed.cases:
        xs += [case.lower, case.upper]
    for x in xs:
        y = rng.integers(-6, 7, size=ny) / 2
        assert satisfied(parsed, x, y) == holds_directly(text, x, y), (x, y)


# -- smaller features ------------------------------------------------------------------------

DECLS = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n(assert (>= X_1 0))\n"


def test_output_rows_with_sums_and_constants_on_both_sides() -> None:
    query = parse_vnnlib_text(DECLS + BOX + "(assert (>= (+ Y_0 1) (* 3 (- Y_1 2))))")
    (case,) = query.cases
    (hs,) = case.unsafe
    # y0 + 1 >= 3 y1 - 6  <=>  -y0 + 3 y1 <= 7
    assert hs.A.tolist() == [[-1.0, 3.0]] and hs.b.tolist() == [7.0]


def test_cancelled_variables_do_not_count() -> None:
    query = parse_vnnlib_text(DECLS + BOX + "(assert (<= (* 0 X_0) Y_0))\n(assert (<= (- X_1 X_1) 1))")
    (case,) = query.cases
    (hs,) = case.unsafe
    assert hs.A.tolist() == [[-1.0, 0.0]] and hs.b.tolist() == [0.0]


def test_no_output_constraint_means_every_output_is_unsafe() -> None:
    (case,) = parse_vnnlib_text(DECLS + BOX).cases
    (hs,) = case.unsafe
    assert hs.margin(np.array([1e9, -1e9])) <= 0


def test_boxes_are_grouped_and_empty_boxes_dropped() -> None:
    text = DECLS + """(assert (or
      (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0) (<= Y_0 0))
      (and (<= X_1 1) (>= X_1 0) (>= X_0 0) (<= X_0 1) (<= Y_1 0))
      (and (<= X_0 -1) (>= X_0 0) (<= X_1 1) (>= X_1 0) (<= Y_1 5))
    ))"""
    (case,) = parse_vnnlib_text(text).cases
    assert len(case.unsafe) == 2
    empty = parse_vnnlib_text(DECLS + BOX + "(assert (<= X_0 -1))")
    assert empty.cases == ()
    assert parse_vnnlib_text(DECLS + BOX + "(assert (< 1 0))").cases == ()


def test_case_arrays_are_read_only() -> None:
    (case,) = parse_vnnlib_text(DECLS + BOX + "(assert (<= Y_0 Y_1))").cases
    with pytest.raises(ValueError):
        case.lower[0] = 5.0


def test_gzip_and_declare_fun(tmp_path: Path) -> None:
    path = tmp_path / "p.vnnlib.gz"
    text = "(declare-fun X_0 () Real)\n(declare-fun X_1 () Real)\n(declare-fun Y_0 () Real)\n(declare-fun Y_1 () Real)\n"
    with gzip.open(path, "wt") as fh:
        fh.write(text + BOX + "(assert (<= Y_0 Y_1))\n(check-sat)\n")
    assert len(parse_vnnlib(path).cases) == 1


def test_dnf_blow_up_is_refused() -> None:
    ors = "".join(f"(assert (or (<= Y_0 {k}) (<= Y_1 {k})))\n" for k in range(17))  # 2**17 terms
    with pytest.raises(SpecError, match="more than 100000"):
        parse_vnnlib_text(DECLS + BOX + ors)
    assert MAX_TERMS == 100_000


# -- errors name the file and the line ---------------------------------------------------------

@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        ("(assert (<= Y_0 1)))", 5, "unbalanced ')'"),
        ("(assert (or (<= Y_0 1)\n", 5, "unbalanced '('"),
        ("\n\n(assert (or (<= Y_0 1)\n  (<= Y_1 2))\n(assert (<= Y_1 2))\n", 7, "unbalanced '('"),
        ("(declare-const X_0 Real)", 5, "X_0 declared twice"),
        ("(assert " + "(and " * 300 + "true" + ")" * 301, 5, "nested deeper than"),
        ("(assert (<= Y_9 1))", 5, "undeclared variable 'Y_9'"),
        ("(assert (<= Y_0 @))", 5, "unknown token '@'"),
        ("(assert (<= Y_0 1.2.3))", 5, "bad number '1.2.3'"),
        ("(assert (<= Y_0 1e))", 5, "bad number '1e'"),
        ("\n(assert (<= X_0 Y_0))", 6, "unsupported: constraint mixes inputs X and outputs Y"),
        ("(assert (<= (+ X_0 X_1) 1))", 5, "unsupported: linear constraint over several inputs"),
        ("(assert (<= (* Y_0 Y_1) 1))", 5, "unsupported: product of variables"),
        ("(assert (not (<= Y_0 1)))", 5, "unsupported: formula operator 'not'"),
        ("(push 1)", 5, "unknown command 'push'"),
        ("(declare-const Z Real)", 5, "unsupported: variable name 'Z'"),
    ],
)
def test_syntax_errors_name_file_and_line(body: str, line: int, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_vnnlib_text(DECLS + body, source="prop.vnnlib")
    text = str(info.value)
    assert text.startswith(f"prop.vnnlib:{line}: "), text
    assert message in text


def test_error_from_a_file_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "broken.vnnlib"
    path.write_text("; comment (with a paren\n" + DECLS + BOX + "(assert (<= Y_0 1)))\n")
    with pytest.raises(SpecError, match=re.escape(f"{path}:10: unbalanced ')'")):
        parse_vnnlib(path)


def test_missing_bound_is_named() -> None:
    text = DECLS + "(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= X_1 1))\n"
    with pytest.raises(SpecError, match="X_1 has no lower bound"):
        parse_vnnlib_text(text, source="p.vnnlib")


def test_undeclared_gap_in_indices() -> None:
    with pytest.raises(SpecError, match="^p.vnnlib:2: X_1 is not declared but X_2 is"):
        parse_vnnlib_text("(declare-const X_0 Real)\n(declare-const X_2 Real)\n(declare-const Y_0 Real)\n", "p.vnnlib")
    with pytest.raises(SpecError, match="no Y_ variables declared"):
        parse_vnnlib_text("(declare-const X_0 Real)\n")


def test_strict_comparisons_read_as_non_strict() -> None:
    strict = parse_vnnlib_text(DECLS + "(assert (> X_0 0))\n(assert (< X_0 1))\n(assert (> 1 X_1 0))\n"
                               "(assert (< Y_0 Y_1))")
    loose = parse_vnnlib_text(DECLS + BOX + "(assert (<= Y_0 Y_1))")
    ((a,), (b,)) = (strict.cases, loose.cases)
    assert a.lower.tolist() == b.lower.tolist() and a.upper.tolist() == b.upper.tolist()
    assert a.unsafe[0].A.tolist() == b.unsafe[0].A.tolist() and a.unsafe[0].b.tolist() == b.unsafe[0].b.tolist()


# -- to_problems -----------------------------------------------------------------------------

def tiny_network() -> Network:
    """Input of shape (2, 2), flattened, then a linear map to 2 outputs."""
    weight = torch.arange(8, dtype=torch.float64).reshape(4, 2)
    return Network(
        nodes=(
            Node("x", Op.INPUT, (), (2, 2)),
            Node("flat", Op.RESHAPE, ("x",), (4,), attrs={"shape": (4,)}),
            Node("fc", Op.LINEAR, ("flat",), (2,), params={"weight": weight, "bias": torch.zeros(2, dtype=torch.float64)}),
        ),
        output="fc",
        name="tiny",
    )


def decls(nx: int, ny: int) -> str:
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(nx)) + "".join(
        f"(declare-const Y_{j} Real)\n" for j in range(ny))


def box_atoms(nx: int, width: float = 0.5) -> str:
    return " ".join(f"(>= X_{i} {i}) (<= X_{i} {i + width})" for i in range(nx))


def box(nx: int) -> str:
    return f"(assert (and {box_atoms(nx)}))\n"


def test_to_problems_reshapes_row_major() -> None:
    query = parse_vnnlib_text(decls(4, 2) + box(4) + "(assert (or (<= Y_0 Y_1) (>= Y_0 3)))")
    (problem,) = to_problems(query, tiny_network(), name="p")
    assert problem.name == "p"
    assert problem.box.shape == (2, 2)
    assert problem.box.lower.tolist() == [[0.0, 1.0], [2.0, 3.0]]
    assert len(problem.unsafe) == 2


def test_to_problems_one_problem_per_case() -> None:
    text = decls(4, 2) + f"(assert (or (and {box_atoms(4)}) (and {box_atoms(4, 1.0)})))"
    problems = to_problems(parse_vnnlib_text(text), tiny_network(), name="p")
    assert [p.name for p in problems] == ["p#case0", "p#case1"]


@pytest.mark.parametrize(("nx", "ny", "expected"), [(5, 2, "5 inputs.*has 4"), (4, 3, "3 outputs.*has 2")])
def test_to_problems_size_mismatch(nx: int, ny: int, expected: str) -> None:
    query = parse_vnnlib_text(decls(nx, ny) + box(nx))
    with pytest.raises(ShapeMismatch, match=expected):
        to_problems(query, tiny_network())

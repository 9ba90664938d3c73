"""YAML spec files -> validated :class:`certify.spec.SpecDocument`.

Every problem with a spec file (unreadable, bad YAML, a wrong or missing field, a missing
``.npy`` input) becomes one :class:`certify.errors.SpecError` whose one-line message names
the file, the field path and the line, e.g.::

    spec.yaml: properties[0].eps: Input should be greater than 0 (line 7)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from certify.errors import SpecError
from certify.spec import KINDS, SpecDocument, describe_errors, format_path, input_path, parse_document


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a key repeated in one mapping (``eps`` twice...)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys are the base class's to reject
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_spec(path: str | Path) -> SpecDocument:
    """Read and validate the spec file ``path``; relative file paths resolve against its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: cannot read spec: {exc}") from exc
    return parse_spec(text, source=str(path), base_dir=path.parent)


def parse_spec(text: str, source: str = "<string>", base_dir: Path = Path(".")) -> SpecDocument:
    """Validate the YAML ``text``; ``source`` names it in error messages."""
    root, data = _read_yaml(text, source)
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise SpecError(
            f"{source}: expected one property (a mapping with kind: {' | '.join(KINDS)}) "
            f"or a 'properties:' list, found {found}"
        )
    try:
        doc = parse_document(data, base_dir, source)
    except ValidationError as exc:
        problems = [
            f"{format_path(where)}: {message} (line {_line_of(root, where)})"
            for where, message in describe_errors(exc)
        ]
        more = exc.error_count() - len(problems)
        tail = f" (+{more} more)" if more > 0 else ""
        raise SpecError(f"{source}: " + "; ".join(problems) + tail) from None
    _check_input_files(doc, root, source, nested="properties" in data)
    return doc


def _read_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The composed node tree (for line numbers) and the plain data of ``text``."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or exc.context or "malformed document"
        raise SpecError(f"{source}: invalid YAML: {problem}{where}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    return root, data


def _line_of(root: yaml.Node | None, path: tuple[int | str, ...]) -> int:
    """The 1-based line of the deepest node along ``path`` that exists in the document."""
    node = root
    if node is None:
        return 1
    for part in path:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            match = [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part]
            if not match:
                break
            node = match[0]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return node.start_mark.line + 1


def input_files(prop: Any) -> list[tuple[tuple[int | str, ...], str]]:
    """``(field path, file path)`` of every file a property reads (``.npz:key`` suffix removed)."""
    found: list[tuple[tuple[int | str, ...], str]] = []
    for name in ("input", "background", "target", "path"):
        value = getattr(prop, name, None)
        if isinstance(value, str):
            found.append(((name,), input_path(value)[0]))
    samples = getattr(prop, "samples", None)
    if isinstance(samples, str):
        found.append((("samples",), input_path(samples)[0]))
    elif isinstance(samples, list):
        found += [(("samples", k), input_path(v)[0]) for k, v in enumerate(samples) if isinstance(v, str)]
    envelope = getattr(prop, "envelope", None)
    if envelope is not None:
        for name in ("lower", "upper"):
            value = getattr(envelope, name)
            if isinstance(value, str):
                found.append((("envelope", name), input_path(value)[0]))
    return found


def _check_input_files(doc: SpecDocument, root: yaml.Node | None, source: str, nested: bool) -> None:
    """A file path that names no file is an error now, not at lowering time."""
    for i, prop in enumerate(doc.properties):
        for field, value in input_files(prop):
            if not (doc.base_dir / value).is_file():
                where: tuple[int | str, ...] = (("properties", i) if nested else ()) + field
                raise SpecError(
                    f"{source}: {format_path(where)}: no such file {str(doc.base_dir / value)!r} "
                    f"(line {_line_of(root, where)})"
                )

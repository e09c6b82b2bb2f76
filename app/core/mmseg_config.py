"""Read an MMSegmentation config file (0.x or 1.x) without running it.

A config is Python, but a lab's configs are plain assignments of literals, ``dict(...)``
calls and names defined earlier in the same file, with ``_base_`` naming the files they build
on. :func:`read_config` evaluates exactly that subset with :mod:`ast` (no ``exec``, no import,
no mmseg or mmcv): anything else becomes an :class:`Unreadable` value that is an error only
when the import needs it. Bases are merged as mmengine does: a child's dict merges into the
base's dict key by key (``_delete_=True`` replaces it), any other value replaces.
"""

from __future__ import annotations

import ast
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.errors import InputError

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


@dataclass(frozen=True)
class Unreadable:
    """A value the reader does not evaluate (a call, a lambda, ...), with where it was."""

    why: str


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _eval(node: ast.AST, names: dict[str, Any], where: str) -> Any:
    """Literal evaluation plus ``dict(...)``, names, unary minus and arithmetic on numbers.

    What is not such a value becomes :class:`Unreadable` in place, so one ``sum([...])`` deep
    in a model dict leaves the rest of the dict readable.
    """
    line = f"{where} line {getattr(node, 'lineno', '?')}"
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in names:
            return names[node.id]
        return Unreadable(f"{line}: '{node.id}' is not defined in this file")
    if isinstance(node, ast.List | ast.Tuple):
        items = [_eval(e, names, where) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        out: dict[Any, Any] = {}
        for k, v in zip(node.keys, node.values, strict=True):
            if k is None:
                spread = _eval(v, names, where)
                if not isinstance(spread, dict):
                    return Unreadable(f"{line}: ** of something that is not a dict")
                out.update(spread)
            else:
                out[_eval(k, names, where)] = _eval(v, names, where)
        return out
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        if node.args:
            return Unreadable(f"{line}: dict() with positional arguments")
        out = {}
        for kw in node.keywords:
            value = _eval(kw.value, names, where)
            if kw.arg is not None:
                out[kw.arg] = value
            elif isinstance(value, dict):
                out.update(value)
            else:
                return Unreadable(f"{line}: ** of something that is not a dict")
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand, names, where)
        if _number(value):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a, b = _eval(node.left, names, where), _eval(node.right, names, where)
        if _number(a) and _number(b):
            return _BINOPS[type(node.op)](a, b)
        if isinstance(node.op, ast.Add) and type(a) is type(b) and isinstance(a, list | tuple):
            return a + b
    return Unreadable(f"{line}: {type(node).__name__} is not read (the config is not run)")


def _merge(base: Any, child: Any) -> Any:
    if isinstance(base, dict) and isinstance(child, dict) and not child.get("_delete_", False):
        out = dict(base)
        for key, value in child.items():
            out[key] = _merge(base[key], value) if key in base else _strip(value)
        return out
    return _strip(child)


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "_delete_"}
    return value


def _read_file(path: Path, stack: tuple[Path, ...]) -> dict[str, Any]:
    if path in stack:
        raise InputError(path, "config includes itself through _base_")
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except FileNotFoundError as exc:
        raise InputError(path, "config file does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read config: {exc}") from exc
    except SyntaxError as exc:
        raise InputError(path, f"not valid Python (line {exc.lineno}: {exc.msg})") from exc
    names: dict[str, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom | ast.Import | ast.With):
            raise InputError(
                path,
                f"line {stmt.lineno}: imports are not read; new-style (read_base) configs "
                "cannot be imported, use the plain-dict config",
            )
        if not isinstance(stmt, ast.Assign) or len(stmt.targets) != 1:
            continue
        target = stmt.targets[0]
        if not isinstance(target, ast.Name):
            continue
        names[target.id] = _eval(stmt.value, names, path.name)
    bases = names.pop("_base_", [])
    if isinstance(bases, Unreadable):
        raise InputError(path, f"_base_ cannot be read ({bases.why})")
    merged: dict[str, Any] = {}
    for rel in [bases] if isinstance(bases, str) else list(bases):
        base_path = (path.parent / rel).resolve()
        if not base_path.is_file():
            raise InputError(path, f"_base_ names '{rel}', which is not a local file")
        for key, value in _read_file(base_path, (*stack, path)).items():
            merged[key] = value
    for key, value in names.items():
        merged[key] = _merge(merged[key], value) if key in merged else _strip(value)
    return merged


def read_config(path: str | Path) -> dict[str, Any]:
    """All top-level names of the config at ``path`` with its ``_base_`` files merged in."""
    path = Path(path).resolve()
    return _read_file(path, ())

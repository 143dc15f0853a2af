"""Typed configuration: plain ``@dataclass`` classes, loaded from YAML, unknown keys are errors.

Each component defines a dataclass with defaults and checks its values in ``__post_init__``. This
module turns nested dicts (from YAML or ``key.sub=value`` command-line overrides) into those classes
with type checks, and back. No ``eval``, no ``**kwargs`` that swallow typos.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

from jetfm.core.atomic import write_text_atomic
from jetfm.core.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str, file: str | None) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert where lossless (int -> float, list -> tuple)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where, file)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(
            " or ".join(_type_name(a) for a in args), file=file, field=where, found=repr(value)
        )
    if origin is typing.Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"one of {list(choices)}", file=file, field=where, found=repr(value))
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(
                f"a mapping for {tp.__name__}", file=file, field=where, found=repr(value)
            )
        return from_dict(tp, value, file=file, prefix=where)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError("a list", file=file, field=where, found=repr(value))
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(
                    f"a list of {len(args)} items", file=file, field=where, found=repr(value)
                )
            items = [
                _coerce(v, a, f"{where}[{i}]", file)
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            ]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{where}[{i}]", file) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError("a mapping", file=file, field=where, found=repr(value))
        kt, vt = get_args(tp) or (Any, Any)
        return {
            _coerce(k, kt, where, file): _coerce(v, vt, f"{where}.{k}", file)
            for k, v in value.items()
        }
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError("a number", file=file, field=where, found=repr(value))
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("an integer", file=file, field=where, found=repr(value))
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError("true or false", file=file, field=where, found=repr(value))
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError("a string", file=file, field=where, found=repr(value))
        return value
    if tp is Path:
        if not isinstance(value, str | os.PathLike):
            raise ConfigError("a path", file=file, field=where, found=repr(value))
        return Path(value)
    return value


def from_dict(
    cls: type[T], data: dict[str, Any], *, file: str | None = None, prefix: str = ""
) -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys and wrong types raise ConfigError."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"a mapping for {cls.__name__}", file=file, field=prefix or None, found=repr(data)
        )
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(
            f"one of the keys {sorted(fields)} of {cls.__name__}",
            file=file,
            field=where,
            found=f"unknown key '{unknown[0]}'",
        )
    kwargs = {}
    for name, value in data.items():
        where = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], where, file)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if exc.file is None and file is not None:
            raise ConfigError(exc.expected, file=file, field=exc.field, found=exc.found) from exc
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), file=file, field=prefix or cls.__name__) from exc


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain nested dict of YAML-safe values (tuples become lists, Paths strings)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
        if isinstance(v, list | tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return conv(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (["a", "b", "c"], value); the value is read as YAML (so 3, 0.1, true, [1,2])."""
    if "=" not in text:
        raise ConfigError(
            "an override of the form key.sub=value", field="override", found=repr(text)
        )
    key, raw = text.split("=", 1)
    path = [k for k in key.strip().split(".") if k]
    if not path:
        raise ConfigError("a non-empty key", field="override", found=repr(text))
    return path, yaml.safe_load(raw)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied (new keys are still checked later)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError("a mapping", field=".".join(path), found=repr(node))
        node[path[-1]] = value
    return out


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or non-mapping content is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("an existing YAML file", file=path, found="no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError("valid YAML", file=path, found=str(exc).splitlines()[0]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("a YAML mapping at top level", file=path, found=type(data).__name__)
    return data


def load_config(
    cls: type[T], path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> T:
    """Load ``cls`` from a YAML file (optional) plus command-line overrides."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data, file=None if path is None else str(path))


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically."""
    write_text_atomic(path, dump_yaml(cfg))

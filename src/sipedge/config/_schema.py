"""The one mechanism behind every config section.

A section is a frozen dataclass whose fields are declared with :func:`option`; the loader
checks types and validators, and ``sipedge init`` renders the same metadata as a
commented TOML file. Adding an option is adding one ``option(...)`` line.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ConfigError

Check = Callable[[Any], str | None]
"""Returns ``None`` when the value is fine, else what is expected (shown to the user)."""

T = TypeVar("T")


def option(default: Any, doc: str, check: Check | None = None) -> Any:
    """Declare a config option: its default, a one-line doc, and an optional validator."""
    if isinstance(default, list | dict):
        template = default

        def factory() -> Any:
            return type(template)(template)

        return dataclasses.field(default_factory=factory, metadata={"doc": doc, "check": check})
    return dataclasses.field(default=default, metadata={"doc": doc, "check": check})


def positive(v: Any) -> str | None:
    return None if v > 0 else "a number greater than 0"


def non_negative(v: Any) -> str | None:
    return None if v >= 0 else "a number >= 0"


def port(v: Any) -> str | None:
    return None if 0 <= v <= 65535 else "a port number 0..65535"


def networks(v: Any) -> str | None:
    """A list of IP addresses or networks (``trusted_peers``, ``sip.flood.trusted``)."""
    for item in v:
        try:
            ipaddress.ip_network(str(item), strict=False)
        except ValueError:
            return (
                'a list of IP addresses or networks like ["192.0.2.10", "10.1.0.0/16", '
                f'"2001:db8::/32"]; {item!r} is not'
            )
    return None


def one_of(*choices: str) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices else "one of " + ", ".join(repr(c) for c in choices)

    return check


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}s"
    return {str: "string", int: "integer", float: "number", bool: "boolean (true/false)"}.get(
        tp, str(tp)
    )


def _coerce(key: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for arg in args[:-1]:  # the first type the value fits (e.g. a string or a list of them)
            try:
                return _coerce(key, value, arg)
            except ConfigError:
                pass
        try:
            return _coerce(key, value, args[-1])
        except ConfigError:
            if len(args) == 1:
                raise
            raise ConfigError(f"{key} = {value!r}: expected " + " or ".join(_type_name(a) for a in args)) from None
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key} = {value!r}: expected {_type_name(tp)}")
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} = {value!r}: expected {_type_name(tp)}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key} = {value!r}: expected {_type_name(tp)}")
    if tp in (str, float) and not isinstance(value, tp):
        raise ConfigError(f"{key} = {value!r}: expected {_type_name(tp)}")
    return value


def build(cls: type[T], data: Any, prefix: str) -> T:
    """Build section ``cls`` from a TOML table, naming key, value and expectation on error."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{prefix}] must be a table, got {data!r}")
    assert dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}"
        if key not in known:
            raise ConfigError(
                f"{full}: unknown option; known options in [{prefix}] are "
                + ", ".join(sorted(known))
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = build(typing.cast(type[Any], tp), value, full)
            continue
        coerced = _coerce(full, value, tp)
        check = known[key].metadata.get("check")
        if check is not None:
            problem = check(coerced)
            if problem:
                raise ConfigError(f"{full} = {value!r}: expected {problem}")
        kwargs[key] = coerced
    return cls(**kwargs)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def render(cls: type[Any], prefix: str) -> list[str]:
    """Commented TOML lines for section ``cls`` with every option at its default."""
    lines = [f"[{prefix}]"]
    doc = (cls.__doc__ or "").strip().splitlines()
    if doc:
        lines.insert(0, f"# {doc[0]}")
    nested: list[tuple[str, type[Any]]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            nested.append((f.name, typing.cast(type[Any], tp)))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()  # type: ignore[misc,operator]
        lines.append(f"# {f.metadata.get('doc', '')}")
        lines.append(f"{f.name} = {_toml_value(default)}")
    for name, sub in nested:
        lines.append("")
        lines.extend(render(sub, f"{prefix}.{name}"))
    return lines

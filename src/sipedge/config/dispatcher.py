"""Config section of the dispatcher: destination sets of upstream gateways and PBXs
(Kamailio's dispatcher module; docs/routing.md, "Dispatcher").

``[[dispatcher.sets]]`` tables are checked when the file is read (a bad one refuses the
start, naming the set and the key) and turned into :class:`DestinationSet` values by
:meth:`DispatcherConfig.destination_sets`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ._schema import non_negative, option, positive

ALGORITHMS = ("round_robin", "weighted", "hash_call_id", "hash_from_user", "priority")

_SET_KEYS = {"id", "algorithm", "destinations"}
_DEST_KEYS = {"uri", "weight", "priority", "attrs"}


@dataclass(frozen=True, slots=True)
class DestinationConfig:
    """One gateway or PBX of a set."""

    uri: str  # where it is reached: sip:host[:port][;transport=...]
    weight: int = 1  # its share with the "weighted" algorithm
    priority: int = 0  # higher first: the order of the set (and of "priority")
    attrs: dict[str, str] = field(default_factory=dict)  # free attributes, shown by `ctl ds list`


@dataclass(frozen=True, slots=True)
class DestinationSet:
    id: int
    algorithm: str
    destinations: tuple[DestinationConfig, ...]


def _status_patterns(v: Any) -> str | None:
    for item in v:
        if not _is_status_pattern(item):
            return f'a list of SIP status codes or classes, like ["5xx", "486"]; {item!r} is not'
    return None


def _is_status_pattern(text: str) -> bool:
    return len(text) == 3 and text[0] in "3456" and (
        text[1:].isdigit() or text[1:].lower() == "xx"
    )


def status_matches(patterns: tuple[str, ...] | list[str], status: int) -> bool:
    """``status`` is one of ``patterns`` ("503", or "5xx" for the whole class)."""
    code = str(status)
    return any(p == code or (p[1:].lower() == "xx" and p[0] == code[0]) for p in patterns)


def _known_keys(table: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown key; known keys are " + ", ".join(sorted(known)))


def _destination(raw: Any, where: str) -> DestinationConfig:
    if isinstance(raw, str):
        raw = {"uri": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a URI string or a table with uri, weight, priority, attrs; got {raw!r}")
    _known_keys(raw, _DEST_KEYS, where)
    uri = raw.get("uri")
    # (the URI itself is parsed by the dispatcher, a layer up: it refuses the start the same way)
    if not isinstance(uri, str) or not uri.lower().startswith(("sip:", "sips:")) or "@" in uri:
        raise ConfigError(f"{where}.uri = {uri!r}: expected a SIP URI without a user, like \"sip:192.0.2.10:5060\"")
    weight, priority = raw.get("weight", 1), raw.get("priority", 0)
    if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 1000:
        raise ConfigError(f"{where}.weight = {weight!r}: expected an integer 0..1000")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigError(f"{where}.priority = {priority!r}: expected an integer")
    attrs = raw.get("attrs", {})
    if not isinstance(attrs, dict) or not all(isinstance(k, str) and isinstance(v, str | int) for k, v in attrs.items()):
        raise ConfigError(f"{where}.attrs = {attrs!r}: expected a table of strings")
    return DestinationConfig(uri, weight, priority, {k: str(v) for k, v in attrs.items()})


def parse_sets(raw: list[Any]) -> tuple[DestinationSet, ...]:
    """The ``[[dispatcher.sets]]`` tables as values; ConfigError naming the bad key."""
    out: list[DestinationSet] = []
    seen: set[int] = set()
    for i, table in enumerate(raw):
        where = f"dispatcher.sets[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table ([[dispatcher.sets]]), got {table!r}")
        _known_keys(table, _SET_KEYS, where)
        set_id = table.get("id")
        if isinstance(set_id, bool) or not isinstance(set_id, int) or set_id < 0:
            raise ConfigError(f"{where}.id = {set_id!r}: expected an integer >= 0")
        if set_id in seen:
            raise ConfigError(f"{where}.id = {set_id}: another set has this id")
        seen.add(set_id)
        algorithm = table.get("algorithm", "round_robin")
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"{where}.algorithm = {algorithm!r}: expected one of " + ", ".join(map(repr, ALGORITHMS)))
        dests = table.get("destinations")
        if not isinstance(dests, list) or not dests:
            raise ConfigError(f"{where}.destinations = {dests!r}: expected a non-empty list of destinations")
        parsed = tuple(_destination(d, f"{where}.destinations[{j}]") for j, d in enumerate(dests))
        if algorithm == "weighted" and not any(d.weight for d in parsed):
            raise ConfigError(f"{where}: algorithm \"weighted\" needs a destination with a weight above 0")
        out.append(DestinationSet(set_id, algorithm, parsed))
    return tuple(out)


def _sets(v: Any) -> str | None:
    try:
        parse_sets(v)
    except ConfigError as exc:
        return f"valid destination sets ({exc})"
    return None


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    """Destination sets of gateways and PBXs, OPTIONS probing and failover (docs/routing.md)."""

    sets: list[dict[str, Any]] = option(
        [], "destination sets: [[dispatcher.sets]] with id, algorithm, destinations (see docs/routing.md)", _sets
    )
    probe_interval: float = option(
        10.0, "seconds between OPTIONS probes of each destination (0 = no probing: all stay up)", non_negative
    )
    probe_timeout: float = option(5.0, "seconds a probe may wait for its answer before it counts as failed", positive)
    failure_threshold: int = option(3, "failed probes in a row that mark a destination down", positive)
    success_threshold: int = option(1, "answered probes in a row that mark a down destination up", positive)
    probe_ok_codes: list[str] = option(
        [], 'probe answers that count as alive besides 2xx, e.g. ["404", "405"] for gateways that refuse OPTIONS',
        _status_patterns,
    )
    probe_from: str = option("sip:dispatcher@sipedge.invalid", "From URI of the probes")
    failover_codes: list[str] = option(
        ["5xx"], "answers of a destination that make the call try the next one (besides a timeout)", _status_patterns
    )

    def destination_sets(self) -> tuple[DestinationSet, ...]:
        return parse_sets(self.sets)

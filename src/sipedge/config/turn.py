"""Config section of the STUN/TURN role (owned by the TURN work; see stun/ and turn/)."""

from __future__ import annotations

from dataclasses import dataclass

from ._schema import option


@dataclass(frozen=True, slots=True)
class TurnConfig:
    """STUN/TURN server (RFC 8489/8656)."""

    enabled: bool = option(False, "run the STUN/TURN server inside `sipedge serve`")

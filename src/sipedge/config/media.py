"""Config section of the media relay role (owned by the media work; see sdp/ and media/)."""

from __future__ import annotations

from dataclasses import dataclass

from ._schema import option


@dataclass(frozen=True, slots=True)
class MediaConfig:
    """Media relay (rtpengine class)."""

    enabled: bool = option(False, "run the media relay inside `sipedge serve`")

"""The interface the proxy uses to engage a media relay, local or remote.

``server.media.MediaServer`` (in-process relay) and ``server.ng.NgRemote`` (a remote
sipedge or rtpengine over the ng protocol) both provide it, so routing code is written once.
SDP goes in and out as bytes. Failures raise ``ParseError`` (hint ``(488, "Bad SDP: ...")``,
local relay only) or ``RelayError`` (``hint`` = the SIP status and reason to answer with).
"""

from __future__ import annotations

from typing import Any, Protocol

from .relay import Flags


class MediaControl(Protocol):
    async def offer(
        self, call_id: str, from_tag: str, sdp: bytes, flags: Flags | None = None, to_tag: str | None = None
    ) -> bytes:
        """Rewrite the SDP of an offer sent by ``from_tag`` (INVITE, re-INVITE, UPDATE)."""
        ...

    async def answer(
        self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, flags: Flags | None = None
    ) -> bytes:
        """Rewrite the SDP of an answer sent by ``to_tag`` (183/200 or ACK with SDP)."""
        ...

    async def delete(
        self, call_id: str, from_tag: str | None = None, to_tag: str | None = None, branch_only: bool = False
    ) -> Any:
        """End the call's media (BYE, CANCEL, final failure), or one forked branch."""
        ...

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
        self, call_id: str, from_tag: str, sdp: bytes, flags: Flags | None = None, to_tag: str | None = None,
        via_branch: str | None = None,
    ) -> bytes:
        """Rewrite the SDP of an offer sent by ``from_tag`` (INVITE, re-INVITE, UPDATE);
        with ``via_branch``, for that branch of a forked INVITE only (rtpengine's
        ``via-branch``: our Via branch of that client transaction)."""
        ...

    async def answer(
        self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, flags: Flags | None = None,
        via_branch: str | None = None,
    ) -> bytes:
        """Rewrite the SDP of an answer sent by ``to_tag`` (183/200 or ACK with SDP), from
        the branch ``via_branch`` when it was offered per branch."""
        ...

    async def delete(
        self, call_id: str, from_tag: str | None = None, to_tag: str | None = None, branch_only: bool = False,
        via_branch: str | None = None,
    ) -> Any:
        """End the call's media (BYE, CANCEL, final failure), or one forked branch (the one
        answered with ``to_tag``, or the one offered for ``via_branch``)."""
        ...

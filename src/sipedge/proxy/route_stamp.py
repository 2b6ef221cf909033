"""Stamped Record-Route: proof, without state, that an in-dialog request follows a
route this proxy recorded.

A proxy that honours any Route naming it relays in-dialog requests for anyone: a
stranger sends a request with a To tag and ``Route: <sip:us;lr>`` and we carry it to
whatever its Request-URI names. So our Record-Route entries carry ``;sg=``, a keyed
BLAKE2b MAC of the dialog's Call-ID and the From tag of the request that recorded the
route. The UAs copy the entry into the Route sets of their in-dialog requests (RFC 3261
§12.1), which carry that tag as their From tag (the caller's requests) or as their To
tag (the callee's), so one MAC checks both directions. Only a holder of the key can
write a stamp, the key is derived from the data directory's secret (it survives a
restart), and nodes that share the secret accept each other's routes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

PARAM = "sg"


class RouteStamp:
    """Writes and checks the ``sg`` parameter of our Record-Route entries."""

    def __init__(self, secret: bytes) -> None:
        # a key of its own, so a stamp never doubles as a digest nonce MAC
        self._key = hashlib.blake2b(b"sipedge record-route stamp", key=secret[:64], digest_size=32).digest()

    def stamp(self, call_id: str, tag: str) -> str:
        material = f"{call_id}\x00{tag}".encode("utf-8", "surrogateescape")
        return hashlib.blake2b(material, key=self._key, digest_size=10).hexdigest()

    def verify(self, value: str | None, call_id: str, tags: Iterable[str | None]) -> bool:
        """True when ``value`` is the stamp of this Call-ID with one of ``tags``."""
        if not value:
            return False
        return any(tag and hmac.compare_digest(value, self.stamp(call_id, tag)) for tag in tags)

"""Who we are: our listeners (with advertised addresses) and the domains we serve.

The proxy asks this to recognise its own Route/Record-Route entries and Request-URIs,
to pick the listener a branch leaves from, and to build Via and Record-Route values.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._common.addr import canonical_host, host_for_uri, is_ipv6
from ..sip.flow import Flow, Target
from ..sip.uri import SipUri

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "ws": 80, "tls": 5061, "wss": 443}


@dataclass(frozen=True, slots=True)
class Listener:
    """One bound socket: transport, bound host/port, and what we advertise for it."""

    transport: str
    host: str
    port: int
    advertise_host: str = ""
    advertise_port: int = 0

    @property
    def public_host(self) -> str:
        return self.advertise_host or self.host

    @property
    def public_port(self) -> int:
        return self.advertise_port or self.port

    @property
    def ipv6(self) -> bool:
        return is_ipv6(self.host)

    @property
    def name(self) -> str:
        return f"{self.transport}:{host_for_uri(self.host)}:{self.port}"

    def via_sent_by(self) -> str:
        return f"{host_for_uri(self.public_host)}:{self.public_port}"

    def uri(self, **params: str | None) -> SipUri:
        """A SIP URI pointing at this listener (for Record-Route and Path)."""
        p: dict[str, str | None] = {}
        if self.transport != "udp":
            # RFC 7118 §5.2: the URI transport is "ws" for secure WebSockets too ("WSS"
            # exists only in Via)
            p["transport"] = "ws" if self.transport == "wss" else self.transport
        p.update(params)
        return SipUri("sip", None, host_for_uri(self.public_host).lower(), self.public_port, None, p)


class Identity:
    """Our addresses and domains. Hosts are compared in their canonical spelling
    (:func:`canonical_host`): ``127.0.0.1.``, ``[::ffff:127.0.0.1]`` and ``127.0.0.1``
    are the same host, and so are ``Example.COM.`` and ``example.com``."""

    def __init__(self, listeners: list[Listener], domains: list[str] | None = None) -> None:
        if not listeners:
            raise ValueError("at least one listener is needed")
        self.listeners = listeners
        self.domains = {canonical_host(d) for d in (domains or [])}
        self._addresses: set[tuple[str, int]] = set()
        for li in listeners:
            for h in {li.host, li.public_host}:
                for p in {li.port, li.public_port}:
                    self._addresses.add((canonical_host(h), p))
        self._hosts = {a for a, _ in self._addresses}
        self._ports = {p for _, p in self._addresses}

    def is_me(self, host: str, port: int | None, transport: str = "udp") -> bool:
        """Does ``host:port`` name one of our listeners? Without a port, any of our
        listening ports will do (Kamailio's ``myself`` check does the same)."""
        h = canonical_host(host)
        if port is None:
            return h in self._hosts or h in self.domains
        # a domain of ours names us on any of our ports (an outbound proxy set by name)
        return (h, port) in self._addresses or (h in self.domains and port in self._ports)

    def uri_is_me(self, uri: SipUri) -> bool:
        return self.is_me(uri.host, uri.port, uri.transport)

    def listener_named(self, uri: SipUri) -> Listener | None:
        """The listener one of our URIs (a Record-Route entry) stands for: same transport
        ("ws" in a URI is WS or WSS), host and port, bound or advertised."""
        transport = (uri.transport or ("tls" if uri.scheme == "sips" else "udp")).lower()
        host = canonical_host(uri.host)
        for li in self.listeners:
            if ("ws" if li.transport == "wss" else li.transport) != transport:
                continue
            if host in (canonical_host(li.host), canonical_host(li.public_host)) and (
                uri.port is None or uri.port in (li.port, li.public_port)
            ):
                return li
        return None

    def holds(self, flow: Flow) -> bool:
        """``flow`` is on one of our listeners: same transport and port, and its local
        host that listener's (any host for a wildcard listener, whose connections have
        the interface's address)."""
        host, port = flow.local
        return any(
            li.transport == flow.transport and li.port == port and li.host in (host, "0.0.0.0", "::")
            for li in self.listeners
        )

    def listener_by_name(self, name: str) -> Listener | None:
        """The listener called ``name`` (``Listener.name``, as bindings store it)."""
        return next((li for li in self.listeners if li.name == name), None)

    def is_local_domain(self, host: str) -> bool:
        """True when ``host`` is a domain we are responsible for (RFC 3261 §16.4)."""
        if not self.domains:
            return True
        h = canonical_host(host)
        return h in self.domains or h in self._hosts

    def listener_for_flow(self, flow: Flow) -> Listener:
        for li in self.listeners:
            if li.transport == flow.transport and (li.host, li.port) == flow.local:
                return li
        return self.listener_for(flow.transport, is_ipv6(flow.remote[0]))

    def listener_for(self, transport: str, ipv6: bool = False) -> Listener:
        """The listener a message for ``transport`` leaves from (same family preferred)."""
        same = [li for li in self.listeners if li.transport == transport]
        for li in same:
            if li.ipv6 == ipv6:
                return li
        if same:
            return same[0]
        for li in self.listeners:
            if li.ipv6 == ipv6:
                return li
        return self.listeners[0]

    def listener_for_target(self, target: Target) -> Listener:
        return self.listener_for(target.transport, is_ipv6(target.host))

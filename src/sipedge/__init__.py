"""sipedge: a SIP edge for WebRTC and NAT traversal.

SIP proxy/registrar, media relay and STUN/TURN server in one package. Nothing runs at
import; ``sipedge.cli.main`` is the entry point and ``sipedge.server.app`` the
composition root.
"""

__version__ = "0.1.0"

"""SDES-SRTP (RFC 4568) terminated on the stream facing an SDES party: a leg whose profile
is ``RTP/SAVP(F)`` with ``a=crypto`` lines, bridged to a plain RTP party or to a
DTLS-SRTP one (whose side :mod:`.bridge` terminates).

Keys travel in the SDP, so there is no handshake: each direction has its own master key.

- **Towards the SDES party** we write our own ``a=crypto`` lines: in an offer one per
  suite we support (tags 1..n, :data:`OFFERED_SUITES` filtered by the ``SDES`` flags),
  each with a fresh key of ours; in an answer exactly one, with the tag and suite of the
  first line of its offer that we support. Our keys are kept per stream and per suite,
  so a re-offer repeats them.
- **From the SDES party** its ``a=crypto`` gives the key we unprotect with: in its offer
  the line our answer accepted; in its answer the line whose tag we offered.

The :class:`SdesStream` on the stream then holds one :class:`~.srtp.SrtpTransform`
(protect with our key, unprotect with the party's), rebuilt only when a key or the
suite changes. Anything unusable (no supported suite, a key of the wrong length, a tag
we never offered) is a :class:`~.model.RelayError` 488 with the reason.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ParseError
from ..sdp import Crypto
from .model import RelayError
from .srtp import KeyedLater, SdesKeyParams, SrtpTransform, generate_sdes_key

OFFERED_SUITES: tuple[str, ...] = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32", "AEAD_AES_128_GCM")
"""The suites we offer an SDES party, in order (rtpengine's order for these three)."""

NO_SUITE = (488, "No supported SDES suite")

_HARMLESS_SESSION_PARAMS = ("WSH=",)  # a window size hint: libsrtp's window is wider anyway

UNPROTECTED_ITEMS = ("unencrypted_srtp", "unencrypted_srtcp", "unauthenticated_srtp")
"""rtpengine's ``SDES`` items asking for SRTP without encryption or authentication
(RFC 4568 §6.3.2-6.3.4 session parameters): refused, the relay always protects both."""

DEFAULT_ITEMS = ("encrypted_srtp", "encrypted_srtcp", "authenticated_srtp")
"""Their opposites: what the relay does anyway (accepted, no effect)."""

SDES_ITEMS = ("pad", "lifetime", *UNPROTECTED_ITEMS, *DEFAULT_ITEMS)
"""The ``SDES`` items kept in :attr:`Flags.sdes` besides ``off``, ``no-``, ``only-``:
``pad`` keeps the base64 padding (``=``) of our keys, which is left out by default
(rtpengine's reading of RFC 4568 §6.1); ``lifetime`` writes the key lifetime ``|2^31``
in our lines."""


def refuse(reason: str) -> RelayError:
    return RelayError(reason, NO_SUITE)


def our_line(tag: int, suite: str, key: SdesKeyParams, flags: Sequence[str]) -> Crypto:
    """Our ``a=crypto`` line with ``key``, as the ``SDES`` items ``pad`` and ``lifetime``
    say (RFC 4568 §6.1: ``inline:<key||salt>[|lifetime]``); a key of ours has no MKI."""
    text = key.serialize()
    if "pad" not in flags:
        text = text.rstrip("=")
    if "lifetime" in flags:
        text += "|2^31"
    return Crypto(tag, suite, text)


def check_items(flags: Sequence[str]) -> None:
    """RelayError 488 for the ``SDES`` items the relay cannot honour."""
    unprotected = [f for f in flags if f in UNPROTECTED_ITEMS]
    if unprotected:
        raise refuse(f"SDES-{unprotected[0]} is not supported: the relay always encrypts and "
                     "authenticates SRTP and SRTCP")


def allowed_suites(flags: Sequence[str]) -> tuple[str, ...]:
    """The suites the ``SDES`` flags leave (``no-<suite>`` removes one, ``only-<suite>``
    keeps only those named), in our order."""
    only = {f[len("only-"):].upper() for f in flags if f.startswith("only-")}
    no = {f[len("no-"):].upper() for f in flags if f.startswith("no-")}
    return tuple(s for s in OFFERED_SUITES if s not in no and (not only or s in only))


def _usable(line: str, suites: Sequence[str]) -> tuple[Crypto, SdesKeyParams]:
    """One party ``a=crypto`` line as (line, key), or ParseError saying why not."""
    c = Crypto.parse(line)
    suite = c.suite.upper()
    if suite not in suites:
        raise ParseError(f"SDES suite {c.suite} not supported (we take {', '.join(suites) or 'none'})")
    odd = [p for p in c.session_params if not p.upper().startswith(_HARMLESS_SESSION_PARAMS)]
    if odd:
        raise ParseError(f"SDES session parameters {' '.join(odd)} not supported")
    key = SdesKeyParams.parse(c.key_params, suite)
    if key.mki is not None:
        raise ParseError("SDES keys with an MKI are not supported")
    return c, key


def choose_offered(lines: Sequence[str], suites: Sequence[str]) -> tuple[Crypto, SdesKeyParams]:
    """The first line of an SDES party's offer that we can use; RelayError 488 otherwise."""
    reasons: list[str] = []
    for line in lines:
        try:
            return _usable(line, suites)
        except ParseError as exc:
            reasons.append(f"a=crypto:{line.split(' ', 2)[0]}: {exc}")
    if not lines:
        raise refuse("SDES offer without a=crypto lines")
    raise refuse("no usable a=crypto line: " + "; ".join(reasons))


class SdesStream(KeyedLater):
    """SDES-SRTP facing one party: our keys per suite, what we offered it, and the
    transform once both keys of one suite are known."""

    __slots__ = ("keys", "offered", "remote", "suite", "tag")

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, SdesKeyParams] = {}  # ours, per suite (kept across re-offers)
        self.offered: dict[int, str] = {}  # tag -> suite of our last offer to the party
        self.suite: str | None = None
        self.tag: int | None = None
        self.remote: SdesKeyParams | None = None  # the party's key

    # -- offer/answer -------------------------------------------------------------------
    def key(self, suite: str) -> SdesKeyParams:
        found = self.keys.get(suite)
        if found is None:
            found = self.keys[suite] = generate_sdes_key(suite)
        return found

    def offer_lines(self, suites: Sequence[str], items: Sequence[str] = ()) -> list[Crypto]:
        """Our ``a=crypto`` lines for an offer to the party: tags 1..n (``items``: the
        ``SDES`` flags, for :func:`our_line`)."""
        self.offered = {tag: suite for tag, suite in enumerate(suites, 1)}
        return [our_line(tag, suite, self.key(suite), items) for tag, suite in self.offered.items()]

    def answer_line(self, party_offer: Sequence[str], suites: Sequence[str], items: Sequence[str] = ()) -> Crypto:
        """Our one ``a=crypto`` line answering the party's offer (its first usable line:
        same tag and suite, our key); its key is the one we unprotect with from now on."""
        c, theirs = choose_offered(party_offer, suites)
        suite = c.suite.upper()
        self._use(suite, c.tag, theirs)
        return our_line(c.tag, c.suite, self.key(suite), items)

    def accept_answer(self, party_answer: Sequence[str]) -> None:
        """The party answered our offer: its line names one of our tags and that tag's
        suite, with its key."""
        reasons: list[str] = []
        for line in party_answer:
            try:
                c = Crypto.parse(line)
                suite = self.offered.get(c.tag)
                if suite is None or suite != c.suite.upper():
                    raise ParseError(f"tag {c.tag} {c.suite} is not one we offered")
                _, theirs = _usable(line, (suite,))
            except ParseError as exc:
                reasons.append(str(exc))
                continue
            self._use(suite, c.tag, theirs)
            return
        if not party_answer:
            raise refuse("SDES answer without an a=crypto line")
        raise refuse("SDES answer: " + "; ".join(reasons))

    def _use(self, suite: str, tag: int, theirs: SdesKeyParams) -> None:
        if self.srtp is not None and self.suite == suite and self.remote == theirs:
            self.tag = tag
            return  # same keys: keep the transform (its replay window and rollover)
        self.srtp = SrtpTransform.from_sdes(suite, local=self.key(suite), remote=theirs)
        self.suite, self.tag, self.remote = suite, tag, theirs


"""Config of dialog tracking and accounting (docs/operations.md, "Dialogs" and
"Accounting (CDRs)"): the ``[dialog]`` and ``[accounting]`` sections, read by
:class:`sipedge.proxy.dialog.DialogTable` and ``store/dialogs.py``."""

from __future__ import annotations

from dataclasses import dataclass

from ._schema import non_negative, option, positive


def _at_least_one(v: object) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v >= 1 else "a whole number of seconds, 1 or more"


@dataclass(frozen=True, slots=True)
class DialogConfig:
    """The calls the proxy record-routes (Kamailio's dialog module and its profiles)."""

    enabled: bool = option(True, "keep dialog state (and CDRs) for record-routed INVITEs")
    max_per_user: int = option(
        0, "concurrent calls one authenticated caller may have; one more gets 486 (0 = unlimited)", non_negative
    )
    max_per_source: int = option(
        0, "concurrent calls from one source IP; one more gets 503 (0 = unlimited)", non_negative
    )
    max_total: int = option(0, "concurrent calls in all; one more gets 503 (0 = unlimited)", non_negative)
    session_expires_min: int = option(
        90,
        "smallest RFC 4028 session interval accepted: an INVITE/UPDATE asking for less gets "
        "422 with this Min-SE (RFC 4028 says 90; tests may go lower)",
        _at_least_one,
    )
    setup_timeout: float = option(
        200.0, "seconds a call may stay unanswered before it is forgotten (above Timer C)", positive
    )
    ack_timeout: float = option(
        32.0, "seconds after the 2xx of an INVITE within which its ACK must pass, or the call is ended", positive
    )
    db_flush_interval: float = option(
        1.0,
        "seconds between commits of dialog changes and CDRs to the database, in one transaction "
        "(0 = write each change at once; a crash loses at most this much)",
        non_negative,
    )
    max_lifetime: float = option(
        43200.0, "seconds an answered call may last before the server ends it (0 = no limit)", non_negative
    )


@dataclass(frozen=True, slots=True)
class AccountingConfig:
    """Call detail records (Kamailio's acc module)."""

    database: bool = option(True, "write each call attempt's record to the cdr table of the database")
    jsonl: str = option("", "also append each record as a JSON line to this file (empty = no)")

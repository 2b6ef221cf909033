"""``sipedge ctl``: look inside a running server and act on it, as kamcmd does for
Kamailio. It speaks JSON-RPC over the server's control socket (``general.control_socket``,
by default ``<data_dir>/control.sock``): run it as the user that runs ``sipedge serve``.

Tables for people; ``--json`` prints the reply as it came, for scripts.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from pathlib import Path
from typing import Any

from ..config import load_config
from ..errors import Error

TIMEOUT = 10.0


class CtlError(Error):
    """The server could not be asked, or refused the command."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ctl = subparsers.add_parser("ctl", help="control a running server (registrations, calls, bans, reload)")
    ctl.add_argument("--config", "-c", metavar="FILE", help="the server's TOML config (to find its control socket)")
    ctl.add_argument("--socket", "-s", metavar="PATH", help="the control socket (default: from the config)")
    ctl.add_argument("--json", action="store_true", help="print the JSON reply instead of a table")
    ctl.set_defaults(func=run, method=None)
    groups = ctl.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)

    def command(parent: Any, name: str, method: str, help_text: str, *args: tuple[str, str, bool]) -> None:
        p = parent.add_parser(name, help=help_text)
        for arg, arg_help, optional in args:
            p.add_argument(arg, nargs="?" if optional else None, help=arg_help)
        p.set_defaults(method=method, params=[a[0] for a in args])

    command(groups, "help", "help", "the commands the server offers")
    command(groups, "stats", "stats", "every counter (as /metrics)", ("prefix", "only counters starting so", True))
    command(groups, "reload", "reload", "re-read the routing module and the TLS certificate")
    ul = groups.add_parser("ul", help="registered contacts (user location)").add_subparsers(
        dest="ul_command", metavar="ACTION", required=True)
    command(ul, "dump", "ul.dump", "every registered contact")
    command(ul, "show", "ul.show", "the contacts of one AoR", ("aor", "user@domain", False))
    command(ul, "rm", "ul.rm", "remove an AoR's contacts, or one", ("aor", "user@domain", False),
            ("contact", "only this contact URI", True))
    media = groups.add_parser("media", help="calls in the media relay").add_subparsers(
        dest="media_command", metavar="ACTION", required=True)
    command(media, "list", "media.list", "the calls the relay holds")
    command(media, "query", "media.query", "one call's streams and packets", ("call_id", "the Call-ID", False))
    turn = groups.add_parser("turn", help="the TURN server").add_subparsers(
        dest="turn_command", metavar="ACTION", required=True)
    command(turn, "allocations", "turn.allocations", "the TURN allocations")
    trace = groups.add_parser("trace", help="the per-call SIP message trace").add_subparsers(
        dest="trace_command", metavar="ACTION", required=True)
    command(trace, "list", "trace.list", "the traced calls, most recent first")
    command(trace, "show", "trace.show", "one call's messages in order (--json: whole)",
            ("call_id", "the Call-ID", False))
    ban = groups.add_parser("ban", help="banned sources (flood protection)").add_subparsers(
        dest="ban_command", metavar="ACTION", required=True)
    command(ban, "list", "ban.list", "the banned sources")
    command(ban, "add", "ban.add", "ban a source IP", ("source", "IP address", False),
            ("seconds", "how long (default: sip.flood.ban_time)", True))
    command(ban, "rm", "ban.rm", "lift a ban", ("source", "IP address", False))
    dlg = groups.add_parser("dlg", help="calls the proxy follows (dialogs)").add_subparsers(
        dest="dlg_command", metavar="ACTION", required=True)
    command(dlg, "list", "dlg.list", "the calls")
    command(dlg, "show", "dlg.show", "one call's dialog", ("call_id", "the Call-ID", False))
    command(dlg, "end", "dlg.end", "end a call (BYE to both parties)", ("call_id", "the Call-ID", False))
    log = groups.add_parser("log", help="logging").add_subparsers(dest="log_command", metavar="ACTION", required=True)
    command(log, "level", "log.level", "show or set the log level", ("level", "debug, info, warning or error", True))


def run(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    for name in args.params:
        value = getattr(args, name)
        if value is None:
            continue
        if name == "seconds":
            try:
                value = float(value)
            except ValueError:
                raise CtlError(f"seconds must be a number, not {value!r}") from None
        params[name] = value
    path = Path(args.socket) if args.socket else _socket_from_config(args.config)
    result = call(path, args.method, params)
    if args.json:
        print(json.dumps(result, indent=2, default=str))  # noqa: T201
    else:
        print(render(args.method, result))  # noqa: T201
    return 0


def _socket_from_config(config_path: str | None) -> Path:
    from ..server.control import control_socket_path

    path = control_socket_path(load_config(config_path))
    if path is None:
        raise CtlError('general.control_socket is "off" in that config: the server has no control socket')
    return path


def call(path: Path, method: str, params: dict[str, Any]) -> Any:
    """Send one request; the result, or CtlError with the server's message."""
    request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(TIMEOUT)
            s.connect(str(path))
            s.sendall(request)
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise CtlError(f"no control socket at {path}: is `sipedge serve` running with this config? "
                       "(give it with --config, or the socket with --socket)") from None
    except PermissionError:
        raise CtlError(f"not allowed to open {path}: run as the user that runs `sipedge serve`") from None
    except (ConnectionRefusedError, OSError) as exc:
        raise CtlError(f"cannot talk to the server at {path}: {exc}; is it running?") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise CtlError(f"the server at {path} sent no valid reply") from None
    if "error" in reply:
        raise CtlError(f"{method}: {reply['error'].get('message')}")
    return reply.get("result")


# -- tables ----------------------------------------------------------------------------
COLUMNS: dict[str, tuple[str, ...]] = {
    "ul.dump": ("aor", "contact", "expires", "received", "socket", "user_agent"),
    "ul.show": ("aor", "contact", "expires", "received", "socket", "user_agent"),
    "media.list": ("call_id", "created", "tags", "rtp_packets", "rtcp_packets"),
    "dlg.list": ("call_id", "state", "caller", "callee", "user", "source", "duration", "expires_in"),
    "turn.allocations": ("client", "username", "relayed", "expires", "permissions"),
    "ban.list": ("source", "seconds_left", "dropped"),
    "trace.list": ("call_id", "from", "to", "first", "last", "messages", "status"),
    "trace.show": ("time", "direction", "transport", "local", "remote", "first_line"),
    "help": ("name", "params", "summary"),
}


def render(method: str, result: Any) -> str:
    """A table for lists of records, ``name value`` lines for flat objects, JSON else."""
    columns = COLUMNS.get(method)
    if method == "trace.list" and isinstance(result, dict):
        result = [{**c, "first": _clock(c["first"]), "last": _clock(c["last"])} for c in result.get("calls", [])]
    elif method == "trace.show" and isinstance(result, dict):
        result = [{**m, "time": _clock(m["time"])} for m in result.get("messages", [])]
    if isinstance(result, list):
        if not result:
            return "(none)"
        if columns is None:
            columns = tuple(result[0])
        return table(columns, [[_cell(row.get(c)) for c in columns] for row in result])
    if isinstance(result, dict) and all(not isinstance(v, dict | list) for v in result.values()):
        width = max((len(k) for k in result), default=0)
        return "\n".join(f"{k:<{width}}  {_cell(v)}" for k, v in result.items())
    return json.dumps(result, indent=2, default=str)


def _clock(when: float) -> str:
    """Wall-clock seconds as local HH:MM:SS.mmm (a trace's time column)."""
    return time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d}"


def _cell(value: Any) -> str:
    """A table cell; control characters (a peer's User-Agent or SIP first line could carry
    terminal escape sequences) shown escaped, never sent to the terminal."""
    if isinstance(value, list):
        text = ",".join(str(v) for v in value)
    else:
        text = "" if value is None else str(value)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def table(columns: tuple[str, ...], rows: list[list[str]]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)

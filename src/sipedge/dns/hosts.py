"""The hosts file (``/etc/hosts``): parsed here, read by the adapter.

Names found there are answered before DNS for A/AAAA, as the system resolver does
(``localhost``, lab set-ups without DNS).
"""

from __future__ import annotations

import ipaddress

from .naptr_srv import normalize_name

HostsTable = dict[tuple[str, str], tuple[str, ...]]


def parse_hosts(text: str) -> HostsTable:
    """``{(name, "A" | "AAAA"): (ip, ...)}`` from hosts-file text; bad lines are skipped."""
    table: dict[tuple[str, str], list[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            ip = ipaddress.ip_address(fields[0].split("%", 1)[0])
        except ValueError:
            continue
        rtype = "A" if ip.version == 4 else "AAAA"
        for alias in fields[1:]:
            name = normalize_name(alias)
            if name is None:
                continue
            ips = table.setdefault((name, rtype), [])
            if str(ip) not in ips:
                ips.append(str(ip))
    return {k: tuple(v) for k, v in table.items()}

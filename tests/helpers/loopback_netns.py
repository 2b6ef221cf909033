"""Run a WebRTC scenario of a helper module (``main(name, tmp)`` printing one JSON line)
in a private network namespace with only loopback and a veth with 192.0.2.1, so ICE
never probes a real interface."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

MARKS = [
    pytest.mark.netns,
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a network namespace"),
    pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None,
                       reason="needs util-linux unshare and iproute2"),
]
"""The ``pytestmark`` of a test module running such scenarios."""

NETNS_SETUP = (
    "ip link set lo up && ip link add v0 type veth peer name v1 && ip addr add 192.0.2.1/24 dev v0 "
    "&& ip link set v1 up && ip link set v0 up && exec \"$0\" -c \"$1\""
)


def run_scenario(module: str, name: str, tmp: Path) -> dict[str, Any]:
    """``helpers.<module>.main(name, tmp)`` under ``unshare --net``: its JSON result, and
    its stderr as ``log``."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}:{ROOT / 'src'}")
    code = f"from helpers.{module} import main; main({name!r}, {str(tmp)!r})"
    res = subprocess.run(["unshare", "--net", "sh", "-c", NETNS_SETUP, sys.executable, code],
                         capture_output=True, text=True, timeout=100, env=env, cwd=ROOT / "tests")
    assert res.returncode == 0, res.stderr[-6000:]
    return dict(json.loads(res.stdout.strip().splitlines()[-1]), log=res.stderr)

"""Run a browser scenario of ``worker.py`` in a private network namespace.

pytest stays in the machine's namespaces; only the worker (sipedge, Chromium, SIPp and the
Playwright driver) runs inside ``unshare --net --pid --mount-proc --fork``, where the only
interface is loopback: ICE never probes a real interface and no port clashes with other
servers on the machine. The fresh PID namespace ends every process the worker leaves
behind (Chromium helpers, sipedge, SIPp) when it exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

WORKER = Path(__file__).resolve().parent / "worker.py"
CHROMIUM = "/usr/bin/chromium"


def missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not Path(CHROMIUM).exists():
        return "Debian chromium not installed (scripts/setup-web test)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare/ip not installed (util-linux, iproute2)"
    if not (Path(__file__).resolve().parents[2] / "src/sipedge/web/static/jssip.js").is_file():
        return "JsSIP not bundled (scripts/setup-web)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "Python playwright not installed (scripts/setup-web test)"
    if os.geteuid() != 0:
        return "needs root for unshare --net"
    return None


def run_scenario(scenario: str, outdir: Path, timeout: float = 45.0, worker: Path = WORKER,
                 netns: str | None = None, args: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``worker.py SCENARIO OUTDIR [ARGS]`` (or another ``worker`` script taking the same
    arguments) in a new loopback-only namespace, or in the ``ip netns`` named ``netns``
    (still in a PID namespace of its own); return its ``result.json`` (with ``error`` set
    when the worker failed or timed out)."""
    outdir.mkdir(parents=True, exist_ok=True)
    where = ["ip", "netns", "exec", netns, "unshare"] if netns else ["unshare", "--net"]
    cmd = [*where, "--pid", "--mount-proc", "--fork", "--kill-child",
           sys.executable, str(worker), scenario, str(outdir), *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    with (outdir / "worker.log").open("wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # our own session: unshare and its namespace
                proc.wait(5)
    result_file = outdir / "result.json"
    result: dict[str, Any] = json.loads(result_file.read_text()) if result_file.is_file() else {}
    if proc.returncode != 0 and not result.get("error"):
        result["error"] = f"worker exited with {proc.returncode} (timeout {timeout:.0f}s?)"
    result.setdefault("error", None)
    return result


def report(outdir: Path, result: dict[str, Any]) -> str:
    """The worker's result and the tails of its logs, for an assertion message."""
    parts = [json.dumps(result, indent=1)[-3000:]]
    for name in ("worker.log", "sipedge.log", "console-alice.log", "console-bob.log", "sipp.out"):
        f = outdir / name
        if f.is_file():
            parts.append(f"--- {name}\n" + f.read_text(errors="replace")[-2500:])
    return "\n".join(parts)

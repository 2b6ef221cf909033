"""Coverage-guided fuzzing in CI: each target of ``fuzz/targets.py`` (SIP codec and
ProxyCore, SDP and the relay's rewriting through ng, bencode and the ng server, STUN and
the TURN core, the WebSocket connection) runs under atheris for a bounded time from the
repository's vectors. The line each prints (runs, corpus size, coverage) is the record
of the run; a crash fails the test and names the input it left behind.

Longer runs: ``python -m fuzz.run --seconds 600`` (docs/security.md, "Fuzzing").
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz.run import run_target  # noqa: E402
from fuzz.targets import TARGETS  # noqa: E402

SECONDS = 12

pytestmark = [
    pytest.mark.timeout(SECONDS + 120),
    pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                       reason="atheris not installed (scripts/setup test installs it)"),
]


@pytest.mark.parametrize("name", list(TARGETS))
def test_fuzz_target_finds_no_crash(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_target(name, SECONDS, tmp_path)
    with capsys.disabled():
        print("\nfuzz " + json.dumps({"target": out.target, "seconds": out.seconds, "runs": out.runs,
                                      "corpus": out.corpus, "coverage": out.coverage, "crash": out.crash}))
    assert not out.crash, f"{name}: crash, input in {out.artifact}\n{out.log_tail}"
    assert out.runs > 1000 and out.corpus > sum(1 for _ in TARGETS[name].seeds())

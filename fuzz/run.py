"""Run the fuzz targets with atheris (coverage-guided libFuzzer for Python), each for a
bounded time in a process of its own, and report what each did.

    python -m fuzz.run                        # every target, 30 s each
    python -m fuzz.run --seconds 300 sip ws   # some, longer
    python -m fuzz.run --corpus fuzz/corpus   # keep the corpus between runs

A crash (an exception other than ParseError, or a broken invariant, see targets.py)
stops that target, leaves the input as ``crash-*`` in its artifact directory and makes
the exit status 1. The summary (one JSON line per target: runs, seconds, corpus size,
coverage, crash) is printed and, with ``--report``, written to a file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Outcome:
    target: str
    seconds: int
    runs: int
    corpus: int  # inputs in the corpus when the run ended (seeds included)
    coverage: int  # libFuzzer's "cov:" (edges of instrumented Python code)
    crash: bool
    artifact: str | None
    log_tail: str


def _child(name: str, seconds: int, corpus: Path, artifacts: Path, max_len: int) -> None:
    """Inside the fuzzing process: instrument sipedge, seed the corpus, run libFuzzer."""
    import atheris

    with atheris.instrument_imports(include=["sipedge", "fuzz", "websockets"]):
        from fuzz.targets import TARGETS

        factory = TARGETS[name]
        target = factory()  # imports what it drives (the ws target: server.ws)
    corpus.mkdir(parents=True, exist_ok=True)
    for seed in factory.seeds():  # type: ignore[attr-defined]
        (corpus / ("seed-" + hashlib.sha1(seed).hexdigest())).write_bytes(seed)

    def one(data: bytes) -> None:
        target(data)

    atheris.Setup(
        [sys.argv[0], str(corpus), f"-max_total_time={seconds}", f"-max_len={max_len}",
         "-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={artifacts}/",
         "-print_final_stats=1"],
        one,
    )
    atheris.Fuzz()


def run_target(name: str, seconds: int, corpus_root: Path, max_len: int = 4096) -> Outcome:
    corpus = corpus_root / name
    artifacts = corpus_root / f"{name}-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", "--child", name, "--seconds", str(seconds),
         "--corpus", str(corpus), "--artifacts", str(artifacts), "--max-len", str(max_len)],
        cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120,
    )
    log = proc.stderr + proc.stdout
    runs = re.findall(r"Done (\d+) runs in", log)
    cov = re.findall(r"cov: (\d+)", log)
    crashes = sorted(artifacts.glob("crash-*")) + sorted(artifacts.glob("timeout-*")) + sorted(
        artifacts.glob("oom-*"))
    return Outcome(
        target=name,
        seconds=seconds,
        runs=int(runs[-1]) if runs else 0,
        corpus=sum(1 for _ in corpus.iterdir()) if corpus.exists() else 0,
        coverage=int(cov[-1]) if cov else 0,
        crash=proc.returncode != 0 or bool(crashes),
        artifact=str(crashes[0]) if crashes else None,
        log_tail="\n".join(log.splitlines()[-40:]),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", help="sip, sdp, bencode, stun, ws (default: all)")
    p.add_argument("--seconds", type=int, default=30, help="time per target (default 30)")
    p.add_argument("--corpus", type=Path, help="corpus directory (default: a temporary one)")
    p.add_argument("--report", type=Path, help="also write the JSON lines here")
    p.add_argument("--max-len", type=int, default=4096)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--artifacts", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child, args.seconds, args.corpus, args.artifacts, args.max_len)
        return 0
    from fuzz.targets import TARGETS

    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        p.error(f"unknown target {', '.join(unknown)}: one of {', '.join(TARGETS)}")
    root = args.corpus or Path(tempfile.mkdtemp(prefix="sipedge-fuzz-"))
    lines = []
    failed = False
    for name in names:
        out = run_target(name, args.seconds, root, args.max_len)
        failed |= out.crash
        summary = {k: v for k, v in asdict(out).items() if k != "log_tail"}
        lines.append(json.dumps(summary))
        print(lines[-1], flush=True)
        if out.crash:
            print(out.log_tail, file=sys.stderr)
    if args.report:
        args.report.write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

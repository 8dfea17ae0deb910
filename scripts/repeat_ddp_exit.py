"""Run the smallest 2-process (gloo) training N times in a row and count the runs whose exit was
not clean: the teardown abort ("terminate called without an active exception", SIGABRT in a
worker) shows as a non-zero exit code or that line on stderr.

    python scripts/repeat_ddp_exit.py [N] [key=value ...]    (default N=20)

Prints one line per run and a final count; exits 1 when any run aborted. The workers run with
PYTHONFAULTHANDLER=1, so an abort prints the Python stack of every thread at that moment; the
whole stderr of an aborted run is kept in aborted_<i>.log in the current folder.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "engine" / "standin_main.py"
ABORT_MARKS = ("terminate called", "SIGABRT", "Aborted")


def main(argv) -> int:
    runs = int(argv[0]) if argv and argv[0].isdigit() else 20
    overrides = [a for a in argv if "=" in a]
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            out = subprocess.run([sys.executable, str(SCRIPT), "--mode", "train", "--output-dir", f"{tmp}/run{i}",
                                  "--nproc", "2", "data.batch_size=1", *overrides], cwd=ROOT, capture_output=True,
                                 text=True, timeout=300, env=os.environ | {"PYTHONFAULTHANDLER": "1"})
            marks = [m for m in ABORT_MARKS if m in out.stderr]
            failed = out.returncode != 0 or bool(marks)
            bad += failed
            print(f"run {i + 1}/{runs}: exit {out.returncode}" + (f" ABORT {marks}" if failed else ""), flush=True)
            if failed:
                Path(f"aborted_{i + 1}.log").write_text(out.stderr)
    print(f"{bad} of {runs} runs aborted", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

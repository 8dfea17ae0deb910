"""Everything that needs a GPU, in one command, with one JSON of results.

    python scripts/gpu_check.py --out gpu_check.json [--wheels DIR] [--quick]

On a machine where torch with CUDA is already installed (no venv needed), from the repository root:
  1. installs the wheels in --wheels DIR (plyfile, tensorboardX, spconv-cu126 ...) offline, if given;
  2. runs the CUDA tests: `pytest -m cuda` (tests marked `cuda`, or skipped without CUDA: see
     tests/conftest.py), then the AMP and forced-CUDA-path tests (tests/sparse/test_amp.py,
     tests/sparse/test_cuda_branch.py) in full;
  3. runs the benchmarks on CUDA: scripts/bench_sparse.py (fp32 and bf16 autocast), every other
     scripts/bench_*.py that takes --device and --json (bench_data.py has no device work), and the
     model zoo (scripts/bench_models.py --recipes);
  4. trains demo.yaml on CUDA under bf16 autocast for a few iterations (device=cuda train.amp=bf16).
Each step records its command, exit code, seconds and output tail; the JSON also holds the parsed
test counts, the benchmark JSONs and the training summary. Exit code 1 if any step failed.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def step(name: str, cmd: list, results: dict, timeout: int, env=None) -> dict:
    """Run cmd from the repository root; record and print its outcome under results["steps"][name]."""
    print(f"== {name}: {' '.join(map(str, cmd))}", flush=True)
    start = time.perf_counter()
    try:
        out = subprocess.run([str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                             env=env)
        code, text = out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as exc:
        code, text = 124, f"timed out after {timeout} s\n" + str(exc.stdout or "")[-4000:]
    record = {"cmd": " ".join(map(str, cmd)), "rc": code, "seconds": round(time.perf_counter() - start, 1),
              "tail": text[-4000:]}
    results["steps"][name] = record
    print(f"   rc={code} in {record['seconds']} s", flush=True)
    return record


def pytest_counts(text: str) -> dict:
    """{'passed': n, 'failed': n, 'skipped': n, ...} from pytest's last summary line."""
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", text)}


def device_info() -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        info.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(0),
                    bf16=torch.cuda.is_bf16_supported())
    return info


def other_benchmarks() -> list:
    """scripts/bench_*.py other than bench_sparse / bench_data whose --help offers --device and --json."""
    found = []
    for script in sorted((ROOT / "scripts").glob("bench_*.py")):
        if script.name in ("bench_sparse.py", "bench_data.py"):
            continue
        help_text = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True,
                                   text=True, timeout=120).stdout
        if "--device" in help_text and "--json" in help_text:
            found.append((script, help_text))
    return found


def real_scan() -> Path | None:
    real = Path(os.environ.get("VOXSEG_REAL_DATA", ROOT.parent / "shared" / "data" / "real"))
    scans = sorted(real.glob("scannet/scans/*/*_vh_clean_2.ply"))
    return scans[0] if scans else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the one JSON of results")
    p.add_argument("--wheels", type=Path, help="a folder of wheels to install first (offline)")
    p.add_argument("--quick", action="store_true", help="fewer benchmark repeats and training iterations")
    p.add_argument("--iterations", type=int, default=None, help="AMP training iterations (default 30, quick 10)")
    args = p.parse_args(argv)

    results = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "steps": {}}
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    if args.wheels:
        wheels = sorted(args.wheels.glob("*.whl"))
        step("install_wheels", [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", args.wheels,
                                *wheels], results, 600)
    results["device"] = device_info()
    if not results["device"]["cuda_available"]:
        results["error"] = "torch sees no CUDA device: nothing to check"
        args.out.write_text(json.dumps(results, indent=2))
        print(results["error"])
        return 1

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    test_steps = [step("cuda_tests", [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "tests"],
                       results, 900, env),
                  step("amp_tests", [sys.executable, "-m", "pytest", "-q", "-rs", "tests/sparse/test_amp.py",
                                     "tests/sparse/test_cuda_branch.py"], results, 600, env)]
    for rec in test_steps:
        rec["counts"] = pytest_counts(rec["tail"])

    repeats = "3" if args.quick else "5"
    for amp in ("none", "bf16"):
        path = work / f"bench_sparse_{amp}.json"
        rec = step(f"bench_sparse_{amp}", [sys.executable, "scripts/bench_sparse.py", "--device", "cuda", "--amp", amp,
                                           "--repeats", repeats, "--json", path], results, 900, env)
        rec["json"] = json.loads(path.read_text()) if path.is_file() else None
    scan = real_scan()
    for script, help_text in other_benchmarks():
        path = work / f"{script.stem}.json"
        extra = []
        if "--ply" in help_text:
            if scan is None:
                results["steps"][script.stem] = {"skipped": "needs --ply: no real scan found (VOXSEG_REAL_DATA)"}
                continue
            extra = ["--ply", scan]
        rec = step(script.stem, [sys.executable, script, "--device", "cuda", "--json", path, *extra], results, 900, env)
        rec["json"] = json.loads(path.read_text()) if path.is_file() else None
    if scan is not None:  # the model zoo: every recipe and mink-m (README's Models table, GPU column)
        path = work / "bench_models_recipes.json"
        rec = step("bench_models_recipes", [sys.executable, "scripts/bench_models.py", "--recipes", "--device", "cuda",
                                            "--ply", scan, "--json", path], results, 900, env)
        rec["json"] = json.loads(path.read_text()) if path.is_file() else None

    iterations = args.iterations or (10 if args.quick else 30)
    run_dir = work / "amp_demo"
    rec = step("amp_train_demo", [sys.executable, "main.py", "--config", "demo.yaml", "--output-dir", run_dir,
                                  "device=cuda", "train.amp=bf16", f"train.iterations={iterations}",
                                  f"train.val_every={iterations}", f"train.ckpt_every={iterations}",
                                  f"data.cache_dir={work / 'cache'}", "train.progress=false"], results, 900, env)
    summary = run_dir / "summary.json"
    rec["summary"] = json.loads(summary.read_text()) if summary.is_file() else None

    failed = [name for name, r in results["steps"].items() if r.get("rc", 0) != 0]
    failed += [name for name in ("cuda_tests", "amp_tests")
               if any(results["steps"][name]["counts"].get(k) for k in ("failed", "error", "errors"))]
    results["failed_steps"] = sorted(set(failed))
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {args.out}; failed steps: {results['failed_steps'] or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""scripts/report.py on folders without scenes: a profile run's page holds its memory report; bad
folders and files are one line naming them."""
import json
import subprocess
import sys

from lib.units import MIB
from tests.conftest import ROOT
from tests.report.conftest import main_py


def report(*args):
    return subprocess.run([sys.executable, "-m", "scripts.report", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_profile_run_page_holds_the_memory_report(tmp_path):
    run = tmp_path / "profile"
    main_py("--config", "demo.yaml", "--mode", "profile", "--output-dir", run, f"data.cache_dir={tmp_path / 'cache'}",
            "train.progress=false", "profile.timeline_png=false")
    done = report(run)
    assert done.returncode == 0, done.stderr
    page = (run / "report.html").read_text()
    memory = json.loads((run / "memory_report.json").read_text())
    assert "<h3>Memory report</h3>" in page
    assert f"<b>{memory['total_peak_bytes'] / MIB:,.1f} MiB</b> with parameters and buffers" in page
    assert memory["modules"] and all(f"<td>{m['name']}</td>" in page for m in memory["modules"])
    assert 'id="voxseg-canvas"' not in page and "http://" not in page and "https://" not in page


def test_bad_folders_and_files_are_one_line(tmp_path):
    done = report(tmp_path / "absent", "--out", tmp_path / "r.html")
    assert done.returncode == 2 and done.stderr.strip() == f"error: {tmp_path / 'absent'}: no such run folder"
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text("{not json")
    done = report(run)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(f"error: {run / 'metrics.json'}: not a JSON file")
    assert len(done.stderr.strip().splitlines()) == 1

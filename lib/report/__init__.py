"""The run report: one self-contained HTML page per run, or one comparing several runs.

`write_run_report(run_dir, out=None)` writes <run_dir>/report.html (test, predict, train or profile
folders); `write_report(run_dirs, out)` the comparison page. CLI: `python -m scripts.report RUN_DIR
[RUN_DIR ...] --out report.html`. See lib/report/collect.py for what is read from a run folder.
"""
from lib.report.html import write_report, write_run_report

__all__ = ["write_report", "write_run_report"]

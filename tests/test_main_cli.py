"""main.py's command line: the options a user is promised, and config errors as one line."""
import subprocess
import sys

from tests.conftest import ROOT


def run_main(*args):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_lists_every_option():
    out = run_main("--help")
    assert out.returncode == 0
    for option in ("--config", "--mode", "train,test,profile", "--output-dir", "--weights", "--resume",
                   "--nproc", "--print-config", "key=value"):
        assert option in out.stdout, option


def test_print_config_applies_overrides_given_after_options():
    out = run_main("--config", "demo.yaml", "--print-config", "seed=42")
    assert out.returncode == 0, out.stderr
    assert "seed: 42" in out.stdout


def test_config_error_is_one_line_with_suggestion():
    out = run_main("--config", "demo.yaml", "sed=1")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == ["error: unknown key 'sed' (from command line); did you mean 'seed'?"]

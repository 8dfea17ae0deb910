"""main.py's command line: the options a user is promised, and config errors as one line."""
import subprocess
import sys

from tests.conftest import ROOT


def run_main(*args):
    return subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_lists_every_option():
    out = run_main("--help")
    assert out.returncode == 0
    for option in ("--config", "--mode", "train,test,predict,profile", "--input", "--output-dir", "--weights", "--resume",
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


def test_removed_aux_weight_is_a_one_line_error_naming_loss_weights():
    out = run_main("--config", "demo.yaml", "train.loss.aux_weight=2.0")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "train.loss.aux_weight" in lines[0] and "train.loss_weights.<name>" in lines[0]


def test_unknown_hook_is_an_error_with_the_closest_name(tmp_path):
    out = run_main("--config", "demo.yaml", "train.hooks=['logging', 'chekpoint']", "--output-dir", str(tmp_path))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == ("error: train.hooks: unknown hook 'chekpoint'; "
                                                   "did you mean 'checkpoint'?")


def test_resume_forms():
    """--resume (always), --resume auto / --resume=auto (when last.pth exists), and a key=value
    after a bare --resume stays an override."""
    from main import parse_args

    assert parse_args(["--config", "demo.yaml"]).resume is False
    assert parse_args(["--config", "demo.yaml", "--resume"]).resume is True
    assert parse_args(["--config", "demo.yaml", "--resume", "auto"]).resume == "auto"
    assert parse_args(["--config", "demo.yaml", "--resume=auto", "seed=1"]).resume == "auto"
    args = parse_args(["--config", "demo.yaml", "--resume", "seed=1"])
    assert args.resume is True and args.overrides == ["seed=1"]

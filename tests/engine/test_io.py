"""Atomic writes honour the umask (a group can read run folders) and the temporaries a killed run
leaves are removed, counted and logged, when the next run starts in that folder."""
import json
import logging
import os
import stat

import pytest

from lib.io import atomic_write_json, atomic_write_text, remove_stale_temporaries


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_files_get_the_mode_open_would_give(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        with open(tmp_path / "b.txt", "w") as f:  # the reference: what a plain open() creates
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == expected
    assert stat.S_IMODE(os.stat(tmp_path / "b.txt").st_mode) == expected
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path):
    atomic_write_text(tmp_path / "config.yaml", "seed: 0\n")
    (tmp_path / ".last.pth.k2j3h4.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / ".summary.json.x9.tmp").write_text("{")
    (tmp_path / "notes.tmp").write_text("a user's file, not ours")
    assert remove_stale_temporaries(tmp_path) == 2
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "notes.tmp"]
    assert remove_stale_temporaries(tmp_path / "missing") == 0


def test_a_run_starting_in_a_folder_cleans_it_and_logs_the_count(tmp_path):
    from lib.engine.process import process
    from tests.engine import standin_main
    (tmp_path / ".last.pth.abc123.tmp").write_bytes(b"killed mid-write")
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("voxseg").addHandler(handler)
    try:
        with process(standin_main.config([]), tmp_path):
            pass
    finally:
        logging.getLogger("voxseg").removeHandler(handler)
    assert not (tmp_path / ".last.pth.abc123.tmp").exists()
    assert any("removed 1 temporary file(s)" in r.getMessage() for r in records)

"""Docstrings and comments point inside the repository: a path of the machine the code was written
on (/work/..., /home/...) means nothing to a reader of the repository; docs/ holds the method pages."""
import re

from tests.conftest import ROOT

OUTSIDE = re.compile(r"(?<![\w.])/(?:work|home)/[\w./-]+")


def test_sources_name_no_file_outside_the_repository():
    found = []
    for folder in ("lib", "models", "datasets", "scripts", "config"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".yaml") and path.is_file():
                for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                    if OUTSIDE.search(line):
                        found.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_method_page_the_model_docstrings_name_exists():
    for module in ("models/codedvtr.py", "models/vtr.py"):
        text = (ROOT / module).read_text(encoding="utf-8")
        assert "docs/CODEDVTR.md" in text, module
    assert (ROOT / "docs" / "CODEDVTR.md").is_file()

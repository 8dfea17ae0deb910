"""README.md as a test: every `python main.py ...` (and `torchrun ... main.py ...`) command in the
README and in `main.py --help` resolves, checked by running it with `--print-config` (which loads the
recipe, applies the overrides and validates them, then exits). A command naming a recipe that does
not exist fails here: that is the guard against documenting a command that cannot run."""
import contextlib
import io
import re
import shlex

import pytest

import main
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _logical_lines(block: str):
    """Lines of a shell block with backslash continuations joined."""
    return re.sub(r"\\\n\s*", " ", block).splitlines()


def _command(line: str) -> str:
    """The line without its comment, as one shell command."""
    return shlex.join(shlex.split(line, comments=True))


def _main_args(line: str):
    """The arguments given to main.py on a shell line, or None when the line does not run main.py."""
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    if "main.py" not in words:
        return None
    start = words.index("main.py")
    launcher = words[:start]
    if not launcher or launcher[0] not in ("python", "python3", "torchrun"):
        return None
    return words[start + 1:]


def _code_blocks(text: str):
    """(language, body) of every fenced block, fences paired in order (a ```yaml block too)."""
    blocks, lang, body = [], None, []
    for line in text.splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                blocks.append((lang, "\n".join(body)))
                lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def _prose_lines(text: str):
    """The lines outside fenced blocks."""
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif not inside:
            yield line


def readme_commands():
    """(command as written, main.py's arguments) for each command in README code blocks and inline code."""
    found = []
    for lang, block in _code_blocks(README):
        if lang not in ("", "bash", "sh"):
            continue
        for line in _logical_lines(block):
            args = _main_args(line)
            if args is not None:
                found.append((_command(line), args))
    prose = "\n".join(line for line in _prose_lines(README))
    for span in re.findall(r"`([^`\n]*main\.py[^`\n]*)`", prose):
        args = _main_args(span)
        if args is not None:
            found.append((_command(span), args))
    return found


def help_text() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main.parse_args(["--help"])
    assert stop.value.code == 0
    return out.getvalue()


def help_commands():
    return [(_command(line), _main_args(line)) for line in help_text().splitlines()
            if _main_args(line) is not None]


def test_the_readme_and_help_document_commands():
    # the extraction itself: the set-up, training, test and multi-node commands are all found
    readme = [c for c, _ in readme_commands()]
    assert any(c.startswith("python main.py --config demo.yaml --mode test --weights") and "export" in c
               for c in readme)
    assert any(c.startswith("torchrun --nnodes=2") for c in readme)
    assert "python main.py --help" in readme
    assert len(readme) >= 10 and len(help_commands()) >= 5


@pytest.mark.parametrize("command,args", readme_commands() + help_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_command_resolves(command, args, capsys):
    if args == ["--help"]:
        help_text()
        return
    code = main.main(args + ["--print-config"])
    err = capsys.readouterr().err
    if "--mode" in args and args[args.index("--mode") + 1] == "predict" and "--config" not in args:
        # its recipe is the checkpoint's own: the command parses and goes as far as reading it
        assert code == 2 and "checkpoint not found" in err, f"`{command}`: {err.strip()}"
        return
    assert code == 0, f"`{command}` does not run: {err.strip()}"

"""The docs cannot rot: every ```python block of README.md and docs/*.md runs, and every command
of their ```bash blocks is run, dry-run or checked by an explicit rule (``COMMAND_RULES``).

A new kind of command must be given a rule here: an unclassified one fails the test.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)\s*$")
SHELL_OPERATORS = {"&&", "||", ";", "|"}


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the block's first line of code
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file, with the line each starts on."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        match = FENCE.match(line)
        if lang is None and match:
            lang, start, body = match.group(1), number + 1, []
        elif lang is not None and line.startswith("```"):
            blocks.append(Block(path, start, lang, "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, (
        f"{path.relative_to(ROOT)}: a ``` fence opened at line {start - 1} never closes"
    )
    return blocks


def _env() -> dict[str, str]:
    """The worktree's code first, on the CPU, offline."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's machine
    return env


# --- python blocks -------------------------------------------------------------------------
# One interpreter per file runs its blocks in order in one namespace; each block is compiled
# with its markdown file as file name and its own line numbers, so a traceback names both.
RUNNER = """
import sys
namespace = {"__name__": "__main__"}
for path, line, text in BLOCKS:
    code = compile("\\n" * (line - 1) + text, path, "exec")
    try:
        exec(code, namespace)
    except BaseException:
        print(f"the python block at {path}:{line} failed", file=sys.stderr)
        raise
"""


def python_files() -> list[Path]:
    return [p for p in DOCS if any(b.lang == "python" for b in fenced_blocks(p))]


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path: Path) -> None:
    blocks = [
        (b.where.split(":")[0], b.line, b.text) for b in fenced_blocks(path) if b.lang == "python"
    ]
    script = f"BLOCKS = {blocks!r}\n{RUNNER}"
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"{path.relative_to(ROOT)}:\n{proc.stderr[-4000:]}", pytrace=False)


# --- shell commands --------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    block: Block
    argv: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.block.where}: {shlex.join(self.argv)}"


def _split(text: str) -> list[list[str]]:
    """Simple commands of a shell text: continuations joined, comments dropped, split at
    &&, ||, ; and |."""
    commands = []
    for line in text.replace("\\\n", " ").split("\n"):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        current = []
        for token in [*lexer, ";"]:
            if token in SHELL_OPERATORS:
                commands += [current] if current else []
                current = []
            else:
                current.append(token)
    return commands


def logical_lines(block: Block) -> list[tuple[int, str]]:
    """(line number, text) of each line of a block, a line ending in \\ joined to the next."""
    lines, start, current = [], block.line, ""
    for offset, line in enumerate(block.text.splitlines()):
        if not current:
            start = block.line + offset
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append((start, current))
            current = ""
    return lines


def shell_commands() -> list[Command]:
    """Every simple command of every bash block of the docs."""
    commands = []
    for path in DOCS:
        for block in fenced_blocks(path):
            if block.lang not in ("bash", "sh", "shell"):
                continue
            for number, line in logical_lines(block):
                where = Block(block.path, number, block.lang, block.text)
                commands += [Command(where, tuple(argv)) for argv in _split(line)]
    return commands


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _assert_ok(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what}: exit {proc.returncode}\n{proc.stderr[-3000:]}"


@functools.cache
def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _program(argv: tuple[str, ...]) -> tuple[str, ...]:
    """argv without a leading ``.venv/bin/`` on the program, so both spellings match a rule."""
    return (argv[0].removeprefix(".venv/bin/"), *argv[1:])


def _is_score_sde(argv: tuple[str, ...]) -> bool:
    return argv[:1] == ("score-sde",) or argv[:3] in {
        ("python", "-m", "score_sde"), ("python3", "-m", "score_sde")
    }  # fmt: skip


# Every documented score-sde command's --dry_run in one interpreter (each alone is mostly JAX's
# import): absl's flags are reset between runs, and so are the --config.<field> overrides the
# last run defined.
DRY_RUNNER = """
import contextlib, io, json, sys
from absl import flags
from score_sde.jobs import main

for flag_list in json.loads(sys.stdin.read()):
    err = io.StringIO()
    sys.argv = ["score-sde", *flag_list, "--dry_run"]
    flags.FLAGS.unparse_flags()
    for name in [n for n in flags.FLAGS if n.startswith("config.")]:
        delattr(flags.FLAGS, name)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            main.run()
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
    print("DRY_RUN " + json.dumps([flag_list, code, err.getvalue()[-3000:]]), flush=True)
"""


def _dry_run_flags(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The CLI flags of a score-sde command; ``--multihost`` is dropped: it would wait for the
    other hosts (its other flags still parse)."""
    return tuple(a for a in argv[1 if argv[0] == "score-sde" else 3 :] if a != "--multihost")


@functools.cache
def _dry_runs() -> dict[tuple[str, ...], tuple[int, str]]:
    """{flags: (exit code, stderr)} of every documented score-sde command's --dry_run."""
    found = [classify(c.argv) for c in COMMANDS]
    flag_sets = sorted({_dry_run_flags(f[2]) for f in found if f and f[1] is check_dry_run})
    proc = subprocess.run(
        [sys.executable, "-c", DRY_RUNNER], input=json.dumps(flag_sets), cwd=ROOT, env=_env(),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = [json.loads(x[8:]) for x in proc.stdout.splitlines() if x.startswith("DRY_RUN ")]
    assert len(lines) == len(flag_sets), f"the dry runs stopped early:\n{proc.stderr[-3000:]}"
    return {tuple(flags): (code, err) for flags, code, err in lines}


def check_dry_run(argv: tuple[str, ...]) -> None:
    """The CLI parses the flags and validates the config, touching neither workdir nor data."""
    flags = _dry_run_flags(argv)
    code, err = _dry_runs()[flags]
    assert code == 0, f"score-sde {shlex.join(flags)} --dry_run: exit {code}\n{err}"


def _requirement_name(spec: str) -> tuple[str, list[str]]:
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?(?:[=<>!~].*)?", spec)
    assert match, f"cannot read the requirement {spec!r}"
    extras = [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
    return match.group(1).lower().replace("_", "-"), extras


def check_pip_install(argv: tuple[str, ...]) -> None:
    """Each extra named of this project exists in pyproject.toml; any other package is one
    pyproject names (a dependency, an extra's, or the pinned CPU torch its comments give)."""
    pyproject = _pyproject()
    extras = pyproject["project"]["optional-dependencies"]
    known = (ROOT / "pyproject.toml").read_text().lower()
    args, skip = [], False
    for arg in argv[2:]:  # the requirements, without pip's options and their values
        if not skip and not arg.startswith("-"):
            args.append(arg)
        skip = arg in ("--index-url", "--extra-index-url")
    assert args, f"pip install of nothing: {argv}"
    for spec in args:
        if spec.startswith(".[") or spec == ".":
            spec = "score-sde" + spec[1:]
        name, wanted = _requirement_name(spec)
        if name == pyproject["project"]["name"]:
            missing = sorted(set(wanted) - set(extras))
            assert not missing, f"extras {missing} are not in pyproject.toml: {sorted(extras)}"
        else:
            assert name in known, f"{name!r} is named nowhere in pyproject.toml"


def check_help(argv: tuple[str, ...]) -> None:
    """``--help`` exits 0 and lists every ``--flag`` the documented command uses."""
    # The venv's console script (the venv need not be on PATH), else PATH's.
    script = Path(sys.executable).parent / argv[0]
    proc = _run([str(script) if script.exists() else shutil.which(argv[0]) or argv[0], "--help"])
    _assert_ok(proc, f"{argv[0]} --help")
    for flag in (a.split("=")[0] for a in argv[1:] if a.startswith("--")):
        assert flag in proc.stdout, f"{argv[0]} has no flag {flag}"


def check_venv(argv: tuple[str, ...]) -> None:
    assert argv[1:3] == ("-m", "venv"), f"only `python3 -m venv DIR` is documented: {argv}"
    _assert_ok(_run([sys.executable, "-m", "venv", "--help"]), "python -m venv --help")


def check_pytest(argv: tuple[str, ...]) -> None:
    """The options parse (``-n`` needs pytest-xdist): the same arguments with ``--help``."""
    _assert_ok(_run([sys.executable, *argv[1:], "--help"]), shlex.join(argv))


def check_python_c(argv: tuple[str, ...]) -> None:
    """A one-liner (cluster.md's needs the cluster): it compiles."""
    compile(argv[2], "<python -c>", "exec")


def check_bench(argv: tuple[str, ...]) -> None:
    """The script exists and defines every ``--flag`` used (benchmarks take minutes to run)."""
    target = argv[1] if argv[1] != "-m" else argv[2].replace(".", "/") + ".py"
    script = ROOT / target
    assert script.is_file(), f"{target} does not exist"
    source = script.read_text()
    for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
        assert f'"{flag}"' in source, f"{target} defines no flag {flag}"


def check_config_reference(argv: tuple[str, ...]) -> None:
    """It runs; without ``--write`` it prints instead of writing (test_config_reference
    checks that docs/config.md is its output)."""
    assert argv[3:] in ((), ("--write",)), f"config_reference takes only --write: {argv}"
    _assert_ok(_run([sys.executable, "-m", "score_sde.jobs.config_reference"]), "config_reference")


def check_tfds_build(argv: tuple[str, ...]) -> None:
    """tfds's CLI needs TensorFlow (the ``prepare`` extra), absent here: the ``tfds`` script
    exists, ``build`` and each flag are in its source, and the data set is one of ours."""
    from score_sde.datasets import DATASETS

    assert argv[1] == "build", f"only `tfds build` is documented: {argv}"
    scripts = {e.name for e in importlib.metadata.entry_points(group="console_scripts")}
    assert "tfds" in scripts, "tensorflow-datasets installs no tfds script"
    cli = Path(importlib.util.find_spec("tensorflow_datasets").origin).parent / "scripts" / "cli"
    source = "".join(p.read_text() for p in cli.glob("*.py"))
    assert "prepare" in _pyproject()["project"]["optional-dependencies"]
    for flag in (a.split("=")[0] for a in argv[2:] if a.startswith("--")):
        field = flag.removeprefix("--").replace("-", "_")  # its flags are dataclass fields
        assert re.search(rf"\b{field}\b", source), f"tfds build has no flag {flag}"
    names = [a for a in argv[2:] if not a.startswith("-") and a.isidentifier()]
    assert names and names[0] in DATASETS, f"{names[:1]} is not a data set of score_sde.datasets"


def check_jupytext(argv: tuple[str, ...]) -> None:
    check_help(argv[:1])
    for path in (a for a in argv[1:] if a.endswith((".py", ".ipynb"))):
        assert (ROOT / path).is_file(), f"{path} does not exist"


def check_notebook_extra(argv: tuple[str, ...]) -> None:
    """jupyter lab and tensorboard come with the ``notebook`` extra the README names."""
    package = {"jupyter": "jupyterlab", "tensorboard": "tensorboard"}[argv[0]]
    extra = _pyproject()["project"]["optional-dependencies"].get("notebook", [])
    assert any(_requirement_name(r)[0] == package for r in extra), f"notebook extra lacks {package}"


def check_script_syntax(argv: tuple[str, ...]) -> None:
    """``bash FILE``: the file exists and ``bash -n`` parses it (CI takes half an hour)."""
    assert (ROOT / argv[1]).is_file(), f"{argv[1]} does not exist"
    _assert_ok(_run(["bash", "-n", argv[1]]), f"bash -n {argv[1]}")


def check_shell_only(argv: tuple[str, ...]) -> None:
    """Shell control and SLURM's own commands (cluster.md's job script): the block's syntax is
    checked by ``bash -n`` in test_bash_blocks_parse; they run only on a cluster."""


def _unwrap(argv: tuple[str, ...]) -> tuple[str, ...] | None:
    """The command a wrapper runs: ``srun CMD``, ``gcloud ... --command="CMD"``, ``VAR=x CMD``."""
    if argv[0] == "srun":
        return argv[1:]
    if argv[0] == "gcloud":
        inner = [a.split("=", 1)[1] for a in argv if a.startswith("--command=")]
        return tuple(_split(inner[0])[0]) if inner else ()
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
        return argv[1:]
    return None


Rule = tuple[str, Callable[[tuple[str, ...]], bool], Callable[[tuple[str, ...]], None]]
# Each documented command matches the first rule whose test holds; the third column checks it.
COMMAND_RULES: list[Rule] = [
    ("score-sde / python -m score_sde: --dry_run exits 0", _is_score_sde, check_dry_run),
    (
        "score-sde-inception: --help lists its flags",
        lambda a: a[0] == "score-sde-inception",
        check_help,
    ),
    (
        "pip install: extras and packages are pyproject's",
        lambda a: a[:2] == ("pip", "install"),
        check_pip_install,
    ),
    (
        "python3 -m venv: the module runs",
        lambda a: a[0] in ("python", "python3") and a[1:3] == ("-m", "venv"),
        check_venv,
    ),
    ("python -m pytest ARGS: ARGS --help", lambda a: a[1:3] == ("-m", "pytest"), check_pytest),
    (
        "python -m score_sde.jobs.config_reference: prints",
        lambda a: a[1:3] == ("-m", "score_sde.jobs.config_reference"),
        check_config_reference,
    ),
    (
        "python bench/X.py / -m bench.X: the file and its flags",
        lambda a: a[1].startswith("bench/") or a[1:3] == ("-m", a[2]) and a[2].startswith("bench."),
        check_bench,
    ),
    ("python -c CODE: compiles", lambda a: a[1] == "-c", check_python_c),
    ("tfds build: script, flags, data set", lambda a: a[0] == "tfds", check_tfds_build),
    ("jupytext: --help and the files exist", lambda a: a[0] == "jupytext", check_jupytext),
    (
        "jupyter lab / tensorboard: in the notebook extra",
        lambda a: a[0] in ("jupyter", "tensorboard"),
        check_notebook_extra,
    ),
    ("bash FILE: exists, bash -n", lambda a: a[0] == "bash" and len(a) == 2, check_script_syntax),
    (
        "shell control, SLURM: bash -n of the block",
        lambda a: a[0] in ("if", "then", "fi", "exit", "[", "scontrol"),
        check_shell_only,
    ),
]


def classify(argv: tuple[str, ...]) -> tuple[str, Callable, tuple[str, ...]] | None:
    """(rule name, check, argv to check) of a command, unwrapping srun, gcloud and VAR=x."""
    argv = _program(argv)
    inner = _unwrap(argv)
    if inner is not None:
        return classify(inner) if inner else ("assignment", lambda a: None, argv)
    if argv[0] in ("then", "else") and len(argv) > 1:
        return classify(argv[1:])
    for name, matches, check in COMMAND_RULES:
        if len(argv) >= 1 and matches(argv + ("",) * 3):
            return name, check, argv
    return None


COMMANDS = shell_commands()


def test_every_command_has_a_rule() -> None:
    unclassified = [str(c) for c in COMMANDS if classify(c.argv) is None]
    assert not unclassified, "commands no rule of COMMAND_RULES covers:\n" + "\n".join(unclassified)


def _unique(commands: list[Command]) -> list[Command]:
    """One check per distinct command (``.venv/bin/`` and the wrappers aside)."""
    seen, out = set(), []
    for command in commands:
        found = classify(command.argv)
        key = found and (found[0], found[2])
        if found and key not in seen:
            seen.add(key)
            out.append(command)
    return out


@pytest.mark.parametrize("command", _unique(COMMANDS), ids=str)
def test_documented_command(command: Command) -> None:
    _, check, argv = classify(command.argv)
    try:
        check(argv)
    except AssertionError as err:
        pytest.fail(f"{command}\n{err}", pytrace=False)


@pytest.mark.parametrize(
    "block",
    [b for p in DOCS for b in fenced_blocks(p) if b.lang in ("bash", "sh", "shell")],
    ids=lambda b: b.where,
)
def test_bash_blocks_parse(block: Block) -> None:
    proc = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
    assert proc.returncode == 0, f"{block.where}: {proc.stderr}"


def test_rules_split_shell_syntax() -> None:
    """Continuations, && chains and comments are split as bash would."""
    text = "a --x 1 \\\n  --y=2 && b 'c d' # note\nX=1 e; f\n"
    assert _split(text) == [["a", "--x", "1", "--y=2"], ["b", "c d"], ["X=1", "e"], ["f"]]
    assert classify(("nonsense", "--flag")) is None
    assert classify(("srun", ".venv/bin/score-sde", "--config", "c.py"))[0].startswith("score-sde")

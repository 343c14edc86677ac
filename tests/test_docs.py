"""Every command the README and docs/ show still works: nothing in them can go stale unnoticed.

Each shell block (```bash) is read command by command:
- `python -m cifar_cnn.train|evaluate|predict ARGS` (or `cifar-cnn-train ...`): the overrides
  are composed into the app's config, every value of every sweep (`-m seed=0,1,2`,
  `'experiment=glob(*)'`), and each config passes the app's checks of keys, types and
  ranges, so a renamed key or a value no longer accepted fails here;
- `python -m cifar_cnn.report|search ARGS`: the app parses them (its work is stubbed out);
- `make TARGET VAR=...`: `make -n` accepts them, and `ARGS="..."` is composed as above;
- `pip install ...`: the extras named exist;
- `python -c CODE`: it runs;
- the programs in `UNCHECKED` are not run, each for the reason given there;
- the README's smoke run (its first training command) really runs.
A ```yaml block right after a line that ends in "`conf/PATH.yaml`:" is a config file the page
shows (a recipe's new row): the page's commands are composed in a copy of conf/ that holds it.
Python blocks compile and their imports resolve (using.md's example runs on a checkpoint), and
every module, repository path and local link named anywhere in the text exists.
"""

import argparse
import ast
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob

from cifar_cnn.app import CONFIG_DIR, compose_config
from cifar_cnn.core.cifar10 import CLASSES
from cifar_cnn.core.published import PUBLISHED
from cifar_cnn.training.config_checks import validate_config, validate_launch
from helpers import FAST, REPO, run_cli

README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
HYDRA_APPS = {"cifar_cnn.train": "config", "cifar_cnn.evaluate": "evaluate",
              "cifar_cnn.predict": "predict"}  # fmt: skip
CONSOLE = {  # the console commands of pyproject.toml's [project.scripts]
    "cifar-cnn-train": "cifar_cnn.train",
    "cifar-cnn-evaluate": "cifar_cnn.evaluate",
    "cifar-cnn-predict": "cifar_cnn.predict",
    "cifar-cnn-report": "cifar_cnn.report",
    "cifar-cnn-search": "cifar_cnn.search",
    "cifar-cnn-status": "cifar_cnn.status",
}
# Hydra's own flags: they change what the app prints, not which config it composes.
HYDRA_FLAGS = {"-m", "--multirun", "--help", "-h", "--hydra-help", "--info", "--resolve"}
PRINT_ONLY = {"--help", "-h", "--hydra-help", "--info", "--cfg"}  # the app prints, runs nothing
# Programs the docs may show that this suite does not run, and why.
UNCHECKED = {
    "cd": "changes directory",
    "source": "activates the virtual environment (checked by make's install)",
    ".": "activates the virtual environment (checked by make's install)",
    "git": "clones the repository",
    "tensorboard": "a server that runs until stopped",
    "sbatch": "needs a SLURM cluster",
    "squeue": "needs a SLURM cluster",
    "nvidia-smi": "needs a GPU",
    "lscpu": "prints the machine's CPU",
    "tar": "unpacks the user's own archive",
    "mkdir": "makes the user's folder",
    "ls": "lists the user's files",
    "cat": "prints the user's files",
    "tmux": "a terminal multiplexer around a long command",
    "nohup": "runs a long command detached",
}


@dataclass(frozen=True)
class Command:
    """One simple command of a shell block: its words, and where it is shown."""

    words: tuple[str, ...]
    where: str

    def __str__(self) -> str:
        return f"{self.where}: {shlex.join(self.words)}"


def blocks(page: Path) -> Iterator[tuple[str, str, int]]:
    """(language, text, line number) of every fenced code block of a Markdown page."""
    lines = page.read_text().splitlines()
    start, language = None, ""
    for number, line in enumerate(lines, 1):
        fence = re.match(r"\s*```(\w*)", line)
        if fence and start is None:
            start, language = number, fence.group(1)
        elif fence:
            yield language, "\n".join(lines[start : number - 1]), start
            start = None


def shown_configs(page: Path) -> dict[str, str]:
    """The config files a page shows: conf path -> text of each ```yaml block whose preceding
    line ends in "`conf/PATH.yaml`:"."""
    lines = page.read_text().splitlines()
    found = {}
    for language, text, start in blocks(page):
        before = [line for line in lines[: start - 1] if line.strip()]
        named = re.search(r"`(conf/[\w/.-]+\.yaml)`:$", before[-1]) if before else None
        if language == "yaml" and named:
            found[named.group(1)] = text + "\n"
    return found


def logical_lines(text: str, first: int) -> Iterator[tuple[int, str]]:
    """(line number, line) with backslash continuations joined; `first` numbers the first."""
    start, parts = None, []
    for number, line in enumerate(text.splitlines(), first):
        start = number if start is None else start
        if line.endswith("\\"):
            parts.append(line[:-1])
            continue
        yield start, " ".join([*parts, line])
        start, parts = None, []


def commands(page: Path) -> Iterator[Command]:
    """The simple commands of a page's shell blocks (continuations joined, comments dropped)."""
    for language, text, first in blocks(page):
        if language not in SHELL:
            continue
        for number, line in logical_lines(text, first + 1):
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token in {";", "&&", "||", "|", "&"}:
                    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                        words.pop(0)  # VAR=value before a command sets its environment
                    if words:
                        yield Command(tuple(words), f"{page.name}:{number}")
                    words = []
                else:
                    words.append(token)


def shown_commands() -> list[Command]:
    """Every command of README.md and docs/*.md."""
    return [command for page in PAGES for command in commands(page)]


def variants(overrides: list[str], config_dir: Path) -> list[list[str]]:
    """The override lists that together take every value of every sweep once (a glob over
    the options of `config_dir`)."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    firsts, choices = [], []
    for override in parsed:
        key = override.get_key_element()
        if not override.is_sweep_override():
            values = [override.input_line.split("=", 1)[1]]
        elif isinstance(override.value(), Glob):
            names = sorted(p.stem for p in (config_dir / override.key_or_group).glob("*.yaml"))
            values = override.value().filter(names)
        else:
            values = list(override.sweep_string_iterator())
        assert values, f"{override.input_line} selects nothing"
        firsts.append(f"{key}={values[0]}")
        choices.append([f"{key}={value}" for value in values[1:]])
    result = [firsts]
    for i, others in enumerate(choices):
        result += [firsts[:i] + [other] + firsts[i + 1 :] for other in others]
    return result


def check_hydra_app(module: str, args: list[str], config_dir: Path = Path(CONFIG_DIR)) -> None:
    """The overrides compose into the app's config (and Hydra's), each sweep value once, and
    the app's checks accept each config, unless the command only prints (--help, --cfg)."""
    overrides = [a for a in args if a not in HYDRA_FLAGS]
    if "--cfg" in overrides:
        i = overrides.index("--cfg")
        del overrides[i : i + 2]
    assert all(not a.startswith("-") for a in overrides), f"unknown flag in {args}"
    app = HYDRA_APPS[module]
    for each in variants(overrides, config_dir):
        cfg = compose_config(each, hydra_config=True, config_name=app, config_dir=config_dir)
        if not set(args) & PRINT_ONLY:
            validate_config(cfg, "train" if app == "config" else app, check_memory=False)
            validate_launch(cfg.hydra.launcher, cfg.hydra.sweeper)


class Parsed(Exception):
    """Raised once an app's command line has been parsed, before it does any work."""


def check_argparse_app(module: str, args: list[str], monkeypatch) -> None:
    """The app's argument parser accepts the arguments (the app then stops)."""
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, *a, **kw):
        parse(parser, *a, **kw)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    try:
        import_module(module).main(args)
    except Parsed:
        pass
    except SystemExit as e:  # --help exits 0; a bad argument exits 2
        assert e.code in (0, None), f"exit {e.code}"
    else:
        raise AssertionError(f"{module} did not parse its arguments with argparse")


def test_the_readmes_published_table_is_that_of_published_py():
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|.*\| (0\.\d{4}) \|$", README.read_text(), re.M)
    assert [(int(row), name, float(recall)) for row, name, recall in rows] == [
        (run.row, run.name, run.recall) for run in PUBLISHED
    ]


def make(*args: str) -> str:
    """`make ARGS` in the repository (with -n, nothing is run); its output."""
    assert shutil.which("make"), "make is needed to check the Makefile"
    # --no-print-directory: under `make test` this make is a sub-make, which would announce
    # "Entering directory" in its output
    command = ["make", "--no-print-directory", *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def check_make(args: list[str]) -> None:
    """`make -n` accepts the target and variables; ARGS are training overrides."""
    make("-n", *args)
    for arg in args:
        if arg.startswith("ARGS="):
            check_hydra_app("cifar_cnn.train", shlex.split(arg.removeprefix("ARGS=")))


def check_pip(args: list[str]) -> None:
    """The extras a `pip install` names exist."""
    section = (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]")[1]
    extras = re.findall(r"^(\w+) = \[", section.split("\n[")[0], flags=re.MULTILINE)
    for arg in args:
        for named in re.findall(r"\[([\w,]+)\]", arg):
            assert set(named.split(",")) <= set(extras), f"unknown extra in {arg}"


def check(command: Command, monkeypatch, config_dir: Path = Path(CONFIG_DIR)) -> None:
    """Check one shown command (see the module's docstring), composed from `config_dir`."""
    words = list(command.words)
    if words[0] in CONSOLE:
        words = ["python", "-m", CONSOLE[words[0]], *words[1:]]
    program, args = Path(words[0]).name or words[0], words[1:]
    if program in UNCHECKED:
        return
    if program in {"python", "python3"} and args[:2] == ["-m", "venv"]:
        return
    if program in {"python", "python3"} and args[:1] == ["-m"] and args[1] in HYDRA_APPS:
        check_hydra_app(args[1], args[2:], config_dir)
    elif program in {"python", "python3"} and args[:1] == ["-m"] and args[1] in CONSOLE.values():
        check_argparse_app(args[1], args[2:], monkeypatch)
    elif program in {"python", "python3"} and args and args[0].endswith(".py"):
        assert (REPO / args[0]).is_file()
    elif program in {"python", "python3"} and args[:1] == ["-c"]:
        subprocess.run([sys.executable, "-c", args[1]], cwd=REPO, check=True, timeout=60)
    elif program in {"python", "python3"} and args[:2] == ["-m", "pytest"]:
        assert all((REPO / a).exists() for a in args[2:] if a.endswith(".py"))
    elif program == "make":
        check_make(args)
    elif program == "pip":
        check_pip(args)
    else:
        raise AssertionError("not a command this test knows: check it here or add to UNCHECKED")


@pytest.fixture(scope="session")
def config_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Page name -> the config directory its commands compose from: conf/, or a copy of it
    with the config files the page shows (`shown_configs`)."""
    found = {}
    for page in PAGES:
        files = shown_configs(page)
        if files:
            root = tmp_path_factory.mktemp(page.stem)
            shutil.copytree(REPO / "conf", root / "conf")
            for path, text in files.items():
                (root / path).parent.mkdir(parents=True, exist_ok=True)
                (root / path).write_text(text)
            found[page.name] = root / "conf"
    return found


@pytest.mark.parametrize("command", shown_commands(), ids=str)
def test_a_shown_command_works(command, monkeypatch, config_dirs):
    page = command.where.split(":")[0]
    try:
        check(command, monkeypatch, config_dirs.get(page, Path(CONFIG_DIR)))
    except (Exception, SystemExit) as e:
        raise AssertionError(f"{command}\n{type(e).__name__}: {e}") from e


def test_the_pages_show_commands():
    pages = {command.where.split(":")[0] for command in shown_commands()}
    assert {"README.md", "scale.md", "using.md"} <= pages


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_code_blocks_name_their_language_and_python_blocks_import(page):
    for language, text, line in blocks(page):
        assert language, f"{page.name}:{line}: a code block without a language (bash, text, ...)"
        if language == "python":
            tree = compile(text, f"{page.name}:{line}", "exec", ast.PyCF_ONLY_AST)
            imports = [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]
            exec(compile(ast.Module(imports, type_ignores=[]), page.name, "exec"), {})


def is_module(name: str) -> bool:
    """Whether `name` is an importable module (False for an attribute of one)."""
    try:
        return find_spec(name) is not None
    except ModuleNotFoundError:  # the parent is a module, not a package
        return False


def missing_names(page: Path) -> Iterator[str]:
    """The modules, attributes, repository paths and local links a page names that do not
    exist."""
    text = page.read_text()
    for name in sorted(set(re.findall(r"\bcifar_cnn(?:\.[A-Za-z_]\w*)+", text))):
        parts = name.split(".")
        depth = 1
        while depth < len(parts) and is_module(".".join(parts[: depth + 1])):
            depth += 1
        target = import_module(".".join(parts[:depth]))
        for attribute in parts[depth:]:
            if not hasattr(target, attribute):
                yield name
                break
            target = getattr(target, attribute)
    paths = re.findall(r"\b(?:cifar_cnn|conf|benchmarks|tests|docs)/[\w/.-]*\w", text)
    shown = {
        str(parent) for path in shown_configs(page) for parent in [Path(path), *Path(path).parents]
    }
    yield from sorted(p for p in set(paths) if not (REPO / p).exists() and p not in shown)
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text)
    yield from sorted(f"link {link}" for link in set(links) if not (page.parent / link).exists())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_named_modules_paths_and_links_exist(page):
    missing = list(missing_names(page))
    assert not missing, f"{page.name} names what does not exist: {missing}"


def test_make_help_lists_every_target_once_and_make_installs_without_the_search_extra():
    makefile = (REPO / "Makefile").read_text().replace("\\\n", " ")
    targets = re.search(r"^\.PHONY:(.*)$", makefile, flags=re.MULTILINE).group(1).split()
    listed = [line.split()[1] for line in make("help").splitlines()]
    assert sorted(listed) == sorted(targets)
    installs = [line for line in make("-n", "-B").splitlines() if "pip install" in line]
    assert installs[-1].endswith("-e '.[dev]'")
    assert "search" in make("-n", "-B", "install-search").splitlines()[-2]


@pytest.mark.slow
def test_the_readmes_smoke_run_runs(tmp_path):
    smoke = next(c for c in commands(README) if "cifar_cnn.train" in c.words)
    assert "data.source=synthetic" in smoke.words, "the smoke run needs no data set"
    result = run_cli(list(smoke.words[3:]), cwd=tmp_path)
    # The README says the recall comes close to 1 on these easy classes (chance: 0.1).
    assert float(re.search(r"test recall (\d\.\d+)", result.stdout).group(1)) > 0.5
    assert len(list(tmp_path.glob("outputs/runs/*/metrics.json"))) == 1


@pytest.mark.slow
def test_the_python_example_of_using_md_runs_on_a_checkpoint(tmp_path, capsys):
    run_cli([*FAST, f"hydra.run.dir={tmp_path / 'run'}"])
    blocks_shown = blocks(REPO / "docs/using.md")
    (example,) = [text for language, text, _ in blocks_shown if language == "python"]
    exec(example.replace("outputs/runs/RUN", str(tmp_path / "run")), {})
    predicted = ast.literal_eval(capsys.readouterr().out.strip())
    assert len(predicted) == 8 and set(predicted) <= set(CLASSES)  # one class per image

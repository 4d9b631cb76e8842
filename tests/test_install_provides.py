"""`install.sh --test` provides every program the suite runs: the programs the tests, benches,
scripts and the package itself start (read from their source: ast for Python, patterns for
shell) are all in install.sh's TEST_PROGRAMS table of program=Debian package."""

from __future__ import annotations

import ast
import os
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the suite runs. tools/ is left out: its scripts run on the developer's host (the
# fresh-Debian rehearsal needs debootstrap), not in the suite.
PYTHON_SOURCES = ("tests", "bench", "screenshots", "wsinspect", "addons")
SHELL_SOURCES = ("install.sh", "tests/run.sh", ".ci/run")
# Programs the sources use only when the machine has them.
OPTIONAL = {
    "pyenv": "tests/run.sh finds more Pythons through it; without it only python3's leg runs",
    "py-spy": "bench/relay_bench.py --profile only (a PyPI package, installed by hand for it)",
}
# Programs the collector must find today, so that it cannot go blind unnoticed.
KNOWN = {
    "nginx", "iptables", "ip", "sysctl", "cat", "env", "tmux", "chromium", "node", "npm",
    "rsvg-convert",
}
# Calls that start a process -> the position of argv[0] among their arguments (a string, or
# an argv list): subprocess's and asyncio's, and the tests' own wrappers (netns_lab's `run`
# and `Lab.exec(namespace, *argv)`, preflight's `run_tool`).
PROCESS_CALLS = {
    "run": 0, "Popen": 0, "call": 0, "check_call": 0, "check_output": 0,
    "create_subprocess_exec": 0, "execv": 0, "execvp": 0, "spawnvp": 0, "run_tool": 0,
    "exec": 1,
}
# A bare string names a program when the call is one of these modules' or a plain function;
# `tmux.run("send-keys")` passes arguments to a wrapper that has its own argv[0].
PROCESS_MODULES = {"subprocess", "asyncio", "os"}
PROGRAM_NAME = re.compile(r"[A-Za-z0-9][\w.+-]*")
SHELL_COMMENT = re.compile(r"(^|\s)#.*")
SHELL_LOOKUP = re.compile(r"(?:command\s+-v|type\s+-P|\bwhich|\bhash)\s+([A-Za-z0-9][\w.+-]*)")


def install_sh_programs() -> dict[str, str]:
    """install.sh's TEST_PROGRAMS table: program -> Debian package."""
    text = (ROOT / "install.sh").read_text()
    table = re.search(r"^TEST_PROGRAMS=\(\n(.*?)^\)", text, re.MULTILINE | re.DOTALL)
    assert table, "install.sh has no TEST_PROGRAMS=( ... ) table"
    entries = dict(re.findall(r"^\s+([\w.+-]+)=([\w.+-]+)\s*$", table.group(1), re.MULTILINE))
    assert len(entries) == len(table.group(1).strip().splitlines()), table.group(1)
    assert '"${TEST_PROGRAMS[@]}"' in text, "install.sh does not install from the table"
    return entries


def _program(value: str) -> str | None:
    name = os.path.basename(value) if value.startswith("/") else value.split(" ")[0]
    return name if PROGRAM_NAME.fullmatch(name) else None


def argv_functions(tree: ast.Module) -> dict[str, ast.expr]:
    """Functions that return an argv list, by name: `def mitmdump(): return ["env", ...]`."""
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Return) and isinstance(inner.value, ast.List):
                    found[node.name] = inner.value
    return found


class ProgramCollector(ast.NodeVisitor):
    """Programs one Python module runs: `shutil.which("x")`, and the argv[0] of the
    calls in PROCESS_CALLS, also through a name bound to a list (`tmux = ["tmux", ...]`,
    then `run([*tmux, ...])`) or a call of a function returning one (`argv_functions`, from
    every module read: `run([*mitmdump(confdir), ...])`)."""

    def __init__(self, tree: ast.Module, functions: dict[str, ast.expr] | None = None) -> None:
        self.programs: set[str] = set()
        self.functions = functions or {}
        self.argv_names: dict[str, ast.expr] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.List, ast.Tuple)):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.argv_names[target.id] = node.value
        self.visit(tree)

    def argv0(self, node: ast.expr, depth: int = 0) -> str | None:
        if depth > 6:
            return None
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return _program(node.value)
        if isinstance(node, ast.Starred):
            return self.argv0(node.value, depth + 1)
        if isinstance(node, ast.Name) and node.id in self.argv_names:
            return self.argv0(self.argv_names[node.id], depth + 1)
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in self.functions:
                return self.argv0(self.functions[name], depth + 1)
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            return self.argv0(node.elts[0], depth + 1)
        return None

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name == "which" and node.args:
            self._add(self.argv0(node.args[0]))
        elif name in PROCESS_CALLS and len(node.args) > PROCESS_CALLS[name]:
            arg = node.args[PROCESS_CALLS[name]]
            bare_string_counts = (
                name == "exec"
                or isinstance(func, ast.Name)
                or (isinstance(func.value, ast.Name) and func.value.id in PROCESS_MODULES)
            )
            if bare_string_counts or not isinstance(arg, ast.Constant):
                self._add(self.argv0(arg))
        self.generic_visit(node)

    def _add(self, program: str | None) -> None:
        if program:
            self.programs.add(program)


def collect_programs() -> dict[str, set[str]]:
    """program -> the files that run it."""
    found: dict[str, set[str]] = {}
    trees = {
        path: ast.parse(path.read_text(), filename=str(path))
        for folder in PYTHON_SOURCES
        for path in sorted((ROOT / folder).rglob("*.py"))
        if "node_modules" not in path.parts
    }
    functions = {name: v for tree in trees.values() for name, v in argv_functions(tree).items()}
    for path, tree in trees.items():
        for program in ProgramCollector(tree, functions).programs:
            found.setdefault(program, set()).add(str(path.relative_to(ROOT)))
    for name in SHELL_SOURCES:
        for line in (ROOT / name).read_text().splitlines():
            code = SHELL_COMMENT.sub("", line)
            for program in SHELL_LOOKUP.findall(code):
                found.setdefault(program, set()).add(name)
    return found


def test_the_collector_finds_the_programs_known_to_be_run():
    assert KNOWN <= set(collect_programs()), sorted(KNOWN - set(collect_programs()))


def test_install_sh_provides_every_program_the_suite_runs():
    provided = install_sh_programs()
    missing = {
        program: sorted(files)
        for program, files in collect_programs().items()
        if program not in provided and program not in OPTIONAL
    }
    assert missing == {}, f"add these to install.sh's TEST_PROGRAMS (program=package): {missing}"


def test_the_collector_reads_each_kind_of_call(tmp_path):
    source = """
import shutil, subprocess, asyncio
A = shutil.which("alpha")
subprocess.run(["beta", "-x"], check=True)
subprocess.Popen(("gamma",))
asyncio.create_subprocess_exec("delta", "arg")
lab.exec(lab.gateway, "epsilon", "-t")
multiplexer = ["zeta", "-L", "socket"]
subprocess.run([*multiplexer, "new-session"])
subprocess.check_output(["/usr/sbin/eta", "-v"])
subprocess.run([sys.executable, "-c", "pass"])
asyncio.run(main())
tmux.run("send-keys", "-t", "app")
asyncio.create_subprocess_exec(str(BIN / "wsinspect"), "replay")
asyncio.create_subprocess_exec(*launcher(home), "-x")
"""
    functions = argv_functions(ast.parse('def launcher(home):\n    return ["theta", home]\n'))
    assert ProgramCollector(ast.parse(source), functions).programs == {
        "alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta",
    }
    shell = 'command -v nginx >/dev/null || [ -x "$(command -v "$x")" ]  # which a user'
    assert SHELL_LOOKUP.findall(SHELL_COMMENT.sub("", shell)) == ["nginx"]


def test_every_program_in_the_table_is_on_this_machine():
    """The suite runs after `install.sh --test` (tests/run.sh): each listed program is here."""
    missing = [
        program
        for program in install_sh_programs()
        if shutil.which(program) is None
        and not any(os.access(f"{d}/{program}", os.X_OK) for d in ("/usr/sbin", "/sbin"))
    ]
    assert missing == [], f"run `bash install.sh --test` as root; missing: {missing}"

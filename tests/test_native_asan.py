"""``_native.c`` under AddressSanitizer and UndefinedBehaviorSanitizer.

The module is built with ``-fsanitize=address,undefined`` into a temporary directory,
and a subprocess replays the fuzz seeds and a few thousand random inputs through
every function, each checked against its pure twin
(``tests.fuzz.atheris_native.replay``).  The subprocess preloads the ASan runtime
(the interpreter is not built with it), runs without leak detection (CPython keeps
memory to the end by design) and with ``PYTHONMALLOC=malloc``, so that every object
is its own allocation: pymalloc's pools would hide an overrun from ASan.

A canary module with a deliberate heap overflow and a signed overflow, built and
run the same way, must be caught: otherwise a clean run would prove nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "slirpnet" / "_native.c"
FLAGS = [
    "-O1",
    "-g",
    "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=undefined",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-shared",
    "-fPIC",
]
RANDOM_INPUTS = 3000

CANARY = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdlib.h>

static PyObject *
overflow(PyObject *Py_UNUSED(self), PyObject *arg)
{
    Py_ssize_t n = PyLong_AsSsize_t(arg);
    char *volatile p = malloc(8); /* volatile: UBSan cannot know its size, ASan must */
    char c = p[n];                 /* n = 8: one past the end */
    free(p);
    return PyLong_FromLong(c);
}

static PyObject *
undefined(PyObject *Py_UNUSED(self), PyObject *arg)
{
    int n = (int)PyLong_AsLong(arg);
    int big = INT_MAX;
    return PyLong_FromLong(big + n); /* n = 1: signed overflow */
}

static PyMethodDef methods[] = {
    {"overflow", overflow, METH_O, NULL},
    {"undefined", undefined, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_canary", .m_size = 0, .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__canary(void)
{
    return PyModule_Create(&module);
}
"""

LOAD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location({name!r}, {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
"""


def sanitizer_runtime() -> str:
    """The ASan runtime to preload, or a skip saying what is missing."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed: nothing to build the sanitized module with")
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").exists():
        pytest.skip(f"no Python.h in {include}: the Python headers are not installed")
    runtime = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not os.path.isabs(runtime) or not os.path.exists(runtime):
        pytest.skip("gcc has no libasan.so (Debian: libgcc-12-dev): no AddressSanitizer")
    return runtime


def build(source: Path, name: str, directory: Path) -> Path:
    target = directory / f"{name}{sysconfig.get_config_var('EXT_SUFFIX')}"
    include = sysconfig.get_paths()["include"]
    subprocess.run(["gcc", *FLAGS, f"-I{include}", "-o", str(target), str(source)], check=True)
    return target


def run_sanitized(runtime: str, script: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        LD_PRELOAD=runtime,
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
        PYTHONMALLOC="malloc",  # one malloc per object: pymalloc's pools would hide overruns
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
        PYTHONPATH=str(ROOT),
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_native_module_is_clean_under_sanitizers(tmp_path: Path) -> None:
    runtime = sanitizer_runtime()
    path = build(SOURCE, "_native", tmp_path)
    script = LOAD.format(name="slirpnet._native", path=str(path))
    script += "from tests.fuzz.atheris_native import replay\n"
    script += f"print('checked', replay(module, {RANDOM_INPUTS}, 20261206))\n"
    result = run_sanitized(runtime, script)
    assert "Sanitizer" not in result.stderr, result.stderr[-4000:]
    assert "runtime error" not in result.stderr, result.stderr[-4000:]
    assert result.returncode == 0, result.stderr[-4000:]
    checked = int(result.stdout.split()[-1])
    assert checked > RANDOM_INPUTS


@pytest.mark.parametrize(
    ("call", "report"),
    [
        ("overflow(8)", "heap-buffer-overflow"),
        ("undefined(1)", "signed integer overflow"),
    ],
)
def test_the_sanitizers_catch_a_bad_module(call: str, report: str, tmp_path: Path) -> None:
    runtime = sanitizer_runtime()
    source = tmp_path / "canary.c"
    source.write_text(CANARY)
    path = build(source, "_canary", tmp_path)
    script = LOAD.format(name="_canary", path=str(path)) + f"module.{call}\nprint('missed')\n"
    result = run_sanitized(runtime, script)
    assert report in result.stderr, result.stderr[-4000:]
    assert result.returncode != 0
    assert "missed" not in result.stdout

"""The isolation features themselves: what the worker reports, the command-line scrub."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from autograder import channel
from autograder.sandbox import Sandbox, SandboxOptions, use_namespaces

PROBE = """
import os
def probe(x):
    out = {'uid': os.getuid(), 'pids': sorted(int(p) for p in os.listdir('/proc') if p.isdigit())}
    for path in PATHS:
        try:
            open(path, 'w').close()
            out[path] = 'written'
        except OSError as error:
            out[path] = type(error).__name__
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        out['fork'] = 'forked'
    except OSError:
        out['fork'] = 'refused'
    return out
"""


def _probe(options: SandboxOptions, paths: tuple[str, ...]) -> tuple[list[str], dict]:
    sandbox = Sandbox(options)
    source = f"PATHS = {paths!r}\n{PROBE}"
    try:
        loaded = sandbox.load([source], ["probe"])
        assert loaded["callable"] == ["probe"]
        reply, buffers = sandbox.run("probe", None, [(1,)])
        return sandbox.isolation, channel.decode(reply["results"][0]["value"], buffers)
    finally:
        sandbox.close()


@pytest.mark.skipif(not use_namespaces(SandboxOptions()), reason="no namespaces here")
def test_worker_in_namespaces_sees_only_itself_and_writes_only_its_directory():
    import os
    import uuid

    etc, tmp = (f"/{d}/gradcheck-probe-{uuid.uuid4().hex}" for d in ("etc", "tmp"))
    isolation, seen = _probe(SandboxOptions(timeout=5), (etc, tmp, "probe.txt"))
    assert {"pid", "net", "mount", "ipc", "filesystem"} <= set(isolation)
    assert {"user", "no-capabilities"} & set(isolation)
    assert seen["pids"] == [1]  # the grader and the rest of the machine are invisible
    assert seen[etc] == "OSError"  # read-only
    assert seen[tmp] == "written"  # a private tmpfs
    assert seen["probe.txt"] == "written"  # its own directory
    assert not os.path.exists(tmp) and not os.path.exists(etc)
    if "user" in isolation:
        assert seen["uid"] != 0 and seen["fork"] == "refused"


LISTING = """
import os
def listing(x):
    out = {}
    for path in PATHS:
        try:
            out[path] = sorted(os.listdir(path))
        except OSError as error:
            out[path] = type(error).__name__
    return out
"""


@pytest.mark.skipif(not use_namespaces(SandboxOptions()), reason="no namespaces here")
def test_worker_root_holds_only_what_python_needs():
    import os
    from pathlib import Path

    import numpy

    repo = str(Path(__file__).resolve().parents[2])
    paths = ("/", "/dev", "/etc", "/tmp", repo, "/var", "/run", "/home", "/srv")
    sandbox = Sandbox(SandboxOptions(timeout=5))
    try:
        assert sandbox.load([f"PATHS = {paths!r}\n{LISTING}"], ["listing"])["callable"]
        reply, buffers = sandbox.run("listing", None, [(1,)])
        seen = channel.decode(reply["results"][0]["value"], buffers)
    finally:
        sandbox.close()
    python = {sys.executable, sys.prefix, sys.base_prefix, numpy.__file__}
    tops = {p.split("/")[1] for p in python | set(map(os.path.realpath, python))}
    system = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "dev", "proc", "tmp"}
    assert set(seen["/"]) <= system | tops
    assert set(seen["/dev"]) <= {"null", "zero", "full", "random", "urandom", "shm"} | {
        "fd", "stdin", "stdout", "stderr"
    }  # fmt: skip
    assert set(seen["/etc"]) <= {"ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime"}
    # /tmp is private: only the worker's own directory, and the mount point of the
    # interpreter's where it lives below /tmp (a virtual environment made by mktemp)
    under_tmp = {p.split("/")[2] for p in map(os.path.realpath, python) if p.startswith("/tmp/")}
    assert [
        name
        for name in seen["/tmp"]
        if not name.startswith("gradcheck-worker-") and name not in under_tmp
    ] == []
    for gone in (repo, "/var", "/run", "/home", "/srv"):
        if gone.split("/")[1] not in tops:
            assert seen[gone] == "FileNotFoundError", (gone, seen[gone])


def test_worker_without_namespaces_still_drops_root():
    import os

    isolation, seen = _probe(SandboxOptions(timeout=5, namespaces=False), ("probe.txt",))
    assert seen["probe.txt"] == "written"
    if os.geteuid() == 0:
        assert {"user", "no-capabilities"} & set(isolation)
        assert seen["uid"] != 0 or "no-capabilities" in isolation


def test_seed_is_scrubbed_from_the_command_line():
    secret = "scrub-me-4b1d"
    code = (
        "import sys, time\nfrom autograder.sandbox import scrub_argv\n"
        "print(scrub_argv(sys.argv[2]), flush=True)\ntime.sleep(5)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, "--seed", secret], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "True"
        time.sleep(0.05)
        with open(f"/proc/{child.pid}/cmdline", "rb") as handle:
            shown = handle.read()
        assert secret.encode() not in shown and b"--seed" in shown
    finally:
        child.kill()
        child.wait()

"""Process helpers shared by the harnesses that start etcd and t4 (scripts/compat/etcdctl_compat.py,
bench/compare.py): children that die with the harness, free loopback ports, a clean etcdctl
environment, and the tail of a server log for error messages. Standard library only."""

import ctypes
import os
import re
import signal
import socket
from pathlib import Path
from subprocess import Popen
from typing import List, Optional


def die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGKILL it if the harness dies abruptly
    (e.g. is SIGKILLed itself), the one case the harness's finally blocks cannot cover."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except Exception:  # not Linux, or no prctl: the finally blocks still apply
        pass


def free_ports(n: int) -> List[int]:
    """Ask the kernel for n distinct free loopback ports (bind to port 0). The sockets are held
    until all n are picked so the same port cannot be handed out twice."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def etcdctl_env() -> dict:
    """The caller's environment without any ETCDCTL_* setting (endpoints, certs, ...), so that
    only the flags the harness passes apply; API version 3."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    env["ETCDCTL_API"] = "3"
    return env


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` lines of a log file, indented, colour codes removed."""
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as e:
        return f"    | (cannot read {path}: {e})"
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # colour codes, if the server logs them
    tail = text.splitlines()[-lines:]
    return "\n".join("    | " + l for l in tail) if tail else "    | (empty log)"


def exit_description(proc: Optional[Popen]) -> str:
    """How a started server process stands: running, or how it ended."""
    if proc is None:
        return "never started"
    rc = proc.poll()
    if rc is None:
        return "running"
    if rc < 0:
        return f"killed by signal {-rc} ({signal.Signals(-rc).name})"
    return f"exited with status {rc}"

#!/usr/bin/env python3
"""Checks that etcdctl_compat.py itself works, without needing t4.

  1. --against-etcd: two etcds must be found identical (the normalisation hides exactly the
     server identity and etcdctl's own log noise, nothing that makes them differ).
  2. --against-etcd with the candidate etcd at --max-txn-ops=200: the harness must bite
     (exit 1, the 129-op txn reported).
  3. --t4-bin FAKE, where FAKE turns `run --data-dir D --listen A --metrics-addr M` into an
     etcd: exercises the t4 path (argv, readiness) and must be identical.
  4. --t4-bin that exits at once: exit 2 with the server's log in the message.
  5. --t4-bin that never answers: exit 2 after --ready-timeout.
  6. --t4-bin FAKE that dies mid-run: exit 1, "died".
  7. SIGINT while the commands run: exit 130, servers stopped.
After each: no server process of that run is left, and its temp dir is gone.

Usage: selftest.py            (about a minute)
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = HERE / "etcdctl_compat.py"


def fake_t4(argv):
    """`fake-t4 run --data-dir D --listen H:P --metrics-addr M`: serve etcd's API on H:P.

    FAKE_T4_DIE_AFTER_S=N: kill the etcd and exit 3 after N seconds."""
    import shutil
    import socket
    assert argv[0] == "run", argv
    opts = dict(zip(argv[1::2], argv[2::2]))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    peer = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    client = f"http://{opts['--listen']}"
    cmd = [shutil.which("etcd") or "/usr/bin/etcd", "--name", "default",
           "--data-dir", opts["--data-dir"], "--listen-client-urls", client,
           "--advertise-client-urls", client, "--listen-peer-urls", peer,
           "--initial-advertise-peer-urls", peer, "--initial-cluster", f"default={peer}"]
    die_after = os.environ.get("FAKE_T4_DIE_AFTER_S")
    if not die_after:
        os.execv(cmd[0], cmd)
    child = subprocess.Popen(cmd)

    def stop(*_):
        child.kill()
        child.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    time.sleep(float(die_after))
    print("fake t4: dying on purpose", flush=True)
    child.kill()
    child.wait()
    sys.exit(3)


def write_exe(dirpath: Path, name: str, body: str) -> str:
    p = dirpath / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return str(p)


def our_leftovers(marker: str):
    """pids of processes whose command line mentions this run's temp dir (read-only check)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"):
                    found.append(int(d.name))
            except OSError:
                pass
    return found


def run_case(name, args, want_rc, want_out=(), env=None, interrupt_after_s=None):
    print(f"--- {name}: etcdctl_compat.py {' '.join(args)}", flush=True)
    proc = subprocess.Popen([sys.executable, str(HARNESS)] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    if interrupt_after_s is not None:
        time.sleep(interrupt_after_s)
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=300)
    text = out.decode("utf-8", "replace")
    problems = []
    if proc.returncode != want_rc:
        problems.append(f"exit {proc.returncode}, want {want_rc}")
    for pattern in want_out:
        if not re.search(pattern, text):
            problems.append(f"output lacks /{pattern}/")
    tmpdirs = re.findall(r"/tmp/t4-etcdctl-compat-[A-Za-z0-9_]+", text)
    for d in set(tmpdirs):
        if Path(d).exists():
            problems.append(f"temp dir left behind: {d}")
        left = our_leftovers(d)
        if left:
            problems.append(f"processes left behind: {left}")
    if not tmpdirs:
        problems.append("could not find the run's temp dir in its output")
    if problems:
        print(text)
        print(f"FAIL {name}: " + "; ".join(problems), flush=True)
        return False
    print(f"ok   {name}: " + (text.strip().splitlines() or [""])[-1][:150], flush=True)
    return True


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "fake-t4":
        fake_t4(sys.argv[2:])
        return 0
    with tempfile.TemporaryDirectory(prefix="t4-compat-selftest-") as tmp:
        tmp = Path(tmp)
        fake = write_exe(tmp, "fake-t4", f'exec "{sys.executable}" "{__file__}" fake-t4 "$@"')
        quits = write_exe(tmp, "quits-t4", 'echo "quits-t4: no such subcommand: $1" >&2; exit 7')
        mute = write_exe(tmp, "mute-t4", "exec sleep 600")
        dies_env = dict(os.environ, FAKE_T4_DIE_AFTER_S="4")
        results = [
            run_case("two etcds are identical", ["--against-etcd"], 0,
                     [r"etcdctl compat: (\d+)/\1 commands identical"]),
            run_case("a different server is caught",
                     ["--against-etcd", "--candidate-etcd-arg=--max-txn-ops=200"], 1,
                     [r"DIFF  etcdctl txn <stdin: 1551 bytes>", r"exit 1 +\| exit 0",
                      r"etcdctl compat: \d+/\d+ commands identical"]),
            run_case("t4 path with an etcd behind it", ["--t4-bin", fake], 0,
                     [r"etcdctl compat: (\d+)/\1 commands identical"]),
            run_case("t4 that exits at once", ["--t4-bin", quits], 2,
                     [r"exited with status 7 before answering", r"quits-t4: no such subcommand: run"]),
            run_case("t4 that never answers", ["--t4-bin", mute, "--ready-timeout", "3"], 2,
                     [r"did not answer `etcdctl get` on 127\.0\.0\.1:\d+ within 3s"]),
            run_case("t4 that dies mid-run", ["--t4-bin", fake], 1,
                     [r"t4 \(candidate\) exited with status 3 after command \d+",
                      r"fake t4: dying on purpose", r"run cut short"], env=dies_env),
            run_case("Ctrl-C", ["--against-etcd"], 130, [r"interrupted"], interrupt_after_s=4),
        ]
    print(f"selftest: {sum(results)}/{len(results)} passed", flush=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

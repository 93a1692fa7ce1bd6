#!/usr/bin/env python3
"""Run the same etcdctl commands against a real etcd and against t4, and compare the answers.

Usage:
    etcdctl_compat.py --t4-bin PATH [--keep-logs DIR] [--verbose]
    etcdctl_compat.py --against-etcd [--keep-logs DIR] [--verbose]

The reference is a real etcd (Debian package etcd-server) on loopback; the candidate is
`t4 run --data-dir TMP --listen 127.0.0.1:P --metrics-addr 127.0.0.1:Q`, or with
`--against-etcd` a second etcd, which validates the harness and its normalisation (it must
report every command identical). Both start empty and receive the command sequence of
commands.py, one command at a time (reference first), through etcdctl with ETCDCTL_API=3.

For each command, exit code, stdout and stderr are compared after normalisation. What is
normalised, and why:
  * the server's identity: `cluster_id`, `member_id`, `raft_term` in `-w json` headers and
    `"ClusterID"`, `"MemberID"`, `"RaftTerm"` lines of `-w fields`. A non-zero value becomes a
    placeholder; zero stays zero (etcd leaves them zero in the headers nested inside txn
    responses, and a server filling them in there is a difference worth seeing).
  * etcdctl's own noise, which is not part of the server's answer: on every failed RPC the
    client logs a JSON line with a timestamp ("ts") and a random client id in "target", and
    that target names the endpoint, whose port the harness picked.
Nothing else is touched: revisions, versions, values, error texts and exit codes must match.

Exit status: 0 when every command is identical, 1 when any differs or a server died,
2 when the harness could not start (missing binary, a server that never answered).
Only processes this script started are ever signalled, and its temp dirs are always removed.
"""

import argparse
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

sys.dont_write_bytecode = True  # keep the source tree clean of __pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "pylib"))
import commands  # noqa: E402  (the command sequence)
from procs import die_with_parent, etcdctl_env, exit_description, free_ports, log_tail  # noqa: E402

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
ETCDCTL_COMMAND_TIMEOUT = "3s"
ETCDCTL_DIAL_TIMEOUT = "2s"
ETCDCTL_WALL_TIMEOUT_S = 30.0  # per invocation, far above --command-timeout: a hung client
LOG_TAIL_LINES = 80
WATCH_STOPPED_RC = -1000  # stands for "still watching when the harness stopped it"
COLUMN_WIDTH = 70
DISPLAY_LINES_MAX = 120


class HarnessError(Exception):
    """The harness could not do its job (as opposed to: the servers answered differently)."""


# ----------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------

class Server:
    """One server process this harness started, with its log file and client endpoint."""

    def __init__(self, role: str, kind: str, argv: List[str], endpoint: str, log_path: Path):
        self.role = role  # "reference" / "candidate"
        self.kind = kind  # "etcd" / "t4"
        self.argv = argv
        self.endpoint = endpoint
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None
        self._log_file = None

    @property
    def title(self) -> str:
        return f"{self.kind} ({self.role})"

    def start(self) -> None:
        self._log_file = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                # Own session: a Ctrl-C in the terminal reaches only this script, which then
                # stops the server itself (cleanly, and only this one).
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        except OSError as e:
            raise HarnessError(f"cannot start {self.title}: {' '.join(self.argv)}: {e}") from e

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_description(self) -> str:
        return exit_description(self.proc)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return log_tail(self.log_path, lines)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Signals only this process's own pid."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
            except ProcessLookupError:
                pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def etcd_server(role: str, etcd_bin: str, workdir: Path, extra: List[str]) -> Server:
    client_port, peer_port = free_ports(2)
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    argv = [
        etcd_bin,
        "--name", "default",
        "--data-dir", str(workdir / f"{role}-etcd-data"),
        "--listen-client-urls", client,
        "--advertise-client-urls", client,
        "--listen-peer-urls", peer,
        "--initial-advertise-peer-urls", peer,
        "--initial-cluster", f"default={peer}",
        "--initial-cluster-state", "new",
    ] + extra
    return Server(role, "etcd", argv, f"127.0.0.1:{client_port}", workdir / f"{role}-etcd.log")


def t4_server(role: str, t4_bin: str, workdir: Path, extra: List[str]) -> Server:
    port, metrics_port = free_ports(2)
    argv = [
        t4_bin, "run",
        "--data-dir", str(workdir / f"{role}-t4-data"),
        "--listen", f"127.0.0.1:{port}",
        "--metrics-addr", f"127.0.0.1:{metrics_port}",
    ] + extra
    return Server(role, "t4", argv, f"127.0.0.1:{port}", workdir / f"{role}-t4.log")


# ----------------------------------------------------------------------------------------------
# etcdctl
# ----------------------------------------------------------------------------------------------

@dataclass
class Answer:
    rc: int
    stdout: bytes
    stderr: bytes


def run_etcdctl(etcdctl: str, endpoint: str, cmd: "commands.Cmd", env: dict,
                command_timeout: str = ETCDCTL_COMMAND_TIMEOUT,
                args: Optional[List["commands.Arg"]] = None) -> Answer:
    argv = [etcdctl, "--endpoints", endpoint, f"--command-timeout={command_timeout}",
            f"--dial-timeout={ETCDCTL_DIAL_TIMEOUT}"] + list(cmd.args if args is None else args)
    if cmd.watch_s is not None:
        # `etcdctl watch` never exits: let it print for watch_s seconds, then stop it.
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, preexec_fn=die_with_parent)
        try:
            out, err = p.communicate(timeout=cmd.watch_s)
            return Answer(p.returncode, out, err)
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                out, err = p.communicate(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            return Answer(WATCH_STOPPED_RC, out, err)
    try:
        p = subprocess.run(argv, input=cmd.stdin if cmd.stdin is not None else b"",
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                           timeout=ETCDCTL_WALL_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        return Answer(-1, e.stdout or b"",
                      (e.stderr or b"") + f"\n[harness: etcdctl still running after "
                      f"{ETCDCTL_WALL_TIMEOUT_S:.0f}s, killed]\n".encode())
    return Answer(p.returncode, p.stdout, p.stderr)


def wait_ready(server: Server, etcdctl: str, env: dict, timeout_s: float) -> None:
    """Poll with a plain `get` (endpoint health would also need the Maintenance API) until the
    server answers, it exits, or timeout_s passes."""
    probe = commands.Cmd(args=("get", "compat-harness-readiness-probe"))
    deadline = time.monotonic() + timeout_s
    last: Optional[Answer] = None
    while time.monotonic() < deadline:
        if not server.alive():
            raise HarnessError(
                f"{server.title} {server.exit_description()} before answering on "
                f"{server.endpoint}.\n  command: {' '.join(server.argv)}\n  log "
                f"({server.log_path}):\n{server.log_tail()}")
        last = run_etcdctl(etcdctl, server.endpoint, probe, env, command_timeout="1s")
        if last.rc == 0:
            return
        time.sleep(0.2)
    detail = ""
    if last is not None:
        detail = (f"\n  last probe: exit {last.rc}, stderr: "
                  f"{last.stderr.decode('utf-8', 'replace').strip()[-500:]}")
    raise HarnessError(
        f"{server.title} did not answer `etcdctl get` on {server.endpoint} within "
        f"{timeout_s:.0f}s.{detail}\n  command: {' '.join(server.argv)}\n  log "
        f"({server.log_path}):\n{server.log_tail()}")


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------

_JSON_ID = re.compile(rb'"(cluster_id|member_id|raft_term)":(\d+)')
_FIELDS_ID = re.compile(rb'^"(ClusterID|MemberID|RaftTerm)" : (\d+)$', re.MULTILINE)
_ZAP_TS = re.compile(rb'"ts":"[^"]*"')
_ZAP_CLIENT = re.compile(rb'endpoint://client-[0-9a-fA-F-]+/')


def _placeholder_if_nonzero(m: "re.Match", fmt: bytes) -> bytes:
    name, value = m.group(1), m.group(2)
    if int(value) == 0:
        return m.group(0)
    return fmt.replace(b"NAME", name)


def normalise(data: bytes, endpoint: str) -> bytes:
    data = _JSON_ID.sub(lambda m: _placeholder_if_nonzero(m, b'"NAME":"<NAME>"'), data)
    data = _FIELDS_ID.sub(lambda m: _placeholder_if_nonzero(m, b'"NAME" : <NAME>'), data)
    data = _ZAP_TS.sub(b'"ts":"<ts>"', data)
    data = _ZAP_CLIENT.sub(b"endpoint://client-<id>/", data)
    data = data.replace(endpoint.encode(), b"<endpoint>")
    return data


_LOOSE = [
    # remaining TTL counts down while the commands run
    (re.compile(rb"remaining\(\d+s\)"), b"remaining(<ttl>)"),
    (re.compile(rb'"ttl":\d+'), b'"ttl":<ttl>'),
    # what differs by construction between two implementations / two data dirs
    (re.compile(rb'"version":"[^"]*"'), b'"version":"<version>"'),
    (re.compile(rb'"(dbSize|dbSizeInUse|raftIndex|raftAppliedIndex|raftTerm|leader)":\d+'),
     rb'"\1":<\1>'),
]


def substitute(args: "commands.Sequence[commands.Arg]", variables: dict) -> List["commands.Arg"]:
    """Replaces `{NAME}` in string arguments by this server's value of NAME."""
    out: List["commands.Arg"] = []
    for a in args:
        if isinstance(a, str):
            for name, value in variables.items():
                a = a.replace("{" + name + "}", value)
        out.append(a)
    return out


def normalise_vars(data: bytes, variables: dict) -> bytes:
    """Replaces each captured lease id (16-digit hex as etcdctl prints it, and the decimal
    form of `-w json`) by its name. Longest values first, so one id never eats another."""
    for name, value in sorted(variables.items(), key=lambda kv: -len(kv[1])):
        if name == "snap":
            data = data.replace(value.encode(), b"<snap>")
            continue
        data = data.replace(value.encode(), f"<{name}>".encode())
        data = data.replace(str(int(value, 16)).encode(), f"<{name}>".encode())
    return data


def normalised(ans: Answer, endpoint: str, cmd: Optional["commands.Cmd"] = None,
               variables: Optional[dict] = None) -> Answer:
    out, err = normalise(ans.stdout, endpoint), normalise(ans.stderr, endpoint)
    if variables:
        out, err = normalise_vars(out, variables), normalise_vars(err, variables)
    if cmd is not None and cmd.loose:
        for pattern, repl in _LOOSE:
            out, err = pattern.sub(repl, out), pattern.sub(repl, err)
    if cmd is not None and cmd.stdout_only:
        err = b""
    return Answer(ans.rc, out, err)


_LEASE_GRANTED = re.compile(rb"^lease ([0-9a-f]{16}) granted", re.MULTILINE)


def run_one(etcdctl: str, server: Server, cmd: "commands.Cmd", env: dict, variables: dict,
            workdir: Path) -> Answer:
    """Runs `cmd` against `server` with that server's variables, records a capture, and
    returns the normalised answer."""
    variables.setdefault("snap", str(workdir / f"{server.role}-snapshot.db"))
    raw = run_etcdctl(etcdctl, server.endpoint, cmd, env, args=substitute(cmd.args, variables))
    if cmd.capture is not None:
        m = _LEASE_GRANTED.search(raw.stdout)
        if m is not None:
            variables[cmd.capture] = m.group(1).decode()
    return normalised(raw, server.endpoint, cmd, variables)


# ----------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------

def _display_text(data: bytes, pretty: bool = True) -> List[str]:
    text = data.decode("utf-8", "backslashreplace")
    stripped = text.strip()
    # Pretty-print a one-line JSON document so that the two columns line up field by field.
    if pretty and stripped.startswith("{") and "\n" not in stripped:
        try:
            text = json.dumps(json.loads(stripped), indent=1, ensure_ascii=False)
        except ValueError:
            pass
    return text.splitlines()


def _answer_lines(ans: Answer, pretty: bool = True) -> List[str]:
    lines = [f"exit {ans.rc}", "stdout:"]
    lines += ["  " + l for l in _display_text(ans.stdout, pretty)]
    lines.append("stderr:")
    lines += ["  " + l for l in _display_text(ans.stderr, pretty)]
    return lines


def _wrap(line: str) -> List[str]:
    line = line.replace("\t", "    ")
    if len(line) > 2000:
        line = line[:2000] + f"...(+{len(line) - 2000} chars)"
    return textwrap.wrap(line, COLUMN_WIDTH, drop_whitespace=False,
                         replace_whitespace=False) or [""]


def side_by_side(left_title: str, left: Answer, right_title: str, right: Answer) -> str:
    a, b = _answer_lines(left), _answer_lines(right)
    if a == b:  # the difference is in what pretty-printing hides (spacing): show the raw text
        a, b = _answer_lines(left, pretty=False), _answer_lines(right, pretty=False)
    rows: List[Tuple[str, str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            rows += [(a[i], " ", b[j]) for i, j in zip(range(i1, i2), range(j1, j2))]
        elif op == "replace":
            n = max(i2 - i1, j2 - j1)
            for k in range(n):
                la = a[i1 + k] if i1 + k < i2 else None
                lb = b[j1 + k] if j1 + k < j2 else None
                mark = "|" if la is not None and lb is not None else ("<" if lb is None else ">")
                rows.append((la or "", mark, lb or ""))
        elif op == "delete":
            rows += [(a[i], "<", "") for i in range(i1, i2)]
        elif op == "insert":
            rows += [("", ">", b[j]) for j in range(j1, j2)]
    out = [f"    {left_title:<{COLUMN_WIDTH}}   {right_title}",
           f"    {'-' * COLUMN_WIDTH}   {'-' * COLUMN_WIDTH}"]
    shown = 0
    for la, mark, lb in rows:
        wa, wb = _wrap(la), _wrap(lb)
        for k in range(max(len(wa), len(wb))):
            ca = wa[k] if k < len(wa) else ""
            cb = wb[k] if k < len(wb) else ""
            out.append(f"    {ca:<{COLUMN_WIDTH}} {mark if k == 0 else ' '} {cb}".rstrip())
            shown += 1
        if shown >= DISPLAY_LINES_MAX:
            out.append(f"    ... ({len(rows)} rows in all, display cut)")
            break
    return "\n".join(out)


def transcript_entry(n: int, cmd: "commands.Cmd", ref_title: str, ref: Answer,
                     cand_title: str, cand: Answer, same: bool) -> str:
    def block(title: str, ans: Answer) -> str:
        out = ans.stdout.decode("utf-8", "backslashreplace")
        err = ans.stderr.decode("utf-8", "backslashreplace")
        if len(out) > 4000:
            out = out[:4000] + f"...(+{len(out) - 4000} chars)"
        return (f"  [{title}] exit {ans.rc}\n"
                + textwrap.indent("stdout:\n" + textwrap.indent(out, "  ") +
                                  "\nstderr:\n" + textwrap.indent(err, "  "), "    "))
    status = "identical" if same else "DIFFERENT"
    text = f"=== {n}: etcdctl {cmd.label()}   [{status}]\n"
    if cmd.stdin is not None and len(cmd.stdin) <= 4000:
        shown = "".join(ch if ch == "\n" or ch.isprintable() else repr(ch)[1:-1]
                        for ch in cmd.stdin.decode("utf-8", "backslashreplace"))
        text += "  stdin:\n" + "".join(f"    | {l}\n" for l in shown.split("\n")[:-1] or [shown])
    text += block(ref_title, ref) + "\n"
    if not same:
        text += block(cand_title, cand) + "\n"
    return text


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def _raise_on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def parse_args(argv: List[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--t4-bin", help="path to the t4 binary (the candidate)")
    p.add_argument("--against-etcd", action="store_true",
                   help="use a second etcd as the candidate (validates the harness)")
    p.add_argument("--keep-logs", metavar="DIR",
                   help="copy both servers' logs and a transcript of every answer into DIR")
    p.add_argument("--t4-arg", action="append", default=[], metavar="ARG",
                   help="extra argument appended to `t4 run` (repeatable)")
    p.add_argument("--candidate-etcd-arg", action="append", default=[], metavar="ARG",
                   help="with --against-etcd: extra argument for the candidate etcd only, e.g. "
                        "--candidate-etcd-arg=--max-txn-ops=64 to check that the harness "
                        "reports a server that behaves differently (repeatable)")
    p.add_argument("--etcd-bin", default=shutil.which("etcd") or "/usr/bin/etcd")
    p.add_argument("--etcdctl-bin", default=shutil.which("etcdctl") or "/usr/bin/etcdctl")
    p.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S, metavar="SECONDS")
    p.add_argument("--verbose", action="store_true",
                   help="print the reference answer of every command")
    args = p.parse_args(argv)
    if not args.against_etcd and not args.t4_bin:
        p.error("either --t4-bin PATH or --against-etcd is required")
    if args.against_etcd and args.t4_bin:
        p.error("--t4-bin and --against-etcd are exclusive")
    if args.candidate_etcd_arg and not args.against_etcd:
        p.error("--candidate-etcd-arg needs --against-etcd")
    if args.t4_arg and args.against_etcd:
        p.error("--t4-arg needs --t4-bin")
    return args


def check_executable(path: str, what: str, hint: str) -> None:
    if not (path and os.path.isfile(path) and os.access(path, os.X_OK)):
        raise HarnessError(f"{what} not found or not executable: {path!r}. {hint}")


def run(args: argparse.Namespace) -> int:
    setup_hint = ("Run the project's setup, scripts/setup (it installs the Debian packages "
                  "etcd-server and etcd-client).")
    check_executable(args.etcd_bin, "etcd", setup_hint)
    check_executable(args.etcdctl_bin, "etcdctl", setup_hint)
    if args.t4_bin:
        check_executable(args.t4_bin, "t4 binary", "Build it: cargo build -p t4-server.")

    cmds = commands.build()
    env = etcdctl_env()
    workdir = Path(tempfile.mkdtemp(prefix="t4-etcdctl-compat-"))
    print(f"work dir (removed at exit): {workdir}", flush=True)
    servers: List[Server] = []
    transcript: List[str] = []
    try:
        ref = etcd_server("reference", args.etcd_bin, workdir, [])
        servers.append(ref)
        if args.against_etcd:
            cand = etcd_server("candidate", args.etcd_bin, workdir, args.candidate_etcd_arg)
        else:
            cand = t4_server("candidate", os.path.abspath(args.t4_bin), workdir, args.t4_arg)
        servers.append(cand)

        for s in servers:
            print(f"starting {s.title} on {s.endpoint}: {' '.join(s.argv)}", flush=True)
            s.start()
        for s in servers:
            wait_ready(s, args.etcdctl_bin, env, args.ready_timeout)
            print(f"{s.title} answers on {s.endpoint}", flush=True)

        identical = 0
        died: Optional[Server] = None
        ref_vars: dict = {}
        cand_vars: dict = {}
        width = len(str(len(cmds)))
        for n, cmd in enumerate(cmds, start=1):
            a = run_one(args.etcdctl_bin, ref, cmd, env, ref_vars, workdir)
            b = run_one(args.etcdctl_bin, cand, cmd, env, cand_vars, workdir)
            same = (a.rc, a.stdout, a.stderr) == (b.rc, b.stdout, b.stderr)
            identical += same
            transcript.append(transcript_entry(n, cmd, ref.title, a, cand.title, b, same))
            print(f"[{n:>{width}}/{len(cmds)}] {'ok  ' if same else 'DIFF'}  etcdctl {cmd.label()}",
                  flush=True)
            if args.verbose and same:
                print(textwrap.indent("\n".join(_answer_lines(a)), "    "), flush=True)
            if not same:
                print(side_by_side(ref.title, a, cand.title, b), flush=True)
            dead = [s for s in servers if not s.alive()]
            if dead:
                died = dead[0]
                print(f"\n{died.title} {died.exit_description()} after command {n} "
                      f"(etcdctl {cmd.label()}); stopping.\n  log ({died.log_path}):\n"
                      f"{died.log_tail()}", flush=True)
                break

        print(f"etcdctl compat: {identical}/{len(cmds)} commands identical"
              + ("" if died is None else f" (run cut short: {died.title} died)"), flush=True)
        return 0 if identical == len(cmds) and died is None else 1
    finally:
        for s in reversed(servers):
            s.stop()
        if args.keep_logs:
            keep = Path(args.keep_logs)
            try:
                keep.mkdir(parents=True, exist_ok=True)
                for s in servers:
                    if s.log_path.exists():
                        shutil.copy(s.log_path, keep / s.log_path.name)
                (keep / "transcript.txt").write_text("".join(transcript), encoding="utf-8")
                print(f"logs and transcript kept in {keep}", flush=True)
            except OSError as e:
                print(f"cannot keep logs in {keep}: {e}", file=sys.stderr, flush=True)
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)
    try:
        return run(args)
    except HarnessError as e:
        print(f"etcdctl compat: harness error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt as e:
        print(f"etcdctl compat: interrupted ({str(e) or 'SIGINT'}); servers stopped", file=sys.stderr,
              flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Side-by-side benchmark of t4 against a real etcd on the same machine.

Usage:
    bench/compare.py [--workloads a,b] [--repeats 3] [--duration 8s] [--out FILE.jsonl]
                     [--results-md bench/RESULTS.md] [--t4-bin PATH] [--keep-logs DIR] ...
    bench/compare.py --self-test

What it does (bench/README.md has the long version):
  1. Checks that etcd and etcdctl are installed (runs scripts/setup if not) and builds t4 with
     `cargo build --release --workspace --bins` (unless --t4-bin is given), honouring
     CARGO_TARGET_DIR.
  2. For every workload, R pairs of runs (--repeats). A pair is one run against t4 and one
     against etcd, in alternating order (t4 first, then etcd first, ...). Every run gets a
     server of its own: started on free loopback ports with an empty data dir, loaded with
     `t4 bench --workload W --duration D --output jsonl` (the same client and settings for
     both), then stopped and its data dir deleted. Only one server runs at a time.
  3. Runs etcd's own `etcdctl check perf --load=l` and `--load=xl` against a fresh t4 and a
     fresh etcd each.
  4. Prints a Markdown table (medians over the repeats), appends every raw run, the medians and
     the check-perf results to a JSON-lines file (--out), and with --results-md rewrites that
     Markdown file with the machine description, versions, command and results.

bench/compare_cluster.py (3-node clusters) imports this module for all the two comparisons share.

Only processes this script started are ever signalled (SIGTERM, then SIGKILL after a timeout),
children die with it (PR_SET_PDEATHSIG), and its temp dirs are always removed.
Exit status: 0 when everything ran, 1 when some run failed (the others are still reported),
2 when the harness could not start (missing binary, build failure, a server that never answered).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Optional, Tuple

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts" / "pylib"))
from procs import die_with_parent, etcdctl_env, exit_description, free_ports, log_tail  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WORKLOADS = ["seq-put", "par-put", "seq-get", "par-get", "mixed", "range-100", "txn-cas",
             "watch", "watch-fanout", "lease-churn"]
# defined for exactly one client in `t4 bench`: --clients is not passed to these
SINGLE_CLIENT = {"seq-put", "seq-get", "watch", "watch-fanout"}
CHECK_PERF_LOADS = ["l", "xl"]
CHECK_PERF_SECONDS = 60  # fixed by etcdctl for every load
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
RUN_OVERHEAD_S = 3.0     # server start + bench connect/warm-up + stop, per run (estimate only)
LOG_TAIL_LINES = 40


class HarnessError(Exception):
    """The harness could not do its job (as opposed to: a run failed)."""


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_duration(s: str) -> float:
    """'10s', '500ms', '2m', '1.5' (seconds) -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m)?\s*", s)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {s!r} (use e.g. 10s, 500ms, 2m)")
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0}[unit]


def fmt_duration_arg(seconds: float) -> str:
    """Seconds -> the form passed to `t4 bench --duration`."""
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{int(round(seconds * 1000))}ms"


def fmt_ops(v: Optional[float]) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def fmt_us(v: Optional[float]) -> str:
    if v is None:
        return "—"
    if v >= 10_000:
        return f"{v / 1000:.1f} ms"
    if v >= 1000:
        return f"{v / 1000:.2f} ms"
    return f"{v:.0f} µs"


def result_line(x: dict) -> str:
    """A `t4 bench` result as the progress log shows it: throughput, p50, p99 (and errors)."""
    return (f"{fmt_ops(x.get('ops_per_sec')):>9s} ops/s  "
            f"p50 {fmt_us(x.get('p50_us'))}  p99 {fmt_us(x.get('p99_us'))}"
            + (f"  errors {x['errors']}" if x.get("errors") else ""))


def fmt_seconds(v: Optional[float]) -> str:
    return "—" if v is None else f"{v:.3f} s"


def fmt_minutes(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def bench_env() -> dict:
    """The caller's environment without T4_BENCH_* (t4 bench reads its flags from those): only
    the flags this script passes apply, identically for both servers."""
    return {k: v for k, v in os.environ.items() if not k.startswith("T4_BENCH_")}


def verdict_lines(rec: dict) -> List[str]:
    """check perf's findings without its final bare PASS/FAIL line."""
    return [l for l in rec.get("output", []) if l not in ("PASS", "FAIL")]


def median(xs: List[float]) -> Optional[float]:
    return statistics.median(xs) if xs else None


# ----------------------------------------------------------------------------------------------
# Servers
# ----------------------------------------------------------------------------------------------

class Server:
    """One server process this script started, on its own fresh data dir."""

    def __init__(self, kind: str, argv: List[str], endpoint: str, data_dir: Path,
                 log_path: Path):
        self.kind = kind            # "t4" / "etcd"
        self.argv = argv
        self.endpoint = endpoint    # host:port
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: Optional[subprocess.Popen] = None
        self._log = None

    def start(self) -> None:
        self._log = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                # own session: a Ctrl-C reaches only this script, which then stops the server
                start_new_session=True, preexec_fn=die_with_parent)
        except OSError as e:
            self._log.close()
            raise HarnessError(f"cannot start {self.kind}: {shlex.join(self.argv)}: {e}") from e

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def exit_description(self) -> str:
        return exit_description(self.proc)

    def describe(self) -> str:
        return f"{self.kind} (pid {self.proc.pid if self.proc else '?'})"

    def failure(self, what: str) -> str:
        return (f"{self.kind} {what}\n  command: {shlex.join(self.argv)}\n"
                f"  log ({self.log_path}):\n{log_tail(self.log_path, LOG_TAIL_LINES)}")

    def wait_ready(self, etcdctl: str) -> None:
        """Polls `etcdctl get` until the server answers, exits, or READY_TIMEOUT_S passes."""
        env = etcdctl_env()
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(self.failure(
                    f"{self.exit_description()} before answering on {self.endpoint}"))
            try:
                p = subprocess.run(
                    [etcdctl, "--endpoints", self.endpoint, "--dial-timeout=1s",
                     "--command-timeout=1s", "get", "bench-readiness-probe"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    env=env, timeout=10, preexec_fn=die_with_parent)
                if p.returncode == 0:
                    return
                last = p.stderr.decode("utf-8", "replace").strip()[-300:]
            except subprocess.TimeoutExpired:
                last = "etcdctl get timed out"
            time.sleep(0.1)
        raise HarnessError(self.failure(
            f"did not answer `etcdctl get` on {self.endpoint} within {READY_TIMEOUT_S:.0f}s "
            f"(last: {last})"))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; only this server's own pid."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log(f"  {self.kind} did not stop within {STOP_TIMEOUT_S:.0f}s of SIGTERM; "
                        f"SIGKILL")
                    self.proc.kill()
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None


class HarnessBase:
    """What the harnesses of both comparisons share: a temp work dir (make_workdir) with the logs
    in logs/, and every server (here) or cluster (compare_cluster.py) started in it, each with
    stop(), describe() and a data_dir of its own, so that all can be stopped at the end."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        self.args = args
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.logdir.mkdir()
        self.started: list = []

    def finish(self, s) -> None:
        """Stops one server or cluster, and deletes its data."""
        s.stop()
        shutil.rmtree(s.data_dir, ignore_errors=True)

    def stop_all(self) -> None:
        for s in self.started:
            try:
                s.stop()
            except Exception as e:  # keep stopping the others
                log(f"warning: stopping {s.describe()}: {e}")

    def tear_down(self) -> None:
        """Stops everything started, copies the logs to --keep-logs, removes the work dir."""
        self.stop_all()
        if self.args.keep_logs:
            dest = Path(self.args.keep_logs)
            dest.mkdir(parents=True, exist_ok=True)
            for f in self.logdir.iterdir():
                shutil.copy2(f, dest / f.name)
            log(f"server and bench logs copied to {dest}")
        shutil.rmtree(self.workdir, ignore_errors=True)


class Harness(HarnessBase):
    """Starts fresh servers under one temp dir; remembers every server it started."""

    def __init__(self, args: argparse.Namespace, workdir: Path):
        super().__init__(args, workdir)
        self.counter = 0

    def new_server(self, kind: str, label: str) -> Server:
        self.counter += 1
        name = f"{self.counter:03d}-{kind}-{label}"
        data = self.workdir / f"data-{name}"
        log_path = self.logdir / f"{name}.log"
        if kind == "t4":
            (port,) = free_ports(1)
            endpoint = f"127.0.0.1:{port}"
            argv = [str(self.args.t4_bin), "run", "--data-dir", str(data), "--listen", endpoint,
                    "--log-level", "warn"]
        else:
            client_port, peer_port = free_ports(2)
            endpoint = f"127.0.0.1:{client_port}"
            client, peer = f"http://{endpoint}", f"http://127.0.0.1:{peer_port}"
            argv = [self.args.etcd_bin, "--name", "bench", "--data-dir", str(data),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"bench={peer}", "--initial-cluster-state", "new",
                    "--log-level", "warn"]
        server = Server(kind, pinned_to(self.args, SERVER_CORE) + argv, endpoint, data, log_path)
        self.started.append(server)
        server.start()
        server.wait_ready(self.args.etcdctl_bin)
        return server


# ----------------------------------------------------------------------------------------------
# One benchmark run, one check perf
# ----------------------------------------------------------------------------------------------

# --pin: each server on one core, the load generator on the other.
SERVER_CORE, CLIENT_CORE = 0, 1


def pinned_to(args: argparse.Namespace, core: int) -> List[str]:
    """The `taskset` prefix that keeps a process on `core` with --pin; nothing without it."""
    return ["taskset", "-c", str(core)] if args.pin else []


def bench_argv(args: argparse.Namespace, endpoint: str, workload: str) -> List[str]:
    return [str(args.bench_bin), "bench", "--endpoints", f"http://{endpoint}",
            "--workload", workload, "--duration", fmt_duration_arg(args.duration),
            "--output", "jsonl"] + client_flags(args, workload)


def client_flags(args: argparse.Namespace, workload: str) -> List[str]:
    """The `t4 bench` flags both comparisons pass alike (add_client_args): --clients (not to a
    single-client workload), --key-size, --val-size, then every --bench-arg."""
    argv = []
    if args.clients is not None and workload not in SINGLE_CLIENT:
        argv += ["--clients", str(args.clients)]
    if args.key_size is not None:
        argv += ["--key-size", str(args.key_size)]
    if args.val_size is not None:
        argv += ["--val-size", str(args.val_size)]
    for extra in args.bench_arg:
        argv += shlex.split(extra)
    return argv


def parse_bench_output(stdout: str) -> dict:
    """The last line of stdout that is a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    raise ValueError("no JSON object on stdout")


def run_client(argv: List[str], bench_log: Path, timeout_s: float, rec: dict) -> bool:
    """Runs `t4 bench` (argv), its stderr to bench_log, and puts into the run record `rec` the
    wall time and the result, or what went wrong ("error"). False when it was still running
    after timeout_s and was killed."""
    t0 = time.monotonic()
    try:
        with open(bench_log, "wb") as err:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=err, timeout=timeout_s, env=bench_env(),
                               preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired:
        rec["error"] = f"t4 bench still running after {timeout_s:.0f}s; killed"
        return False
    rec["wall_s"] = round(time.monotonic() - t0, 3)
    stdout = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0:
        rec["error"] = (f"t4 bench exited with status {p.returncode}; stderr:\n"
                        f"{log_tail(bench_log, 15)}")
    else:
        try:
            rec["result"] = parse_bench_output(stdout)
        except ValueError as e:
            rec["error"] = f"t4 bench: {e}; stdout: {stdout.strip()[-300:]!r}"
    return True


def run_bench(h: Harness, kind: str, workload: str, repeat: int, position: int) -> dict:
    """One fresh server of `kind`, one `t4 bench` run against it. Never raises for a failed
    run: the record says what went wrong ("error")."""
    args = h.args
    rec = {"type": "run", "workload": workload, "server": kind, "repeat": repeat,
           "position": position, "started_at": now_iso()}
    server = None
    try:
        server = h.new_server(kind, workload)
        argv = pinned_to(args, CLIENT_CORE) + bench_argv(args, server.endpoint, workload)
        rec["bench_cmd"] = shlex.join(argv)
        bench_log = h.logdir / f"{h.counter:03d}-{kind}-{workload}.bench-stderr.log"
        if not run_client(argv, bench_log, args.duration * 3 + 180, rec):
            return rec
        if not server.alive():
            rec["error"] = (rec.get("error", "") + "\n" + server.failure(
                f"{server.exit_description()} during the run")).strip()
    except HarnessError as e:
        rec["error"] = str(e)
    finally:
        if server is not None:
            h.finish(server)
    return rec


_CP_THROUGHPUT = re.compile(r"(\d+(?:\.\d+)?) writes/s")
_CP_SLOWEST = re.compile(r"Slowest request took (?:too long: )?(\d+(?:\.\d+)?)s")
_CP_STDDEV = re.compile(r"Stddev (?:too high: |is )(\d+(?:\.\d+)?)s")


def run_check_perf(h: Harness, kind: str, load: str) -> dict:
    """`etcdctl check perf --load=LOAD` against a fresh server of `kind`."""
    rec = {"type": "check_perf", "server": kind, "load": load, "started_at": now_iso()}
    server = None
    try:
        server = h.new_server(kind, f"check-perf-{load}")
        argv = [h.args.etcdctl_bin, "--endpoints", server.endpoint, "check", "perf",
                f"--load={load}", "--prefix=/etcdctl-check-perf/"]
        rec["cmd"] = shlex.join(argv)
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=etcdctl_env(),
                               timeout=CHECK_PERF_SECONDS + 180, preexec_fn=die_with_parent)
            out, rc = p.stdout.decode("utf-8", "replace"), p.returncode
        except subprocess.TimeoutExpired as e:
            out, rc = (e.output or b"").decode("utf-8", "replace"), None
            rec["error"] = "etcdctl check perf did not finish; killed"
        # The progress bar redraws with \r; keep only the verdict lines after it.
        lines = [l.split("\r")[-1].strip() for l in out.splitlines()]
        lines = [l for l in lines if l and "Booo" not in l and not re.match(r"^\d+ / \d+", l)]
        rec["rc"] = rc
        rec["output"] = lines
        rec["verdict"] = "PASS" if rc == 0 else "FAIL" if rc is not None else "ERROR"
        text = "\n".join(lines)
        for key, rx in (("writes_per_sec", _CP_THROUGHPUT), ("slowest_s", _CP_SLOWEST),
                        ("stddev_s", _CP_STDDEV)):
            m = rx.search(text)
            if m:
                rec[key] = float(m.group(1))
        if rc not in (0, None) and "writes_per_sec" not in rec:
            # not a verdict: etcdctl gave up (connection, a non-empty prefix, ...)
            rec["verdict"] = "ERROR"
            rec["error"] = f"etcdctl check perf exited {rc} without a verdict"
        if not server.alive():
            rec["verdict"] = "ERROR"
            rec["error"] = server.failure(f"{server.exit_description()} during check perf")
    except HarnessError as e:
        rec["error"] = str(e)
        rec["verdict"] = "ERROR"
    finally:
        if server is not None:
            h.finish(server)
    return rec


# ----------------------------------------------------------------------------------------------
# Summaries
# ----------------------------------------------------------------------------------------------

def now_iso() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def summarise(workload: str, runs: List[dict]) -> dict:
    s = {"type": "median", "workload": workload}
    for kind in ("t4", "etcd"):
        ok = [r["result"] for r in runs if r["server"] == kind and "result" in r]
        ops = [float(x.get("ops_per_sec", 0)) for x in ok]
        s[f"{kind}_runs_ok"] = len(ok)
        s[f"{kind}_runs_failed"] = sum(1 for r in runs if r["server"] == kind and "error" in r)
        s[f"{kind}_ops_per_sec"] = median(ops)
        s[f"{kind}_ops_per_sec_min"] = min(ops) if ops else None
        s[f"{kind}_ops_per_sec_max"] = max(ops) if ops else None
        for p in ("p50_us", "p90_us", "p99_us", "p999_us"):
            s[f"{kind}_{p}"] = median([float(x[p]) for x in ok if x.get(p) is not None])
        s[f"{kind}_errors"] = sum(int(x.get("errors", 0) or 0) for x in ok)
        s[f"{kind}_conflicts"] = sum(int(x.get("conflicts", 0) or 0) for x in ok)
        clients = sorted({x.get("clients") for x in ok if x.get("clients") is not None})
        s[f"{kind}_clients"] = clients[0] if len(clients) == 1 else clients or None
    t, e = s["t4_ops_per_sec"], s["etcd_ops_per_sec"]
    s["ratio"] = (t / e) if t is not None and e else None
    return s


def spread(s: dict, kind: str) -> str:
    lo, hi, med = (s[f"{kind}_ops_per_sec_min"], s[f"{kind}_ops_per_sec_max"],
                   s[f"{kind}_ops_per_sec"])
    if med is None or not med or lo is None or s[f"{kind}_runs_ok"] < 2:
        return "—"
    return f"±{(hi - lo) / 2 / med * 100:.0f}%"


# The columns of a results table after the workload (bench/compare_cluster.py adds its own
# between the two): head, alignment, and the cells of one median record.
RESULT_COLUMNS = ("clients | t4 ops/s | etcd ops/s | t4 / etcd | t4 p99 | etcd p99 "
                  "| spread t4 / etcd | notes")
RESULT_ALIGN = "---:|---:|---:|---:|---:|---:|---:|---"


def result_cells(s: dict) -> str:
    """One median record's cells under RESULT_COLUMNS, ` | `-separated."""
    notes = []
    for kind in ("t4", "etcd"):
        if s[f"{kind}_runs_failed"]:
            notes.append(f"{kind}: {s[f'{kind}_runs_failed']} run(s) failed")
        if s[f"{kind}_errors"]:
            notes.append(f"{kind}: {s[f'{kind}_errors']} errors")
        if s[f"{kind}_conflicts"]:
            notes.append(f"{kind}: {s[f'{kind}_conflicts']} conflicts")
    notes += s.get("extra_notes", [])
    clients = s["t4_clients"] if s["t4_clients"] is not None else s["etcd_clients"]
    if s["t4_clients"] != s["etcd_clients"] and None not in (s["t4_clients"],
                                                             s["etcd_clients"]):
        clients = f"{s['t4_clients']} / {s['etcd_clients']}"
    ratio = f"{s['ratio']:.2f}×" if s["ratio"] is not None else "—"
    return (f"{clients if clients is not None else '—'} "
            f"| {fmt_ops(s['t4_ops_per_sec'])} | {fmt_ops(s['etcd_ops_per_sec'])} | {ratio} "
            f"| {fmt_us(s['t4_p99_us'])} | {fmt_us(s['etcd_p99_us'])} "
            f"| {spread(s, 't4')} / {spread(s, 'etcd')} | {'; '.join(notes)}")


def results_table(summaries: List[dict]) -> str:
    rows = [f"| workload | {RESULT_COLUMNS} |", f"|---|{RESULT_ALIGN}|"]
    rows += [f"| {s['workload']} | {result_cells(s)} |" for s in summaries]
    return "\n".join(rows)


def check_perf_table(recs: List[dict]) -> str:
    rows = ["| load | server | verdict | writes/s | slowest request | stddev | output |",
            "|---|---|---|---:|---:|---:|---|"]
    for r in recs:
        out = " · ".join(verdict_lines(r)) or " ".join(r.get("error", "").splitlines()[:1])
        out = out.replace("|", "\\|")
        rows.append(
            f"| {r['load']} | {r['server']} | {r.get('verdict', 'ERROR')} "
            f"| {fmt_ops(r.get('writes_per_sec'))} "
            f"| {fmt_seconds(r.get('slowest_s'))} | {fmt_seconds(r.get('stddev_s'))} "
            f"| {out} |")
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------
# Machine and versions
# ----------------------------------------------------------------------------------------------

def fsync_probe(directory: Path, n: int = 200) -> dict:
    """Appends 4 KiB and fdatasyncs, n times, in `directory` (the file system the servers'
    data dirs live on): the floor under every durable write either server acknowledges."""
    path = directory / "fsync-probe"
    lat = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"x" * 4096
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            lat.append((time.perf_counter() - t0) * 1e6)
    finally:
        os.close(fd)
        path.unlink()
    lat.sort()
    return {"appends": n, "p50_us": round(lat[n // 2], 1), "p99_us": round(lat[int(n * 0.99)], 1)}


def filesystem_of(path: Path) -> str:
    best, desc = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) \
                    and len(mnt) >= len(best):
                best, desc = mnt, f"{fstype} on {dev} (mounted at {mnt})"
    except OSError:
        pass
    return desc


def machine_info(workdir: Path) -> dict:
    info = {"hostname_kernel": f"{platform.system()} {platform.release()}",
            "cores": os.cpu_count()}
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.*)$", cpu, re.MULTILINE)
        info["cpu"] = m.group(1).strip() if m else platform.processor() or "unknown"
    except OSError:
        info["cpu"] = "unknown"
    try:
        mem = Path("/proc/meminfo").read_text()
        m = re.search(r"^MemTotal:\s*(\d+) kB", mem, re.MULTILINE)
        info["memory"] = f"{int(m.group(1)) / 1024 / 1024:.1f} GiB" if m else "unknown"
    except OSError:
        info["memory"] = "unknown"
    try:
        osr = Path("/etc/os-release").read_text()
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?$', osr, re.MULTILINE)
        info["os"] = m.group(1) if m else "unknown"
    except OSError:
        info["os"] = "unknown"
    info["filesystem"] = filesystem_of(workdir)
    info["fsync_probe"] = fsync_probe(workdir)
    info["loadavg_at_start"] = os.getloadavg()[0]
    return info


def first_line(argv: List[str]) -> str:
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=20, env=etcdctl_env())
        lines = p.stdout.decode("utf-8", "replace").strip().splitlines()
        return lines[0].strip() if lines else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def versions(args: argparse.Namespace) -> dict:
    v = {"etcd": first_line([args.etcd_bin, "--version"]).replace("etcd Version: ", ""),
         "etcdctl": first_line([args.etcdctl_bin, "version"]).replace("etcdctl version: ", ""),
         "t4": first_line([str(args.t4_bin), "--version"])}
    # read-only git queries (no index refresh: --no-optional-locks)
    rev = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    try:
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), "status",
                                "--porcelain", "--untracked-files=no"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        dirty = b""
    v["t4_commit"] = rev + (" (with uncommitted changes)" if dirty else "")
    return v


# ----------------------------------------------------------------------------------------------
# Preparation: prerequisites and build
# ----------------------------------------------------------------------------------------------

def ensure_etcd(args: argparse.Namespace) -> None:
    missing = [b for b in (args.etcd_bin, args.etcdctl_bin) if shutil.which(b) is None]
    if not missing:
        return
    log(f"{', '.join(missing)} not found; running scripts/setup to install them")
    try:
        subprocess.run([str(REPO / "scripts" / "setup")], check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise HarnessError(f"{', '.join(missing)} missing and scripts/setup failed ({e}). "
                           f"Install etcd-server and etcd-client (Debian/Ubuntu: "
                           f"`sudo ./scripts/setup`) or pass --etcd-bin/--etcdctl-bin.")
    still = [b for b in missing if shutil.which(b) is None]
    if still:
        raise HarnessError(f"still missing after scripts/setup: {', '.join(still)}")


def cargo_target_dir() -> Path:
    """Where cargo puts its output: CARGO_TARGET_DIR, build.target-dir, or <repo>/target."""
    try:
        p = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                           check=True, timeout=120)
        return Path(json.loads(p.stdout)["target_directory"])
    except Exception:
        return Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")


def build_t4() -> Path:
    # Always --workspace: any other package selection changes the feature set of the shared
    # dependencies and rebuilds RocksDB's C++ (15 minutes on 2 cores).
    cmd = ["cargo", "build", "--release", "--workspace", "--bins"]
    log(f"building: {shlex.join(cmd)} (cargo may wait for the build directory lock)")
    try:
        subprocess.run(cmd, cwd=REPO, check=True)
    except FileNotFoundError:
        raise HarnessError("cargo not found: install a Rust toolchain, or pass --t4-bin")
    except subprocess.CalledProcessError as e:
        raise HarnessError(f"build failed: {shlex.join(cmd)} exited with {e.returncode}")
    path = cargo_target_dir() / "release" / "t4"
    if not path.exists():
        raise HarnessError(f"build succeeded but {path} does not exist")
    return path


def check_bench_subcommand(bench_bin: Path) -> None:
    try:
        p = subprocess.run([str(bench_bin), "bench", "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise HarnessError(f"cannot run {bench_bin}: {e}")
    if p.returncode != 0:
        raise HarnessError(f"`{bench_bin} bench --help` failed (exit {p.returncode}): does this "
                           f"t4 have the `bench` subcommand?\n"
                           f"{p.stdout.decode('utf-8', 'replace').strip()[-500:]}")


def prepare_binaries(args: argparse.Namespace) -> None:
    """etcd and etcdctl installed, args.t4_bin built (unless given) and resolved, args.bench_bin
    resolved (default: args.t4_bin) and able to bench; HarnessError otherwise."""
    ensure_etcd(args)
    if args.t4_bin is None:
        args.t4_bin = build_t4()
    args.t4_bin = Path(args.t4_bin).resolve()
    if not args.t4_bin.exists():
        raise HarnessError(f"--t4-bin {args.t4_bin} does not exist")
    args.bench_bin = Path(args.bench_bin).resolve() if args.bench_bin else args.t4_bin
    check_bench_subcommand(args.bench_bin)


# ----------------------------------------------------------------------------------------------
# Markdown report
# ----------------------------------------------------------------------------------------------

# Each script owns the text between its two marker lines of a report; rewriting a report
# replaces only that text, so the other script's section and any hand-written notes stay.
REPORT_SECTION_BEGIN = ("<!-- bench/compare.py: begin (--results-md replaces this section; "
                        "text outside it is kept) -->")
REPORT_SECTION_END = "<!-- bench/compare.py: end -->"
CLUSTER_SECTION_BEGIN = ("<!-- bench/compare_cluster.py: begin (--results-md replaces this "
                         "section) -->")
CLUSTER_SECTION_END = "<!-- bench/compare_cluster.py: end -->"


def write_section(md_path: Path, section: str, begin: str, end: str, at_top: bool) -> None:
    """Replaces the text between the lines `begin` and `end` of md_path with `section` (which
    includes both lines), leaving the rest of the file as it is; a file without them gets the
    section at its top (`at_top`) or bottom."""
    text = md_path.read_text() if md_path.exists() else ""
    b, e = text.find(begin), text.find(end)
    if b >= 0 and e > b:
        text = text[:b] + section + text[e + len(end):]
    elif not text:
        text = section + "\n"
    elif at_top:
        text = section + "\n\n" + text
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)


def write_report(md_path: Path, report: str) -> None:
    """Puts `report` (this script's section) into md_path, keeping the rest of the file."""
    section = f"{REPORT_SECTION_BEGIN}\n{report.strip()}\n{REPORT_SECTION_END}"
    write_section(md_path, section, REPORT_SECTION_BEGIN, REPORT_SECTION_END, at_top=True)


def machine_lines(meta: dict, disk_note: str) -> List[str]:
    """The Machine, Disk and Load average items of a report's setup list (both reports; the
    results file's meta record as load_results completes it); disk_note ends the Disk item."""
    m = meta["machine"]
    fp, fp_end = m["fsync_probe"], m.get("fsync_probe_at_end")
    end_probe = (f"; at the end p50 {fp_end['p50_us']:.0f} µs, p99 {fp_end['p99_us']:.0f} µs"
                 if fp_end else "")
    return [
        f"- **Machine:** {m['cpu']}, {m['cores']} cores, {m['memory']} RAM, "
        f"{m['os']}, kernel {m['hostname_kernel']}",
        f"- **Disk:** data dirs on {m['filesystem']}; 4 KiB append + `fdatasync`: "
        f"p50 {fp['p50_us']:.0f} µs, p99 {fp['p99_us']:.0f} µs ({fp['appends']} appends) "
        f"before the runs{end_probe}{disk_note}",
        f"- **Load average (1 min):** {m['loadavg_at_start']:.2f} when the run started"
        + (f", {m['loadavg_at_end']:.2f} at the end" if "loadavg_at_end" in m else ""),
    ]


def repo_relative(path: Path) -> str:
    """How a report names a file: relative to the repository when inside it, else as is."""
    return os.path.relpath(path, REPO) if str(path).startswith(str(REPO)) else str(path)


def markdown_report(meta: dict, summaries: List[dict], check_perf: List[dict],
                    out_path: Optional[Path], md_path: Path) -> str:
    readme = os.path.relpath(REPO / "bench" / "README.md", md_path.parent)
    v = meta["versions"]
    lines = [
        "# t4 vs etcd: side-by-side benchmark",
        "",
        f"Measured {meta['date']} by `bench/compare.py` (see [bench/README.md]({readme}) for "
        f"what each workload does and how to read the numbers).",
        "",
        "## Setup",
        "",
        *machine_lines(meta, " — the floor under every durable write of either server"),
        f"- **etcd:** {v['etcd']} (single member, default settings, `--log-level warn`); "
        f"etcdctl {v['etcdctl']}",
        f"- **t4:** {v['t4']}, commit {v['t4_commit']}, release build, "
        f"`t4 run --log-level warn` (local mode)",
        f"- **Client:** `t4 bench` (plain etcd gRPC) on the same machine, the same settings "
        f"for both servers: {meta['bench_settings']}",
        f"- **Method:** {meta['repeats']} pair(s) of runs per workload, alternating which "
        f"server goes first; every run on a freshly started server with an empty data dir, "
        f"only one server running at a time; the table shows medians over the repeats"
        + (f"; **pinned**: each server on core {SERVER_CORE} and `t4 bench` on core "
           f"{CLIENT_CORE} (`taskset`), so the ratios compare server CPU per operation"
           if meta.get("pinned") else ""),
        f"- **Command:** `{meta['command']}`",
        f"- **Total time:** {fmt_minutes(meta['elapsed_s'])}",
        "",
        "## Results",
        "",
        "t4 / etcd is the ratio of median throughputs: above 1 means t4 did more operations "
        "per second. p99 is the median over the repeats of each run's 99th-percentile latency. "
        "Spread is half the min–max range of the repeats' throughput, relative to the median.",
        "",
        results_table(summaries),
        "",
    ]
    if check_perf:
        lines += [
            "## `etcdctl check perf`",
            "",
            "etcd's own load check, once per load against a freshly started server of each "
            "kind: 60 s of puts (256-byte keys, 1 KiB values) offered at a fixed rate — "
            "8,000/s from 500 clients for `l`, 15,000/s from 1,000 clients for `xl` — then it "
            "deletes its keys. PASS needs no errors, more than 90 % of the offered rate, a "
            "slowest request of at most 0.5 s and a latency stddev of at most 0.1 s. A FAIL "
            "measures the machine as much as the server.",
            "",
            check_perf_table(check_perf),
            "",
        ]
    if meta.get("notes"):
        lines += ["## Notes", ""]
        for note in meta["notes"]:
            lines += [note, ""]
    if out_path is not None:
        lines += [f"Every raw run, the medians and the check-perf output: "
                  f"`{repo_relative(out_path)}`.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# A run's setup and results file (compare_cluster.py uses these too)
# ----------------------------------------------------------------------------------------------

def results_path(args: argparse.Namespace, date: datetime.datetime, prefix: str = "") -> Path:
    """--out, or bench/results/<prefix><date>.jsonl; absolute, its directory created."""
    out_path = Path(args.out) if args.out else \
        REPO / "bench" / "results" / f"{prefix}{date.strftime('%Y-%m-%d-%H%M%S')}.jsonl"
    out_path = out_path.resolve()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return out_path


def make_workdir(args: argparse.Namespace, prefix: str) -> Path:
    """A fresh temp dir for the servers' data, in --work-dir (created if need be) or the system
    temp dir. HarnessBase.tear_down removes it."""
    if args.work_dir:
        Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=args.work_dir))


def use_private_copies(args: argparse.Namespace, workdir: Path) -> dict:
    """Copies args.t4_bin and args.bench_bin to workdir/bin, points args at the copies, and
    returns the originals' paths ("t4", "bench"). Measure a private copy: a rebuild of the target
    dir during the run (another build sharing it) must not change the binary halfway through."""
    (workdir / "bin").mkdir()
    originals = {"t4": str(args.t4_bin), "bench": str(args.bench_bin)}
    t4_copy = workdir / "bin" / "t4"
    shutil.copy2(args.t4_bin, t4_copy)
    if args.bench_bin == args.t4_bin:
        args.bench_bin = t4_copy
    else:
        args.bench_bin = Path(shutil.copy2(args.bench_bin, workdir / "bin" / "t4-bench"))
    args.t4_bin = t4_copy
    return originals


def log_plan(originals: dict, workdir: Path, out_path: Path, plan: str) -> None:
    """Says what is measured, where, and the plan (what runs, how long it takes)."""
    log(f"t4: {originals['t4']}\nbench client: {originals['bench']} bench\n"
        f"work dir: {workdir}\nresults: {out_path}\n{plan}")


def bench_settings(argv: List[str]) -> str:
    """A `t4 bench` command line made for endpoint HOST:PORT, as the meta record shows it: from
    the subcommand's first flag on, the endpoint as "…"."""
    return shlex.join(argv[2:]).replace("http://HOST:PORT", "…")


def run_meta(args: argparse.Namespace, date: datetime.datetime, workdir: Path,
             originals: dict, settings: dict, header: Optional[dict] = None) -> dict:
    """The meta record that opens a results file: `header` (compare_cluster.py: its mode), the
    date and command, the machine (an fsync probe in workdir), the versions, `settings` (what is
    measured and how), the notes and the binaries measured (`originals`, not the copies).
    Logs the machine, with a warning when it is busy."""
    meta = {
        "type": "meta",
        **(header or {}),
        "date": date.astimezone().isoformat(timespec="seconds"),
        "command": shlex.join([os.path.relpath(sys.argv[0], os.getcwd())] + sys.argv[1:]),
        "machine": machine_info(workdir),
        "versions": versions(args),
        **settings,
        "notes": args.note,
        "t4_bin": originals["t4"],
        "bench_bin": originals["bench"],
    }
    fp = meta["machine"]["fsync_probe"]
    log(f"machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, "
        f"{meta['machine']['memory']}; fdatasync p50 {fp['p50_us']:.0f} µs; "
        f"etcd {meta['versions']['etcd']}; load average "
        f"{meta['machine']['loadavg_at_start']:.2f}")
    if meta["machine"]["loadavg_at_start"] > 0.5 * (os.cpu_count() or 1):
        log("warning: the machine is busy (load average above half the cores); "
            "expect noisy numbers")
    return meta


class ResultsFile:
    """The JSON-lines results file of one run: the meta record first, then every record as it is
    made, each flushed (a run that dies halfway leaves what it measured), the end record last.
    `records` holds what was written, in order."""

    def __init__(self, path: Path, meta: dict):
        self.records: List[dict] = []
        self._out = open(path, "w")
        self.emit(meta)

    def emit(self, rec: dict) -> None:
        self.records.append(rec)
        self._out.write(json.dumps(rec) + "\n")
        self._out.flush()

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *_exc) -> None:
        self._out.close()


def end_record(meta: dict, workdir: Path, t_start: float, failures: int) -> dict:
    """Completes `meta` with the elapsed time and the machine at the end (an fsync probe in
    workdir, the load average), and returns the end record that says the same (a meta record
    is written before any of this is known; load_results joins the two again)."""
    meta["elapsed_s"] = round(time.monotonic() - t_start, 1)
    meta["machine"]["fsync_probe_at_end"] = fsync_probe(workdir)
    meta["machine"]["loadavg_at_end"] = os.getloadavg()[0]
    return {"type": "end", "elapsed_s": meta["elapsed_s"], "failed_runs": failures,
            "fsync_probe_at_end": meta["machine"]["fsync_probe_at_end"],
            "loadavg_at_end": meta["machine"]["loadavg_at_end"]}


def exit_status(failures: int, out_path: Path) -> int:
    """A run's exit status: 1 when some run failed (said in the log), else 0."""
    if failures:
        log(f"{failures} run(s) failed; see the notes column and {out_path}")
    return 1 if failures else 0


def load_results(args: argparse.Namespace,
                 mode: Optional[str] = None) -> Tuple[Path, List[dict], dict]:
    """For --report-from: the results file's path, its records, and its meta record completed
    from the end record as end_record left it, with this invocation's --note paragraphs added.
    `mode`: the meta record must have this "mode" (None: any meta record will do)."""
    path = Path(args.report_from).resolve()
    try:
        recs = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    except (OSError, ValueError) as e:
        raise HarnessError(f"cannot read {path}: {e}")
    metas = [r for r in recs
             if r.get("type") == "meta" and (mode is None or r.get("mode") == mode)]
    ends = [r for r in recs if r.get("type") == "end"]
    if not metas or not ends:
        raise HarnessError(f"{path} is not a complete results file (no meta or end record)"
                           if mode is None else f"{path} is not a complete {mode} results file")
    meta, end = metas[0], ends[-1]
    meta["elapsed_s"] = end["elapsed_s"]
    for key in ("fsync_probe_at_end", "loadavg_at_end"):
        if key in end:
            meta["machine"][key] = end[key]
    meta["notes"] = list(meta.get("notes") or []) + args.note
    return path, recs, meta


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def estimate_s(args: argparse.Namespace) -> float:
    runs = len(args.workloads) * args.repeats * 2
    s = runs * (args.duration + RUN_OVERHEAD_S)
    if not args.skip_check_perf:
        s += len(CHECK_PERF_LOADS) * 2 * (CHECK_PERF_SECONDS + 8)
    return s


def run_comparison(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    if args.pin and ((os.cpu_count() or 1) <= max(SERVER_CORE, CLIENT_CORE)
                     or shutil.which("taskset") is None):
        raise HarnessError(f"--pin needs cores {SERVER_CORE} and {CLIENT_CORE} and `taskset` "
                           f"(util-linux)")
    prepare_binaries(args)
    date = datetime.datetime.now()
    out_path = results_path(args, date)
    workdir = make_workdir(args, "t4-bench-")
    h = Harness(args, workdir)
    failures = 0
    try:
        originals = use_private_copies(args, workdir)
        log_plan(originals, workdir, out_path,
                 f"{len(args.workloads)} workload(s) × {args.repeats} pair(s) × "
                 f"{fmt_duration_arg(args.duration)}"
                 + ("" if args.skip_check_perf else
                    f", then etcdctl check perf --load={'/'.join(CHECK_PERF_LOADS)} on each "
                    f"server ({CHECK_PERF_SECONDS} s each)")
                 + f": about {fmt_minutes(estimate_s(args))}")
        meta = run_meta(args, date, workdir, originals, {
            "repeats": args.repeats,
            "duration_s": args.duration,
            "workloads": args.workloads,
            "bench_settings": bench_settings(bench_argv(args, "HOST:PORT", "W")),
            "fresh_server": "per run",
            "pinned": args.pin,
        })
        summaries: List[dict] = []
        with ResultsFile(out_path, meta) as out:
            for workload in args.workloads:
                runs = []
                for r in range(args.repeats):
                    order = ["t4", "etcd"] if r % 2 == 0 else ["etcd", "t4"]
                    for pos, kind in enumerate(order):
                        rec = run_bench(h, kind, workload, r, pos)
                        out.emit(rec)
                        runs.append(rec)
                        if "error" in rec:
                            failures += 1
                            log(f"  {workload:13s} {kind:4s} #{r + 1}: FAILED: {rec['error']}")
                        else:
                            log(f"  {workload:13s} {kind:4s} #{r + 1}: "
                                f"{result_line(rec['result'])}")
                s = summarise(workload, runs)
                out.emit(s)
                summaries.append(s)
            check_perf: List[dict] = []
            if not args.skip_check_perf:
                for i, load in enumerate(CHECK_PERF_LOADS):
                    for kind in (["t4", "etcd"] if i % 2 == 0 else ["etcd", "t4"]):
                        log(f"  check perf --load={load} against {kind} "
                            f"({CHECK_PERF_SECONDS} s)…")
                        rec = run_check_perf(h, kind, load)
                        out.emit(rec)
                        check_perf.append(rec)
                        if rec.get("verdict") == "ERROR":
                            failures += 1
                        log(f"    {rec.get('verdict')}: "
                            f"{' · '.join(verdict_lines(rec)) or rec.get('error', '')}")
            out.emit(end_record(meta, workdir, t_start, failures))

        print("\n" + results_table(summaries))
        if check_perf:
            print("\n" + check_perf_table(check_perf))
        print(f"\nraw results: {out_path}")
        if args.results_md:
            md_path = Path(args.results_md).resolve()
            md_path.parent.mkdir(parents=True, exist_ok=True)
            write_report(md_path, markdown_report(meta, summaries, check_perf, out_path,
                                                  md_path))
            print(f"report: {md_path}")
        return exit_status(failures, out_path)
    finally:
        h.tear_down()


def report_from(args: argparse.Namespace) -> int:
    """Re-renders the Markdown report (and the tables) from a results file of an earlier run,
    with the --note paragraphs of this invocation added."""
    path, recs, meta = load_results(args)
    summaries = [r for r in recs if r.get("type") == "median"]
    check_perf = [r for r in recs if r.get("type") == "check_perf"]
    print(results_table(summaries))
    if check_perf:
        print("\n" + check_perf_table(check_perf))
    if args.results_md:
        md_path = Path(args.results_md).resolve()
        md_path.parent.mkdir(parents=True, exist_ok=True)
        write_report(md_path, markdown_report(meta, summaries, check_perf, path, md_path))
        print(f"report: {md_path}")
    return 0


def self_test(args: argparse.Namespace) -> int:
    """One short seq-put pair through the whole pipeline; checks the outputs and that nothing
    was left behind. Needs the release build (it builds it unless --t4-bin is given)."""
    with tempfile.TemporaryDirectory(prefix="t4-bench-selftest-") as tmp:
        tmp = Path(tmp)
        args.workloads = ["seq-put"]
        args.duration = 1.0
        args.repeats = 1
        args.skip_check_perf = True
        args.out = str(tmp / "out.jsonl")
        args.results_md = str(tmp / "RESULTS.md")
        args.work_dir = str(tmp / "work")
        # A report that already has text of its own and a cluster section: both must stay.
        kept = ["hand-written notes", CLUSTER_SECTION_BEGIN + "\ncluster\n" + CLUSTER_SECTION_END]
        Path(args.results_md).write_text("\n\n".join(kept) + "\n")
        rc = run_comparison(args)
        problems = []
        recs = [json.loads(l) for l in Path(args.out).read_text().splitlines()]
        runs = [r for r in recs if r["type"] == "run"]
        if rc != 0:
            problems.append(f"exit status {rc}")
        if sorted(r["server"] for r in runs) != ["etcd", "t4"]:
            problems.append(f"expected one t4 run and one etcd run, got {runs}")
        for r in runs:
            res = r.get("result", {})
            if "error" in r or not res.get("ops", 0) > 0:
                problems.append(f"{r['server']}: no successful operations: {r}")
            missing = {"workload", "ops", "errors", "ops_per_sec", "p50_us", "p99_us"} - set(res)
            if res and missing:
                problems.append(f"{r['server']}: bench output lacks {sorted(missing)}")
        if not any(r["type"] == "median" and r.get("ratio") for r in recs):
            problems.append("no median record with a ratio")
        md = Path(args.results_md).read_text()
        if "| seq-put |" not in md:
            problems.append("the Markdown report has no seq-put row")
        if not md.startswith(REPORT_SECTION_BEGIN) or any(k not in md for k in kept):
            problems.append(f"rewriting the Markdown report lost what was in it: {md!r}")
        leftovers = list(Path(args.work_dir).iterdir())
        if leftovers:
            problems.append(f"work dir not cleaned up: {leftovers}")
        if problems:
            log("self-test FAILED:\n  " + "\n  ".join(problems))
            return 1
        log("self-test passed")
        return 0


# ----------------------------------------------------------------------------------------------
# Command line (bench/compare_cluster.py shares these)
# ----------------------------------------------------------------------------------------------

def add_client_args(ap: argparse.ArgumentParser) -> None:
    """The `t4 bench` settings passed to every run alike (client_flags)."""
    ap.add_argument("--clients", type=int, help="t4 bench --clients (default: its per-workload "
                                                "default)")
    ap.add_argument("--key-size", type=int, help="t4 bench --key-size (default: its default)")
    ap.add_argument("--val-size", type=int, help="t4 bench --val-size (default: its default)")
    ap.add_argument("--bench-arg", action="append", default=[], metavar="ARGS",
                    help="extra arguments for every `t4 bench` run (repeatable)")


def add_binary_args(ap: argparse.ArgumentParser) -> None:
    """The binaries: the t4 server, the `t4 bench` client, etcd and etcdctl."""
    ap.add_argument("--t4-bin", help="the t4 binary to serve with (default: build the release "
                                     "binary with cargo)")
    ap.add_argument("--bench-bin", help="the t4 binary whose `bench` subcommand is the client "
                                        "(default: --t4-bin)")
    ap.add_argument("--etcd-bin", default="etcd")
    ap.add_argument("--etcdctl-bin", default="etcdctl")


def add_logs_and_no_run_args(ap: argparse.ArgumentParser) -> None:
    """--keep-logs, and the two ways to run nothing: --report-from and --estimate."""
    ap.add_argument("--keep-logs", metavar="DIR", help="copy server and bench logs to DIR")
    ap.add_argument("--report-from", metavar="FILE.jsonl",
                    help="run nothing: re-render the tables (and --results-md) from the results "
                         "file of an earlier run, adding any --note")
    ap.add_argument("--estimate", action="store_true",
                    help="print how long the run would take and exit")


def parse_workloads(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--workloads a,b -> args.workloads, a list of known workloads (else a usage error)."""
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")


def run_guarded(run: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                servers: str) -> int:
    """run(args) with SIGTERM and SIGHUP (as Ctrl-C already does) unwinding through its finally
    blocks, which stop the `servers` ("servers", "clusters") and remove the temp dirs. Returns
    run's exit status, 2 when it raised HarnessError, 130 when interrupted."""
    def on_signal(signum, _frame):
        log(f"{signal.Signals(signum).name}: stopping the {servers}, removing temp dirs")
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        return run(args)
    except HarnessError as e:
        log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log(f"interrupted; {servers} stopped, temp dirs removed")
        return 130


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark t4 against a real etcd, side by side (see bench/README.md).")
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated (default: all: {','.join(WORKLOADS)})")
    ap.add_argument("--repeats", type=int, default=3,
                    help="pairs of runs per workload, alternating order (default 3)")
    ap.add_argument("--duration", type=parse_duration, default=parse_duration("8s"),
                    help="length of each run, e.g. 10s (default 8s)")
    add_client_args(ap)
    ap.add_argument("--pin", action="store_true",
                    help=f"run each server on core {SERVER_CORE} and t4 bench on core "
                         f"{CLIENT_CORE} (taskset), so the load generator takes no CPU from "
                         f"the server (etcdctl check perf stays unpinned)")
    ap.add_argument("--skip-check-perf", action="store_true",
                    help="do not run etcdctl check perf (saves about 4.5 minutes)")
    add_binary_args(ap)
    ap.add_argument("--out", help="JSON-lines file for every raw run, the medians and the check "
                                  "perf results (default bench/results/<date>.jsonl)")
    ap.add_argument("--results-md", help="also (re)write this Markdown report, e.g. "
                                         "bench/RESULTS.md")
    ap.add_argument("--work-dir", help="where the servers' temporary data dirs go (default: the "
                                       "system temp dir); its file system is what fsync costs")
    ap.add_argument("--note", action="append", default=[], metavar="TEXT",
                    help="a paragraph for the report's Notes section (repeatable)")
    add_logs_and_no_run_args(ap)
    ap.add_argument("--self-test", action="store_true",
                    help="a 1 s seq-put pair through the whole pipeline, with checks")
    args = ap.parse_args()
    parse_workloads(ap, args)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.estimate:
        print(f"about {fmt_minutes(estimate_s(args))}")
        return 0
    run = report_from if args.report_from else self_test if args.self_test else run_comparison
    return run_guarded(run, args, "servers")


if __name__ == "__main__":
    sys.exit(main())

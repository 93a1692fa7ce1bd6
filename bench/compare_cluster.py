#!/usr/bin/env python3
"""Side-by-side benchmark of a 3-node t4 cluster against a 3-node etcd cluster on loopback.

Usage:
    bench/compare_cluster.py [--workloads a,b] [--variants all,leader] [--repeats 3]
                             [--duration 2s | --total N] [--out FILE.jsonl]
                             [--results-md bench/RESULTS.md] [--t4-bin PATH] ...
    bench/compare_cluster.py --quick         # a smoke run: every workload once, 200 ops each

What it does (bench/README.md, "Clusters", has the long version):
  1. Checks that etcd and etcdctl are installed (runs scripts/setup if not) and builds t4 with
     `cargo build --release --workspace --bins` (unless --t4-bin is given).
  2. R rounds (--repeats). A round starts a fresh 3-node cluster of one kind on loopback
     (t4: n1 bootstraps on a directory store shared as the bucket, n2 and n3 join one at a
     time; etcd: a static 3-member cluster), runs every workload in every endpoint variant
     against it with `t4 bench --output jsonl`, then stops it and deletes its data; then the
     same with the other kind. The kind that goes first alternates from round to round. Only
     one cluster runs at a time. After every run the cluster is compacted to its current
     revision, so no run pays for the history the runs before it wrote.
  3. Endpoint variants: `all` gives `t4 bench` the three members' endpoints, followers first
     (worker i talks to endpoint i mod 3, so a single-client workload talks to a follower and
     16 clients split 6 / 5 / 5 with the leader last): follower forwarding for t4, follower
     proxying for etcd. `leader` gives it only the leader's endpoint.
  4. Prints a Markdown table (medians over the rounds), writes every raw run, every cluster's
     formation, leader and log warnings and the medians to a JSON-lines file (--out), and with
     --results-md replaces the cluster section of that Markdown file (between its markers).

Only processes this script started are ever signalled (SIGTERM, then SIGKILL after a timeout;
members one at a time, which lets etcd stop in well under a second), children die with it
(PR_SET_PDEATHSIG), and its temp dirs are always removed; at the end it checks that every
server process it started has exited. Exit status as bench/compare.py: 0 when everything ran,
1 when some run failed (the others are still reported), 2 when the harness could not start.
"""

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (bench/compare.py: servers, the run's files, the command line, report)
from compare import (WORKLOADS, HarnessError, Server, log,  # noqa: E402
                     parse_duration, fmt_duration_arg, fmt_minutes, now_iso)
from procs import die_with_parent, etcdctl_env, free_ports, log_tail  # noqa: E402

MEMBERS = 3
VARIANTS = ["all", "leader"]
VARIANT_LABEL = {"all": "all 3", "leader": "leader"}
FORM_TIMEOUT_S = 60.0        # a cluster agrees on a leader and its members within this
CTL_TIMEOUT_S = 20.0         # one etcdctl endpoint status or member list
# For the time estimate only:
RUN_OVERHEAD_S = 1.2         # connect, the 0.5 s warm-up, endpoint status, compaction
POPULATE_S = 2.5             # a read workload writing its 10,000 keys through a cluster
CLUSTER_OVERHEAD_S = 4.0     # forming and stopping one cluster
NEEDS_KEYS = {"seq-get", "par-get", "mixed", "range-100", "txn-cas"}  # t4 bench populates
CLUSTERS_PER_ROUND_MAX = 4   # a kind whose clusters keep breaking gives up for the round
QUICK_TOTAL = 200
QUICK_KEYS = 1000
SECTION_BEGIN = compare.CLUSTER_SECTION_BEGIN   # our section of a report (compare.py keeps it)
SECTION_END = compare.CLUSTER_SECTION_END


# ----------------------------------------------------------------------------------------------
# etcdctl against a cluster (it speaks to t4 and etcd alike)
# ----------------------------------------------------------------------------------------------

def etcdctl_json(etcdctl: str, endpoints: List[str], *cmd: str) -> object:
    """`etcdctl --endpoints … CMD -w json`, parsed; HarnessError when it fails."""
    argv = [etcdctl, "--endpoints", ",".join(endpoints), "--dial-timeout=2s",
            "--command-timeout=10s", *cmd, "-w", "json"]
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=etcdctl_env(), timeout=CTL_TIMEOUT_S,
                           preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired:
        raise HarnessError(f"{shlex.join(argv)}: no answer within {CTL_TIMEOUT_S:.0f}s")
    if p.returncode != 0:
        raise HarnessError(f"{shlex.join(argv)} exited {p.returncode}: "
                           f"{p.stderr.decode('utf-8', 'replace').strip()[-300:]}")
    try:
        return json.loads(p.stdout)
    except ValueError as e:
        raise HarnessError(f"{shlex.join(argv)}: not JSON ({e}): {p.stdout[:200]!r}")


# ----------------------------------------------------------------------------------------------
# Clusters
# ----------------------------------------------------------------------------------------------

class Status(NamedTuple):
    """What the members of a cluster agree on."""
    leader: str     # the leader's name
    term: int       # etcd's raft term; t4's leader-lock term
    revision: int   # the newest store revision any member reports


class Cluster:
    """Three server processes of one kind this script started on loopback, each with its own
    fresh data dir (and for t4 one shared directory store as the bucket)."""

    def __init__(self, kind: str, data_dir: Path, logdir: Path, label: str,
                 args: argparse.Namespace):
        self.kind = kind
        self.data_dir = data_dir      # everything of this cluster on disk
        self.logdir = logdir
        self.label = label
        self.args = args
        self.names = [f"{'n' if kind == 't4' else 'e'}{i + 1}" for i in range(MEMBERS)]
        self.members: Dict[str, Server] = {}
        self.formed_s: Optional[float] = None
        self.log_marks: Dict[str, int] = {}   # member -> log size once formed
        self.ids: Dict[int, str] = {}         # etcd member id -> name, once all three are in

    # -- starting ------------------------------------------------------------------------------

    def _server(self, name: str, argv: List[str], endpoint: str) -> Server:
        server = Server(f"{self.kind} {name}", argv, endpoint, self.data_dir / name,
                        self.logdir / f"{self.label}-{name}.log")
        self.members[name] = server
        return server

    def start(self) -> None:
        """Starts the members and waits until they agree on a leader and on all three members;
        HarnessError if they do not within FORM_TIMEOUT_S."""
        self.data_dir.mkdir(parents=True)
        t0 = time.monotonic()
        if self.kind == "t4":
            self._start_t4()
        else:
            self._start_etcd()
        self.leader(wait_s=FORM_TIMEOUT_S)
        self.formed_s = round(time.monotonic() - t0, 2)
        for name, s in self.members.items():
            self.log_marks[name] = s.log_path.stat().st_size if s.log_path.exists() else 0

    def _start_t4(self) -> None:
        # The first member finds no lock in the bucket and bootstraps; each later one joins
        # through the leader (one conditional lock write). One at a time, as an operator would:
        # a join is complete when the first member's MemberList shows it.
        bucket = self.data_dir / "bucket"
        bucket.mkdir()
        for i, name in enumerate(self.names):
            client_port, peer_port = free_ports(2)
            endpoint = f"127.0.0.1:{client_port}"
            argv = [str(self.args.t4_bin), "run", "--node-id", name,
                    "--data-dir", str(self.data_dir / name), "--listen", endpoint,
                    "--peer-listen", f"127.0.0.1:{peer_port}", "--object-store-dir", str(bucket),
                    "--log-level", "warn"]
            server = self._server(name, argv, endpoint)
            server.start()
            server.wait_ready(self.args.etcdctl_bin)
            self._wait_members(i + 1)

    def _start_etcd(self) -> None:
        # A static cluster: every member knows the others from --initial-cluster; they must
        # start together (each waits for a majority to elect a leader).
        ports = {name: free_ports(2) for name in self.names}
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in self.names)
        token = f"bench-{os.getpid()}-{self.label}"
        for name in self.names:
            client = f"http://127.0.0.1:{ports[name][0]}"
            peer = f"http://127.0.0.1:{ports[name][1]}"
            argv = [self.args.etcd_bin, "--name", name, "--data-dir", str(self.data_dir / name),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", initial, "--initial-cluster-state", "new",
                    "--initial-cluster-token", token, "--log-level", "warn"]
            self._server(name, argv, f"127.0.0.1:{ports[name][0]}").start()
        for server in self.members.values():
            server.wait_ready(self.args.etcdctl_bin)

    def _wait_members(self, n: int) -> None:
        first = self.members[self.names[0]]
        deadline = time.monotonic() + FORM_TIMEOUT_S
        names: List[str] = []
        while time.monotonic() < deadline:
            self.check_alive("while forming")
            try:
                listed = etcdctl_json(self.args.etcdctl_bin, [first.endpoint], "member", "list")
                names = sorted(m.get("name", "") for m in listed.get("members", []))
                if names == self.names[:n]:
                    return
            except HarnessError:
                pass
            time.sleep(0.1)
        raise HarnessError(self.failure(f"members {names} after {FORM_TIMEOUT_S:.0f}s, "
                                        f"want {self.names[:n]}"))

    # -- state ---------------------------------------------------------------------------------

    def endpoints(self) -> List[str]:
        return [self.members[n].endpoint for n in self.names]

    def check_alive(self, when: str) -> None:
        dead = [f"{s.kind} {s.exit_description()}" for s in self.members.values() if not s.alive()]
        if dead:
            raise HarnessError(self.failure(f"{'; '.join(dead)} {when}".strip()))

    def status(self) -> "Status":
        """The leader, term and revision as every member reports them (one `etcdctl endpoint
        status`); HarnessError unless all three answer and agree on one leader and term, and
        (while forming) MemberList shows all three members."""
        self.check_alive("")
        if len(self.ids) != MEMBERS:
            listed = etcdctl_json(self.args.etcdctl_bin, self.endpoints()[:1], "member", "list")
            ids = {int(m["ID"]): m.get("name", "") for m in listed.get("members", [])}
            if sorted(ids.values()) != self.names:
                raise HarnessError(f"members {sorted(ids.values())}, want {self.names}")
            self.ids = ids  # member ids are fixed from here on (derived from names in t4)
        statuses = etcdctl_json(self.args.etcdctl_bin, self.endpoints(), "endpoint", "status")
        if not isinstance(statuses, list) or len(statuses) != MEMBERS:
            raise HarnessError(f"endpoint status: {statuses!r}")
        leaders = {int(s["Status"].get("leader", 0)) for s in statuses}
        terms = {int(s["Status"].get("raftTerm", 0)) for s in statuses}
        if len(leaders) != 1 or len(terms) != 1 or next(iter(leaders)) not in self.ids:
            raise HarnessError(f"members disagree or have no leader: leaders {sorted(leaders)}, "
                               f"terms {sorted(terms)}, members {self.ids}")
        revision = max(int(s["Status"]["header"].get("revision", 0)) for s in statuses)
        return Status(self.ids[next(iter(leaders))], next(iter(terms)), revision)

    def leader(self, wait_s: float) -> "Status":
        """status(), retried for up to wait_s (a cluster that is forming, or electing)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.status()
            except HarnessError as e:
                if any(not s.alive() for s in self.members.values()):
                    raise  # check_alive's message: who died, and the logs
                if time.monotonic() >= deadline:
                    raise HarnessError(self.failure(f"no agreed leader: {e}"))
            time.sleep(0.1)

    def bench_endpoints(self, variant: str, leader: str) -> List[str]:
        """`all`: every member, followers first (so the leader gets the fewest workers and a
        single worker talks to a follower); `leader`: the leader alone."""
        if variant == "leader":
            return [self.members[leader].endpoint]
        return [self.members[n].endpoint for n in self.names if n != leader] + \
            [self.members[leader].endpoint]

    def compact(self, revision: int) -> Optional[str]:
        """Compacts to `revision` and waits until that is applied (--physical); the error text
        if that failed (not fatal: the next run just sees more history)."""
        argv = [self.args.etcdctl_bin, "--endpoints", self.endpoints()[0],
                "--command-timeout=60s", "compaction", "--physical", str(revision)]
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env=etcdctl_env(), timeout=90,
                               preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            return f"compaction {revision}: no answer within 90s"
        out = p.stdout.decode("utf-8", "replace").strip()
        # compacting twice to the same revision (nothing written since) is not a failure
        if p.returncode != 0 and "compacted" not in out:
            return f"compaction {revision}: {out[-200:]}"
        return None

    def log_problems(self, samples_max: int = 5) -> Tuple[Dict[str, int], Dict[str, List[str]]]:
        """What each member logged since the cluster formed (the runs, not the start): the
        number of lines, and the first `samples_max` of them. Both servers log at warn level,
        so every line is a warning or an error, except the INFO lines of etcd's raft library
        (elections), which are counted too: a leader change under load is worth seeing."""
        counts, samples = {}, {}
        for name, s in self.members.items():
            try:
                with open(s.log_path, "rb") as f:
                    f.seek(self.log_marks.get(name, 0))
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            lines = [l.strip() for l in text.splitlines() if l.strip()]
            counts[name] = len(lines)
            samples[name] = [l[:300] for l in lines[:samples_max]]
        return counts, samples

    def failure(self, what: str) -> str:
        tails = "\n".join(f"  {s.kind} log ({s.log_path}):\n{log_tail(s.log_path, 15)}"
                          for s in self.members.values())
        return f"{self.kind} cluster {self.label}: {what}\n{tails}"

    # -- stopping ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stops the members one at a time, followers first. (SIGTERM to all three at once
        makes etcd's leader try to hand over leadership to members already gone, and wait
        several seconds for it.)"""
        order = list(self.names)
        try:
            leader = self.status().leader
            order.remove(leader)
            order.append(leader)
        except (HarnessError, ValueError):
            pass
        for name in order:
            if name in self.members:
                self.members[name].stop()

    def describe(self) -> str:
        return f"the {self.kind} cluster {self.label}"

    def processes(self) -> List[subprocess.Popen]:
        return [s.proc for s in self.members.values() if s.proc is not None]


class Harness(compare.HarnessBase):
    """Starts fresh clusters under one temp dir; remembers every cluster it started."""

    def new_cluster(self, kind: str) -> Cluster:
        label = f"{len(self.started) + 1:02d}-{kind}"
        c = Cluster(kind, self.workdir / f"data-{label}", self.logdir, label, self.args)
        self.started.append(c)
        try:
            c.start()
        except BaseException:
            self.finish(c)
            raise
        return c

    def leftovers(self) -> List[str]:
        """Server processes this harness started that have not exited."""
        return [f"{shlex.join(p.args[:2])} (pid {p.pid})" for c in self.started
                for p in c.processes() if p.poll() is None]


# ----------------------------------------------------------------------------------------------
# One benchmark run
# ----------------------------------------------------------------------------------------------

def bench_argv(args: argparse.Namespace, endpoints: List[str], workload: str) -> List[str]:
    argv = [str(args.bench_bin), "bench", "--endpoints",
            ",".join(f"http://{e}" for e in endpoints), "--workload", workload,
            "--output", "jsonl"]
    if args.total is not None:
        argv += ["--total", str(args.total)]
    else:
        argv += ["--duration", fmt_duration_arg(args.duration)]
    if args.warmup is not None:
        argv += ["--warmup", args.warmup]
    return argv + compare.client_flags(args, workload)


def run_bench(h: Harness, cluster: Cluster, before: Status, workload: str, variant: str,
              repeat: int, position: int) -> Tuple[dict, Optional[Status]]:
    """One `t4 bench` run against a running cluster whose state is `before`; then the state
    after it and a compaction to its revision. Never raises: the record says what went wrong
    ("error"); the state after is None when the cluster cannot serve another run (a member
    died, or the members agree on no leader within 10 s)."""
    args = h.args
    rec = {"type": "run", "workload": workload, "variant": variant, "server": cluster.kind,
           "repeat": repeat, "position": position, "cluster": cluster.label,
           "started_at": now_iso(), "leader_before": before.leader,
           "term_before": before.term}
    endpoints = cluster.bench_endpoints(variant, before.leader)
    argv = bench_argv(args, endpoints, workload)
    rec["bench_cmd"] = shlex.join(argv)
    bench_log = h.logdir / f"{cluster.label}-{workload}-{variant}.bench-stderr.log"
    timeout_s = (args.duration * 3 if args.total is None else 60) + 180
    compare.run_client(argv, bench_log, timeout_s, rec)
    # After the run (also one killed for taking too long): did the leader change under load,
    # did a member die?
    try:
        after = cluster.leader(wait_s=10)
    except HarnessError as e:
        rec["error"] = (rec.get("error", "") + f"\nafter the run: {e}").strip()
        rec["cluster_broken"] = True
        if "result" in rec:  # measured on a cluster that broke: kept, but not in the medians
            rec["partial_result"] = rec.pop("result")
        return rec, None
    rec["leader_after"], rec["term_after"] = after.leader, after.term
    rec["revision_after"] = after.revision
    if (after.leader, after.term) != (before.leader, before.term):
        rec["leader_changed"] = True
    problem = cluster.compact(after.revision)
    if problem:
        rec["compaction_error"] = problem
    return rec, after


def summarise(workload: str, variant: str, runs: List[dict]) -> dict:
    s = compare.summarise(workload, runs)
    s["variant"] = variant
    changes = {k: sum(1 for r in runs if r["server"] == k and r.get("leader_changed"))
               for k in ("t4", "etcd")}
    s["leader_changes"] = changes
    s["extra_notes"] = [f"{k}: leader changed in {n} run(s)" for k, n in changes.items() if n]
    return s


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def results_table(summaries: List[dict]) -> str:
    rows = [f"| workload | endpoints | {compare.RESULT_COLUMNS} |",
            f"|---|---|{compare.RESULT_ALIGN}|"]
    rows += [f"| {s['workload']} | {VARIANT_LABEL.get(s['variant'], s['variant'])} "
             f"| {compare.result_cells(s)} |" for s in summaries]
    return "\n".join(rows)


def clusters_table(recs: List[dict]) -> str:
    rows = ["| cluster | formed in | leader (term) at the start | log lines during the runs |",
            "|---|---:|---|---|"]
    for r in recs:
        logs = ", ".join(f"{n} {c}" for n, c in sorted(r.get("log_lines", {}).items()))
        formed = f"{r['formed_s']:.1f} s" if r.get("formed_s") is not None else "—"
        leader = f"{r['leader']} ({r['term']})" if r.get("leader") else r.get("error", "—")
        rows.append(f"| {r['label']} | {formed} | {leader} | {logs or '—'} |")
    return "\n".join(rows)


def markdown_section(meta: dict, summaries: List[dict], clusters: List[dict],
                     out_path: Optional[Path]) -> str:
    v = meta["versions"]
    lines = [
        SECTION_BEGIN,
        "## 3-node clusters: t4 vs etcd",
        "",
        f"Measured {meta['date']} by `bench/compare_cluster.py` (see bench/README.md, "
        f"\"Clusters\").",
        "",
        *compare.machine_lines(meta, "; all six data dirs share this disk"),
        f"- **etcd:** {v['etcd']}, a static 3-member cluster on loopback, default settings, "
        f"`--log-level warn`; etcdctl {v['etcdctl']}",
        f"- **t4:** {v['t4']}, commit {v['t4_commit']}, release build, 3 members "
        f"(`t4 run --node-id nX --peer-listen … --object-store-dir <shared dir> --log-level "
        f"warn`: defaults `--follower-wait-mode quorum`, `--election-timeout-ms 1000`), n1 "
        f"bootstrapping, n2 and n3 joining one at a time",
        f"- **Client:** `t4 bench` on the same machine, the same settings for both: "
        f"{meta['bench_settings']}; endpoints *all 3* = the three members, followers first "
        f"(worker i uses endpoint i mod 3: one worker talks to a follower, 16 split 6 / 5 / 5 "
        f"with the leader last), *leader* = the leader's endpoint only",
        f"- **Method:** {meta['repeats']} round(s); a round runs every workload and variant "
        f"against a fresh t4 cluster and against a fresh etcd cluster, the kind going first "
        f"alternating between rounds; one cluster runs at a time; both are compacted to their "
        f"current revision after every run; the table shows medians over the rounds",
        f"- **Command:** `{meta['command']}`",
        f"- **Total time:** {fmt_minutes(meta['elapsed_s'])}",
        "",
        results_table(summaries),
        "",
        "Clusters (formation time is from the first start to an agreed leader with all three "
        "members):",
        "",
        clusters_table(clusters),
        "",
    ]
    for note in meta.get("notes") or []:
        lines += [note, ""]
    if out_path is not None:
        lines += [f"Every raw run, cluster and median: `{compare.repo_relative(out_path)}`.", ""]
    lines.append(SECTION_END)
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def estimate_s(args: argparse.Namespace) -> float:
    measured = args.duration if args.total is None else 0.5
    populate = POPULATE_S if args.total is None else POPULATE_S / 5
    per_round_and_kind = sum(len(args.variants) * (measured + RUN_OVERHEAD_S
                                                   + (populate if w in NEEDS_KEYS else 0))
                             for w in args.workloads) + CLUSTER_OVERHEAD_S
    return args.repeats * 2 * per_round_and_kind


def run_round(h: Harness, kind: str, r: int, position: int, emit, runs: Dict) -> int:
    """Every workload and variant against one fresh cluster of `kind`; when a run leaves the
    cluster broken, a fresh one serves the runs still to do. Returns the failed runs."""
    args = h.args
    failures = 0
    todo = [(w, v) for w in args.workloads for v in args.variants]

    def record(rec: dict) -> None:
        emit(rec)
        runs.setdefault((rec["workload"], rec["variant"]), []).append(rec)

    for attempt in range(CLUSTERS_PER_ROUND_MAX + 1):
        if not todo:
            break
        crec = {"type": "cluster", "server": kind, "repeat": r, "started_at": now_iso()}
        try:
            if attempt == CLUSTERS_PER_ROUND_MAX:
                raise HarnessError(f"{CLUSTERS_PER_ROUND_MAX} clusters broke in this round")
            cluster = h.new_cluster(kind)
        except HarnessError as e:
            # No cluster of this kind forms (or they keep breaking): every run left fails.
            label = h.started[-1].label if attempt < CLUSTERS_PER_ROUND_MAX else None
            crec.update(label=label, error=str(e), stopped_at=now_iso())
            emit(crec)
            log(f"  {kind} cluster FAILED: {e}")
            for workload, variant in todo:
                record({"type": "run", "workload": workload, "variant": variant,
                        "server": kind, "repeat": r, "position": position,
                        "error": f"no cluster: {e.args[0].splitlines()[0]}"})
            return failures + len(todo)
        try:
            crec.update(label=cluster.label, formed_s=cluster.formed_s,
                        endpoints=dict(zip(cluster.names, cluster.endpoints())))
            state: Optional[Status] = cluster.leader(wait_s=10)
            crec["leader"], crec["term"] = state.leader, state.term
            log(f"  {kind} cluster {cluster.label}: formed in {cluster.formed_s:.1f} s, leader "
                f"{crec['leader']} (term {crec['term']})")
            while todo:
                workload, variant = todo.pop(0)
                rec, state = run_bench(h, cluster, state, workload, variant, r, position)
                record(rec)
                tag = f"{workload:13s} {VARIANT_LABEL[variant]:7s} {kind:4s} #{r + 1}"
                if "error" in rec:
                    failures += 1
                    log(f"  {tag}: FAILED: {rec['error']}")
                else:
                    log(f"  {tag}: {compare.result_line(rec['result'])}"
                        + ("  LEADER CHANGED" if rec.get("leader_changed") else ""))
                if state is None:
                    crec["broken_in"] = f"{workload} {variant}"
                    if todo:
                        log(f"  {kind} cluster {cluster.label} broke; a fresh one for the "
                            f"{len(todo)} run(s) left")
                    break
        except HarnessError as e:
            crec["error"] = str(e)
        finally:
            crec["log_lines"], crec["log_samples"] = cluster.log_problems()
            h.finish(cluster)
            crec["stopped_at"] = now_iso()
            emit(crec)
    return failures


def run_comparison(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    compare.prepare_binaries(args)
    check_cluster_mode(args.t4_bin)
    date = datetime.datetime.now()
    out_path = compare.results_path(args, date, "cluster-")
    workdir = compare.make_workdir(args, "t4-bench-cluster-")
    h = Harness(args, workdir)
    failures = 0
    try:
        originals = compare.use_private_copies(args, workdir)
        measure = (f"{args.total} ops" if args.total is not None
                   else fmt_duration_arg(args.duration))
        compare.log_plan(originals, workdir, out_path,
                         f"{args.repeats} round(s) × 2 clusters × {len(args.workloads)} "
                         f"workload(s) × {len(args.variants)} variant(s) × {measure}: about "
                         f"{fmt_minutes(estimate_s(args))}")
        meta = compare.run_meta(args, date, workdir, originals, header={
            "mode": "cluster",
            "members": MEMBERS,
        }, settings={
            "repeats": args.repeats,
            "duration_s": args.duration if args.total is None else None,
            "total": args.total,
            "workloads": args.workloads,
            "variants": args.variants,
            "bench_settings": compare.bench_settings(bench_argv(args, ["HOST:PORT"], "W")),
            "fresh_cluster": "per round and kind",
        })
        runs: Dict[Tuple[str, str], List[dict]] = {}
        with compare.ResultsFile(out_path, meta) as out:
            for r in range(args.repeats):
                order = ["t4", "etcd"] if r % 2 == 0 else ["etcd", "t4"]
                for pos, kind in enumerate(order):
                    log(f"round {r + 1}/{args.repeats}: {kind}")
                    failures += run_round(h, kind, r, pos, out.emit, runs)
            summaries = []
            for workload in args.workloads:
                for variant in args.variants:
                    s = summarise(workload, variant, runs.get((workload, variant), []))
                    out.emit(s)
                    summaries.append(s)
            end = compare.end_record(meta, workdir, t_start, failures)
            leftovers = end["leftover_processes"] = h.leftovers()
            out.emit(end)
        clusters = [r for r in out.records if r.get("type") == "cluster"]
        print("\n" + results_table(summaries))
        print("\n" + clusters_table(clusters))
        print(f"\nraw results: {out_path}")
        if args.results_md:
            md_path = Path(args.results_md).resolve()
            compare.write_section(md_path, markdown_section(meta, summaries, clusters, out_path),
                                  SECTION_BEGIN, SECTION_END, at_top=False)
            print(f"report section: {md_path}")
        if leftovers:
            raise HarnessError(f"server processes still running: {', '.join(leftovers)}")
        n_procs = sum(len(c.processes()) for c in h.started)
        log(f"all {n_procs} server processes of {len(h.started)} clusters have exited")
        return compare.exit_status(failures, out_path)
    finally:
        h.tear_down()


def check_cluster_mode(t4_bin: Path) -> None:
    p = subprocess.run([str(t4_bin), "run", "--help"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=30)
    if b"--peer-listen" not in p.stdout:
        raise HarnessError(f"{t4_bin} has no cluster mode (`t4 run --help` lists no "
                           f"--peer-listen): an older build?")


def report_from(args: argparse.Namespace) -> int:
    """Re-renders the tables (and the --results-md section) from an earlier run's results,
    with the --note paragraphs of this invocation added."""
    path, recs, meta = compare.load_results(args, mode="cluster")
    summaries = [r for r in recs if r.get("type") == "median"]
    clusters = [r for r in recs if r.get("type") == "cluster"]
    print(results_table(summaries))
    print("\n" + clusters_table(clusters))
    if args.results_md:
        md_path = Path(args.results_md).resolve()
        compare.write_section(md_path, markdown_section(meta, summaries, clusters, path),
                              SECTION_BEGIN, SECTION_END, at_top=False)
        print(f"report section: {md_path}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark a 3-node t4 cluster against a 3-node etcd cluster on loopback, "
                    "side by side (see bench/README.md, \"Clusters\").")
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated (default: all: {','.join(WORKLOADS)})")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="endpoint variants, comma-separated: all (the three members, followers "
                         "first), leader (the leader only); default: both")
    ap.add_argument("--repeats", type=int, default=3,
                    help="rounds: each runs everything against a fresh cluster of each kind, "
                         "the kind going first alternating (default 3)")
    ap.add_argument("--duration", type=parse_duration, default=parse_duration("2s"),
                    help="measured length of each run, e.g. 5s (default 2s)")
    ap.add_argument("--total", type=int, help="measure this many operations per run instead "
                                              "of --duration")
    ap.add_argument("--warmup", default="500ms",
                    help="t4 bench --warmup: a duration, or a count of operations (default "
                         "500ms: the cluster is warm from the runs before)")
    compare.add_client_args(ap)
    ap.add_argument("--quick", action="store_true",
                    help=f"a smoke run: one round, --total {QUICK_TOTAL}, no warm-up, "
                         f"{QUICK_KEYS} keys (the numbers mean nothing)")
    compare.add_binary_args(ap)
    ap.add_argument("--out", help="JSON-lines file for every raw run, cluster and median "
                                  "(default bench/results/cluster-<date>.jsonl)")
    ap.add_argument("--results-md", help="also replace the cluster section of this Markdown "
                                         "file, e.g. bench/RESULTS.md (appended if missing)")
    ap.add_argument("--work-dir", help="where the clusters' temporary data dirs go (default: "
                                       "the system temp dir); its file system is what fsync "
                                       "costs")
    ap.add_argument("--note", action="append", default=[], metavar="TEXT",
                    help="a paragraph for the report section (repeatable)")
    compare.add_logs_and_no_run_args(ap)
    args = ap.parse_args()
    compare.parse_workloads(ap, args)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not args.variants or any(v not in VARIANTS for v in args.variants):
        ap.error(f"--variants takes {' and/or '.join(VARIANTS)}")
    if args.quick:
        args.repeats = 1
        args.total = QUICK_TOTAL if args.total is None else args.total
        args.warmup = "0"
        args.bench_arg = [f"--keys {QUICK_KEYS}"] + args.bench_arg
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.total is not None and args.total < 1:
        ap.error("--total must be at least 1")
    if args.estimate:
        print(f"about {fmt_minutes(estimate_s(args))}")
        return 0
    return compare.run_guarded(report_from if args.report_from else run_comparison, args,
                               "clusters")


if __name__ == "__main__":
    sys.exit(main())

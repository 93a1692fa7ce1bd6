"""The etcdctl command sequence run, in this order, against etcd and against t4.

Both servers start empty (revision 1) and receive exactly these commands, so every revision in
every answer must match. The revision numbers written below (`--rev=`, `compaction N`, compares
on `mod`/`create`) are what that sequence produces; each step that changes the revision says
so in a trailing `# rN` comment. If you insert a mutating command, the numbers after it shift:
rerun `etcdctl_compat.py --against-etcd --verbose` and fix them.

Compared with care (see `Cmd` for the knobs):
  - `lease grant`: the server picks the id, so each granted id is captured per server and
    substituted into later commands (`put --lease={L1}`), and shown as `<L1>` in answers;
    remaining TTLs count down, so `timetolive` is compared with TTLs normalised.
  - `watch`: etcdctl never exits on its own; it runs for a fixed time and what it printed is
    compared (history replay with `--rev`, so the output does not depend on timing).
  - `endpoint status`: versions, db sizes, raft index/term and the leader id are normalised.
  - `snapshot save`: exit code and stdout only (etcdctl logs sizes and timings); the file
    itself is etcd's bbolt database on one side and t4's own format on the other.
Left out on purpose, because etcd's own answer is not deterministic or not comparable:
  - `endpoint hashkv`, `member list`, `check perf`, `snapshot status`: hashes, member ids, peer
    URLs and file formats differ by construction.
  - `endpoint health`: prints the time the probe took.
  - `-w protobuf`: binary encoding of the header, which carries cluster/member id.
Not expressible with etcdctl 3.4 (the Debian client), so not covered here:
  - `get --count-only` (added in etcdctl 3.5), `--min/max-mod/create-revision` filters.
  - `lease("k") = "0"` compares in `txn`: etcdctl 3.4 panics while parsing them ("bad value").
  - comparison operators other than = != < > (e.g. `>=`): etcdctl panics ("Unknown result op").
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

Arg = Union[str, bytes]

# etcd's default --max-request-bytes is 1.5 MiB (t4's too). etcdctl's gRPC client refuses to
# *send* anything above 2 MiB (grpc MaxCallSendMsgSize), so values past 2 MiB never reach the
# server: they test the client, and are kept only to document that.
MIB = 1024 * 1024
VALUE_UNDER_LIMIT = b"u" * (14 * MIB // 10)  # 1.4 MiB: accepted
VALUE_OVER_LIMIT = b"o" * (16 * MIB // 10)  # 1.6 MiB: server says "request is too large"
VALUE_OVER_CLIENT_MAX = b"c" * (25 * MIB // 10)  # 2.5 MiB: client-side ResourceExhausted

# etcd's default --max-txn-ops.
MAX_TXN_OPS = 128


@dataclass(frozen=True)
class Cmd:
    """One etcdctl invocation: arguments after the global flags, and what to feed on stdin.

    Optional behaviour, for the commands whose answers are not byte-for-byte deterministic:
      * `capture`: the name of a variable (e.g. "L1") set, per server, to the lease id this
        command prints (`lease <16 hex> granted ...`). Later arguments may say `{L1}`; every
        answer has that server's id (hex and decimal) replaced by `<L1>`.
      * `watch_s`: run etcdctl (a `watch`, which never exits) for this many seconds, then stop
        it and compare what it printed.
      * `loose`: also normalise what differs by construction: remaining TTLs, server version,
        db sizes, raft index and leader id.
      * `stdout_only`: compare exit code and stdout, not stderr (etcdctl's `snapshot save`
        logs sizes and timings there).
    An argument `{snap}` becomes a file path in the server's own work dir.
    """

    args: Sequence[Arg]
    stdin: Optional[bytes] = None
    capture: Optional[str] = None
    watch_s: Optional[float] = None
    loose: bool = False
    stdout_only: bool = False

    def label(self) -> str:
        parts = []
        for a in self.args:
            if isinstance(a, bytes):
                parts.append(repr(a))  # b'bk\xfe\xff'
            elif a == "" or any(ch in a for ch in " \t\"'\\$`|&;<>()*?[]{}#~!"):
                parts.append(repr(a))
            else:
                parts.append(a)
        text = " ".join(parts)
        if self.stdin is not None:
            if len(self.stdin) > 120:
                text += f" <stdin: {len(self.stdin)} bytes>"
            else:
                text += " <stdin: " + repr(self.stdin)[2:-1] + ">"
        return text


def c(*args: Arg, stdin: Optional[bytes] = None, capture: Optional[str] = None,
      watch_s: Optional[float] = None, loose: bool = False, stdout_only: bool = False) -> Cmd:
    return Cmd(args=tuple(args), stdin=stdin, capture=capture, watch_s=watch_s, loose=loose,
               stdout_only=stdout_only)


def txn(compares: List[str], success: List[str], failure: List[str], *flags: str) -> Cmd:
    """`etcdctl txn` in non-interactive mode: three blocks each ended by an empty line.

    etcdctl reads compares until an empty line, then success ops until an empty line, then
    failure ops until an empty line; hitting end of input before the third empty line is
    "Error: EOF", so every block gets its terminating empty line even when it is empty.
    """
    text = "".join(line + "\n" for line in compares) + "\n"
    text += "".join(line + "\n" for line in success) + "\n"
    text += "".join(line + "\n" for line in failure) + "\n"
    return Cmd(args=("txn",) + tuple(flags), stdin=text.encode())


def build() -> List[Cmd]:
    cmds: List[Cmd] = []
    add = cmds.append

    # --- empty store: revision 1 -------------------------------------------------------------
    add(c("get", "a"))
    add(c("get", "", "--prefix", "-w", "json"))
    add(c("compaction", "0"))  # fresh store: etcd accepts compacting at 0 (consumes no revision)
    add(c("compaction", "0"))  # ... once: now "required revision has been compacted"

    # --- put --------------------------------------------------------------------------------
    add(c("put", "a", "1"))  # r2
    add(c("put", "a", "2", "-w", "json"))  # r3
    add(c("put", "b", "10", "--prev-kv"))  # r4: new key, no prev kv printed
    add(c("put", "b", "11", "--prev-kv"))  # r5: prints the previous b
    add(c("put", "b", "12", "--prev-kv", "-w", "json"))  # r6
    add(c("put", "c", "100", "-w", "fields"))  # r7
    add(c("put", "sp", "hello world  with  spaces"))  # r8
    add(c("put", "uni", "héllo ✓ 日本語 🚀"))  # r9
    # binary-ish value, read from stdin (etcdctl keeps every byte, trailing newline included)
    add(c("put", "bin", stdin=b"\x00\x01bin\x7f\x80\xfe\xff\n"))  # r10
    add(c("put", "empty", ""))  # r11: empty value is allowed
    add(c("put", b"bk\xfe\xff", "binary key"))  # r12

    # p/a..p/d: every sort target gives a different order, with no ties (etcd sorts with an
    # unstable sort, so the order of equal elements is not part of the contract).
    #   final   value     version create mod
    #   p/a     pear      2       15     20
    #   p/b     apple     4       13     21
    #   p/c     aardvark  1       17     17
    #   p/d     mango     3       14     22
    add(c("put", "p/b", "b-1"))  # r13
    add(c("put", "p/d", "d-1"))  # r14
    add(c("put", "p/a", "a-1"))  # r15
    add(c("put", "p/b", "b-2"))  # r16
    add(c("put", "p/c", "aardvark"))  # r17
    add(c("put", "p/d", "d-2"))  # r18
    add(c("put", "p/b", "b-3"))  # r19
    add(c("put", "p/a", "pear"))  # r20
    add(c("put", "p/b", "apple"))  # r21
    add(c("put", "p/d", "mango", "-w", "json"))  # r22

    add(c("put", "a", "--ignore-value", "-w", "json"))  # r23: keeps value "2", version 3
    add(c("put", "missing", "--ignore-value"))  # error: key not found
    add(c("put", "a", "3", "--ignore-lease"))  # r24: a has no lease, fine
    add(c("put", "missing", "v", "--ignore-lease"))  # error: key not found
    add(c("put", "nolease", "v", "--lease=1234abcd"))  # error: requested lease not found
    add(c("put", "", "v"))  # error: key is not provided
    add(c("put", "a", "x", "--ignore-value"))  # client-side usage error, exit 128
    add(c("put", "big", stdin=VALUE_UNDER_LIMIT))  # r25
    add(c("get", "big", "--keys-only", "-w", "json"))
    add(c("put", "big2", stdin=VALUE_OVER_LIMIT))  # error: request is too large
    add(c("put", "big3", stdin=VALUE_OVER_CLIENT_MAX))  # client-side ResourceExhausted
    add(c("del", "big"))  # r26

    # --- get (current revision 26) ------------------------------------------------------------
    add(c("get", "a", "-w", "json"))
    add(c("get", "a", "-w", "fields"))
    add(c("get", "a", "-w", "simple"))
    add(c("get", "a", "--print-value-only"))
    add(c("get", "a", "--keys-only"))
    add(c("get", "p/", "--prefix"))
    add(c("get", "p/", "--prefix", "-w", "json"))
    add(c("get", "p/", "--prefix", "--keys-only", "-w", "fields"))
    add(c("get", "p/b", "p/d"))  # [p/b, p/d)
    add(c("get", "p/b", "p/d", "-w", "json"))
    add(c("get", "p/b", "--from-key", "--keys-only"))
    add(c("get", "", "--from-key", "--keys-only"))
    add(c("get", "", "--prefix", "--keys-only"))
    add(c("get", "p/", "--prefix", "--limit=2"))
    add(c("get", "p/", "--prefix", "--limit=2", "-w", "json"))  # more: true, count 4
    add(c("get", "p/b", "--rev=16"))  # past: b-2
    add(c("get", "p/b", "--rev=12"))  # before p/b existed: nothing
    add(c("get", "p/", "--prefix", "--rev=18", "-w", "json"))
    add(c("get", "a", "--rev=26", "-w", "json"))  # current
    add(c("get", "a", "--rev=27"))  # one past current: future revision
    add(c("get", "a", "--rev=0", "-w", "json"))  # 0 means latest
    add(c("get", "a", "--rev=-1"))  # so does a negative revision
    for target in ("KEY", "VERSION", "CREATE", "MODIFY", "VALUE"):
        for order in ("ASCEND", "DESCEND"):
            add(c("get", "p/", "--prefix", "--keys-only", f"--sort-by={target}", f"--order={order}"))
    add(c("get", "p/", "--prefix", "--keys-only", "--sort-by=MODIFY"))  # order defaults
    add(c("get", "p/", "--prefix", "--keys-only", "--order=DESCEND"))  # target defaults
    add(c("get", "p/", "--prefix", "--sort-by=VALUE", "--order=DESCEND", "--limit=2", "-w", "json"))
    add(c("get", "bin", "-w", "json"))
    add(c("get", "bin", "--hex"))
    add(c("get", "uni"))
    add(c("get", "sp", "-w", "fields"))
    add(c("get", "empty", "-w", "json"))  # empty value: no "value" field
    add(c("get", b"bk\xfe\xff", "--hex"))
    add(c("get", "b", "--prefix", "--keys-only", "--hex"))
    add(c("get", "p/", "--prefix", "--consistency=s", "--keys-only"))
    add(c("get", "b", "a"))  # range_end < key
    add(c("get", "b", "a", "-w", "json"))
    add(c("get", "missing", "-w", "json"))
    add(c("get", ""))  # error: key is not provided

    # --- del (current revision 26) ------------------------------------------------------------
    add(txn([], [f"put d/{i} d-{i}" for i in range(1, 7)], []))  # r27: six keys in one revision
    add(c("del", "d/1"))  # r28
    add(c("del", "d/2", "d/4"))  # r29: d/2 and d/3
    add(c("del", "nothing"))  # 0, no new revision
    add(c("del", "nothing", "-w", "json"))  # header revision stays 29
    add(c("del", "d/4", "--prev-kv"))  # r30
    add(c("del", "d/", "--prefix", "--prev-kv", "-w", "json"))  # r31: d/5, d/6
    add(c("del", "d/", "--prefix"))  # 0
    add(c("del", "b", "a"))  # range_end < key: 0
    add(c("del", ""))  # error: key is not provided
    add(txn([], ["put zz/1 z1", "put zz/2 z2", "put zz/3 z3"], []))  # r32
    add(c("del", "zz/2", "--from-key", "--prev-kv", "-w", "fields"))  # r33: zz/2, zz/3
    add(c("get", "zz/", "--prefix"))

    # --- txn (current revision 33) ------------------------------------------------------------
    # r34. Nested responses carry only header.revision, and it is the revision as seen at that
    # point of the txn: 33 for the ops before the first change (deleting nothing is no change),
    # 34 from the first put on.
    add(txn(['value("a") = "3"'],
            ["get a", "del nothing", "get t/ --prefix", "put t/1 v1", "get t/ --prefix",
             "del zz/1 --prev-kv", "get zz/ --prefix", "get p/ --prefix --keys-only --limit=1"],
            ["put t/fail x"], "-w", "json"))
    add(txn(['value("a") = "nope"'], ["put t/2 v2"], ["put t/3 v3", "get t/ --prefix"]))  # r35
    add(txn(['version("p/b") = "4"', 'create("p/a") < "100"', 'mod("p/d") != "0"', 'mod("p/d") > "21"'],
            ["get p/ --prefix --sort-by=VALUE --limit=1"], [], "-w", "fields"))  # read-only: no new rev
    add(txn(['version("p/b") > "4"'], ["put t/never x"], ["get p/b"], "-w", "json"))  # read-only
    add(txn(['value("p/c") > "a"', 'value("p/c") < "b"'], ["put t/1 v1b --prev-kv"], [], "-w", "json"))  # r36
    add(txn(['version("nokey") = "0"', 'create("nokey") = "0"', 'mod("nokey") = "0"'],
            ["put t/5 v5"], []))  # r37: a missing key has version/create/mod 0
    add(txn(['value("nokey") = ""'], ["put t/never x"], ["get nokey"], "-w", "json"))  # value of a missing key never compares true
    add(txn(['version("a") < "2"'], [], ["del t/ --prefix --prev-kv"], "-w", "json"))  # r38
    add(txn([], [], [], "-w", "json"))  # empty txn: succeeded, no new revision
    add(txn([], ["get a", "get b"], [], "-w", "json"))  # read-only
    add(txn([], ["put dup 1", "put dup 2"], []))  # error: duplicate key
    add(txn([], ["put dup 1", "del dup"], []))  # error: duplicate key
    add(txn([], ["put p/x 1", "del p/ --prefix"], []))  # error: put inside a deleted range
    add(txn(['value("a") = "3"'], ["put t/6 s"], ["put t/6 f"]))  # r39: same key in both branches is fine
    add(txn([], [f"put m/{i:03d} v" for i in range(MAX_TXN_OPS + 1)], []))  # error: too many operations
    add(txn([], [f"put m/{i:03d} v" for i in range(MAX_TXN_OPS)], []))  # r40: exactly the maximum
    add(c("del", "m/", "--prefix"))  # r41: 128
    add(txn([], ["put t/7 v --lease=1234abcd"], []))  # error: lease not found
    add(txn([], ["get a --rev=1000"], []))  # error: future revision
    add(txn([], ["get p/b --rev=19"], [], "-w", "json"))  # past revision inside a txn

    # --- compaction (current revision 41) -----------------------------------------------------
    add(c("compaction", "16"))
    add(c("get", "p/b", "--rev=15"))  # below: compacted
    add(c("get", "p/b", "--rev=16"))  # at: fine
    add(c("get", "p/", "--prefix", "--rev=16", "-w", "json"))
    add(c("compaction", "16"))  # same again: compacted
    add(c("compaction", "10"))  # lower: compacted
    add(c("compaction", "100000"))  # future revision
    add(c("compaction", "20", "--physical"))
    add(c("get", "p/", "--prefix", "--rev=19"))  # compacted
    add(txn([], ["get p/b --rev=18"], []))  # compacted, inside a txn
    add(c("get", "", "--prefix", "--keys-only", "--rev=20"))
    add(c("compaction", "41"))  # the current revision itself
    add(c("get", "a", "--rev=41", "-w", "json"))
    add(c("compaction", "42"))  # future
    add(c("get", "a", "--rev=40"))  # compacted


    # --- final state ---------------------------------------------------------------------------
    add(c("get", "", "--prefix", "-w", "json"))  # every key with all its revisions
    add(c("del", "", "--prefix"))  # r42: everything
    add(c("get", "", "--prefix", "-w", "json"))
    add(c("put", "a", "again", "-w", "json"))  # r43
    add(c("get", "a", "-w", "json"))  # version 1 again, create_revision 43

    # --- leases ------------------------------------------------------------------------------
    add(c("lease", "revoke", "1234abcd"))  # error: requested lease not found
    add(c("lease", "timetolive", "1234abcd"))  # "already expired", exit 0
    add(c("lease", "keep-alive", "--once", "1234abcd"))  # TTL 0 answer: etcdctl says not found
    add(c("lease", "grant", "9000000001"))  # error: too large lease TTL
    add(c("lease", "grant", "1", capture="L2"))  # raised to the minimum TTL, 2 s
    add(c("lease", "revoke", "{L2}"))  # no keys: no new revision
    add(c("lease", "grant", "100", capture="L1"))
    add(c("put", "l/1", "v1", "--lease={L1}"))  # r44
    # One attached key while listing them: etcd lists a lease's keys in Go map order.
    add(c("lease", "timetolive", "{L1}", "--keys", loose=True))
    add(c("lease", "timetolive", "{L1}", "--keys", "-w", "json", loose=True))
    add(c("put", "l/2", "v2", "--lease={L1}", "-w", "json"))  # r45
    add(c("put", "l/3", "v3"))  # r46
    add(c("put", "l/3", "v3b", "--lease=1234abcd"))  # error: lease not found, l/3 unchanged
    add(c("lease", "keep-alive", "--once", "{L1}"))
    add(c("lease", "list"))
    add(c("lease", "revoke", "{L1}"))  # r47: l/1 and l/2 deleted at one revision
    add(c("get", "l/", "--prefix", "-w", "json"))  # l/3 only
    add(c("lease", "timetolive", "{L1}"))  # already expired
    add(c("lease", "list"))  # found 0 leases

    # --- watch (history replay: deterministic output) ----------------------------------------
    add(c("watch", "--rev=44", "--prefix", "l/", watch_s=1.5))
    add(c("watch", "--rev=44", "--prefix", "l/", "--prev-kv", watch_s=1.5))
    add(c("watch", "--rev=46", "l/1", "l/4", watch_s=1.5))  # a range: l/1..l/4
    add(c("watch", "--rev=47", "l/2", "--prev-kv", watch_s=1.5))  # the delete, with prev kv
    add(c("watch", "--rev=41", "a", watch_s=1.5))  # at the compact revision: works
    add(c("watch", "--rev=40", "a", watch_s=1.5))  # below it: cancelled, compacted
    add(c("watch", "b", "a", watch_s=1.5))  # range end < key: cancelled, empty range

    # --- maintenance -------------------------------------------------------------------------
    add(c("alarm", "list"))
    add(c("endpoint", "status", "-w", "json", loose=True))
    add(c("defrag"))
    add(c("snapshot", "save", "{snap}", stdout_only=True))
    add(c("get", "", "--prefix", "-w", "json"))  # defrag and snapshot changed nothing
    return cmds

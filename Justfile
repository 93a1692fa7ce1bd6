# The commands people type. `just` is optional: every recipe is a plain
# command you can run directly (install just with `pip install rust-just`).

# Run a local node (data in ./t4-data, etcd API on 127.0.0.1:3379).
run *ARGS:
    cargo run --release -p t4-server --bin t4 -- run {{ARGS}}

# Every test (installs prerequisites first).
test *ARGS:
    ./scripts/test {{ARGS}}

# Only the fast core tests (no RocksDB build needed).
test-core:
    cargo test -p t4-core

# The seeded chaos simulation (the same runs as in `just test`); e.g.
# `SIM_SEED=42 just sim chaos_seeds -- --nocapture` reproduces one seed.
sim *ARGS:
    cargo test -p sim-tests --release {{ARGS}}

# Many more seeds, for local exploration (not in CI): 20,000 by default.
sim-long SEEDS="0..20000":
    SIM_SEEDS={{SEEDS}} cargo test -p sim-tests --release --test chaos chaos_seeds -- --nocapture

# Long cluster simulations, 3 and 5 nodes: the CI settings, then the bucket
# tier with GC on every seed (members fall behind GC and start over).
sim-cluster-long SEEDS="0..3000":
    SIM_CLUSTER_SEEDS={{SEEDS}} cargo test -p sim-tests --release --test cluster -- --nocapture three_nodes five_nodes
    SIM_CLUSTER_TIER=1 SIM_CLUSTER_GC=1 SIM_CLUSTER_SEEDS={{SEEDS}} cargo test -p sim-tests --release --test cluster -- --nocapture three_nodes five_nodes

# The etcdctl comparison against a real etcd.
compat:
    cargo build --workspace --all-targets  # the same selection as the tests: one RocksDB build
    python3 scripts/compat/etcdctl_compat.py --t4-bin "${CARGO_TARGET_DIR:-target}/debug/t4"

# Lints: formatting, clippy everywhere, dependency rules.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    ./scripts/check-deps

# E.g. `just bench-compare --workloads seq-put,par-put --results-md bench/RESULTS.md`; see bench/README.md.
# t4 against a real etcd, side by side: every `t4 bench` workload, A/B, plus etcdctl check perf (~15 min).
bench-compare *ARGS:
    python3 bench/compare.py {{ARGS}}

# The same as bench-compare (the older name).
bench *ARGS:
    python3 bench/compare.py {{ARGS}}

# E.g. `just bench-compare-cluster --quick` (a smoke run), `… --results-md bench/RESULTS.md`;
# every workload through all 3 members and through the leader alone; bench/README.md, "Clusters".
# A 3-node t4 cluster against a 3-node etcd cluster on loopback, side by side (~10 min).
bench-compare-cluster *ARGS:
    python3 bench/compare_cluster.py {{ARGS}}

# A 1 s seq-put pair through bench/compare.py, with checks (needs the release build; not in CI).
bench-selftest:
    python3 bench/compare.py --self-test

# Criterion micro-benchmarks of core and io-real: MVCC put/get/range on both
# engines, WAL append + fdatasync, embedded Node puts (bench/MICRO.md).
# ARGS go to criterion, e.g. `just bench-micro --measurement-time 3 mvcc/mem`.
bench-micro *ARGS:
    cargo bench --workspace --bench mvcc --bench engine --bench wal --bench node -- {{ARGS}}

# What CI runs.
ci:
    ./.ci/run

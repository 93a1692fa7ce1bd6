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

# The etcdctl comparison against a real etcd.
compat:
    cargo build --workspace --all-targets  # the same selection as the tests: one RocksDB build
    python3 scripts/compat/etcdctl_compat.py --t4-bin "${CARGO_TARGET_DIR:-target}/debug/t4"

# Lints: formatting, clippy everywhere, dependency rules.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    ./scripts/check-deps

# Serial and 16-way concurrent puts against t4 and a real etcd, side by side.
bench:
    ./scripts/bench-compare

# What CI runs.
ci:
    ./.ci/run

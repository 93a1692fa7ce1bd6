//! Drives a [`Store`] on an engine and the reference [`Model`] side by side
//! and panics, with context, at the first answer that differs.

use std::collections::VecDeque;

use super::model::Model;
use crate::engine::KvEngine;
use crate::error::Error;
use crate::kv::{RangeRequest, RangeResponse, TxnResponse, WriteRequest, WriteResponse};
use crate::log::{Barrier, Entry, Payload};
use crate::mvcc::{self, Store};
use crate::types::{Index, Term};

/// How many recent steps a failure report shows.
const TRACE_STEPS_MAX: usize = 12;

/// A store under test and its model.
pub struct Harness<E: KvEngine> {
    engine: E,
    store: Store,
    model: Model,
    index: u64,
    /// Where the run comes from (seed, scenario), printed on failure.
    context: String,
    trace: VecDeque<String>,
    steps: u64,
}

impl<E: KvEngine> Harness<E> {
    /// A harness over a fresh, empty engine.
    ///
    /// # Panics
    /// The engine is not empty (its meta is not that of a new store).
    pub fn new(engine: E, context: impl Into<String>) -> Harness<E> {
        let store = Store::open(&engine).expect("open store on a fresh engine");
        assert_eq!(
            *store.meta(),
            mvcc::Meta {
                current_revision: 1,
                compact_revision: -1,
                ..mvcc::Meta::default()
            },
            "a fresh engine must hold an empty store"
        );
        Harness {
            engine,
            store,
            model: Model::new(),
            index: 0,
            context: context.into(),
            trace: VecDeque::new(),
            steps: 0,
        }
    }

    /// The model.
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The store's metadata.
    #[must_use]
    pub fn meta(&self) -> mvcc::Meta {
        *self.store.meta()
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> &E {
        &self.engine
    }

    fn note(&mut self, step: String) {
        self.steps += 1;
        if self.trace.len() == TRACE_STEPS_MAX {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("#{} {step}", self.steps));
    }

    fn fail(&self, what: &str) -> ! {
        let trace: Vec<&str> = self.trace.iter().map(String::as_str).collect();
        panic!(
            "mvcc conformance [{}] after step {}: {what}\nlast steps (oldest first):\n  {}",
            self.context,
            self.steps,
            trace.join("\n  ")
        );
    }

    fn apply_entry(&mut self, payload: Payload) -> Result<WriteResponse, Error> {
        self.index += 1;
        let entry = Entry {
            term: 1,
            index: self.index,
            payload: Some(payload),
        };
        match self.store.apply(&self.engine, &entry) {
            Ok(applied) => applied.result,
            Err(e) => self.fail(&format!(
                "storage failure applying entry {}: {e}",
                self.index
            )),
        }
    }

    fn check_meta(&self) {
        let m = self.store.meta();
        let want = (
            self.model.current_revision(),
            self.model.compact_revision(),
            self.index,
            1,
        );
        if (
            m.current_revision,
            m.compact_revision,
            m.applied_index,
            m.applied_term,
        ) != want
        {
            self.fail(&format!(
                "meta {m:?}, model (current, compact, index, term) = {want:?}"
            ));
        }
    }

    /// Applies `req` to both; panics if the answers or metas differ.
    pub fn write(&mut self, req: WriteRequest) -> Result<WriteResponse, Error> {
        self.note(format!("write {req:?}"));
        let got = self.apply_entry(
            Entry::write(Term(1), Index(0), req.clone())
                .payload
                .expect("write entries have a payload"),
        );
        let want = self.model.apply(&req);
        if got != want {
            self.fail(&format!(
                "write answers differ\n  store: {got:?}\n  model: {want:?}"
            ));
        }
        self.check_meta();
        got
    }

    /// Applies a barrier entry: no revision, an empty-txn answer.
    pub fn barrier(&mut self) {
        self.note("barrier".into());
        let got = self.apply_entry(Payload::Barrier(Barrier {}));
        let want = Ok(WriteResponse::Txn(TxnResponse {
            revision: self.model.current_revision(),
            succeeded: true,
            responses: vec![],
        }));
        if got != want {
            self.fail(&format!("barrier answer {got:?}, want {want:?}"));
        }
        self.check_meta();
    }

    /// Serves `req` from the engine and from a snapshot; panics unless both
    /// equal the model's answer.
    pub fn read(&mut self, req: RangeRequest) -> Result<RangeResponse, Error> {
        self.note(format!("read {req:?}"));
        self.read_quiet(&req)
    }

    fn read_quiet(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        let got = mvcc::range(&self.engine, req);
        let want = self.model.range(req);
        if got != want {
            self.fail(&format!(
                "range answers differ for {req:?}\n  store: {got:?}\n  model: {want:?}"
            ));
        }
        let snap = mvcc::range(&self.engine.snapshot(), req);
        if snap != got {
            self.fail(&format!(
                "snapshot range differs for {req:?}\n  snapshot: {snap:?}\n  engine: {got:?}"
            ));
        }
        got
    }

    /// Drops the store and opens it again from the engine (a restart).
    pub fn reopen(&mut self) {
        self.note("reopen".into());
        let before = *self.store.meta();
        self.store =
            Store::open(&self.engine).unwrap_or_else(|e| self.fail(&format!("reopen: {e}")));
        if *self.store.meta() != before {
            self.fail(&format!(
                "reopened meta {:?}, was {before:?}",
                self.store.meta()
            ));
        }
    }

    /// Compares everything observable: the whole key space at every readable
    /// revision, every key's retained history and the revision log.
    pub fn check_state(&self) {
        let (current, compact) = (self.model.current_revision(), self.model.compact_revision());
        for rev in compact.max(1)..=current {
            let all = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: rev,
                ..Default::default()
            };
            let _ = self.read_quiet(&all);
        }
        if compact > 1 {
            let below = RangeRequest {
                key: vec![0],
                range_end: vec![0],
                revision: compact - 1,
                ..Default::default()
            };
            if self.read_quiet(&below)
                != Err(Error::Compacted {
                    compact_revision: compact,
                })
            {
                self.fail("a read below the watermark did not fail with compacted");
            }
        }
        let mut keys = self.model.keys();
        keys.extend(super::gen::KEYS.iter().map(|k| k.to_vec()));
        keys.sort();
        keys.dedup();
        for key in keys {
            let got = mvcc::key_history(&self.engine, &key)
                .unwrap_or_else(|e| self.fail(&format!("history of {key:?}: {e}")));
            let want = self.model.history(&key);
            if got != want {
                self.fail(&format!(
                    "history of {key:?} differs\n  store: {got:?}\n  model: {want:?}"
                ));
            }
        }
        let got = mvcc::revision_log(&self.engine, 0)
            .unwrap_or_else(|e| self.fail(&format!("revision log: {e}")));
        if got != self.model.log() {
            self.fail(&format!(
                "revision log differs\n  store: {got:?}\n  model: {:?}",
                self.model.log()
            ));
        }
    }
}

//! One GC pass over a bucket as a sequence of object operations: read what
//! [`plan_gc`] needs, plan, then delete in the plan's order.
//!
//! Pure, like [`super::checkpoint`]: [`GcRun`] hands out one [`ObjectOp`]
//! at a time and is told its result. The node's background pass (after
//! each of its checkpoints) and `t4 gc` drive the same machine, so both
//! read the bucket the same way:
//!
//! 1. list the whole bucket (every page);
//! 2. read `manifest/latest` (absent or unreadable: no pointer, with a
//!    warning for the latter);
//! 3. read every listed checkpoint manifest (absent or unreadable: left
//!    out, which the plan treats as unreadable and keeps);
//! 4. read every branch registration; one that cannot be read pins an
//!    unknown checkpoint, so the pass **stops without deleting anything**;
//! 5. read the WAL objects whose header term the plan needs
//!    ([`wal_headers_needed`]); an unreadable one is left out (kept);
//! 6. plan ([`plan_gc`]) and, unless it is a dry run, delete in the plan's
//!    order. A delete of a key already gone counts as done.
//!
//! Retryable failures repeat the same operation (the caller backs off);
//! any other failure ends the pass, leaving whatever was not yet deleted.
//! The plan's order keeps the bucket consistent at every point of a pass
//! cut short (manifests before the files they list).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::branch::{parse_branch_key, BranchRegistration};
use super::gc::{plan_gc, wal_headers_needed, GcInput, GcPlan};
use super::layout::{parse_checkpoint_manifest_key, wal_key, BRANCH_PREFIX, MANIFEST_LATEST};
use super::manifest::{CheckpointManifest, LatestPointer};
use super::wal_object;
use crate::object::{ObjectError, ObjectInfo, ObjectOp, ObjectReply, ObjectResult, LIST_KEYS_MAX};
use crate::types::Index;

/// What [`GcRun::on_result`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcProgress {
    /// Run this next.
    Next(ObjectOp),
    /// Worth retrying: back off, then run this (the same operation) again.
    Retry(ObjectOp),
    /// The pass is over.
    Finished(GcOutcome),
}

/// How a pass ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcOutcome {
    /// The plan (`None` when the pass stopped before planning).
    pub plan: Option<GcPlan>,
    /// How many of the plan's deletions were done (0 for a dry run).
    pub deleted: usize,
    /// Why the pass stopped early, if it did.
    pub error: Option<String>,
    /// Things an operator should know (the plan's warnings are in the
    /// plan).
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug)]
enum Phase {
    List,
    Latest,
    Manifests(VecDeque<String>),
    Branches(VecDeque<String>),
    WalHeaders(VecDeque<Index>),
    Delete(usize),
}

/// One GC pass; see the module docs.
#[derive(Clone, Debug)]
pub struct GcRun {
    keep: usize,
    dry_run: bool,
    phase: Phase,
    op: ObjectOp,
    input: GcInput,
    plan: Option<GcPlan>,
    warnings: Vec<String>,
}

impl GcRun {
    /// A pass keeping the newest `keep` checkpoints; `dry_run` plans
    /// without deleting. Returns it and its first operation.
    ///
    /// # Panics
    /// `keep` is 0.
    #[must_use]
    pub fn start(keep: usize, dry_run: bool) -> (GcRun, ObjectOp) {
        assert!(keep > 0, "GC keeps at least one checkpoint");
        let op = list_op(None);
        let run = GcRun {
            keep,
            dry_run,
            phase: Phase::List,
            op: op.clone(),
            input: GcInput {
                listing: Vec::new(),
                manifests: BTreeMap::new(),
                latest: None,
                pinned: BTreeSet::new(),
                keep,
                wal_terms: BTreeMap::new(),
            },
            plan: None,
            warnings: Vec::new(),
        };
        (run, op)
    }

    /// The result of the operation last handed out.
    pub fn on_result(&mut self, result: ObjectResult) -> GcProgress {
        if let Err(ObjectError::Retryable(_)) = &result {
            return GcProgress::Retry(self.op.clone());
        }
        match (self.phase.clone(), result) {
            (Phase::List, Ok(ObjectReply::Listed { objects, truncated })) => {
                let last = objects.last().map(|o| o.key.clone());
                self.input.listing.extend(objects);
                if truncated && last.is_some() {
                    return self.next(list_op(last));
                }
                self.phase = Phase::Latest;
                self.next(get(MANIFEST_LATEST))
            }
            (Phase::Latest, result) => {
                match result {
                    Ok(ObjectReply::Got { body, .. }) => match LatestPointer::decode(&body) {
                        Ok(p) => self.input.latest = Some(p),
                        Err(e) => self.warnings.push(format!(
                            "{MANIFEST_LATEST} could not be read ({e}): it keeps no checkpoint in this pass"
                        )),
                    },
                    Err(ObjectError::NotFound) => {}
                    other => return self.stop(format!("reading {MANIFEST_LATEST}: {}", answer(&other))),
                }
                let manifests = keys(&self.input.listing, |k| {
                    parse_checkpoint_manifest_key(k).is_some()
                });
                self.read_manifests(manifests)
            }
            (Phase::Manifests(mut queue), result) => {
                let key = queue.pop_front().expect("a manifest was being read");
                match result {
                    Ok(ObjectReply::Got { body, .. }) => {
                        // Invalid: left out, which the plan keeps and warns about.
                        if let Ok(m) = CheckpointManifest::decode(&key, &body) {
                            self.input.manifests.insert(key, m);
                        }
                    }
                    Err(ObjectError::NotFound) => {}
                    other => return self.stop(format!("reading {key}: {}", answer(&other))),
                }
                self.read_manifests(queue)
            }
            (Phase::Branches(mut queue), result) => {
                let key = queue.pop_front().expect("a branch was being read");
                match result {
                    Ok(ObjectReply::Got { body, .. }) => {
                        match BranchRegistration::decode(&key, &body) {
                            Ok(b) => {
                                self.input.pinned.insert(b.manifest_key);
                            }
                            Err(e) => return self.unknown_pin(&key, &e.to_string()),
                        }
                    }
                    // Unregistered since the listing: it pins nothing.
                    Err(ObjectError::NotFound) => {}
                    other => return self.stop(format!("reading {key}: {}", answer(&other))),
                }
                self.read_branches(queue)
            }
            (Phase::WalHeaders(mut queue), result) => {
                let first = queue.pop_front().expect("a WAL object was being read");
                let key = wal_key(first);
                match result {
                    Ok(ObjectReply::Got { body, .. }) => {
                        // Unknown terms keep the object (a possible fence).
                        if let Ok(term) = wal_object::decode_term(&key, first, &body) {
                            self.input.wal_terms.insert(first, term);
                        }
                    }
                    Err(ObjectError::NotFound) => {}
                    other => return self.stop(format!("reading {key}: {}", answer(&other))),
                }
                self.read_wal_headers(queue)
            }
            (Phase::Delete(done), Ok(ObjectReply::Deleted) | Err(ObjectError::NotFound)) => {
                self.delete_next(done + 1)
            }
            (Phase::Delete(done), other) => {
                let plan = self.plan.as_ref().expect("planned");
                let key = plan.deletions[done].key.clone();
                self.finish(done, Some(format!("deleting {key}: {}", answer(&other))))
            }
            (phase, other) => self.stop(format!("{phase:?}: {}", answer(&other))),
        }
    }

    fn next(&mut self, op: ObjectOp) -> GcProgress {
        self.op = op.clone();
        GcProgress::Next(op)
    }

    fn read_manifests(&mut self, queue: VecDeque<String>) -> GcProgress {
        if let Some(key) = queue.front() {
            let op = get(key);
            self.phase = Phase::Manifests(queue);
            return self.next(op);
        }
        let branches = keys(&self.input.listing, |k| k.starts_with(BRANCH_PREFIX));
        if let Some(bad) = branches.iter().find(|k| parse_branch_key(k).is_none()) {
            let bad = bad.clone();
            return self.unknown_pin(&bad, "not a branch registration key (branches/<id>)");
        }
        self.read_branches(branches)
    }

    fn read_branches(&mut self, queue: VecDeque<String>) -> GcProgress {
        if let Some(key) = queue.front() {
            let op = get(key);
            self.phase = Phase::Branches(queue);
            return self.next(op);
        }
        let needed: VecDeque<Index> = wal_headers_needed(&self.input).into();
        self.read_wal_headers(needed)
    }

    fn read_wal_headers(&mut self, queue: VecDeque<Index>) -> GcProgress {
        if let Some(&first) = queue.front() {
            self.phase = Phase::WalHeaders(queue);
            return self.next(get(&wal_key(first)));
        }
        let plan = plan_gc(&self.input);
        self.plan = Some(plan);
        if self.dry_run {
            return self.finish(0, None);
        }
        self.delete_next(0)
    }

    fn delete_next(&mut self, done: usize) -> GcProgress {
        let plan = self.plan.as_ref().expect("planned");
        let Some(d) = plan.deletions.get(done) else {
            return self.finish(done, None);
        };
        let op = ObjectOp::Delete { key: d.key.clone() };
        self.phase = Phase::Delete(done);
        self.next(op)
    }

    fn unknown_pin(&mut self, key: &str, why: &str) -> GcProgress {
        self.stop(format!(
            "branch registration {key} cannot be read ({why}): GC cannot tell which checkpoint \
             it pins, so it deletes nothing; repair or remove it first"
        ))
    }

    fn stop(&mut self, why: String) -> GcProgress {
        GcProgress::Finished(GcOutcome {
            plan: None,
            deleted: 0,
            error: Some(why),
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    fn finish(&mut self, deleted: usize, error: Option<String>) -> GcProgress {
        GcProgress::Finished(GcOutcome {
            plan: self.plan.take(),
            deleted,
            error,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    /// How many checkpoints it keeps.
    #[must_use]
    pub fn keep(&self) -> usize {
        self.keep
    }
}

/// A store's answer for a message: the error as the store words it, or
/// the reply that made no sense at this step.
fn answer(result: &ObjectResult) -> String {
    match result {
        Err(e) => e.to_string(),
        Ok(reply) => format!("unexpected answer {reply:?}"),
    }
}

fn list_op(start_after: Option<String>) -> ObjectOp {
    ObjectOp::List {
        prefix: String::new(),
        start_after,
        max_keys: LIST_KEYS_MAX,
    }
}

fn get(key: &str) -> ObjectOp {
    ObjectOp::Get {
        key: key.to_owned(),
    }
}

fn keys(listing: &[ObjectInfo], pick: impl Fn(&str) -> bool) -> VecDeque<String> {
    listing
        .iter()
        .filter(|o| pick(&o.key))
        .map(|o| o.key.clone())
        .collect()
}

#[cfg(test)]
#[path = "gc_run/tests.rs"]
mod tests;

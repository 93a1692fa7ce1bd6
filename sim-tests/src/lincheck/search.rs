//! The depth-first search (see the module doc of [`super`] for the
//! algorithm and the reductions it applies).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use t4_core::kv::WriteRequest;
use t4_core::testkit::Model;

use super::classify::{reads_old_revisions, Entry, Role};
use super::{explain, symmetry, Verdict};
use crate::history::{Call, Op, Return};

/// A node of the search with choices left.
struct Frame {
    /// The state at this node; taken by the last candidate (no clone).
    model: Option<Model>,
    /// Operations that change the state and may come next, in trying order.
    candidates: Vec<usize>,
    /// The next candidate to try.
    next: usize,
    /// `path.len()` before the operation that led here: backtracking
    /// truncates the path to it.
    entry_len: usize,
}

/// What entering a node found.
enum Enter {
    /// Every required operation is placed.
    Linearized,
    /// Nothing can follow (or the node was explored before).
    Dead,
    /// Choices to try.
    Branch(Frame),
    /// The budget ran out.
    OutOfBudget,
}

/// The search's state besides the stack.
pub(super) struct Search<'h> {
    history: &'h [Op],
    entries: Vec<Entry>,
    /// Indexes of non-skipped operations by call time.
    by_call: Vec<usize>,
    /// Position of each operation in `by_call`.
    pos: Vec<usize>,
    /// Positions (in `by_call`) of the operations not placed yet.
    pending: BTreeSet<usize>,
    /// `(return_at, index)` of the required operations not placed yet.
    pending_returns: BTreeSet<(u64, usize)>,
    /// Multiset of the pinned pre-revisions of the required operations not
    /// placed yet.
    pending_pre: BTreeMap<i64, usize>,
    /// The required reads of the current revision (as opposed to an older
    /// one), by the revision their answer pins.
    reads_at: BTreeMap<i64, Vec<usize>>,
    /// The required writes that take a revision, by the revision before
    /// them: each claims the next revision.
    claimers: BTreeMap<i64, Vec<usize>>,
    /// Revisions at which an answered lease grant is pinned: it changes
    /// state without taking a revision, so reduction 7 stops there.
    grants_at: BTreeSet<i64>,
    /// Interchangeable unknown writes share a class (reduction 9).
    classes: Vec<Option<usize>>,
    /// Random 128-bit value per operation; `placed` is the XOR of those of
    /// the placed operations.
    zobrist: Vec<u128>,
    placed: u128,
    /// The placed operations, in linearization order.
    path: Vec<usize>,
    /// The longest `path` seen.
    best: Vec<usize>,
    /// The highest-revision misfit met looking ahead: the operation and
    /// the state it was checked against.
    misfit: Option<(usize, Model)>,
    /// Nodes entered: `placed ^ fingerprint`.
    seen: HashSet<u128>,
    /// Model applications so far.
    pub(super) steps: u64,
    steps_max: u64,
}

impl<'h> Search<'h> {
    pub(super) fn new(history: &'h [Op], entries: Vec<Entry>, steps_max: u64) -> Search<'h> {
        let mut by_call: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].role != Role::Skipped)
            .collect();
        by_call.sort_by_key(|&i| (entries[i].call_at, i));
        let mut pos = vec![usize::MAX; entries.len()];
        for (p, &i) in by_call.iter().enumerate() {
            pos[i] = p;
        }
        let mut pending_returns = BTreeSet::new();
        let mut pending_pre = BTreeMap::new();
        let mut reads_at: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        let mut claimers: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        let mut grants_at = BTreeSet::new();
        for (i, e) in entries.iter().enumerate() {
            let Role::Required {
                pre_revision,
                preserving,
                ..
            } = e.role
            else {
                continue;
            };
            pending_returns.insert((e.return_at, i));
            let Some(pre) = pre_revision else {
                continue;
            };
            *pending_pre.entry(pre).or_insert(0) += 1;
            match &history[i].call {
                Call::Range(req) if req.revision <= 0 || req.revision == pre => {
                    reads_at.entry(pre).or_default().push(i);
                }
                Call::Write(WriteRequest::LeaseGrant(_)) => {
                    grants_at.insert(pre);
                }
                Call::Range(_) | Call::Write(WriteRequest::Compaction(_)) => {}
                Call::Write(_) if !preserving => claimers.entry(pre).or_default().push(i),
                Call::Write(_) => {}
            }
        }
        let mut seed = 0x7434_6c69_6e63_6865_u64;
        let zobrist = (0..entries.len())
            .map(|_| (u128::from(splitmix64(&mut seed)) << 64) | u128::from(splitmix64(&mut seed)))
            .collect();
        let classes = symmetry::classes(history, &entries);
        Search {
            history,
            pending: (0..by_call.len()).collect(),
            by_call,
            pos,
            entries,
            pending_returns,
            pending_pre,
            reads_at,
            claimers,
            grants_at,
            classes,
            zobrist,
            placed: 0,
            path: Vec::new(),
            best: Vec::new(),
            misfit: None,
            seen: HashSet::new(),
            steps: 0,
            steps_max,
        }
    }

    /// Searches; the verdict.
    pub(super) fn run(&mut self) -> Verdict {
        let mut stack: Vec<Frame> = Vec::new();
        match self.enter(Model::new(), 0, true) {
            Enter::Linearized => return Verdict::Linearizable,
            Enter::OutOfBudget => return Verdict::Unknown,
            Enter::Dead => {}
            Enter::Branch(frame) => stack.push(frame),
        }
        // Every iteration tries one candidate or pops one frame; each
        // candidate is tried at most once per frame and frames are bounded
        // by the memo, the budget bounds the rest.
        while let Some(top) = stack.last_mut() {
            let Some(&index) = top.candidates.get(top.next) else {
                let frame = stack.pop().expect("the loop saw a top frame");
                self.undo_to(frame.entry_len);
                continue;
            };
            top.next += 1;
            let model = if top.next == top.candidates.len() {
                top.model.take()
            } else {
                top.model.clone()
            };
            let mut model = model.expect("only the last candidate takes the model");
            if !self.take_step() {
                return Verdict::Unknown;
            }
            let before = model.current_revision();
            if !self.apply_fits(&mut model, index) {
                continue;
            }
            let entry_len = self.path.len();
            self.include(index);
            let fresh_revision = model.current_revision() != before;
            // Reduction 7: after a guess about an unknown write, follow the
            // revisions it forces.
            if self.entries[index].role == Role::Optional && fresh_revision {
                match self.forced_run(&model) {
                    Some(true) => {}
                    Some(false) => {
                        self.undo_to(entry_len);
                        continue;
                    }
                    None => return Verdict::Unknown,
                }
            }
            match self.enter(model, entry_len, fresh_revision) {
                Enter::Linearized => return Verdict::Linearizable,
                Enter::OutOfBudget => return Verdict::Unknown,
                Enter::Dead => self.undo_to(entry_len),
                Enter::Branch(frame) => stack.push(frame),
            }
        }
        let misfit = self.misfit.as_ref().map(|(i, at)| (*i, at));
        Verdict::NotLinearizable(explain::explain(
            self.history,
            &self.entries,
            &self.best,
            misfit,
        ))
    }

    /// Applies write `index` to `model`; whether it fits there: a required
    /// one gets its observed answer (a pinned unknown one writes), an
    /// optional one changes something (reduction 4: one that changes
    /// nothing is never placed; a failed apply changes nothing, a successful
    /// one that took no revision wrote nothing, unless it compacted).
    fn apply_fits(&self, model: &mut Model, index: usize) -> bool {
        let Call::Write(req) = &self.history[index].call else {
            unreachable!("op {index}: only writes are applied")
        };
        let before = model.current_revision();
        let got = model.apply(req);
        let after = model.current_revision();
        let role = self.entries[index].role;
        let fits = match (role, &self.history[index].ret) {
            (Role::Required { checked: true, .. }, Return::Write(Ok(want))) => {
                got.as_ref() == Ok(want)
            }
            (Role::Required { checked: false, .. }, Return::Unknown | Return::Applied { .. }) => {
                got.is_ok() && after != before
            }
            (Role::Optional, _) => got.is_ok() && (after != before || takes_no_revision(req)),
            _ => unreachable!("op {index}: {role:?} is never applied"),
        };
        if fits {
            assert_pinned(index, role, before, after);
        }
        fits
    }

    /// Reduction 7: from `model`, just reached a new revision by placing
    /// an unknown write, runs forward through the revisions the pending
    /// required writes claim one by one (no other write may take them:
    /// that one would be dead), checking each write's answer and every read
    /// pinned at each revision, regardless of when they were called. A
    /// misfit refutes the guess at once, rather than when real time gets
    /// there. Stops at the next gap (no claimer), an ambiguous revision (two
    /// claimers), a claimer whose answer a compaction could change (a txn
    /// reading an old revision) or a revision where a lease grant is pinned. `Some(false)` = refuted, `None` = out of
    /// budget.
    fn forced_run(&mut self, model: &Model) -> Option<bool> {
        let mut ahead: Option<Model> = None;
        loop {
            let at = ahead.as_ref().unwrap_or(model);
            let revision = at.current_revision();
            let Some(&[index]) = self.claimers.get(&revision).map(Vec::as_slice) else {
                return Some(true);
            };
            if self.grants_at.contains(&revision) {
                // A grant may have to come first; the search will see.
                return Some(true);
            }
            if reads_old_revisions(&self.history[index].call) {
                return Some(true);
            }
            let mut next = at.clone();
            if !self.take_step() {
                return None;
            }
            if !self.apply_fits(&mut next, index) {
                self.note_misfit(index, at);
                return Some(false);
            }
            let reached = next.current_revision();
            for k in 0..self.reads_at.get(&reached).map_or(0, Vec::len) {
                let read = self.reads_at[&reached][k];
                if !self.take_step() {
                    return None;
                }
                if !self.matches_preserving(&next, read) {
                    self.note_misfit(read, &next);
                    return Some(false);
                }
            }
            ahead = Some(next);
        }
    }

    /// Enters the node reached with `model` after the operation that made
    /// `path.len() > entry_len`: places what reduction 2 allows, then checks
    /// for success, death and the memo, and lists the branch candidates.
    /// On `Dead` the caller undoes to `entry_len`.
    fn enter(&mut self, model: Model, entry_len: usize, fresh_revision: bool) -> Enter {
        let current = model.current_revision();
        self.note_best();
        // Reduction 6: the reads pinned at a revision see the same thing
        // wherever they are placed in it, so check them all as soon as it
        // is reached, called yet or not.
        let mut known_to_match = Vec::new();
        if fresh_revision {
            for k in 0..self.reads_at.get(&current).map_or(0, Vec::len) {
                let index = self.reads_at[&current][k];
                if !self.pending.contains(&self.pos[index]) {
                    continue;
                }
                if !self.take_step() {
                    return Enter::OutOfBudget;
                }
                if !self.matches_preserving(&model, index) {
                    self.note_misfit(index, &model);
                    return Enter::Dead;
                }
                known_to_match.push(index);
            }
        }
        let mut required = Vec::new();
        let mut optional = Vec::new();
        // One pass in call order: greedy placements only raise the bound,
        // and the state does not change, so nothing passed over needs a
        // second look.
        let mut cursor = 0;
        while let Some(&p) = self.pending.range(cursor..).next() {
            cursor = p + 1;
            let index = self.by_call[p];
            let entry = self.entries[index];
            if entry.call_at > self.bound() {
                break;
            }
            match entry.role {
                Role::Optional => optional.push(index),
                Role::Skipped => unreachable!("op {index}: skipped ops are never pending"),
                Role::Required { pre_revision, .. }
                    if pre_revision.is_some_and(|p| p != current) => {}
                Role::Required {
                    preserving: false, ..
                } => required.push(index),
                Role::Required {
                    preserving: true, ..
                } => {
                    if known_to_match.contains(&index) {
                        self.include(index);
                        continue;
                    }
                    if !self.take_step() {
                        return Enter::OutOfBudget;
                    }
                    if self.matches_preserving(&model, index) {
                        self.include(index);
                    }
                }
            }
        }
        if self.pending_returns.is_empty() {
            return Enter::Linearized;
        }
        self.note_best();
        let pre_min = self.pending_pre.first_key_value().map(|(&pre, _)| pre);
        if pre_min.is_some_and(|pre| pre < current) {
            return Enter::Dead;
        }
        if required.is_empty() && optional.is_empty() {
            return Enter::Dead;
        }
        if !self.seen.insert(self.placed ^ model.fingerprint()) {
            return Enter::Dead;
        }
        if pre_min == Some(current) {
            // Reduction 4: a pending operation must still be placed at this
            // revision, so an unknown write that writes now would kill it,
            // and one that does not is never placed; only a write that
            // changes state without a revision (compaction, lease grant,
            // a revoke of a lease without keys) may come.
            optional.retain(|&i| match &self.history[i].call {
                Call::Write(w) => takes_no_revision(w),
                Call::Range(_) => false,
            });
        }
        // Reduction 9: one per class of interchangeable unknown writes, the
        // earliest called (`optional` is in call order).
        let mut classes_seen = BTreeSet::new();
        optional.retain(|&i| classes_seen.insert(self.classes[i]));
        // Required first: in a legal history the acknowledged write pinned
        // here is almost always right. Optional ones most recent first: an
        // old unknown write still pending most likely never took effect.
        let mut candidates = required;
        candidates.extend(optional.iter().rev());
        if candidates.is_empty() {
            return Enter::Dead;
        }
        Enter::Branch(Frame {
            model: Some(model),
            candidates,
            next: 0,
            entry_len,
        })
    }

    /// Remembers that `index` did not fit `at` when that is the highest
    /// revision a misfit was met at (for the explanation).
    fn note_misfit(&mut self, index: usize, at: &Model) {
        let higher = self
            .misfit
            .as_ref()
            .is_none_or(|(_, seen)| at.current_revision() > seen.current_revision());
        if higher {
            self.misfit = Some((index, at.clone()));
        }
    }

    fn note_best(&mut self) {
        if self.path.len() > self.best.len() {
            self.best.clone_from(&self.path);
        }
    }

    /// Whether a state-preserving required operation gets its observed
    /// answer from `model`.
    fn matches_preserving(&self, model: &Model, index: usize) -> bool {
        let op = &self.history[index];
        let before = model.current_revision();
        let (matched, after) = match (&op.call, &op.ret) {
            (Call::Range(req), Return::Range(want)) => (&model.range(req) == want, before),
            (Call::Write(req), Return::Write(Ok(want))) => {
                let mut scratch = model.clone();
                let got = scratch.apply(req);
                (got.as_ref() == Ok(want), scratch.current_revision())
            }
            _ => unreachable!("op {index}: not a required operation"),
        };
        if matched {
            assert_pinned(index, self.entries[index].role, before, after);
            assert_eq!(
                before, after,
                "op {index}: answered as state-preserving but took a revision"
            );
        }
        matched
    }

    /// Earliest return among the pending required operations: operations
    /// called later cannot come next.
    fn bound(&self) -> u64 {
        self.pending_returns.first().map_or(u64::MAX, |&(at, _)| at)
    }

    fn take_step(&mut self) -> bool {
        if self.steps >= self.steps_max {
            return false;
        }
        self.steps += 1;
        true
    }

    /// Places `index` next.
    fn include(&mut self, index: usize) {
        let entry = self.entries[index];
        let removed = self.pending.remove(&self.pos[index]);
        assert!(removed, "op {index} placed twice");
        self.placed ^= self.zobrist[index];
        if let Role::Required { pre_revision, .. } = entry.role {
            self.pending_returns.remove(&(entry.return_at, index));
            if let Some(pre) = pre_revision {
                let count = self
                    .pending_pre
                    .get_mut(&pre)
                    .expect("a pending op's pre-revision is counted");
                *count -= 1;
                if *count == 0 {
                    self.pending_pre.remove(&pre);
                }
            }
        }
        self.path.push(index);
    }

    /// Takes back the placements after the first `len`.
    fn undo_to(&mut self, len: usize) {
        while self.path.len() > len {
            let index = self.path.pop().expect("longer than len");
            let entry = self.entries[index];
            self.pending.insert(self.pos[index]);
            self.placed ^= self.zobrist[index];
            if let Role::Required { pre_revision, .. } = entry.role {
                self.pending_returns.insert((entry.return_at, index));
                if let Some(pre) = pre_revision {
                    *self.pending_pre.entry(pre).or_insert(0) += 1;
                }
            }
        }
    }
}

/// Whether a matched `Ok` answer pins the model's revision as the checker
/// assumes (reduction 3). Checked on every match, so a model change that
/// broke the assumption would show up as a panic, not as a wrong verdict.
/// Writes that may change the state without taking a revision: a
/// compaction (the watermark), a lease grant or a revoke of a lease without
/// keys (the lease table).
fn takes_no_revision(w: &WriteRequest) -> bool {
    matches!(
        w,
        WriteRequest::Compaction(_) | WriteRequest::LeaseGrant(_) | WriteRequest::LeaseRevoke(_)
    )
}

fn assert_pinned(index: usize, role: Role, before: i64, after: i64) {
    if let Role::Required {
        pre_revision: Some(pre),
        ..
    } = role
    {
        assert_eq!(
            pre, before,
            "op {index}: matched at revision {before}, its answer pins {pre}"
        );
    }
    assert!(
        after >= before,
        "op {index}: the model's revision went back: {before} -> {after}"
    );
}

/// splitmix64: the Zobrist values (fixed seed, so runs are reproducible).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

//! Why a history is not linearizable, in a form a human can debug a seed
//! from: where the longest linearization the search found ends, and what the
//! model says to the operations that should have come next.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use t4_core::kv::{
    Compare, KeyValue, Op as TxnOp, OpResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp,
    TargetUnion, TxnRequest, WriteRequest, WriteResponse,
};
use t4_core::testkit::Model;
use t4_core::Error;

use super::classify::{Entry, Role};
use crate::history::{Call, Op, Return};

/// How many operations of the prefix's end [`Explanation`] renders.
const TAIL_MAX: usize = 8;
/// How many stuck operations [`Explanation`] details.
const STUCK_MAX: usize = 6;
/// Longest rendered request or answer, in characters.
const FIELD_CHARS_MAX: usize = 200;

/// Where the search got stuck. `Display` renders at most 35 lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// The longest linearizable prefix found: history indexes in
    /// linearization order (placed unknown writes included).
    pub prefix: Vec<usize>,
    /// Required operations in the history.
    pub required: usize,
    /// Required operations in `prefix`.
    pub required_placed: usize,
    /// The model's revision after `prefix`.
    pub revision: i64,
    /// The last operations of `prefix`, rendered, oldest first.
    pub prefix_tail: Vec<String>,
    /// Required operations that could have come next (called before any
    /// pending required operation returned) or whose answer pins a revision
    /// the prefix reached, misfits first, with the model's answer.
    pub stuck: Vec<Stuck>,
    /// How many more such operations `stuck` leaves out.
    pub stuck_more: usize,
    /// The operation that did not fit at the highest revision the search
    /// looked ahead to, past the prefix's end (see the search's reductions
    /// 6 and 7), if any: often the culprit when `stuck` shows none.
    pub misfit_ahead: Option<Stuck>,
    /// Unknown writes not in `prefix`.
    pub unknown_pending: usize,
}

/// A required operation beside what the model says to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stuck {
    /// Its history index.
    pub op: usize,
    /// Index, client, times and request.
    pub summary: String,
    /// The answer the client got.
    pub observed: String,
    /// The revision the model answered at: the revision its answer pins
    /// when the prefix went past it (the model as the prefix left that
    /// revision), else the prefix's end.
    pub at_revision: i64,
    /// The model's answer there.
    pub model: String,
    /// Whether that answer equals the observed one (then the operation fit,
    /// but the search found no way on after it).
    pub fits: bool,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "not linearizable: the longest linearization found places {} of {} required ops \
             and {} unknown writes, and ends at revision {}",
            self.required_placed,
            self.required,
            self.prefix.len() - self.required_placed,
            self.revision
        )?;
        if self.prefix_tail.len() < self.prefix.len() {
            writeln!(
                f,
                "its last {} ops (history indexes), oldest first:",
                self.prefix_tail.len()
            )?;
        } else {
            writeln!(f, "its ops (history indexes):")?;
        }
        for line in &self.prefix_tail {
            writeln!(f, "  {line}")?;
        }
        writeln!(
            f,
            "required ops that could come next or are pinned at or below rev {}, misfits first \
             ({} unknown writes never placed):",
            self.revision, self.unknown_pending
        )?;
        for s in &self.stuck {
            writeln!(f, "  {}", s.summary)?;
            writeln!(f, "    observed:        {}", s.observed)?;
            let model = if !s.fits {
                s.model.as_str()
            } else if s.at_revision < self.revision {
                "the same, but the prefix left this revision before the op could come"
            } else {
                "the same: it fits, but the search found no way on after it"
            };
            writeln!(f, "    model (rev {}): {model}", s.at_revision)?;
        }
        if self.stuck_more > 0 {
            writeln!(f, "  ... and {} more", self.stuck_more)?;
        }
        if let Some(s) = &self.misfit_ahead {
            if s.at_revision > self.revision {
                writeln!(
                    f,
                    "looking ahead, the highest revision where an op did not fit:"
                )?;
                writeln!(f, "  {}", s.summary)?;
                writeln!(f, "    observed:        {}", s.observed)?;
                writeln!(f, "    model (rev {}): {}", s.at_revision, s.model)?;
            }
        }
        Ok(())
    }
}

/// Builds the explanation for the longest prefix `best` the search found.
///
/// `misfit` is the highest-revision misfit the search met while looking
/// ahead of its placements (an operation and the state it was checked
/// against): with many unknown writes, the search may die well before the
/// revision of the operation that cannot fit, and this names it.
pub(super) fn explain(
    history: &[Op],
    entries: &[Entry],
    best: &[usize],
    misfit: Option<(usize, &Model)>,
) -> Explanation {
    let is_required = |i: usize| matches!(entries[i].role, Role::Required { .. });
    let mut placed = vec![false; history.len()];
    for &i in best {
        placed[i] = true;
    }
    let pending: Vec<usize> = (0..history.len())
        .filter(|&i| is_required(i) && !placed[i])
        .collect();
    let bound = pending
        .iter()
        .map(|&i| entries[i].return_at)
        .min()
        .unwrap_or(u64::MAX);
    // The operations that could come next, and the ones pinned at or below
    // the revision the prefix reached, whenever called: none can follow it.
    let reached = {
        let mut model = Model::new();
        for &i in best {
            if let Call::Write(req) = &history[i].call {
                let _ = model.apply(req);
            }
        }
        model.current_revision()
    };
    let mut next: Vec<usize> = pending
        .iter()
        .copied()
        .filter(|&i| {
            entries[i].call_at <= bound
                || matches!(entries[i].role, Role::Required { pre_revision: Some(pre), .. }
                    if pre <= reached)
        })
        .collect();
    next.sort_by_key(|&i| (entries[i].call_at, i));

    // Replay the prefix, keeping the model as it leaves each revision an
    // operation that could come next is pinned at.
    let pinned: BTreeSet<i64> = next
        .iter()
        .filter_map(|&i| match entries[i].role {
            Role::Required { pre_revision, .. } => pre_revision,
            Role::Optional | Role::Skipped => None,
        })
        .collect();
    let mut model = Model::new();
    let mut snapshots: BTreeMap<i64, Model> = BTreeMap::new();
    if pinned.contains(&model.current_revision()) {
        snapshots.insert(model.current_revision(), model.clone());
    }
    for &i in best {
        if let Call::Write(req) = &history[i].call {
            // Required writes matched here during the search; an unknown
            // write's answer is not checked.
            let _ = model.apply(req);
            if pinned.contains(&model.current_revision()) {
                snapshots.insert(model.current_revision(), model.clone());
            }
        }
    }

    let mut stuck: Vec<Stuck> = next
        .iter()
        .map(|&i| {
            let at = match entries[i].role {
                Role::Required {
                    pre_revision: Some(pre),
                    ..
                } => snapshots.get(&pre).unwrap_or(&model),
                _ => &model,
            };
            stuck_at(history, entries, i, at)
        })
        .collect();
    // Misfits first, those pinned above the prefix's revision (waiting for
    // it, rather than contradicting it) after the others; stable, so in
    // call order within each group.
    let waiting = |s: &Stuck| {
        matches!(entries[s.op].role, Role::Required { pre_revision: Some(pre), .. }
            if pre > reached)
    };
    stuck.sort_by_key(|s| (s.fits, waiting(s)));
    let stuck_more = stuck.len().saturating_sub(STUCK_MAX);
    stuck.truncate(STUCK_MAX);
    let tail_from = best.len().saturating_sub(TAIL_MAX);
    Explanation {
        prefix: best.to_vec(),
        required: (0..history.len()).filter(|&i| is_required(i)).count(),
        required_placed: best.iter().filter(|&&i| is_required(i)).count(),
        revision: model.current_revision(),
        prefix_tail: best[tail_from..]
            .iter()
            .map(|&i| {
                format!(
                    "{} -> {}",
                    summary(i, &history[i]),
                    clip(ret(&history[i].ret))
                )
            })
            .collect(),
        stuck,
        stuck_more,
        misfit_ahead: misfit.map(|(i, at)| stuck_at(history, entries, i, at)),
        unknown_pending: (0..history.len())
            .filter(|&i| entries[i].role == Role::Optional && !placed[i])
            .count(),
    }
}

/// Operation `i` against the model `at`.
fn stuck_at(history: &[Op], entries: &[Entry], i: usize, at: &Model) -> Stuck {
    let op = &history[i];
    let (answer, fits) = match (&op.call, &op.ret) {
        (Call::Range(req), Return::Range(want)) => {
            let got = at.range(req);
            (range_result(&got), &got == want)
        }
        (Call::Write(req), Return::Write(want)) => {
            let got = at.clone().apply(req);
            (write_result(&got), &got == want)
        }
        // An unknown write pinned by an answer: it must write.
        (Call::Write(req), Return::Unknown | Return::Applied { .. }) => {
            let mut after = at.clone();
            let got = after.apply(req);
            let wrote = after.current_revision() > at.current_revision();
            (write_result(&got), got.is_ok() && wrote)
        }
        _ => (String::from("-"), false),
    };
    Stuck {
        op: i,
        summary: summary(i, op),
        observed: match (op.ret == Return::Unknown, entries[i].role) {
            (
                true,
                Role::Required {
                    pre_revision: Some(pre),
                    ..
                },
            ) => format!("unknown, but an answer shows it wrote revision {}", pre + 1),
            _ => clip(ret(&op.ret)),
        },
        at_revision: at.current_revision(),
        model: clip(answer),
        fits,
    }
}

/// `#index c<client> [call..return] <request>`.
fn summary(index: usize, op: &Op) -> String {
    let returned = op
        .return_at
        .map_or_else(|| "?".to_owned(), |at| at.to_string());
    let call = match &op.call {
        Call::Range(r) => range_req(r),
        Call::Write(w) => write_req(w),
    };
    format!(
        "#{index} c{} [{}..{returned}] {}",
        op.client,
        op.call_at,
        clip(call)
    )
}

fn clip(mut s: String) -> String {
    if s.chars().count() > FIELD_CHARS_MAX {
        s = s.chars().take(FIELD_CHARS_MAX).collect();
        s.push('…');
    }
    s
}

fn bytes(b: &[u8]) -> String {
    let s = b.escape_ascii().to_string();
    if s.chars().count() > 24 {
        format!("\"{}…\"", s.chars().take(24).collect::<String>())
    } else {
        format!("\"{s}\"")
    }
}

fn keys(key: &[u8], range_end: &[u8]) -> String {
    if range_end.is_empty() {
        bytes(key)
    } else {
        format!("[{}, {})", bytes(key), bytes(range_end))
    }
}

fn kv(kv: &KeyValue) -> String {
    let lease = if kv.lease == 0 {
        String::new()
    } else {
        format!(" lease={}", kv.lease)
    };
    format!(
        "{}={} (c{} m{} v{}{lease})",
        bytes(&kv.key),
        bytes(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version
    )
}

fn kvs(kvs: &[KeyValue]) -> String {
    let mut out = String::from("[");
    for (n, one) in kvs.iter().enumerate() {
        if n == 4 {
            let _ = write!(out, ", +{}", kvs.len() - 4);
            break;
        }
        if n > 0 {
            out.push_str(", ");
        }
        out.push_str(&kv(one));
    }
    out.push(']');
    out
}

fn range_req(r: &RangeRequest) -> String {
    let mut out = format!("range {}", keys(&r.key, &r.range_end));
    for (name, value) in [
        ("rev", r.revision),
        ("limit", r.limit),
        ("sort_order", i64::from(r.sort_order)),
        ("sort_target", i64::from(r.sort_target)),
        ("min_mod", r.min_mod_revision),
        ("max_mod", r.max_mod_revision),
        ("min_create", r.min_create_revision),
        ("max_create", r.max_create_revision),
    ] {
        if value != 0 {
            let _ = write!(out, " {name}={value}");
        }
    }
    for (name, on) in [
        ("count_only", r.count_only),
        ("keys_only", r.keys_only),
        ("serializable", r.serializable),
    ] {
        if on {
            let _ = write!(out, " {name}");
        }
    }
    out
}

fn range_resp(r: &RangeResponse) -> String {
    format!(
        "rev={} count={} more={} kvs={}",
        r.revision,
        r.count,
        r.more,
        kvs(&r.kvs)
    )
}

fn write_req(w: &WriteRequest) -> String {
    match w {
        WriteRequest::Put(p) => {
            let mut out = format!("put {}={}", bytes(&p.key), bytes(&p.value));
            for (name, on) in [
                ("prev_kv", p.prev_kv),
                ("ignore_value", p.ignore_value),
                ("ignore_lease", p.ignore_lease),
            ] {
                if on {
                    let _ = write!(out, " {name}");
                }
            }
            if p.lease != 0 {
                let _ = write!(out, " lease={}", p.lease);
            }
            out
        }
        WriteRequest::DeleteRange(d) => format!(
            "delete {}{}",
            keys(&d.key, &d.range_end),
            if d.prev_kv { " prev_kv" } else { "" }
        ),
        WriteRequest::Txn(t) => txn_req(t),
        WriteRequest::Compaction(c) => format!("compact {}", c.revision),
        other => format!("{other:?}"),
    }
}

fn txn_req(t: &TxnRequest) -> String {
    let compares: Vec<String> = t.compare.iter().map(compare).collect();
    let branch = |ops: &[RequestOp]| -> String {
        let ops: Vec<String> = ops
            .iter()
            .map(|op| match &op.op {
                Some(TxnOp::Range(r)) => range_req(r),
                Some(TxnOp::Put(p)) => write_req(&WriteRequest::Put(p.clone())),
                Some(TxnOp::DeleteRange(d)) => write_req(&WriteRequest::DeleteRange(d.clone())),
                Some(TxnOp::Txn(n)) => txn_req(n),
                None => "empty".to_owned(),
            })
            .collect();
        ops.join("; ")
    };
    format!(
        "txn if [{}] then [{}] else [{}]",
        compares.join(" && "),
        branch(&t.success),
        branch(&t.failure)
    )
}

fn compare(c: &Compare) -> String {
    let target = ["version", "create", "mod", "value", "lease"]
        .get(usize::try_from(c.target).unwrap_or(usize::MAX))
        .copied()
        .unwrap_or("?");
    let op = ["==", ">", "<", "!="]
        .get(usize::try_from(c.result).unwrap_or(usize::MAX))
        .copied()
        .unwrap_or("?");
    let operand = match &c.target_union {
        Some(
            TargetUnion::Version(v)
            | TargetUnion::CreateRevision(v)
            | TargetUnion::ModRevision(v)
            | TargetUnion::Lease(v),
        ) => v.to_string(),
        Some(TargetUnion::Value(v)) => bytes(v),
        None => "unset".to_owned(),
    };
    format!("{target}({}) {op} {operand}", keys(&c.key, &c.range_end))
}

fn write_resp(w: &WriteResponse) -> String {
    match w {
        WriteResponse::Put(p) => format!(
            "rev={} prev={}",
            p.revision,
            p.prev_kv.as_ref().map_or_else(|| "none".to_owned(), kv)
        ),
        WriteResponse::DeleteRange(d) => format!(
            "rev={} deleted={} prev={}",
            d.revision,
            d.deleted,
            kvs(&d.prev_kvs)
        ),
        WriteResponse::Txn(t) => {
            let responses: Vec<String> = t
                .responses
                .iter()
                .map(|ResponseOp { response }| match response {
                    Some(OpResponse::Range(r)) => range_resp(r),
                    Some(OpResponse::Put(p)) => write_resp(&WriteResponse::Put(p.clone())),
                    Some(OpResponse::DeleteRange(d)) => {
                        write_resp(&WriteResponse::DeleteRange(d.clone()))
                    }
                    Some(OpResponse::Txn(n)) => write_resp(&WriteResponse::Txn(n.clone())),
                    None => "empty".to_owned(),
                })
                .collect();
            format!(
                "rev={} succeeded={} [{}]",
                t.revision,
                t.succeeded,
                responses.join("; ")
            )
        }
        WriteResponse::Compaction(c) => format!("rev={}", c.revision),
        other => format!("{other:?}"),
    }
}

fn range_result(r: &Result<RangeResponse, Error>) -> String {
    match r {
        Ok(r) => format!("Ok {}", range_resp(r)),
        Err(e) => format!("Err({e})"),
    }
}

fn write_result(r: &Result<WriteResponse, Error>) -> String {
    match r {
        Ok(w) => format!("Ok {}", write_resp(w)),
        Err(e) => format!("Err({e})"),
    }
}

fn ret(r: &Return) -> String {
    match r {
        Return::Range(r) => range_result(r),
        Return::Write(w) => write_result(w),
        Return::Unknown => "unknown".to_owned(),
        Return::Applied { revision } => {
            format!("unknown; the final log shows it wrote revision {revision}")
        }
    }
}

//! Reading the segments on open: the file side of `t4_core::wal::ReplayPlanner`.
//!
//! Core decides (decode, the order across segments, torn tail or padding or
//! corruption, `Behind`); this reads the files one at a time (so only one
//! segment's bytes are in memory at once), names the file in errors, and
//! performs the planned cuts with the logging an operator needs.

use std::fs;
use std::path::Path;

use t4_core::wal::{Cut, CutKind, ReplayError, ReplayPlan, ReplayPlanner, SegmentImage};
use t4_core::Index;

use super::error::WalError;
use super::files::{io_error, truncate, SegmentFile};

/// Reads `segments` (oldest first, in `dir`) and plans the replay of the
/// entries at or after `from` (`t4_core::wal::plan_replay`'s rules). Then
/// performs the plan's cuts, each truncated and fsynced: padding quietly, a
/// torn tail with a warning naming the file and offset. On an error nothing
/// is cut.
pub(super) fn read_segments(
    dir: &Path,
    segments: &[SegmentFile],
    from: Index,
) -> Result<ReplayPlan, WalError> {
    let to_wal_error = |error: ReplayError| match error {
        ReplayError::Corrupt {
            segment,
            offset,
            reason,
        } => WalError::Corrupt {
            path: segments[segment].path.clone(),
            offset,
            reason,
        },
        ReplayError::Behind { from, first } => WalError::Behind {
            dir: dir.to_path_buf(),
            from,
            first,
        },
    };
    let mut planner = ReplayPlanner::new(from, segments.len());
    for segment in segments {
        let bytes = fs::read(&segment.path).map_err(io_error(&segment.path))?;
        let image = SegmentImage {
            first_index: segment.first_index,
            bytes: &bytes,
        };
        planner = planner.push(image).map_err(to_wal_error)?;
    }
    let plan = planner.finish().map_err(to_wal_error)?;
    for cut in &plan.cuts {
        perform_cut(&segments[cut.segment], cut)?;
    }
    Ok(plan)
}

fn perform_cut(segment: &SegmentFile, cut: &Cut) -> Result<(), WalError> {
    let path = &segment.path;
    match &cut.kind {
        CutKind::Padding => tracing::debug!(
            file = %path.display(),
            offset = cut.offset,
            "WAL: cutting preallocated zero bytes"
        ),
        CutKind::TornTail {
            reason,
            dropped_bytes,
        } => tracing::warn!(
            file = %path.display(),
            offset = cut.offset,
            dropped_bytes = *dropped_bytes,
            reason = %reason,
            "WAL: truncating the torn tail of the last segment (a write that never completed, so never acknowledged)"
        ),
    }
    truncate(path, cut.offset)
}

//! The WAL on the fake disk: the same segment format and the same replay
//! decisions as io-real's (`t4_core::wal::plan_replay`), with the file
//! handling of the fake [`Disk`].
//!
//! Segments are files `wal/<first index, 20 digits>.wal`: a header, then
//! frames. A new segment is created durably with its header when the current
//! one has reached the size limit (after sealing it with an fsync), or on the
//! first append. On open, the plan's cuts (torn tail, zero padding) are
//! applied to the files and the entries from `from` on are returned for
//! replay. [`SimWal::truncate_after`] drops a conflicting tail (cluster
//! mode) with io-real's steps.
//!
//! The WAL also keeps the run's [`Ledger`]: every entry that became durable,
//! reconciled with what recovery finds after each restart. It is the truth
//! the checkers compare the clients' observations with.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use madsim::time::Instant;
use t4_core::log::Entry;
use t4_core::wal::{
    decode_segment, encode_entries, plan_replay, CutKind, ReplayPlan, SegmentHeader, SegmentImage,
    FRAME_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use t4_core::{Index, Term};

use crate::disk::Disk;

/// Every log entry known durable, by index: what the node's log holds (the
/// engine's applied part included) as far as the disk can tell, with the
/// simulated time it became durable (an entry is applied right after).
///
/// What a [`Ledger::clear`] forgot stays readable ([`Ledger::ever_with_time`]):
/// an entry durable once was there, whatever happened to the disk later
/// (the lease check asks when each revoke first became durable).
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    entries: Arc<Mutex<BTreeMap<u64, (Entry, Instant)>>>,
    forgotten: Arc<Mutex<Vec<(Entry, Instant)>>>,
}

impl Ledger {
    /// An empty ledger.
    #[must_use]
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// The entries in index order.
    #[must_use]
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().values().map(|(e, _)| e.clone()).collect()
    }

    /// The entries in index order, with the time each became durable.
    #[must_use]
    pub fn entries_with_time(&self) -> Vec<(Entry, Instant)> {
        self.lock().values().cloned().collect()
    }

    /// Every entry this ledger ever held (those a [`Ledger::clear`] forgot
    /// first), with the time each became durable; an index may repeat.
    #[must_use]
    pub fn ever_with_time(&self) -> Vec<(Entry, Instant)> {
        let mut ever = self.forgotten.lock().expect("ledger lock poisoned").clone();
        ever.extend(self.entries_with_time());
        ever
    }

    /// Forgets everything (the disk was lost, or the log put aside).
    pub fn clear(&self) {
        let gone = std::mem::take(&mut *self.lock());
        self.forgotten
            .lock()
            .expect("ledger lock poisoned")
            .extend(gone.into_values());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, (Entry, Instant)>> {
        self.entries.lock().expect("ledger lock poisoned")
    }

    /// Recovery found `replayed` from `from` on and nothing after them.
    fn recovered(&self, from: Index, replayed: &[Entry]) {
        let now = Instant::now();
        let mut entries = self.lock();
        let after = entries.split_off(&from.0);
        for e in replayed {
            // Keep the original time of an entry that was durable before.
            let at = after
                .get(&e.index)
                .filter(|(old, _)| old == e)
                .map_or(now, |(_, at)| *at);
            entries.insert(e.index, (e.clone(), at));
        }
    }

    fn synced(&self, batch: Vec<Entry>) {
        let now = Instant::now();
        let mut entries = self.lock();
        for e in batch {
            entries.insert(e.index, (e, now));
        }
    }
}

/// A WAL failure (the node treats every one as fatal for the write path).
pub type WalError = String;

/// The WAL of one node on its fake disk.
#[derive(Debug)]
pub struct SimWal {
    disk: Disk,
    ledger: Ledger,
    segment_bytes_max: usize,
    /// Segments, oldest first: (first index, file name).
    segments: VecDeque<(Index, String)>,
    /// Bytes in the newest segment.
    current_len: usize,
    /// `false` until an append creates a segment (also after a stale open).
    has_current: bool,
    /// Every segment lies below the index the WAL was opened from: the
    /// next append removes them first (kept until then for
    /// [`SimWal::read_range`]).
    stale: bool,
    next_index: Index,
    term: Term,
    /// Appended, not yet synced (moved to the ledger by a sync).
    unsynced: Vec<Entry>,
    /// A failed append or sync: the WAL refuses everything after it.
    poisoned: Option<String>,
}

const DIR: &str = "wal/";

/// The segment files on `disk` (first index, name), oldest first, and the
/// replay plan from `from` over them.
fn read_plan(disk: &Disk, from: Index) -> Result<(Vec<(Index, String)>, ReplayPlan), WalError> {
    let mut names = Vec::new();
    for name in disk.list() {
        let Some(first) = name
            .strip_prefix(DIR)
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        names.push((Index(first), name));
    }
    let contents: Vec<Vec<u8>> = names
        .iter()
        .map(|(_, name)| disk.read(name).expect("listed file exists"))
        .collect();
    let images: Vec<SegmentImage<'_>> = names
        .iter()
        .zip(&contents)
        .map(|((first, _), bytes)| SegmentImage {
            first_index: *first,
            bytes,
        })
        .collect();
    let plan = plan_replay(&images, from).map_err(|e| format!("WAL replay refused: {e:?}"))?;
    Ok((names, plan))
}

fn segment_name(first: Index) -> String {
    format!("{DIR}{:020}.wal", first.0)
}

impl SimWal {
    /// Opens the WAL on `disk`, applies the replay plan's cuts and returns
    /// the entries from `from` on.
    ///
    /// # Errors
    /// Corruption or a hole, as the replay plan says; the node must refuse
    /// to start.
    pub fn open(
        disk: &Disk,
        ledger: &Ledger,
        from: Index,
        term: Term,
        segment_bytes_max: usize,
    ) -> Result<(SimWal, Vec<Entry>), WalError> {
        let (names, plan) = read_plan(disk, from)?;
        for cut in &plan.cuts {
            let name = &names[cut.segment].1;
            if let CutKind::TornTail { reason, .. } = &cut.kind {
                tracing::info!(
                    file = name,
                    offset = cut.offset,
                    reason,
                    "sim WAL: cutting a torn tail"
                );
            }
            let len = usize::try_from(cut.offset).expect("offset within a file");
            disk.truncate(name, len).map_err(|e| e.to_string())?;
        }
        let mut wal = SimWal {
            disk: disk.clone(),
            ledger: ledger.clone(),
            segment_bytes_max,
            segments: names.into(),
            current_len: usize::try_from(plan.last_len).expect("segment length"),
            has_current: false,
            stale: false,
            next_index: from,
            term,
            unsynced: Vec::new(),
            poisoned: None,
        };
        match plan.next {
            Some(next) if next >= from => {
                wal.has_current = true;
                wal.next_index = next;
            }
            Some(_) => {
                // Everything on disk is below `from`, already in the engine:
                // the next append starts afresh so that its segment does not
                // leave a hole after the old ones.
                wal.stale = true;
            }
            None => {}
        }
        ledger.recovered(from, &plan.entries);
        Ok((wal, plan.entries))
    }

    /// What the WAL on `disk` holds, without changing a file: its last
    /// index and the term of its entry `at` (`None` if it does not hold
    /// it). For a start-over deciding what of the log it keeps
    /// ([`t4_core::cluster::start_over_keeps`]).
    ///
    /// # Errors
    /// The replay plan refuses the files (corruption, a hole, `at` below
    /// the oldest segment).
    pub fn peek(disk: &Disk, at: Index) -> Result<(Index, Option<Term>), WalError> {
        let (_, plan) = read_plan(disk, at)?;
        let last = plan.next.map_or(Index(0), |n| Index(n.0 - 1));
        let term = plan
            .entries
            .first()
            .filter(|e| e.index_id() == at)
            .map(Entry::term_id);
        Ok((last, term))
    }

    /// Appends a batch (not durable until [`SimWal::sync`]).
    ///
    /// # Errors
    /// A disk error; the WAL is poisoned.
    ///
    /// # Panics
    /// The batch does not continue the log.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        self.check_usable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        assert_eq!(
            first.index, self.next_index.0,
            "WAL append must continue the log"
        );
        if self.stale {
            for (_, name) in self.segments.drain(..) {
                self.disk.remove(&name);
            }
            self.stale = false;
        }
        if !self.has_current || self.current_len >= self.segment_bytes_max {
            self.start_segment(first.index_id())?;
        }
        let mut buf = Vec::new();
        encode_entries(entries, &mut buf);
        let name = &self.segments.back().expect("a current segment").1;
        if let Err(e) = self.disk.append(name, &buf) {
            self.poisoned = Some(e.to_string());
            return Err(e.to_string());
        }
        self.current_len += buf.len();
        self.next_index = Index(self.next_index.0 + entries.len() as u64);
        self.unsynced.extend_from_slice(entries);
        Ok(())
    }

    /// Makes every appended entry durable.
    ///
    /// # Errors
    /// A disk error; the WAL is poisoned and what was appended is in doubt.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        if self.unsynced.is_empty() {
            return Ok(());
        }
        self.sync_current()
    }

    /// fsyncs the newest segment; what was appended joins the ledger. A
    /// failure poisons the WAL.
    fn sync_current(&mut self) -> Result<(), WalError> {
        let name = &self.segments.back().expect("a current segment").1;
        if let Err(e) = self.disk.sync(name) {
            self.poisoned = Some(e.to_string());
            return Err(e.to_string());
        }
        self.ledger.synced(std::mem::take(&mut self.unsynced));
        Ok(())
    }

    /// Removes the segments whose entries are all below `index`.
    pub fn remove_segments_before(&mut self, index: Index) -> usize {
        let mut removed = 0;
        while self.segments.len() >= 2 && self.segments[1].0 <= index {
            let (_, name) = self.segments.pop_front().expect("len >= 2");
            self.disk.remove(&name);
            removed += 1;
        }
        removed
    }

    /// Deletes every segment; the next append starts a segment at `next`
    /// with `term` in its header (bucket mode: the log was rebuilt from the
    /// bucket and the engine persisted through `next - 1`). Ledger entries
    /// from `next` on (a local tail the bucket overruled) are forgotten.
    ///
    /// # Errors
    /// The WAL is poisoned.
    pub fn reset(&mut self, next: Index, term: Term) -> Result<(), WalError> {
        self.check_usable()?;
        for (_, name) in self.segments.drain(..) {
            self.disk.remove(&name);
        }
        self.has_current = false;
        self.stale = false;
        self.current_len = 0;
        self.next_index = next;
        self.term = term;
        self.unsynced.clear();
        self.ledger.lock().split_off(&next.0);
        Ok(())
    }

    /// Removes every entry after `index`, durably (io-real's
    /// `Wal::truncate_after`, with the same steps on the fake disk): in
    /// cluster mode, a follower drops a tail that conflicts with the
    /// leader's. Afterwards [`SimWal::last_index`] is `index` and the next
    /// append starts at `index + 1`, with any term (the appends carry no
    /// term check; replay checks only that terms do not fall along what is
    /// kept plus what follows).
    ///
    /// The steps, in io-real's order: read the segment holding `index` and
    /// find where that entry's frame ends (nothing changed yet); remove
    /// every newer segment, newest first; cut the kept segment there and
    /// fsync it, which makes the kept entries durable too, as io-real's
    /// fsync of the cut file does. [`Disk::remove`] and [`Disk::truncate`]
    /// are durable at once, so a crash after this returns keeps the
    /// truncation; the fsync can fail like any other (injected fault).
    /// The ledger forgets the entries removed: it holds what the log holds.
    ///
    /// `index >= last_index()` does nothing. `index` may be one below the
    /// oldest index the WAL holds: every segment is then removed.
    ///
    /// # Errors
    /// Entries between `index` and the oldest the WAL holds were trimmed,
    /// or the segment to read does not decode (nothing changed in either
    /// case); a failed fsync or a vanished file (the WAL is poisoned); an
    /// earlier failure.
    pub fn truncate_after(&mut self, index: Index) -> Result<(), WalError> {
        self.check_usable()?;
        if index >= self.last_index() {
            return Ok(());
        }
        let first = match self.segments.front() {
            Some((oldest, _)) if !self.stale => *oldest,
            _ => self.next_index,
        };
        if index.0 + 1 < first.0 {
            return Err(format!(
                "cannot truncate the WAL after index {index}: it holds nothing below index {first} \
                 (entries trimmed once applied cannot be removed)"
            ));
        }
        assert!(
            !self.stale && !self.segments.is_empty(),
            "WAL truncate after {index}: a WAL without live segments has no entry to remove"
        );
        // The segment holding `index`; None when `index` is one below the oldest.
        let kept = self.segments.iter().rposition(|(f, _)| *f <= index);
        let cut = kept
            .map(|position| self.find_end_of(position, index))
            .transpose()?;

        let keep_count = kept.map_or(0, |position| position + 1);
        while self.segments.len() > keep_count {
            let (_, name) = self.segments.pop_back().expect("len > keep_count >= 0");
            self.disk.remove(&name);
        }
        self.has_current = false;
        self.current_len = 0;
        self.next_index = Index(index.0 + 1);
        self.unsynced.retain(|e| e.index <= index.0);
        self.ledger.lock().split_off(&(index.0 + 1));
        if let Some(offset) = cut {
            let name = self.segments.back().expect("the kept segment").1.clone();
            if let Err(e) = self.disk.truncate(&name, offset) {
                self.poisoned = Some(e.to_string());
                return Err(e.to_string());
            }
            self.has_current = true;
            self.current_len = offset;
            self.sync_current()?;
        }
        assert!(
            self.unsynced.is_empty(),
            "WAL truncate: the kept entries are durable"
        );
        assert_eq!(
            self.last_index(),
            index,
            "WAL truncate: the log must end at the index asked for"
        );
        Ok(())
    }

    /// Reads the segment at `position` (which holds `index`) and returns the
    /// byte offset where the frame of `index` ends. Changes nothing.
    ///
    /// Walks the frames' length fields, which the decoder just checked,
    /// rather than re-encoding the entries (whose encoding could differ
    /// from the bytes on disk); io-real's `wal/truncate.rs` does the same.
    fn find_end_of(&self, position: usize, index: Index) -> Result<usize, WalError> {
        let (first, name) = &self.segments[position];
        let bytes = self
            .disk
            .read(name)
            .ok_or_else(|| format!("{name} is gone"))?;
        let is_last = position + 1 == self.segments.len();
        let decoded = decode_segment(&bytes, is_last)
            .map_err(|e| format!("{name} at byte {}: {}", e.offset(), e.reason()))?;
        let decoded_end = decoded.torn_tail.as_ref().map_or(bytes.len(), |t| {
            usize::try_from(t.offset).expect("offset within a file")
        });
        let keep = usize::try_from(index.0 - first.0 + 1).expect("entries in a segment");
        if decoded.entries.len() < keep {
            return Err(format!(
                "{name} ends at index {} but the log says it holds index {index}",
                first.0 + decoded.entries.len() as u64 - 1
            ));
        }
        let mut end = SEGMENT_HEADER_BYTES;
        let mut cut = SEGMENT_HEADER_BYTES;
        for i in 0..decoded.entries.len() {
            let len_bytes: [u8; 4] = bytes[end..end + 4]
                .try_into()
                .expect("a decoded frame has a whole length field");
            end += FRAME_HEADER_BYTES + u32::from_le_bytes(len_bytes) as usize;
            if i + 1 == keep {
                cut = end;
            }
        }
        assert_eq!(
            end, decoded_end,
            "WAL truncate: walking the frames of {name} must end where decoding did"
        );
        Ok(cut)
    }

    /// Index of the last entry: the next append must start at
    /// `last_index() + 1`. When the WAL held nothing at or after `from` on
    /// open, this is `from - 1`.
    #[must_use]
    pub fn last_index(&self) -> Index {
        Index(self.next_index.0 - 1)
    }

    /// The entries `from..=through`, read back from the segment files (a
    /// start-up with asynchronous upload: applied entries the bucket lacks).
    ///
    /// # Errors
    /// The segments do not hold them all, or one does not decode.
    pub fn read_range(&self, from: Index, through: Index) -> Result<Vec<Entry>, WalError> {
        let count = self.segments.len();
        let mut entries: Vec<Entry> = Vec::new();
        for (i, (first, name)) in self.segments.iter().enumerate() {
            let next_first = self.segments.get(i + 1).map(|(f, _)| *f);
            if next_first.is_some_and(|n| n <= from) {
                continue;
            }
            if *first > through {
                break;
            }
            let bytes = self
                .disk
                .read(name)
                .ok_or_else(|| format!("{name} is gone"))?;
            let decoded = decode_segment(&bytes, i + 1 == count)
                .map_err(|e| format!("{name} at byte {}: {}", e.offset(), e.reason()))?;
            entries.extend(
                decoded
                    .entries
                    .into_iter()
                    .filter(|e| (from.0..=through.0).contains(&e.index)),
            );
        }
        let held = entries.first().map(|e| e.index) == Some(from.0)
            && entries.last().map(|e| e.index) == Some(through.0)
            && entries.len() as u64 == through.0 - from.0 + 1;
        if !held {
            return Err(format!(
                "the WAL does not hold entries {from}..={through} ({} of them found)",
                entries.len()
            ));
        }
        Ok(entries)
    }

    /// Number of segment files.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn check_usable(&self) -> Result<(), WalError> {
        match &self.poisoned {
            Some(why) => Err(format!("WAL unusable after an earlier failure: {why}")),
            None => Ok(()),
        }
    }

    /// Seals the current segment (fsync) and creates the next one durably.
    fn start_segment(&mut self, first: Index) -> Result<(), WalError> {
        if self.has_current {
            self.sync_current()?;
        }
        let name = segment_name(first);
        let header = SegmentHeader {
            term: self.term,
            first_index: first,
        };
        self.disk.create_durable(&name, header.encode().to_vec());
        self.segments.push_back((first, name));
        self.current_len = header.encode().len();
        self.has_current = true;
        Ok(())
    }
}

//! The hard state on the fake disk: io-real's `hard_state` module (a few
//! bytes a node must not forget across a crash, opaque to the driver) with
//! the same steps, made of the [`Disk`]'s primitives so that its faults
//! apply:
//!
//! 1. create `hard_state.tmp` empty, then append the bytes (an injected
//!    write error fails here);
//! 2. fsync it (an injected fsync error fails here: the bytes are in doubt);
//! 3. rename it over `hard_state` ([`Disk::rename`] is durable at once, as
//!    io-real's rename followed by a directory fsync is).
//!
//! A failure before the rename leaves the previous hard state in place and
//! a `hard_state.tmp` behind, which [`load`] removes and ignores. Once
//! [`save`] returns, a [`Disk::crash`] keeps the new bytes (the rename
//! carries their durable length); [`Disk::lose`] forgets them with
//! everything else.
//!
//! Unlike io-real's file, the bytes are stored without a magic and CRC: the
//! fake disk flips no bits, so there is no damage for them to catch.

use crate::disk::{Disk, DiskError};

/// The file holding the hard state.
pub const FILE_NAME: &str = "hard_state";
/// Where [`save`] writes before renaming over [`FILE_NAME`].
const TEMP_NAME: &str = "hard_state.tmp";

/// Replaces the hard state with `bytes`, durably: once this returns, a
/// crash keeps them.
///
/// # Errors
/// An injected write or fsync error; the previous hard state is then still
/// the one [`load`] returns, before and after a crash.
pub fn save(disk: &Disk, bytes: &[u8]) -> Result<(), DiskError> {
    disk.create_durable(TEMP_NAME, Vec::new());
    disk.append(TEMP_NAME, bytes)?;
    disk.sync(TEMP_NAME)?;
    disk.rename(TEMP_NAME, FILE_NAME);
    Ok(())
}

/// The hard state last saved, or `None` if none was (or the disk was lost
/// since). Removes a leftover `hard_state.tmp` (a save that failed).
#[must_use]
pub fn load(disk: &Disk) -> Option<Vec<u8>> {
    if disk.read(TEMP_NAME).is_some() {
        tracing::info!(file = TEMP_NAME, "removing an unfinished hard-state save");
        disk.remove(TEMP_NAME);
    }
    disk.read(FILE_NAME)
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use madsim::runtime::Runtime;

    use super::*;
    use crate::disk::DiskFaults;

    /// `Disk::crash` draws from madsim's RNG, which needs a runtime.
    fn sim<F: Future>(test: impl FnOnce() -> F) -> F::Output {
        Runtime::with_seed_and_config(7, madsim::Config::default()).block_on(test())
    }

    /// Nothing saved: `load` says so.
    #[test]
    fn load_without_a_save_is_none() {
        assert_eq!(load(&Disk::new()), None);
    }

    /// What `save` wrote comes back, a second save replaces it whole, and no
    /// temporary file is left behind.
    #[test]
    fn save_then_overwrite_round_trips() {
        let disk = Disk::new();
        save(&disk, b"term 7, voted for node 2").expect("no faults");
        assert_eq!(
            load(&disk).as_deref(),
            Some(&b"term 7, voted for node 2"[..])
        );
        save(&disk, b"term 9").expect("no faults");
        assert_eq!(load(&disk).as_deref(), Some(&b"term 9"[..]));
        save(&disk, b"").expect("no faults");
        assert_eq!(
            load(&disk).as_deref(),
            Some(&b""[..]),
            "an empty hard state is a saved one, not None"
        );
        assert_eq!(disk.list(), [FILE_NAME]);
    }

    /// Once `save` returns, a crash keeps the bytes, even with torn writes
    /// on (nothing of them is pending).
    #[test]
    fn saved_state_survives_a_crash() {
        sim(|| async {
            let disk = Disk::new();
            disk.set_faults(DiskFaults {
                torn_writes: true,
                ..DiskFaults::default()
            });
            save(&disk, b"term 3").expect("no faults");
            disk.crash();
            assert_eq!(load(&disk).as_deref(), Some(&b"term 3"[..]));
            save(&disk, b"term 4").expect("no faults");
            disk.crash();
            assert_eq!(load(&disk).as_deref(), Some(&b"term 4"[..]));
        });
    }

    /// A lost disk forgets the hard state with everything else.
    #[test]
    fn lost_disk_forgets_it() {
        let disk = Disk::new();
        save(&disk, b"term 3").expect("no faults");
        disk.lose();
        assert_eq!(load(&disk), None);
    }

    /// A save that fails (injected fsync or write error) leaves the previous
    /// hard state, before and after a crash, and its leftover temporary
    /// file is removed by `load`.
    #[test]
    fn failed_save_keeps_the_previous_state() {
        sim(|| async {
            let disk = Disk::new();
            save(&disk, b"term 3").expect("no faults");
            for faults in [
                DiskFaults {
                    fsync_error_rate: 1.0,
                    ..DiskFaults::default()
                },
                DiskFaults {
                    write_error_rate: 1.0,
                    ..DiskFaults::default()
                },
            ] {
                disk.set_faults(faults.clone());
                save(&disk, b"term 4").expect_err("injected fault");
                disk.set_faults(DiskFaults::default());
                assert!(
                    disk.list().iter().any(|n| n == TEMP_NAME),
                    "{faults:?}: the unfinished save is left behind"
                );
                assert_eq!(load(&disk).as_deref(), Some(&b"term 3"[..]), "{faults:?}");
                assert_eq!(disk.list(), [FILE_NAME], "{faults:?}: load removed it");
                disk.crash();
                assert_eq!(load(&disk).as_deref(), Some(&b"term 3"[..]), "{faults:?}");
            }
        });
    }
}

//! What t4 keeps in a bucket (ARCHITECTURE §3.10), and the pure decisions
//! about it: key names, the WAL object codec, the leader lock, checkpoint
//! manifests, recovery and GC plans.
//!
//! ```text
//! <prefix>/leader-lock                                   election lock (JSON)
//! <prefix>/wal/<first index, 20 digits>                  WAL object: a batch or a sealed segment
//! <prefix>/checkpoint/<term, 10 digits>/<index, 20 digits>/manifest.json
//! <prefix>/checkpoint/<term>/<index>/<engine meta files>
//! <prefix>/sst/<sha256, first 16 hex>/<name>.sst          content-addressed SSTs
//! <prefix>/manifest/latest                               newest checkpoint (If-Match, never backwards)
//! <prefix>/branches/<id>                                 branch registration (pins a checkpoint)
//! ```
//!
//! Keys here are relative to the store's root prefix; the store joins them.
//! Zero-padded numbers make a listing come back in log order.

pub mod branch;
pub mod checkpoint;
pub mod gc;
pub mod gc_run;
pub mod layout;
pub mod lock;
pub mod manifest;
pub mod recovery;
pub mod wal_object;

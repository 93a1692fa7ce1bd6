//! Test support shared across crates (feature `testkit`): the reference MVCC
//! model, a harness that runs a store and the model side by side, a seeded
//! request generator, the engine conformance suite and the object-store
//! conformance suite.
//!
//! An engine implementation proves itself with one call:
//!
//! ```ignore
//! t4_core::testkit::run_conformance(|| RocksEngine::open_temp());
//! ```

mod conformance;
pub mod gen;
mod harness;
mod model;
mod object_conformance;
pub mod req;

pub use conformance::{run_conformance, run_random, SEEDS, STEPS};
pub use harness::Harness;
pub use model::Model;
pub use object_conformance::{object_conformance, RACERS};

#[cfg(test)]
mod tests {
    use crate::engine::MemEngine;

    /// MemEngine passes the conformance suite.
    #[test]
    fn mem_engine_conforms() {
        super::run_conformance(MemEngine::new);
    }

    /// MemBucket passes the object-store conformance suite.
    #[test]
    fn mem_bucket_conforms() {
        let bucket = std::cell::RefCell::new(crate::object::MemBucket::new());
        futures::executor::block_on(super::object_conformance(|op| {
            std::future::ready(bucket.borrow_mut().execute(op))
        }));
    }
}

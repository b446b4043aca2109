//! The check every fuzz target runs. It lives in `tests/fuzz_corpus.rs`, which
//! replays the checked-in corpus with `cargo test`; including that file here
//! keeps the fuzz targets and the test running the very same code.
//!
//! Input layout: one selector byte (request path, or for `senml_paths` the
//! format), then the payload. See FUZZING.md.

#[allow(dead_code)]
#[path = "../../tests/fuzz_corpus.rs"]
mod corpus;

pub use corpus::{TREE_PATHS, Target, VALUE_PATHS, check, hex, may_refuse, same_f64, same_records};

/// The upgrade task's input surface: `task::drive` (tests/fuzz_task.rs).
#[path = "../../tests/fuzz_task.rs"]
pub mod task;

/// The server endpoint's datagram input: `endpoint::drive` (tests/fuzz_endpoint.rs).
#[path = "../../tests/fuzz_endpoint.rs"]
pub mod endpoint;

/// The campaign's input surface: `campaign::drive` (tests/fuzz_campaign.rs).
#[path = "../../tests/fuzz_campaign.rs"]
pub mod campaign;

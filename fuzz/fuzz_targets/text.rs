//! Fuzz target `text`: see `lwm2m_fota_fuzz::check` (tests/fuzz_corpus.rs) and FUZZING.md.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lwm2m_fota_fuzz::{Target, check};

fuzz_target!(|input: &[u8]| check(Target::Text, input));

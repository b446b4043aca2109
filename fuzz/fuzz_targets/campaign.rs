//! Fuzz target `campaign`: the campaign's inputs (see `tests/fuzz_campaign.rs` and FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| lwm2m_fota_fuzz::campaign::drive(input));

//! Fuzz target `task`: the upgrade task's inputs (see `tests/fuzz_task.rs` and FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| lwm2m_fota_fuzz::task::drive(input));

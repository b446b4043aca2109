//! Fuzz target `endpoint`: the server endpoint's datagram input through the
//! CoAP binding (see `tests/fuzz_endpoint.rs` and FUZZING.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| lwm2m_fota_fuzz::endpoint::drive(input));

//! Sans-I/O firmware-over-the-air (FOTA) for LwM2M devices and servers.
//!
//! `lwm2m-fota` is built in layers, each a module; dependencies point downward:
//!
//! | module | what it owns | needs `std`? |
//! |---|---|---|
//! | [`device`] | the Firmware Update object (/5) state machine as a device runs it | no (`alloc`) |
//! | [`codec`] | TLV, SenML-CBOR, SenML-JSON, LwM2M-CBOR, plain text, opaque and single-value CBOR | no (`alloc`) |
//! | [`server`] | one device's upgrade task: five strategies (with the adaptive fallback to reads), push and pull, timeouts, resume, retries, verification | no (`alloc`) |
//! | `sim` (feature `sim`) | deterministic simulated devices and a lossy, delaying network | yes |
//! | [`campaign`] | campaigns: the firmware catalogue, settings and task templates, and the `Campaign` (schedule, window, quota, phases, abort, commands, progress) | no (`alloc`) |
//! | [`model`] | paths, values, content formats, object and resource definitions (/1, /3, /5 built in) | no (`alloc`) |
//!
//! Nothing in the crate performs I/O, reads a clock or spawns a thread: callers feed
//! bytes in and take bytes out, so the same code runs in a server, in device
//! firmware (`#![no_std]` + `alloc`, build with `--no-default-features`), in a fuzzer
//! and in a benchmark.
//!
//! # Decoding a payload
//!
//! ```
//! use lwm2m_fota::codec::{self, DecodeOptions};
//! use lwm2m_fota::model::{ContentFormat, Path, Registry, Value};
//!
//! // A TLV Read response of /5/0/3 (State) = 1 (Downloading).
//! let payload = [0xC1, 0x03, 0x01];
//! let registry = Registry::default();
//! let path: Path = "/5/0/3".parse().unwrap();
//! let records = codec::decode(ContentFormat::Tlv, &path, &payload, &registry, &DecodeOptions::default())?;
//! assert_eq!(records.len(), 1);
//! assert_eq!(records[0].value, Value::Integer(1));
//! # Ok::<(), lwm2m_fota::codec::DecodeError>(())
//! ```
//!
//! # Features
//!
//! - `std` (default): implements `std::error::Error` through `thiserror` and enables
//!   the std-only layers.
//! - `serde` (default): `Serialize`/`Deserialize` for the model's value types.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

extern crate alloc;

// The README's code runs as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod campaign;
#[cfg(feature = "coap")]
pub mod coap;
pub mod codec;
pub mod device;
pub mod model;
pub mod server;
#[cfg(feature = "sim")]
pub mod sim;

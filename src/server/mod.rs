//! The server side of FOTA: one device's upgrade task, every strategy and option
//! of the reference platform, sans-I/O.
//!
//! `server` never imports [`crate::device`]: it works with devices it did not
//! write. It speaks [`crate::model::Operation`]s and decodes what devices answer
//! with [`crate::codec`].
//!
//! ```
//! use std::sync::Arc;
//! use lwm2m_fota::model::{Binding, Instant, Registration, Lwm2mVersion, ObjectList};
//! use lwm2m_fota::server::{TaskInput, TaskOutput, UpgradeConfig, UpgradeTask};
//!
//! let config = Arc::new(UpgradeConfig::new("http://fw.example.com/images/", "v2.bin", 120_000));
//! let mut task = UpgradeTask::new(config);
//! let registration = Registration {
//!     endpoint: "dev-1".into(), lifetime: 300, lwm2m_version: Lwm2mVersion::V1_1, binding: Binding::UDP,
//!     queue_mode: false, objects: ObjectList::parse("</1/0>,</3/0>,</5>;ver=1.1,</5/0>").unwrap(),
//! };
//! let now = Instant::from_millis(0);
//! task.handle(now, TaskInput::Registered(&registration)).unwrap();
//! task.handle(now, TaskInput::Start).unwrap();
//! // The first request reads /5/0 (strategy S1, reads).
//! let request = std::iter::from_fn(|| task.poll_output())
//!     .find_map(|o| match o { TaskOutput::Request(r) => Some(r), _ => None })
//!     .unwrap();
//! assert!(format!("{:?}", request.kind).contains("Read"));
//! ```

mod config;
mod endpoint;
mod freshness;
mod image;
mod index;
mod outcome;
mod push;
mod registrations;
mod task;

pub use config::{Delivery, MAX_TRANSMIT_WAIT, RetryPolicy, Strategy, UpgradeConfig};
pub use endpoint::{
    DeviceId, DeviceRequest, DeviceResponse, DeviceView, DownlinkRequest, Endpoint, EndpointConfig, EndpointError,
    EndpointEvent, EndpointOutput, EndpointStats, Method, Reply, ResponseVerdict, Token, Transmit, block_value,
    parse_block,
};
pub use freshness::{OBSERVE_SEQUENCE_LIFETIME, ObserveSequence};
pub use image::{ImageReadError, ImageSource, MAX_BLOCK_SIZE, MemoryImage, ServedBlock, serve_block};
pub use outcome::{Failure, Outcome, Step, TaskEvent};
pub use push::{PushStep, WireBlock};
pub use registrations::{Expired, Location, Registered, RegistrationError, RegistrationLimits, Registrations};
pub use task::{CachedModel, RequestKind, TaskError, TaskInput, TaskOutput, TaskRequest, UpgradeTask};

//! What a task tells its caller: its steps, its events, and how it ended.

use alloc::boxed::Box;
use alloc::string::String;
use core::fmt;

use super::{Delivery, Strategy};
use crate::model::{DeliveryMethod, Protocol, ProtocolSet, ResponseCode, State, UpdateResult};

/// Where an upgrade stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Step {
    /// Created, not started.
    NotStarted,
    /// Waiting for the device to register (or wake up, in queue mode).
    WaitingForDevice,
    /// Learning State, Update Result, protocols, delivery methods and version.
    Inspecting,
    /// Resetting a state machine an earlier attempt left busy.
    Resetting,
    /// Writing the extended Lifetime.
    ExtendingLifetime,
    /// Setting up observations.
    Observing,
    /// Writing the Package URI.
    WritingUri,
    /// Pushing the image.
    Pushing,
    /// Waiting for State Downloaded.
    Downloading,
    /// Downloaded, waiting for the caller to release the Execute (U12).
    HoldingExecute,
    /// Executing Update.
    Executing,
    /// Waiting for the device to install, reboot and report.
    Updating,
    /// Reading `/3/0/3` to verify the version.
    Verifying,
    /// Done.
    Finished,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::NotStarted => "not started",
            Step::WaitingForDevice => "waiting for the device",
            Step::Inspecting => "inspecting",
            Step::Resetting => "resetting",
            Step::ExtendingLifetime => "extending lifetime",
            Step::Observing => "observing",
            Step::WritingUri => "writing package URI",
            Step::Pushing => "pushing",
            Step::Downloading => "downloading",
            Step::HoldingExecute => "holding execute",
            Step::Executing => "executing",
            Step::Updating => "updating",
            Step::Verifying => "verifying",
            Step::Finished => "finished",
        })
    }
}

/// Why an upgrade failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Failure {
    /// The device reported this Update Result.
    UpdateResult(UpdateResult),
    /// The upgrade timeout (U1) passed in this step.
    Timeout {
        /// The step it stopped in.
        step: Step,
        /// True when the strategy was Send and no Send ever arrived.
        no_send_received: bool,
    },
    /// The device answered a request with an error code.
    Rejected {
        /// The step.
        step: Step,
        /// The code.
        code: ResponseCode,
    },
    /// The device cannot take the image this way (U10).
    UnsupportedDeliveryMethod {
        /// What the task wanted.
        wanted: Delivery,
        /// What `/5/0/9` says.
        device: DeliveryMethod,
    },
    /// The device does not list the pull protocol in `/5/0/8` (U10).
    UnsupportedProtocol {
        /// The configured protocol.
        wanted: Protocol,
        /// What the device lists.
        device: ProtocolSet,
    },
    /// The Package URI is not usable: longer than 255 bytes, or its scheme is
    /// not the configured protocol's.
    InvalidPackageUri,
    /// Update Result 1, but `/3/0/3` is not the target version (B1, B9).
    VersionMismatch {
        /// The configured target.
        expected: String,
        /// What the device reports.
        reported: String,
    },
    /// The operator cancelled the upgrade (B4).
    Cancelled,
    /// A request could not be delivered in this step.
    DownlinkFailure {
        /// The step.
        step: Step,
    },
}

impl Failure {
    /// A short machine-friendly reason (`update-result-5`, `timeout-downloading`, …).
    pub fn reason(&self) -> String {
        use alloc::format;
        let step_name = |s: &Step| format!("{s}").replace(' ', "-");
        match self {
            Failure::UpdateResult(r) => format!("update-result-{}", r.code()),
            Failure::Timeout { step, no_send_received: true } => format!("timeout-{}-no-send", step_name(step)),
            Failure::Timeout { step, .. } => format!("timeout-{}", step_name(step)),
            Failure::Rejected { step, code } => format!("rejected-{}-{code}", step_name(step)),
            Failure::UnsupportedDeliveryMethod { .. } => "unsupported-delivery-method".into(),
            Failure::UnsupportedProtocol { .. } => "unsupported-protocol".into(),
            Failure::InvalidPackageUri => "invalid-package-uri".into(),
            Failure::VersionMismatch { .. } => "version-mismatch".into(),
            Failure::Cancelled => "cancelled".into(),
            Failure::DownlinkFailure { step } => format!("downlink-failure-{}", step_name(step)),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::UpdateResult(r) => write!(f, "device reported {r}"),
            Failure::Timeout { step, no_send_received } => {
                write!(f, "upgrade timed out while {step}")?;
                if *no_send_received {
                    f.write_str(" (no LwM2M Send received: is the device configured to send?)")?;
                }
                Ok(())
            }
            Failure::Rejected { step, code } => write!(f, "device answered {code} while {step}"),
            Failure::UnsupportedDeliveryMethod { wanted, device } => {
                write!(f, "delivery {} not supported: /5/0/9 is {}", wanted.name(), device.code())
            }
            Failure::UnsupportedProtocol { wanted, device } => {
                write!(f, "protocol {} not in /5/0/8 (", wanted.scheme())?;
                for (i, p) in device.iter().enumerate() {
                    write!(f, "{}{}", if i > 0 { ", " } else { "" }, p.scheme())?;
                }
                f.write_str(")")
            }
            Failure::InvalidPackageUri => f.write_str("package URI longer than 255 bytes or of the wrong scheme"),
            Failure::VersionMismatch { expected, reported } => {
                write!(f, "version mismatch: expected {expected:?}, device reports {reported:?}")
            }
            Failure::Cancelled => f.write_str("cancelled"),
            Failure::DownlinkFailure { step } => write!(f, "request to the device failed while {step}"),
        }
    }
}

/// How an upgrade ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Outcome {
    /// Update Result 1 and, where a target was set, `/3/0/3` equal to it.
    Succeeded {
        /// The version the device reports, when it was read.
        version: Option<String>,
    },
    /// Failed, and why.
    Failed(Failure),
    /// The task failed (`failure`), but afterwards the device showed that the
    /// update it had been told to apply succeeded: it registered again and
    /// reported Update Result 1 and, where a target was set, `/3/0/3` equal
    /// to it. Only an upgrade whose Execute was sent can end so.
    LateSuccess {
        /// The version the device reports, when known.
        version: Option<String>,
        /// How the task had failed (boxed: outcomes and events stay as small
        /// as a failure).
        failure: Box<Failure>,
    },
}

impl Outcome {
    /// True when the device runs the new image ([`Outcome::Succeeded`] or
    /// [`Outcome::LateSuccess`]).
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Succeeded { .. } | Outcome::LateSuccess { .. })
    }

    /// A short machine-friendly reason: `None` for a success,
    /// [`Failure::reason`] for a failure, `late-success-after-<reason>` for a
    /// late success.
    pub fn reason(&self) -> Option<String> {
        match self {
            Outcome::Succeeded { .. } => None,
            Outcome::Failed(failure) => Some(failure.reason()),
            Outcome::LateSuccess { failure, .. } => Some(alloc::format!("late-success-after-{}", failure.reason())),
        }
    }
}

/// Something the caller may want to know or show.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum TaskEvent {
    /// The task moved to a new step.
    StepChanged(Step),
    /// State and Update Result as last seen.
    StateSeen {
        /// State.
        state: State,
        /// Update Result.
        result: UpdateResult,
    },
    /// Bytes of the image the device acknowledged (push).
    PushProgress {
        /// Acknowledged bytes.
        bytes: u64,
        /// Image size.
        total: u64,
    },
    /// The device is Downloaded and the Execute is held (U12): call
    /// `release_execute`.
    ExecuteHeld,
    /// A retryable failure; attempt `attempt` starts.
    Retrying {
        /// The failure.
        failure: Failure,
        /// The new attempt's number (2 for the first retry).
        attempt: u32,
    },
    /// C6: the device refused what strategy `from` needs (an Observe refused
    /// with 4.04, 4.05 or 5.01, or no Send with its state within a step
    /// timeout); the task goes on with `to` (S1 reads) instead of failing.
    /// Reported once, before the request that uses the new strategy.
    StrategyChanged {
        /// The strategy the task used until now.
        from: Strategy,
        /// The strategy it uses from now on.
        to: Strategy,
    },
    /// The end.
    Finished(Outcome),
    /// After the task had finished with a failure, the device proved the
    /// update applied: the outcome is now [`Outcome::LateSuccess`].
    LateSuccess(Outcome),
}

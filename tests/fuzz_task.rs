//! The upgrade task's input surface as a fuzz check: bytes become a sequence of
//! what a device, the network and an operator can do (any answer code and
//! payload to the request in flight, 5.03 with any Max-Age, lost exchanges,
//! registrations, notifications of any observation, Sends, time passing,
//! cancel and release), and the task must never panic, never ask for two
//! requests at once, never set a deadline in the past, and, once the device
//! falls silent, end by its deadlines with nothing left to wait for.
//!
//! `cargo test --test fuzz_task` runs the check on generated inputs; the
//! `task` fuzz target (fuzz/, see FUZZING.md) runs the same function.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use lwm2m_fota::codec;
use lwm2m_fota::model::{
    Binding, ContentFormat, Instant, Lwm2mVersion, ObjectList, Operation, Path, Record, Registration, Registry,
    RequestId, ResponseCode, Value,
};
use lwm2m_fota::server::{Delivery, RequestKind, Strategy, TaskInput, TaskOutput, UpgradeConfig, UpgradeTask};

const CODES: [ResponseCode; 12] = [
    ResponseCode::CONTENT,
    ResponseCode::CHANGED,
    ResponseCode::CONTINUE,
    ResponseCode::BAD_REQUEST,
    ResponseCode::NOT_FOUND,
    ResponseCode::METHOD_NOT_ALLOWED,
    ResponseCode::NOT_ACCEPTABLE,
    ResponseCode::REQUEST_ENTITY_INCOMPLETE,
    ResponseCode::REQUEST_ENTITY_TOO_LARGE,
    ResponseCode::SERVICE_UNAVAILABLE,
    ResponseCode::INTERNAL_SERVER_ERROR,
    // 5.01 Not Implemented: with 4.04 and 4.05, what C6 falls back on.
    ResponseCode::new(5, 1),
];

fn registration(queue_mode: bool) -> Registration {
    Registration {
        endpoint: "fuzz".into(),
        lifetime: 300,
        lwm2m_version: Lwm2mVersion::V1_1,
        binding: Binding::UDP,
        queue_mode,
        objects: ObjectList::parse("</1/0>,</3/0>,</5>;ver=1.1,</5/0>").unwrap(),
    }
}

/// A payload a device might send, chosen by `choice`; `raw` bytes of the
/// input may stand for one as they are.
fn payload(choice: u8, raw: &[u8]) -> (Option<ContentFormat>, Vec<u8>) {
    let state = i64::from(choice % 4);
    let result = i64::from(choice / 4 % 11);
    let senml = |records: &[Record<'_>], path: &Path| {
        let mut out = Vec::new();
        codec::encode(ContentFormat::SenmlCbor, path, records, &Registry::default(), &mut out).unwrap();
        out
    };
    match choice % 6 {
        0 => {
            let records = [
                Record::new(Path::resource(5, 0, 3), Value::Integer(state)),
                Record::new(Path::resource(5, 0, 5), Value::Integer(result)),
                Record::new(Path::resource_instance(5, 0, 8, 0), Value::Integer(i64::from(choice % 3))),
                Record::new(Path::resource(5, 0, 9), Value::Integer(i64::from(choice % 3))),
            ];
            (Some(ContentFormat::SenmlCbor), senml(&records, &Path::instance(5, 0)))
        }
        1 => (Some(ContentFormat::Text), state.to_string().into_bytes()),
        2 => (Some(ContentFormat::Text), if choice % 2 == 0 { b"2.0.0".to_vec() } else { b"1.0.0".to_vec() }),
        3 => (Some(ContentFormat::SenmlCbor), raw.to_vec()),
        4 => (Some(ContentFormat::Tlv), raw.to_vec()),
        _ => (None, Vec::new()),
    }
}

fn send_payload(choice: u8) -> Vec<u8> {
    let records = [
        Record::new(Path::resource(3, 0, 3), Value::string(if choice % 2 == 0 { "2.0.0" } else { "1.0.0" })),
        Record::new(Path::resource(5, 0, 3), Value::Integer(i64::from(choice % 4))),
        Record::new(Path::resource(5, 0, 5), Value::Integer(i64::from(choice / 4 % 11))),
    ];
    let mut out = Vec::new();
    codec::encode(ContentFormat::SenmlCbor, &Path::ROOT, &records, &Registry::default(), &mut out).unwrap();
    out
}

/// A device that mostly behaves: it answers as object /5 would, moving
/// through the states when told to download, when time passes and when
/// executed, and comes back Idle with Update Result 1 and the new version.
#[derive(Default)]
struct Device {
    state: i64,
    result: i64,
    upgraded: bool,
}

impl Device {
    fn answer(&mut self, kind: &RequestKind) -> (ResponseCode, Option<ContentFormat>, Vec<u8>) {
        let text = |v: String| (ResponseCode::CONTENT, Some(ContentFormat::Text), v.into_bytes());
        match kind {
            RequestKind::Operation(Operation::Read { path, .. } | Operation::Observe { path, .. }) => {
                if *path == Path::instance(5, 0) {
                    let records = [
                        Record::new(Path::resource(5, 0, 3), Value::Integer(self.state)),
                        Record::new(Path::resource(5, 0, 5), Value::Integer(self.result)),
                        Record::new(Path::resource_instance(5, 0, 8, 0), Value::Integer(0)),
                        Record::new(Path::resource(5, 0, 9), Value::Integer(2)),
                    ];
                    let mut out = Vec::new();
                    codec::encode(ContentFormat::SenmlCbor, path, &records, &Registry::default(), &mut out).unwrap();
                    (ResponseCode::CONTENT, Some(ContentFormat::SenmlCbor), out)
                } else if *path == Path::resource(5, 0, 3) {
                    text(self.state.to_string())
                } else if *path == Path::resource(5, 0, 5) {
                    text(self.result.to_string())
                } else if *path == Path::resource(5, 0, 9) {
                    text("2".into())
                } else if *path == Path::resource(3, 0, 3) {
                    text(if self.upgraded { "2.0.0" } else { "1.0.0" }.into())
                } else {
                    text("0".into())
                }
            }
            RequestKind::Operation(Operation::Write { path, payload, .. }) if *path == Path::resource(5, 0, 1) => {
                (self.state, self.result) = if payload.is_empty() { (0, 0) } else { (1, 0) };
                (ResponseCode::CHANGED, None, Vec::new())
            }
            RequestKind::Operation(Operation::Execute { .. }) if self.state == 2 => {
                self.state = 3;
                (ResponseCode::CHANGED, None, Vec::new())
            }
            RequestKind::Operation(Operation::Execute { .. }) => (ResponseCode::METHOD_NOT_ALLOWED, None, Vec::new()),
            RequestKind::PackageBlock { block, .. } => {
                self.state = if block.more { 1 } else { 2 };
                let code = if block.more { ResponseCode::CONTINUE } else { ResponseCode::CHANGED };
                (code, None, Vec::new())
            }
            _ => (ResponseCode::CHANGED, None, Vec::new()),
        }
    }

    /// Time passes: a download completes, an installation ends.
    fn progress(&mut self) {
        match self.state {
            1 => self.state = 2,
            3 => {
                (self.state, self.result) = (0, 1);
                self.upgraded = true;
            }
            _ => {}
        }
    }
}

/// Drains the task's outputs; returns the requests it asked for.
fn drain(
    task: &mut UpgradeTask,
    requests: &mut Vec<(RequestId, RequestKind)>,
    observations: &mut Vec<RequestId>,
) -> usize {
    let mut sent = 0;
    for _ in 0..64 {
        match task.poll_output() {
            Some(TaskOutput::Request(request)) => {
                sent += 1;
                if matches!(request.kind, RequestKind::Operation(Operation::Observe { .. })) {
                    observations.push(request.id);
                }
                requests.push((request.id, request.kind));
            }
            Some(_) => {}
            None => return sent,
        }
    }
    panic!("poll_output never ran dry");
}

/// The check: panics on any violation.
pub fn drive(input: &[u8]) {
    let Some((&head, mut rest)) = input.split_first() else { return };
    let mut config = UpgradeConfig::new("coap://fw.example/", "v2.bin", 5000);
    config.strategy = Strategy::ALL[usize::from(head % 5)];
    config.delivery = [Delivery::Pull, Delivery::Push, Delivery::Auto][usize::from(head / 5 % 3)];
    config.protocol = lwm2m_fota::model::Protocol::Coap;
    config.use_observe = head & 0x40 != 0;
    config.resume_after_downlink_failure = head & 0x80 != 0;
    // C6 on about half the inputs (the head's bits are all taken: this is a
    // mix of them, not one more).
    config.fallback = (head / 15) % 2 == 1;
    config.target_version = Some("2.0.0".into());
    config.timeout = Duration::from_secs(900);
    let limit = config.timeout * 2 + config.request_timeout * 2;
    let queue_mode = head % 7 == 0;
    let mut task = UpgradeTask::new(Arc::new(config));
    let mut now = Instant::ZERO;
    let (mut requests, mut observations) = (Vec::new(), Vec::new());
    task.handle(now, TaskInput::Registered(&registration(queue_mode))).unwrap();
    task.start(now).unwrap();
    drain(&mut task, &mut requests, &mut observations);
    let mut waited = Duration::ZERO;
    let mut device = Device::default();
    while let [op, a, b, tail @ ..] = rest {
        rest = tail;
        let last = requests.last().map(|(id, _)| *id);
        let (op, a, b) = (*op, *a, *b);
        let result = match op % 12 {
            // Mostly right answers, so that upgrades get far.
            0..=2 if a < 200 => match requests.last() {
                Some((id, kind)) => {
                    let (code, format, payload) = device.answer(kind);
                    task.handle(now, TaskInput::Response { id: *id, code, format, payload: &payload })
                }
                None => Ok(()),
            },
            0..=2 => match last {
                Some(id) => {
                    let raw = &tail[..tail.len().min(usize::from(b % 32))];
                    let (format, payload) = payload(b, raw);
                    let code = CODES[usize::from(a) % CODES.len()];
                    task.handle(now, TaskInput::Response { id, code, format, payload: &payload })
                }
                None => Ok(()),
            },
            3 => match last {
                Some(id) => task.handle(
                    now,
                    TaskInput::ServiceUnavailable {
                        id,
                        max_age: (a % 2 == 0).then(|| Duration::from_secs(u64::from(b))),
                    },
                ),
                None => Ok(()),
            },
            4 => match last {
                Some(id) => task.handle(now, TaskInput::TransportFailure { id }),
                None => Ok(()),
            },
            5 => task.handle(now, TaskInput::Registered(&registration(queue_mode))),
            6 => task.handle(now, TaskInput::RegistrationUpdated),
            7 => task.handle(now, TaskInput::Deregistered),
            8 => match observations.get(usize::from(a) % observations.len().max(1)) {
                Some(&observation) => {
                    let (format, payload) = payload(b, &[]);
                    let format = format.unwrap_or(ContentFormat::Text);
                    task.handle(now, TaskInput::Notification { observation, format, payload: &payload })
                }
                None => Ok(()),
            },
            9 if a % 2 == 0 => {
                let records = [
                    Record::new(
                        Path::resource(3, 0, 3),
                        Value::string(if device.upgraded { "2.0.0" } else { "1.0.0" }),
                    ),
                    Record::new(Path::resource(5, 0, 3), Value::Integer(device.state)),
                    Record::new(Path::resource(5, 0, 5), Value::Integer(device.result)),
                ];
                let mut payload = Vec::new();
                codec::encode(ContentFormat::SenmlCbor, &Path::ROOT, &records, &Registry::default(), &mut payload)
                    .unwrap();
                task.handle(now, TaskInput::Send { format: ContentFormat::SenmlCbor, payload: &payload })
            }
            9 => task.handle(now, TaskInput::Send { format: ContentFormat::SenmlCbor, payload: &send_payload(b) }),
            10 => {
                device.progress();
                let step = Duration::from_millis(u64::from(a) * 1000 + u64::from(b) * 10);
                waited += step;
                now = now + step;
                task.handle_timeout(now)
            }
            _ => {
                if a % 2 == 0 {
                    task.cancel(now).unwrap();
                } else {
                    task.release_execute(now).unwrap();
                }
                Ok(())
            }
        };
        assert!(result.is_ok(), "{result:?}");
        let sent = drain(&mut task, &mut requests, &mut observations);
        assert!(sent <= 1 || task.outcome().is_some(), "{sent} requests at once");
        // C6: only a task configured to falls back, and then it reads.
        assert!(task.config().fallback || !task.fell_back(), "fell back with fallback off");
        assert!(!task.fell_back() || task.strategy_used() == Strategy::Reads);
    }
    // The device falls silent: only timers run, and they end the task.
    let silent_from = now;
    for _ in 0..1_000 {
        let Some(at) = task.poll_timeout() else { break };
        assert!(at >= now, "a deadline in the past: {at:?} < {now:?}");
        now = at;
        task.handle_timeout(now).unwrap();
        drain(&mut task, &mut requests, &mut observations);
    }
    assert!(task.poll_timeout().is_none(), "timers keep firing in {:?}", task.step());
    assert!(task.outcome().is_some(), "no outcome in {:?}", task.step());
    assert!(!task.watching());
    assert!(now.saturating_duration_since(silent_from) <= limit + waited, "ended late: {now:?}");
}

#[cfg(test)]
mod tests {
    /// Inputs from a fixed SplitMix64 stream: lengths up to 600 bytes, some of
    /// them biased to answer-heavy sequences, so every run checks the same.
    #[test]
    fn generated_inputs_keep_every_rule() {
        let mut state = 0x5EED_u64;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        for case in 0..3_000 {
            let len = (next() % 600) as usize;
            let mut input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if case % 2 == 0 {
                // Mostly answers and time: upgrades get far (Execute,
                // verification, the late-success watch).
                for (i, byte) in input.iter_mut().enumerate().skip(1) {
                    if i % 3 == 1 && *byte % 8 != 0 {
                        *byte = if *byte % 8 < 6 { (*byte % 3) * 12 } else { 10 };
                    }
                }
            }
            super::drive(&input);
        }
    }
}

//! C6, the adaptive strategy: a device that refuses what its strategy needs
//! (4.05, 4.04 or 5.01 to an Observe; no Send within the step timeout)
//! continues with reads when `UpgradeConfig::fallback` is on, fails as before
//! when it is off, and a task snapshotted mid-fallback continues identically.

use std::sync::Arc;
use std::time::Duration;

use lwm2m_fota::codec;
use lwm2m_fota::model::{
    Binding, ContentFormat, Instant, Lwm2mVersion, ObjectList, Operation, Path, Record, Registration, Registry,
    RequestId, ResponseCode, Value,
};
use lwm2m_fota::server::{
    Failure, Outcome, RequestKind, Step, Strategy, TaskEvent, TaskInput, TaskOutput, UpgradeConfig, UpgradeTask,
};
use proptest::prelude::*;

const NOT_IMPLEMENTED: ResponseCode = ResponseCode::new(5, 1);

fn registration() -> Registration {
    Registration {
        endpoint: "dev".into(),
        lifetime: 300,
        lwm2m_version: Lwm2mVersion::V1_1,
        binding: Binding::UDP,
        queue_mode: false,
        objects: ObjectList::parse("</1/0>,</3/0>,</5>;ver=1.1,</5/0>").unwrap(),
    }
}

fn config(strategy: Strategy, fallback: bool) -> UpgradeConfig {
    let mut c = UpgradeConfig::new("coap://fw.example/img/", "v2.bin", 3000);
    c.strategy = strategy;
    c.protocol = lwm2m_fota::model::Protocol::Coap;
    c.target_version = Some("2.0.0".into());
    c.fallback = fallback;
    c
}

/// A scripted device: answers every request at once, downloads in one tick,
/// installs in one more and registers again with the new version.
#[derive(Debug, Clone, PartialEq)]
struct Device {
    state: i64,
    result: i64,
    version: &'static str,
    /// The code it answers every Observe with; `None`: it observes.
    refuse_observe: Option<ResponseCode>,
    /// It sends its state on every change (S4 devices).
    sends: bool,
    observations: Vec<(RequestId, Path)>,
    /// Something changed since the last tick's report.
    changed: bool,
}

impl Device {
    fn new(refuse_observe: Option<ResponseCode>, sends: bool) -> Device {
        Device {
            state: 0,
            result: 0,
            version: "1.0.0",
            refuse_observe,
            sends,
            observations: Vec::new(),
            changed: false,
        }
    }

    fn value_of(&self, path: &Path) -> (ContentFormat, Vec<u8>) {
        if *path == Path::instance(5, 0) {
            let records = [
                Record::new(Path::resource(5, 0, 3), Value::Integer(self.state)),
                Record::new(Path::resource(5, 0, 5), Value::Integer(self.result)),
                Record::new(Path::resource_instance(5, 0, 8, 0), Value::Integer(0)),
                Record::new(Path::resource(5, 0, 9), Value::Integer(2)),
            ];
            let mut out = Vec::new();
            codec::encode(ContentFormat::SenmlCbor, path, &records, &Registry::default(), &mut out).unwrap();
            (ContentFormat::SenmlCbor, out)
        } else if *path == Path::resource(3, 0, 3) {
            (ContentFormat::Text, self.version.as_bytes().to_vec())
        } else if *path == Path::resource(5, 0, 3) {
            (ContentFormat::Text, self.state.to_string().into_bytes())
        } else if *path == Path::resource(5, 0, 5) {
            (ContentFormat::Text, self.result.to_string().into_bytes())
        } else if *path == Path::resource(5, 0, 9) {
            (ContentFormat::Text, b"2".to_vec())
        } else {
            (ContentFormat::Text, b"0".to_vec())
        }
    }

    fn send_payload(&self) -> Vec<u8> {
        let records = [
            Record::new(Path::resource(5, 0, 3), Value::Integer(self.state)),
            Record::new(Path::resource(5, 0, 5), Value::Integer(self.result)),
        ];
        let mut out = Vec::new();
        codec::encode(ContentFormat::SenmlCbor, &Path::ROOT, &records, &Registry::default(), &mut out).unwrap();
        out
    }
}

struct Harness {
    task: UpgradeTask,
    device: Device,
    now: Instant,
    pending: Vec<(RequestId, RequestKind)>,
    events: Vec<TaskEvent>,
    /// Every request the task sent, in order.
    log: Vec<RequestKind>,
}

impl Harness {
    fn new(config: UpgradeConfig, device: Device) -> Harness {
        let mut h = Harness {
            task: UpgradeTask::new(Arc::new(config)),
            device,
            now: Instant::ZERO,
            pending: Vec::new(),
            events: Vec::new(),
            log: Vec::new(),
        };
        h.input(TaskInput::Registered(&registration()));
        h.task.start(h.now).unwrap();
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(output) = self.task.poll_output() {
            match output {
                TaskOutput::Request(r) => {
                    self.log.push(r.kind.clone());
                    self.pending.push((r.id, r.kind));
                }
                TaskOutput::Event(e) => self.events.push(e),
            }
        }
    }

    fn input(&mut self, input: TaskInput<'_>) {
        self.task.handle(self.now, input).unwrap();
        self.drain();
    }

    /// The device answers the pending request.
    fn answer(&mut self) {
        let (id, kind) = self.pending.remove(0);
        let d = &mut self.device;
        let (code, content) = match kind {
            RequestKind::Operation(Operation::Read { path, .. }) => (ResponseCode::CONTENT, Some(d.value_of(&path))),
            RequestKind::Operation(Operation::Observe { path, .. }) => match d.refuse_observe {
                Some(code) => (code, None),
                None => {
                    d.observations.push((id, path));
                    (ResponseCode::CONTENT, Some(d.value_of(&path)))
                }
            },
            RequestKind::Operation(Operation::Write { path, payload, .. }) if path == Path::resource(5, 0, 1) => {
                (d.state, d.result) = if payload.is_empty() { (0, 0) } else { (1, 0) };
                d.changed = true;
                (ResponseCode::CHANGED, None)
            }
            RequestKind::Operation(Operation::Execute { .. }) => {
                d.state = 3;
                d.changed = true;
                (ResponseCode::CHANGED, None)
            }
            _ => (ResponseCode::CHANGED, None),
        };
        let (format, payload) = content.map_or((None, Vec::new()), |(f, p)| (Some(f), p));
        self.input(TaskInput::Response { id, code, format, payload: &payload });
    }

    /// Reports what changed (notifications, a Send), as the device would.
    fn report(&mut self) {
        if !std::mem::take(&mut self.device.changed) {
            return;
        }
        for (observation, path) in self.device.observations.clone() {
            let (format, payload) = self.device.value_of(&path);
            self.input(TaskInput::Notification { observation, format, payload: &payload });
        }
        if self.device.sends {
            let payload = self.device.send_payload();
            self.input(TaskInput::Send { format: ContentFormat::SenmlCbor, payload: &payload });
        }
    }

    /// One step: answer a request, or let the device move on (download,
    /// install) and speak, or let a step timeout pass.
    fn step(&mut self) {
        if !self.pending.is_empty() {
            self.answer();
            self.report();
            return;
        }
        match self.device.state {
            1 => {
                self.device.state = 2;
                self.device.changed = true;
                self.report();
            }
            3 => {
                (self.device.state, self.device.result, self.device.version) = (0, 1, "2.0.0");
                self.device.observations.clear();
                self.input(TaskInput::Registered(&registration()));
            }
            _ => {
                self.now = self.now + Duration::from_secs(61);
                self.task.handle_timeout(self.now).unwrap();
                self.drain();
                if self.pending.is_empty() {
                    self.input(TaskInput::RegistrationUpdated);
                }
            }
        }
    }

    fn run(&mut self) -> Outcome {
        for _ in 0..200 {
            if let Some(outcome) = self.task.outcome() {
                return outcome.clone();
            }
            self.step();
        }
        panic!("no outcome: {:?} {:?}", self.task.step(), self.events);
    }

    fn fallbacks(&self) -> Vec<&TaskEvent> {
        self.events.iter().filter(|e| matches!(e, TaskEvent::StrategyChanged { .. })).collect()
    }

    fn observes_after_fallback(&self) -> usize {
        let first = self.log.iter().position(|k| matches!(k, RequestKind::Operation(Operation::Observe { .. })));
        self.log
            .iter()
            .skip(first.map_or(self.log.len(), |i| i + 1))
            .filter(|k| matches!(k, RequestKind::Operation(Operation::Observe { .. })))
            .count()
    }
}

const OBSERVING: [Strategy; 3] = [Strategy::ObserveResources, Strategy::ObserveInstance, Strategy::ObserveOnly];

fn succeeded() -> Outcome {
    Outcome::Succeeded { version: Some("2.0.0".into()) }
}

#[test]
fn a_refused_observe_continues_with_reads_and_succeeds() {
    for strategy in OBSERVING {
        for code in [ResponseCode::METHOD_NOT_ALLOWED, ResponseCode::NOT_FOUND, NOT_IMPLEMENTED] {
            let mut h = Harness::new(config(strategy, true), Device::new(Some(code), false));
            assert_eq!(h.run(), succeeded(), "{strategy:?} {code}");
            assert_eq!(h.task.strategy_used(), Strategy::Reads, "{strategy:?} {code}");
            assert_eq!(h.fallbacks(), [&TaskEvent::StrategyChanged { from: strategy, to: Strategy::Reads }]);
            assert_eq!(h.observes_after_fallback(), 0, "no Observe after the refused one: {:?}", h.log);
            assert!(h.log.iter().any(
                |k| matches!(k, RequestKind::Operation(Operation::Read { path, .. }) if *path == Path::instance(5, 0))
            ));
        }
    }
}

#[test]
fn without_fallback_a_refused_observe_fails_as_before() {
    for (strategy, step) in [
        (Strategy::ObserveResources, Step::Observing),
        (Strategy::ObserveInstance, Step::Observing),
        (Strategy::ObserveOnly, Step::Inspecting),
    ] {
        let mut h = Harness::new(config(strategy, false), Device::new(Some(ResponseCode::METHOD_NOT_ALLOWED), false));
        let outcome = h.run();
        assert_eq!(outcome, Outcome::Failed(Failure::Rejected { step, code: ResponseCode::METHOD_NOT_ALLOWED }));
        assert_eq!(
            outcome.reason().unwrap(),
            format!("rejected-{}-4.05", if step == Step::Observing { "observing" } else { "inspecting" })
        );
        assert_eq!(h.task.strategy_used(), strategy);
        assert!(h.fallbacks().is_empty());
    }
}

#[test]
fn a_device_that_observes_keeps_its_strategy() {
    for strategy in OBSERVING {
        let mut h = Harness::new(config(strategy, true), Device::new(None, false));
        assert_eq!(h.run(), succeeded(), "{strategy:?}");
        assert_eq!(h.task.strategy_used(), strategy);
        assert!(h.fallbacks().is_empty());
    }
}

#[test]
fn a_silent_send_device_is_read_after_the_step_timeout_and_succeeds() {
    let mut h = Harness::new(config(Strategy::Send, true), Device::new(None, false));
    assert_eq!(h.run(), succeeded());
    assert_eq!(h.task.strategy_used(), Strategy::Reads);
    assert_eq!(h.fallbacks(), [&TaskEvent::StrategyChanged { from: Strategy::Send, to: Strategy::Reads }]);
    // Without fallback: the reference's wait, to the upgrade timeout.
    let mut strict = Harness::new(config(Strategy::Send, false), Device::new(None, false));
    let outcome = strict.run();
    assert_eq!(outcome.reason().as_deref(), Some("timeout-downloading-no-send"));
    assert_eq!(strict.task.strategy_used(), Strategy::Send);
}

#[test]
fn a_device_that_sends_stays_under_send() {
    let mut h = Harness::new(config(Strategy::Send, true), Device::new(None, true));
    assert_eq!(h.run(), succeeded());
    assert_eq!(h.task.strategy_used(), Strategy::Send);
    assert!(h.fallbacks().is_empty());
    assert!(!h.task.fell_back());
}

#[test]
fn a_snapshot_without_the_fallback_field_loads_with_it_off() {
    let h = Harness::new(config(Strategy::ObserveResources, true), Device::new(None, false));
    let mut json: serde_json::Value = serde_json::to_value(&h.task).unwrap();
    json["config"].as_object_mut().unwrap().remove("fallback");
    json["history"].as_object_mut().unwrap().remove("fell_back");
    json["history"].as_object_mut().unwrap().remove("sent_state");
    let restored: UpgradeTask = serde_json::from_value(json).unwrap();
    assert!(!restored.config().fallback && !restored.fell_back());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// A task restored from a snapshot taken after any step, before or after
    /// its fallback, continues exactly as the original.
    #[test]
    fn snapshot_restore_mid_fallback_continues_identically(
        cut in 0usize..30,
        strategy in 0usize..5,
        refusal in 0usize..4,
        sends in any::<bool>(),
        fallback in any::<bool>(),
    ) {
        let refuse = [None, Some(ResponseCode::METHOD_NOT_ALLOWED), Some(ResponseCode::NOT_FOUND), Some(NOT_IMPLEMENTED)][refusal];
        let mut original = Harness::new(config(Strategy::ALL[strategy], fallback), Device::new(refuse, sends));
        let mut twin: Option<Harness> = None;
        for n in 0..200 {
            if n == cut {
                let json = serde_json::to_string(&original.task).unwrap();
                let restored: UpgradeTask = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(&restored, &original.task);
                twin = Some(Harness {
                    task: restored,
                    device: original.device.clone(),
                    now: original.now,
                    pending: original.pending.clone(),
                    events: original.events.clone(),
                    log: original.log.clone(),
                });
            }
            if original.task.outcome().is_some() {
                break;
            }
            original.step();
            if let Some(twin) = twin.as_mut() {
                twin.step();
                prop_assert_eq!(&twin.task, &original.task);
                prop_assert_eq!(&twin.pending, &original.pending);
                prop_assert_eq!(&twin.events, &original.events);
            }
        }
        // The invariants of C6: with fallback on, every device here upgrades,
        // and the strategy used is the configured one or S1 after a fallback.
        let outcome = original.task.outcome().cloned();
        prop_assert!(outcome.is_some(), "no outcome");
        let used = original.task.strategy_used();
        let changes = original.fallbacks().len();
        prop_assert!(changes <= 1);
        prop_assert_eq!(changes == 1, original.task.fell_back());
        prop_assert_eq!(used == Strategy::Reads || used == Strategy::ALL[strategy], true);
        if fallback {
            prop_assert_eq!(outcome, Some(succeeded()));
        } else {
            prop_assert_eq!(changes, 0);
            prop_assert_eq!(used, Strategy::ALL[strategy]);
        }
    }
}

//! Cost of one input to an upgrade task, and the size of its state.
//!
//! `cargo bench --bench task`

use std::sync::Arc;

use divan::{Bencher, black_box};
use lwm2m_fota::codec;
use lwm2m_fota::model::{
    Binding, ContentFormat, Instant, Lwm2mVersion, ObjectList, Path, Record, Registration, Registry, Value,
};
use lwm2m_fota::server::{Strategy, TaskInput, TaskOutput, UpgradeConfig, UpgradeTask};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    println!("size_of::<UpgradeTask>() = {} bytes", std::mem::size_of::<UpgradeTask>());
    divan::main();
}

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

/// A task waiting in Downloading with observations on State and Result (S2),
/// and the id of its State observation.
fn downloading_task() -> (UpgradeTask, u64) {
    let mut config = UpgradeConfig::new("http://fw/", "v2.bin", 1000);
    config.strategy = Strategy::ObserveResources;
    let mut task = UpgradeTask::new(Arc::new(config));
    let now = Instant::ZERO;
    task.handle(now, TaskInput::Registered(&registration())).unwrap();
    task.start(now).unwrap();
    let mut observe_state = 0;
    let firmware = {
        let records = [
            Record::new(Path::resource(5, 0, 3), Value::Integer(0)),
            Record::new(Path::resource(5, 0, 5), Value::Integer(0)),
            Record::new(Path::resource_instance(5, 0, 8, 0), Value::Integer(2)),
            Record::new(Path::resource(5, 0, 9), Value::Integer(2)),
        ];
        let mut out = Vec::new();
        codec::encode(ContentFormat::SenmlCbor, &Path::instance(5, 0), &records, &Registry::default(), &mut out)
            .unwrap();
        out
    };
    for _ in 0..20 {
        let Some(output) = task.poll_output() else { break };
        let TaskOutput::Request(request) = output else { continue };
        let text = format!("{:?}", request.kind);
        let (format, payload): (Option<ContentFormat>, Vec<u8>) = if text.contains("Read") {
            (Some(ContentFormat::SenmlCbor), firmware.clone())
        } else if text.contains("Observe") {
            if text.contains("/5/0/3") {
                observe_state = request.id;
            }
            (Some(ContentFormat::Text), b"0".to_vec())
        } else {
            (None, Vec::new())
        };
        let code = if format.is_some() {
            lwm2m_fota::model::ResponseCode::CONTENT
        } else {
            lwm2m_fota::model::ResponseCode::CHANGED
        };
        task.handle(now, TaskInput::Response { id: request.id, code, format, payload: &payload }).unwrap();
    }
    assert_eq!(task.step(), lwm2m_fota::server::Step::Downloading);
    (task, observe_state)
}

#[divan::bench]
fn notification_text_state(bencher: Bencher) {
    let (task, observation) = downloading_task();
    bencher.with_inputs(|| task.clone()).bench_local_refs(|task| {
        let input = TaskInput::Notification { observation, format: ContentFormat::Text, payload: b"1" };
        task.handle(Instant::from_millis(1), black_box(input)).unwrap();
        while task.poll_output().is_some() {}
    });
}

#[divan::bench]
fn registration_update(bencher: Bencher) {
    let (task, _) = downloading_task();
    bencher.with_inputs(|| task.clone()).bench_local_refs(|task| {
        task.handle(Instant::from_millis(1), black_box(TaskInput::RegistrationUpdated)).unwrap();
        while task.poll_output().is_some() {}
    });
}

#[divan::bench]
fn send_state_and_result(bencher: Bencher) {
    let (task, _) = downloading_task();
    let payload = {
        let records = [
            Record::new(Path::resource(5, 0, 3), Value::Integer(1)),
            Record::new(Path::resource(5, 0, 5), Value::Integer(0)),
        ];
        let mut out = Vec::new();
        codec::encode(ContentFormat::SenmlCbor, &Path::ROOT, &records, &Registry::default(), &mut out).unwrap();
        out
    };
    bencher.with_inputs(|| task.clone()).bench_local_refs(|task| {
        let input = TaskInput::Send { format: ContentFormat::SenmlCbor, payload: &payload };
        task.handle(Instant::from_millis(1), black_box(input)).unwrap();
        while task.poll_output().is_some() {}
    });
}

#[divan::bench]
fn timeout_check(bencher: Bencher) {
    let (task, _) = downloading_task();
    bencher.with_inputs(|| task.clone()).bench_local_refs(|task| {
        task.handle_timeout(black_box(Instant::from_millis(1))).unwrap();
    });
}

/// The same task handles the input again and again, as a task in a server
/// does: its event buffer is warm, so these medians leave out the one
/// allocation a freshly cloned task makes for its first event.
mod steady {
    use super::*;

    fn run(bencher: Bencher, input: impl Fn() -> (ContentFormat, Vec<u8>, bool)) {
        let (mut task, observation) = downloading_task();
        let (format, payload, is_send) = input();
        let mut now = 1u64;
        bencher.bench_local(|| {
            now += 1;
            let input = if is_send {
                TaskInput::Send { format, payload: &payload }
            } else {
                TaskInput::Notification { observation, format, payload: &payload }
            };
            task.handle(Instant::from_millis(now), black_box(input)).unwrap();
            while task.poll_output().is_some() {}
        });
    }

    #[divan::bench]
    fn notification_text_state(bencher: Bencher) {
        run(bencher, || (ContentFormat::Text, b"1".to_vec(), false));
    }

    #[divan::bench]
    fn send_state_and_result(bencher: Bencher) {
        run(bencher, || {
            let records = [
                Record::new(Path::resource(5, 0, 3), Value::Integer(1)),
                Record::new(Path::resource(5, 0, 5), Value::Integer(0)),
            ];
            let mut out = Vec::new();
            codec::encode(ContentFormat::SenmlCbor, &Path::ROOT, &records, &Registry::default(), &mut out).unwrap();
            (ContentFormat::SenmlCbor, out, true)
        });
    }

    #[divan::bench]
    fn registration_update(bencher: Bencher) {
        let (mut task, _) = downloading_task();
        let mut now = 1u64;
        bencher.bench_local(|| {
            now += 1;
            task.handle(Instant::from_millis(now), black_box(TaskInput::RegistrationUpdated)).unwrap();
            while task.poll_output().is_some() {}
        });
    }
}

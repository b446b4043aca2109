//! One test (at least) per arm of the transition table: the task is put in a
//! phase, given one event, and what it became is checked.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use super::*;
use crate::model::{Instant, ProtocolSet, ResponseCode, State, UpdateResult};
use crate::server::config::{Delivery, RetryPolicy, Strategy, UpgradeConfig};
use crate::server::outcome::{Failure, Outcome, Step, TaskEvent};
use crate::server::task::facts::Facts;
use crate::server::task::requests::{Action, InFlight, Target};
use crate::server::task::{CachedModel, Known, Lifetime, TaskError, TaskOutput, UpgradeTask};

const T0: Instant = Instant::ZERO;

fn secs(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

fn config(strategy: Strategy) -> UpgradeConfig {
    let mut c = UpgradeConfig::new("http://fw.example/", "v2.bin", 4000);
    c.strategy = strategy;
    c.target_version = Some("2.0".into());
    c
}

/// A started task of a registered device, put in `phase`, with State and
/// Update Result known.
fn task_in(config: UpgradeConfig, phase: Phase, state: State, result: UpdateResult) -> UpgradeTask {
    let mut task = UpgradeTask::new(Arc::new(config));
    task.link.registered = true;
    task.on(T0, Event::Start);
    task.known.state = Some(state);
    task.known.result = Some(result);
    task.known.protocols = Some(ProtocolSet::EMPTY.with(crate::model::Protocol::Http));
    task.known.delivery = Some(crate::model::DeliveryMethod::Both);
    task.link.lifetime = Lifetime::Extended;
    task.phase = phase;
    task.events.clear();
    task
}

fn reads(phase: Phase) -> UpgradeTask {
    task_in(config(Strategy::Reads), phase, State::Idle, UpdateResult::Initial)
}

/// What a payload said (leaked: a test's facts live as long as it does).
fn facts(state: State, result: UpdateResult) -> Option<&'static Facts<'static>> {
    Some(alloc::boxed::Box::leak(alloc::boxed::Box::new(Facts {
        state: Some(state),
        result: Some(result),
        ..Facts::default()
    })))
}

fn answer(task: &mut UpgradeTask, action: Action, code: ResponseCode) {
    task.on(T0, Event::Answer { id: 1, action, code, facts: None });
}

fn look_answer(task: &mut UpgradeTask, action: Action, state: State, result: UpdateResult) {
    task.on(T0, Event::Answer { id: 1, action, code: ResponseCode::CONTENT, facts: facts(state, result) });
}

fn events(task: &mut UpgradeTask) -> Vec<TaskEvent> {
    core::iter::from_fn(|| task.events.pop_front()).collect()
}

fn failed(task: &UpgradeTask) -> Option<Failure> {
    match task.outcome() {
        Some(Outcome::Failed(failure)) => Some(failure.clone()),
        _ => None,
    }
}

fn rejected(step: Step, code: ResponseCode) -> Option<Failure> {
    Some(Failure::Rejected { step, code })
}

const NO_LOOK: Option<Look> = None;

fn pushing(next_block: u32) -> Phase {
    Phase::Pushing { next_block, restarts: 0, look: NO_LOOK }
}

// ----- operator commands -----

#[test]
fn start_arms_the_timeout_and_waits_for_the_device_or_inspects() {
    let mut task = UpgradeTask::new(Arc::new(config(Strategy::Reads)));
    task.on(secs(5), Event::Start);
    assert_eq!(task.phase, Phase::WaitingForDevice);
    assert_eq!(task.timers.get(Timer::Upgrade), Some(secs(5 + 20 * 60)));
    // Started twice: nothing changes.
    task.on(secs(9), Event::Start);
    assert_eq!(task.timers.get(Timer::Upgrade), Some(secs(5 + 20 * 60)));
    let mut registered = UpgradeTask::new(Arc::new(config(Strategy::Reads)));
    registered.link.registered = true;
    registered.on(T0, Event::Start);
    assert_eq!(registered.phase, Phase::Inspecting);
    assert_eq!(registered.timers.get(Timer::Step), Some(secs(60)));
}

#[test]
fn start_takes_the_cached_model_only_when_configured() {
    let cached =
        CachedModel { state: Some(State::Idle), result: Some(UpdateResult::Initial), ..CachedModel::default() };
    let mut c = config(Strategy::Reads);
    c.use_cached_data_model = true;
    let mut task = UpgradeTask::with_cached_model(Arc::new(c.clone()), cached);
    task.on(T0, Event::Start);
    assert_eq!(task.known.state, Some(State::Idle));
    c.use_cached_data_model = false;
    let mut task = UpgradeTask::with_cached_model(Arc::new(c), cached);
    task.on(T0, Event::Start);
    assert_eq!(task.known.state, None);
}

#[test]
fn cancel_resets_a_device_that_has_or_fetches_the_image() {
    let mut early = reads(Phase::Observing);
    early.on(T0, Event::Cancel);
    assert_eq!(failed(&early), Some(Failure::Cancelled));
    assert_eq!(early.phase, Phase::Finished { reset_owed: false, watch: None });
    let mut late = reads(Phase::Downloading);
    late.on(T0, Event::Cancel);
    assert_eq!(late.phase, Phase::Finished { reset_owed: true, watch: None });
    assert_eq!(late.wanted(), Some(Action::Reset));
    late.sent(9, Action::Reset);
    assert_eq!(late.phase, Phase::Finished { reset_owed: false, watch: None });
    // Lifetime restored after the reset; the requests are fire-and-forget.
    assert_eq!(late.in_flight, None);
    let mut fetching = task_in(config(Strategy::Reads), pushing(1), State::Downloading, UpdateResult::Initial);
    fetching.on(T0, Event::Cancel);
    assert_eq!(fetching.phase, Phase::Finished { reset_owed: true, watch: None });
    // Cancelled twice: the first outcome stays.
    let events_before = fetching.events.len();
    fetching.on(T0, Event::Cancel);
    assert_eq!(fetching.events.len(), events_before);
}

#[test]
fn release_sends_the_held_execute_and_an_early_release_holds_nothing() {
    let mut held = reads(Phase::HoldingExecute);
    held.on(T0, Event::ReleaseExecute);
    assert_eq!(held.phase, Phase::Executing { look: NO_LOOK });
    let mut c = config(Strategy::Reads);
    c.execute_immediately = false;
    let mut early = task_in(c, Phase::Downloading, State::Downloading, UpdateResult::Initial);
    early.on(T0, Event::ReleaseExecute);
    assert!(early.attempt.released);
    early.on(T0, Event::Notification { facts: facts(State::Downloaded, UpdateResult::Initial) });
    assert_eq!(early.phase, Phase::Executing { look: NO_LOOK });
    assert!(!early.events.contains(&TaskEvent::ExecuteHeld));
}

// ----- registration -----

#[test]
fn a_new_registration_settles_the_dropped_request() {
    let mut executing = reads(Phase::Executing { look: NO_LOOK });
    executing.on(T0, Event::Registered { dropped: Some(Action::Execute) });
    assert_eq!(executing.phase, Phase::Updating { unconfirmed: true });
    assert_eq!(executing.known.state, None);
    let mut observing = task_in(config(Strategy::ObserveOnly), Phase::Observing, State::Idle, UpdateResult::Initial);
    observing.observations.wanted = Target::State.bit();
    observing.on(T0, Event::Registered { dropped: Some(Action::Observe(Target::State)) });
    assert_eq!(observing.phase, Phase::Observing);
    let mut pushing_task = reads(pushing(3));
    pushing_task.on(T0, Event::Registered { dropped: Some(Action::PushBlock(2)) });
    assert_eq!(pushing_task.phase, pushing(2));
    let mut waiting = UpgradeTask::new(Arc::new(config(Strategy::Reads)));
    waiting.on(T0, Event::Start);
    waiting.link.registered = true;
    waiting.on(T0, Event::Registered { dropped: None });
    assert_eq!(waiting.phase, Phase::Inspecting);
}

#[test]
fn an_uplink_makes_s1_and_s2_read_and_resumes_a_stopped_action() {
    let mut s1 = reads(Phase::Downloading);
    s1.on(T0, Event::RegistrationUpdated);
    assert!(s1.attempt.read_owed);
    assert_eq!(s1.wanted(), Some(Action::ReadFirmware));
    let mut s3 = task_in(config(Strategy::ObserveInstance), Phase::Downloading, State::Idle, UpdateResult::Initial);
    s3.on(T0, Event::RegistrationUpdated);
    assert!(!s3.attempt.read_owed);
    // Only in steps that wait for the device.
    let mut observing = reads(Phase::Observing);
    observing.on(T0, Event::RegistrationUpdated);
    assert!(!observing.attempt.read_owed);
    let mut resumed = reads(Phase::WritingUri { look: NO_LOOK });
    resumed.resume = Some(Action::WriteUri);
    assert_eq!(resumed.wanted(), None);
    resumed.on(T0, Event::RegistrationUpdated);
    assert_eq!((resumed.resume, resumed.wanted()), (None, Some(Action::WriteUri)));
}

// ----- reports -----

#[test]
fn a_send_is_an_uplink_and_a_report_but_never_proof_of_a_lost_download() {
    let mut task = task_in(config(Strategy::Send), Phase::Downloading, State::Downloading, UpdateResult::Initial);
    task.attempt.seen_downloading = true;
    task.on(T0, Event::Send { facts: facts(State::Idle, UpdateResult::Initial) });
    assert_eq!(task.phase, Phase::Downloading);
    assert_eq!(task.known.state, Some(State::Idle));
    assert!(task.timers.is_armed(Timer::Window));
}

#[test]
fn a_notification_of_idle_after_downloading_writes_the_uri_again() {
    let mut task = task_in(config(Strategy::ObserveResources), Phase::Downloading, State::Idle, UpdateResult::Initial);
    task.on(T0, Event::Notification { facts: facts(State::Idle, UpdateResult::Initial) });
    assert_eq!(task.phase, Phase::Downloading, "never seen Downloading: nothing is lost");
    task.on(T0, Event::Notification { facts: facts(State::Downloading, UpdateResult::Initial) });
    task.on(T0, Event::Notification { facts: facts(State::Idle, UpdateResult::Initial) });
    assert_eq!(task.phase, Phase::WritingUri { look: NO_LOOK });
    assert!(events(&mut task).contains(&TaskEvent::StepChanged(Step::WritingUri)));
    // Undecodable: no facts, nothing happens.
    task.on(T0, Event::Notification { facts: None });
    assert_eq!(task.phase, Phase::WritingUri { look: NO_LOOK });
}

// ----- answers -----

#[test]
fn busy_waits_max_age_within_one_second_and_the_step_timeout() {
    let mut task = reads(Phase::WritingUri { look: NO_LOOK });
    task.on(secs(10), Event::Busy { action: Action::WriteUri, max_age: Some(Duration::ZERO) });
    assert_eq!(task.timers.get(Timer::Busy), Some(secs(11)));
    task.on(secs(10), Event::Busy { action: Action::WriteUri, max_age: None });
    assert_eq!(task.timers.get(Timer::Busy), Some(secs(70)));
    task.on(secs(10), Event::Busy { action: Action::WriteUri, max_age: Some(Duration::from_secs(600)) });
    assert_eq!(task.timers.get(Timer::Busy), Some(secs(70)), "capped by the step timeout");
    let mut push = reads(pushing(5));
    push.on(T0, Event::Busy { action: Action::PushBlock(4), max_age: Some(Duration::from_secs(3)) });
    assert_eq!(push.phase, pushing(4));
}

#[test]
fn a_refused_version_read_is_informative_without_a_target() {
    let mut c = config(Strategy::Reads);
    c.target_version = None;
    let mut task = task_in(c, Phase::Verifying, State::Idle, UpdateResult::Success);
    answer(&mut task, Action::ReadVersion, ResponseCode::NOT_FOUND);
    assert_eq!(task.outcome(), Some(&Outcome::Succeeded { version: None }));
    let mut with_target = task_in(config(Strategy::Reads), Phase::Verifying, State::Idle, UpdateResult::Success);
    answer(&mut with_target, Action::ReadVersion, ResponseCode::NOT_FOUND);
    assert_eq!(failed(&with_target), rejected(Step::Verifying, ResponseCode::NOT_FOUND));
}

#[test]
fn a_refused_look_fails_the_strategy() {
    let mut task = task_in(config(Strategy::ObserveResources), Phase::Observing, State::Idle, UpdateResult::Initial);
    answer(&mut task, Action::Observe(Target::State), ResponseCode::METHOD_NOT_ALLOWED);
    assert_eq!(failed(&task), rejected(Step::Observing, ResponseCode::METHOD_NOT_ALLOWED));
}

fn looking(phase: Phase, code: ResponseCode) -> UpgradeTask {
    let look = Some(Look { code, seen: None });
    let phase = match phase {
        Phase::WritingUri { .. } => Phase::WritingUri { look },
        Phase::Executing { .. } => Phase::Executing { look },
        Phase::Pushing { next_block, restarts, .. } => Phase::Pushing { next_block, restarts, look },
        other => other,
    };
    let mut task = reads(phase);
    task.attempt.push = matches!(phase, Phase::Pushing { .. });
    task
}

#[test]
fn the_look_after_a_refused_uri_write() {
    let uri = Phase::WritingUri { look: NO_LOOK };
    // The device fetches what our earlier copy named.
    let mut fetching = looking(uri, ResponseCode::BAD_REQUEST);
    look_answer(&mut fetching, Action::ReadFirmware, State::Downloading, UpdateResult::Initial);
    assert_eq!(fetching.phase, Phase::Downloading);
    // Its download failed since: that failure is the news (retried, B8).
    let mut lost = looking(uri, ResponseCode::BAD_REQUEST);
    look_answer(&mut lost, Action::ReadFirmware, State::Idle, UpdateResult::ConnectionLost);
    assert_eq!(lost.phase, Phase::Inspecting);
    assert_eq!(lost.attempt.number, 2);
    // Invalid URI: the refusal's reason.
    let mut invalid = looking(uri, ResponseCode::BAD_REQUEST);
    look_answer(&mut invalid, Action::ReadFirmware, State::Idle, UpdateResult::InvalidUri);
    assert_eq!(failed(&invalid), rejected(Step::WritingUri, ResponseCode::BAD_REQUEST));
    // Idle: written once more, and a second refusal counts.
    let mut idle = looking(uri, ResponseCode::BAD_REQUEST);
    look_answer(&mut idle, Action::ReadFirmware, State::Idle, UpdateResult::Initial);
    assert_eq!((idle.phase, idle.attempt.refused), (uri, Some(Action::WriteUri)));
    assert_eq!(idle.wanted(), Some(Action::WriteUri));
    answer(&mut idle, Action::WriteUri, ResponseCode::BAD_REQUEST);
    assert_eq!(failed(&idle), rejected(Step::WritingUri, ResponseCode::BAD_REQUEST));
}

#[test]
fn the_look_after_a_refused_execute() {
    let exec = Phase::Executing { look: NO_LOOK };
    let code = ResponseCode::METHOD_NOT_ALLOWED;
    let mut updating = looking(exec, code);
    look_answer(&mut updating, Action::ReadFirmware, State::Updating, UpdateResult::Initial);
    assert_eq!(updating.phase, Phase::Updating { unconfirmed: false });
    let mut done = looking(exec, code);
    look_answer(&mut done, Action::ReadFirmware, State::Idle, UpdateResult::Success);
    assert_eq!(done.phase, Phase::Verifying, "Updating, then at once Verifying");
    let mut again = looking(exec, code);
    look_answer(&mut again, Action::ReadFirmware, State::Downloaded, UpdateResult::Initial);
    assert_eq!((again.phase, again.wanted()), (exec, Some(Action::Execute)));
    answer(&mut again, Action::Execute, code);
    assert_eq!(failed(&again), rejected(Step::Executing, code));
    let mut waiting = looking(exec, code);
    look_answer(&mut waiting, Action::ReadFirmware, State::Downloading, UpdateResult::Initial);
    assert_eq!((waiting.phase, waiting.attempt.refused), (Phase::Downloading, None));
    let mut last_block = looking(exec, code);
    last_block.attempt.push = true;
    look_answer(&mut last_block, Action::ReadFirmware, State::Downloading, UpdateResult::Initial);
    assert_eq!(last_block.phase, pushing(3), "4000 bytes in 1024-byte blocks: the last is 3");
    let mut cancelled = looking(exec, code);
    look_answer(&mut cancelled, Action::ReadFirmware, State::Idle, UpdateResult::Cancelled);
    assert_eq!(failed(&cancelled), rejected(Step::Executing, code));
}

#[test]
fn the_look_after_a_refused_push_block() {
    let code = ResponseCode::BAD_REQUEST;
    let mut held = looking(pushing(1), code);
    look_answer(&mut held, Action::ReadFirmware, State::Downloading, UpdateResult::Initial);
    assert_eq!((held.phase, held.attempt.refused), (pushing(2), Some(Action::PushBlock(1))));
    let mut last = looking(pushing(3), code);
    look_answer(&mut last, Action::ReadFirmware, State::Downloading, UpdateResult::Initial);
    assert_eq!(last.phase, pushing(3));
    let mut complete = looking(pushing(3), code);
    look_answer(&mut complete, Action::ReadFirmware, State::Downloaded, UpdateResult::Initial);
    assert_eq!(complete.phase, Phase::Executing { look: NO_LOOK });
    let mut idle = looking(pushing(1), code);
    look_answer(&mut idle, Action::ReadFirmware, State::Idle, UpdateResult::Initial);
    assert_eq!(failed(&idle), rejected(Step::Pushing, code));
}

#[test]
fn under_s5_the_look_completes_with_both_observations() {
    let look = Some(Look { code: ResponseCode::BAD_REQUEST, seen: None });
    let mut task =
        task_in(config(Strategy::ObserveOnly), Phase::WritingUri { look }, State::Idle, UpdateResult::Initial);
    task.refresh_state();
    assert_eq!(task.wanted(), Some(Action::Observe(Target::State)));
    let state = Some(Facts { state: Some(State::Downloading), ..Facts::default() });
    task.on(
        T0,
        Event::Answer {
            id: 7,
            action: Action::Observe(Target::State),
            code: ResponseCode::CONTENT,
            facts: state.as_ref(),
        },
    );
    assert_eq!(
        task.phase,
        Phase::WritingUri { look: Some(Look { code: ResponseCode::BAD_REQUEST, seen: Some(State::Downloading) }) }
    );
    assert_eq!(task.wanted(), Some(Action::Observe(Target::Result)));
    let result = Some(Facts { result: Some(UpdateResult::Initial), ..Facts::default() });
    task.on(
        T0,
        Event::Answer {
            id: 8,
            action: Action::Observe(Target::Result),
            code: ResponseCode::CONTENT,
            facts: result.as_ref(),
        },
    );
    assert_eq!(task.phase, Phase::Downloading, "the State the look itself saw decides");
}

#[test]
fn a_read_showing_our_download_is_the_uri_delivered() {
    let uri = Phase::WritingUri { look: NO_LOOK };
    let mut before_any_write = reads(uri);
    look_answer(&mut before_any_write, Action::ReadFirmware, State::Downloading, UpdateResult::Initial);
    assert_eq!(before_any_write.phase, uri, "only a URI we wrote can have started it");
    let mut written = reads(uri);
    written.history.uri_writes = 1;
    look_answer(&mut written, Action::ReadFirmware, State::Downloading, UpdateResult::Initial);
    assert_eq!(written.phase, Phase::Downloading);
    assert!(written.attempt.seen_downloading);
    // A Read in Downloading that shows the download lost.
    look_answer(&mut written, Action::ReadFirmware, State::Idle, UpdateResult::Initial);
    assert_eq!(written.phase, uri);
}

#[test]
fn reset_answers() {
    let mut done = task_in(config(Strategy::Reads), Phase::Resetting, State::Idle, UpdateResult::ConnectionLost);
    answer(&mut done, Action::Reset, ResponseCode::CHANGED);
    assert_eq!(done.known.result, Some(UpdateResult::Initial));
    // Through the lifetime (already extended) and the observations (none under S1).
    assert_eq!(done.phase, Phase::WritingUri { look: NO_LOOK });
    assert_eq!(events(&mut done)[0], TaskEvent::StepChanged(Step::ExtendingLifetime));
    let mut updating = reads(Phase::Resetting);
    answer(&mut updating, Action::Reset, ResponseCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        (updating.phase, updating.known.state, updating.attempt.read_owed),
        (Phase::Resetting, Some(State::Updating), true)
    );
    let mut refused = reads(Phase::Resetting);
    answer(&mut refused, Action::Reset, ResponseCode::new(4, 3));
    assert_eq!(failed(&refused), rejected(Step::Resetting, ResponseCode::new(4, 3)));
}

#[test]
fn lifetime_answers_whatever_the_code() {
    let mut task = reads(Phase::ExtendingLifetime);
    task.link.lifetime = Lifetime::Original;
    answer(&mut task, Action::WriteLifetime, ResponseCode::NOT_FOUND);
    assert_eq!(task.link.lifetime, Lifetime::Extended);
    assert_eq!(task.phase, Phase::WritingUri { look: NO_LOOK }, "then Observing (nothing to observe under S1)");
    answer(&mut task, Action::RestoreLifetime, ResponseCode::CHANGED);
    assert_eq!(task.link.lifetime, Lifetime::Restored);
}

#[test]
fn uri_write_answers() {
    let uri = Phase::WritingUri { look: NO_LOOK };
    let mut changed = task_in(config(Strategy::Reads), uri, State::Idle, UpdateResult::Success);
    answer(&mut changed, Action::WriteUri, ResponseCode::CHANGED);
    assert_eq!((changed.phase, changed.known.result), (Phase::Downloading, None));
    let mut ambiguous = reads(uri);
    answer(&mut ambiguous, Action::WriteUri, ResponseCode::NOT_ACCEPTABLE);
    assert_eq!(
        ambiguous.phase,
        Phase::WritingUri { look: Some(Look { code: ResponseCode::NOT_ACCEPTABLE, seen: None }) }
    );
    assert_eq!(ambiguous.wanted(), Some(Action::ReadFirmware));
    let mut plain = reads(uri);
    answer(&mut plain, Action::WriteUri, ResponseCode::NOT_FOUND);
    assert_eq!(failed(&plain), rejected(Step::WritingUri, ResponseCode::NOT_FOUND));
}

#[test]
fn push_block_answers() {
    let mut c = config(Strategy::Reads);
    c.block_size = 1000;
    let mut task = task_in(c, pushing(0), State::Idle, UpdateResult::Initial);
    task.attempt.push = true;
    answer(&mut task, Action::PushBlock(0), ResponseCode::CONTINUE);
    assert_eq!(task.phase, pushing(1));
    assert_eq!(events(&mut task), [TaskEvent::PushProgress { bytes: 1024, total: 4000 }], "the block size sent");
    for restart in 1..=3 {
        answer(&mut task, Action::PushBlock(1), ResponseCode::REQUEST_ENTITY_INCOMPLETE);
        assert_eq!(task.phase, Phase::Pushing { next_block: 0, restarts: restart, look: NO_LOOK });
    }
    answer(&mut task, Action::PushBlock(0), ResponseCode::REQUEST_ENTITY_INCOMPLETE);
    assert_eq!(failed(&task), rejected(Step::Pushing, ResponseCode::REQUEST_ENTITY_INCOMPLETE));
    // 2.31 to the last block: nothing is left to send, so it is refused
    // (before, the task went on pushing empty blocks past the image's end).
    let mut beyond = reads(pushing(3));
    beyond.attempt.push = true;
    answer(&mut beyond, Action::PushBlock(3), ResponseCode::CONTINUE);
    assert_eq!(failed(&beyond), rejected(Step::Pushing, ResponseCode::CONTINUE));
    let mut last = reads(pushing(3));
    answer(&mut last, Action::PushBlock(3), ResponseCode::CHANGED);
    assert_eq!(last.known.state, Some(State::Downloaded));
    assert_eq!(last.phase, Phase::Executing { look: NO_LOOK });
    let mut large = reads(pushing(0));
    answer(&mut large, Action::PushBlock(0), ResponseCode::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(failed(&large), Some(Failure::UpdateResult(UpdateResult::NotEnoughFlash)));
    let mut ambiguous = reads(pushing(2));
    answer(&mut ambiguous, Action::PushBlock(2), ResponseCode::BAD_REQUEST);
    assert!(matches!(ambiguous.phase, Phase::Pushing { next_block: 2, look: Some(_), .. }));
    let mut twice = reads(pushing(2));
    twice.attempt.refused = Some(Action::PushBlock(2));
    answer(&mut twice, Action::PushBlock(2), ResponseCode::BAD_REQUEST);
    assert_eq!(failed(&twice), rejected(Step::Pushing, ResponseCode::BAD_REQUEST));
}

#[test]
fn execute_answers() {
    let exec = Phase::Executing { look: NO_LOOK };
    let mut changed = task_in(config(Strategy::Reads), exec, State::Downloaded, UpdateResult::Initial);
    answer(&mut changed, Action::Execute, ResponseCode::CHANGED);
    assert_eq!((changed.phase, changed.known.state), (Phase::Updating { unconfirmed: false }, Some(State::Updating)));
    let mut ambiguous = reads(exec);
    answer(&mut ambiguous, Action::Execute, ResponseCode::METHOD_NOT_ALLOWED);
    assert!(matches!(ambiguous.phase, Phase::Executing { look: Some(_) }));
    let mut other = reads(exec);
    answer(&mut other, Action::Execute, ResponseCode::NOT_FOUND);
    assert_eq!(failed(&other), rejected(Step::Executing, ResponseCode::NOT_FOUND));
}

#[test]
fn an_answer_to_another_phase_is_stale() {
    let mut task = reads(Phase::Downloading);
    answer(&mut task, Action::WriteUri, ResponseCode::BAD_REQUEST);
    answer(&mut task, Action::Execute, ResponseCode::CHANGED);
    answer(&mut task, Action::PushBlock(0), ResponseCode::CONTINUE);
    assert_eq!((task.phase, task.outcome()), (Phase::Downloading, None));
}

// ----- lost exchanges -----

#[test]
fn lost_exchanges() {
    let mut lifetime = reads(Phase::ExtendingLifetime);
    lifetime.link.lifetime = Lifetime::Original;
    lifetime.on(T0, Event::Lost { action: Action::WriteLifetime, unanswered: false });
    assert_eq!(lifetime.link.lifetime, Lifetime::Extended);
    let mut execute = reads(Phase::Executing { look: NO_LOOK });
    execute.on(T0, Event::Lost { action: Action::Execute, unanswered: false });
    assert_eq!(execute.phase, Phase::Updating { unconfirmed: true });
    // Lost once: sent again; twice in a row: a downlink failure (retried).
    let mut uri = reads(Phase::WritingUri { look: NO_LOOK });
    uri.on(T0, Event::Lost { action: Action::WriteUri, unanswered: false });
    assert_eq!((uri.outcome(), uri.wanted()), (None, Some(Action::WriteUri)));
    uri.on(T0, Event::Lost { action: Action::WriteUri, unanswered: false });
    assert_eq!(uri.attempt.number, 2);
    let mut c = config(Strategy::Reads);
    c.retry = RetryPolicy::NONE;
    let mut once = task_in(c, Phase::WritingUri { look: NO_LOOK }, State::Idle, UpdateResult::Initial);
    once.link.lost_one = true;
    once.on(T0, Event::Lost { action: Action::WriteUri, unanswered: false });
    assert_eq!(failed(&once), Some(Failure::DownlinkFailure { step: Step::WritingUri }));
    // U7: resumed at the next uplink.
    let mut c = config(Strategy::ObserveOnly);
    c.resume_after_downlink_failure = true;
    let mut resume = task_in(c, Phase::Observing, State::Idle, UpdateResult::Initial);
    resume.observations.wanted = Target::State.bit();
    resume.on(secs(3), Event::Lost { action: Action::Observe(Target::State), unanswered: false });
    assert_eq!((resume.resume, resume.observations.wanted), (Some(Action::Observe(Target::State)), 0));
    assert_eq!(resume.timers.get(Timer::Window), Some(secs(3)));
}

// ----- deadlines -----

#[test]
fn the_upgrade_timeout_fails_and_ends_a_watch() {
    let mut task = task_in(config(Strategy::Send), Phase::Downloading, State::Downloading, UpdateResult::Initial);
    task.on(secs(1200), Event::Timer(Timer::Upgrade));
    assert_eq!(failed(&task), Some(Failure::Timeout { step: Step::Downloading, no_send_received: true }));
    assert!(!task.watching(), "no Execute was sent");
    let mut watched = reads(Phase::Updating { unconfirmed: false });
    watched.history.execute_sent = true;
    watched.on(secs(1200), Event::Timer(Timer::Upgrade));
    assert!(watched.watching());
    assert_eq!(watched.timers.get(Timer::Upgrade), Some(secs(2400)));
    assert_eq!(watched.wanted(), Some(Action::RestoreLifetime));
    watched.sent(20, Action::RestoreLifetime);
    assert_eq!(watched.in_flight, None, "fire and forget");
    assert_eq!(watched.wanted(), Some(Action::ReadFirmware), "looks at once");
    watched.sent(21, Action::ReadFirmware);
    assert_eq!(watched.in_flight.map(|f| f.id), Some(21), "a look of the watch is awaited");
    watched.on(secs(2400), Event::Timer(Timer::Upgrade));
    assert!(!watched.watching());
}

#[test]
fn an_unanswered_request_is_lost_and_a_watch_forgets_it() {
    let mut task = reads(Phase::WritingUri { look: NO_LOOK });
    task.in_flight = Some(InFlight { id: 4, action: Action::WriteUri });
    task.timers.set(Timer::Request, secs(93));
    task.handle_timeout(secs(93)).unwrap();
    assert_eq!((task.in_flight, task.link.lost_one), (None, true));
    let watch = Phase::Finished { reset_owed: false, watch: Some(Watch { look: true }) };
    let mut finished = reads(watch);
    finished.in_flight = Some(InFlight { id: 4, action: Action::ReadFirmware });
    finished.timers.set(Timer::Request, secs(93));
    finished.handle_timeout(secs(93)).unwrap();
    assert_eq!((finished.in_flight, finished.link.lost_one), (None, false));
    // A look of the watch that CoAP gave up on goes once more.
    let mut lost = reads(watch);
    lost.link.lifetime = Lifetime::Restored;
    lost.on(secs(93), Event::Lost { action: Action::ReadFirmware, unanswered: false });
    assert_eq!((lost.link.lost_one, lost.wanted()), (true, Some(Action::ReadFirmware)));
}

#[test]
fn the_step_deadline_falls_back_as_the_strategy_allows() {
    let mut s1 = reads(Phase::Downloading);
    s1.on(secs(60), Event::Timer(Timer::Step));
    assert!(s1.attempt.read_owed);
    assert_eq!(s1.timers.get(Timer::Step), Some(secs(120)));
    let mut s5 = task_in(config(Strategy::ObserveOnly), Phase::Downloading, State::Idle, UpdateResult::Initial);
    s5.on(secs(60), Event::Timer(Timer::Step));
    assert_eq!(s5.wanted(), Some(Action::Observe(Target::State)));
    let mut silent = task_in(config(Strategy::Send), Phase::Downloading, State::Idle, UpdateResult::Initial);
    silent.on(secs(60), Event::Timer(Timer::Step));
    assert!(!silent.attempt.read_owed, "S4 waits for a device that never sent");
    let mut inspecting = task_in(config(Strategy::Send), Phase::Inspecting, State::Idle, UpdateResult::Initial);
    inspecting.on(secs(60), Event::Timer(Timer::Step));
    assert!(inspecting.attempt.read_owed);
    // The 5.03 wait and the window have nothing to do when they end.
    let before = s1.clone();
    s1.on(secs(60), Event::Timer(Timer::Busy));
    s1.on(secs(60), Event::Timer(Timer::Window));
    assert_eq!(s1, before);
}

// ----- settling -----

#[test]
fn inspection_decides() {
    let mut unknown = reads(Phase::Inspecting);
    unknown.known.result = None;
    unknown.on(T0, Event::Check);
    assert_eq!(unknown.phase, Phase::Inspecting);
    let mut installing = task_in(config(Strategy::Reads), Phase::Inspecting, State::Updating, UpdateResult::Initial);
    installing.on(T0, Event::Check);
    assert_eq!(installing.phase, Phase::Inspecting);
    // Idle + Update Result 1: the version first.
    let mut done = task_in(config(Strategy::Reads), Phase::Inspecting, State::Idle, UpdateResult::Success);
    done.on(T0, Event::Check);
    assert_eq!((done.phase, done.wanted()), (Phase::Inspecting, Some(Action::ReadVersion)));
    done.known.version = Some("2.0".into());
    done.on(T0, Event::Check);
    assert_eq!(done.outcome(), Some(&Outcome::Succeeded { version: Some(String::from("2.0")) }));
    let mut mismatch = task_in(config(Strategy::Reads), Phase::Inspecting, State::Idle, UpdateResult::Success);
    mismatch.known.version = Some("1.0".into());
    mismatch.history.execute_sent = true;
    mismatch.on(T0, Event::Check);
    assert!(matches!(failed(&mismatch), Some(Failure::VersionMismatch { .. })));
    let mut other = task_in(config(Strategy::Reads), Phase::Inspecting, State::Idle, UpdateResult::Success);
    other.known.version = Some("1.0".into());
    other.on(T0, Event::Check);
    assert_eq!(other.phase, Phase::WritingUri { look: NO_LOOK }, "another version, nothing of ours applied: upgrade");
    let mut c = config(Strategy::Reads);
    c.target_version = None;
    let mut untargeted = task_in(c, Phase::Inspecting, State::Idle, UpdateResult::Success);
    untargeted.history.execute_sent = true;
    untargeted.on(T0, Event::Check);
    assert_eq!(untargeted.phase, Phase::Verifying);
    let mut busy = task_in(config(Strategy::Reads), Phase::Inspecting, State::Downloaded, UpdateResult::Initial);
    busy.on(T0, Event::Check);
    assert_eq!(busy.phase, Phase::Resetting);
    let mut c = config(Strategy::Reads);
    c.delivery = Delivery::Push;
    let mut no_push = task_in(c, Phase::Inspecting, State::Idle, UpdateResult::Initial);
    no_push.known.delivery = Some(crate::model::DeliveryMethod::Pull);
    no_push.on(T0, Event::Check);
    assert!(matches!(failed(&no_push), Some(Failure::UnsupportedDeliveryMethod { .. })));
}

#[test]
fn lifetime_and_observations_settle_into_the_delivery() {
    let mut c = config(Strategy::ObserveResources);
    c.extend_lifetime = false;
    let mut task = task_in(c, Phase::ExtendingLifetime, State::Idle, UpdateResult::Initial);
    task.on(T0, Event::Check);
    assert_eq!(task.phase, Phase::Observing);
    assert_eq!(task.wanted(), Some(Action::Observe(Target::State)));
    task.observations.established(Target::State, 3);
    task.observations.established(Target::Result, 4);
    task.on(T0, Event::Check);
    assert_eq!(task.phase, Phase::WritingUri { look: NO_LOOK });
    let mut push = reads(Phase::Observing);
    push.attempt.push = true;
    push.on(T0, Event::Check);
    assert_eq!(push.phase, pushing(0));
}

#[test]
fn a_report_of_downloaded_answers_the_last_block_in_flight() {
    let mut task = reads(pushing(3));
    task.in_flight = Some(InFlight { id: 9, action: Action::PushBlock(3) });
    task.known.state = Some(State::Downloaded);
    task.on(T0, Event::Check);
    assert_eq!(task.in_flight, None);
    assert_eq!(task.phase, Phase::Executing { look: NO_LOOK });
    let mut earlier = reads(pushing(2));
    earlier.in_flight = Some(InFlight { id: 9, action: Action::PushBlock(2) });
    earlier.known.state = Some(State::Downloaded);
    earlier.on(T0, Event::Check);
    assert_eq!(earlier.phase, pushing(2));
}

#[test]
fn downloading_settles() {
    let mut c = config(Strategy::Reads);
    c.execute_immediately = false;
    let mut held = task_in(c, Phase::Downloading, State::Downloaded, UpdateResult::Initial);
    held.on(T0, Event::Check);
    assert_eq!(held.phase, Phase::HoldingExecute);
    assert_eq!(events(&mut held), [TaskEvent::ExecuteHeld, TaskEvent::StepChanged(Step::HoldingExecute)]);
    let mut automatic = task_in(config(Strategy::Reads), Phase::Downloading, State::Updating, UpdateResult::Initial);
    automatic.on(T0, Event::Check);
    assert_eq!(automatic.phase, Phase::Updating { unconfirmed: false });
    let mut failed_update =
        task_in(config(Strategy::Reads), Phase::Downloading, State::Downloaded, UpdateResult::UpdateFailed);
    failed_update.on(T0, Event::Check);
    assert_eq!(failed(&failed_update), Some(Failure::UpdateResult(UpdateResult::UpdateFailed)));
    let mut retried = task_in(config(Strategy::Reads), Phase::Downloading, State::Idle, UpdateResult::ConnectionLost);
    retried.on(T0, Event::Check);
    assert_eq!((retried.phase, retried.attempt.number, retried.attempt.read_owed), (Phase::Inspecting, 2, true));
    let mut waiting = task_in(config(Strategy::Reads), Phase::Downloading, State::Downloading, UpdateResult::Initial);
    waiting.on(T0, Event::Check);
    assert_eq!(waiting.phase, Phase::Downloading);
}

#[test]
fn updating_and_verifying_settle() {
    let mut done =
        task_in(config(Strategy::Reads), Phase::Updating { unconfirmed: false }, State::Idle, UpdateResult::Success);
    done.on(T0, Event::Check);
    assert_eq!((done.phase, done.wanted()), (Phase::Verifying, Some(Action::ReadVersion)));
    let mut unconfirmed = task_in(
        config(Strategy::Reads),
        Phase::Updating { unconfirmed: true },
        State::Downloaded,
        UpdateResult::Initial,
    );
    unconfirmed.on(T0, Event::Check);
    assert_eq!(unconfirmed.phase, Phase::Executing { look: NO_LOOK });
    let mut confirmed = task_in(
        config(Strategy::Reads),
        Phase::Updating { unconfirmed: false },
        State::Downloaded,
        UpdateResult::Initial,
    );
    confirmed.on(T0, Event::Check);
    assert_eq!(confirmed.phase, Phase::Updating { unconfirmed: false });
    let mut integrity = task_in(
        config(Strategy::Reads),
        Phase::Updating { unconfirmed: false },
        State::Idle,
        UpdateResult::IntegrityCheckFailure,
    );
    integrity.on(T0, Event::Check);
    assert_eq!(integrity.attempt.number, 2);
    let mut wrong = task_in(config(Strategy::Reads), Phase::Verifying, State::Idle, UpdateResult::Success);
    wrong.known.version = Some("1.0".into());
    wrong.on(T0, Event::Check);
    assert!(matches!(failed(&wrong), Some(Failure::VersionMismatch { .. })));
}

#[test]
fn a_late_success_needs_idle_result_1_and_the_target() {
    let mut task = reads(Phase::Updating { unconfirmed: false });
    task.history.execute_sent = true;
    task.on(secs(1200), Event::Timer(Timer::Upgrade));
    let other = Facts {
        state: Some(State::Idle),
        result: Some(UpdateResult::Success),
        version: Some("1.0".into()),
        ..Facts::default()
    };
    task.on(secs(1300), Event::Send { facts: Some(&other) });
    assert!(task.watching(), "another version is no success");
    let target = Facts { version: Some("2.0".into()), ..other };
    task.on(secs(1300), Event::Send { facts: Some(&target) });
    assert!(matches!(task.outcome(), Some(Outcome::LateSuccess { .. })));
    assert!(!task.watching());
}

#[test]
fn commands_obey_the_time_rule() {
    let mut task = UpgradeTask::new(Arc::new(config(Strategy::Reads)));
    task.start(secs(10)).unwrap();
    assert_eq!(task.cancel(secs(9)), Err(TaskError::TimeWentBackwards));
    assert_eq!(task.release_execute(secs(9)), Err(TaskError::TimeWentBackwards));
    assert_eq!(task.start(secs(9)), Err(TaskError::TimeWentBackwards));
    assert_eq!(task.outcome(), None);
    task.cancel(secs(10)).unwrap();
    assert_eq!(failed(&task), Some(Failure::Cancelled));
    assert!(matches!(task.poll_output(), Some(TaskOutput::Event(_))));
}

#[test]
fn a_retry_forgets_the_last_attempts_resume() {
    let mut c = config(Strategy::ObserveResources);
    c.resume_after_downlink_failure = true;
    let mut task = task_in(c, Phase::Downloading, State::Downloading, UpdateResult::Initial);
    task.on(T0, Event::Lost { action: Action::ReadFirmware, unanswered: false });
    assert_eq!(task.resume, Some(Action::ReadFirmware));
    task.on(T0, Event::Notification { facts: facts(State::Idle, UpdateResult::ConnectionLost) });
    assert_eq!((task.phase, task.attempt.number, task.resume), (Phase::Inspecting, 2, None));
    assert_eq!(task.wanted(), Some(Action::ReadFirmware), "the new attempt inspects at once");
}

#[test]
fn a_cancel_while_verifying_keeps_update_result_1() {
    let mut task = task_in(config(Strategy::Reads), Phase::Verifying, State::Idle, UpdateResult::Success);
    task.on(T0, Event::Cancel);
    assert_eq!(task.phase, Phase::Finished { reset_owed: false, watch: None });
    let mut updating = reads(Phase::Updating { unconfirmed: false });
    updating.on(T0, Event::Cancel);
    assert_eq!(updating.phase, Phase::Finished { reset_owed: true, watch: None });
}

#[test]
fn an_endless_timeout_still_retries() {
    let mut c = config(Strategy::Reads);
    c.timeout = Duration::MAX;
    let mut task = UpgradeTask::new(Arc::new(c));
    task.link.registered = true;
    task.on(T0, Event::Start);
    assert!(task.poll_timeout().is_some());
    task.known = Known { state: Some(State::Idle), result: Some(UpdateResult::ConnectionLost), ..Known::default() };
    task.phase = Phase::Downloading;
    task.on(T0, Event::Check);
    assert_eq!(task.attempt.number, 2);
}

// ----- C6: the adaptive strategy -----

fn with_fallback(strategy: Strategy) -> UpgradeConfig {
    let mut c = config(strategy);
    c.fallback = true;
    c
}

#[test]
fn a_refused_observe_falls_back_to_reads() {
    for (strategy, phase) in [
        (Strategy::ObserveResources, Phase::Observing),
        (Strategy::ObserveInstance, Phase::Observing),
        (Strategy::ObserveOnly, Phase::Inspecting),
        (Strategy::ObserveOnly, Phase::Verifying),
    ] {
        for code in [ResponseCode::METHOD_NOT_ALLOWED, ResponseCode::NOT_FOUND, NOT_IMPLEMENTED] {
            let mut task = task_in(with_fallback(strategy), phase, State::Idle, UpdateResult::Initial);
            task.observations.wanted = task.observe_targets();
            answer(&mut task, Action::Observe(Target::State), code);
            assert_eq!(task.outcome(), None, "{strategy:?} {code}");
            assert!(task.fell_back() && task.history.fell_back);
            assert_eq!((task.strategy_used(), task.observations.wanted), (Strategy::Reads, 0));
            let changed = TaskEvent::StrategyChanged { from: strategy, to: Strategy::Reads };
            assert_eq!(events(&mut task).first(), Some(&changed), "{strategy:?} {code}");
            // The phase goes on with reads: no Observe again.
            let next = task.wanted();
            assert!(!matches!(next, Some(Action::Observe(_))), "{strategy:?} {phase:?}: {next:?}");
        }
    }
    // Observing with nothing left to observe moves on.
    let mut observing =
        task_in(with_fallback(Strategy::ObserveResources), Phase::Observing, State::Idle, UpdateResult::Initial);
    observing.observations.wanted = observing.observe_targets();
    answer(&mut observing, Action::Observe(Target::State), ResponseCode::METHOD_NOT_ALLOWED);
    assert_eq!(observing.phase, Phase::WritingUri { look: NO_LOOK });
    // U9 turns S1 into S2; its refused Observe falls back to plain S1.
    let mut c = with_fallback(Strategy::Reads);
    c.use_observe = true;
    let mut u9 = task_in(c, Phase::Observing, State::Idle, UpdateResult::Initial);
    answer(&mut u9, Action::Observe(Target::Result), ResponseCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        events(&mut u9).first(),
        Some(&TaskEvent::StrategyChanged { from: Strategy::ObserveResources, to: Strategy::Reads })
    );
}

#[test]
fn without_fallback_or_for_other_codes_a_refused_observe_still_fails() {
    let mut strict = task_in(config(Strategy::ObserveResources), Phase::Observing, State::Idle, UpdateResult::Initial);
    answer(&mut strict, Action::Observe(Target::State), ResponseCode::METHOD_NOT_ALLOWED);
    assert_eq!(failed(&strict), rejected(Step::Observing, ResponseCode::METHOD_NOT_ALLOWED));
    assert_eq!(strict.strategy_used(), Strategy::ObserveResources);
    // 4.00 is no "not supported": the fallback does not hide it.
    let mut bad =
        task_in(with_fallback(Strategy::ObserveResources), Phase::Observing, State::Idle, UpdateResult::Initial);
    answer(&mut bad, Action::Observe(Target::State), ResponseCode::BAD_REQUEST);
    assert_eq!(failed(&bad), rejected(Step::Observing, ResponseCode::BAD_REQUEST));
    assert!(!bad.fell_back());
    // A refused Read is no refused Observe.
    let mut read = task_in(with_fallback(Strategy::Reads), Phase::Verifying, State::Idle, UpdateResult::Success);
    answer(&mut read, Action::ReadVersion, ResponseCode::METHOD_NOT_ALLOWED);
    assert_eq!(failed(&read), rejected(Step::Verifying, ResponseCode::METHOD_NOT_ALLOWED));
}

#[test]
fn a_send_device_silent_for_a_step_timeout_is_read_instead() {
    // No Send: the step deadline falls back to reads.
    let mut silent =
        task_in(with_fallback(Strategy::Send), Phase::Downloading, State::Downloading, UpdateResult::Initial);
    silent.on(secs(60), Event::Timer(Timer::Step));
    assert!(silent.fell_back());
    assert_eq!((silent.strategy_used(), silent.wanted()), (Strategy::Reads, Some(Action::ReadFirmware)));
    assert_eq!(events(&mut silent), [TaskEvent::StrategyChanged { from: Strategy::Send, to: Strategy::Reads }]);
    // From then on the device's uplinks are read at (S1).
    silent.sent(2, Action::ReadFirmware);
    silent.in_flight = None;
    silent.on(secs(70), Event::RegistrationUpdated);
    assert_eq!(silent.wanted(), Some(Action::ReadFirmware));
    // Without fallback, it waits (and times out with no-send).
    let mut strict = task_in(config(Strategy::Send), Phase::Downloading, State::Downloading, UpdateResult::Initial);
    strict.on(secs(60), Event::Timer(Timer::Step));
    assert!(!strict.fell_back() && strict.wanted().is_none());
    // A device that sent its state keeps S4 (a quiet step is read, as before).
    let mut sending =
        task_in(with_fallback(Strategy::Send), Phase::Downloading, State::Downloading, UpdateResult::Initial);
    sending.history.seen_send = true;
    sending.history.sent_state = true;
    sending.on(secs(60), Event::Timer(Timer::Step));
    assert!(!sending.fell_back());
    assert_eq!((sending.strategy_used(), sending.wanted()), (Strategy::Send, Some(Action::ReadFirmware)));
    // Inspecting reads under S4 anyway: no fallback there.
    let mut inspecting = task_in(with_fallback(Strategy::Send), Phase::Inspecting, State::Idle, UpdateResult::Initial);
    inspecting.on(secs(60), Event::Timer(Timer::Step));
    assert!(!inspecting.fell_back());
    // Falling back happens once.
    silent.on(secs(200), Event::Timer(Timer::Step));
    assert!(events(&mut silent).iter().all(|e| !matches!(e, TaskEvent::StrategyChanged { .. })));
}

//! The per-notification log line under churn: devices dropping and reconnecting while two
//! providers (binary and HTTP/2) push, and every accepted notification ends in exactly one
//! recorded outcome and exactly one info line naming its final path; and the summary mode,
//! where every line is either written or counted in a summary, exactly.
//!
//! The log is captured from a subscriber set for the test's thread: a `#[tokio::test]` runs
//! the simulator's tasks on that one thread, so every line they write lands here.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};

use apns_sim::client::device::{DeviceCommand, DeviceEvent, DeviceHandle};
use apns_sim::client::http2::Http2Request;
use apns_sim::hub::{Event, Logged, Outcome};
use apns_sim::pki::DEFAULT_TOPIC;
use apns_sim::protocol::token::DeviceToken;
use apns_sim::protocol::Environment;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tracing_subscriber::fmt::MakeWriter;
use uuid::Uuid;

use crate::common::{self, command, next_device_event, TIMEOUT};

/// The per-notification lines' target.
const TARGET: &str = "apns_sim::hub::events";

/// A writer that sends each JSON log line to the test.
#[derive(Clone)]
struct Lines(mpsc::UnboundedSender<Value>, Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.1.lock().unwrap();
        pending.extend_from_slice(buf);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let value = serde_json::from_slice(&line).expect("a JSON log line");
            let _ = self.0.send(value);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Captures this thread's info lines as JSON, as `--log-format json` writes them.
fn capture() -> (
    mpsc::UnboundedReceiver<Value>,
    tracing::subscriber::DefaultGuard,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::INFO)
        .with_writer(Lines(tx, Arc::default()))
        .finish();
    (rx, tracing::subscriber::set_default(subscriber))
}

/// Whether an outcome is a notification's last.
fn is_final(outcome: Outcome) -> bool {
    !matches!(outcome, Outcome::Sent | Outcome::Stored | Outcome::Requeued)
}

/// Reads hub events until `count` notifications have a final outcome; returns every
/// notification's outcomes (apns-id → outcomes in order).
async fn outcomes_until_final(
    events: &mut broadcast::Receiver<Logged>,
    count: usize,
) -> HashMap<Uuid, Vec<Outcome>> {
    let mut all: HashMap<Uuid, Vec<Outcome>> = HashMap::new();
    let mut finals = 0;
    while finals < count {
        let event =
            common::next_hub_event(events, |e| matches!(e, Event::Notification { .. })).await;
        if let Event::Notification {
            apns_id, outcome, ..
        } = event
        {
            finals += usize::from(is_final(outcome));
            all.entry(apns_id).or_default().push(outcome);
        }
    }
    all
}

/// The per-notification lines captured so far: apns-id → their paths.
fn paths(lines: &mut mpsc::UnboundedReceiver<Value>) -> HashMap<Uuid, Vec<String>> {
    let mut paths: HashMap<Uuid, Vec<String>> = HashMap::new();
    while let Ok(line) = lines.try_recv() {
        let fields = &line["fields"];
        if line["target"] != TARGET {
            continue;
        }
        if let (Some(id), Some(path)) = (fields["apns_id"].as_str(), fields["path"].as_str()) {
            let id = Uuid::parse_str(id).expect("an apns-id");
            paths.entry(id).or_default().push(path.to_owned());
        }
    }
    paths
}

/// Takes a device offline and back, waiting for each.
async fn churn_once(dev: &mut DeviceHandle) {
    command(dev, DeviceCommand::Offline).await;
    next_device_event(dev, |e| matches!(e, DeviceEvent::Offline { .. })).await;
    command(dev, DeviceCommand::Online).await;
    next_device_event(dev, |e| matches!(e, DeviceEvent::Online { .. })).await;
}

/// The path a final outcome must have been logged with (`store`: whether it was stored).
fn expected_end(outcomes: &[Outcome]) -> &'static str {
    match outcomes.last().copied() {
        Some(Outcome::Acknowledged) => "-> device",
        Some(Outcome::NotInstalled) => "-> device -> not installed",
        Some(Outcome::Superseded) => "-> store -> superseded",
        Some(Outcome::Expired) => "-> expired",
        Some(Outcome::Discarded) => "-> discarded",
        Some(Outcome::Rejected) => "-> rejected",
        Some(Outcome::Unregistered) => "-> unregistered",
        other => panic!("not a final outcome: {other:?}"),
    }
}

#[tokio::test]
async fn under_churn_every_notification_has_one_outcome_and_one_info_line() {
    let (mut lines, _guard) = capture();
    // Every line written (no summaries), so that each can be counted.
    let t = common::start_with(|c| c.settings.log_lines_per_sec = 0).await;
    let mut events = t.sim.hub().subscribe();

    // Six devices: four churn, one stays, one uninstalls the app midway.
    let mut devices = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..6 {
        let (dev, toks) = t
            .device(
                &format!("churn-{i}"),
                Environment::Sandbox,
                &[DEFAULT_TOPIC],
            )
            .await;
        devices.push(dev);
        tokens.push(toks[DEFAULT_TOPIC]);
    }
    let stays = devices.remove(4);
    let uninstalls = devices.remove(4);
    let uninstalled = tokens[5];

    // Two providers push while the devices drop and come back.
    const PER_PROVIDER: u32 = 240;
    let binary = {
        let t = &t;
        let tokens = &tokens;
        async move {
            let mut gw = t.gateway().await;
            let expiry = common::in_an_hour(&t.clock);
            for id in 1..=PER_PROVIDER {
                let token = tokens[id as usize % tokens.len()];
                // Every seventh says "now or never": discarded if its device is away.
                let expiry = if id % 7 == 0 { 0 } else { expiry };
                let frame = common::frame(token.as_bytes(), &common::alert("b"), id, expiry, 10);
                gw.send(&frame).await.expect("send");
                if id % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            gw
        }
    };
    let mut http2_ids = Vec::new();
    let http2 = {
        let t = &t;
        let tokens = &tokens;
        let ids = &mut http2_ids;
        async move {
            let mut client = t.http2().await;
            let unknown = DeviceToken::new(&[0xab; 32]).unwrap();
            for n in 0..PER_PROVIDER {
                // Every 20th to a token no device holds: rejected by the hub.
                let token = if n % 20 == 19 {
                    unknown
                } else {
                    tokens[n as usize % tokens.len()]
                };
                let id = Uuid::new_v4();
                ids.push(id);
                let request = Http2Request::push(&token.to_hex(), common::alert("h"))
                    .header("apns-topic", DEFAULT_TOPIC)
                    .header("apns-id", id.to_string());
                let answer = client.send(&request).await.expect("an answer");
                assert!(matches!(answer.status, 200 | 400 | 410), "{answer}");
            }
        }
    };
    let churn = async {
        for round in 0..6 {
            for dev in devices.iter_mut() {
                churn_once(dev).await;
            }
            if round == 2 {
                command(
                    &uninstalls,
                    DeviceCommand::Uninstall(DEFAULT_TOPIC.parse().unwrap()),
                )
                .await;
            }
        }
    };
    let (gw, (), ()) = tokio::join!(binary, http2, churn);
    // The binary API answers success with silence: once this one answers nothing, the hub
    // has every frame (an error would have come back before the close).
    let mut gw = gw;
    common::assert_silent(&mut gw).await;

    // A device that is offline holds its stored notification: the churning ones are all
    // back online now, so every accepted notification reaches a final outcome.
    let total = 2 * PER_PROVIDER as usize;
    let outcomes = outcomes_until_final(&mut events, total).await;
    assert_eq!(outcomes.len(), total, "each push is one notification");
    for id in &http2_ids {
        assert!(outcomes.contains_key(id), "HTTP/2 push {id} was recorded");
    }
    let mut by_final: BTreeMap<String, usize> = BTreeMap::new();
    for (id, seen) in &outcomes {
        let finals = seen.iter().filter(|o| is_final(**o)).count();
        assert_eq!(finals, 1, "{id}: {seen:?}");
        assert!(is_final(*seen.last().unwrap()), "{id}: {seen:?}");
        *by_final
            .entry(format!("{:?}", seen.last().unwrap()))
            .or_default() += 1;
    }

    // Exactly one info line with a path per notification, naming its final path.
    let logged = paths(&mut lines);
    let mut via_store = 0;
    let mut requeued = 0;
    for (id, seen) in &outcomes {
        let got = logged.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(got.len(), 1, "{id}: outcomes {seen:?}, lines {got:?}");
        let path = &got[0];
        assert!(
            path.ends_with(expected_end(seen)),
            "{id}: {seen:?} logged {path}"
        );
        let stored = seen.contains(&Outcome::Stored);
        assert_eq!(
            path.contains("-> store ->"),
            stored,
            "{id}: {seen:?} logged {path}"
        );
        via_store += usize::from(stored);
        requeued += usize::from(seen.contains(&Outcome::Requeued));
    }
    assert_eq!(logged.len(), outcomes.len(), "no line for anything else");
    // The churn did what it is for: notifications went through the store and were
    // superseded, discarded, rejected and reported not installed.
    assert!(via_store > 0, "{by_final:?}");
    for fate in ["Acknowledged", "Rejected", "NotInstalled"] {
        assert!(by_final.contains_key(fate), "no {fate}: {by_final:?}");
    }
    eprintln!("churn: {by_final:?}, {via_store} via the store, {requeued} requeued");
    assert!(t.sim.hub().unregistered_at(&uninstalled).is_some());
    drop((stays, uninstalls));
    t.stop().await;
}

#[tokio::test]
async fn past_the_rate_the_log_summarises_and_every_line_is_counted_once() {
    let (mut lines, _guard) = capture();
    // One line a second: a burst of 60 is summarised whatever the machine's speed.
    let t = common::start_with(|c| c.settings.log_lines_per_sec = 1).await;
    let mut events = t.sim.hub().subscribe();
    let (_phone, tokens) = t
        .device("summary-1", Environment::Sandbox, &[DEFAULT_TOPIC])
        .await;
    let token = tokens[DEFAULT_TOPIC];
    let mut client = t.http2().await;
    const PUSHES: usize = 60;
    let unknown = DeviceToken::new(&[0xcd; 32]).unwrap();
    for n in 0..PUSHES {
        // Every tenth is rejected: the summary names its reason.
        let to = if n % 10 == 9 { unknown } else { token };
        let request = Http2Request::push(&to.to_hex(), common::alert("s"))
            .header("apns-topic", DEFAULT_TOPIC);
        client.send(&request).await.expect("an answer");
    }
    let outcomes = outcomes_until_final(&mut events, PUSHES).await;
    assert_eq!(outcomes.len(), PUSHES);

    // Wait (on lines, not time) until the written lines and the summaries' suppressed
    // counts account for every notification; never more.
    let (mut written, mut suppressed, mut summaries) = (0u64, 0u64, Vec::new());
    tokio::time::timeout(TIMEOUT, async {
        while written + suppressed < PUSHES as u64 {
            let line = lines.recv().await.expect("capture open");
            let fields = &line["fields"];
            if line["target"] != TARGET {
                continue;
            }
            if fields["path"].is_string() {
                written += 1;
            } else if let Some(n) = fields["suppressed"].as_u64() {
                suppressed += n;
                let message = fields["message"].as_str().unwrap_or_default().to_owned();
                summaries.push(message);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{written} written, {suppressed} suppressed of {PUSHES}"));
    assert_eq!(written + suppressed, PUSHES as u64, "{summaries:#?}");
    assert!(suppressed > 0 && !summaries.is_empty());
    for s in &summaries {
        assert!(s.ends_with("lines suppressed, see the delivery log"), "{s}");
    }
    t.stop().await;
}

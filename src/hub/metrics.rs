//! The simulator's Prometheus metrics: one registry of counters, gauges and a histogram,
//! updated by the hub (notifications, rejections, feedback, stored, sessions, latency) and by
//! the accept loop (connections), and encoded as text for the control API's `GET /metrics`.
//!
//! Every label value is an enum or a `&'static str` from a fixed list, so an update is a
//! hash look-up and an atomic increment, never a `String` allocation, and no client input can
//! grow the label set.

use std::fmt::{self, Write as _};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::events::{Api, Outcome, Record};
use super::faults::FaultOn;
use super::state::PushError;

/// The content type of [`Metrics::encode`]'s text: prometheus-client writes the OpenMetrics
/// text format (which Prometheus scrapes natively), ending in `# EOF`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The delivery-latency histogram's upper bounds in seconds: 100 µs to 10 s, 1-2.5-5 in
/// each decade (a simulated delivery on loopback takes well under a millisecond; a slow or
/// stalled device seconds).
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Apple's HTTP/2 reasons a rejection may be counted under; a reason outside this list is
/// counted as `Other`, so that the label set stays bounded whatever a detail says.
const HTTP2_REASONS: [&str; 31] = [
    "BadCollapseId",
    "BadDeviceToken",
    "BadExpirationDate",
    "BadMessageId",
    "BadPriority",
    "BadTopic",
    "DeviceTokenNotForTopic",
    "DuplicateHeaders",
    "IdleTimeout",
    "InvalidPushType",
    "MissingDeviceToken",
    "MissingTopic",
    "PayloadEmpty",
    "TopicDisallowed",
    "BadCertificate",
    "BadCertificateEnvironment",
    "ExpiredProviderToken",
    "InvalidProviderToken",
    "MissingProviderToken",
    "UnrelatedKeyIdInToken",
    "BadPath",
    "MethodNotAllowed",
    "Unregistered",
    "PayloadTooLarge",
    "TooManyProviderTokenUpdates",
    "TooManyRequests",
    "Shutdown",
    // Answered only by a fault (`POST /v1/faults`).
    "Forbidden",
    "ExpiredToken",
    "InternalServerError",
    "ServiceUnavailable",
];

impl EncodeLabelValue for Api {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// How many [`Outcome`]s there are: `Requeued` is the last (a new last one must replace it
/// here; indexing past the table would panic in every test that counts it).
const OUTCOMES: usize = Outcome::Requeued as usize + 1;

/// How many [`Api`]s there are: `Http2` is the last.
const APIS: usize = Api::Http2 as usize + 1;

/// Labels of `apns_sim_notifications_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NotificationLabels {
    /// The API it came through.
    api: Api,
    /// What happened to it.
    outcome: Outcome,
}

/// Labels of `apns_sim_rejections_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectionLabels {
    /// The API it came through.
    api: Api,
    /// Apple's reason (HTTP/2), or status (binary), from a fixed list.
    reason: &'static str,
}

/// Labels of the connection metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    /// The endpoint's name (`gateway`, `feedback`, `http2`, `devices`): a constant of the
    /// simulator, never client input.
    endpoint: &'static str,
}

/// The `direction` label of `apns_sim_feedback_tuples_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    /// A tuple the hub appended to a feedback list.
    Recorded,
    /// A tuple the feedback service sent to a provider.
    Read,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        encoder.write_str(match self {
            Direction::Recorded => "recorded",
            Direction::Read => "read",
        })
    }
}

impl EncodeLabelValue for FaultOn {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// Labels of `apns_sim_fault_hits_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FaultLabels {
    /// The endpoint the fault acts on (four values).
    on: FaultOn,
}

/// Labels of `apns_sim_feedback_tuples_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FeedbackLabels {
    /// Recorded or read.
    direction: Direction,
}

/// The metrics themselves, shared by every [`Metrics`] handle.
#[derive(Debug)]
struct Inner {
    /// Where every metric below is registered, with its HELP text.
    registry: Registry,
    /// `apns_sim_notifications_total`.
    notifications: Family<NotificationLabels, Counter>,
    /// Each (API, outcome) series of `notifications` once it was first counted, so that the
    /// next count is one atomic add instead of a look-up in the family's locked map (the
    /// hub counts two or three per notification). Filled on first use, so that a series
    /// appears in the output only once something was counted in it, as before.
    notification_series: [[OnceLock<Counter>; OUTCOMES]; APIS],
    /// `apns_sim_rejections_total`.
    rejections: Family<RejectionLabels, Counter>,
    /// `apns_sim_connections_total`.
    connections: Family<EndpointLabels, Counter>,
    /// `apns_sim_connections_open`.
    connections_open: Family<EndpointLabels, Gauge>,
    /// `apns_sim_feedback_tuples_total`.
    feedback: Family<FeedbackLabels, Counter>,
    /// `apns_sim_device_sessions`.
    sessions: Gauge,
    /// `apns_sim_notifications_stored`.
    stored: Gauge,
    /// `apns_sim_delivery_latency_seconds`.
    latency: Histogram,
    /// `apns_sim_fault_hits_total`.
    fault_hits: Family<FaultLabels, Counter>,
}

/// The simulator's metrics. A cheap-to-clone handle (an `Arc` inside): the hub owns one and
/// hands it to the endpoints through [`super::Hub::metrics`].
#[derive(Debug, Clone)]
pub struct Metrics {
    /// What every clone shares.
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered with its HELP text.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("apns_sim");
        let notifications = Family::<NotificationLabels, Counter>::default();
        registry.register(
            "notifications",
            "Notification events the hub recorded, by API and outcome (one per event)",
            notifications.clone(),
        );
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "rejections",
            "Rejected notifications by API and Apple's reason (HTTP/2) or status (binary)",
            rejections.clone(),
        );
        let connections = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "connections",
            "TLS connections established (handshake completed), by endpoint",
            connections.clone(),
        );
        let connections_open = Family::<EndpointLabels, Gauge>::default();
        registry.register(
            "connections_open",
            "TLS connections open now, by endpoint",
            connections_open.clone(),
        );
        let feedback = Family::<FeedbackLabels, Counter>::default();
        registry.register(
            "feedback_tuples",
            "Feedback tuples recorded by the hub and read by providers",
            feedback.clone(),
        );
        let sessions = Gauge::default();
        registry.register(
            "device_sessions",
            "Device sessions online now",
            sessions.clone(),
        );
        let stored = Gauge::default();
        registry.register(
            "notifications_stored",
            "Notifications stored for offline devices now",
            stored.clone(),
        );
        let latency = Histogram::new(LATENCY_BUCKETS);
        registry.register(
            "delivery_latency_seconds",
            "From a push accepted by the hub to the device's acknowledgement",
            latency.clone(),
        );
        let fault_hits = Family::<FaultLabels, Counter>::default();
        registry.register(
            "fault_hits",
            "Events a fault (POST /v1/faults) hit, by the endpoint it acts on",
            fault_hits.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                fault_hits,
                registry,
                notifications,
                notification_series: Default::default(),
                rejections,
                connections,
                connections_open,
                feedback,
                sessions,
                stored,
                latency,
            }),
        }
    }

    /// Counts an event a fault on `on` hit.
    pub(super) fn fault_hit(&self, on: FaultOn) {
        self.inner
            .fault_hits
            .get_or_create(&FaultLabels { on })
            .inc();
    }

    /// Every metric in the text format of [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; an encoder error would leave what was written.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// Counts the notification records among `records`: each once, by API and outcome, and
    /// a rejection recorded for a gateway (`Hub::record_rejection`) by its reason.
    pub(super) fn observe(&self, records: &[Record]) {
        for (api, outcome) in records.iter().filter_map(Record::notification) {
            let series = &self.inner.notification_series[api as usize][outcome as usize];
            series
                .get_or_init(|| {
                    let labels = NotificationLabels { api, outcome };
                    self.inner.notifications.get_or_create(&labels).clone()
                })
                .inc();
        }
    }

    /// Counts one rejection under `reason`.
    fn rejected(&self, api: Api, reason: &'static str) {
        let labels = RejectionLabels { api, reason };
        self.inner.rejections.get_or_create(&labels).inc();
    }

    /// Counts a rejection a gateway recorded: HTTP/2 details start with Apple's reason
    /// (`BadPath: …`), counted if it is a known one; the binary gateway refuses frames it
    /// cannot decode, counted as `InvalidFrame`.
    pub(super) fn gateway_rejected(&self, api: Api, detail: &str) {
        let reason = match api {
            Api::Binary => "InvalidFrame",
            Api::Http2 => {
                let name = detail.split(':').next().unwrap_or("");
                HTTP2_REASONS
                    .iter()
                    .copied()
                    .find(|known| *known == name)
                    .unwrap_or("Other")
            }
        };
        self.rejected(api, reason);
    }

    /// Counts a push the hub refused, under the answer its API gives the provider: HTTP/2's
    /// reason (400, 410 or 429), the binary gateway's status 8 "Invalid token". A binary push
    /// to an unregistered token or over the limit gets no answer (as on Apple's gateway), so
    /// it is no rejection; its outcome is still counted.
    pub(super) fn hub_rejected(&self, api: Api, err: &PushError) {
        let reason = match (api, err) {
            (Api::Http2, PushError::UnknownToken | PushError::WrongEnvironment { .. }) => {
                "BadDeviceToken"
            }
            (Api::Http2, PushError::WrongTopic { .. }) => "DeviceTokenNotForTopic",
            (Api::Http2, PushError::TooManyRequests { .. }) => "TooManyRequests",
            (Api::Http2, PushError::Unregistered { .. }) => "Unregistered",
            (
                Api::Binary,
                PushError::UnknownToken
                | PushError::WrongEnvironment { .. }
                | PushError::WrongTopic { .. },
            ) => "8",
            (Api::Binary, PushError::TooManyRequests { .. } | PushError::Unregistered { .. }) => {
                return
            }
        };
        self.rejected(api, reason);
    }

    /// Adds feedback tuples the hub recorded.
    pub(super) fn feedback_recorded(&self, n: u64) {
        let labels = FeedbackLabels {
            direction: Direction::Recorded,
        };
        self.inner.feedback.get_or_create(&labels).inc_by(n);
    }

    /// Adds feedback tuples a provider read: the feedback service calls it once they are
    /// written (tuples put back after a failed write are not counted).
    pub fn feedback_read(&self, n: usize) {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        let labels = FeedbackLabels {
            direction: Direction::Read,
        };
        self.inner.feedback.get_or_create(&labels).inc_by(n);
    }

    /// Sets the gauges of what the hub holds now.
    pub(super) fn holding(&self, sessions: usize, stored: usize) {
        self.inner
            .sessions
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
        self.inner
            .stored
            .set(i64::try_from(stored).unwrap_or(i64::MAX));
    }

    /// Records one delivery's time from acceptance to acknowledgement.
    pub(super) fn delivered(&self, latency: Duration) {
        self.inner.latency.observe(latency.as_secs_f64());
    }

    /// Counts a connection whose TLS handshake completed on `endpoint`; it counts as open
    /// until the returned guard drops, whichever way its task ends.
    pub fn connection_opened(&self, endpoint: &'static str) -> OpenConnection {
        let labels = EndpointLabels { endpoint };
        self.inner.connections.get_or_create(&labels).inc();
        self.inner.connections_open.get_or_create(&labels).inc();
        OpenConnection {
            metrics: self.clone(),
            endpoint,
        }
    }
}

/// One open connection in `apns_sim_connections_open`: dropping it (the task returned,
/// failed or was cancelled) takes it out.
#[derive(Debug)]
pub struct OpenConnection {
    /// Where it is counted.
    metrics: Metrics,
    /// Its endpoint's label.
    endpoint: &'static str,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let labels = EndpointLabels {
            endpoint: self.endpoint,
        };
        self.metrics
            .inner
            .connections_open
            .get_or_create(&labels)
            .dec();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::super::state::tests::{request, APP};
    use super::super::{DeviceReply, Hub, PushOutcome};
    use super::*;
    use crate::clock::Clock;
    use crate::protocol::token::DeviceToken;
    use crate::protocol::Environment;
    use crate::settings::RateLimit;

    const SANDBOX: Environment = Environment::Sandbox;

    /// The value of the sample named exactly `series` (name and labels), if it is there.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.parse().ok()
        })
    }

    fn notifications(hub: &Hub, api: &str, outcome: &str) -> f64 {
        let series = format!("apns_sim_notifications_total{{api=\"{api}\",outcome=\"{outcome}\"}}");
        sample(&hub.metrics().encode(), &series).unwrap_or(0.0)
    }

    fn gauge(hub: &Hub, name: &str) -> f64 {
        sample(&hub.metrics().encode(), name).unwrap_or(-1.0)
    }

    #[test]
    fn every_outcome_is_counted_once_and_the_gauges_follow_the_state() {
        let limit = RateLimit {
            pushes: 2,
            per: Duration::from_secs(60),
        };
        let hub = Hub::with_rate_limit(Clock::system(), Some(limit));
        let mut session = hub.connect_device("D1", SANDBOX);
        assert_eq!(gauge(&hub, "apns_sim_device_sessions"), 1.0);
        let token = hub.register("D1", SANDBOX, APP, false).unwrap();

        // sent, then acknowledged, with a latency sample.
        assert_eq!(hub.push(request(token, 1, 0)), Ok(PushOutcome::Sent));
        let d = session.rx.try_recv().unwrap();
        assert!(hub.device_reply(session.id, d.delivery, DeviceReply::Ack));
        assert_eq!(notifications(&hub, "binary", "sent"), 1.0);
        assert_eq!(notifications(&hub, "binary", "acknowledged"), 1.0);
        let text = hub.metrics().encode();
        assert_eq!(
            sample(&text, "apns_sim_delivery_latency_seconds_count"),
            Some(1.0)
        );
        assert!(text.contains("apns_sim_delivery_latency_seconds_bucket{le=\"0.0001\"}"));
        assert!(text.contains("apns_sim_delivery_latency_seconds_bucket{le=\"10.0\"}"));

        // sent, the device goes away: requeued, stored; the stored gauge rises.
        let later = (hub.clock().now_secs() + 3600) as u32;
        assert_eq!(hub.push(request(token, 2, later)), Ok(PushOutcome::Sent));
        hub.disconnect_device("D1", SANDBOX, session.id);
        assert_eq!(gauge(&hub, "apns_sim_device_sessions"), 0.0);
        assert_eq!(notifications(&hub, "binary", "requeued"), 1.0);
        assert_eq!(notifications(&hub, "binary", "stored"), 1.0);
        assert_eq!(gauge(&hub, "apns_sim_notifications_stored"), 1.0);

        // Over the limit of 2: throttled; counted as no binary rejection (no answer).
        assert_eq!(
            hub.push(request(token, 3, later)),
            Err(PushError::TooManyRequests {
                pushes: 2,
                per_secs: 60
            })
        );
        assert_eq!(notifications(&hub, "binary", "throttled"), 1.0);
        hub.clock().advance(Duration::from_secs(61));

        // superseded (the gauge stays at 1), discarded, expired.
        let later = (hub.clock().now_secs() + 3600) as u32;
        assert_eq!(hub.push(request(token, 4, later)), Ok(PushOutcome::Stored));
        assert_eq!(notifications(&hub, "binary", "superseded"), 1.0);
        assert_eq!(gauge(&hub, "apns_sim_notifications_stored"), 1.0);
        assert_eq!(hub.push(request(token, 5, 0)), Ok(PushOutcome::Discarded));
        assert_eq!(notifications(&hub, "binary", "discarded"), 1.0);
        hub.clock().advance(Duration::from_secs(61));
        let past = (hub.clock().now_secs() - 10) as u32;
        assert_eq!(
            hub.push(request(token, 6, past)),
            Ok(PushOutcome::Discarded)
        );
        assert_eq!(notifications(&hub, "binary", "expired"), 1.0);
        hub.clock().advance(Duration::from_secs(61));

        // Back online: the stored one is sent and the gauge falls; the app is gone.
        let mut back = hub.connect_device("D1", SANDBOX);
        assert_eq!(gauge(&hub, "apns_sim_notifications_stored"), 0.0);
        assert_eq!(notifications(&hub, "binary", "sent"), 3.0);
        let d = back.rx.try_recv().unwrap();
        assert!(hub.device_reply(back.id, d.delivery, DeviceReply::NotInstalled));
        assert_eq!(notifications(&hub, "binary", "not_installed"), 1.0);
        let text = hub.metrics().encode();
        assert_eq!(
            sample(
                &text,
                "apns_sim_feedback_tuples_total{direction=\"recorded\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "apns_sim_delivery_latency_seconds_count"),
            Some(1.0),
            "not installed is no delivery"
        );

        // unregistered, and a rejection with its status.
        assert!(hub.push(request(token, 7, 0)).is_err());
        assert_eq!(notifications(&hub, "binary", "unregistered"), 1.0);
        let unknown = DeviceToken::new(&[7; 32]).unwrap();
        assert_eq!(
            hub.push(request(unknown, 8, 0)),
            Err(PushError::UnknownToken)
        );
        assert_eq!(notifications(&hub, "binary", "rejected"), 1.0);
        let text = hub.metrics().encode();
        assert_eq!(
            sample(
                &text,
                "apns_sim_rejections_total{api=\"binary\",reason=\"8\"}"
            ),
            Some(1.0),
            "{text}"
        );
        let rejections: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("apns_sim_rejections_total{"))
            .collect();
        assert_eq!(
            rejections.len(),
            1,
            "throttled and unregistered are silent: {text}"
        );
    }

    #[test]
    fn gateway_rejections_get_a_bounded_reason() {
        let hub = Hub::new(Clock::system());
        let record = |api, reason: &str| {
            hub.record_rejection(api, APP, [0; 4], Uuid::new_v4(), None, reason.to_owned());
        };
        record(Api::Http2, "BadPath: the path must be /3/device/<token>");
        record(Api::Http2, "BadPath: again");
        record(Api::Http2, "made-up words: anything a client could send");
        record(Api::Binary, "item 9 is unknown");
        let text = hub.metrics().encode();
        let count = |series: &str| sample(&text, series);
        assert_eq!(
            count("apns_sim_rejections_total{api=\"http2\",reason=\"BadPath\"}"),
            Some(2.0)
        );
        assert_eq!(
            count("apns_sim_rejections_total{api=\"http2\",reason=\"Other\"}"),
            Some(1.0)
        );
        assert_eq!(
            count("apns_sim_rejections_total{api=\"binary\",reason=\"InvalidFrame\"}"),
            Some(1.0)
        );
        assert_eq!(
            count("apns_sim_notifications_total{api=\"http2\",outcome=\"rejected\"}"),
            Some(3.0)
        );
    }

    #[test]
    fn an_open_connection_is_counted_until_its_guard_drops() {
        let metrics = Metrics::new();
        let first = metrics.connection_opened("gateway");
        let second = metrics.connection_opened("gateway");
        drop(first);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "apns_sim_connections_total{endpoint=\"gateway\"}"),
            Some(2.0)
        );
        assert_eq!(
            sample(&text, "apns_sim_connections_open{endpoint=\"gateway\"}"),
            Some(1.0)
        );
        drop(second);
        let text = metrics.encode();
        assert_eq!(
            sample(&text, "apns_sim_connections_open{endpoint=\"gateway\"}"),
            Some(0.0)
        );
        assert!(text.contains("# HELP apns_sim_connections_open "));
        assert!(text.ends_with("# EOF\n"));
    }
}

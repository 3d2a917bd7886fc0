//! `GET /metrics`: every metric of the simulator ([`crate::hub::Metrics`]) in the text format
//! Prometheus scrapes. prometheus-client writes OpenMetrics text (`# HELP`, `# TYPE`, the
//! samples, then `# EOF`), so that is the content type: Prometheus reads it natively.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::Ctx;
use crate::hub::METRICS_CONTENT_TYPE;

/// Every metric, with its HELP text, in OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    responses((status = 200,
               description = "Every metric in OpenMetrics text format: apns_sim_notifications_total, \
                              apns_sim_rejections_total, apns_sim_connections_total, \
                              apns_sim_connections_open, apns_sim_feedback_tuples_total, \
                              apns_sim_device_sessions, apns_sim_notifications_stored, \
                              apns_sim_delivery_latency_seconds",
               content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
               body = String))
)]
pub(super) async fn scrape(State(ctx): State<Ctx>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        ctx.hub.metrics().encode(),
    )
}

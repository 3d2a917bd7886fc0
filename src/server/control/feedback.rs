//! `GET /v1/feedback`: the unread feedback tuples of a topic and environment, read without
//! draining them ([`crate::hub::Hub::peek_feedback`]), so that a test can look and the
//! provider's feedback connection still gets them.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::{params, ApiError, Ctx, RawQuery};
use crate::protocol::Environment;

/// The parameters, both required.
#[derive(Debug, Clone, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedbackQuery {
    /// The topic (bundle id) whose list to read, as the provider certificate names it.
    #[param(min_length = 1, example = "com.example.app")]
    topic: String,
    /// `sandbox` (or `development`) or `production`: each has its own list.
    #[param(value_type = super::devices::EnvironmentName, example = "sandbox")]
    environment: Environment,
}

/// One unread tuple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Tuple {
    /// UNIX seconds when the simulator found the app gone.
    pub timestamp: u32,
    /// The token that is no longer valid, in hex.
    pub token: String,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Feedback {
    /// The topic asked for.
    pub topic: String,
    /// The environment asked for (`sandbox` or `production`).
    pub environment: String,
    /// Its unread tuples, oldest first, as the feedback service would send them.
    pub tuples: Vec<Tuple>,
}

/// The unread feedback tuples of a topic and environment, left in place.
#[utoipa::path(
    get,
    path = "/v1/feedback",
    params(FeedbackQuery),
    responses(
        (status = 200, description = "The unread tuples, not drained", body = Feedback),
        (status = 400, description = "A missing or bad parameter, named in `field`",
         body = super::ErrorBody),
    )
)]
pub(super) async fn peek(
    State(ctx): State<Ctx>,
    query: RawQuery,
) -> Result<Json<Feedback>, ApiError> {
    let params = params(query, &["topic", "environment"])?;
    let topic = params
        .get("topic")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::field("topic", "required: the topic whose feedback to read"))?;
    let environment = params
        .get("environment")
        .ok_or_else(|| ApiError::field("environment", "required: sandbox or production"))?;
    let environment: Environment = environment.parse().map_err(|_| {
        ApiError::field(
            "environment",
            format!("{environment:?} is not sandbox (development) or production"),
        )
    })?;
    let query = FeedbackQuery {
        topic: topic.clone(),
        environment,
    };
    let tuples = ctx
        .hub
        .peek_feedback(&query.topic, query.environment)
        .into_iter()
        .map(|t| Tuple {
            timestamp: t.timestamp,
            token: t.token.to_hex(),
        })
        .collect();
    Ok(Json(Feedback {
        topic: query.topic,
        environment: query.environment.as_str().to_owned(),
        tuples,
    }))
}

//! Hand-written JSON schemas for the request bodies whose rules the derived schemas cannot
//! say, and the patterns the derived ones share, so that the OpenAPI document accepts
//! exactly what the routes accept (schemathesis checks both ways in CI).
//!
//! [`overrides`] replaces two components of the derived document ([`super::document`]):
//!
//! - `NewFault`, the body of `POST /v1/faults`: one variant per endpoint and effect, each
//!   with its effect required, every other effect absent or null, the match fields that
//!   endpoint and effect can match, the HTTP/2 statuses with the reasons Apple defines for
//!   each, the binary statuses;
//! - `PushBody`, the body of `POST /v1/push`: a `token`, or a `serial` and an `app`, and
//!   none of the HTTP/2-only fields with `"api": "binary"`.
//!
//! The schemas are built from the same tables the checks use ([`effects_of`],
//! [`Reason::of_status`], [`super::faults::STATUSES`]), so the two cannot drift apart.

use serde_json::{json, Map, Value};

use crate::hub::{effects_of, FaultOn, MAX_DELAY_MS};
use crate::server::http2::response::Reason;

/// A device token: an even number of hex digits, 2 to 200.
pub const TOKEN_PATTERN: &str = "^([0-9a-fA-F]{2}){1,100}$";

/// A serial number: 1 to 64 printable ASCII characters, no space, no `/`.
pub const SERIAL_PATTERN: &str = "^[!-.0-~]{1,64}$";

/// A kind of token, as `TokenKind` parses it (a Live Activity id printable ASCII).
pub const KIND_PATTERN: &str = "^(remote|voip|complication|fileprovider|location|pushtotalk|\
                                liveactivity-start|widgets|controls|liveactivity:[!-~]{1,64})$";

/// A bundle id: 1 to 255 printable ASCII characters, no space, no `:`.
pub const APP_PATTERN: &str = "^[!-9;-~]{1,255}$";

/// `APP` or `APP:KIND`.
pub const APP_SPEC_PATTERN: &str = "^[!-9;-~]{1,255}(:(remote|voip|complication|fileprovider|\
                                    location|pushtotalk|liveactivity-start|widgets|controls|\
                                    liveactivity:[!-~]{1,64}))?$";

/// An HTTP/2 header value: printable ASCII.
pub const HEADER_PATTERN: &str = "^[ -~]*$";

/// The components [`super::document`] replaces, by name.
pub fn overrides() -> Vec<(&'static str, Value)> {
    vec![("NewFault", new_fault()), ("PushBody", push_body())]
}

/// Makes the schemas that flatten a `deny_unknown_fields` type ([`crate::hub::Fault`]
/// flattens `FaultSpec`) valid for their answers: the derived `allOf` refers to the closed
/// schema, which refuses the flattened type's own fields, so the reference is replaced by a
/// copy without `additionalProperties`.
pub fn open_flattened(components: &mut Map<String, Value>) {
    for (outer, inner) in [("Fault", "FaultSpec")] {
        let Some(mut open) = components.get(inner).cloned() else {
            continue;
        };
        if let Some(open) = open.as_object_mut() {
            open.remove("additionalProperties");
        }
        let reference = Value::from(format!("#/components/schemas/{inner}"));
        if let Some(parts) = components
            .get_mut(outer)
            .and_then(|o| o.get_mut("allOf"))
            .and_then(Value::as_array_mut)
        {
            for part in parts {
                if part.get("$ref") == Some(&reference) {
                    *part = open.clone();
                }
            }
        }
    }
}

/// An unsigned 64-bit integer at least `min`, or null.
fn u64_or_null(min: u64, max: u64) -> Value {
    json!({"type": ["integer", "null"], "minimum": min, "maximum": max})
}

/// Null only: an optional field this variant does not take.
fn none() -> Value {
    json!({"type": "null"})
}

/// The `match` object of a fault on `on` with an effect of `phase_connection`.
fn fault_match(on: FaultOn, connection_phase: bool) -> Value {
    use FaultOn::*;
    let string = json!({"type": ["string", "null"]});
    let token = if [Http2, Binary, Devices].contains(&on) && !connection_phase {
        json!({"type": ["string", "null"], "pattern": TOKEN_PATTERN})
    } else {
        none()
    };
    let by_provider = [Http2, Binary, Feedback].contains(&on);
    json!({
        "type": ["object", "null"],
        "description": "What it matches; omitted: everything on its endpoint.",
        "additionalProperties": false,
        "properties": {
            "token": token,
            "topic": if by_provider { string.clone() } else { none() },
            "connection": if by_provider { u64_or_null(0, u64::MAX) } else { none() },
            "serial": if on == Devices { string } else { none() },
            "every": u64_or_null(1, u64::MAX),
            "rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        },
    })
}

/// The schema of one effect field.
fn effect(field: &str) -> Value {
    match field {
        "respond" => respond(),
        "delay_ms" | "hold_ms" => json!({"type": "integer", "minimum": 0, "maximum": MAX_DELAY_MS}),
        "goaway" => {
            let mut reasons: Vec<Value> = reasons().into_iter().map(Value::from).collect();
            reasons.push(Value::Null);
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {"reason": {"enum": reasons}},
            })
        }
        "error" => json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["status"],
            "properties": {"status": {"enum": [1, 2, 3, 4, 5, 6, 7, 8, 10, 128, 255]}},
        }),
        // refuse, close, drop, withhold_ack: `true` is the effect.
        _ => json!({"const": true}),
    }
}

/// Every reason Apple defines, for the statuses the HTTP/2 API answers with.
fn reasons() -> Vec<&'static str> {
    super::faults::STATUSES
        .iter()
        .flat_map(|s| Reason::of_status(*s))
        .map(Reason::as_str)
        .collect()
}

/// `respond`: one variant per status, with that status's reasons.
fn respond() -> Value {
    let variants: Vec<Value> = super::faults::STATUSES
        .iter()
        .map(|&status| {
            let mut names: Vec<Value> = Reason::of_status(status)
                .into_iter()
                .map(|r| Value::from(r.as_str()))
                .collect();
            names.push(Value::Null);
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["status"],
                "properties": {
                    "status": {"const": status},
                    "reason": {"enum": names},
                    "timestamp_ms": if status == 410 { u64_or_null(0, u64::MAX) } else { none() },
                },
            })
        })
        .collect();
    json!({"oneOf": variants})
}

/// Every effect field of every endpoint, once.
fn all_effects() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = Vec::new();
    for on in [
        FaultOn::Http2,
        FaultOn::Binary,
        FaultOn::Devices,
        FaultOn::Feedback,
    ] {
        for field in effects_of(on) {
            if !all.contains(field) {
                all.push(field);
            }
        }
    }
    all
}

/// `NewFault`: a variant per endpoint and effect.
fn new_fault() -> Value {
    let mut variants = Vec::new();
    for on in [
        FaultOn::Http2,
        FaultOn::Binary,
        FaultOn::Devices,
        FaultOn::Feedback,
    ] {
        for &chosen in effects_of(on) {
            let connection_phase = matches!(chosen, "refuse" | "hold_ms");
            let mut properties = Map::new();
            properties.insert("on".to_owned(), json!({"const": on.as_str()}));
            properties.insert("match".to_owned(), fault_match(on, connection_phase));
            for field in all_effects() {
                let schema = if field == chosen {
                    effect(field)
                } else {
                    none()
                };
                properties.insert(field.to_owned(), schema);
            }
            properties.insert("count".to_owned(), u64_or_null(1, u64::MAX));
            properties.insert("for_ms".to_owned(), u64_or_null(1, u64::MAX));
            variants.push(json!({
                "type": "object",
                "title": format!("{} {chosen}", on.as_str()),
                "additionalProperties": false,
                "required": ["on", chosen],
                "properties": properties,
            }));
        }
    }
    json!({
        "description": "A fault to add: the endpoint it acts on (`on`), what it matches \
                        (`match`), exactly one effect of that endpoint (http2: respond, \
                        delay_ms, goaway, refuse; binary: error, close, delay_ms; devices: \
                        drop, withhold_ack, delay_ms; feedback: hold_ms), and when it ends \
                        (`count` hits, `for_ms`). The `Fault` schema describes each field.",
        "oneOf": variants,
        "example": {
            "on": "http2",
            "match": {"token": "00"},
            "respond": {"status": 500, "reason": "InternalServerError"},
            "count": 2
        },
    })
}

/// `PushBody`: a token, or a serial and an app; no HTTP/2-only field on the binary API.
fn push_body() -> Value {
    let printable = json!({"type": ["string", "null"], "pattern": HEADER_PATTERN});
    json!({
        "type": "object",
        "description": "One test push: a `token`, or a `serial` and an `app`.",
        "additionalProperties": false,
        "required": ["payload"],
        "properties": {
            "token": {"type": ["string", "null"], "pattern": TOKEN_PATTERN,
                      "description": "The device token, hex."},
            "serial": {"type": ["string", "null"],
                       "description": "The device (with `app`): its current token of that app."},
            "app": {"type": ["string", "null"], "pattern": APP_SPEC_PATTERN,
                    "description": "The app, `APP` or `APP:KIND` (with `serial`)."},
            "api": {"enum": ["http2", "binary", null],
                    "description": "`http2` (the default) or `binary`."},
            "payload": {"type": "object", "description": "The JSON payload."},
            "push_type": printable.clone(),
            "priority": {"enum": [10, 5, 1, null], "description": "10 (the default), 5 or 1."},
            "expiry": {"type": ["integer", "null"], "minimum": 0, "maximum": u32::MAX,
                       "description": "Expiry, UNIX seconds; 0 = now or never."},
            "collapse_id": {"type": ["string", "null"], "pattern": HEADER_PATTERN,
                            "maxLength": super::push::MAX_COLLAPSE_ID_LEN},
            "topic": printable,
        },
        "allOf": [
            {"oneOf": [
                {"required": ["token"],
                 "properties": {"token": {"type": "string"}, "serial": none(), "app": none()}},
                {"required": ["serial", "app"],
                 "properties": {"token": none(), "serial": {"type": "string"},
                                "app": {"type": "string"}}},
            ]},
            {"anyOf": [
                {"properties": {"api": {"enum": ["http2", null]}}},
                {"properties": {"push_type": none(), "collapse_id": none(), "topic": none()}},
            ]},
        ],
        "example": {"token": "00", "payload": {"aps": {"alert": "hi"}}},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_answer_is_open_to_its_own_fields() {
        let doc = super::super::document();
        let parts = doc["components"]["schemas"]["Fault"]["allOf"]
            .as_array()
            .expect("Fault is an allOf");
        assert!(parts.iter().all(|p| p.get("$ref").is_none()), "{parts:?}");
        assert!(parts
            .iter()
            .all(|p| p.get("additionalProperties") != Some(&Value::Bool(false))));
    }

    #[test]
    fn every_endpoint_effect_has_a_variant() {
        let fault = new_fault();
        let n: usize = [
            FaultOn::Http2,
            FaultOn::Binary,
            FaultOn::Devices,
            FaultOn::Feedback,
        ]
        .map(|on| effects_of(on).len())
        .iter()
        .sum();
        assert_eq!(fault["oneOf"].as_array().unwrap().len(), n);
        assert!(reasons().contains(&"InternalServerError"));
    }
}

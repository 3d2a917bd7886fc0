//! `apns-sim push`: sends notifications through the binary gateway (commands 0, 1, 2) or,
//! with `--http2`, the HTTP/2 provider API, and prints the outcome in words, or with
//! `--output json` as one JSON document with each notification's answer.
//!
//! The two APIs share the token, payload, expiry, priority and TLS flags; each has flags of
//! its own, shown under its own heading. A flag typed for the API not chosen is refused with
//! the reason, rather than ignored ([`PushArgs::check`]).

use std::time::Duration;

use anyhow::{Context, Result};
use apns_sim::client::files::{self, FilesError};
use apns_sim::client::http2::{self as client_http2, PushAuth};
use apns_sim::client::{BinaryClient, GatewayAnswer};
use apns_sim::pki::{DEFAULT_TEAM_ID, DEFAULT_TOPIC};
use apns_sim::protocol::error_response::Status;
use apns_sim::protocol::notification;
use apns_sim::tls;
use bytes::{Bytes, BytesMut};
use clap::error::ErrorKind;
use clap::{ArgMatches, Args, ValueEnum};

use super::{given_on_command_line, Outcome, OutputFormat, ProviderTlsArgs};

/// The largest `.apns` file `--file` reads: a payload is at most 5 KiB on APNs, and the
/// file adds one key.
const MAX_APNS_FILE: u64 = 64 * 1024;

/// The key of an `.apns` file naming the app (what `xcrun simctl push` reads).
const APNS_BUNDLE_KEY: &str = "Simulator Target Bundle";

/// An `.apns` file, read: the bundle it names, if any, and the payload without that key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApnsFile {
    bundle: Option<String>,
    payload: String,
}

/// Reads an `.apns` file: a JSON object, optionally with a string "Simulator Target
/// Bundle", whose other keys are the payload. Every refusal names the file and the problem.
fn read_apns_file(path: &std::path::Path) -> Result<ApnsFile> {
    let shown = path.display();
    let size = std::fs::metadata(path)
        .with_context(|| format!("--file {shown}"))?
        .len();
    if size > MAX_APNS_FILE {
        anyhow::bail!("--file {shown}: {size} bytes; an .apns file is at most {MAX_APNS_FILE}");
    }
    let text = std::fs::read(path).with_context(|| format!("--file {shown}"))?;
    parse_apns_file(&text).with_context(|| format!("--file {shown}"))
}

/// The inside of [`read_apns_file`].
fn parse_apns_file(text: &[u8]) -> Result<ApnsFile> {
    let value: serde_json::Value =
        serde_json::from_slice(text).context("not an .apns file: not JSON")?;
    let serde_json::Value::Object(mut map) = value else {
        anyhow::bail!("not an .apns file: the JSON is not an object");
    };
    let bundle = match map.remove(APNS_BUNDLE_KEY) {
        None => None,
        Some(serde_json::Value::String(b)) if !b.is_empty() => Some(b),
        Some(other) => anyhow::bail!("{APNS_BUNDLE_KEY:?} must be a bundle id, not {other}"),
    };
    if map.is_empty() {
        anyhow::bail!("the payload is empty: the file holds no key besides {APNS_BUNDLE_KEY:?}");
    }
    Ok(ApnsFile {
        bundle,
        payload: serde_json::Value::Object(map).to_string(),
    })
}

/// How far ahead the default expiry lies: an hour, long enough to survive a device being
/// briefly offline in a demo.
const DEFAULT_EXPIRY: Duration = Duration::from_secs(3600);

/// Options of `apns-sim push`.
#[derive(Debug, Args)]
pub(crate) struct PushArgs {
    /// Device token in hex (repeatable: one notification per token).
    #[arg(long = "token", required = true)]
    tokens: Vec<String>,
    /// JSON payload.
    #[arg(long, default_value = r#"{"aps":{"alert":"Hello from apns-sim"}}"#)]
    payload: String,
    /// Send the payload of an .apns file (the format `xcrun simctl push` reads, and the
    /// control API's inbox downloads): its "Simulator Target Bundle" is the HTTP/2 topic
    /// unless --topic is given, the rest is the payload.
    #[arg(long, value_name = "X.apns", conflicts_with = "payload")]
    file: Option<std::path::PathBuf>,
    /// Expiry in UNIX seconds (0 = deliver now or never; not in --format simple). Default:
    /// one hour from now for --format enhanced and frame; none for HTTP/2 (no
    /// apns-expiration) and --format simple, which APNs keeps for an offline device under its
    /// default storage policy (up to 30 days).
    #[arg(long)]
    expiry: Option<u32>,
    /// Priority, 10 or 5 (--format frame, or HTTP/2's apns-priority).
    #[arg(long, default_value_t = 10)]
    priority: u8,
    /// Send through the HTTP/2 provider API; prints status, reason and apns-id per token.
    #[arg(long)]
    http2: bool,
    /// How to print the answers: text for a person, or one JSON document for scripts
    /// (each notification's token, identifier or apns-id, status and reason).
    #[arg(long, value_enum, default_value = "text", env = "APNS_SIM_OUTPUT")]
    output: OutputFormat,
    #[command(flatten)]
    tls: ProviderTlsArgs,
    #[command(flatten)]
    binary: BinaryArgs,
    /// Boxed: the HTTP/2 options would otherwise make every `Command` as large as `push`.
    #[command(flatten)]
    h2: Box<Http2Args>,
}

/// Flags of the binary gateway only.
#[derive(Debug, Args)]
#[command(next_help_heading = "Binary API (without --http2)")]
struct BinaryArgs {
    /// Binary format.
    #[arg(long, value_enum, default_value = "frame")]
    format: Format,
    /// Identifier of the first notification (the next ones count up).
    #[arg(long, default_value_t = 1)]
    id: u32,
    /// Gateway address.
    #[arg(long, default_value = "127.0.0.1:2195", env = "APNS_SIM_GATEWAY")]
    gateway: String,
    /// Milliseconds to wait for an error response (the binary API never confirms success).
    #[arg(long, default_value_t = 1000, env = "APNS_SIM_WAIT_MS")]
    wait_ms: u64,
}

/// Flags of the HTTP/2 API only.
#[derive(Debug, Args)]
#[command(next_help_heading = "HTTP/2 API (with --http2)")]
struct Http2Args {
    /// HTTP/2 API address.
    #[arg(long, default_value = "127.0.0.1:2197", env = "APNS_SIM_API")]
    api: String,
    /// Authentication: the provider certificate, or a provider token (JWT).
    #[arg(long, value_enum, default_value = "cert", env = "APNS_SIM_AUTH")]
    auth: Auth,
    /// The .p8 signing key for --auth token. Default: AuthKey_SIMKEY0001.p8 in --certs.
    #[arg(long, env = "APNS_SIM_AUTH_KEY")]
    auth_key: Option<std::path::PathBuf>,
    /// Key id for --auth token (default: from the file name AuthKey_<KEYID>.p8).
    #[arg(long, env = "APNS_SIM_KEY_ID")]
    key_id: Option<String>,
    /// Team id for --auth token (the JWT's iss).
    #[arg(long, default_value = DEFAULT_TEAM_ID, env = "APNS_SIM_TEAM_ID")]
    team_id: String,
    /// apns-topic [default: the --file's "Simulator Target Bundle", else com.example.app].
    #[arg(long, env = "APNS_SIM_TOPIC")]
    topic: Option<String>,
    /// apns-push-type: alert, background, voip, …
    #[arg(long)]
    push_type: Option<String>,
    /// apns-collapse-id.
    #[arg(long)]
    collapse_id: Option<String>,
    /// apns-id, sent as given (a canonical UUID; uppercase is accepted and echoed unless the
    /// simulator runs with --accept-uppercase-apns-id false); the server generates one when absent.
    #[arg(long)]
    apns_id: Option<String>,
}

/// The binary API's notification commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Command 0: token and payload only (256-byte payloads).
    Simple,
    /// Command 1: adds identifier and expiry (256-byte payloads).
    Enhanced,
    /// Command 2: items, with priority (2048-byte payloads).
    Frame,
}

/// How `push --http2` authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Auth {
    /// The provider certificate (--cert, --key).
    Cert,
    /// A provider token signed with --auth-key.
    Token,
}

/// Flags that exist only for the HTTP/2 API, with why the binary API has no use for them.
const HTTP2_ONLY: &[(&str, &str)] = &[
    (
        "api",
        "it is the HTTP/2 API's address; the binary gateway's is --gateway",
    ),
    (
        "auth",
        "the binary API authenticates with the provider certificate only",
    ),
    (
        "auth_key",
        "provider tokens (JWT) exist only on the HTTP/2 API",
    ),
    (
        "key_id",
        "provider tokens (JWT) exist only on the HTTP/2 API",
    ),
    (
        "team_id",
        "provider tokens (JWT) exist only on the HTTP/2 API",
    ),
    (
        "topic",
        "the binary API takes the topic from the provider certificate",
    ),
    ("push_type", "the binary API has no push type"),
    (
        "collapse_id",
        "the binary API cannot collapse notifications",
    ),
    (
        "apns_id",
        "the binary API identifies notifications with --id",
    ),
];

/// Flags that exist only for the binary API, with why the HTTP/2 API has no use for them.
const BINARY_ONLY: &[(&str, &str)] = &[
    ("format", "the HTTP/2 API has one request format"),
    (
        "id",
        "the HTTP/2 API identifies notifications with --apns-id",
    ),
    (
        "gateway",
        "it is the binary gateway's address; the HTTP/2 API's is --api",
    ),
    (
        "wait_ms",
        "the HTTP/2 API answers every request, so there is no silence to wait for",
    ),
];

/// Flags of token authentication, which certificate authentication does not use.
const TOKEN_ONLY: &[&str] = &["auth_key", "key_id", "team_id"];

/// Flags of certificate authentication, which token authentication does not use.
const CERT_ONLY: &[&str] = &["cert", "key"];

impl PushArgs {
    /// Refuses flags typed on the command line that do not apply to the chosen API, format
    /// or authentication. `command` is the built `push` command and `matches` its matches.
    pub(crate) fn check(
        &self,
        command: &mut clap::Command,
        matches: &ArgMatches,
    ) -> Result<(), clap::Error> {
        let typed = |id: &str| given_on_command_line(matches, id);
        let mut refuse = |id: &str, applies: &str, why: &str| -> Result<(), clap::Error> {
            let flag = format!("--{}", id.replace('_', "-"));
            Err(command.error(
                ErrorKind::ArgumentConflict,
                format!("{flag} is for {applies}: {why}"),
            ))
        };
        if self.http2 {
            if let Some((id, why)) = BINARY_ONLY.iter().find(|(id, _)| typed(id)) {
                return refuse(id, "the binary API (drop --http2)", why);
            }
            let (unused, applies, why): (&[&str], _, _) = match self.h2.auth {
                Auth::Cert => (
                    TOKEN_ONLY,
                    "--auth token",
                    "certificate authentication signs no provider token",
                ),
                Auth::Token => (
                    CERT_ONLY,
                    "--auth cert",
                    "token authentication presents no client certificate",
                ),
            };
            if let Some(id) = unused.iter().find(|id| typed(id)) {
                return refuse(id, applies, why);
            }
        } else {
            if let Some((id, why)) = HTTP2_ONLY.iter().find(|(id, _)| typed(id)) {
                return refuse(id, "the HTTP/2 API (add --http2)", why);
            }
            let format = self.binary.format;
            if typed("priority") && format != Format::Frame {
                return refuse(
                    "priority",
                    "--format frame",
                    "commands 0 and 1 (--format simple, enhanced) carry no priority",
                );
            }
            if typed("expiry") && format == Format::Simple {
                return refuse(
                    "expiry",
                    "--format enhanced or frame",
                    "command 0 (--format simple) carries no expiry",
                );
            }
        }
        Ok(())
    }

    /// Sends the notifications through the chosen API.
    pub(crate) async fn run(mut self) -> Result<Outcome> {
        if let Some(path) = &self.file {
            let file = read_apns_file(path)?;
            self.payload = file.payload;
            if self.h2.topic.is_none() {
                self.h2.topic = file.bundle;
            }
        }
        if self.http2 {
            self.run_http2().await
        } else {
            self.run_binary().await
        }
    }

    /// Binary gateway: every notification on one connection, then a wait for an error
    /// response (the binary API never confirms success).
    async fn run_binary(self) -> Result<Outcome> {
        let files = self.tls.files();
        let config = files.client_config(Vec::new())?;
        let expiry = self.expiry.unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (now + DEFAULT_EXPIRY).as_secs() as u32
        });
        let mut out = BytesMut::new();
        for (i, token) in self.tokens.iter().enumerate() {
            let token = hex::decode(token.trim())
                .with_context(|| format!("--token {token:?} is not hexadecimal"))?;
            let id = self.binary.id.wrapping_add(i as u32).to_be_bytes();
            let payload = self.payload.as_bytes();
            match self.binary.format {
                Format::Simple => notification::encode_simple_raw(&token, payload, &mut out),
                Format::Enhanced => {
                    notification::encode_enhanced_raw(id, expiry, &token, payload, &mut out)
                }
                Format::Frame => notification::encode_frame_raw(
                    &token,
                    payload,
                    id,
                    expiry,
                    self.priority,
                    &mut out,
                ),
            }
        }
        let gateway = &self.binary.gateway;
        let wait = Duration::from_millis(self.binary.wait_ms);
        let mut client = BinaryClient::connect(gateway, &files.server_name, config).await?;
        client.send(&out).await?;
        let n = self.tokens.len();
        let answer = client.finish(wait).await?;
        if self.output == OutputFormat::Json {
            println!("{}", binary_json(&self, gateway, &answer));
            if matches!(answer, GatewayAnswer::Silent) {
                let _ = client.close().await;
                return Ok(Outcome::Done);
            }
            return Ok(Outcome::PushRefused);
        }
        match answer {
            GatewayAnswer::Silent => {
                println!(
                    "sent {n} notification(s) to {gateway}: no error response within {} ms, so the gateway accepted them",
                    wait.as_millis()
                );
                let _ = client.close().await;
                Ok(Outcome::Done)
            }
            GatewayAnswer::Error(resp) => {
                let id = u32::from_be_bytes(resp.identifier);
                println!(
                    "error response: status {} for notification id {id}; the gateway closed the connection and dropped everything sent after it",
                    resp.status
                );
                Ok(Outcome::PushRefused)
            }
            GatewayAnswer::Closed => {
                println!("the gateway closed the connection without an error response");
                Ok(Outcome::PushRefused)
            }
        }
    }

    /// HTTP/2 API: one request per token on one connection; prints each answer (status,
    /// reason, apns-id). Anything but 200 is a refusal.
    async fn run_http2(self) -> Result<Outcome> {
        let files = self.tls.files();
        let h2 = *self.h2;
        let alpn = vec![tls::ALPN_H2.to_vec()];
        let (config, auth) = match h2.auth {
            Auth::Cert => (files.client_config(alpn)?, PushAuth::Certificate),
            Auth::Token => {
                let path = h2
                    .auth_key
                    .unwrap_or_else(|| self.tls.certs_dir().default_auth_key());
                let key =
                    files::load_auth_key(&path, h2.key_id, h2.team_id).map_err(|e| match e {
                        FilesError::NoKeyId { .. } => {
                            anyhow::Error::new(e).context("--key-id is needed")
                        }
                        other => other.into(),
                    })?;
                (files.trust_only_config(alpn)?, PushAuth::Token(key))
            }
        };
        // Sent as typed: the simulator judges it as APNs does (BadMessageId, or an uppercase
        // id echoed as sent unless `serve --accept-uppercase-apns-id false`), which is what a user tests.
        let apns_id = h2.apns_id.clone();
        let answers = client_http2::push(&client_http2::PushOptions {
            addr: h2.api,
            server_name: files.server_name,
            tls: config,
            auth,
            tokens: self.tokens.clone(),
            topic: Some(h2.topic.unwrap_or_else(|| DEFAULT_TOPIC.to_owned())),
            push_type: h2.push_type,
            priority: Some(self.priority),
            expiration: self.expiry,
            collapse_id: h2.collapse_id,
            apns_id,
            payload: Bytes::from(self.payload),
        })
        .await?;
        let mut outcome = Outcome::Done;
        if self.output == OutputFormat::Json {
            let list: Vec<serde_json::Value> = self
                .tokens
                .iter()
                .zip(&answers)
                .map(|(token, a)| {
                    serde_json::json!({
                        "token": token.trim(),
                        "status": a.status,
                        "reason": a.reason,
                        "apns_id": a.apns_id,
                        "apns_unique_id": a.apns_unique_id,
                        "timestamp": a.timestamp,
                        "detail": a.detail,
                    })
                })
                .collect();
            println!(
                "{}",
                serde_json::json!({"api": "http2", "notifications": list})
            );
        }
        for (token, answer) in self.tokens.iter().zip(&answers) {
            if self.output == OutputFormat::Text {
                println!("{}: {answer}", token.trim());
            }
            if answer.status != 200 {
                outcome = Outcome::PushRefused;
            }
        }
        Ok(outcome)
    }
}

/// The binary gateway's answer as one JSON document: the error response if any, and each
/// notification's identifier, token and outcome as the binary API lets a provider infer it:
/// `accepted` before the one an error response names (and that one too for status 10,
/// Shutdown, which names the last good one), `refused` for the one it names, `dropped`
/// after it; `unknown` when nothing names one (a close without an error response, command
/// 0's missing identifier).
fn binary_json(args: &PushArgs, gateway: &str, answer: &GatewayAnswer) -> serde_json::Value {
    let ids: Vec<u32> = (0..args.tokens.len())
        .map(|i| args.binary.id.wrapping_add(i as u32))
        .collect();
    let (error, named) = match answer {
        GatewayAnswer::Error(resp) => {
            let id = u32::from_be_bytes(resp.identifier);
            let named = if args.binary.format == Format::Simple {
                None
            } else {
                ids.iter().position(|&i| i == id)
            };
            let error = serde_json::json!({
                "status": resp.status.code(),
                "reason": resp.status.description(),
                "identifier": id,
            });
            (error, named.map(|at| (at, resp.status == Status::Shutdown)))
        }
        _ => (serde_json::Value::Null, None),
    };
    let notifications: Vec<serde_json::Value> = ids
        .iter()
        .zip(&args.tokens)
        .enumerate()
        .map(|(i, (id, token))| {
            let outcome = match (answer, named) {
                (GatewayAnswer::Silent, _) => "accepted",
                (_, Some((at, shutdown))) if i < at || (i == at && shutdown) => "accepted",
                (_, Some((at, _))) if i == at => "refused",
                (_, Some(_)) => "dropped",
                (_, None) => "unknown",
            };
            serde_json::json!({"identifier": id, "token": token.trim(), "outcome": outcome})
        })
        .collect();
    let answer = match answer {
        GatewayAnswer::Silent => "accepted",
        GatewayAnswer::Error(_) => "error_response",
        GatewayAnswer::Closed => "closed",
    };
    serde_json::json!({
        "api": "binary",
        "gateway": gateway,
        "answer": answer,
        "error": error,
        "notifications": notifications,
    })
}

#[cfg(test)]
mod tests {
    use super::parse_apns_file;

    #[test]
    fn an_apns_file_gives_its_bundle_and_the_rest_as_payload() {
        let file =
            parse_apns_file(br#"{"Simulator Target Bundle": "com.a", "aps": {"alert": "hi"}}"#)
                .unwrap();
        assert_eq!(file.bundle.as_deref(), Some("com.a"));
        assert_eq!(file.payload, r#"{"aps":{"alert":"hi"}}"#);
        let bare = parse_apns_file(br#"{"aps": {}}"#).unwrap();
        assert_eq!(bare.bundle, None);
        let err = |text: &[u8]| format!("{:#}", parse_apns_file(text).unwrap_err());
        assert!(err(b"nope").contains("not JSON"), "{}", err(b"nope"));
        assert!(err(b"[1]").contains("not an object"));
        assert!(
            err(br#"{"Simulator Target Bundle": 5, "aps": {}}"#).contains("must be a bundle id")
        );
        assert!(err(br#"{"Simulator Target Bundle": "com.a"}"#).contains("payload is empty"));
    }
}

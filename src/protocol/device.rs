//! The simulator's own device protocol (device ↔ simulator); our design, not Apple's.
//!
//! Real devices talk to APNs over a private protocol. Simulated devices instead hold one
//! persistent TLS connection to the simulator's device endpoint and speak this small binary
//! protocol: the device says hello, registers apps to get tokens, receives notifications and
//! acknowledges them, and pings to show it is alive.
//!
//! # Framing
//!
//! Every message, in both directions, is one frame (integers big-endian):
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 1 | message type (table below) |
//! | 1 | 2 | body length B (u16), at most [`MAX_BODY`] = 8192 |
//! | 3 | B | body |
//!
//! A body length over [`MAX_BODY`] is rejected from the 3-byte header, before any body is
//! buffered. An unknown type byte is rejected as soon as it arrives. The body must contain exactly
//! the message's fields: too few bytes is [`DeviceProtocolError::Truncated`], extra bytes are
//! [`DeviceProtocolError::TrailingBytes`]. A `str8` is a u8 length followed by that many bytes of
//! UTF-8; `bool` is one byte, 0 or 1; `env` is one byte, 0 = sandbox, 1 = production; `tok8` is
//! a u8 length (1..=100) followed by that many token bytes; `kind` is a token kind's code
//! ([`TokenKind::code`]: 0 remote, 1 voip, 2 complication, 3 fileprovider, 4 location,
//! 5 pushtotalk, 6 liveactivity-start, 7 liveactivity, 8 widgets, 9 controls) followed by the
//! activity id as a str8 (1..=64 bytes for code 7, empty for every other code). A `kind` is
//! written only for tokens other than the ordinary (remote) one: a body that ends before it
//! means `remote`, so Register frames of devices older than token kinds still decode.
//!
//! # Device → simulator ([`DeviceMessage`])
//!
//! | Type | Message | Body |
//! |---|---|---|
//! | `0x01` | Hello | version u8 (must be [`PROTOCOL_VERSION`] = 1), environment env, serial str8 (1..=64 bytes) |
//! | `0x02` | Register | fresh_install bool (1 = app newly (re)installed → new token), app str8 (bundle ID, 1..=255 bytes), kind (optional) |
//! | `0x03` | Ack | delivery u64 — the device received and showed this notification |
//! | `0x04` | NotInstalled | delivery u64 — this notification's app (token) is no longer on the device |
//! | `0x05` | Ping | nonce u64 |
//! | `0x06` | AckThrough | delivery u64 — the device received and showed every notification of this session numbered up to and including this one that it did not answer otherwise |
//!
//! AckThrough is the cumulative acknowledgement: a session's notifications arrive in the
//! order of their delivery numbers, so one AckThrough after a read answers all of that read's
//! notifications in 11 bytes (after any NotInstalled for some of them, which it then skips).
//! A device may also acknowledge every notification on its own with Ack, and may mix both on
//! one session.
//!
//! # Simulator → device ([`ServerMessage`])
//!
//! | Type | Message | Body |
//! |---|---|---|
//! | `0x81` | Welcome | heartbeat_secs u16 — ping at least this often |
//! | `0x82` | Registered | app str8 (1..=255 bytes), token tok8, kind (optional) |
//! | `0x83` | Notification | delivery u64, token tok8, identifier 4, apns_id 16 (UUID), expiry u32, priority u8, push_type str8 (0 = none), collapse_id str8 (0 = none, ≤ 64), payload length u16, payload |
//! | `0x84` | Pong | nonce u64 (copied from the Ping) |
//! | `0x85` | Error | code u8, message str8 — sent just before the simulator closes the connection |
//!
//! Error codes ([`CloseCode`]):
//!
//! | Code | Meaning |
//! |---|---|
//! | 1 | [`CloseCode::BadHello`]: the first message was not a valid Hello (another message, or an unsupported version) |
//! | 2 | [`CloseCode::Protocol`]: a frame that does not decode, or a message that breaks the protocol |
//! | 3 | [`CloseCode::Replaced`]: another connection with the same serial replaced this one |
//! | 4 | [`CloseCode::Shutdown`]: the simulator is shutting down |
//! | 5 | [`CloseCode::Idle`]: no Hello in time, or silence for longer than the heartbeat allows |
//! | 6 | [`CloseCode::Limit`]: a limit was hit (the simulator's token table is full) |
//!
//! Any other code byte in an Error frame is refused as
//! [`DeviceProtocolError::UnknownCloseCode`]: simulator and device come from the same crate, so
//! an unknown code is a bug to report, not a value to carry along.
//!
//! A Notification body is at most 134 + 256 + 65 + 2 + 5120 = 5577 bytes, well inside
//! [`MAX_BODY`].
//!
//! Registered and Notification carried a fixed 32-byte token before tokens could be longer;
//! devices from before that change cannot read these frames (simulator and device ship in one
//! crate, so both sides change together).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::protocol::reader::Reader;
use crate::protocol::token::{DeviceToken, KindError, TokenKind, MAX_ACTIVITY_LEN};
use crate::protocol::Environment;

/// The only protocol version this simulator speaks; a Hello with another version is refused.
pub const PROTOCOL_VERSION: u8 = 1;
/// Largest body accepted in either direction; bounds what a peer can make us buffer.
pub const MAX_BODY: usize = 8192;
/// Longest device serial number, in bytes (keeps log lines and registry keys small).
pub const MAX_SERIAL_LEN: usize = 64;
/// Longest app bundle ID, in bytes (the most a `str8` can hold).
pub const MAX_APP_LEN: usize = 255;
/// Longest token, in bytes ([`DeviceToken::MAX_LEN`]).
pub const MAX_TOKEN_LEN: usize = DeviceToken::MAX_LEN;
/// Longest push type, in bytes (the most a `str8` can hold).
pub const MAX_PUSH_TYPE_LEN: usize = 255;
/// Longest collapse ID, in bytes (APNs's `apns-collapse-id` limit).
pub const MAX_COLLAPSE_ID_LEN: usize = 64;
/// Longest Error message, in bytes (the most a `str8` can hold).
pub const MAX_ERROR_MESSAGE_LEN: usize = 255;

/// Type byte of [`DeviceMessage::Hello`].
pub const TYPE_HELLO: u8 = 0x01;
/// Type byte of [`DeviceMessage::Register`].
pub const TYPE_REGISTER: u8 = 0x02;
/// Type byte of [`DeviceMessage::Ack`].
pub const TYPE_ACK: u8 = 0x03;
/// Type byte of [`DeviceMessage::NotInstalled`].
pub const TYPE_NOT_INSTALLED: u8 = 0x04;
/// Type byte of [`DeviceMessage::Ping`].
pub const TYPE_PING: u8 = 0x05;
/// Type byte of [`DeviceMessage::AckThrough`].
pub const TYPE_ACK_THROUGH: u8 = 0x06;
/// Type byte of [`ServerMessage::Welcome`].
pub const TYPE_WELCOME: u8 = 0x81;
/// Type byte of [`ServerMessage::Registered`].
pub const TYPE_REGISTERED: u8 = 0x82;
/// Type byte of [`ServerMessage::Notification`].
pub const TYPE_NOTIFICATION: u8 = 0x83;
/// Type byte of [`ServerMessage::Pong`].
pub const TYPE_PONG: u8 = 0x84;
/// Type byte of [`ServerMessage::Error`].
pub const TYPE_ERROR: u8 = 0x85;

/// Why the simulator closes a device connection: the code byte of [`ServerMessage::Error`].
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1: the first message was not a valid Hello (another message, or an unsupported
    /// protocol version).
    BadHello = 1,
    /// 2: the device sent a frame that does not decode, or a message out of place (a second
    /// Hello, an Ack for a delivery it was never sent).
    Protocol = 2,
    /// 3: another connection with the same serial replaced this one; the device should not
    /// reconnect on its own.
    Replaced = 3,
    /// 4: the simulator is shutting down.
    Shutdown = 4,
    /// 5: no Hello within the hello deadline, or silence longer than the heartbeat allows.
    Idle = 5,
    /// 6: a limit was hit: the simulator's token table is full (`hub::MAX_TOKENS`); too many
    /// connections wait in the accept loop instead.
    Limit = 6,
}

impl CloseCode {
    /// Every close code, in code order (for tests and listings).
    pub const ALL: [CloseCode; 6] = [
        CloseCode::BadHello,
        CloseCode::Protocol,
        CloseCode::Replaced,
        CloseCode::Shutdown,
        CloseCode::Idle,
        CloseCode::Limit,
    ];

    /// The byte written as the Error message's `code`.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Decodes a code byte; `None` for a byte this protocol does not define, which the
    /// decoder reports as [`DeviceProtocolError::UnknownCloseCode`].
    pub fn from_code(code: u8) -> Option<CloseCode> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// A short name for logs and error messages.
    pub fn description(self) -> &'static str {
        match self {
            CloseCode::BadHello => "bad hello",
            CloseCode::Protocol => "protocol error",
            CloseCode::Replaced => "replaced",
            CloseCode::Shutdown => "shutdown",
            CloseCode::Idle => "idle",
            CloseCode::Limit => "limit",
        }
    }
}

impl fmt::Display for CloseCode {
    /// `<code> (<description>)`, e.g. `3 (replaced)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.description())
    }
}

/// Size of the frame header: type (1) + body length (2).
const HEADER_LEN: usize = 3;

/// A message from a simulated device to the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceMessage {
    /// First message on a connection: who the device is and which environment it lives in.
    Hello {
        /// Protocol version; must be [`PROTOCOL_VERSION`].
        version: u8,
        /// The APNs environment whose tokens this device holds.
        environment: Environment,
        /// Stable device identity (1..=64 bytes); a second connection with it replaces the first.
        serial: String,
    },
    /// Ask for a token for an app on this device.
    Register {
        /// True when the app was newly (re)installed, which makes APNs issue a new token.
        fresh_install: bool,
        /// The app's bundle ID (1..=255 bytes), i.e. its topic.
        app: String,
        /// Which of the app's tokens (the ordinary one, a PushKit one, a Live Activity one, …).
        kind: TokenKind,
    },
    /// The device received and showed notification `delivery`.
    Ack {
        /// The delivery number from [`DeviceNotification::delivery`].
        delivery: u64,
    },
    /// Notification `delivery` was for an app (token) this device no longer has; feeds feedback.
    NotInstalled {
        /// The delivery number from [`DeviceNotification::delivery`].
        delivery: u64,
    },
    /// Keep-alive; the simulator answers with [`ServerMessage::Pong`].
    Ping {
        /// Arbitrary value echoed in the Pong, so the device can match them up.
        nonce: u64,
    },
    /// The device received and showed every notification of this session numbered up to and
    /// including `delivery` that it has not answered otherwise (the cumulative Ack).
    AckThrough {
        /// The highest delivery number it answers, from [`DeviceNotification::delivery`].
        delivery: u64,
    },
}

impl DeviceMessage {
    /// The type byte this message is framed with.
    pub fn frame_type(&self) -> u8 {
        match self {
            DeviceMessage::Hello { .. } => TYPE_HELLO,
            DeviceMessage::Register { .. } => TYPE_REGISTER,
            DeviceMessage::Ack { .. } => TYPE_ACK,
            DeviceMessage::NotInstalled { .. } => TYPE_NOT_INSTALLED,
            DeviceMessage::Ping { .. } => TYPE_PING,
            DeviceMessage::AckThrough { .. } => TYPE_ACK_THROUGH,
        }
    }
}

/// A message from the simulator to a simulated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// Reply to a good Hello.
    Welcome {
        /// The device should ping at least this often, or be dropped as idle.
        heartbeat_secs: u16,
    },
    /// Reply to Register: the app's token on this device.
    Registered {
        /// The bundle ID from the Register (1..=255 bytes).
        app: String,
        /// The kind from the Register.
        kind: TokenKind,
        /// The token providers must use to reach this kind of token of the app on this device.
        token: DeviceToken,
    },
    /// A notification for one of the device's apps.
    Notification(DeviceNotification),
    /// Reply to Ping.
    Pong {
        /// The Ping's nonce.
        nonce: u64,
    },
    /// Why the simulator is about to close the connection.
    Error {
        /// Why the connection is closing.
        code: CloseCode,
        /// Human-readable detail (at most 255 bytes; may be empty).
        message: String,
    },
}

impl ServerMessage {
    /// The type byte this message is framed with.
    pub fn frame_type(&self) -> u8 {
        match self {
            ServerMessage::Welcome { .. } => TYPE_WELCOME,
            ServerMessage::Registered { .. } => TYPE_REGISTERED,
            ServerMessage::Notification(_) => TYPE_NOTIFICATION,
            ServerMessage::Pong { .. } => TYPE_PONG,
            ServerMessage::Error { .. } => TYPE_ERROR,
        }
    }
}

/// A notification as delivered to a device: what the provider sent plus delivery bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNotification {
    /// Simulator-wide delivery number; the device echoes it in Ack / NotInstalled.
    pub delivery: u64,
    /// Which app on the device it is for.
    pub token: DeviceToken,
    /// The binary API's identifier (0 for HTTP/2 or when absent), so tests can correlate.
    pub identifier: [u8; 4],
    /// The `apns-id` UUID bytes (generated when the provider gave none).
    pub apns_id: [u8; 16],
    /// Expiry in UNIX seconds, 0 = do not store; lets the device see what the provider asked.
    pub expiry: u32,
    /// Priority as sent (10, 5, or 1 on HTTP/2); not validated here.
    pub priority: u8,
    /// The `apns-push-type` (e.g. `alert`), if any; encoded as an empty str8 when `None`.
    pub push_type: Option<String>,
    /// The `apns-collapse-id` (≤ 64 bytes), if any; encoded as an empty str8 when `None`.
    pub collapse_id: Option<String>,
    /// The JSON payload, exactly as the provider sent it.
    pub payload: Bytes,
}

impl DeviceNotification {
    /// Its fields, borrowed, as [`encode_notification`] writes them.
    pub fn fields(&self) -> NotificationFields<'_> {
        NotificationFields {
            delivery: self.delivery,
            token: &self.token,
            identifier: self.identifier,
            apns_id: self.apns_id,
            expiry: self.expiry,
            priority: self.priority,
            push_type: self.push_type.as_deref(),
            collapse_id: self.collapse_id.as_deref(),
            payload: &self.payload,
        }
    }
}

/// A Notification frame's fields, borrowed from whoever holds them: what
/// [`encode_notification`] writes. Each field means what it means in [`DeviceNotification`].
#[derive(Debug, Clone, Copy)]
pub struct NotificationFields<'a> {
    /// The delivery number the device echoes in its answer.
    pub delivery: u64,
    /// Which app on the device it is for.
    pub token: &'a DeviceToken,
    /// The binary API's identifier (zero when there is none).
    pub identifier: [u8; 4],
    /// The `apns-id` UUID bytes.
    pub apns_id: [u8; 16],
    /// Expiry in UNIX seconds, 0 = do not store.
    pub expiry: u32,
    /// Priority as sent.
    pub priority: u8,
    /// The `apns-push-type`, if any.
    pub push_type: Option<&'a str>,
    /// The `apns-collapse-id`, if any.
    pub collapse_id: Option<&'a str>,
    /// The JSON payload, exactly as the provider sent it.
    pub payload: &'a [u8],
}

/// Why a device-protocol frame was refused; the connection is then closed (after an Error
/// message, when the simulator is the one refusing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceProtocolError {
    /// A type byte that this direction does not use.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// A declared body length over the limit.
    #[error("body length {len} exceeds the maximum {max}")]
    BodyTooLarge {
        /// The declared body length.
        len: usize,
        /// The limit ([`MAX_BODY`]).
        max: usize,
    },
    /// The body ended before this field.
    #[error("body ends before {what}")]
    Truncated {
        /// The missing field, as `Message.field`.
        what: &'static str,
    },
    /// The body has bytes after its last field.
    #[error("message type {frame_type:#04x} has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The message's type byte.
        frame_type: u8,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A string field is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    BadUtf8 {
        /// The field, as `Message.field`.
        what: &'static str,
    },
    /// A required string field is empty.
    #[error("{what} is empty")]
    EmptyField {
        /// The field, as `Message.field`.
        what: &'static str,
    },
    /// A string field is longer than its limit.
    #[error("{what} is {len} bytes, over the {max}-byte limit")]
    FieldTooLong {
        /// The field, as `Message.field`.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An environment byte other than 0 or 1.
    #[error("environment byte {0} is not 0 (sandbox) or 1 (production)")]
    BadEnvironment(u8),
    /// A boolean byte other than 0 or 1.
    #[error("boolean byte {0} is not 0 or 1")]
    BadBool(u8),
    /// A Hello with a protocol version we do not speak.
    #[error("unsupported device protocol version {0} (this simulator speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// A token kind that is not one (an unknown code, or an activity id where none belongs).
    #[error("{what}: {error}")]
    BadKind {
        /// The field, as `Message.field`.
        what: &'static str,
        /// Why it is not a kind.
        error: KindError,
    },
    /// An Error message whose code byte is not a [`CloseCode`].
    #[error("unknown close code {0} in an Error message")]
    UnknownCloseCode(u8),
}

/// Decodes one device → simulator message from the front of `buf`, consuming it.
/// `Ok(None)` = need more bytes (nothing consumed).
pub fn decode_device_message(
    buf: &mut BytesMut,
) -> Result<Option<DeviceMessage>, DeviceProtocolError> {
    // Read in place, then consumed: no device message keeps bytes of its body, and splitting
    // it off would make the read buffer shared (its first split allocates the shared header,
    // and a device session takes a fresh buffer for each read while idle ones are released),
    // an allocation for about every read of acknowledgements.
    let Some((frame_type, len)) = whole_frame(buf, is_device_type)? else {
        return Ok(None);
    };
    let message = device_message(frame_type, buf.get(HEADER_LEN..len).unwrap_or_default());
    buf.advance(len);
    message.map(Some)
}

/// The device message of type `frame_type` whose body is `body`.
fn device_message(frame_type: u8, body: &[u8]) -> Result<DeviceMessage, DeviceProtocolError> {
    let mut f = Fields::new(frame_type, body);
    let message = match frame_type {
        TYPE_HELLO => {
            let version = f.u8("Hello.version")?;
            if version != PROTOCOL_VERSION {
                return Err(DeviceProtocolError::UnsupportedVersion(version));
            }
            let env = f.u8("Hello.environment")?;
            let environment =
                Environment::from_byte(env).ok_or(DeviceProtocolError::BadEnvironment(env))?;
            let serial = f.required_str8("Hello.serial", MAX_SERIAL_LEN)?;
            DeviceMessage::Hello {
                version,
                environment,
                serial,
            }
        }
        TYPE_REGISTER => DeviceMessage::Register {
            fresh_install: f.bool("Register.fresh_install")?,
            app: f.required_str8("Register.app", MAX_APP_LEN)?,
            kind: f.kind("Register.kind", "Register.activity")?,
        },
        TYPE_ACK => DeviceMessage::Ack {
            delivery: f.u64("Ack.delivery")?,
        },
        TYPE_NOT_INSTALLED => DeviceMessage::NotInstalled {
            delivery: f.u64("NotInstalled.delivery")?,
        },
        TYPE_PING => DeviceMessage::Ping {
            nonce: f.u64("Ping.nonce")?,
        },
        TYPE_ACK_THROUGH => DeviceMessage::AckThrough {
            delivery: f.u64("AckThrough.delivery")?,
        },
        other => return Err(DeviceProtocolError::UnknownType(other)),
    };
    f.finish()?;
    Ok(message)
}

/// Decodes one simulator → device message from the front of `buf`, consuming it.
/// `Ok(None)` = need more bytes (nothing consumed).
pub fn decode_server_message(
    buf: &mut BytesMut,
) -> Result<Option<ServerMessage>, DeviceProtocolError> {
    let Some((frame_type, body)) = take_frame(buf, is_server_type)? else {
        return Ok(None);
    };
    let mut f = Fields::new(frame_type, &body);
    let message = match frame_type {
        TYPE_WELCOME => ServerMessage::Welcome {
            heartbeat_secs: f.u16("Welcome.heartbeat_secs")?,
        },
        TYPE_REGISTERED => ServerMessage::Registered {
            app: f.required_str8("Registered.app", MAX_APP_LEN)?,
            token: f.token("Registered.token")?,
            kind: f.kind("Registered.kind", "Registered.activity")?,
        },
        TYPE_NOTIFICATION => ServerMessage::Notification(DeviceNotification {
            delivery: f.u64("Notification.delivery")?,
            token: f.token("Notification.token")?,
            identifier: f.array("Notification.identifier")?,
            apns_id: f.array("Notification.apns_id")?,
            expiry: f.u32("Notification.expiry")?,
            priority: f.u8("Notification.priority")?,
            push_type: f.optional_str8("Notification.push_type", MAX_PUSH_TYPE_LEN)?,
            collapse_id: f.optional_str8("Notification.collapse_id", MAX_COLLAPSE_ID_LEN)?,
            payload: body.slice_ref(f.bytes16("Notification.payload")?),
        }),
        TYPE_PONG => ServerMessage::Pong {
            nonce: f.u64("Pong.nonce")?,
        },
        TYPE_ERROR => ServerMessage::Error {
            code: {
                let code = f.u8("Error.code")?;
                CloseCode::from_code(code).ok_or(DeviceProtocolError::UnknownCloseCode(code))?
            },
            message: f.str8("Error.message", MAX_ERROR_MESSAGE_LEN)?,
        },
        other => return Err(DeviceProtocolError::UnknownType(other)),
    };
    f.finish()?;
    Ok(Some(message))
}

/// Appends one device → simulator frame to `dst`.
///
/// Encoding never fails. A string over its field's limit is cut at a UTF-8 character boundary to
/// that limit, so the frame always decodes; content rules (non-empty serial/app, version 1) are
/// the sender's job and are enforced by the receiving decoder.
pub fn encode_device_message(m: &DeviceMessage, dst: &mut BytesMut) {
    put_frame(dst, m.frame_type(), |body| match m {
        DeviceMessage::Hello {
            version,
            environment,
            serial,
        } => {
            body.put_u8(*version);
            body.put_u8(environment.to_byte());
            put_str8(body, serial, MAX_SERIAL_LEN);
        }
        DeviceMessage::Register {
            fresh_install,
            app,
            kind,
        } => {
            body.put_u8(u8::from(*fresh_install));
            put_str8(body, app, MAX_APP_LEN);
            put_kind(body, kind);
        }
        DeviceMessage::Ack { delivery }
        | DeviceMessage::NotInstalled { delivery }
        | DeviceMessage::AckThrough { delivery } => {
            body.put_u64(*delivery);
        }
        DeviceMessage::Ping { nonce } => body.put_u64(*nonce),
    });
}

/// Appends one simulator → device frame to `dst`.
///
/// Encoding never fails. Strings over their field's limit are cut at a UTF-8 character boundary,
/// and a payload is cut so the body stays within [`MAX_BODY`] (callers pass payloads the gateway
/// already limited to 5120 bytes, which always fit), so the frame always decodes.
pub fn encode_server_message(m: &ServerMessage, dst: &mut BytesMut) {
    if let ServerMessage::Notification(n) = m {
        return encode_notification(&n.fields(), dst);
    }
    put_frame(dst, m.frame_type(), |body| match m {
        ServerMessage::Welcome { heartbeat_secs } => body.put_u16(*heartbeat_secs),
        ServerMessage::Registered { app, kind, token } => {
            put_str8(body, app, MAX_APP_LEN);
            put_token(body, token);
            put_kind(body, kind);
        }
        ServerMessage::Notification(_) => {}
        ServerMessage::Pong { nonce } => body.put_u64(*nonce),
        ServerMessage::Error { code, message } => {
            body.put_u8(code.code());
            put_str8(body, message, MAX_ERROR_MESSAGE_LEN);
        }
    });
}

/// Appends one Notification frame to `dst`: [`encode_server_message`] for
/// `ServerMessage::Notification(n)` from `n`'s borrowed fields, so that the device session
/// writes straight from the hub's shared copy of a notification, a batch at a time, without
/// building a [`DeviceNotification`] (whose strings and payload would be copies).
pub fn encode_notification(n: &NotificationFields<'_>, dst: &mut BytesMut) {
    // The fixed fields (58 bytes with the longest token) and the payload, so that the frame
    // is written with at most one reservation.
    dst.reserve(HEADER_LEN + 64 + DeviceToken::MAX_LEN + n.payload.len());
    put_frame(dst, TYPE_NOTIFICATION, |body| {
        let start = body.len();
        body.put_u64(n.delivery);
        put_token(body, n.token);
        body.put_slice(&n.identifier);
        body.put_slice(&n.apns_id);
        body.put_u32(n.expiry);
        body.put_u8(n.priority);
        put_str8(body, n.push_type.unwrap_or(""), MAX_PUSH_TYPE_LEN);
        put_str8(body, n.collapse_id.unwrap_or(""), MAX_COLLAPSE_ID_LEN);
        let room = MAX_BODY.saturating_sub(body.len() - start + 2);
        let payload = n.payload.get(..room).unwrap_or(n.payload);
        body.put_u16(u16::try_from(payload.len()).unwrap_or(u16::MAX));
        body.put_slice(payload);
    });
}

/// Type bytes a device may send.
fn is_device_type(t: u8) -> bool {
    matches!(
        t,
        TYPE_HELLO | TYPE_REGISTER | TYPE_ACK | TYPE_NOT_INSTALLED | TYPE_PING | TYPE_ACK_THROUGH
    )
}

/// Type bytes the simulator may send.
fn is_server_type(t: u8) -> bool {
    matches!(
        t,
        TYPE_WELCOME | TYPE_REGISTERED | TYPE_NOTIFICATION | TYPE_PONG | TYPE_ERROR
    )
}

/// Checks the frame at the front of `buf` without consuming it: the type byte as soon as it
/// is present and the body length as soon as the header is. `Some((type, length))` once the
/// whole frame (header and body) is there.
fn whole_frame(
    buf: &[u8],
    known_type: fn(u8) -> bool,
) -> Result<Option<(u8, usize)>, DeviceProtocolError> {
    let Some(&frame_type) = buf.first() else {
        return Ok(None);
    };
    if !known_type(frame_type) {
        return Err(DeviceProtocolError::UnknownType(frame_type));
    }
    let Some(&[_, hi, lo]) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > MAX_BODY {
        return Err(DeviceProtocolError::BodyTooLarge { len, max: MAX_BODY });
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    Ok(Some((frame_type, HEADER_LEN + len)))
}

/// Splits one whole frame off `buf` ([`whole_frame`]'s checks), its body as shared bytes so
/// that a payload can be a slice of it.
fn take_frame(
    buf: &mut BytesMut,
    known_type: fn(u8) -> bool,
) -> Result<Option<(u8, Bytes)>, DeviceProtocolError> {
    let Some((frame_type, len)) = whole_frame(buf, known_type)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(len).freeze();
    let body = frame.split_off(HEADER_LEN);
    Ok(Some((frame_type, body)))
}

/// Writes the header and body of one frame. The body is at most [`MAX_BODY`] by construction
/// of the encoders (every field is clamped).
fn put_frame(dst: &mut BytesMut, frame_type: u8, body: impl FnOnce(&mut BytesMut)) {
    let start = dst.len();
    dst.put_u8(frame_type);
    dst.put_u16(0);
    body(dst);
    // The body's length, now known, into the header written before it.
    let len = dst.len() - start - HEADER_LEN;
    let len = u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(field) = dst.get_mut(start + 1..start + HEADER_LEN) {
        field.copy_from_slice(&len);
    }
}

/// Writes a `str8`, cutting `s` at a character boundary to at most `max` (≤ 255) bytes.
fn put_str8(dst: &mut BytesMut, s: &str, max: usize) {
    let mut end = s.len().min(max).min(usize::from(u8::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = s.as_bytes().get(..end).unwrap_or_default();
    dst.put_u8(u8::try_from(bytes.len()).unwrap_or(u8::MAX));
    dst.put_slice(bytes);
}

/// Writes a `tok8`: the length byte, then the token (1..=100 bytes, so the byte holds it).
fn put_token(dst: &mut BytesMut, token: &DeviceToken) {
    dst.put_u8(u8::try_from(token.len()).unwrap_or(u8::MAX));
    dst.put_slice(token.as_bytes());
}

/// Writes a `kind` (code, then activity id as a str8), or nothing for the ordinary token.
fn put_kind(dst: &mut BytesMut, kind: &TokenKind) {
    if *kind == TokenKind::Remote {
        return;
    }
    dst.put_u8(kind.code());
    put_str8(dst, kind.activity().unwrap_or(""), MAX_ACTIVITY_LEN);
}

/// Typed, named reads from one message body; every failure names the field.
struct Fields<'a> {
    /// The message's type byte, for [`DeviceProtocolError::TrailingBytes`].
    frame_type: u8,
    /// Cursor over the body.
    r: Reader<'a>,
}

impl<'a> Fields<'a> {
    fn new(frame_type: u8, body: &'a [u8]) -> Self {
        Fields {
            frame_type,
            r: Reader::new(body),
        }
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DeviceProtocolError> {
        self.r.u8().ok_or(DeviceProtocolError::Truncated { what })
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DeviceProtocolError> {
        self.r.u16().ok_or(DeviceProtocolError::Truncated { what })
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DeviceProtocolError> {
        self.r.u32().ok_or(DeviceProtocolError::Truncated { what })
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DeviceProtocolError> {
        self.r.u64().ok_or(DeviceProtocolError::Truncated { what })
    }

    fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], DeviceProtocolError> {
        self.r
            .array()
            .ok_or(DeviceProtocolError::Truncated { what })
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, DeviceProtocolError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(DeviceProtocolError::BadBool(other)),
        }
    }

    /// A `str8` of 0..=`max` bytes.
    fn str8(&mut self, what: &'static str, max: usize) -> Result<String, DeviceProtocolError> {
        let len = usize::from(self.u8(what)?);
        let bytes = self
            .r
            .take(len)
            .ok_or(DeviceProtocolError::Truncated { what })?;
        if len > max {
            return Err(DeviceProtocolError::FieldTooLong { what, len, max });
        }
        let s = std::str::from_utf8(bytes).map_err(|_| DeviceProtocolError::BadUtf8 { what })?;
        Ok(s.to_owned())
    }

    /// A `str8` of 1..=`max` bytes.
    fn required_str8(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<String, DeviceProtocolError> {
        let s = self.str8(what, max)?;
        if s.is_empty() {
            return Err(DeviceProtocolError::EmptyField { what });
        }
        Ok(s)
    }

    /// A `str8` of 0..=`max` bytes where empty means absent.
    fn optional_str8(
        &mut self,
        what: &'static str,
        max: usize,
    ) -> Result<Option<String>, DeviceProtocolError> {
        let s = self.str8(what, max)?;
        Ok(if s.is_empty() { None } else { Some(s) })
    }

    /// A `tok8`: a length byte of 1..=[`MAX_TOKEN_LEN`], then the token.
    fn token(&mut self, what: &'static str) -> Result<DeviceToken, DeviceProtocolError> {
        let len = usize::from(self.u8(what)?);
        let bytes = self
            .r
            .take(len)
            .ok_or(DeviceProtocolError::Truncated { what })?;
        if len > MAX_TOKEN_LEN {
            return Err(DeviceProtocolError::FieldTooLong {
                what,
                len,
                max: MAX_TOKEN_LEN,
            });
        }
        DeviceToken::new(bytes).map_err(|_| DeviceProtocolError::EmptyField { what })
    }

    /// An optional trailing `kind`: the ordinary token when the body has ended.
    fn kind(
        &mut self,
        what: &'static str,
        activity_what: &'static str,
    ) -> Result<TokenKind, DeviceProtocolError> {
        if self.r.remaining() == 0 {
            return Ok(TokenKind::Remote);
        }
        let code = self.u8(what)?;
        let activity = self.str8(activity_what, MAX_ACTIVITY_LEN)?;
        TokenKind::from_code(code, &activity)
            .map_err(|error| DeviceProtocolError::BadKind { what, error })
    }

    /// A u16-length-prefixed byte string, as a slice of the body (the caller makes it a
    /// zero-copy slice of the body's bytes).
    fn bytes16(&mut self, what: &'static str) -> Result<&'a [u8], DeviceProtocolError> {
        let len = usize::from(self.u16(what)?);
        self.r
            .take(len)
            .ok_or(DeviceProtocolError::Truncated { what })
    }

    /// Requires that every body byte was used.
    fn finish(self) -> Result<(), DeviceProtocolError> {
        match self.r.remaining() {
            0 => Ok(()),
            extra => Err(DeviceProtocolError::TrailingBytes {
                frame_type: self.frame_type,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: [u8; 32] = [0x7E; 32];

    fn buf(parts: &[&[u8]]) -> BytesMut {
        BytesMut::from(&parts.concat()[..])
    }

    fn notification() -> DeviceNotification {
        DeviceNotification {
            delivery: 7,
            token: DeviceToken::from_bytes(TOKEN),
            identifier: [0xDE, 0xAD, 0xBE, 0xEF],
            apns_id: [0x11; 16],
            expiry: 1_600_000_000,
            priority: 10,
            push_type: Some("alert".into()),
            collapse_id: None,
            payload: Bytes::from_static(b"{}"),
        }
    }

    /// Every device message with its exact bytes.
    fn device_fixtures() -> Vec<(Vec<u8>, DeviceMessage)> {
        vec![
            (
                [
                    &[0x01][..],   // type Hello
                    &[0x00, 0x07], // body length 7
                    &[0x01],       // version 1
                    &[0x01],       // environment production
                    &[0x04],       // serial length 4
                    b"SIM1",       // serial
                ]
                .concat(),
                DeviceMessage::Hello {
                    version: 1,
                    environment: Environment::Production,
                    serial: "SIM1".into(),
                },
            ),
            (
                [
                    &[0x02][..],    // type Register
                    &[0x00, 0x0D],  // body length 13
                    &[0x01],        // fresh_install true
                    &[0x0B],        // app length 11
                    b"com.example", // app
                ]
                .concat(),
                DeviceMessage::Register {
                    fresh_install: true,
                    app: "com.example".into(),
                    kind: TokenKind::Remote,
                },
            ),
            (
                [
                    &[0x03][..],                                       // type Ack
                    &[0x00, 0x08],                                     // body length 8
                    &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00], // delivery 256
                ]
                .concat(),
                DeviceMessage::Ack { delivery: 256 },
            ),
            (
                [
                    &[0x04][..],                                       // type NotInstalled
                    &[0x00, 0x08],                                     // body length 8
                    &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07], // delivery 7
                ]
                .concat(),
                DeviceMessage::NotInstalled { delivery: 7 },
            ),
            (
                [
                    &[0x06][..],                                       // type AckThrough
                    &[0x00, 0x08],                                     // body length 8
                    &[0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02], // delivery 65,538
                ]
                .concat(),
                DeviceMessage::AckThrough { delivery: 65_538 },
            ),
            (
                [
                    &[0x05][..],                                       // type Ping
                    &[0x00, 0x08],                                     // body length 8
                    &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF], // nonce u64::MAX
                ]
                .concat(),
                DeviceMessage::Ping { nonce: u64::MAX },
            ),
            (
                [
                    &[0x02][..],   // type Register
                    &[0x00, 0x0C], // body length 12
                    &[0x00],       // fresh_install false
                    &[0x03],       // app length 3
                    b"com",        // app
                    &[0x07],       // kind 7: Live Activity update token
                    &[0x05],       // activity length 5
                    b"ride1",      // activity
                ]
                .concat(),
                DeviceMessage::Register {
                    fresh_install: false,
                    app: "com".into(),
                    kind: TokenKind::LiveActivity("ride1".into()),
                },
            ),
        ]
    }

    /// Every server message with its exact bytes.
    fn server_fixtures() -> Vec<(Vec<u8>, ServerMessage)> {
        vec![
            (
                [
                    &[0x81][..],   // type Welcome
                    &[0x00, 0x02], // body length 2
                    &[0x00, 0x3C], // heartbeat 60 s
                ]
                .concat(),
                ServerMessage::Welcome { heartbeat_secs: 60 },
            ),
            (
                [
                    &[0x82][..],   // type Registered
                    &[0x00, 0x24], // body length 36
                    &[0x02],       // app length 2
                    b"ab",         // app
                    &[0x20],       // token length 32
                    &TOKEN,        // token
                ]
                .concat(),
                ServerMessage::Registered {
                    app: "ab".into(),
                    kind: TokenKind::Remote,
                    token: DeviceToken::from_bytes(TOKEN),
                },
            ),
            (
                [
                    &[0x83][..],                                       // type Notification
                    &[0x00, 0x4D],                                     // body length 77
                    &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07], // delivery 7
                    &[0x20],                                           // token length 32
                    &TOKEN,                                            // token
                    &[0xDE, 0xAD, 0xBE, 0xEF],                         // identifier
                    &[0x11; 16],                                       // apns_id
                    &[0x5F, 0x5E, 0x10, 0x00],                         // expiry 1_600_000_000
                    &[0x0A],                                           // priority 10
                    &[0x05],                                           // push_type length 5
                    b"alert",                                          // push_type
                    &[0x00],                                           // collapse_id: none
                    &[0x00, 0x02],                                     // payload length 2
                    b"{}",                                             // payload
                ]
                .concat(),
                ServerMessage::Notification(notification()),
            ),
            (
                [
                    &[0x84][..],                                       // type Pong
                    &[0x00, 0x08],                                     // body length 8
                    &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2A], // nonce 42
                ]
                .concat(),
                ServerMessage::Pong { nonce: 42 },
            ),
            (
                [
                    &[0x85][..],   // type Error
                    &[0x00, 0x06], // body length 6
                    &[0x03],       // code 3 (CloseCode::Replaced)
                    &[0x04],       // message length 4
                    b"bye!",       // message
                ]
                .concat(),
                ServerMessage::Error {
                    code: CloseCode::Replaced,
                    message: "bye!".into(),
                },
            ),
            (
                [
                    &[0x82][..],   // type Registered
                    &[0x00, 0x55], // body length 85
                    &[0x01],       // app length 1
                    b"a",          // app
                    &[0x50],       // token length 80
                    &[0x7E; 80],   // token
                    &[0x01],       // kind 1: PushKit VoIP token
                    &[0x00],       // activity: none
                ]
                .concat(),
                ServerMessage::Registered {
                    app: "a".into(),
                    kind: TokenKind::Voip,
                    token: DeviceToken::new(&[0x7E; 80]).unwrap(),
                },
            ),
        ]
    }

    // ---- fixtures and round trips ----

    #[test]
    fn device_fixtures_decode_and_encode() {
        for (bytes, message) in device_fixtures() {
            let mut b = BytesMut::from(&bytes[..]);
            assert_eq!(decode_device_message(&mut b), Ok(Some(message.clone())));
            assert!(b.is_empty());
            let mut out = BytesMut::new();
            encode_device_message(&message, &mut out);
            assert_eq!(&out[..], &bytes[..], "{message:?}");
            assert_eq!(bytes.first(), Some(&message.frame_type()));
        }
    }

    #[test]
    fn server_fixtures_decode_and_encode() {
        for (bytes, message) in server_fixtures() {
            let mut b = BytesMut::from(&bytes[..]);
            assert_eq!(decode_server_message(&mut b), Ok(Some(message.clone())));
            assert!(b.is_empty());
            let mut out = BytesMut::new();
            encode_server_message(&message, &mut out);
            assert_eq!(&out[..], &bytes[..], "{message:?}");
            assert_eq!(bytes.first(), Some(&message.frame_type()));
        }
    }

    #[test]
    fn more_round_trips() {
        let device = [
            DeviceMessage::Hello {
                version: PROTOCOL_VERSION,
                environment: Environment::Sandbox,
                serial: "s".repeat(MAX_SERIAL_LEN),
            },
            DeviceMessage::Register {
                fresh_install: false,
                app: "ü".repeat(127),
                kind: TokenKind::Remote,
            },
            DeviceMessage::Register {
                fresh_install: true,
                app: "a".repeat(MAX_APP_LEN),
                kind: TokenKind::LiveActivity("x".repeat(MAX_ACTIVITY_LEN)),
            },
            DeviceMessage::Register {
                fresh_install: true,
                app: "a".into(),
                kind: TokenKind::Controls,
            },
        ];
        for m in device {
            let mut b = BytesMut::new();
            encode_device_message(&m, &mut b);
            assert_eq!(decode_device_message(&mut b), Ok(Some(m)));
        }
        let full = DeviceNotification {
            push_type: None,
            collapse_id: Some("c".repeat(MAX_COLLAPSE_ID_LEN)),
            priority: 1,
            payload: Bytes::from(vec![b'x'; 5120]),
            ..notification()
        };
        let server = [
            ServerMessage::Notification(full),
            ServerMessage::Error {
                code: CloseCode::Shutdown,
                message: String::new(),
            },
            ServerMessage::Registered {
                app: "a".repeat(MAX_APP_LEN),
                kind: TokenKind::LiveActivityStart,
                token: DeviceToken::from_bytes([0; 32]),
            },
            ServerMessage::Notification(DeviceNotification {
                token: DeviceToken::new(&[9; MAX_TOKEN_LEN]).unwrap(),
                payload: Bytes::from(vec![b'x'; 5120]),
                ..notification()
            }),
        ];
        for m in server {
            let mut b = BytesMut::new();
            encode_server_message(&m, &mut b);
            assert_eq!(decode_server_message(&mut b), Ok(Some(m)));
        }
    }

    #[test]
    fn close_codes_match_the_table() {
        let table = [
            (1, CloseCode::BadHello, "1 (bad hello)"),
            (2, CloseCode::Protocol, "2 (protocol error)"),
            (3, CloseCode::Replaced, "3 (replaced)"),
            (4, CloseCode::Shutdown, "4 (shutdown)"),
            (5, CloseCode::Idle, "5 (idle)"),
            (6, CloseCode::Limit, "6 (limit)"),
        ];
        for (byte, code, shown) in table {
            assert_eq!(code.code(), byte);
            assert_eq!(CloseCode::from_code(byte), Some(code));
            assert_eq!(code.to_string(), shown);
        }
        assert_eq!(CloseCode::ALL.map(CloseCode::code), [1, 2, 3, 4, 5, 6]);
        for byte in (0..=u8::MAX).filter(|b| !(1..=6).contains(b)) {
            assert_eq!(CloseCode::from_code(byte), None, "{byte}");
        }
    }

    #[test]
    fn every_close_code_round_trips() {
        for code in CloseCode::ALL {
            let m = ServerMessage::Error {
                code,
                message: "why".into(),
            };
            let mut b = BytesMut::new();
            encode_server_message(&m, &mut b);
            assert_eq!(b[3], code.code());
            assert_eq!(decode_server_message(&mut b), Ok(Some(m)));
        }
    }

    #[test]
    fn unknown_close_code_is_refused() {
        for byte in [0x00, 0x07, 0xFF] {
            let mut b = buf(&[
                &[0x85],       // type Error
                &[0x00, 0x02], // body length 2
                &[byte],       // code: not in the table
                &[0x00],       // message length 0
            ]);
            let err = decode_server_message(&mut b).unwrap_err();
            assert_eq!(err, DeviceProtocolError::UnknownCloseCode(byte));
            assert!(err.to_string().contains(&byte.to_string()), "{err}");
        }
    }

    // ---- streaming ----

    #[test]
    fn many_messages_in_one_buffer() {
        let mut b = BytesMut::new();
        for (bytes, _) in device_fixtures() {
            b.extend_from_slice(&bytes);
        }
        for (_, m) in device_fixtures() {
            assert_eq!(decode_device_message(&mut b), Ok(Some(m)));
        }
        assert_eq!(decode_device_message(&mut b), Ok(None));

        for (_, m) in server_fixtures() {
            encode_server_message(&m, &mut b);
        }
        for (_, m) in server_fixtures() {
            assert_eq!(decode_server_message(&mut b), Ok(Some(m)));
        }
        assert!(b.is_empty());
    }

    #[test]
    fn split_at_every_offset() {
        for (bytes, m) in device_fixtures() {
            for split in 0..bytes.len() {
                let mut b = BytesMut::from(&bytes[..split]);
                assert_eq!(decode_device_message(&mut b), Ok(None), "{m:?} at {split}");
                assert_eq!(b.len(), split);
                b.extend_from_slice(&bytes[split..]);
                assert_eq!(decode_device_message(&mut b), Ok(Some(m.clone())));
            }
        }
        for (bytes, m) in server_fixtures() {
            for split in 0..bytes.len() {
                let mut b = BytesMut::from(&bytes[..split]);
                assert_eq!(decode_server_message(&mut b), Ok(None), "{m:?} at {split}");
                assert_eq!(b.len(), split);
                b.extend_from_slice(&bytes[split..]);
                assert_eq!(decode_server_message(&mut b), Ok(Some(m.clone())));
            }
        }
    }

    #[test]
    fn byte_by_byte() {
        let stream: Vec<u8> = server_fixtures().into_iter().flat_map(|(b, _)| b).collect();
        let mut b = BytesMut::new();
        let mut got = Vec::new();
        for byte in stream {
            b.extend_from_slice(&[byte]);
            if let Some(m) = decode_server_message(&mut b).unwrap() {
                got.push(m);
            }
        }
        let want: Vec<ServerMessage> = server_fixtures().into_iter().map(|(_, m)| m).collect();
        assert_eq!(got, want);
    }

    // ---- framing errors ----

    #[test]
    fn unknown_type_from_the_first_byte() {
        for t in [0x00, 0x07, 0x80, 0x86, 0xFF] {
            let mut b = BytesMut::from(&[t][..]);
            assert_eq!(
                decode_device_message(&mut b),
                Err(DeviceProtocolError::UnknownType(t))
            );
            let mut b = BytesMut::from(&[t][..]);
            assert_eq!(
                decode_server_message(&mut b),
                Err(DeviceProtocolError::UnknownType(t))
            );
        }
    }

    #[test]
    fn messages_are_one_directional() {
        let mut b = BytesMut::from(&[TYPE_PONG][..]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::UnknownType(TYPE_PONG))
        );
        let mut b = BytesMut::from(&[TYPE_PING][..]);
        assert_eq!(
            decode_server_message(&mut b),
            Err(DeviceProtocolError::UnknownType(TYPE_PING))
        );
    }

    #[test]
    fn body_too_large_from_the_header() {
        let mut b = buf(&[
            &[0x05],       // type Ping
            &[0x20, 0x01], // body length 8193; no body sent
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::BodyTooLarge {
                len: 8193,
                max: MAX_BODY
            })
        );
        let mut b = buf(&[
            &[0x83],       // type Notification
            &[0xFF, 0xFF], // body length 65535; no body sent
        ]);
        assert_eq!(
            decode_server_message(&mut b),
            Err(DeviceProtocolError::BodyTooLarge {
                len: 65535,
                max: MAX_BODY
            })
        );
    }

    #[test]
    fn body_at_the_maximum_waits() {
        let mut b = buf(&[
            &[0x83],       // type Notification
            &[0x20, 0x00], // body length 8192
        ]);
        assert_eq!(decode_server_message(&mut b), Ok(None));
    }

    #[test]
    fn truncated_bodies_name_the_field() {
        let cases: [(&[u8], &str); 7] = [
            (&[0x01, 0x00, 0x00], "Hello.version"),
            (&[0x01, 0x00, 0x01, 0x01], "Hello.environment"),
            (&[0x01, 0x00, 0x02, 0x01, 0x00], "Hello.serial"),
            (&[0x01, 0x00, 0x04, 0x01, 0x00, 0x05, b'a'], "Hello.serial"),
            (&[0x02, 0x00, 0x01, 0x00], "Register.app"),
            (&[0x03, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0], "Ack.delivery"),
            (
                &[0x06, 0x00, 0x07, 0, 0, 0, 0, 0, 0, 0],
                "AckThrough.delivery",
            ),
        ];
        for (bytes, what) in cases {
            let mut b = BytesMut::from(bytes);
            assert_eq!(
                decode_device_message(&mut b),
                Err(DeviceProtocolError::Truncated { what }),
                "{bytes:?}"
            );
        }
        let cases: [(&[u8], &str); 4] = [
            (&[0x81, 0x00, 0x01, 0x00], "Welcome.heartbeat_secs"),
            (&[0x82, 0x00, 0x03, 0x02, b'a', b'b'], "Registered.token"),
            (&[0x84, 0x00, 0x00], "Pong.nonce"),
            (&[0x85, 0x00, 0x00], "Error.code"),
        ];
        for (bytes, what) in cases {
            let mut b = BytesMut::from(bytes);
            assert_eq!(
                decode_server_message(&mut b),
                Err(DeviceProtocolError::Truncated { what }),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn truncated_notification_at_every_field() {
        let (full, _) = server_fixtures().swap_remove(2);
        let body = &full[3..];
        let fields = [
            (0, "Notification.delivery"),
            (8, "Notification.token"),
            (9, "Notification.token"), // length byte present, token short
            (41, "Notification.identifier"),
            (45, "Notification.apns_id"),
            (61, "Notification.expiry"),
            (65, "Notification.priority"),
            (66, "Notification.push_type"),
            (67, "Notification.push_type"), // length byte present, string short
            (72, "Notification.collapse_id"),
            (73, "Notification.payload"),
            (75, "Notification.payload"), // length present, payload short
        ];
        for (cut, what) in fields {
            let len = u16::try_from(cut).unwrap().to_be_bytes();
            let mut b = buf(&[&[0x83], &len, &body[..cut]]);
            assert_eq!(
                decode_server_message(&mut b),
                Err(DeviceProtocolError::Truncated { what }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn trailing_bytes() {
        let mut b = buf(&[
            &[0x05],                   // type Ping
            &[0x00, 0x09],             // body length 9
            &[0, 0, 0, 0, 0, 0, 0, 1], // nonce 1
            &[0xEE],                   // one byte too many
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::TrailingBytes {
                frame_type: 0x05,
                extra: 1
            })
        );
        let mut b = buf(&[
            &[0x81],             // type Welcome
            &[0x00, 0x05],       // body length 5
            &[0x00, 0x3C],       // heartbeat 60
            &[0x01, 0x02, 0x03], // three extra bytes
        ]);
        assert_eq!(
            decode_server_message(&mut b),
            Err(DeviceProtocolError::TrailingBytes {
                frame_type: 0x81,
                extra: 3
            })
        );
    }

    // ---- field errors ----

    #[test]
    fn hello_field_errors() {
        let mut b = buf(&[
            &[0x01],       // type Hello
            &[0x00, 0x04], // body length 4
            &[0x02],       // version 2
            &[0x00],       // sandbox
            &[0x01, b'x'], // serial "x"
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::UnsupportedVersion(2))
        );

        let mut b = buf(&[
            &[0x01],       // type Hello
            &[0x00, 0x04], // body length 4
            &[0x01],       // version 1
            &[0x02],       // environment 2: invalid
            &[0x01, b'x'], // serial "x"
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::BadEnvironment(2))
        );

        let mut b = buf(&[
            &[0x01],       // type Hello
            &[0x00, 0x03], // body length 3
            &[0x01],       // version 1
            &[0x00],       // sandbox
            &[0x00],       // serial length 0
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::EmptyField {
                what: "Hello.serial"
            })
        );

        let long = [b's'; 65];
        let mut b = buf(&[
            &[0x01],       // type Hello
            &[0x00, 0x44], // body length 68
            &[0x01],       // version 1
            &[0x00],       // sandbox
            &[0x41],       // serial length 65
            &long,         // serial, one byte over
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::FieldTooLong {
                what: "Hello.serial",
                len: 65,
                max: 64
            })
        );

        let mut b = buf(&[
            &[0x01],             // type Hello
            &[0x00, 0x05],       // body length 5
            &[0x01],             // version 1
            &[0x00],             // sandbox
            &[0x02, 0xC3, 0x28], // serial: invalid UTF-8
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::BadUtf8 {
                what: "Hello.serial"
            })
        );
    }

    #[test]
    fn register_field_errors() {
        let mut b = buf(&[
            &[0x02],       // type Register
            &[0x00, 0x03], // body length 3
            &[0x02],       // fresh_install 2: invalid
            &[0x01, b'a'], // app "a"
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::BadBool(2))
        );

        let mut b = buf(&[
            &[0x02],       // type Register
            &[0x00, 0x02], // body length 2
            &[0x00],       // fresh_install false
            &[0x00],       // app length 0
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::EmptyField {
                what: "Register.app"
            })
        );
    }

    #[test]
    fn kind_field_errors() {
        let mut b = buf(&[
            &[0x02],       // type Register
            &[0x00, 0x05], // body length 5
            &[0x00],       // fresh_install false
            &[0x01, b'a'], // app "a"
            &[0x0A],       // kind 10: unknown
            &[0x00],       // activity: none
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::BadKind {
                what: "Register.kind",
                error: KindError::UnknownCode(10)
            })
        );
        let mut b = buf(&[
            &[0x02],       // type Register
            &[0x00, 0x05], // body length 5
            &[0x00],       // fresh_install false
            &[0x01, b'a'], // app "a"
            &[0x07],       // kind 7: Live Activity update token
            &[0x00],       // activity: none, but kind 7 needs one
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::BadKind {
                what: "Register.kind",
                error: KindError::MissingActivity
            })
        );
        let mut b = buf(&[
            &[0x02],       // type Register
            &[0x00, 0x04], // body length 4
            &[0x00],       // fresh_install false
            &[0x01, b'a'], // app "a"
            &[0x01],       // kind 1, then the body ends before the activity
        ]);
        assert_eq!(
            decode_device_message(&mut b),
            Err(DeviceProtocolError::Truncated {
                what: "Register.activity"
            })
        );
        let mut b = buf(&[
            &[0x82],       // type Registered
            &[0x00, 0x03], // body length 3
            &[0x01, b'a'], // app "a"
            &[0x00],       // token length 0
        ]);
        assert_eq!(
            decode_server_message(&mut b),
            Err(DeviceProtocolError::EmptyField {
                what: "Registered.token"
            })
        );
        let long = [0x11; 101];
        let mut b = buf(&[
            &[0x82],       // type Registered
            &[0x00, 0x68], // body length 104
            &[0x01, b'a'], // app "a"
            &[0x65],       // token length 101: one over
            &long,         // token
        ]);
        assert_eq!(
            decode_server_message(&mut b),
            Err(DeviceProtocolError::FieldTooLong {
                what: "Registered.token",
                len: 101,
                max: MAX_TOKEN_LEN
            })
        );
    }

    #[test]
    fn server_field_errors() {
        let mut b = buf(&[
            &[0x82],       // type Registered
            &[0x00, 0x21], // body length 33
            &[0x00],       // app length 0
            &TOKEN,        // token
        ]);
        assert_eq!(
            decode_server_message(&mut b),
            Err(DeviceProtocolError::EmptyField {
                what: "Registered.app"
            })
        );

        let (full, _) = server_fixtures().swap_remove(2);
        // Replace the empty collapse id (body offset 72) with a 65-byte one.
        let body = &full[3..];
        let long = [b'c'; 65];
        let new_len = u16::try_from(body.len() + 65).unwrap().to_be_bytes();
        let mut b = buf(&[&[0x83], &new_len, &body[..72], &[65], &long, &body[73..]]);
        assert_eq!(
            decode_server_message(&mut b),
            Err(DeviceProtocolError::FieldTooLong {
                what: "Notification.collapse_id",
                len: 65,
                max: 64
            })
        );

        let mut b = buf(&[
            &[0x85],       // type Error
            &[0x00, 0x03], // body length 3
            &[0x01],       // code 1 (CloseCode::BadHello)
            &[0x01, 0xFF], // message: invalid UTF-8
        ]);
        assert_eq!(
            decode_server_message(&mut b),
            Err(DeviceProtocolError::BadUtf8 {
                what: "Error.message"
            })
        );
    }

    #[test]
    fn error_messages_are_precise() {
        assert_eq!(
            DeviceProtocolError::UnknownType(0x86).to_string(),
            "unknown message type 0x86"
        );
        assert_eq!(
            DeviceProtocolError::FieldTooLong {
                what: "Hello.serial",
                len: 65,
                max: 64
            }
            .to_string(),
            "Hello.serial is 65 bytes, over the 64-byte limit"
        );
        assert_eq!(
            DeviceProtocolError::TrailingBytes {
                frame_type: 5,
                extra: 1
            }
            .to_string(),
            "message type 0x05 has 1 unexpected trailing bytes"
        );
        assert!(DeviceProtocolError::UnsupportedVersion(9)
            .to_string()
            .contains('9'));
    }

    // ---- encoder clamping ----

    #[test]
    fn encoder_clamps_oversized_fields_so_frames_still_decode() {
        // 100 × "é" = 200 bytes; serial limit 64 → cut to 32 characters.
        let m = DeviceMessage::Hello {
            version: 1,
            environment: Environment::Sandbox,
            serial: "é".repeat(100),
        };
        let mut b = BytesMut::new();
        encode_device_message(&m, &mut b);
        let Some(DeviceMessage::Hello { serial, .. }) = decode_device_message(&mut b).unwrap()
        else {
            panic!("expected Hello");
        };
        assert_eq!(serial, "é".repeat(32));

        // 200 × "é" = 400 bytes; a str8 holds 255, and 255 is mid-character → cut to 254.
        let message = "é".repeat(200);
        let m = ServerMessage::Error {
            code: CloseCode::Limit,
            message,
        };
        let mut b = BytesMut::new();
        encode_server_message(&m, &mut b);
        let Some(ServerMessage::Error { message, .. }) = decode_server_message(&mut b).unwrap()
        else {
            panic!("expected Error");
        };
        assert_eq!(message, "é".repeat(127));

        let big = DeviceNotification {
            payload: Bytes::from(vec![b'x'; 70_000]),
            collapse_id: Some("c".repeat(100)),
            ..notification()
        };
        let mut b = BytesMut::new();
        encode_server_message(&ServerMessage::Notification(big), &mut b);
        assert_eq!(b.len(), 3 + MAX_BODY);
        let Some(ServerMessage::Notification(n)) = decode_server_message(&mut b).unwrap() else {
            panic!("expected Notification");
        };
        assert_eq!(
            n.collapse_id.as_deref().map(str::len),
            Some(MAX_COLLAPSE_ID_LEN)
        );
        assert_eq!(n.payload.len(), MAX_BODY - 66 - 6 - 65 - 2);
    }

    // ---- hostile input ----

    #[test]
    fn random_input_never_panics() {
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seeds: Vec<Vec<u8>> = device_fixtures()
            .into_iter()
            .map(|(b, _)| b)
            .chain(server_fixtures().into_iter().map(|(b, _)| b))
            .collect();
        for round in 0..20_000usize {
            let mut bytes = seeds[round % seeds.len()].clone();
            for _ in 0..3 {
                let at = (next() as usize) % bytes.len();
                bytes[at] = next() as u8;
            }
            let mut b = BytesMut::from(&bytes[..]);
            let _ = decode_device_message(&mut b);
            let mut b = BytesMut::from(&bytes[..]);
            let _ = decode_server_message(&mut b);
        }
    }
}

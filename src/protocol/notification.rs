//! Binary provider API, commands 0, 1 and 2: notifications (provider → gateway).
//!
//! Notifications are simply concatenated on the stream; success is silent. All integers are
//! big-endian.
//!
//! # Command 0 — "simple" (spec §1.2)
//!
//! | Offset | Size | Field | Notes |
//! |---|---|---|---|
//! | 0 | 1 | command | `0` |
//! | 1 | 2 | token length (u16) | 32 |
//! | 3 | N | device token | binary |
//! | 3+N | 2 | payload length (u16) | ≤ 256 (settable) |
//! | 5+N | P | payload | JSON, not NUL-terminated |
//!
//! Total 5 + N + P bytes (37 + P for a 32-byte token). No identifier, expiry or priority:
//! identifier 0 and priority 10 are assumed, and the expiry is absent ([`None`]): APNs
//! keeps such a notification under its default storage policy (spec §3).
//!
//! # Command 1 — "enhanced" (spec §1.3)
//!
//! | Offset | Size | Field | Notes |
//! |---|---|---|---|
//! | 0 | 1 | command | `1` |
//! | 1 | 4 | identifier | opaque, echoed raw in error responses |
//! | 5 | 4 | expiry (u32) | UNIX seconds UTC; `0` = do not store |
//! | 9 | 2 | token length (u16) | 32 |
//! | 11 | N | device token | binary |
//! | 11+N | 2 | payload length (u16) | ≤ 256 (settable) |
//! | 13+N | P | payload | JSON |
//!
//! Total 13 + N + P bytes (45 + P for a 32-byte token). Priority 10 is assumed.
//!
//! # Command 2 — frame (spec §1.4)
//!
//! | Offset | Size | Field |
//! |---|---|---|
//! | 0 | 1 | command = `2` |
//! | 1 | 4 | frame length L (u32) = byte length of all items |
//! | 5 | L | items |
//!
//! Each item is `item ID (u8), item data length (u16), item data`:
//!
//! | ID | Name | Data length | Meaning |
//! |---|---|---|---|
//! | 1 | Device token | 32 | required |
//! | 2 | Payload | 1..=2048 | JSON object; required |
//! | 3 | Notification identifier | 4 | opaque; optional, default 0 |
//! | 4 | Expiration date | 4 | UNIX seconds UTC, 0 = don't store; optional: absent = the default storage policy |
//! | 5 | Priority | 1 | 10 = now, 5 = power-conscious; optional, default 10 |
//!
//! With all five items and a 32-byte token L = 15 + 32 + P + 4 + 4 + 1 = 56 + P, so the largest
//! valid frame is [`MAX_FRAME_LEN`] = 2104 bytes.
//!
//! # Decoding decisions (the project's, where Apple is silent)
//!
//! Every rejection carries the status to send, the identifier to echo and a [`RejectReason`]:
//!
//! * A command byte other than 0, 1 or 2 → 128 Protocol error, identifier 0: the status the
//!   gateway writes when it is told to answer one (`Settings::unknown_command`); by default it
//!   closes with no bytes, as TN2265 says Apple does (see the last point).
//! * Commands 0 and 1 are judged as early as possible: once the token-length field is present,
//!   0 → 2 Missing device token and ≠ 32 → 5 Invalid token size; once the payload-length field
//!   is present, 0 → 4 Missing payload and over the limit (256 unless [`decode_with`] is
//!   given another) → 7 Invalid payload size, before the payload
//!   arrives. Only then is the payload awaited and checked: invalid JSON or not an object →
//!   128 Protocol error. Command 0 echoes identifier 0 (it has none); command 1 echoes its own.
//! * Command 2: a frame length > [`MAX_BUFFERED_FRAME_LEN`] → 7 Invalid payload size with
//!   identifier 0 (decided from the 5-byte header, nothing buffered: no frame with one item of
//!   each kind can be that long). Frame length 0 → 2 Missing device token. Otherwise the whole
//!   frame is awaited and its items parsed (see [`decode`] for the order of checks), so that a
//!   frame over [`MAX_FRAME_LEN`] because its payload is too large is answered with 7 and its
//!   own identifier, which is what a provider needs to know which notification failed.
//! * After a rejection the caller closes the connection, so the buffer may be left in any state.
//!   Whether the status is written is the gateway's decision: Apple sent none for command 0,
//!   nor (TN2265) for an unknown command byte.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::error_response::Status;
use crate::protocol::payload::{self, PayloadError, MAX_PAYLOAD_FRAME, MAX_PAYLOAD_LEGACY};
use crate::protocol::reader::Reader;
use crate::protocol::token::DeviceToken;

/// Which binary format a notification arrived in (the command byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Command 0, "simple": token and payload only. Apple closed the connection without an
    /// error packet for bad ones; the decoder still reports a status (identifier 0) and the
    /// gateway decides whether to send it.
    Simple = 0,
    /// Command 1, "enhanced": adds identifier and expiry.
    Enhanced = 1,
    /// Command 2, frame: items, adds priority.
    Frame = 2,
}

impl Command {
    /// The command byte.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Decodes a command byte; `None` for anything but 0, 1, 2.
    pub fn from_code(code: u8) -> Option<Command> {
        match code {
            0 => Some(Command::Simple),
            1 => Some(Command::Enhanced),
            2 => Some(Command::Frame),
            _ => None,
        }
    }
}

/// A decoded, structurally valid notification.
///
/// "Structurally valid" means it parsed and passed the size and JSON checks; whether the token
/// belongs to this environment/topic (status 8) is the gateway's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The format it arrived in, so it can be re-encoded the same way and logged.
    pub command: Command,
    /// Opaque provider tag echoed raw in error responses; 0 for command 0 and when item 3 is absent.
    pub identifier: [u8; 4],
    /// UNIX seconds after which the notification must not be delivered; `Some(0)` = do not
    /// store (deliver at most once); `None` when the format has no expiry (command 0) or
    /// item 4 is absent, which is not 0: APNs then applies its default storage policy.
    pub expiry: Option<u32>,
    /// 10 = deliver now, 5 = power-conscious; 10 for commands 0/1 and when item 5 is absent.
    pub priority: u8,
    /// The target app on the target device.
    pub token: DeviceToken,
    /// The JSON payload bytes, exactly as sent (a zero-copy slice of the read buffer).
    pub payload: Bytes,
}

/// Why a notification was refused: the status code to send, the identifier to echo, and a precise reason for logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("notification rejected with status {status}: {reason}")]
pub struct Rejection {
    /// The status to put in the error-response packet.
    pub status: Status,
    /// The identifier to echo (0 when the notification has none or it was not yet known).
    pub identifier: [u8; 4],
    /// What exactly was wrong, for logs and tests.
    pub reason: RejectReason,
}

impl Rejection {
    /// Builds a rejection whose status is [`RejectReason::status`].
    pub fn new(identifier: [u8; 4], reason: RejectReason) -> Self {
        Rejection {
            status: reason.status(),
            identifier,
            reason,
        }
    }
}

/// The precise problem with a refused notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The command byte is not 0, 1 or 2.
    #[error("unknown command byte {0} (expected 0, 1 or 2)")]
    UnknownCommand(u8),
    /// A command-2 frame length over [`MAX_BUFFERED_FRAME_LEN`].
    #[error("frame length {len} exceeds the maximum {max}")]
    FrameTooLarge {
        /// Declared frame length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// An item's header or data runs past the end of its frame.
    #[error("item {item} runs past the end of the frame")]
    ItemOverrunsFrame {
        /// The item ID of the overrunning item.
        item: u8,
    },
    /// An item ID other than 1..=5.
    #[error("unknown item id {0} (expected 1 to 5)")]
    UnknownItem(u8),
    /// The same item ID appears twice in one frame.
    #[error("item {0} appears more than once")]
    DuplicateItem(u8),
    /// Item 3, 4 or 5 with the wrong data length.
    #[error("item {item} has length {len}, expected {expected}")]
    BadItemLength {
        /// The item ID.
        item: u8,
        /// Its declared data length.
        len: u16,
        /// The only valid length for that item.
        expected: u16,
    },
    /// A priority other than 5 or 10.
    #[error("priority {0} is not 5 or 10")]
    BadPriority(u8),
    /// No token, or a zero-length one (also: a command-2 frame of length 0).
    #[error("device token is missing")]
    MissingToken,
    /// A token that is not 32 bytes.
    #[error("device token is {0} bytes, expected 32")]
    BadTokenSize(usize),
    /// No payload, or a zero-length one.
    #[error("payload is missing")]
    MissingPayload,
    /// A payload over the command's limit.
    #[error("payload is {len} bytes, over the {max}-byte limit")]
    PayloadTooLarge {
        /// Declared payload length.
        len: usize,
        /// The limit for this command.
        max: usize,
    },
    /// The payload is not valid JSON (serde_json's message).
    #[error("payload is not valid JSON: {0}")]
    InvalidJson(String),
    /// The payload is JSON but not an object.
    #[error("payload is JSON but not an object")]
    NotAJsonObject,
}

impl RejectReason {
    /// The error-response status for this reason (the mapping lives here, in one place).
    pub fn status(&self) -> Status {
        match self {
            RejectReason::MissingToken => Status::MissingDeviceToken,
            RejectReason::BadTokenSize(_) => Status::InvalidTokenSize,
            RejectReason::MissingPayload => Status::MissingPayload,
            RejectReason::FrameTooLarge { .. } | RejectReason::PayloadTooLarge { .. } => {
                Status::InvalidPayloadSize
            }
            RejectReason::UnknownCommand(_)
            | RejectReason::ItemOverrunsFrame { .. }
            | RejectReason::UnknownItem(_)
            | RejectReason::DuplicateItem(_)
            | RejectReason::BadItemLength { .. }
            | RejectReason::BadPriority(_)
            | RejectReason::InvalidJson(_)
            | RejectReason::NotAJsonObject => Status::ProtocolError,
        }
    }
}

impl From<PayloadError> for RejectReason {
    fn from(err: PayloadError) -> Self {
        match err {
            PayloadError::Empty => RejectReason::MissingPayload,
            PayloadError::TooLarge { len, max } => RejectReason::PayloadTooLarge { len, max },
            PayloadError::InvalidJson(msg) => RejectReason::InvalidJson(msg),
            PayloadError::NotAnObject => RejectReason::NotAJsonObject,
        }
    }
}

/// Item ID of the device token (command 2).
const ITEM_TOKEN: u8 = 1;
/// Item ID of the payload.
const ITEM_PAYLOAD: u8 = 2;
/// Item ID of the notification identifier.
const ITEM_IDENTIFIER: u8 = 3;
/// Item ID of the expiration date.
const ITEM_EXPIRY: u8 = 4;
/// Item ID of the priority.
const ITEM_PRIORITY: u8 = 5;
/// Size of an item header: id (1) + data length (2).
const ITEM_HEADER_LEN: usize = 3;
/// Size of the command-2 header: command (1) + frame length (4).
const FRAME_HEADER_LEN: usize = 5;
/// Priority assumed when none is given (Apple: legacy formats imply 10).
const DEFAULT_PRIORITY: u8 = 10;

/// Largest valid command-2 frame length: 5 item headers (15) + 32 token + 2048 payload + 4 + 4 + 1.
pub const MAX_FRAME_LEN: u32 =
    5 * ITEM_HEADER_LEN as u32 + DeviceToken::LEN as u32 + MAX_PAYLOAD_FRAME as u32 + 4 + 4 + 1;

/// Longest command-2 frame that is buffered and parsed (to answer with the notification's
/// identifier): one item of each kind with a 32-byte token and a payload of the largest size a
/// u16 length can declare. Anything longer is refused from the header alone. Bounds the read
/// buffer of a provider connection to ~64 KiB.
pub const MAX_BUFFERED_FRAME_LEN: u32 =
    5 * ITEM_HEADER_LEN as u32 + DeviceToken::LEN as u32 + u16::MAX as u32 + 4 + 4 + 1;

/// One raw command-2 item, for [`encode_frame_items`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameItem {
    /// Item ID (1..=5 are valid; anything is written as given).
    pub id: u8,
    /// Item data, written verbatim after its u16 length.
    pub data: Bytes,
}

/// Decode one notification from the front of `buf`, consuming it. Ok(None) = need more bytes (nothing consumed).
///
/// Command 2 items may come in any order. The first pass over the items rejects, as
/// 128 Protocol error: an item header or data running past the frame end
/// ([`RejectReason::ItemOverrunsFrame`]), then an ID outside 1..=5 ([`RejectReason::UnknownItem`]),
/// then a repeated ID ([`RejectReason::DuplicateItem`]). It picks up item 3 if its length is 4,
/// so every later rejection echoes the identifier. The checks after that, in order:
///
/// 1. item 3 length ≠ 4, item 4 length ≠ 4, item 5 length ≠ 1 → 128 ([`RejectReason::BadItemLength`]);
/// 2. priority not 5 or 10 → 128 ([`RejectReason::BadPriority`]);
/// 3. no item 1, or length 0 → 2 Missing device token; length ≠ 32 → 5 Invalid token size;
/// 4. no item 2, or length 0 → 4 Missing payload; length > 2048 → 7 Invalid payload size;
/// 5. payload not JSON, or not an object → 128 Protocol error.
///
/// Absent items 3, 4 and 5 mean identifier 0, no expiry ([`None`]) and priority 10.
///
/// Commands 0 and 1 are held to [`MAX_PAYLOAD_LEGACY`]; [`decode_with`] takes another limit.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Notification>, Rejection> {
    decode_with(buf, MAX_PAYLOAD_LEGACY)
}

/// [`decode`] with `legacy_max` as the payload limit of commands 0 and 1 (the sources
/// disagree on it, spec §9 item 2); command 2 keeps [`MAX_PAYLOAD_FRAME`].
pub fn decode_with(
    buf: &mut BytesMut,
    legacy_max: usize,
) -> Result<Option<Notification>, Rejection> {
    decode_with_frame(buf, legacy_max).map(|decoded| decoded.map(|(n, _)| n))
}

/// [`decode_with`], also returning the command's bytes exactly as received (a zero-copy
/// slice of `buf`, which the notification's payload is a slice of too): the delivery log
/// shows them, labelled by [`annotate`].
pub fn decode_with_frame(
    buf: &mut BytesMut,
    legacy_max: usize,
) -> Result<Option<(Notification, Bytes)>, Rejection> {
    let Some(&command) = buf.first() else {
        return Ok(None);
    };
    match Command::from_code(command) {
        Some(Command::Simple) => decode_legacy(buf, Command::Simple, legacy_max),
        Some(Command::Enhanced) => decode_legacy(buf, Command::Enhanced, legacy_max),
        Some(Command::Frame) => decode_frame(buf),
        None => Err(Rejection::new(
            [0; 4],
            RejectReason::UnknownCommand(command),
        )),
    }
}

/// Decodes command 0 or 1 (they differ only by the identifier and expiry fields).
fn decode_legacy(
    buf: &mut BytesMut,
    command: Command,
    legacy_max: usize,
) -> Result<Option<(Notification, Bytes)>, Rejection> {
    let mut r = Reader::new(buf);
    // Offset 0: the command byte, already inspected by `decode`.
    if r.u8().is_none() {
        return Ok(None);
    }
    let (identifier, expiry) = if command == Command::Enhanced {
        let Some(identifier) = r.array::<4>() else {
            return Ok(None);
        };
        let Some(expiry) = r.u32() else {
            return Ok(None);
        };
        (identifier, Some(expiry))
    } else {
        ([0; 4], None)
    };
    let reject = |reason| Rejection::new(identifier, reason);

    let Some(token_len) = r.u16() else {
        return Ok(None);
    };
    match usize::from(token_len) {
        0 => return Err(reject(RejectReason::MissingToken)),
        DeviceToken::LEN => {}
        other => return Err(reject(RejectReason::BadTokenSize(other))),
    }
    let Some(token) = r.array::<32>() else {
        return Ok(None);
    };
    let token = DeviceToken::from_bytes(token);

    let Some(payload_len) = r.u16() else {
        return Ok(None);
    };
    let payload_len = usize::from(payload_len);
    if payload_len == 0 {
        return Err(reject(RejectReason::MissingPayload));
    }
    if payload_len > legacy_max {
        return Err(reject(RejectReason::PayloadTooLarge {
            len: payload_len,
            max: legacy_max,
        }));
    }
    if r.take(payload_len).is_none() {
        return Ok(None);
    }

    // The whole notification is buffered: judge the payload in place (so a refused one's
    // bytes stay in `buf` for the caller to log), then take it off the stream.
    let total = buf.len() - r.remaining();
    let payload = buf.get(total - payload_len..total).unwrap_or_default();
    payload::check(payload, legacy_max).map_err(|e| reject(e.into()))?;
    let packet = buf.split_to(total).freeze();
    let payload = packet.slice(total - payload_len..);

    let n = Notification {
        command,
        identifier,
        expiry,
        priority: DEFAULT_PRIORITY,
        token,
        payload,
    };
    Ok(Some((n, packet)))
}

/// Decodes command 2: header checks, then waits for the whole frame, then parses its items.
fn decode_frame(buf: &mut BytesMut) -> Result<Option<(Notification, Bytes)>, Rejection> {
    let Some(&[_, a, b, c, d]) = buf.first_chunk::<FRAME_HEADER_LEN>() else {
        return Ok(None);
    };
    let frame_len = u32::from_be_bytes([a, b, c, d]);
    if frame_len > MAX_BUFFERED_FRAME_LEN {
        return Err(Rejection::new(
            [0; 4],
            RejectReason::FrameTooLarge {
                len: frame_len,
                max: MAX_BUFFERED_FRAME_LEN,
            },
        ));
    }
    if frame_len == 0 {
        return Err(Rejection::new([0; 4], RejectReason::MissingToken));
    }
    // Cannot truncate: frame_len ≤ MAX_BUFFERED_FRAME_LEN was checked above.
    let total = FRAME_HEADER_LEN + frame_len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    // Judged in place, so a refused frame's bytes stay in `buf` for the caller to log.
    let (mut n, payload) = parse_items(buf.get(FRAME_HEADER_LEN..total).unwrap_or_default())?;
    let frame = buf.split_to(total).freeze();
    n.payload = frame.slice(FRAME_HEADER_LEN + payload.start..FRAME_HEADER_LEN + payload.end);
    Ok(Some((n, frame)))
}

/// Parses the items of a complete command-2 frame (the `items` bytes, header removed): the
/// notification with an empty payload, and where the payload lies in `items`.
fn parse_items(items: &[u8]) -> Result<(Notification, std::ops::Range<usize>), Rejection> {
    // slots[i] holds the data of item id i + 1.
    let mut slots: [Option<&[u8]>; 5] = [None; 5];
    let mut identifier = [0u8; 4];

    // First pass: walk the items, checking only their framing, IDs and uniqueness.
    let mut r = Reader::new(items);
    while r.remaining() > 0 {
        let Some(id) = r.u8() else {
            break;
        };
        let data = r
            .u16()
            .and_then(|len| r.take(usize::from(len)))
            .ok_or_else(|| {
                Rejection::new(identifier, RejectReason::ItemOverrunsFrame { item: id })
            })?;
        let slot = id
            .checked_sub(1)
            .and_then(|index| slots.get_mut(usize::from(index)))
            .ok_or_else(|| Rejection::new(identifier, RejectReason::UnknownItem(id)))?;
        if slot.is_some() {
            return Err(Rejection::new(identifier, RejectReason::DuplicateItem(id)));
        }
        *slot = Some(data);
        if id == ITEM_IDENTIFIER {
            if let Ok(id_bytes) = <[u8; 4]>::try_from(data) {
                identifier = id_bytes;
            }
        }
    }
    let reject = |reason| Rejection::new(identifier, reason);
    let [token, payload, id_item, expiry_item, priority_item] = slots;

    // Second pass: fixed-size items, then token, then payload.
    if let Some(data) = id_item {
        exact_len::<4>(ITEM_IDENTIFIER, data).map_err(reject)?;
    }
    let expiry = match expiry_item {
        Some(data) => Some(u32::from_be_bytes(
            exact_len::<4>(ITEM_EXPIRY, data).map_err(reject)?,
        )),
        None => None,
    };
    let priority = match priority_item {
        Some(data) => {
            let [priority] = exact_len::<1>(ITEM_PRIORITY, data).map_err(reject)?;
            if priority != 5 && priority != 10 {
                return Err(reject(RejectReason::BadPriority(priority)));
            }
            priority
        }
        None => DEFAULT_PRIORITY,
    };

    let token = match token {
        None | Some([]) => return Err(reject(RejectReason::MissingToken)),
        Some(data) => DeviceToken::from_slice(data)
            .map_err(|_| reject(RejectReason::BadTokenSize(data.len())))?,
    };

    let payload = payload.unwrap_or_default();
    payload::check(payload, MAX_PAYLOAD_FRAME).map_err(|e| reject(e.into()))?;

    // The payload is a subslice of `items`, so its offset is the distance between them.
    let start = (payload.as_ptr() as usize).wrapping_sub(items.as_ptr() as usize);
    let range = start.min(items.len())..start.saturating_add(payload.len()).min(items.len());
    let n = Notification {
        command: Command::Frame,
        identifier,
        expiry,
        priority,
        token,
        payload: Bytes::new(),
    };
    Ok((n, range))
}

/// Requires a fixed-size item to have exactly `N` bytes of data.
fn exact_len<const N: usize>(item: u8, data: &[u8]) -> Result<[u8; N], RejectReason> {
    <[u8; N]>::try_from(data).map_err(|_| RejectReason::BadItemLength {
        item,
        len: u16::try_from(data.len()).unwrap_or(u16::MAX),
        expected: N as u16,
    })
}

/// Encode a well-formed notification in its own command's format (command 2 writes its items
/// in id order: all five, or four when the expiry is absent).
///
/// Fields a format cannot carry are dropped (command 0 has no identifier, expiry or priority;
/// command 1 has no priority, and writes an absent expiry as 0, the only value it has). Over-long tokens or payloads are clamped as described on
/// [`encode_frame_items`] and the raw encoders, so the output is always well-framed.
pub fn encode(n: &Notification, dst: &mut BytesMut) {
    match n.command {
        Command::Simple => encode_simple_raw(n.token.as_bytes(), &n.payload, dst),
        Command::Enhanced => {
            let expiry = n.expiry.unwrap_or(0);
            encode_enhanced_raw(n.identifier, expiry, n.token.as_bytes(), &n.payload, dst);
        }
        Command::Frame => {
            let mut items = vec![
                FrameItem {
                    id: ITEM_TOKEN,
                    data: Bytes::copy_from_slice(n.token.as_bytes()),
                },
                FrameItem {
                    id: ITEM_PAYLOAD,
                    data: n.payload.clone(),
                },
                FrameItem {
                    id: ITEM_IDENTIFIER,
                    data: Bytes::copy_from_slice(&n.identifier),
                },
            ];
            if let Some(expiry) = n.expiry {
                items.push(FrameItem {
                    id: ITEM_EXPIRY,
                    data: Bytes::copy_from_slice(&expiry.to_be_bytes()),
                });
            }
            items.push(FrameItem {
                id: ITEM_PRIORITY,
                data: Bytes::copy_from_slice(&[n.priority]),
            });
            encode_frame_items(&items, dst);
        }
    }
}

/// Encode a command-2 frame from raw items (for clients/tests that need to send malformed frames or omit items).
///
/// Items are written verbatim in the given order. Item data longer than `u16::MAX` is cut to
/// `u16::MAX` bytes, and items that would push the frame past `u32::MAX` bytes are left out, so
/// every length field written is truthful and the stream stays framed.
pub fn encode_frame_items(items: &[FrameItem], dst: &mut BytesMut) {
    let mut frame_len: u32 = 0;
    let mut fitting = Vec::with_capacity(items.len());
    for item in items {
        let data = clamp_u16(&item.data);
        let item_len = u32::try_from(ITEM_HEADER_LEN + data.len()).unwrap_or(u32::MAX);
        let Some(next) = frame_len.checked_add(item_len) else {
            break;
        };
        frame_len = next;
        fitting.push((item.id, data));
    }
    dst.reserve(FRAME_HEADER_LEN + frame_len as usize);
    dst.put_u8(Command::Frame.code());
    dst.put_u32(frame_len);
    for (id, data) in fitting {
        dst.put_u8(id);
        put_u16_prefixed(dst, data);
    }
}

/// Encode a command-2 frame with all five items in order (token, payload, identifier,
/// expiry, priority), from raw fields: the frame every client sends. Token and payload are
/// written as given (any length, for tests of malformed input), each cut to `u16::MAX`
/// bytes like [`encode_frame_items`] does.
pub fn encode_frame_raw(
    token: &[u8],
    payload: &[u8],
    identifier: [u8; 4],
    expiry: u32,
    priority: u8,
    dst: &mut BytesMut,
) {
    let token = clamp_u16(token);
    let payload = clamp_u16(payload);
    let frame_len = 5 * ITEM_HEADER_LEN + token.len() + payload.len() + 4 + 4 + 1;
    dst.reserve(FRAME_HEADER_LEN + frame_len);
    dst.put_u8(Command::Frame.code());
    dst.put_u32(u32::try_from(frame_len).unwrap_or(u32::MAX));
    dst.put_u8(1);
    put_u16_prefixed(dst, token);
    dst.put_u8(2);
    put_u16_prefixed(dst, payload);
    dst.put_u8(3);
    put_u16_prefixed(dst, &identifier);
    dst.put_u8(4);
    put_u16_prefixed(dst, &expiry.to_be_bytes());
    dst.put_u8(5);
    put_u16_prefixed(dst, &[priority]);
}

/// Encode command 0 from raw fields (any token/payload length, for tests of malformed input).
///
/// A token or payload longer than `u16::MAX` bytes is cut to `u16::MAX` bytes so its length field
/// stays truthful.
pub fn encode_simple_raw(token: &[u8], payload: &[u8], dst: &mut BytesMut) {
    let token = clamp_u16(token);
    let payload = clamp_u16(payload);
    dst.reserve(1 + 2 + token.len() + 2 + payload.len());
    dst.put_u8(Command::Simple.code());
    put_u16_prefixed(dst, token);
    put_u16_prefixed(dst, payload);
}

/// Encode command 1 from raw fields (any token/payload length, for tests of malformed input).
///
/// A token or payload longer than `u16::MAX` bytes is cut to `u16::MAX` bytes so its length field
/// stays truthful.
pub fn encode_enhanced_raw(
    identifier: [u8; 4],
    expiry: u32,
    token: &[u8],
    payload: &[u8],
    dst: &mut BytesMut,
) {
    let token = clamp_u16(token);
    let payload = clamp_u16(payload);
    dst.reserve(1 + 4 + 4 + 2 + token.len() + 2 + payload.len());
    dst.put_u8(Command::Enhanced.code());
    dst.put_slice(&identifier);
    dst.put_u32(expiry);
    put_u16_prefixed(dst, token);
    put_u16_prefixed(dst, payload);
}

/// Cuts `data` to at most `u16::MAX` bytes.
fn clamp_u16(data: &[u8]) -> &[u8] {
    data.get(..usize::from(u16::MAX)).unwrap_or(data)
}

/// Writes a u16 length then the bytes; `data` must already be clamped with [`clamp_u16`].
fn put_u16_prefixed(dst: &mut BytesMut, data: &[u8]) {
    dst.put_u16(u16::try_from(data.len()).unwrap_or(u16::MAX));
    dst.put_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recognisable token: 0x00, 0x01, … 0x1F.
    const TOKEN: [u8; 32] = [
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E,
        0x0F, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D,
        0x1E, 0x1F,
    ];
    const ID: [u8; 4] = [0xDE, 0xAD, 0xBE, 0xEF];
    const PAYLOAD: &[u8] = br#"{"aps":{}}"#; // 10 bytes

    fn token() -> DeviceToken {
        DeviceToken::from_bytes(TOKEN)
    }

    fn buf(parts: &[&[u8]]) -> BytesMut {
        BytesMut::from(&parts.concat()[..])
    }

    fn reject(status: Status, identifier: [u8; 4], reason: RejectReason) -> Rejection {
        Rejection {
            status,
            identifier,
            reason,
        }
    }

    fn simple_fixture() -> Vec<u8> {
        [
            &[0x00][..],   // command 0
            &[0x00, 0x20], // token length 32
            &TOKEN,        // token
            &[0x00, 0x0A], // payload length 10
            PAYLOAD,       // payload
        ]
        .concat()
    }

    fn enhanced_fixture() -> Vec<u8> {
        [
            &[0x01][..],               // command 1
            &ID,                       // identifier
            &[0x5F, 0x5E, 0x10, 0x00], // expiry 1_600_000_000
            &[0x00, 0x20],             // token length 32
            &TOKEN,                    // token
            &[0x00, 0x0A],             // payload length 10
            PAYLOAD,                   // payload
        ]
        .concat()
    }

    fn frame_fixture() -> Vec<u8> {
        [
            &[0x02][..],               // command 2
            &[0x00, 0x00, 0x00, 0x42], // frame length 66 = 56 + 10
            &[0x01, 0x00, 0x20],       // item 1 (token), length 32
            &TOKEN,                    // token
            &[0x02, 0x00, 0x0A],       // item 2 (payload), length 10
            PAYLOAD,                   // payload
            &[0x03, 0x00, 0x04],       // item 3 (identifier), length 4
            &ID,                       // identifier
            &[0x04, 0x00, 0x04],       // item 4 (expiry), length 4
            &[0x5F, 0x5E, 0x10, 0x00], // expiry 1_600_000_000
            &[0x05, 0x00, 0x01],       // item 5 (priority), length 1
            &[0x05],                   // priority 5
        ]
        .concat()
    }

    fn simple() -> Notification {
        Notification {
            command: Command::Simple,
            identifier: [0; 4],
            expiry: None,
            priority: 10,
            token: token(),
            payload: Bytes::from_static(PAYLOAD),
        }
    }

    fn enhanced() -> Notification {
        Notification {
            command: Command::Enhanced,
            identifier: ID,
            expiry: Some(1_600_000_000),
            ..simple()
        }
    }

    fn frame() -> Notification {
        Notification {
            command: Command::Frame,
            priority: 5,
            ..enhanced()
        }
    }

    fn fixtures() -> [(Vec<u8>, Notification); 3] {
        [
            (simple_fixture(), simple()),
            (enhanced_fixture(), enhanced()),
            (frame_fixture(), frame()),
        ]
    }

    /// Builds a command-2 frame from (id, data) items with a correct frame length.
    fn frame_of(items: &[(u8, &[u8])]) -> BytesMut {
        let items: Vec<FrameItem> = items
            .iter()
            .map(|(id, data)| FrameItem {
                id: *id,
                data: Bytes::copy_from_slice(data),
            })
            .collect();
        let mut dst = BytesMut::new();
        encode_frame_items(&items, &mut dst);
        dst
    }

    // ---- decoding valid input ----

    #[test]
    fn decodes_each_command_fixture() {
        for (bytes, expected) in fixtures() {
            let mut b = BytesMut::from(&bytes[..]);
            assert_eq!(decode(&mut b), Ok(Some(expected)));
            assert!(b.is_empty());
        }
    }

    #[test]
    fn frame_fixture_length_matches_spec_formula() {
        assert_eq!(frame_fixture().len(), 61 + PAYLOAD.len());
        assert_eq!(simple_fixture().len(), 37 + PAYLOAD.len());
        assert_eq!(enhanced_fixture().len(), 45 + PAYLOAD.len());
    }

    #[test]
    fn raw_frame_builder_writes_the_fixture() {
        let mut dst = BytesMut::new();
        encode_frame_raw(&TOKEN, PAYLOAD, ID, 1_600_000_000, 5, &mut dst);
        assert_eq!(&dst[..], &frame_fixture()[..]);
        // A wrong-size token is written as given, with a truthful length.
        let mut dst = BytesMut::new();
        encode_frame_raw(&[0xAB; 3], PAYLOAD, ID, 0, 10, &mut dst);
        assert_eq!(&dst[..5], &[0x02, 0x00, 0x00, 0x00, 0x25]); // command 2, length 37 = 34 + 3
        assert_eq!(&dst[5..11], &[0x01, 0x00, 0x03, 0xAB, 0xAB, 0xAB]); // item 1, length 3
    }

    #[test]
    fn max_frame_len_is_all_items_with_largest_payload() {
        assert_eq!(MAX_FRAME_LEN, 56 + 2048);
    }

    #[test]
    fn frame_items_in_any_order() {
        let mut b = buf(&[
            &[0x02],                   // command 2
            &[0x00, 0x00, 0x00, 0x42], // frame length 66
            &[0x05, 0x00, 0x01],       // item 5 (priority), length 1
            &[0x0A],                   // priority 10
            &[0x04, 0x00, 0x04],       // item 4 (expiry), length 4
            &[0x00, 0x00, 0x00, 0x00], // expiry 0
            &[0x03, 0x00, 0x04],       // item 3 (identifier), length 4
            &ID,                       // identifier
            &[0x02, 0x00, 0x0A],       // item 2 (payload), length 10
            PAYLOAD,                   // payload
            &[0x01, 0x00, 0x20],       // item 1 (token), length 32
            &TOKEN,                    // token
        ]);
        let n = decode(&mut b).unwrap().unwrap();
        assert_eq!(
            n,
            Notification {
                expiry: Some(0),
                priority: 10,
                ..frame()
            }
        );
    }

    #[test]
    fn frame_optional_items_default() {
        let mut b = buf(&[
            &[0x02],                   // command 2
            &[0x00, 0x00, 0x00, 0x31], // frame length 49 = 3 + 32 + 3 + 11
            &[0x01, 0x00, 0x20],       // item 1 (token), length 32
            &TOKEN,                    // token
            &[0x02, 0x00, 0x0B],       // item 2 (payload), length 11
            br#"{"mdm":"x"}"#,         // payload without aps
        ]);
        let n = decode(&mut b).unwrap().unwrap();
        assert_eq!(n.identifier, [0; 4]);
        assert_eq!(n.expiry, None, "absent, not 0");
        assert_eq!(n.priority, 10);
        assert_eq!(&n.payload[..], br#"{"mdm":"x"}"#);
        assert!(b.is_empty());
    }

    #[test]
    fn largest_payloads_are_accepted() {
        let legacy = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_PAYLOAD_LEGACY - 8));
        let mut b = BytesMut::new();
        encode_enhanced_raw(ID, 0, &TOKEN, legacy.as_bytes(), &mut b);
        assert_eq!(decode(&mut b).unwrap().unwrap().payload.len(), 256);

        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_PAYLOAD_FRAME - 8));
        let n = Notification {
            payload: Bytes::from(big),
            ..frame()
        };
        let mut b = BytesMut::new();
        encode(&n, &mut b);
        assert_eq!(b.len(), 5 + MAX_FRAME_LEN as usize);
        assert_eq!(decode(&mut b), Ok(Some(n)));
    }

    #[test]
    fn the_legacy_payload_limit_is_the_callers() {
        for command in [Command::Simple, Command::Enhanced] {
            let payload = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_PAYLOAD_FRAME - 8));
            let n = Notification {
                command,
                payload: Bytes::from(payload),
                ..enhanced()
            };
            let mut b = BytesMut::new();
            encode(&n, &mut b);
            let mut again = b.clone();
            assert_eq!(
                decode(&mut b).unwrap_err().reason,
                RejectReason::PayloadTooLarge {
                    len: 2048,
                    max: 256
                },
                "{command:?}: 256 by default"
            );
            let decoded = decode_with(&mut again, MAX_PAYLOAD_FRAME).unwrap().unwrap();
            assert_eq!(decoded.payload.len(), 2048, "{command:?}");

            let mut over = BytesMut::new();
            let payload = vec![b' '; MAX_PAYLOAD_FRAME + 1];
            encode_enhanced_raw(ID, 0, &TOKEN, &payload, &mut over);
            assert_eq!(
                decode_with(&mut over, MAX_PAYLOAD_FRAME)
                    .unwrap_err()
                    .reason,
                RejectReason::PayloadTooLarge {
                    len: 2049,
                    max: 2048
                }
            );
        }
    }

    #[test]
    fn an_absent_expiry_round_trips_without_item_4() {
        let n = Notification {
            expiry: None,
            ..frame()
        };
        let mut b = BytesMut::new();
        encode(&n, &mut b);
        assert_eq!(b.len(), frame_fixture().len() - 7, "no item 4");
        assert_eq!(decode(&mut b), Ok(Some(n)));
    }

    // ---- encoding and round trips ----

    #[test]
    fn encode_matches_fixtures() {
        for (bytes, n) in fixtures() {
            let mut dst = BytesMut::new();
            encode(&n, &mut dst);
            assert_eq!(&dst[..], &bytes[..], "{:?}", n.command);
        }
    }

    #[test]
    fn round_trip_each_command_and_priority() {
        for n in [
            simple(),
            enhanced(),
            frame(),
            Notification {
                priority: 10,
                ..frame()
            },
        ] {
            let mut dst = BytesMut::new();
            encode(&n, &mut dst);
            assert_eq!(decode(&mut dst), Ok(Some(n)));
            assert!(dst.is_empty());
        }
    }

    #[test]
    fn encode_drops_fields_the_format_cannot_carry() {
        let mut dst = BytesMut::new();
        encode(
            &Notification {
                command: Command::Simple,
                ..frame()
            },
            &mut dst,
        );
        assert_eq!(decode(&mut dst), Ok(Some(simple())));
        encode(
            &Notification {
                command: Command::Enhanced,
                ..frame()
            },
            &mut dst,
        );
        assert_eq!(decode(&mut dst), Ok(Some(enhanced())));
    }

    #[test]
    fn raw_encoders_clamp_oversized_fields() {
        let huge = vec![b'x'; 70_000];
        let mut dst = BytesMut::new();
        encode_simple_raw(&huge, &huge, &mut dst);
        assert_eq!(dst.len(), 1 + 2 * (2 + 65_535));
        assert_eq!(&dst[..3], &[0x00, 0xFF, 0xFF]);

        let mut dst = BytesMut::new();
        encode_enhanced_raw(ID, 7, &[], &huge, &mut dst);
        assert_eq!(dst.len(), 13 + 65_535);

        let mut dst = BytesMut::new();
        encode_frame_items(
            &[FrameItem {
                id: 2,
                data: Bytes::from(huge),
            }],
            &mut dst,
        );
        assert_eq!(
            &dst[..8],
            &[
                0x02, // command 2
                0x00, 0x01, 0x00, 0x02, // frame length 65538 = 3 + 65535
                0x02, 0xFF, 0xFF, // item 2, length 65535
            ]
        );
        assert_eq!(dst.len(), 5 + 3 + 65_535);
    }

    #[test]
    fn command_codes() {
        for c in [Command::Simple, Command::Enhanced, Command::Frame] {
            assert_eq!(Command::from_code(c.code()), Some(c));
        }
        assert_eq!(Command::from_code(3), None);
    }

    // ---- streaming ----

    #[test]
    fn many_notifications_in_one_buffer() {
        let mut b = BytesMut::new();
        let mut expected = Vec::new();
        for i in 0..4u8 {
            for (_, n) in fixtures() {
                let n = Notification {
                    identifier: if n.command == Command::Simple {
                        [0; 4]
                    } else {
                        [i; 4]
                    },
                    ..n
                };
                encode(&n, &mut b);
                expected.push(n);
            }
        }
        for n in expected {
            assert_eq!(decode(&mut b), Ok(Some(n)));
        }
        assert_eq!(decode(&mut b), Ok(None));
        assert!(b.is_empty());
    }

    #[test]
    fn split_at_every_offset() {
        for (bytes, n) in fixtures() {
            for split in 0..bytes.len() {
                let mut b = BytesMut::from(&bytes[..split]);
                assert_eq!(decode(&mut b), Ok(None), "{:?} split {split}", n.command);
                assert_eq!(b.len(), split, "nothing consumed");
                b.extend_from_slice(&bytes[split..]);
                assert_eq!(decode(&mut b), Ok(Some(n.clone())));
                assert!(b.is_empty());
            }
        }
    }

    #[test]
    fn byte_by_byte_with_a_second_notification_behind() {
        for (bytes, n) in fixtures() {
            let stream = [&bytes[..], &bytes[..]].concat();
            let mut b = BytesMut::new();
            let mut decoded = Vec::new();
            for (i, byte) in stream.iter().enumerate() {
                b.extend_from_slice(&[*byte]);
                if let Some(got) = decode(&mut b).unwrap() {
                    decoded.push((i + 1, got));
                }
            }
            assert_eq!(decoded, vec![(bytes.len(), n.clone()), (stream.len(), n)]);
        }
    }

    // ---- rejections: any command ----

    #[test]
    fn unknown_command_from_the_first_byte() {
        for byte in [0x03, 0x08, 0x80, 0xFF] {
            let mut b = BytesMut::from(&[byte][..]);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::ProtocolError,
                    [0; 4],
                    RejectReason::UnknownCommand(byte)
                ))
            );
        }
    }

    // ---- rejections: commands 0 and 1 ----

    /// The header of a command 0 or 1 notification up to (not including) the token length.
    fn legacy_head(command: Command) -> Vec<u8> {
        match command {
            Command::Simple => vec![0x00], // command 0
            _ => [
                &[0x01][..],               // command 1
                &ID,                       // identifier
                &[0x00, 0x00, 0x00, 0x00], // expiry 0
            ]
            .concat(),
        }
    }

    fn legacy_id(command: Command) -> [u8; 4] {
        if command == Command::Simple {
            [0; 4]
        } else {
            ID
        }
    }

    #[test]
    fn legacy_needs_the_token_length_before_judging() {
        for command in [Command::Simple, Command::Enhanced] {
            let head = legacy_head(command);
            for len in 1..=head.len() + 1 {
                let bytes = [&head[..], &[0x00, 0x00]].concat(); // token length 0
                let mut b = BytesMut::from(&bytes[..len]);
                assert_eq!(decode(&mut b), Ok(None), "{command:?} {len}");
            }
        }
    }

    #[test]
    fn legacy_zero_token_length_is_missing_token() {
        for command in [Command::Simple, Command::Enhanced] {
            let mut b = buf(&[
                &legacy_head(command),
                &[0x00, 0x00], // token length 0; nothing else sent yet
            ]);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::MissingDeviceToken,
                    legacy_id(command),
                    RejectReason::MissingToken
                ))
            );
        }
    }

    #[test]
    fn legacy_wrong_token_length_is_invalid_token_size() {
        for command in [Command::Simple, Command::Enhanced] {
            for (len, field) in [
                (31, [0x00, 0x1F]),
                (33, [0x00, 0x21]),
                (100, [0x00, 0x64]),
                (65535, [0xFF, 0xFF]),
            ] {
                let mut b = buf(&[
                    &legacy_head(command),
                    &field, // token length ≠ 32; no token bytes yet
                ]);
                assert_eq!(
                    decode(&mut b),
                    Err(reject(
                        Status::InvalidTokenSize,
                        legacy_id(command),
                        RejectReason::BadTokenSize(len)
                    ))
                );
            }
        }
    }

    #[test]
    fn legacy_zero_payload_length_is_missing_payload() {
        for command in [Command::Simple, Command::Enhanced] {
            let mut b = buf(&[
                &legacy_head(command),
                &[0x00, 0x20], // token length 32
                &TOKEN,        // token
                &[0x00, 0x00], // payload length 0
            ]);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::MissingPayload,
                    legacy_id(command),
                    RejectReason::MissingPayload
                ))
            );
        }
    }

    #[test]
    fn legacy_oversized_payload_is_rejected_before_it_arrives() {
        for command in [Command::Simple, Command::Enhanced] {
            let mut b = buf(&[
                &legacy_head(command),
                &[0x00, 0x20], // token length 32
                &TOKEN,        // token
                &[0x01, 0x01], // payload length 257; no payload bytes sent
            ]);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::InvalidPayloadSize,
                    legacy_id(command),
                    RejectReason::PayloadTooLarge { len: 257, max: 256 }
                ))
            );
        }
    }

    #[test]
    fn legacy_payload_must_be_a_json_object() {
        for command in [Command::Simple, Command::Enhanced] {
            let mut b = buf(&[
                &legacy_head(command),
                &[0x00, 0x20], // token length 32
                &TOKEN,        // token
                &[0x00, 0x02], // payload length 2
                b"[]",         // payload: JSON, not an object
            ]);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::ProtocolError,
                    legacy_id(command),
                    RejectReason::NotAJsonObject
                ))
            );

            let mut b = buf(&[
                &legacy_head(command),
                &[0x00, 0x20], // token length 32
                &TOKEN,        // token
                &[0x00, 0x01], // payload length 1
                b"{",          // payload: not JSON
            ]);
            let err = decode(&mut b).unwrap_err();
            assert_eq!(err.status, Status::ProtocolError);
            assert_eq!(err.identifier, legacy_id(command));
            assert!(matches!(err.reason, RejectReason::InvalidJson(_)));
        }
    }

    // ---- rejections: command 2 header ----

    #[test]
    fn oversized_frame_is_rejected_from_the_header() {
        for (len, field) in [
            (
                MAX_BUFFERED_FRAME_LEN + 1,
                (MAX_BUFFERED_FRAME_LEN + 1).to_be_bytes(),
            ),
            (u32::MAX, [0xFF, 0xFF, 0xFF, 0xFF]),
        ] {
            let mut b = buf(&[
                &[0x02], // command 2
                &field,  // frame length over the maximum; no items follow
            ]);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::InvalidPayloadSize,
                    [0; 4],
                    RejectReason::FrameTooLarge {
                        len,
                        max: MAX_BUFFERED_FRAME_LEN
                    }
                ))
            );
        }
    }

    #[test]
    fn frame_at_the_maximum_waits_for_its_bytes() {
        let mut b = buf(&[
            &[0x02],                   // command 2
            &[0x00, 0x00, 0x08, 0x38], // frame length 2104 (the maximum)
        ]);
        assert_eq!(decode(&mut b), Ok(None));
        assert_eq!(b.len(), 5);
    }

    #[test]
    fn zero_length_frame_is_missing_token() {
        let mut b = buf(&[
            &[0x02],                   // command 2
            &[0x00, 0x00, 0x00, 0x00], // frame length 0
        ]);
        assert_eq!(
            decode(&mut b),
            Err(reject(
                Status::MissingDeviceToken,
                [0; 4],
                RejectReason::MissingToken
            ))
        );
    }

    // ---- rejections: command 2 first pass ----

    #[test]
    fn item_header_overrunning_frame() {
        let mut b = buf(&[
            &[0x02],                   // command 2
            &[0x00, 0x00, 0x00, 0x02], // frame length 2
            &[0x01, 0x00],             // item 1 header cut short
        ]);
        assert_eq!(
            decode(&mut b),
            Err(reject(
                Status::ProtocolError,
                [0; 4],
                RejectReason::ItemOverrunsFrame { item: 1 }
            ))
        );
    }

    #[test]
    fn item_data_overrunning_frame_echoes_identifier_seen_so_far() {
        let mut b = buf(&[
            &[0x02],                   // command 2
            &[0x00, 0x00, 0x00, 0x0A], // frame length 10
            &[0x03, 0x00, 0x04],       // item 3 (identifier), length 4
            &ID,                       // identifier
            &[0x01, 0x00, 0x20],       // item 1 (token), length 32 — but the frame ends here
        ]);
        assert_eq!(
            decode(&mut b),
            Err(reject(
                Status::ProtocolError,
                ID,
                RejectReason::ItemOverrunsFrame { item: 1 }
            ))
        );
    }

    #[test]
    fn unknown_item_ids() {
        for id in [0x00, 0x06, 0xFF] {
            let mut b = buf(&[
                &[0x02],                   // command 2
                &[0x00, 0x00, 0x00, 0x04], // frame length 4
                &[id, 0x00, 0x01],         // item with an unknown id, length 1
                &[0x00],                   // data
            ]);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::ProtocolError,
                    [0; 4],
                    RejectReason::UnknownItem(id)
                ))
            );
        }
    }

    #[test]
    fn duplicate_items() {
        let mut b = frame_of(&[(3, &ID), (1, &TOKEN), (2, PAYLOAD), (1, &TOKEN)]);
        assert_eq!(
            decode(&mut b),
            Err(reject(
                Status::ProtocolError,
                ID,
                RejectReason::DuplicateItem(1)
            ))
        );
        // A second identifier item: the first (valid) one is what gets echoed.
        let mut b = frame_of(&[(3, &ID), (3, &[9, 9, 9, 9])]);
        assert_eq!(
            decode(&mut b),
            Err(reject(
                Status::ProtocolError,
                ID,
                RejectReason::DuplicateItem(3)
            ))
        );
    }

    #[test]
    fn overrun_is_checked_before_unknown_id() {
        let mut b = buf(&[
            &[0x02],                   // command 2
            &[0x00, 0x00, 0x00, 0x03], // frame length 3
            &[0x09, 0x00, 0x05],       // item 9, length 5 — data missing
        ]);
        assert_eq!(
            decode(&mut b).unwrap_err().reason,
            RejectReason::ItemOverrunsFrame { item: 9 }
        );
    }

    // ---- rejections: command 2 second pass ----

    #[test]
    fn bad_fixed_item_lengths() {
        // (items, identifier echoed, offending item, its length, expected length)
        type Case<'a> = (&'a [(u8, &'a [u8])], [u8; 4], u8, u16, u16);
        let cases: [Case<'_>; 5] = [
            (&[(3, &[1, 2, 3])], [0; 4], 3, 3, 4),
            (&[(3, &[1, 2, 3, 4, 5])], [0; 4], 3, 5, 4),
            (&[(3, &ID), (4, &[0, 0])], ID, 4, 2, 4),
            (&[(3, &ID), (5, &[])], ID, 5, 0, 1),
            (&[(5, &[0, 10]), (3, &ID)], ID, 5, 2, 1),
        ];
        for (items, identifier, item, len, expected) in cases {
            let mut b = frame_of(items);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::ProtocolError,
                    identifier,
                    RejectReason::BadItemLength {
                        item,
                        len,
                        expected
                    }
                )),
                "{items:?}"
            );
        }
    }

    #[test]
    fn bad_priority() {
        for p in [0u8, 1, 6, 9, 11, 255] {
            let mut b = frame_of(&[(1, &TOKEN), (2, PAYLOAD), (3, &ID), (5, &[p])]);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::ProtocolError,
                    ID,
                    RejectReason::BadPriority(p)
                ))
            );
        }
    }

    #[test]
    fn item_lengths_and_priority_are_checked_before_token() {
        // No token at all, but the bad priority wins.
        let mut b = frame_of(&[(5, &[7])]);
        assert_eq!(
            decode(&mut b).unwrap_err().reason,
            RejectReason::BadPriority(7)
        );
        let mut b = frame_of(&[(4, &[0])]);
        assert_eq!(
            decode(&mut b).unwrap_err().reason,
            RejectReason::BadItemLength {
                item: 4,
                len: 1,
                expected: 4
            }
        );
    }

    #[test]
    fn missing_token() {
        for items in [
            &[(2, PAYLOAD), (3, &ID[..])][..],
            &[(1, &[][..]), (2, PAYLOAD), (3, &ID)],
        ] {
            let mut b = frame_of(items);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::MissingDeviceToken,
                    ID,
                    RejectReason::MissingToken
                ))
            );
        }
    }

    #[test]
    fn wrong_token_size() {
        for len in [1usize, 31, 33, 100] {
            let t = vec![0xAB; len];
            let mut b = frame_of(&[(3, &ID), (1, &t), (2, PAYLOAD)]);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::InvalidTokenSize,
                    ID,
                    RejectReason::BadTokenSize(len)
                ))
            );
        }
    }

    #[test]
    fn token_is_checked_before_payload() {
        let mut b = frame_of(&[(1, &TOKEN[..5])]);
        assert_eq!(
            decode(&mut b).unwrap_err().reason,
            RejectReason::BadTokenSize(5)
        );
    }

    #[test]
    fn missing_payload() {
        for items in [
            &[(1, &TOKEN[..]), (3, &ID)][..],
            &[(1, &TOKEN), (2, &[]), (3, &ID)],
        ] {
            let mut b = frame_of(items);
            assert_eq!(
                decode(&mut b),
                Err(reject(
                    Status::MissingPayload,
                    ID,
                    RejectReason::MissingPayload
                ))
            );
        }
    }

    #[test]
    fn oversized_payload_inside_a_legal_frame() {
        let payload = vec![b' '; MAX_PAYLOAD_FRAME + 1];
        let mut b = frame_of(&[(1, &TOKEN), (2, &payload), (3, &ID)]);
        assert_eq!(
            decode(&mut b),
            Err(reject(
                Status::InvalidPayloadSize,
                ID,
                RejectReason::PayloadTooLarge {
                    len: 2049,
                    max: 2048
                }
            ))
        );
    }

    #[test]
    fn frame_payload_must_be_a_json_object() {
        let mut b = frame_of(&[(1, &TOKEN), (2, b"42"), (3, &ID)]);
        assert_eq!(
            decode(&mut b),
            Err(reject(
                Status::ProtocolError,
                ID,
                RejectReason::NotAJsonObject
            ))
        );
        let mut b = frame_of(&[(1, &TOKEN), (2, b"{\"a\""), (3, &ID)]);
        let err = decode(&mut b).unwrap_err();
        assert_eq!((err.status, err.identifier), (Status::ProtocolError, ID));
        assert!(matches!(err.reason, RejectReason::InvalidJson(_)));
    }

    #[test]
    fn frame_over_the_valid_size_is_answered_with_its_identifier() {
        let payload = vec![b' '; MAX_PAYLOAD_FRAME + 100];
        let mut b = frame_of(&[(3, &ID), (1, &TOKEN), (2, &payload)]);
        assert!(b.len() > 5 + MAX_FRAME_LEN as usize);
        let err = decode(&mut b).unwrap_err();
        assert_eq!(
            (err.status, err.identifier),
            (Status::InvalidPayloadSize, ID)
        );
        assert_eq!(
            err.reason,
            RejectReason::PayloadTooLarge {
                len: MAX_PAYLOAD_FRAME + 100,
                max: MAX_PAYLOAD_FRAME
            }
        );
    }

    // ---- messages and status mapping ----

    #[test]
    fn every_reason_maps_to_its_status() {
        let cases = [
            (RejectReason::UnknownCommand(3), Status::ProtocolError),
            (
                RejectReason::FrameTooLarge {
                    len: 3000,
                    max: 2104,
                },
                Status::InvalidPayloadSize,
            ),
            (
                RejectReason::ItemOverrunsFrame { item: 1 },
                Status::ProtocolError,
            ),
            (RejectReason::UnknownItem(6), Status::ProtocolError),
            (RejectReason::DuplicateItem(1), Status::ProtocolError),
            (
                RejectReason::BadItemLength {
                    item: 5,
                    len: 4,
                    expected: 1,
                },
                Status::ProtocolError,
            ),
            (RejectReason::BadPriority(7), Status::ProtocolError),
            (RejectReason::MissingToken, Status::MissingDeviceToken),
            (RejectReason::BadTokenSize(31), Status::InvalidTokenSize),
            (RejectReason::MissingPayload, Status::MissingPayload),
            (
                RejectReason::PayloadTooLarge { len: 300, max: 256 },
                Status::InvalidPayloadSize,
            ),
            (RejectReason::InvalidJson("x".into()), Status::ProtocolError),
            (RejectReason::NotAJsonObject, Status::ProtocolError),
        ];
        for (reason, status) in cases {
            assert_eq!(reason.status(), status, "{reason:?}");
            assert!(!reason.to_string().is_empty());
        }
    }

    #[test]
    fn messages_name_the_numbers() {
        assert_eq!(
            RejectReason::FrameTooLarge {
                len: 3000,
                max: 2104
            }
            .to_string(),
            "frame length 3000 exceeds the maximum 2104"
        );
        assert_eq!(
            RejectReason::BadItemLength {
                item: 5,
                len: 4,
                expected: 1
            }
            .to_string(),
            "item 5 has length 4, expected 1"
        );
        let r = Rejection::new(ID, RejectReason::BadTokenSize(31));
        assert_eq!(
            r.to_string(),
            "notification rejected with status 5 (Invalid token size): device token is 31 bytes, expected 32"
        );
    }

    // ---- hostile input ----

    /// Tiny deterministic PRNG (xorshift64) so the test needs no extra crate.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut state = 0x9E37_79B9_7F4A_7C15;
        let seeds: Vec<Vec<u8>> = fixtures().into_iter().map(|(b, _)| b).collect();
        for round in 0..20_000 {
            let mut bytes = if round % 2 == 0 {
                let len = (next(&mut state) % 80) as usize;
                (0..len)
                    .map(|_| next(&mut state) as u8)
                    .collect::<Vec<u8>>()
            } else {
                seeds[round % seeds.len()].clone()
            };
            // Flip a few bytes, favouring the headers.
            for _ in 0..3 {
                if !bytes.is_empty() {
                    let at = (next(&mut state) as usize) % bytes.len().min(16);
                    bytes[at] = next(&mut state) as u8;
                }
            }
            let mut b = BytesMut::from(&bytes[..]);
            // Decode until the buffer is exhausted, incomplete or rejected.
            for _ in 0..bytes.len() + 1 {
                match decode(&mut b) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}

/// One labelled field of a binary command, as [`annotate`] finds it: where it sits in the
/// command's bytes, how long it is, what it is, and its value in words. What the dashboard
/// and the delivery log show for "the bytes with each field labelled".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Offset of its first byte from the command byte.
    pub offset: usize,
    /// Its length in bytes (fewer than its length field promised when the input ends early).
    pub length: usize,
    /// What it is: `command`, `frame length`, `item id`, `device token`, `payload`, …;
    /// `unparsed` for bytes no field claims.
    pub name: &'static str,
    /// Its value in words: a number, hex for tokens and identifiers, the payload's text
    /// (lossy UTF-8); a field cut short says so.
    pub value: String,
}

/// The most bytes of an `unparsed` field shown in hex: enough to recognise what followed,
/// short enough that a 64 KiB garbage frame is not a 128 KiB string.
const UNPARSED_SHOWN: usize = 64;

/// Labels every field of one binary command (0, 1 or 2), exactly as sent: offsets, lengths,
/// names and values, without judging them (that is [`decode`]'s job). Malformed input is
/// labelled as far as it goes: a field the input ends inside is shown cut short, an unknown
/// command byte or bytes after the command are `unparsed`. Pure, and total: it never
/// panics, whatever the bytes.
pub fn annotate(bytes: &[u8]) -> Vec<Field> {
    let mut a = Annotator {
        bytes,
        at: 0,
        end: bytes.len(),
        fields: Vec::new(),
    };
    match bytes.first() {
        None => {}
        Some(&0) => a.legacy(Command::Simple),
        Some(&1) => a.legacy(Command::Enhanced),
        Some(&2) => a.frame(),
        Some(&other) => {
            a.field(1, "command", |_| format!("{other} (unknown command)"));
        }
    }
    a.end = bytes.len();
    a.unparsed();
    a.fields
}

/// [`annotate`]'s cursor over the bytes.
struct Annotator<'a> {
    /// The command's bytes.
    bytes: &'a [u8],
    /// The next unlabelled byte.
    at: usize,
    /// Where the current region ends (a command-2 frame's items stop at its frame length).
    end: usize,
    /// What has been labelled so far.
    fields: Vec<Field>,
}

impl Annotator<'_> {
    /// Labels the next `len` bytes as `name` with `value` of its bytes; when the region ends
    /// first, labels what there is as cut short and returns `None`.
    fn field(
        &mut self,
        len: usize,
        name: &'static str,
        value: impl FnOnce(&[u8]) -> String,
    ) -> Option<&[u8]> {
        let start = self.at.min(self.end);
        let have = self.end - start;
        let bytes = self.bytes.get(start..self.end).unwrap_or_default();
        if have < len {
            if have > 0 {
                self.fields.push(Field {
                    offset: start,
                    length: have,
                    name,
                    value: format!("cut short: {have} of {len} bytes ({})", shown_hex(bytes)),
                });
                self.at = self.end;
            }
            return None;
        }
        let data = bytes.get(..len).unwrap_or_default();
        self.fields.push(Field {
            offset: start,
            length: len,
            name,
            value: value(data),
        });
        self.at = start + len;
        Some(data)
    }

    /// A big-endian length field of `N` bytes (2 or 4), labelled with its value.
    fn length<const N: usize>(&mut self, name: &'static str) -> Option<usize> {
        let data = self.field(N, name, |d| be_number(d).to_string())?;
        usize::try_from(be_number(data)).ok()
    }

    /// Commands 0 and 1.
    fn legacy(&mut self, command: Command) {
        let label = if command == Command::Simple {
            "0 (simple)"
        } else {
            "1 (enhanced)"
        };
        self.field(1, "command", |_| label.to_owned());
        if command == Command::Enhanced
            && (self.field(4, "identifier", identifier_value).is_none()
                || self.field(4, "expiry", expiry_value).is_none())
        {
            return;
        }
        let Some(token_len) = self.length::<2>("token length") else {
            return;
        };
        if self.field(token_len, "device token", hex_value).is_none() {
            return;
        }
        let Some(payload_len) = self.length::<2>("payload length") else {
            return;
        };
        self.field(payload_len, "payload", payload_value);
    }

    /// Command 2: the header, then each item within the frame length.
    fn frame(&mut self) {
        self.field(1, "command", |_| "2 (frame)".to_owned());
        let Some(frame_len) = self.length::<4>("frame length") else {
            return;
        };
        self.end = self.at.saturating_add(frame_len).min(self.bytes.len());
        while self.at < self.end {
            let Some(&[id]) = self.field(1, "item id", item_id_value) else {
                return;
            };
            let Some(len) = self.length::<2>("item length") else {
                return;
            };
            let (name, value): (&'static str, fn(&[u8]) -> String) = match id {
                ITEM_TOKEN => ("device token", hex_value),
                ITEM_PAYLOAD => ("payload", payload_value),
                ITEM_IDENTIFIER => ("identifier", identifier_value),
                ITEM_EXPIRY => ("expiry", expiry_value),
                ITEM_PRIORITY => ("priority", priority_value),
                _ => ("item data", shown_hex),
            };
            if self.field(len, name, value).is_none() {
                return;
            }
        }
    }

    /// Whatever no field claimed, up to the end of the input.
    fn unparsed(&mut self) {
        let Some(rest) = self.bytes.get(self.at..).filter(|r| !r.is_empty()) else {
            return;
        };
        self.fields.push(Field {
            offset: self.at,
            length: rest.len(),
            name: "unparsed",
            value: shown_hex(rest),
        });
        self.at = self.bytes.len();
    }
}

/// Bytes in hex (a device token).
fn hex_value(data: &[u8]) -> String {
    hex::encode(data)
}

/// Bytes in hex, the first [`UNPARSED_SHOWN`] of them, `…` marking that more followed.
fn shown_hex(data: &[u8]) -> String {
    let shown = data.get(..UNPARSED_SHOWN).unwrap_or(data);
    let more = if data.len() > shown.len() { "…" } else { "" };
    format!("{}{more}", hex::encode(shown))
}

/// A big-endian unsigned number of up to 8 bytes (only 1, 2 and 4 are asked for).
fn be_number(data: &[u8]) -> u64 {
    data.iter().fold(0, |n, &b| (n << 8) | u64::from(b))
}

/// An identifier: its hex bytes and the number they make.
fn identifier_value(data: &[u8]) -> String {
    format!("{} ({})", hex::encode(data), be_number(data))
}

/// An expiry: UNIX seconds, and what 0 means.
fn expiry_value(data: &[u8]) -> String {
    match be_number(data) {
        0 => "0 (do not store)".to_owned(),
        n => n.to_string(),
    }
}

/// A priority: its number, or hex when it is not one byte.
fn priority_value(data: &[u8]) -> String {
    match data {
        [p] => p.to_string(),
        other => hex::encode(other),
    }
}

/// A payload: its text (lossy UTF-8).
fn payload_value(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// An item id and the item it names.
fn item_id_value(data: &[u8]) -> String {
    let id = data.first().copied().unwrap_or_default();
    let name = match id {
        ITEM_TOKEN => "device token",
        ITEM_PAYLOAD => "payload",
        ITEM_IDENTIFIER => "identifier",
        ITEM_EXPIRY => "expiry",
        ITEM_PRIORITY => "priority",
        _ => "unknown item",
    };
    format!("{id} ({name})")
}

#[cfg(test)]
mod annotate_tests {
    use super::*;

    const TOKEN: [u8; 32] = [0xAB; 32];
    const PAYLOAD: &[u8] = br#"{"aps":{}}"#; // 10 bytes

    /// (offset, length, name, value) of each field.
    fn labels(bytes: &[u8]) -> Vec<(usize, usize, &'static str, String)> {
        annotate(bytes)
            .into_iter()
            .map(|f| (f.offset, f.length, f.name, f.value))
            .collect()
    }

    fn l(
        offset: usize,
        length: usize,
        name: &'static str,
        value: &str,
    ) -> (usize, usize, &'static str, String) {
        (offset, length, name, value.to_owned())
    }

    #[test]
    fn the_decoder_hands_over_each_commands_bytes() {
        let mut dst = BytesMut::new();
        encode_frame_raw(&TOKEN, PAYLOAD, [0, 0, 0, 1], 0, 10, &mut dst);
        encode_simple_raw(&TOKEN, PAYLOAD, &mut dst);
        let first = dst[..dst.len() - 47].to_vec();
        let (n, frame) = decode_with_frame(&mut dst, 256).unwrap().unwrap();
        assert_eq!(&frame[..], &first[..]);
        assert_eq!(&n.payload[..], PAYLOAD);
        let (_, second) = decode_with_frame(&mut dst, 256).unwrap().unwrap();
        assert_eq!(second.len(), 47);
        assert!(dst.is_empty());
    }

    #[test]
    fn a_refused_command_leaves_its_bytes_in_the_buffer() {
        let mut frame = BytesMut::new();
        encode_frame_raw(&TOKEN, PAYLOAD, [0; 4], 0, 7, &mut frame);
        let mut simple = BytesMut::new();
        encode_simple_raw(&TOKEN, b"nope", &mut simple);
        for mut buf in [frame, simple] {
            let before = buf.clone();
            assert!(decode_with_frame(&mut buf, 256).is_err());
            assert_eq!(buf, before, "the caller can log what was refused");
        }
    }

    #[test]
    fn command_0_fields() {
        let bytes = [
            &[0x00][..],   // 0: command 0
            &[0x00, 0x20], // 1: token length 32
            &TOKEN,        // 3: token
            &[0x00, 0x0A], // 35: payload length 10
            PAYLOAD,       // 37: payload
        ]
        .concat();
        assert_eq!(
            labels(&bytes),
            [
                l(0, 1, "command", "0 (simple)"),
                l(1, 2, "token length", "32"),
                l(3, 32, "device token", &"ab".repeat(32)),
                l(35, 2, "payload length", "10"),
                l(37, 10, "payload", r#"{"aps":{}}"#),
            ]
        );
    }

    #[test]
    fn command_1_fields() {
        let bytes = [
            &[0x01][..],               // 0: command 1
            &[0x00, 0x00, 0x00, 0x07], // 1: identifier 7
            &[0x00, 0x00, 0x00, 0x00], // 5: expiry 0
            &[0x00, 0x20],             // 9: token length 32
            &TOKEN,                    // 11: token
            &[0x00, 0x0A],             // 43: payload length 10
            PAYLOAD,                   // 45: payload
        ]
        .concat();
        assert_eq!(
            labels(&bytes),
            [
                l(0, 1, "command", "1 (enhanced)"),
                l(1, 4, "identifier", "00000007 (7)"),
                l(5, 4, "expiry", "0 (do not store)"),
                l(9, 2, "token length", "32"),
                l(11, 32, "device token", &"ab".repeat(32)),
                l(43, 2, "payload length", "10"),
                l(45, 10, "payload", r#"{"aps":{}}"#),
            ]
        );
    }

    #[test]
    fn command_2_fields() {
        let bytes = [
            &[0x02][..],               // 0: command 2
            &[0x00, 0x00, 0x00, 0x42], // 1: frame length 66
            &[0x01, 0x00, 0x20],       // 5: item 1, length 32
            &TOKEN,                    // 8: token
            &[0x02, 0x00, 0x0A],       // 40: item 2, length 10
            PAYLOAD,                   // 43: payload
            &[0x03, 0x00, 0x04],       // 53: item 3, length 4
            &[0xDE, 0xAD, 0xBE, 0xEF], // 56: identifier
            &[0x04, 0x00, 0x04],       // 60: item 4, length 4
            &[0x5F, 0x5E, 0x10, 0x00], // 63: expiry 1_600_000_000
            &[0x05, 0x00, 0x01],       // 67: item 5, length 1
            &[0x0A],                   // 70: priority 10
        ]
        .concat();
        assert_eq!(
            labels(&bytes),
            [
                l(0, 1, "command", "2 (frame)"),
                l(1, 4, "frame length", "66"),
                l(5, 1, "item id", "1 (device token)"),
                l(6, 2, "item length", "32"),
                l(8, 32, "device token", &"ab".repeat(32)),
                l(40, 1, "item id", "2 (payload)"),
                l(41, 2, "item length", "10"),
                l(43, 10, "payload", r#"{"aps":{}}"#),
                l(53, 1, "item id", "3 (identifier)"),
                l(54, 2, "item length", "4"),
                l(56, 4, "identifier", "deadbeef (3735928559)"),
                l(60, 1, "item id", "4 (expiry)"),
                l(61, 2, "item length", "4"),
                l(63, 4, "expiry", "1600000000"),
                l(67, 1, "item id", "5 (priority)"),
                l(68, 2, "item length", "1"),
                l(70, 1, "priority", "10"),
            ]
        );
        // The encoder's frame labels the same way, field for field.
        let mut dst = BytesMut::new();
        encode_frame_raw(
            &TOKEN,
            PAYLOAD,
            [0xDE, 0xAD, 0xBE, 0xEF],
            1_600_000_000,
            10,
            &mut dst,
        );
        assert_eq!(labels(&dst), labels(&bytes));
    }

    #[test]
    fn malformed_input_is_labelled_as_far_as_it_goes() {
        assert!(annotate(&[]).is_empty());
        assert_eq!(
            labels(&[0x09, 0x01, 0x02]),
            [
                l(0, 1, "command", "9 (unknown command)"),
                l(1, 2, "unparsed", "0102")
            ]
        );
        // A token length promising more than there is.
        assert_eq!(
            labels(&[0x00, 0x00, 0x20, 0xAB, 0xCD]),
            [
                l(0, 1, "command", "0 (simple)"),
                l(1, 2, "token length", "32"),
                l(3, 2, "device token", "cut short: 2 of 32 bytes (abcd)"),
            ]
        );
        // An item running past its frame, then bytes after the frame.
        assert_eq!(
            labels(&[0x02, 0x00, 0x00, 0x00, 0x04, 0x07, 0x00, 0x05, 0xFF, 0xEE]),
            [
                l(0, 1, "command", "2 (frame)"),
                l(1, 4, "frame length", "4"),
                l(5, 1, "item id", "7 (unknown item)"),
                l(6, 2, "item length", "5"),
                l(8, 1, "item data", "cut short: 1 of 5 bytes (ff)"),
                l(9, 1, "unparsed", "ee"),
            ]
        );
        // A frame length far past the input, and a header cut short.
        assert_eq!(
            labels(&[0x02, 0xFF, 0xFF]),
            [
                l(0, 1, "command", "2 (frame)"),
                l(1, 2, "frame length", "cut short: 2 of 4 bytes (ffff)"),
            ]
        );
        let huge = [
            &[0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0xFF, 0xFF][..],
            &[b'x'; 100],
        ]
        .concat();
        let fields = annotate(&huge);
        assert_eq!(
            fields.last().map(|f| (f.name, f.length)),
            Some(("payload", 100))
        );
        // Every byte sequence is labelled without a panic, each field inside the input.
        for len in 0..80u8 {
            for seed in 0..=255u8 {
                let bytes: Vec<u8> = (0..len)
                    .map(|i: u8| seed.wrapping_mul(31).wrapping_add(i.wrapping_mul(7)) % 9)
                    .collect();
                for f in annotate(&bytes) {
                    assert!(f.offset + f.length <= bytes.len(), "{bytes:?}: {f:?}");
                }
            }
        }
    }
}

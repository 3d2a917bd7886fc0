//! The tour's labelled bytes: every frame it shows is cut into fields (offset, length, name,
//! value) and printed as a hex dump followed by one line per field.
//!
//! Binary provider commands are labelled by [`crate::protocol::notification::annotate`], the
//! same labeller the dashboard and the delivery log use; HTTP/2 frames by
//! [`crate::protocol::h2wire`]. The device protocol, the error
//! response and feedback tuples have no labeller of their own in `protocol/`, so this file
//! reads them field by field from the layouts their codecs document. Like `annotate`, every
//! labeller here is total: bytes it cannot place are labelled `unparsed`, never a panic.

use std::fmt::Write as _;

use crate::protocol::device::{
    TYPE_ACK, TYPE_ACK_THROUGH, TYPE_ERROR, TYPE_HELLO, TYPE_NOTIFICATION, TYPE_NOT_INSTALLED,
    TYPE_PING, TYPE_PONG, TYPE_REGISTER, TYPE_REGISTERED, TYPE_WELCOME,
};
use crate::protocol::error_response::Status;
use crate::protocol::h2wire;
use crate::protocol::notification;
use crate::protocol::token::TokenKind;

/// How many bytes of one field are shown in hex on its line (the dump above shows them all).
const FIELD_HEX_SHOWN: usize = 12;
/// Bytes per line of the hex dump.
const DUMP_WIDTH: usize = 16;
/// Lines of hex dump shown for one HTTP/2 frame: its header and the start of its payload;
/// every field is still listed below the dump, so a newcomer is not handed a wall of hex.
pub const H2_DUMP_LINES: usize = 4;

/// One labelled field of a frame the tour shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Offset of its first byte in the frame.
    pub offset: usize,
    /// Its length in bytes.
    pub length: usize,
    /// What it is (`message type`, `device token`, `status`, …).
    pub name: String,
    /// Its value in words.
    pub value: String,
}

/// Labels a binary provider command (0, 1 or 2) with the protocol's own labeller.
pub fn command(bytes: &[u8]) -> Vec<Label> {
    notification::annotate(bytes)
        .into_iter()
        .map(|f| Label {
            offset: f.offset,
            length: f.length,
            name: f.name.to_owned(),
            value: f.value,
        })
        .collect()
}

/// Labels an error response (command 8): command, status, identifier.
pub fn error_response(bytes: &[u8]) -> Vec<Label> {
    let mut l = Labeller::new(bytes);
    l.field(1, "command", |d| format!("{} (error response)", byte(d)));
    l.field(1, "status", |d| match Status::from_code(byte(d)) {
        Some(status) => format!("{} ({})", byte(d), status.description()),
        None => format!("{} (not a status Apple defines)", byte(d)),
    });
    l.field(4, "identifier", |d| {
        format!("{} ({})", hex::encode(d), be_number(d))
    });
    l.finish()
}

/// Labels the feedback service's bytes: one tuple after another (time, token length, token).
pub fn feedback(bytes: &[u8]) -> Vec<Label> {
    let mut l = Labeller::new(bytes);
    while l.remaining() > 0 {
        if l.field(4, "time", |d| format!("{} (UNIX seconds)", be_number(d)))
            .is_none()
        {
            break;
        }
        let Some(len) = l.length::<2>("token length") else {
            break;
        };
        if l.field(len, "device token", |d| hex::encode(d)).is_none() {
            break;
        }
    }
    l.finish()
}

/// Which way a device-protocol frame travels: the type bytes differ (0x01.. from the device,
/// 0x81.. from the simulator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceDirection {
    /// Device → simulator.
    FromDevice,
    /// Simulator → device.
    FromSimulator,
}

/// The name of a device-protocol message type, for the narration.
pub fn device_type_name(frame_type: u8) -> &'static str {
    match frame_type {
        TYPE_HELLO => "Hello",
        TYPE_REGISTER => "Register",
        TYPE_ACK => "Ack",
        TYPE_ACK_THROUGH => "AckThrough",
        TYPE_NOT_INSTALLED => "NotInstalled",
        TYPE_PING => "Ping",
        TYPE_WELCOME => "Welcome",
        TYPE_REGISTERED => "Registered",
        TYPE_NOTIFICATION => "Notification",
        TYPE_PONG => "Pong",
        TYPE_ERROR => "Error",
        _ => "unknown",
    }
}

/// Labels one frame of the simulator's device protocol (`protocol/device.rs` documents the
/// layout: type, u16 body length, body).
pub fn device_frame(bytes: &[u8], direction: DeviceDirection) -> Vec<Label> {
    let mut l = Labeller::new(bytes);
    let Some(&[frame_type]) = l.field(1, "message type", |d| {
        format!("0x{:02x} ({})", byte(d), device_type_name(byte(d)))
    }) else {
        return l.finish();
    };
    if l.length::<2>("body length").is_none() {
        return l.finish();
    }
    match (direction, frame_type) {
        (DeviceDirection::FromDevice, TYPE_HELLO) => {
            l.field(1, "protocol version", |d| byte(d).to_string());
            l.field(1, "environment", |d| environment_name(byte(d)));
            l.str8("serial length", "serial");
        }
        (DeviceDirection::FromDevice, TYPE_REGISTER) => {
            l.field(1, "fresh install", |d| match byte(d) {
                0 => "0 (no: keep the token it has)".to_owned(),
                1 => "1 (yes: mint a new token)".to_owned(),
                other => format!("{other} (not a bool)"),
            });
            l.str8("app length", "app (bundle id)");
            l.kind();
        }
        (DeviceDirection::FromDevice, TYPE_ACK | TYPE_NOT_INSTALLED) => {
            l.field(8, "delivery", |d| be_number(d).to_string());
        }
        (DeviceDirection::FromDevice, TYPE_ACK_THROUGH) => {
            l.field(8, "delivery (every one up to it)", |d| {
                be_number(d).to_string()
            });
        }
        (DeviceDirection::FromDevice, TYPE_PING) | (DeviceDirection::FromSimulator, TYPE_PONG) => {
            l.field(8, "nonce", |d| be_number(d).to_string());
        }
        (DeviceDirection::FromSimulator, TYPE_WELCOME) => {
            l.field(2, "heartbeat", |d| format!("{} seconds", be_number(d)));
        }
        (DeviceDirection::FromSimulator, TYPE_REGISTERED) => {
            l.str8("app length", "app (bundle id)");
            l.token();
            l.kind();
        }
        (DeviceDirection::FromSimulator, TYPE_NOTIFICATION) => {
            l.field(8, "delivery", |d| be_number(d).to_string());
            l.token();
            l.field(4, "identifier", |d| {
                format!("{} ({})", hex::encode(d), be_number(d))
            });
            l.field(16, "apns-id", |d| {
                uuid::Uuid::from_slice(d).map_or_else(|_| hex::encode(d), |u| u.to_string())
            });
            l.field(4, "expiry", |d| match be_number(d) {
                0 => "0 (none)".to_owned(),
                at => format!("{at} (UNIX seconds)"),
            });
            l.field(1, "priority", |d| byte(d).to_string());
            l.str8("push type length", "push type");
            l.str8("collapse id length", "collapse id");
            if let Some(len) = l.length::<2>("payload length") {
                l.field(len, "payload", |d| String::from_utf8_lossy(d).into_owned());
            }
        }
        (DeviceDirection::FromSimulator, TYPE_ERROR) => {
            l.field(1, "close code", |d| byte(d).to_string());
            l.str8("message length", "message");
        }
        _ => {}
    }
    l.finish()
}

/// A hex dump of `bytes` (16 per line) and one line per label, each indented by `indent`.
pub fn render(bytes: &[u8], labels: &[Label], indent: &str) -> String {
    render_limited(bytes, labels, indent, usize::MAX, bytes.len())
}

/// Labels an HTTP/2 unit (the preface or a frame) from `protocol::h2wire`.
pub fn h2_labels(unit: &h2wire::Unit) -> Vec<Label> {
    unit.fields
        .iter()
        .map(|f| Label {
            offset: f.offset,
            length: f.length,
            name: f.name.clone(),
            value: f.value.clone(),
        })
        .collect()
}

/// An HTTP/2 unit as [`render`] shows bytes, but with at most [`H2_DUMP_LINES`] lines of
/// hex dump (a long DATA or HPACK run is counted, its fields still listed each).
pub fn render_h2(unit: &h2wire::Unit, indent: &str) -> String {
    render_limited(
        &unit.bytes,
        &h2_labels(unit),
        indent,
        H2_DUMP_LINES,
        unit.total,
    )
}

/// [`render`] with at most `max_lines` of dump; `total` is the unit's length on the wire
/// (more than `bytes` when only its start was kept).
fn render_limited(
    bytes: &[u8],
    labels: &[Label],
    indent: &str,
    max_lines: usize,
    total: usize,
) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(DUMP_WIDTH).take(max_lines) {
        let _ = writeln!(out, "{indent}{}", spaced_hex(chunk));
    }
    let shown = bytes.len().min(max_lines.saturating_mul(DUMP_WIDTH));
    if total > shown {
        let _ = writeln!(out, "{indent}… {} more bytes", total - shown);
    }
    let hex_width = FIELD_HEX_SHOWN * 3 + 1;
    for label in labels {
        let end = label.offset.saturating_add(label.length).min(bytes.len());
        let field = bytes.get(label.offset.min(end)..end).unwrap_or_default();
        let shown = field.get(..FIELD_HEX_SHOWN).unwrap_or(field);
        let mut hex = spaced_hex(shown);
        if shown.len() < field.len() {
            hex.push_str(" …");
        }
        let _ = writeln!(
            out,
            "{indent}  {hex:<hex_width$} {:<18} {}",
            label.name, label.value
        );
    }
    out
}

/// Bytes as lowercase hex pairs separated by spaces.
pub fn spaced_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The first byte of a one-byte field (0 for none, which a labeller never passes).
fn byte(d: &[u8]) -> u8 {
    d.first().copied().unwrap_or(0)
}

/// A big-endian unsigned number of up to 8 bytes.
fn be_number(d: &[u8]) -> u64 {
    d.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b))
}

/// The device protocol's environment byte in words.
fn environment_name(b: u8) -> String {
    match b {
        0 => "0 (sandbox)".to_owned(),
        1 => "1 (production)".to_owned(),
        other => format!("{other} (not an environment)"),
    }
}

/// A cursor that labels fields from the front of a frame.
struct Labeller<'a> {
    bytes: &'a [u8],
    at: usize,
    labels: Vec<Label>,
}

impl<'a> Labeller<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Labeller {
            bytes,
            at: 0,
            labels: Vec::new(),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    /// Labels the next `len` bytes, or what is left of them as cut short (then `None`).
    fn field(
        &mut self,
        len: usize,
        name: &str,
        value: impl FnOnce(&[u8]) -> String,
    ) -> Option<&'a [u8]> {
        let bytes: &'a [u8] = self.bytes;
        let rest = bytes.get(self.at..).unwrap_or_default();
        if rest.len() < len || len == 0 {
            if len > 0 && !rest.is_empty() {
                self.labels.push(Label {
                    offset: self.at,
                    length: rest.len(),
                    name: name.to_owned(),
                    value: format!("cut short: {} of {len} bytes", rest.len()),
                });
                self.at = bytes.len();
            }
            return if len == 0 { Some(&[]) } else { None };
        }
        let data = rest.get(..len).unwrap_or_default();
        self.labels.push(Label {
            offset: self.at,
            length: len,
            name: name.to_owned(),
            value: value(data),
        });
        self.at += len;
        Some(data)
    }

    /// A big-endian length field of `N` bytes.
    fn length<const N: usize>(&mut self, name: &str) -> Option<usize> {
        let data = self.field(N, name, |d| be_number(d).to_string())?;
        usize::try_from(be_number(data)).ok()
    }

    /// A u8 length and that many bytes of text.
    fn str8(&mut self, length_name: &str, name: &str) {
        if let Some(len) = self.length::<1>(length_name) {
            if len > 0 {
                self.field(len, name, |d| {
                    format!("{:?}", String::from_utf8_lossy(d).into_owned())
                });
            }
        }
    }

    /// A u8 length and that many token bytes.
    fn token(&mut self) {
        if let Some(len) = self.length::<1>("token length") {
            self.field(len, "device token", |d| hex::encode(d));
        }
    }

    /// The optional token kind (code and activity id) at the end of a body.
    fn kind(&mut self) {
        if self.remaining() == 0 {
            return;
        }
        self.field(1, "token kind", |d| {
            match TokenKind::from_code(byte(d), "activity") {
                Ok(kind) => format!("{} ({})", byte(d), kind.name()),
                Err(_) => format!("{} (unknown kind)", byte(d)),
            }
        });
        self.str8("activity id length", "activity id");
    }

    /// Labels whatever is left as `unparsed` and hands the labels over.
    fn finish(mut self) -> Vec<Label> {
        if self.remaining() > 0 {
            let rest = self.bytes.get(self.at..).unwrap_or_default();
            self.labels.push(Label {
                offset: self.at,
                length: rest.len(),
                name: "unparsed".to_owned(),
                value: format!("{} bytes", rest.len()),
            });
        }
        self.labels
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::protocol::device::{encode_device_message, DeviceMessage};
    use crate::protocol::error_response::ErrorResponse;
    use crate::protocol::Environment;

    fn names(labels: &[Label]) -> Vec<&str> {
        labels.iter().map(|l| l.name.as_str()).collect()
    }

    #[test]
    fn a_hello_is_labelled_field_by_field() {
        let mut b = BytesMut::new();
        let hello = DeviceMessage::Hello {
            version: 1,
            environment: Environment::Sandbox,
            serial: "PHONE".into(),
        };
        encode_device_message(&hello, &mut b);
        let labels = device_frame(&b, DeviceDirection::FromDevice);
        assert_eq!(
            names(&labels),
            [
                "message type",
                "body length",
                "protocol version",
                "environment",
                "serial length",
                "serial"
            ]
        );
        assert_eq!(labels[0].value, "0x01 (Hello)");
        assert_eq!(labels[5].value, "\"PHONE\"");
    }

    #[test]
    fn a_cumulative_ack_is_labelled() {
        let mut b = BytesMut::new();
        encode_device_message(&DeviceMessage::AckThrough { delivery: 7 }, &mut b);
        let labels = device_frame(&b, DeviceDirection::FromDevice);
        assert_eq!(
            names(&labels),
            [
                "message type",
                "body length",
                "delivery (every one up to it)"
            ]
        );
        assert_eq!(labels[0].value, "0x06 (AckThrough)");
        assert_eq!(labels[2].value, "7");
    }

    #[test]
    fn error_responses_and_feedback_are_labelled() {
        let resp = ErrorResponse {
            status: Status::InvalidTokenSize,
            identifier: 21u32.to_be_bytes(),
        }
        .encode();
        let labels = error_response(&resp);
        assert_eq!(names(&labels), ["command", "status", "identifier"]);
        assert_eq!(labels[1].value, "5 (Invalid token size)");
        assert_eq!(labels[2].value, "00000015 (21)");
        let mut tuple = vec![0, 0, 0, 9, 0, 2, 0xab, 0xcd];
        let labels = feedback(&tuple);
        assert_eq!(names(&labels), ["time", "token length", "device token"]);
        assert_eq!(labels[2].value, "abcd");
        tuple.truncate(7);
        assert!(feedback(&tuple)[2].value.starts_with("cut short"));
    }

    #[test]
    fn an_http2_frame_shows_four_dump_lines_and_every_field() {
        use crate::protocol::h2wire::{Labeller, Side};
        let body = vec![b'x'; 100];
        let mut frame = vec![0, 0, 100, 0x0, 0x1, 0, 0, 0, 1];
        frame.extend_from_slice(&body);
        let units = Labeller::new(Side::Server).feed(&frame);
        let text = render_h2(&units[0], "  ");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "  00 00 64 00 01 00 00 00 01 78 78 78 78 78 78 78"
        );
        assert_eq!(lines[H2_DUMP_LINES], "  … 45 more bytes");
        let fields: Vec<&str> = lines[H2_DUMP_LINES + 1..].to_vec();
        assert_eq!(fields.len(), 5, "{text}");
        assert!(
            fields[0].contains("length") && fields[0].contains("100 (payload"),
            "{text}"
        );
        assert!(
            fields[4].contains(" data ") && fields[4].contains("(100 bytes)"),
            "{text}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 0x81) as u8).collect();
            for direction in [DeviceDirection::FromDevice, DeviceDirection::FromSimulator] {
                let labels = device_frame(&bytes, direction);
                let covered: usize = labels.iter().map(|l| l.length).sum();
                assert_eq!(covered, bytes.len());
                let _ = render(&bytes, &labels, "  ");
            }
            let _ = feedback(&bytes);
            let _ = error_response(&bytes);
        }
    }
}

//! HTTP/2 bytes labelled field by field, for people: the connection preface, every frame's
//! 9-byte header (RFC 9113 §4.1), the payload of each frame type (§6), and the HPACK header
//! blocks of HEADERS, PUSH_PROMISE and CONTINUATION decoded representation by representation
//! (RFC 7541 §6: indexed, literal with or without indexing, never indexed, table size update),
//! each with the header name and value it stands for.
//!
//! `apns-sim tour` shows with it the bytes its HTTP/2 client wrote and read. A [`Labeller`]
//! follows one direction of one connection: it is fed the bytes as they travel, in any pieces,
//! and hands back each unit (the preface, a frame) once all of it has arrived. It keeps the
//! HPACK decoding context of that direction (the dynamic table), since a HEADERS frame's
//! fields can name entries an earlier frame added.
//!
//! HPACK itself is the `loona-hpack` crate's: its decoder keeps the dynamic table and decodes
//! Huffman-coded strings (RFC 7541 Appendix B). This file only cuts a header block into its
//! representations (their prefix integers and string lengths, §5.1 and §5.2) so that each can
//! be labelled with its own bytes, and hands each representation to the decoder alone.
//!
//! Total like every labeller of `protocol/`: whatever the bytes, it never panics, and what
//! it cannot place is labelled as such. Nothing is allocated on a length field's word: a
//! frame is held only up to [`MAX_HELD_PAYLOAD`] bytes of payload, the rest counted.

use std::borrow::Cow;

use loona_hpack::Decoder;

use super::http2::FRAME_HEADER_LEN;

/// The client connection preface (RFC 9113 §3.4), the first bytes a client writes.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most payload bytes of one frame held for labelling: RFC 9113's initial
/// SETTINGS_MAX_FRAME_SIZE (16,384), which neither side of the tour raises. A longer frame is
/// labelled by its header and its payload counted as it passes, not held.
pub const MAX_HELD_PAYLOAD: usize = 16_384;

/// Most bytes of an HPACK representation cut by a frame's end that are carried into the next
/// CONTINUATION frame: a representation longer than a whole default-sized frame is labelled
/// as cut rather than held.
const MAX_CARRY: usize = 16_384;

/// Largest dynamic table size an HPACK size update may set in the labeller's decoder. The
/// decoder allocates nothing for the size itself (entries are only added from bytes that
/// arrive), but a bound keeps its table within what a real peer could have asked for: h2's
/// default is 4,096 bytes, and no SETTINGS_HEADER_TABLE_SIZE the tour sees is larger.
const MAX_TABLE_SIZE: usize = 65_536;

/// Longest text (DATA, header values, GOAWAY debug data) shown in a field's value before it
/// is cut with a count of what was left out: enough for an APNs JSON body or a device path.
pub const MAX_TEXT_SHOWN: usize = 200;

/// HPACK integers are at most this many octets, prefix included, as `loona-hpack` reads
/// them (RFC 7541 §5.1 leaves the limit to the decoder): the labeller must cut a block where
/// its decoder does.
const MAX_INT_OCTETS: usize = 5;

/// Entries in HPACK's static table (RFC 7541 Appendix A): indexes above it are dynamic.
const STATIC_ENTRIES: u64 = 61;

/// Frame types of RFC 9113 §6.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const PRIORITY: u8 = 0x2;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

/// Flags (their meaning depends on the frame type).
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// One labelled field: where it sits in its unit's bytes, how long it is, what it is and its
/// value in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Offset of its first byte in the unit.
    pub offset: usize,
    /// Its length in bytes.
    pub length: usize,
    /// What it is (`length`, `type`, `setting`, `HPACK indexed`, `value`, …).
    pub name: String,
    /// Its value in words.
    pub value: String,
}

/// What a unit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitKind {
    /// The client connection preface (or 24 bytes where it should have been).
    Preface,
    /// A frame, as its header says.
    Frame {
        /// Frame type (RFC 9113 §6; unknown types are allowed and ignored by peers).
        frame_type: u8,
        /// Flags byte.
        flags: u8,
        /// Stream identifier, without the reserved bit (0: the connection).
        stream: u32,
        /// Payload length from the header.
        length: usize,
    },
}

/// One unit of the byte stream: the preface or one whole frame, labelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// What it is.
    pub kind: UnitKind,
    /// A title in words: `connection preface`, `HEADERS frame, stream 1`, ….
    pub title: String,
    /// Its bytes as they travelled (for a frame longer than [`MAX_HELD_PAYLOAD`], only the
    /// header: the rest is counted in [`Unit::total`]).
    pub bytes: Vec<u8>,
    /// Its length on the wire.
    pub total: usize,
    /// Its fields, in order, covering [`Unit::bytes`].
    pub fields: Vec<Field>,
}

/// Which end wrote the bytes a [`Labeller`] reads: a client starts with the preface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client (the provider): preface, then frames.
    Client,
    /// The server (the HTTP/2 API): frames from the first byte.
    Server,
}

/// Labels one direction of one HTTP/2 connection, fed in pieces as the bytes travel.
pub struct Labeller {
    /// Whether the preface is still expected.
    preface: bool,
    /// Bytes of the unit being read (at most a frame header plus [`MAX_HELD_PAYLOAD`]).
    buf: Vec<u8>,
    /// Payload bytes of an over-long frame still to be passed over.
    skipping: usize,
    /// The HPACK decoding context of this direction.
    hpack: Decoder<'static>,
    /// The start of a representation cut by the previous frame's end.
    carry: Vec<u8>,
}

impl std::fmt::Debug for Labeller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Labeller")
            .field("preface", &self.preface)
            .field("held", &self.buf.len())
            .field("skipping", &self.skipping)
            .finish_non_exhaustive()
    }
}

impl Labeller {
    /// A labeller for the bytes `side` writes.
    pub fn new(side: Side) -> Self {
        Labeller {
            preface: side == Side::Client,
            buf: Vec::new(),
            skipping: 0,
            hpack: Decoder::new(),
            carry: Vec::new(),
        }
    }

    /// Bytes held of a unit that has not fully arrived.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Reads `bytes`, the next ones on the wire, and returns every unit they complete.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Unit> {
        let mut units = Vec::new();
        while !bytes.is_empty() {
            if self.skipping > 0 {
                let n = self.skipping.min(bytes.len());
                self.skipping -= n;
                bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            let want = self.want();
            let take = want.saturating_sub(self.buf.len()).min(bytes.len());
            self.buf
                .extend_from_slice(bytes.get(..take).unwrap_or_default());
            bytes = bytes.get(take..).unwrap_or_default();
            if self.buf.len() < self.want() {
                continue;
            }
            if let Some(unit) = self.unit() {
                units.push(unit);
            }
        }
        units
    }

    /// How many bytes the unit being read has in all (as far as is known yet).
    fn want(&self) -> usize {
        if self.preface {
            return PREFACE.len();
        }
        match frame_length(&self.buf) {
            None => FRAME_HEADER_LEN,
            Some(len) if len > MAX_HELD_PAYLOAD => FRAME_HEADER_LEN,
            Some(len) => FRAME_HEADER_LEN + len,
        }
    }

    /// Labels the complete unit in `buf` and empties it.
    fn unit(&mut self) -> Option<Unit> {
        let bytes = std::mem::take(&mut self.buf);
        if self.preface {
            self.preface = false;
            let ok = bytes.as_slice() == PREFACE;
            let value = if ok {
                "\"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n\" (the client speaks HTTP/2)".to_owned()
            } else {
                format!("{:?} (not the preface)", String::from_utf8_lossy(&bytes))
            };
            return Some(Unit {
                kind: UnitKind::Preface,
                title: "connection preface".to_owned(),
                total: bytes.len(),
                fields: vec![Field {
                    offset: 0,
                    length: bytes.len(),
                    name: "preface".to_owned(),
                    value,
                }],
                bytes,
            });
        }
        let length = frame_length(&bytes)?;
        let frame_type = *bytes.get(3)?;
        let flags = *bytes.get(4)?;
        let stream_raw = be32(bytes.get(5..9)?);
        let stream = stream_raw & 0x7fff_ffff;
        let mut fields = vec![
            field(
                0,
                3,
                "length",
                format!("{length} (payload bytes after the header)"),
            ),
            field(
                3,
                1,
                "type",
                format!("0x{frame_type:x} ({})", frame_type_name(frame_type)),
            ),
            field(4, 1, "flags", flags_text(frame_type, flags)),
            field(
                5,
                4,
                "stream id",
                match (stream, stream_raw != stream) {
                    (0, false) => "0 (the connection as a whole)".to_owned(),
                    (s, false) => s.to_string(),
                    (s, true) => format!("{s} (reserved bit set)"),
                },
            ),
        ];
        let total = FRAME_HEADER_LEN + length;
        if length > MAX_HELD_PAYLOAD {
            self.skipping = length;
            fields.push(field(
                FRAME_HEADER_LEN,
                0,
                "payload",
                format!(
                    "{length} bytes, longer than the {MAX_HELD_PAYLOAD} a frame has by default: \
                     not shown"
                ),
            ));
        } else {
            let payload = bytes.get(FRAME_HEADER_LEN..).unwrap_or_default();
            self.payload(frame_type, flags, payload, &mut fields);
        }
        let title = match (frame_type, stream) {
            (SETTINGS | PING, _) if flags & FLAG_ACK != 0 => {
                format!("{} frame (ACK)", frame_type_name(frame_type))
            }
            (_, 0) => format!("{} frame", frame_type_name(frame_type)),
            (_, s) => format!("{} frame, stream {s}", frame_type_name(frame_type)),
        };
        Some(Unit {
            kind: UnitKind::Frame {
                frame_type,
                flags,
                stream,
                length,
            },
            title,
            total,
            fields,
            bytes,
        })
    }

    /// Labels a whole payload (offsets from the frame's first byte).
    fn payload(&mut self, frame_type: u8, flags: u8, payload: &[u8], fields: &mut Vec<Field>) {
        if frame_type != CONTINUATION {
            // A representation left cut by a block that never went on is dropped.
            self.carry.clear();
        }
        let mut c = Cursor::new(payload, FRAME_HEADER_LEN, fields);
        match frame_type {
            DATA => {
                let Some(end) = c.padding(flags) else { return };
                c.text(end - c.at, "data");
                c.pad_to_end();
            }
            HEADERS | PUSH_PROMISE => {
                let Some(end) = c.padding(flags) else { return };
                if frame_type == HEADERS && flags & FLAG_PRIORITY != 0 {
                    c.dependency();
                    c.field(1, "weight", |d| format!("{}", u16::from(d[0]) + 1));
                }
                if frame_type == PUSH_PROMISE {
                    c.field(4, "promised stream", |d| {
                        (be32(d) & 0x7fff_ffff).to_string()
                    });
                }
                if c.at > end {
                    // The padding starts inside the fields before the block.
                    c.finish();
                    return;
                }
                let start = c.at.min(end);
                let block = payload.get(start..end).unwrap_or_default();
                let base = c.base + start;
                c.at = end;
                self.header_block(block, base, flags & FLAG_END_HEADERS != 0, c.fields);
                c.pad_to_end();
            }
            CONTINUATION => {
                let base = c.base;
                c.at = payload.len();
                self.header_block(payload, base, flags & FLAG_END_HEADERS != 0, c.fields);
            }
            PRIORITY => {
                c.dependency();
                c.field(1, "weight", |d| format!("{}", u16::from(d[0]) + 1));
            }
            RST_STREAM => {
                c.field(4, "error code", |d| error_code_text(be32(d)));
            }
            SETTINGS => {
                while c.remaining() > 0 {
                    let done = c.field(6, "setting", |d| {
                        let id = u16::from_be_bytes([d[0], d[1]]);
                        format!(
                            "{} (0x{id:x}) = {}",
                            setting_name(id),
                            be32(d.get(2..).unwrap_or_default())
                        )
                    });
                    if !done {
                        break;
                    }
                }
            }
            PING => {
                c.field(8, "opaque data", |d| hex::encode(d));
            }
            GOAWAY => {
                c.field(4, "last stream id", |d| {
                    format!(
                        "{} (the last of the other side's streams it acted on)",
                        be32(d) & 0x7fff_ffff
                    )
                });
                c.field(4, "error code", |d| error_code_text(be32(d)));
                let rest = c.remaining();
                if rest > 0 {
                    c.text(rest, "debug data");
                }
            }
            WINDOW_UPDATE => {
                c.field(4, "increment", |d| {
                    format!("{} bytes more may be sent", be32(d) & 0x7fff_ffff)
                });
            }
            _ => {}
        }
        c.finish();
    }

    /// Labels one fragment of a header block, representation by representation. `base` is
    /// the fragment's offset in its frame; `last` says the block ends with this fragment.
    fn header_block(&mut self, fragment: &[u8], base: usize, last: bool, out: &mut Vec<Field>) {
        let carried = std::mem::take(&mut self.carry);
        let carried_len = carried.len();
        let data: Cow<'_, [u8]> = if carried.is_empty() {
            Cow::Borrowed(fragment)
        } else {
            Cow::Owned([carried.as_slice(), fragment].concat())
        };
        // Offset in the frame of a position in `data` (the carried bytes come before it).
        let at = |pos: usize| base + pos.saturating_sub(carried_len);
        let mut pos = 0;
        while pos < data.len() {
            let rest = data.get(pos..).unwrap_or_default();
            let rep = match representation(rest) {
                Ok(rep) => rep,
                Err(Cut::Incomplete) if !last && rest.len() <= MAX_CARRY => {
                    self.carry = rest.to_vec();
                    let shown = data.len() - pos.max(carried_len);
                    out.push(field(
                        at(pos),
                        shown,
                        "HPACK field",
                        "continues in the next CONTINUATION frame".to_owned(),
                    ));
                    return;
                }
                Err(cut) => {
                    let why = match cut {
                        Cut::Incomplete => "cut short: the header block ends inside it",
                        Cut::TooLong => "an integer longer than HPACK decoders accept",
                    };
                    out.push(field(
                        at(pos),
                        data.len() - pos.max(carried_len),
                        "HPACK field",
                        format!("cannot be read: {why}"),
                    ));
                    return;
                }
            };
            let bytes = rest.get(..rep.len).unwrap_or_default();
            let summary = self.decode(&rep, bytes);
            if pos < carried_len {
                // Begun in the previous frame: one label for the part in this one.
                out.push(field(
                    at(pos),
                    (pos + rep.len).saturating_sub(carried_len),
                    "HPACK field",
                    format!("(begun in the previous frame) {}", summary.text),
                ));
            } else {
                out.push(field(at(pos), rep.prefix, summary.kind, summary.text));
                for (part, text) in [(&rep.name, summary.name), (&rep.value, summary.value)] {
                    if let (Some(part), Some(text)) = (part, text) {
                        let huffman = if part.huffman {
                            "Huffman-coded"
                        } else {
                            "as is"
                        };
                        out.push(field(
                            at(pos + part.start),
                            part.len_bytes,
                            &format!("{} length", part.what),
                            format!("{} bytes, {huffman}", part.length),
                        ));
                        if part.length > 0 {
                            out.push(field(
                                at(pos + part.start + part.len_bytes),
                                part.length,
                                part.what,
                                text,
                            ));
                        }
                    }
                }
            }
            pos += rep.len;
        }
    }

    /// Decodes one representation with the HPACK decoder (updating its dynamic table) and
    /// says what it stands for.
    fn decode(&mut self, rep: &Representation, bytes: &[u8]) -> Summary {
        if let Kind::SizeUpdate(size) = rep.kind {
            let applied = usize::try_from(size)
                .unwrap_or(usize::MAX)
                .min(MAX_TABLE_SIZE);
            self.hpack.set_max_table_size(applied);
            let clamped = if applied as u64 == size {
                String::new()
            } else {
                format!(" (more than any peer here allows: read as {applied})")
            };
            return Summary {
                kind: "HPACK table size",
                text: format!("dynamic table size update: at most {size} bytes{clamped}"),
                name: None,
                value: None,
            };
        }
        let mut header = None;
        let decoded = self.hpack.decode_with_cb(bytes, |name, value| {
            if header.is_none() {
                header = Some((name.into_owned(), value.into_owned()));
            }
        });
        let (name, value) = match (decoded, header) {
            (Ok(()), Some((name, value))) => (name, value),
            (Err(e), _) => {
                return Summary {
                    kind: rep.kind.label(),
                    text: format!("{}: cannot be decoded: {e}", rep.kind.describe()),
                    name: rep.name.as_ref().map(|_| "(not decoded)".to_owned()),
                    value: rep.value.as_ref().map(|_| "(not decoded)".to_owned()),
                }
            }
            (Ok(()), None) => {
                return Summary {
                    kind: rep.kind.label(),
                    text: format!("{}: stands for no header", rep.kind.describe()),
                    name: None,
                    value: None,
                }
            }
        };
        let name = text(&name);
        let value = text(&value);
        let stands_for = format!("{name}: {value}");
        let table = |i: u64| {
            let which = if i <= STATIC_ENTRIES {
                "static"
            } else {
                "dynamic"
            };
            format!("{which} table entry {i}")
        };
        let text = match rep.kind {
            Kind::Indexed(i) => format!("{stands_for} ({})", table(i)),
            Kind::Literal { name_index: 0, .. } => {
                format!("{stands_for} ({}; new name)", rep.kind.describe())
            }
            Kind::Literal { name_index, .. } => format!(
                "{stands_for} ({}; name from {})",
                rep.kind.describe(),
                table(name_index)
            ),
            Kind::SizeUpdate(_) => String::new(),
        };
        Summary {
            kind: rep.kind.label(),
            text,
            name: Some(name),
            value: Some(value),
        }
    }
}

/// What a representation stands for, in words, for its labels.
struct Summary {
    /// The name of its first label.
    kind: &'static str,
    /// The value of its first label.
    text: String,
    /// The text of its name string, when it has one.
    name: Option<String>,
    /// The text of its value string, when it has one.
    value: Option<String>,
}

/// The representations of RFC 7541 §6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// §6.1: an entry of the table, by index.
    Indexed(u64),
    /// §6.2: a literal; `name_index` 0 for a literal name.
    Literal { name_index: u64, indexing: Indexing },
    /// §6.3: a dynamic table size update.
    SizeUpdate(u64),
}

/// What a literal asks of the dynamic table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Indexing {
    /// §6.2.1: add it.
    Incremental,
    /// §6.2.2: do not.
    Without,
    /// §6.2.3: do not, and no intermediary may either.
    Never,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Indexed(_) => "HPACK indexed",
            Kind::Literal { .. } => "HPACK literal",
            Kind::SizeUpdate(_) => "HPACK table size",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Kind::Indexed(_) => "indexed",
            Kind::Literal {
                indexing: Indexing::Incremental,
                ..
            } => "literal, added to the dynamic table",
            Kind::Literal {
                indexing: Indexing::Without,
                ..
            } => "literal, not indexed",
            Kind::Literal {
                indexing: Indexing::Never,
                ..
            } => "literal, never indexed (sensitive)",
            Kind::SizeUpdate(_) => "table size update",
        }
    }
}

/// Where a string literal (§5.2) sits in its representation.
#[derive(Debug, Clone, Copy)]
struct StringPart {
    /// `name` or `value`.
    what: &'static str,
    /// Offset of its length integer in the representation.
    start: usize,
    /// Bytes of the length integer.
    len_bytes: usize,
    /// The string's length on the wire.
    length: usize,
    /// Whether it is Huffman-coded (the H bit).
    huffman: bool,
}

/// One representation's layout.
#[derive(Debug, Clone)]
struct Representation {
    kind: Kind,
    /// Bytes of its first integer (the type bits and the index or size).
    prefix: usize,
    name: Option<StringPart>,
    value: Option<StringPart>,
    /// Its whole length.
    len: usize,
}

/// Why a representation could not be cut out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// Its bytes go on past the end of the data.
    Incomplete,
    /// An integer of more than [`MAX_INT_OCTETS`].
    TooLong,
}

/// An HPACK integer with an `n`-bit prefix (§5.1): its value and how many bytes it takes.
fn integer(data: &[u8], n: u32) -> Result<(u64, usize), Cut> {
    let first = *data.first().ok_or(Cut::Incomplete)?;
    let mask = u8::MAX >> (8 - n.clamp(1, 8));
    let mut value = u64::from(first & mask);
    if value < u64::from(mask) {
        return Ok((value, 1));
    }
    for i in 1..MAX_INT_OCTETS {
        let b = *data.get(i).ok_or(Cut::Incomplete)?;
        value += u64::from(b & 0x7f) << (7 * (i - 1));
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(Cut::TooLong)
}

/// A string literal (§5.2) at `start` of `data`.
fn string(data: &[u8], start: usize, what: &'static str) -> Result<StringPart, Cut> {
    let rest = data.get(start..).ok_or(Cut::Incomplete)?;
    let huffman = rest.first().ok_or(Cut::Incomplete)? & 0x80 != 0;
    let (length, len_bytes) = integer(rest, 7)?;
    let length = usize::try_from(length).map_err(|_| Cut::TooLong)?;
    if rest.len() - len_bytes < length {
        return Err(Cut::Incomplete);
    }
    Ok(StringPart {
        what,
        start,
        len_bytes,
        length,
        huffman,
    })
}

/// Cuts the representation at the start of `data` (never empty).
fn representation(data: &[u8]) -> Result<Representation, Cut> {
    let first = *data.first().ok_or(Cut::Incomplete)?;
    let (kind_bits, indexing) = if first & 0x80 != 0 {
        let (index, prefix) = integer(data, 7)?;
        return Ok(Representation {
            kind: Kind::Indexed(index),
            prefix,
            name: None,
            value: None,
            len: prefix,
        });
    } else if first & 0x40 != 0 {
        (6, Indexing::Incremental)
    } else if first & 0x20 != 0 {
        let (size, prefix) = integer(data, 5)?;
        return Ok(Representation {
            kind: Kind::SizeUpdate(size),
            prefix,
            name: None,
            value: None,
            len: prefix,
        });
    } else if first & 0x10 != 0 {
        (4, Indexing::Never)
    } else {
        (4, Indexing::Without)
    };
    let (name_index, prefix) = integer(data, kind_bits)?;
    let mut at = prefix;
    let name = if name_index == 0 {
        let part = string(data, at, "name")?;
        at += part.len_bytes + part.length;
        Some(part)
    } else {
        None
    };
    let value = string(data, at, "value")?;
    at += value.len_bytes + value.length;
    Ok(Representation {
        kind: Kind::Literal {
            name_index,
            indexing,
        },
        prefix,
        name,
        value: Some(value),
        len: at,
    })
}

/// The 24-bit length of a frame header, once 3 bytes are there.
fn frame_length(header: &[u8]) -> Option<usize> {
    let b = header.get(..3)?;
    Some((usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
}

/// A big-endian u32 of up to 4 bytes.
fn be32(d: &[u8]) -> u32 {
    d.iter().take(4).fold(0u32, |n, b| (n << 8) | u32::from(*b))
}

fn field(offset: usize, length: usize, name: &str, value: String) -> Field {
    Field {
        offset,
        length,
        name: name.to_owned(),
        value,
    }
}

/// Bytes as text (lossy UTF-8), cut at [`MAX_TEXT_SHOWN`] characters with a count: as they
/// are when every character is printable, quoted with escapes when not (or when empty, or
/// when spaces at either end would vanish on the page).
fn text(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let head: String = s.chars().take(MAX_TEXT_SHOWN).collect();
    let left = s.chars().count().saturating_sub(MAX_TEXT_SHOWN);
    let plain = !head.is_empty()
        && head.trim() == head
        && !head.chars().any(|c| c.is_control() || c == '\u{fffd}');
    let mut shown = if plain { head } else { format!("{head:?}") };
    if left > 0 {
        shown.push_str(&format!(" … ({left} more characters)"));
    }
    shown
}

/// The name RFC 9113 gives a frame type.
pub fn frame_type_name(frame_type: u8) -> &'static str {
    match frame_type {
        DATA => "DATA",
        HEADERS => "HEADERS",
        PRIORITY => "PRIORITY",
        RST_STREAM => "RST_STREAM",
        SETTINGS => "SETTINGS",
        PUSH_PROMISE => "PUSH_PROMISE",
        PING => "PING",
        GOAWAY => "GOAWAY",
        WINDOW_UPDATE => "WINDOW_UPDATE",
        CONTINUATION => "CONTINUATION",
        _ => "unknown type",
    }
}

/// The name of a setting (RFC 9113 §6.5.2; 8 is RFC 8441's, 9 RFC 9218's).
pub fn setting_name(id: u16) -> &'static str {
    match id {
        0x1 => "SETTINGS_HEADER_TABLE_SIZE",
        0x2 => "SETTINGS_ENABLE_PUSH",
        0x3 => "SETTINGS_MAX_CONCURRENT_STREAMS",
        0x4 => "SETTINGS_INITIAL_WINDOW_SIZE",
        0x5 => "SETTINGS_MAX_FRAME_SIZE",
        0x6 => "SETTINGS_MAX_HEADER_LIST_SIZE",
        0x8 => "SETTINGS_ENABLE_CONNECT_PROTOCOL",
        0x9 => "SETTINGS_NO_RFC7540_PRIORITIES",
        _ => "an unknown setting",
    }
}

/// An error code in words (RFC 9113 §7).
pub fn error_code_text(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "an unknown code",
    };
    format!("0x{code:x} ({name})")
}

/// A flags byte in words, for its frame type.
fn flags_text(frame_type: u8, flags: u8) -> String {
    let known: &[(u8, &str)] = match frame_type {
        DATA => &[(FLAG_END_STREAM, "END_STREAM"), (FLAG_PADDED, "PADDED")],
        HEADERS => &[
            (FLAG_END_STREAM, "END_STREAM"),
            (FLAG_END_HEADERS, "END_HEADERS"),
            (FLAG_PADDED, "PADDED"),
            (FLAG_PRIORITY, "PRIORITY"),
        ],
        SETTINGS | PING => &[(FLAG_ACK, "ACK")],
        PUSH_PROMISE => &[(FLAG_END_HEADERS, "END_HEADERS"), (FLAG_PADDED, "PADDED")],
        CONTINUATION => &[(FLAG_END_HEADERS, "END_HEADERS")],
        _ => &[],
    };
    let mut names: Vec<String> = known
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, name)| (*name).to_owned())
        .collect();
    let other = known.iter().fold(flags, |f, (bit, _)| f & !bit);
    if other != 0 {
        names.push(format!("0x{other:02x} undefined"));
    }
    if names.is_empty() {
        format!("0x{flags:02x} (none)")
    } else {
        format!("0x{flags:02x} ({})", names.join(" | "))
    }
}

/// A cursor labelling a frame's payload from the front; `base` is the payload's offset in
/// the frame.
struct Cursor<'a, 'f> {
    bytes: &'a [u8],
    base: usize,
    at: usize,
    fields: &'f mut Vec<Field>,
}

impl<'a, 'f> Cursor<'a, 'f> {
    fn new(bytes: &'a [u8], base: usize, fields: &'f mut Vec<Field>) -> Self {
        Cursor {
            bytes,
            base,
            at: 0,
            fields,
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }

    /// Labels the next `len` bytes; what is left when fewer remain is labelled cut short
    /// (then `false`). `value` gets exactly `len` bytes.
    fn field(&mut self, len: usize, name: &str, value: impl FnOnce(&[u8]) -> String) -> bool {
        let rest = self.bytes.get(self.at..).unwrap_or_default();
        if rest.len() < len {
            if !rest.is_empty() {
                self.fields.push(field(
                    self.base + self.at,
                    rest.len(),
                    name,
                    format!("cut short: {} of {len} bytes", rest.len()),
                ));
                self.at = self.bytes.len();
            }
            return false;
        }
        let data = rest.get(..len).unwrap_or_default();
        self.fields
            .push(field(self.base + self.at, len, name, value(data)));
        self.at += len;
        true
    }

    /// `len` bytes as text (none labelled when `len` is 0).
    fn text(&mut self, len: usize, name: &str) {
        if len > 0 {
            self.field(len, name, |d| format!("{} ({} bytes)", text(d), d.len()));
        }
    }

    /// The pad length of a PADDED frame; returns where the content ends (before the
    /// padding), or `None` when the padding does not fit.
    fn padding(&mut self, flags: u8) -> Option<usize> {
        if flags & FLAG_PADDED == 0 {
            return Some(self.bytes.len());
        }
        let mut pad = 0;
        if !self.field(1, "pad length", |d| {
            pad = usize::from(d[0]);
            format!("{} bytes of padding at the end", d[0])
        }) {
            return None;
        }
        let end = self
            .bytes
            .len()
            .checked_sub(pad)
            .filter(|end| *end >= self.at);
        let Some(end) = end else {
            let rest = self.remaining();
            self.fields.push(field(
                self.base + self.at,
                rest,
                "unparsed",
                format!("the padding is longer than the {rest} bytes left"),
            ));
            self.at = self.bytes.len();
            return None;
        };
        Some(end)
    }

    /// The padding after the content, when there is any.
    fn pad_to_end(&mut self) {
        let rest = self.remaining();
        if rest > 0 {
            self.field(rest, "padding", |d| format!("{} bytes", d.len()));
        }
    }

    /// A stream dependency (exclusive bit and stream id).
    fn dependency(&mut self) {
        self.field(4, "stream dependency", |d| {
            let v = be32(d);
            let exclusive = if v & 0x8000_0000 != 0 {
                ", exclusive"
            } else {
                ""
            };
            format!("stream {}{exclusive}", v & 0x7fff_ffff)
        });
    }

    /// Labels whatever is left as `unparsed`.
    fn finish(self) {
        let rest = self.remaining();
        if rest > 0 {
            self.fields.push(field(
                self.base + self.at,
                rest,
                "unparsed",
                format!("{rest} bytes"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(unit: &Unit) -> Vec<&str> {
        unit.fields.iter().map(|f| f.name.as_str()).collect()
    }

    fn values(unit: &Unit) -> Vec<&str> {
        unit.fields.iter().map(|f| f.value.as_str()).collect()
    }

    /// A frame: header then payload.
    fn frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut b = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            frame_type,
            flags,
        ];
        b.extend_from_slice(&stream.to_be_bytes());
        b.extend_from_slice(payload);
        b
    }

    /// The fields cover the unit's bytes exactly, in order, without overlap.
    fn assert_tiles(unit: &Unit) {
        let mut at = 0;
        for f in &unit.fields {
            assert_eq!(f.offset, at, "{unit:?}");
            at += f.length;
        }
        assert_eq!(at, unit.bytes.len(), "{unit:?}");
    }

    #[test]
    fn the_preface_then_a_settings_frame() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend_from_slice(&[
            0x00, 0x00, 0x0c, // length 12
            0x04, // type SETTINGS
            0x00, // flags
            0x00, 0x00, 0x00, 0x00, // stream 0
            0x00, 0x02, 0x00, 0x00, 0x00, 0x00, // ENABLE_PUSH = 0
            0x00, 0x04, 0x00, 0x20, 0x00, 0x00, // INITIAL_WINDOW_SIZE = 2097152
        ]);
        let mut l = Labeller::new(Side::Client);
        // Fed one byte at a time: nothing is labelled before it is whole.
        let mut units = Vec::new();
        for b in &bytes {
            units.extend(l.feed(std::slice::from_ref(b)));
        }
        assert_eq!(l.pending(), 0);
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].kind, UnitKind::Preface);
        assert!(units[0].fields[0].value.contains("PRI * HTTP/2.0"));
        let s = &units[1];
        assert_eq!(s.title, "SETTINGS frame");
        assert_eq!(
            names(s),
            ["length", "type", "flags", "stream id", "setting", "setting"]
        );
        assert_eq!(
            values(s),
            [
                "12 (payload bytes after the header)",
                "0x4 (SETTINGS)",
                "0x00 (none)",
                "0 (the connection as a whole)",
                "SETTINGS_ENABLE_PUSH (0x2) = 0",
                "SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 2097152",
            ]
        );
        for u in &units {
            assert_tiles(u);
        }
    }

    #[test]
    fn a_server_has_no_preface_and_acks_are_named() {
        let mut l = Labeller::new(Side::Server);
        let units = l.feed(&frame(SETTINGS, FLAG_ACK, 0, &[]));
        assert_eq!(units[0].title, "SETTINGS frame (ACK)");
        assert_eq!(units[0].fields[2].value, "0x01 (ACK)");
    }

    /// RFC 7541 C.4.1: the first request, with Huffman coding.
    /// 82 (:method GET) 86 (:scheme http) 84 (:path /) 41 8c f1e3 c2e5 f23a 6ba0 ab90 f4ff
    /// (:authority www.example.com, literal with incremental indexing, name index 1).
    const C41: &[u8] = &[
        0x82, // indexed 2
        0x86, // indexed 6
        0x84, // indexed 4
        0x41, // literal, incremental indexing, name index 1
        0x8c, // value: Huffman, 12 bytes
        0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
    ];
    /// C.4.2: the second request on the same connection: 82 86 84 be (dynamic entry 62),
    /// 58 86 a8eb 1064 9cbf (cache-control: no-cache, literal, name index 24).
    const C42: &[u8] = &[
        0x82, 0x86, 0x84, 0xbe, // indexed 2, 6, 4, 62
        0x58, // literal, incremental indexing, name index 24
        0x86, // value: Huffman, 6 bytes
        0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
    ];
    /// C.3.3 (no Huffman): 82 87 85 bf (dynamic entry 63 after C.3.1 and C.3.2 — here fed
    /// alone, so out of range), then 40 0a "custom-key" 0c "custom-value".
    const LITERAL_NEW_NAME: &[u8] = &[
        0x40, // literal, incremental indexing, new name
        0x0a, b'c', b'u', b's', b't', b'o', b'm', b'-', b'k', b'e', b'y', // name
        0x0c, b'c', b'u', b's', b't', b'o', b'm', b'-', b'v', b'a', b'l', b'u', b'e', // value
    ];

    #[test]
    fn rfc7541_c4_requests_are_labelled_field_by_field() {
        let mut l = Labeller::new(Side::Server);
        let first = &l.feed(&frame(HEADERS, FLAG_END_HEADERS, 1, C41))[0];
        assert_tiles(first);
        assert_eq!(first.title, "HEADERS frame, stream 1");
        assert_eq!(first.fields[2].value, "0x04 (END_HEADERS)");
        assert_eq!(
            &names(first)[4..],
            [
                "HPACK indexed",
                "HPACK indexed",
                "HPACK indexed",
                "HPACK literal",
                "value length",
                "value"
            ]
        );
        assert_eq!(first.fields[4].value, ":method: GET (static table entry 2)");
        assert_eq!(
            first.fields[5].value,
            ":scheme: http (static table entry 6)"
        );
        assert_eq!(first.fields[6].value, ":path: / (static table entry 4)");
        assert_eq!(
            first.fields[7].value,
            ":authority: www.example.com (literal, added to the dynamic table; \
             name from static table entry 1)"
        );
        assert_eq!(first.fields[8].value, "12 bytes, Huffman-coded");
        assert_eq!(
            (first.fields[9].offset, first.fields[9].length),
            (9 + 5, 12)
        );
        assert_eq!(first.fields[9].value, "www.example.com");

        // The second request names the entry the first one added.
        let second = &l.feed(&frame(HEADERS, FLAG_END_HEADERS, 3, C42))[0];
        assert_tiles(second);
        assert_eq!(
            second.fields[7].value,
            ":authority: www.example.com (dynamic table entry 62)"
        );
        assert_eq!(
            second.fields[8].value,
            "cache-control: no-cache (literal, added to the dynamic table; \
             name from static table entry 24)"
        );
        assert_eq!(second.fields[10].value, "no-cache");
    }

    #[test]
    fn a_literal_name_gets_its_own_labels() {
        let mut l = Labeller::new(Side::Server);
        let u = &l.feed(&frame(HEADERS, FLAG_END_HEADERS, 1, LITERAL_NEW_NAME))[0];
        assert_tiles(u);
        assert_eq!(
            &names(u)[4..],
            [
                "HPACK literal",
                "name length",
                "name",
                "value length",
                "value"
            ]
        );
        assert_eq!(
            u.fields[4].value,
            "custom-key: custom-value (literal, added to the dynamic table; new name)"
        );
        assert_eq!(u.fields[5].value, "10 bytes, as is");
        assert_eq!(u.fields[6].value, "custom-key");
    }

    #[test]
    fn a_representation_cut_by_the_frame_end_goes_on_in_continuation() {
        let mut l = Labeller::new(Side::Server);
        let (head, tail) = C41.split_at(8); // inside the :authority value
        let mut bytes = frame(HEADERS, 0, 1, head);
        bytes.extend(frame(CONTINUATION, FLAG_END_HEADERS, 1, tail));
        let units = l.feed(&bytes);
        assert_eq!(units.len(), 2);
        for u in &units {
            assert_tiles(u);
        }
        let cut = units[0].fields.last().unwrap();
        assert_eq!(cut.value, "continues in the next CONTINUATION frame");
        assert_eq!(cut.length, 5);
        let rest = &units[1].fields[4];
        assert_eq!(rest.length, tail.len());
        assert!(
            rest.value
                .starts_with("(begun in the previous frame) :authority: www.example.com"),
            "{rest:?}"
        );
    }

    #[test]
    fn bad_hpack_is_labelled_not_decoded() {
        let mut l = Labeller::new(Side::Server);
        // Index 0 is not an entry; index 70 is past an empty dynamic table.
        let u = &l.feed(&frame(HEADERS, FLAG_END_HEADERS, 1, &[0x80, 0xc6]))[0];
        assert_tiles(u);
        assert!(u.fields[4].value.contains("cannot be decoded"), "{u:?}");
        assert!(u.fields[5].value.contains("cannot be decoded"), "{u:?}");
        // A block ending inside a string.
        let u = &l.feed(&frame(HEADERS, FLAG_END_HEADERS, 3, &[0x41, 0x8c, 0xf1]))[0];
        assert_tiles(u);
        assert_eq!(
            u.fields[4].value,
            "cannot be read: cut short: the header block ends inside it"
        );
        // A size update (§6.3) sets the table size; a huge one is bounded.
        let u = &l.feed(&frame(HEADERS, FLAG_END_HEADERS, 5, &[0x3f, 0xe1, 0x1f]))[0];
        assert_eq!(u.fields[4].name, "HPACK table size");
        assert_eq!(
            u.fields[4].value,
            "dynamic table size update: at most 4096 bytes"
        );
    }

    #[test]
    fn data_window_update_rst_stream_goaway_and_ping() {
        let mut l = Labeller::new(Side::Server);
        let body = br#"{"reason":"Unregistered","timestamp":1700000000000}"#;
        let mut bytes = frame(DATA, FLAG_END_STREAM, 1, body);
        bytes.extend(frame(WINDOW_UPDATE, 0, 0, &[0x00, 0x00, 0xff, 0xff]));
        bytes.extend(frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        let mut goaway = vec![0, 0, 0, 1, 0, 0, 0, 0];
        goaway.extend_from_slice(br#"{"reason":"Shutdown"}"#);
        bytes.extend(frame(GOAWAY, 0, 0, &goaway));
        bytes.extend(frame(PING, FLAG_ACK, 0, &[1, 2, 3, 4, 5, 6, 7, 8]));
        let units = l.feed(&bytes);
        assert_eq!(units.len(), 5);
        for u in &units {
            assert_tiles(u);
        }
        assert_eq!(units[0].title, "DATA frame, stream 1");
        assert_eq!(units[0].fields[2].value, "0x01 (END_STREAM)");
        assert_eq!(
            units[0].fields[4].value,
            r#"{"reason":"Unregistered","timestamp":1700000000000} (51 bytes)"#
        );
        assert_eq!(units[1].fields[4].value, "65535 bytes more may be sent");
        assert_eq!(units[2].fields[4].value, "0x8 (CANCEL)");
        assert_eq!(
            values(&units[3])[4..],
            [
                "1 (the last of the other side's streams it acted on)",
                "0x0 (NO_ERROR)",
                r#"{"reason":"Shutdown"} (21 bytes)"#
            ]
        );
        assert_eq!(units[4].title, "PING frame (ACK)");
        assert_eq!(units[4].fields[4].value, "0102030405060708");
    }

    #[test]
    fn padding_priority_and_wrong_sizes() {
        let mut l = Labeller::new(Side::Server);
        // PADDED | PRIORITY | END_HEADERS: pad length 2, dependency (exclusive, 3), weight
        // 16, one indexed field, 2 bytes of padding.
        let payload = [2, 0x80, 0, 0, 3, 15, 0x82, 0, 0];
        let u = &l.feed(&frame(HEADERS, 0x2c, 1, &payload))[0];
        assert_tiles(u);
        assert_eq!(
            &names(u)[4..],
            [
                "pad length",
                "stream dependency",
                "weight",
                "HPACK indexed",
                "padding"
            ]
        );
        assert_eq!(u.fields[5].value, "stream 3, exclusive");
        assert_eq!(u.fields[6].value, "16");
        // A WINDOW_UPDATE of 3 bytes, padding longer than the frame, an unknown type.
        let mut bytes = frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1]);
        bytes.extend(frame(DATA, FLAG_PADDED, 1, &[9, b'x']));
        bytes.extend(frame(0xfa, 0xff, 0x8000_0001, &[1, 2]));
        let units = l.feed(&bytes);
        for u in &units {
            assert_tiles(u);
        }
        assert_eq!(units[0].fields[4].value, "cut short: 3 of 4 bytes");
        assert_eq!(units[1].fields[5].name, "unparsed");
        assert_eq!(units[2].fields[1].value, "0xfa (unknown type)");
        assert_eq!(units[2].fields[2].value, "0xff (0xff undefined)");
        assert_eq!(units[2].fields[3].value, "1 (reserved bit set)");
        assert_eq!(units[2].fields[4].name, "unparsed");
    }

    #[test]
    fn an_over_long_frame_is_counted_not_held() {
        let mut l = Labeller::new(Side::Server);
        let len = MAX_HELD_PAYLOAD + 1;
        let mut bytes = frame(DATA, 0, 1, &vec![b'a'; len]);
        bytes.extend(frame(PING, 0, 0, &[0; 8]));
        let units = l.feed(&bytes);
        assert_eq!(units.len(), 2);
        assert_eq!(units[0].bytes.len(), FRAME_HEADER_LEN);
        assert_eq!(units[0].total, FRAME_HEADER_LEN + len);
        assert!(units[0].fields[4].value.contains("not shown"));
        assert_eq!(units[1].title, "PING frame");
        assert_eq!(l.pending(), 0);
    }

    #[test]
    fn a_wrong_preface_is_said_to_be_wrong() {
        let mut l = Labeller::new(Side::Client);
        let units = l.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(units[0].fields[0].value.ends_with("(not the preface)"));
    }

    /// A small deterministic generator (xorshift), so the test needs no new crate.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn random_bytes_never_panic_and_every_field_stays_in_its_unit() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..400 {
            let side = if round % 2 == 0 {
                Side::Client
            } else {
                Side::Server
            };
            let mut l = Labeller::new(side);
            let mut units = Vec::new();
            for _ in 0..8 {
                let len = (xorshift(&mut seed) % 64) as usize;
                let mut chunk: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
                // Now and then a plausible small frame header, so payload labellers and
                // HPACK run too, not only the length check.
                if chunk.len() > 9 && xorshift(&mut seed).is_multiple_of(2) {
                    chunk[0] = 0;
                    chunk[1] = 0;
                    chunk[2] = (xorshift(&mut seed) % 40) as u8;
                    chunk[3] = (xorshift(&mut seed) % 11) as u8;
                }
                units.extend(l.feed(&chunk));
            }
            for u in &units {
                for f in &u.fields {
                    assert!(f.offset + f.length <= u.bytes.len(), "{u:?}");
                }
            }
        }
        // Random HPACK blocks alone, in HEADERS frames that end them.
        for _ in 0..2000 {
            let len = (xorshift(&mut seed) % 48) as usize;
            let block: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
            let mut l = Labeller::new(Side::Server);
            for u in l.feed(&frame(HEADERS, FLAG_END_HEADERS, 1, &block)) {
                assert_tiles(&u);
            }
        }
    }
}

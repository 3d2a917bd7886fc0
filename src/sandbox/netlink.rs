//! The one rtnetlink exchange `apns-sim run` needs: "set the loopback interface up" and the
//! kernel's answer. Pure bytes in both directions (the socket is in `namespace.rs`), so
//! the layout is unit-tested here. A fresh network namespace holds only `lo`, and it is
//! down: nothing listens or connects on 127.0.0.1 until it is up.
//!
//! Netlink headers are in the host's byte order (netlink(7)), hence `to_ne_bytes`.
//!
//! | bytes | field | value |
//! |---|---|---|
//! | 0..4 | nlmsghdr.nlmsg_len | 32, the whole message |
//! | 4..6 | nlmsg_type | 16, RTM_NEWLINK |
//! | 6..8 | nlmsg_flags | 0x5, NLM_F_REQUEST \| NLM_F_ACK |
//! | 8..12 | nlmsg_seq | the caller's sequence number |
//! | 12..16 | nlmsg_pid | 0 (the kernel fills in the sender) |
//! | 16 | ifinfomsg.ifi_family | 0, AF_UNSPEC |
//! | 17 | padding | 0 |
//! | 18..20 | ifi_type | 0 |
//! | 20..24 | ifi_index | the interface's index |
//! | 24..28 | ifi_flags | 1, IFF_UP |
//! | 28..32 | ifi_change | 1, only IFF_UP changes |
//!
//! The answer is an NLMSG_ERROR message (type 2): its header, then an `i32` that is 0 for
//! success or a negative errno, then the request's header echoed.

/// Length of `struct nlmsghdr`.
const HEADER_LEN: usize = 16;
/// Length of the request: the header and `struct ifinfomsg` (16 bytes).
pub(crate) const LINK_UP_LEN: usize = HEADER_LEN + 16;
/// `RTM_NEWLINK`: create or change a link.
const RTM_NEWLINK: u16 = 16;
/// `NLMSG_ERROR`: the kernel's acknowledgement (error 0) or refusal.
const NLMSG_ERROR: u16 = 2;
/// `NLM_F_REQUEST | NLM_F_ACK`: a request, answered even when it succeeds.
const REQUEST_WITH_ACK: u16 = 0x1 | 0x4;
/// `IFF_UP`.
const IFF_UP: u32 = 1;

/// The RTM_NEWLINK request that sets interface `index` up (see the table above).
pub(crate) fn link_up_request(index: u32, seq: u32) -> [u8; LINK_UP_LEN] {
    let mut m = [0u8; LINK_UP_LEN];
    m[0..4].copy_from_slice(&(LINK_UP_LEN as u32).to_ne_bytes());
    m[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    m[6..8].copy_from_slice(&REQUEST_WITH_ACK.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // 12..16 pid 0, 16 family AF_UNSPEC, 17 padding, 18..20 type: zero.
    m[20..24].copy_from_slice(&index.to_ne_bytes());
    m[24..28].copy_from_slice(&IFF_UP.to_ne_bytes());
    m[28..32].copy_from_slice(&IFF_UP.to_ne_bytes());
    m
}

/// What the kernel answered, when it is not a plain success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckError {
    /// Fewer bytes than a header and an error code, or a length field that overruns them.
    Short(usize),
    /// A message of another type than NLMSG_ERROR.
    NotAnAck(u16),
    /// An answer to another request (sequence number).
    OtherRequest(u32),
    /// The kernel refused: this errno (positive).
    Refused(i32),
}

/// Reads the kernel's answer to the request numbered `seq`: `Ok` when it acknowledged.
pub(crate) fn parse_ack(buf: &[u8], seq: u32) -> Result<(), AckError> {
    let u32_at = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    if buf.len() < HEADER_LEN + 4 {
        return Err(AckError::Short(buf.len()));
    }
    let len = u32_at(0) as usize;
    if len < HEADER_LEN + 4 || len > buf.len() {
        return Err(AckError::Short(len));
    }
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind != NLMSG_ERROR {
        return Err(AckError::NotAnAck(kind));
    }
    let answered = u32_at(8);
    if answered != seq {
        return Err(AckError::OtherRequest(answered));
    }
    match u32_at(HEADER_LEN) as i32 {
        0 => Ok(()),
        e => Err(AckError::Refused(e.saturating_neg())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    fn the_request_sets_only_iff_up_on_the_index() {
        #[rustfmt::skip]
        let expected: [u8; 32] = [
            0x20, 0x00, 0x00, 0x00, // nlmsg_len 32
            0x10, 0x00,             // nlmsg_type RTM_NEWLINK
            0x05, 0x00,             // nlmsg_flags REQUEST | ACK
            0x07, 0x00, 0x00, 0x00, // nlmsg_seq 7
            0x00, 0x00, 0x00, 0x00, // nlmsg_pid 0
            0x00,                   // ifi_family AF_UNSPEC
            0x00,                   // padding
            0x00, 0x00,             // ifi_type
            0x01, 0x00, 0x00, 0x00, // ifi_index 1 (lo)
            0x01, 0x00, 0x00, 0x00, // ifi_flags IFF_UP
            0x01, 0x00, 0x00, 0x00, // ifi_change IFF_UP
        ];
        assert_eq!(link_up_request(1, 7), expected);
    }

    /// An NLMSG_ERROR answer to request `seq` with `error`, the request echoed.
    fn ack(seq: u32, error: i32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&36u32.to_ne_bytes()); // length: header, error, echoed header
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&error.to_ne_bytes());
        m.extend_from_slice(&link_up_request(1, seq)[..HEADER_LEN]);
        m
    }

    #[test]
    fn an_ack_is_success_and_a_negative_errno_a_refusal() {
        assert_eq!(parse_ack(&ack(7, 0), 7), Ok(()));
        assert_eq!(parse_ack(&ack(7, -1), 7), Err(AckError::Refused(1)));
        assert_eq!(parse_ack(&ack(8, 0), 7), Err(AckError::OtherRequest(8)));
    }

    #[test]
    fn short_or_foreign_answers_are_errors_not_panics() {
        let full = ack(7, 0);
        for cut in 0..HEADER_LEN + 4 {
            assert_eq!(parse_ack(&full[..cut], 7), Err(AckError::Short(cut)));
        }
        let mut overlong = full.clone();
        overlong[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        assert_eq!(parse_ack(&overlong, 7), Err(AckError::Short(1000)));
        let mut other = full;
        other[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        assert_eq!(parse_ack(&other, 7), Err(AckError::NotAnAck(RTM_NEWLINK)));
    }
}

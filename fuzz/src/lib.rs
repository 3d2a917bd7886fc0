//! Checks shared by the fuzz targets of apns-sim (one target per decoder, in `fuzz_targets/`).
//!
//! Every stream decoder of `src/protocol/` has the same contract: `Ok(None)` while a frame is
//! incomplete, consuming nothing, and once a frame has decoded, every shorter prefix of it is
//! `Ok(None)` too (a decoder that refuses a prefix but accepts the whole frame, or accepts a
//! different frame from a prefix, would split the stream differently depending on how TCP cut
//! it). [`prefixes`] picks the prefixes the targets try, so a long frame costs a bounded number
//! of decodes per execution.

use std::fmt::Debug;

/// Most prefixes of one frame a target decodes again (all of them for short frames): keeps
/// an execution linear in the input instead of quadratic, so libFuzzer stays fast.
pub const MAX_PREFIXES: usize = 48;

/// Prefix lengths `0..len` to try: every one when `len <= MAX_PREFIXES`, else the first and
/// last few and evenly spaced ones between.
pub fn prefixes(len: usize) -> Vec<usize> {
    if len <= MAX_PREFIXES {
        return (0..len).collect();
    }
    let edge = MAX_PREFIXES / 4;
    let mut out: Vec<usize> = (0..edge).chain(len - edge..len).collect();
    let step = len / (MAX_PREFIXES - 2 * edge);
    out.extend((1..MAX_PREFIXES - 2 * edge).map(|i| i * step));
    out.sort_unstable();
    out.dedup();
    out
}

/// Asserts `decode` reports "need more bytes" for every tried prefix of `frame`, a byte
/// string the same decoder accepted whole.
pub fn assert_prefixes_incomplete<T: Debug, E: Debug>(
    frame: &[u8],
    mut decode: impl FnMut(&[u8]) -> Result<Option<T>, E>,
) {
    for len in prefixes(frame.len()) {
        let verdict = decode(&frame[..len]);
        assert!(
            matches!(verdict, Ok(None)),
            "a {len}-byte prefix of a {}-byte frame that decodes gave {verdict:?}, not Ok(None)",
            frame.len()
        );
    }
}

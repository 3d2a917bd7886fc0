//! A small bounds-checked cursor over untrusted bytes (in the spirit of rustls's `Reader`).
//!
//! Every read returns `None` instead of panicking when the input is too short, so decoders can
//! turn "not enough bytes" into either `Ok(None)` (wait for more) or a precise error, and no
//! decoder ever indexes into a buffer directly.

/// A forward-only cursor over a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    /// The bytes not read yet.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading at the front of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    /// How many bytes are left to read.
    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    /// Takes the next `n` bytes, or `None` (consuming nothing) if fewer are left.
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.rest.split_at_checked(n)?;
        self.rest = tail;
        Some(head)
    }

    /// Takes the next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.take(N)?;
        bytes.try_into().ok()
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    /// Reads a big-endian `u16`.
    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    /// Reads a big-endian `u32`.
    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }

    /// Reads a big-endian `u64`.
    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::Reader;

    #[test]
    fn reads_big_endian_fields_in_order() {
        let bytes = [
            0x01, // u8 1
            0x01, 0x02, // u16 0x0102
            0x00, 0x00, 0x01, 0x00, // u32 256
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, // u64 7
            0xAA, 0xBB, // two bytes left
        ];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Some(1));
        assert_eq!(r.u16(), Some(0x0102));
        assert_eq!(r.u32(), Some(256));
        assert_eq!(r.u64(), Some(7));
        assert_eq!(r.remaining(), 2);
        assert_eq!(r.take(2), Some(&[0xAA, 0xBB][..]));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn short_reads_return_none_and_consume_nothing() {
        let bytes = [0x01, 0x02, 0x03];
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32(), None);
        assert_eq!(r.remaining(), 3);
        assert_eq!(r.take(4), None);
        assert_eq!(r.u64(), None);
        assert_eq!(r.array::<3>(), Some([1, 2, 3]));
        assert_eq!(r.u8(), None);
        assert_eq!(r.take(0), Some(&[][..]));
    }

    #[test]
    fn huge_take_does_not_overflow() {
        let mut r = Reader::new(&[0x00]);
        assert_eq!(r.take(usize::MAX), None);
        assert_eq!(r.remaining(), 1);
    }
}

//! Which chunks of an artifact a process holds, verified: the bitmap a
//! download fills in as chunks check out and a server reads to decide what
//! it may answer (`?have` and `Range` requests of a partial holder).
//!
//! Shared between threads without a lock: one bit per chunk in atomic
//! words, set once and never cleared (a chunk is only marked after its
//! bytes verified and were written). The wire form is BitTorrent's
//! bitfield: chunk 0 is the high bit of the first byte, spare bits zero.
//! This module does not download or serve anything.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The verified chunks of one artifact.
#[derive(Debug)]
pub struct Held {
    words: Vec<AtomicU64>,
    chunks: usize,
    count: AtomicUsize,
}

impl Held {
    /// Nothing held yet, of `chunks` chunks.
    pub fn empty(chunks: usize) -> Held {
        Held {
            words: (0..chunks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            chunks,
            count: AtomicUsize::new(0),
        }
    }

    /// Everything held: a whole, verified file.
    pub fn full(chunks: usize) -> Held {
        let held = Held::empty(chunks);
        for i in 0..chunks {
            held.set(i);
        }
        held
    }

    /// How many chunks the artifact has.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// How many are held.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// True when every chunk is held.
    pub fn is_full(&self) -> bool {
        self.count() == self.chunks
    }

    /// True when chunk `i` is held (false past the end).
    pub fn has(&self, i: usize) -> bool {
        i < self.chunks && self.words[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// True when chunks `first..=last` are all held.
    pub fn has_all(&self, first: usize, last: usize) -> bool {
        first <= last && (first..=last).all(|i| self.has(i))
    }

    /// Marks chunk `i` held (once its bytes are verified and in place).
    pub fn set(&self, i: usize) {
        if i >= self.chunks {
            return;
        }
        let old = self.words[i / 64].fetch_or(1 << (i % 64), Ordering::AcqRel);
        if old & (1 << (i % 64)) == 0 {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The wire form: `ceil(chunks / 8)` bytes, chunk 0 the high bit.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.chunks.div_ceil(8)];
        for i in (0..self.chunks).filter(|&i| self.has(i)) {
            out[i / 8] |= 0x80 >> (i % 8);
        }
        out
    }
}

/// A bitmap another holder sent: `None` unless it is exactly
/// `ceil(chunks / 8)` bytes with the spare bits zero.
pub fn parse_have(bytes: &[u8], chunks: usize) -> Option<Vec<bool>> {
    if bytes.len() != chunks.div_ceil(8) {
        return None;
    }
    let bit = |i: usize| bytes[i / 8] & (0x80 >> (i % 8)) != 0;
    if (chunks..bytes.len() * 8).any(bit) {
        return None;
    }
    Some((0..chunks).map(bit).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_round_trip_through_the_wire_form() {
        let held = Held::empty(11);
        assert_eq!(held.to_bytes(), vec![0, 0]);
        for i in [0, 7, 8, 10, 10, 99] {
            held.set(i);
        }
        assert_eq!(held.count(), 4);
        assert_eq!(held.to_bytes(), vec![0x81, 0xa0]);
        assert!(held.has(10) && !held.has(9) && !held.has(99));
        assert!(held.has_all(7, 8) && !held.has_all(7, 9));
        let parsed = parse_have(&held.to_bytes(), 11).unwrap();
        assert_eq!(
            (0..11).filter(|&i| parsed[i]).collect::<Vec<_>>(),
            vec![0, 7, 8, 10]
        );
        assert!(Held::full(130).is_full());
        assert_eq!(Held::full(9).to_bytes(), vec![0xff, 0x80]);
    }

    #[test]
    fn malformed_bitmaps_are_refused() {
        assert!(parse_have(&[0xff], 9).is_none(), "too short");
        assert!(parse_have(&[0xff, 0x80, 0], 9).is_none(), "too long");
        assert!(parse_have(&[0xff, 0x40], 9).is_none(), "spare bit set");
        assert_eq!(parse_have(&[], 0), Some(vec![]));
    }
}

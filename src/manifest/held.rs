//! Which chunks of an artifact a process holds, verified: the bitmap a
//! download fills in as chunks check out and a server reads to decide what
//! it may answer (`?have` and `Range` requests of a partial holder).
//!
//! Shared between threads without a lock: one bit per chunk in atomic
//! words, set once and never cleared (a chunk is only marked after its
//! bytes verified and were written). Beside it, the chunks being fetched
//! right now ("coming"): other boards leave those to this one rather than
//! ask the origin for them too.
//!
//! The wire form (`?have`) is BitTorrent's bitfield of the chunks held —
//! chunk 0 the high bit of the first byte, spare bits zero — followed, from
//! a holder still downloading, by the same form of the chunks coming.
//! This module does not download or serve anything.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The verified chunks of one artifact.
#[derive(Debug)]
pub struct Held {
    words: Vec<AtomicU64>,
    coming: Vec<AtomicU64>,
    chunks: usize,
    count: AtomicUsize,
}

impl Held {
    /// Nothing held yet, of `chunks` chunks.
    pub fn empty(chunks: usize) -> Held {
        let zeros = || {
            (0..chunks.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect()
        };
        Held {
            words: zeros(),
            coming: zeros(),
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

    /// Marks chunk `i` as being fetched now (`true`) or no longer.
    pub fn set_coming(&self, i: usize, coming: bool) {
        if i >= self.chunks {
            return;
        }
        let bit = 1 << (i % 64);
        if coming {
            self.coming[i / 64].fetch_or(bit, Ordering::AcqRel);
        } else {
            self.coming[i / 64].fetch_and(!bit, Ordering::AcqRel);
        }
    }

    fn is_coming(&self, i: usize) -> bool {
        i < self.chunks && self.coming[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// The bitfield of the chunks held: `ceil(chunks / 8)` bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        bitfield(self.chunks, |i| self.has(i))
    }

    /// The `?have` answer: the chunks held, then those coming (none once
    /// everything is held).
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out = self.to_bytes();
        if !self.is_full() {
            out.extend(bitfield(self.chunks, |i| self.is_coming(i) && !self.has(i)));
        }
        out
    }
}

fn bitfield(chunks: usize, bit: impl Fn(usize) -> bool) -> Vec<u8> {
    let mut out = vec![0u8; chunks.div_ceil(8)];
    for i in (0..chunks).filter(|&i| bit(i)) {
        out[i / 8] |= 0x80 >> (i % 8);
    }
    out
}

/// What another holder says it has (`?have`): the chunks held and those
/// coming. `None` unless it is one or two bitfields of exactly
/// `ceil(chunks / 8)` bytes with the spare bits zero.
pub fn parse_have(bytes: &[u8], chunks: usize) -> Option<(Vec<bool>, Vec<bool>)> {
    let len = chunks.div_ceil(8);
    let one = |bytes: &[u8]| {
        let bit = |i: usize| bytes[i / 8] & (0x80 >> (i % 8)) != 0;
        if (chunks..bytes.len() * 8).any(bit) {
            return None;
        }
        Some((0..chunks).map(bit).collect::<Vec<bool>>())
    };
    match bytes.len() {
        n if n == len => Some((one(bytes)?, vec![false; chunks])),
        n if n == 2 * len && len > 0 => Some((one(&bytes[..len])?, one(&bytes[len..])?)),
        _ => None,
    }
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
        let parsed = parse_have(&held.to_bytes(), 11).unwrap().0;
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
        assert!(parse_have(&[0xff, 0x80, 0], 9).is_none(), "between sizes");
        assert!(parse_have(&[0xff, 0x40], 9).is_none(), "spare bit set");
        assert!(
            parse_have(&[0xff, 0x80, 0, 0x40], 9).is_none(),
            "spare bit coming"
        );
        assert_eq!(parse_have(&[], 0), Some((vec![], vec![])));
    }

    #[test]
    fn a_holder_still_downloading_says_what_is_coming() {
        let held = Held::empty(3);
        held.set(0);
        held.set_coming(1, true);
        held.set_coming(2, true);
        held.set_coming(2, false);
        assert_eq!(held.to_wire(), vec![0x80, 0x40]);
        let (have, coming) = parse_have(&held.to_wire(), 3).unwrap();
        assert_eq!(
            (have, coming),
            (vec![true, false, false], vec![false, true, false])
        );
        held.set(1);
        held.set(2);
        assert_eq!(
            held.to_wire(),
            vec![0xe0],
            "nothing coming once all is held"
        );
    }
}

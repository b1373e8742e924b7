//! Counts per key, for fairness decisions: how many connections each
//! address holds (the HTTP budget), how many stored records each peer sent
//! (the DHT store). Keys whose count drops to zero are forgotten, so a
//! tally stays as small as what it counts.

use std::collections::HashMap;
use std::hash::Hash;

/// How many of something each key holds.
#[derive(Debug)]
pub struct Tally<K>(HashMap<K, usize>);

impl<K> Default for Tally<K> {
    fn default() -> Self {
        Tally(HashMap::new())
    }
}

impl<K: Hash + Eq + Copy> Tally<K> {
    /// One more for `key`.
    pub fn add(&mut self, key: K) {
        *self.0.entry(key).or_insert(0) += 1;
    }

    /// One fewer for `key` (nothing if it holds none).
    pub fn sub(&mut self, key: K) {
        if let Some(n) = self.0.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&key);
            }
        }
    }

    /// How many `key` holds.
    pub fn get(&self, key: &K) -> usize {
        self.0.get(key).copied().unwrap_or(0)
    }

    /// The key holding the most, and how many.
    pub fn heaviest(&self) -> Option<(K, usize)> {
        self.0
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(k, n)| (*k, *n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_and_down_and_forgets_zeros() {
        let mut t = Tally::default();
        t.add('a');
        t.add('a');
        t.add('b');
        assert_eq!(t.heaviest(), Some(('a', 2)));
        t.sub('a');
        t.sub('a');
        t.sub('z');
        assert_eq!((t.get(&'a'), t.get(&'b')), (0, 1));
        assert_eq!(t.0.len(), 1);
    }
}

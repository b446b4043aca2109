//! Keyed hashing and a hash index of slots: how the registration table and
//! the endpoint find a device by name or by address without a B-tree node
//! (and a copy of the key) per entry. The index holds only `(hash, slot)`
//! pairs; the keys stay in the slots, and the caller says whether a slot's
//! key is the one sought.

use alloc::vec::Vec;
use core::hash::{Hash, Hasher};

/// One SipRound.
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

fn sip_init(key: [u64; 2]) -> [u64; 4] {
    [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ]
}

/// SipHash-2-4 of one 64-bit word (a keyed pseudo-random function: the
/// endpoint's tokens).
pub(crate) fn siphash24(key: [u64; 2], message: u64) -> u64 {
    let mut v = sip_init(key);
    for word in [message, 8u64 << 56] {
        v[3] ^= word;
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= word;
    }
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// SipHash-1-3 as a [`Hasher`], under a caller's key: names and addresses
/// that arrive from the network cannot be chosen to collide by whoever does
/// not know the key.
pub(crate) struct SipHasher13 {
    v: [u64; 4],
    tail: u64,
    tail_len: u32,
    length: u64,
}

impl SipHasher13 {
    pub(crate) fn new(key: [u64; 2]) -> SipHasher13 {
        SipHasher13 { v: sip_init(key), tail: 0, tail_len: 0, length: 0 }
    }

    fn compress(&mut self, word: u64) {
        self.v[3] ^= word;
        sip_round(&mut self.v);
        self.v[0] ^= word;
    }
}

impl Hasher for SipHasher13 {
    fn write(&mut self, mut bytes: &[u8]) {
        self.length = self.length.wrapping_add(bytes.len() as u64);
        if self.tail_len != 0 {
            let take = bytes.len().min(8 - self.tail_len as usize);
            self.tail |= load_le(&bytes[..take]) << (8 * self.tail_len);
            self.tail_len += take as u32;
            bytes = &bytes[take..];
            if self.tail_len < 8 {
                return;
            }
            let word = core::mem::take(&mut self.tail);
            self.tail_len = 0;
            self.compress(word);
        }
        let mut words = bytes.chunks_exact(8);
        for chunk in &mut words {
            self.compress(load_le(chunk));
        }
        let rest = words.remainder();
        self.tail = load_le(rest);
        self.tail_len = rest.len() as u32;
    }

    // Integers (an address's words, a `str`'s end marker) go into the tail
    // word at once when they fit, as their little-endian bytes would.
    #[inline]
    fn write_u8(&mut self, value: u8) {
        self.write_word(u64::from(value), 1);
    }

    #[inline]
    fn write_u16(&mut self, value: u16) {
        self.write_word(u64::from(value), 2);
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        self.write_word(u64::from(value), 4);
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.write(&value.to_le_bytes());
    }

    #[inline]
    fn write_usize(&mut self, value: usize) {
        self.write(&value.to_le_bytes());
    }

    fn finish(&self) -> u64 {
        let mut v = self.v;
        let last = (self.length << 56) | self.tail;
        v[3] ^= last;
        sip_round(&mut v);
        v[0] ^= last;
        v[2] ^= 0xff;
        for _ in 0..3 {
            sip_round(&mut v);
        }
        v[0] ^ v[1] ^ v[2] ^ v[3]
    }
}

impl SipHasher13 {
    /// The `len` (1 to 4) low bytes of `value`, as `write` of their
    /// little-endian bytes would take them.
    #[inline]
    fn write_word(&mut self, value: u64, len: u32) {
        if self.tail_len + len < 8 {
            self.tail |= value << (8 * self.tail_len);
            self.tail_len += len;
            self.length = self.length.wrapping_add(u64::from(len));
        } else {
            self.write(&value.to_le_bytes()[..len as usize]);
        }
    }
}

/// Up to eight bytes as a little-endian word.
fn load_le(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = bytes.len().min(8);
    word[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(word)
}

/// The 32-bit hash an index files `value` under.
pub(crate) fn hash_of<T: Hash + ?Sized>(key: [u64; 2], value: &T) -> u32 {
    let mut hasher = SipHasher13::new(key);
    value.hash(&mut hasher);
    let hash = hasher.finish();
    (hash ^ (hash >> 32)) as u32
}

/// An open-addressing table (linear probing, backward-shift deletion) of
/// `(hash, slot)` pairs, packed as `hash << 32 | slot + 1` (0: empty). It is
/// at most 13/16 full, and shrinks when it is less than 1/8 full.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HashIndex {
    table: Vec<u64>,
    len: usize,
}

const MIN_CAPACITY: usize = 16;

impl HashIndex {
    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    /// The slot filed under `hash` whose key `is_key` accepts.
    pub(crate) fn find(&self, hash: u32, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.table.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut at = hash as usize & mask;
        // The table always has an empty entry: the probe ends.
        loop {
            let entry = self.table[at];
            if entry == 0 {
                return None;
            }
            let slot = (entry as u32).wrapping_sub(1);
            if (entry >> 32) as u32 == hash && is_key(slot) {
                return Some(slot);
            }
            at = (at + 1) & mask;
        }
    }

    /// Files `slot` under `hash` (the caller knows its key is not filed yet).
    pub(crate) fn insert(&mut self, hash: u32, slot: u32) {
        if (self.len + 1) * 16 > self.table.len() * 13 {
            self.resize((self.table.len() * 2).max(MIN_CAPACITY));
        }
        self.place(hash, slot);
        self.len += 1;
    }

    fn place(&mut self, hash: u32, slot: u32) {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        while self.table[at] != 0 {
            at = (at + 1) & mask;
        }
        self.table[at] = (u64::from(hash) << 32) | u64::from(slot + 1);
    }

    fn resize(&mut self, capacity: usize) {
        let old = core::mem::replace(&mut self.table, alloc::vec![0; capacity]);
        for entry in old.into_iter().filter(|e| *e != 0) {
            self.place((entry >> 32) as u32, (entry as u32).wrapping_sub(1));
        }
    }

    /// Removes `slot` filed under `hash`; false if it was not there.
    pub(crate) fn remove(&mut self, hash: u32, slot: u32) -> bool {
        if self.table.is_empty() {
            return false;
        }
        let mask = self.mask();
        let wanted = (u64::from(hash) << 32) | u64::from(slot + 1);
        let mut hole = hash as usize & mask;
        loop {
            match self.table[hole] {
                0 => return false,
                entry if entry == wanted => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        self.table[hole] = 0;
        // Backward shift: an entry after the hole moves into it when the
        // hole lies on its probe path (between its home and where it is).
        let mut at = (hole + 1) & mask;
        while self.table[at] != 0 {
            let home = (self.table[at] >> 32) as usize & mask;
            if at.wrapping_sub(home) & mask >= at.wrapping_sub(hole) & mask {
                self.table[hole] = self.table[at];
                self.table[at] = 0;
                hole = at;
            }
            at = (at + 1) & mask;
        }
        self.len -= 1;
        if self.table.len() > MIN_CAPACITY && self.len * 8 < self.table.len() {
            self.resize(self.table.len() / 2);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::format;
    use alloc::string::String;

    /// SipHash-2-4 of the reference paper's key 00..0f and message 00..07.
    #[test]
    fn siphash24_reference_vector() {
        let key = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        assert_eq!(siphash24(key, 0x0706_0504_0302_0100), 0x93f5_f579_9a93_2462);
    }

    /// The hasher's result does not depend on how the bytes are split into
    /// writes, and depends on the key and on the length.
    #[test]
    fn siphash13_in_pieces_is_siphash13_at_once() {
        let key = [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908];
        let message: alloc::vec::Vec<u8> = (0..15).collect();
        let mut whole = SipHasher13::new(key);
        whole.write(&message);
        for split in 0..message.len() {
            let mut pieces = SipHasher13::new(key);
            pieces.write(&message[..split]);
            pieces.write(&[]);
            pieces.write(&message[split..]);
            assert_eq!(pieces.finish(), whole.finish(), "split at {split}");
        }
        // Integer writes are the writes of their little-endian bytes.
        for lead in 0..9 {
            let mut ints = SipHasher13::new(key);
            let mut bytes = SipHasher13::new(key);
            ints.write(&message[..lead]);
            bytes.write(&message[..lead]);
            ints.write_u8(0xa1);
            ints.write_u16(0xb2c3);
            ints.write_u32(0xd4e5_f607);
            ints.write_u64(0x1829_3a4b_5c6d_7e8f);
            ints.write_usize(0x99);
            bytes.write(&[0xa1]);
            bytes.write(&0xb2c3u16.to_le_bytes());
            bytes.write(&0xd4e5_f607u32.to_le_bytes());
            bytes.write(&0x1829_3a4b_5c6d_7e8fu64.to_le_bytes());
            bytes.write(&0x99usize.to_le_bytes());
            assert_eq!(ints.finish(), bytes.finish(), "after {lead} bytes");
        }
        let mut other = SipHasher13::new([key[0] ^ 1, key[1]]);
        other.write(&message);
        assert_ne!(other.finish(), whole.finish());
        assert_ne!(SipHasher13::new(key).finish(), whole.finish());
    }

    /// The index against a B-tree map, through inserts and removals that
    /// collide (a tiny hash range), grow and shrink the table.
    #[test]
    fn index_agrees_with_a_map() {
        let mut index = HashIndex::default();
        let mut model: BTreeMap<u32, String> = BTreeMap::new();
        let names: alloc::vec::Vec<String> = (0..3000).map(|i| format!("device-{i}")).collect();
        // A weak hash: many names share one, so probes run long and wrap.
        let hash = |name: &str| (hash_of([1, 2], name) % 97) * 0x0101_0101;
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..40_000u32 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let slot = (state % 3000) as u32;
            let name = &names[slot as usize];
            let found = index.find(hash(name), |s| names[s as usize] == *name);
            assert_eq!(found, model.contains_key(&slot).then_some(slot), "step {step}");
            if found.is_some() && (step / 10_000) % 2 == 1 {
                assert!(index.remove(hash(name), slot));
                assert!(!index.remove(hash(name), slot));
                model.remove(&slot);
            } else if found.is_none() && (step / 10_000) % 2 == 0 {
                index.insert(hash(name), slot);
                model.insert(slot, name.clone());
            }
            assert_eq!(index.len(), model.len());
        }
        for (slot, name) in &model {
            assert_eq!(index.find(hash(name), |s| names[s as usize] == *name), Some(*slot));
        }
        assert!(index.table.len() >= MIN_CAPACITY && index.len() * 16 <= index.table.len() * 13);
    }
}

//! Data generators that both ends of a test can reproduce.
//!
//! - [`Chargen`]: the RFC 864 character generator stream: lines of 72
//!   printable ASCII characters (32..=126) plus CR LF, each line starting
//!   one character further along the 95-character ring.
//! - [`Payload`]: what [`crate::TcpSender`] sends: a fixed byte pattern or
//!   seeded pseudo-random bytes (SplitMix64), as a [`PayloadStream`].

/// Printable characters per chargen line, before CR LF.
pub const CHARGEN_LINE: usize = 72;
/// Bytes per chargen line, CR LF included.
pub const CHARGEN_LINE_BYTES: usize = CHARGEN_LINE + 2;
/// The printable ASCII ring: ' ' (32) to '~' (126).
const RING: usize = 95;
/// The stream repeats after this many bytes.
pub const CHARGEN_PERIOD: u64 = (RING * CHARGEN_LINE_BYTES) as u64;

/// The byte at `offset` of the chargen stream.
pub fn chargen_byte(offset: u64) -> u8 {
    let offset = offset % CHARGEN_PERIOD;
    let line = (offset / CHARGEN_LINE_BYTES as u64) as usize;
    let col = (offset % CHARGEN_LINE_BYTES as u64) as usize;
    match col {
        CHARGEN_LINE => b'\r',
        c if c > CHARGEN_LINE => b'\n',
        c => 32 + ((line + c) % RING) as u8,
    }
}

/// The chargen stream from some offset on.
#[derive(Clone, Debug, Default)]
pub struct Chargen {
    /// Bytes produced so far.
    pub offset: u64,
}

impl Chargen {
    pub fn new() -> Chargen {
        Chargen::default()
    }

    /// Fills `buf` with the next `buf.len()` bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let start = self.offset % CHARGEN_PERIOD;
        let mut line = (start / CHARGEN_LINE_BYTES as u64) as usize;
        let mut col = (start % CHARGEN_LINE_BYTES as u64) as usize;
        for b in buf.iter_mut() {
            *b = match col {
                CHARGEN_LINE => b'\r',
                c if c > CHARGEN_LINE => b'\n',
                c => 32 + ((line + c) % RING) as u8,
            };
            col += 1;
            if col == CHARGEN_LINE_BYTES {
                col = 0;
                line = (line + 1) % RING;
            }
        }
        self.offset += buf.len() as u64;
    }

    /// Checks `data` against the stream at the current offset and moves
    /// past it. Returns the offset of the first wrong byte, if any.
    pub fn check(&mut self, data: &[u8]) -> Result<(), u64> {
        let mut expected = [0u8; 256];
        for chunk in data.chunks(expected.len()) {
            let start = self.offset;
            let want = &mut expected[..chunk.len()];
            self.fill(want);
            if let Some(i) = chunk.iter().zip(want.iter()).position(|(a, b)| a != b) {
                return Err(start + i as u64);
            }
        }
        Ok(())
    }
}

/// What a sender sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Byte `i` is `i % 251`: easy to recognise, and a prime period shows
    /// misordered segments.
    Pattern,
    /// SplitMix64 output from this seed, little-endian.
    Seeded(u64),
}

impl Payload {
    pub fn stream(self) -> PayloadStream {
        PayloadStream {
            payload: self,
            offset: 0,
            state: match self {
                Payload::Pattern => 0,
                Payload::Seeded(seed) => seed,
            },
            word: [0; 8],
        }
    }
}

/// A [`Payload`] being produced.
#[derive(Clone, Debug)]
pub struct PayloadStream {
    payload: Payload,
    offset: u64,
    state: u64,
    word: [u8; 8],
}

impl PayloadStream {
    /// Bytes produced so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Fills `buf` with the next `buf.len()` bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        match self.payload {
            Payload::Pattern => {
                for (i, b) in buf.iter_mut().enumerate() {
                    *b = ((self.offset + i as u64) % 251) as u8;
                }
            }
            Payload::Seeded(_) => {
                // The rest of the current word, then whole words, then the
                // start of the next word (kept for the next call).
                let at = (self.offset % 8) as usize;
                let rest = if at == 0 { 0 } else { (8 - at).min(buf.len()) };
                let (head, body) = buf.split_at_mut(rest);
                head.copy_from_slice(&self.word[at..at + rest]);
                let mut words = body.chunks_exact_mut(8);
                for word in &mut words {
                    self.word = splitmix64(&mut self.state).to_le_bytes();
                    word.copy_from_slice(&self.word);
                }
                let tail = words.into_remainder();
                if !tail.is_empty() {
                    self.word = splitmix64(&mut self.state).to_le_bytes();
                    tail.copy_from_slice(&self.word[..tail.len()]);
                }
            }
        }
        self.offset += buf.len() as u64;
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use alloc::vec;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn chargen_starts_like_rfc_864() {
        let mut g = Chargen::new();
        let mut first = [0u8; 2 * CHARGEN_LINE_BYTES];
        g.fill(&mut first);
        let line1: Vec<u8> = (32u8..32 + 72).chain(*b"\r\n").collect();
        let line2: Vec<u8> = (33u8..33 + 72).chain(*b"\r\n").collect();
        assert_eq!(&first[..74], &line1[..]);
        assert_eq!(&first[74..], &line2[..]);
        assert_eq!(&first[..5], b" !\"#$");
        // Line 30 wraps from '~' back to ' ' after column 64.
        let at = |line: u64, col: u64| chargen_byte(line * 74 + col);
        assert_eq!(at(30, 0), 32 + 30);
        assert_eq!(at(30, 64), b'~');
        assert_eq!(at(30, 65), b' ');
        assert_eq!(at(30, 72), b'\r');
        assert_eq!(at(30, 73), b'\n');
        assert_eq!(at(95, 0), b' ');
    }

    #[test]
    fn chargen_has_period_95_lines() {
        let mut a = vec![0u8; CHARGEN_PERIOD as usize * 2];
        Chargen::new().fill(&mut a);
        assert_eq!(a[..CHARGEN_PERIOD as usize], a[CHARGEN_PERIOD as usize..]);
        assert!(a
            .iter()
            .all(|&b| (32..=126).contains(&b) || b == b'\r' || b == b'\n'));
    }

    proptest! {
        #[test]
        fn chargen_fill_in_pieces_matches_byte_fn(cuts in prop::collection::vec(0usize..9000, 1..8)) {
            let mut g = Chargen::new();
            let mut offset = 0u64;
            for len in cuts {
                let mut buf = vec![0u8; len];
                g.fill(&mut buf);
                for (i, b) in buf.iter().enumerate() {
                    prop_assert_eq!(*b, chargen_byte(offset + i as u64));
                }
                offset += len as u64;
            }
            let mut check = Chargen::new();
            let mut all = vec![0u8; offset as usize];
            Chargen::new().fill(&mut all);
            prop_assert_eq!(check.check(&all), Ok(()));
            if !all.is_empty() {
                let i = all.len() / 2;
                all[i] ^= 1;
                prop_assert_eq!(Chargen::new().check(&all), Err(i as u64));
            }
        }

        #[test]
        fn payload_streams_are_split_invariant(seed in any::<u64>(), cuts in prop::collection::vec(0usize..100, 1..8)) {
            for payload in [Payload::Pattern, Payload::Seeded(seed)] {
                let total: usize = cuts.iter().sum();
                let mut whole = vec![0u8; total];
                payload.stream().fill(&mut whole);
                let mut pieces = Vec::new();
                let mut s = payload.stream();
                for &len in &cuts {
                    let mut buf = vec![0u8; len];
                    s.fill(&mut buf);
                    pieces.extend_from_slice(&buf);
                }
                prop_assert_eq!(&pieces, &whole);
                prop_assert_eq!(s.offset(), total as u64);
            }
        }
    }

    #[test]
    fn seeded_fill_matches_splitmix64_words() {
        let mut state = 7u64;
        let want: Vec<u8> = (0..40)
            .flat_map(|_| splitmix64(&mut state).to_le_bytes())
            .collect();
        let mut s = Payload::Seeded(7).stream();
        let mut got = vec![0u8; want.len()];
        // Pieces that start and end inside words and span several.
        let mut at = 0;
        for len in [3, 5, 8, 1, 17, 0, 7, 100, 2] {
            s.fill(&mut got[at..at + len]);
            at += len;
        }
        s.fill(&mut got[at..]);
        assert_eq!(got, want);
    }

    #[test]
    fn seeds_differ_and_pattern_is_mod_251() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        Payload::Seeded(1).stream().fill(&mut a);
        Payload::Seeded(2).stream().fill(&mut b);
        assert_ne!(a, b);
        let mut p = [0u8; 600];
        Payload::Pattern.stream().fill(&mut p);
        assert_eq!(p[250], 250);
        assert_eq!(p[251], 0);
        assert_eq!(p[599], (599 % 251) as u8);
    }
}

//! Deterministic damage to an encoded H.264/H.265 stream (`--corrupt PROB --seed N`), for
//! fault-injection tests of RTSP clients.
//!
//! A pad probe on the RTP payloader's sink pad hands each encoded access unit to a
//! [`Corrupter`]. With probability PROB it damages the payload of one of the access unit's
//! slice (VCL) NAL units in one of three ways: flips 1–8 random bits, zeroes a run of 4–256
//! bytes, or truncates the NAL unit at a random point (a lost tail). Start codes / length
//! prefixes, NAL headers and parameter sets (SPS, PPS, VPS) are left intact, so the RTP
//! packetisation stays valid and the damage reaches the client's parser and decoder.
//!
//! The damage depends only on the seed and on the buffers seen: the same seed gives the
//! same damage to the same stream. Each RTSP media (a client session) starts a fresh
//! sequence from the seed.

use std::ops::Range;

/// How NAL units are delimited in a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// Annex B start codes (`stream-format=byte-stream`).
    AnnexB,
    /// Big-endian length prefixes of this many bytes (`avc`/`avc3`/`hvc1`/`hev1`).
    Length(usize),
}

/// What was done to an access unit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// `bits` bits flipped in the NAL unit starting at byte `nal`.
    Flip { nal: usize, bits: usize },
    /// `len` bytes zeroed from byte `at`.
    Zero { at: usize, len: usize },
    /// The NAL unit starting at byte `nal` cut by `removed` bytes.
    Truncate { nal: usize, removed: usize },
}

/// SplitMix64: tiny, good enough, and the same on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `range` (which must not be empty).
    pub fn below(&mut self, range: Range<usize>) -> usize {
        range.start + (self.next_u64() % (range.end - range.start) as u64) as usize
    }
}

/// Damages encoded access units with a fixed probability, deterministically.
#[derive(Clone, Debug)]
pub struct Corrupter {
    probability: f64,
    hevc: bool,
    rng: Rng,
}

impl Corrupter {
    pub fn new(probability: f64, seed: u64, hevc: bool) -> Self {
        Corrupter { probability, hevc, rng: Rng::new(seed) }
    }

    /// Maybe damages one access unit in place; says what it did.
    pub fn process(&mut self, data: &mut Vec<u8>, framing: Framing) -> Option<Damage> {
        // one draw per buffer whatever happens, so the decisions do not depend on the content
        if self.rng.unit() >= self.probability {
            return None;
        }
        let header = if self.hevc { 2 } else { 1 };
        let slices: Vec<Nal> =
            nal_units(data, framing).into_iter().filter(|n| n.len() > header && self.is_slice(data[n.start])).collect();
        if slices.is_empty() {
            return None;
        }
        let nal = &slices[self.rng.below(0..slices.len())];
        let payload = nal.start + header..nal.end;
        Some(match self.rng.below(0..3) {
            0 => {
                let bits = self.rng.below(1..9);
                for _ in 0..bits {
                    let at = self.rng.below(payload.clone());
                    data[at] ^= 1 << self.rng.below(0..8);
                }
                Damage::Flip { nal: nal.start, bits }
            }
            1 => {
                let len = self.rng.below(4..257).min(payload.len());
                let at = self.rng.below(payload.start..payload.end - len + 1);
                data[at..at + len].fill(0);
                Damage::Zero { at, len }
            }
            _ => {
                // keep at least one payload byte, so the NAL unit stays well-formed
                let cut = self.rng.below(payload.start + 1..payload.end.max(payload.start + 2));
                let removed = payload.end.saturating_sub(cut);
                if removed == 0 {
                    return None;
                }
                data.drain(cut..payload.end);
                if let (Framing::Length(n), Some(prefix)) = (framing, nal.prefix) {
                    let new_len = (nal.len() - removed) as u64;
                    for (i, b) in data[prefix..prefix + n].iter_mut().enumerate() {
                        *b = (new_len >> (8 * (n - 1 - i))) as u8;
                    }
                }
                Damage::Truncate { nal: nal.start, removed }
            }
        })
    }

    fn is_slice(&self, first: u8) -> bool {
        if self.hevc { (first >> 1) & 0x3f < 32 } else { (1..=5).contains(&(first & 0x1f)) }
    }
}

/// One NAL unit: its bytes (header included) and where its length prefix is, if any.
#[derive(Debug, PartialEq, Eq)]
struct Nal {
    start: usize,
    end: usize,
    prefix: Option<usize>,
}

impl Nal {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// The NAL units of a buffer; a malformed tail is ignored.
fn nal_units(data: &[u8], framing: Framing) -> Vec<Nal> {
    let mut out = Vec::new();
    match framing {
        Framing::Length(n) if (1..=4).contains(&n) => {
            let mut pos = 0;
            while pos + n <= data.len() {
                let len = data[pos..pos + n].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
                let start = pos + n;
                if len == 0 || start + len > data.len() {
                    break;
                }
                out.push(Nal { start, end: start + len, prefix: Some(pos) });
                pos = start + len;
            }
        }
        Framing::Length(_) => {}
        Framing::AnnexB => {
            let starts: Vec<usize> = (0..data.len().saturating_sub(2))
                .filter(|&i| data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1)
                .map(|i| i + 3)
                .collect();
            for (k, &start) in starts.iter().enumerate() {
                // the next start code, without the zero byte of a 4-byte one
                let mut end = starts.get(k + 1).map_or(data.len(), |next| next - 3);
                while end > start && starts.get(k + 1).is_some() && data[end - 1] == 0 {
                    end -= 1;
                }
                if end > start {
                    out.push(Nal { start, end, prefix: None });
                }
            }
        }
    }
    out
}

/// The framing of a `video/x-h264` or `video/x-h265` caps structure: its `stream-format` and,
/// for length-prefixed formats, the prefix size from the `codec_data` (avcC / hvcC) header.
pub fn framing(stream_format: Option<&str>, codec_data: Option<&[u8]>, hevc: bool) -> Framing {
    match stream_format {
        Some("avc" | "avc3" | "hvc1" | "hev1") => {
            let at = if hevc { 21 } else { 4 };
            Framing::Length(codec_data.and_then(|d| d.get(at)).map_or(4, |b| (b & 3) as usize + 1))
        }
        _ => Framing::AnnexB,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An H.264 access unit, length-prefixed: SPS, PPS, IDR slice, non-IDR slice.
    fn avc_au() -> Vec<u8> {
        let mut out = Vec::new();
        for (header, len) in [(0x67u8, 12usize), (0x68, 4), (0x65, 600), (0x41, 300)] {
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.push(header);
            out.extend((1..len).map(|i| (i % 200 + 20) as u8));
        }
        out
    }

    fn annexb_au() -> Vec<u8> {
        let mut out = Vec::new();
        for (header, len) in [(0x67u8, 12usize), (0x68, 4), (0x65, 600)] {
            out.extend_from_slice(&[0, 0, 0, 1, header]);
            out.extend((1..len).map(|i| (i % 200 + 20) as u8));
        }
        out
    }

    #[test]
    fn finds_nal_units_in_both_framings() {
        let avc = nal_units(&avc_au(), Framing::Length(4));
        assert_eq!(avc.iter().map(Nal::len).collect::<Vec<_>>(), [12, 4, 600, 300]);
        let annexb = nal_units(&annexb_au(), Framing::AnnexB);
        assert_eq!(annexb.iter().map(Nal::len).collect::<Vec<_>>(), [12, 4, 600]);
        assert_eq!(annexb[0].start, 4);
        assert_eq!(framing(Some("avc"), Some(&[1, 0x64, 0, 0x1f, 0xff, 0xe1]), false), Framing::Length(4));
        assert_eq!(framing(Some("avc"), Some(&[1, 0x64, 0, 0x1f, 0xfd]), false), Framing::Length(2));
        assert_eq!(framing(Some("byte-stream"), None, true), Framing::AnnexB);
    }

    #[test]
    fn damage_is_deterministic_and_keeps_the_framing() {
        let run = |seed| {
            let mut c = Corrupter::new(0.5, seed, false);
            (0..200)
                .map(|_| {
                    let mut au = avc_au();
                    let damage = c.process(&mut au, Framing::Length(4));
                    (damage, au)
                })
                .collect::<Vec<_>>()
        };
        let (a, b) = (run(7), run(7));
        assert_eq!(a, b, "same seed, same damage");
        assert_ne!(a, run(8), "another seed, other damage");
        let damaged = a.iter().filter(|(d, _)| d.is_some()).count();
        assert!((70..=130).contains(&damaged), "about half of 200 damaged: {damaged}");
        let kinds = |f: fn(&Damage) -> bool| a.iter().filter(|(d, _)| d.as_ref().is_some_and(f)).count();
        assert!(kinds(|d| matches!(d, Damage::Flip { .. })) > 10);
        assert!(kinds(|d| matches!(d, Damage::Zero { .. })) > 10);
        assert!(kinds(|d| matches!(d, Damage::Truncate { .. })) > 10);

        let pristine = avc_au();
        for (damage, au) in &a {
            let nals = nal_units(au, Framing::Length(4));
            assert_eq!(nals.len(), 4, "framing intact after {damage:?}");
            // parameter sets and NAL headers untouched
            assert_eq!(au[..24], pristine[..24]);
            assert_eq!(au[nals[2].start], 0x65);
            assert_eq!(au[nals[3].start], 0x41);
            if damage.is_none() {
                assert_eq!(au, &pristine);
            } else {
                assert_ne!(au, &pristine, "{damage:?} changed nothing");
            }
        }
    }

    #[test]
    fn annexb_damage_keeps_start_codes_and_parameter_sets() {
        let mut c = Corrupter::new(1.0, 3, false);
        for _ in 0..100 {
            let mut au = annexb_au();
            let damage = c.process(&mut au, Framing::AnnexB).expect("probability 1 damages every buffer");
            assert_eq!(au[..24], annexb_au()[..24], "{damage:?}");
            assert_eq!(au[24..29], [0, 0, 0, 1, 0x65], "{damage:?}");
        }
    }

    #[test]
    fn probability_zero_and_no_slices_leave_buffers_alone() {
        let mut c = Corrupter::new(0.0, 1, false);
        let mut au = avc_au();
        assert_eq!(c.process(&mut au, Framing::Length(4)), None);
        assert_eq!(au, avc_au());
        let mut c = Corrupter::new(1.0, 1, true);
        // H.265 VPS (type 32) only
        let mut vps = vec![0, 0, 0, 1, 0x40, 0x01, 1, 2, 3, 4];
        assert_eq!(c.process(&mut vps, Framing::AnnexB), None);
    }
}

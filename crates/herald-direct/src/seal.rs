//! Sealed datagrams: an EVENT frame wrapped with a per-topic key id, the sender's id, a sequence
//! number and an authentication tag (HMAC-SHA256, or XChaCha20-Poly1305 when encrypted), and the
//! per-sender replay window a receiver checks them against.
//!
//! The byte layout is in `docs/direct-protocol.md` ("Sealed datagrams"). A receiver decodes the
//! envelope ([`decode_sealed`]), checks its tag with the key its id names ([`open`]), and only
//! then lets it touch the replay window ([`ReplayGuard::check`]): a datagram that fails any step
//! is counted and dropped, never delivered.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::frame::{DecodeError, LENGTH_PREFIX_BYTES, PROTOCOL_VERSION};
use crate::keys::SecretKey;

/// The kind byte of a sealed datagram (a frame kind never sent over TCP).
pub const KIND_SEALED: u8 = 11;
/// Flag bit: the payload is encrypted (XChaCha20-Poly1305) rather than only authenticated.
pub const FLAG_ENCRYPTED: u8 = 0x01;
/// Bytes from the length prefix through `sent_unix_ms`: what the tag covers besides the payload.
pub const SEALED_HEADER_BYTES: usize = 4 + 1 + 1 + 1 + 4 + 16 + 8 + 8;
/// Bytes of the authentication tag at the end of a sealed datagram.
pub const TAG_BYTES: usize = 16;
/// Sequence numbers per sender remembered to refuse a replay (as IPsec's anti-replay window).
pub const REPLAY_WINDOW_SEQS: u64 = 1024;

const _: () = assert!(SEALED_HEADER_BYTES == 43);
const _: () = assert!(REPLAY_WINDOW_SEQS % 64 == 0);

type HmacSha256 = Hmac<Sha256>;

/// A topic's datagram key, ready to seal and open: its id, and the two keys derived from the
/// secret (one for HMAC, one for the AEAD), so the secret itself is never used by two algorithms.
#[derive(Clone)]
pub struct DatagramKey {
    id: u32,
    mac: HmacSha256,
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for DatagramKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramKey").field("id", &self.id).finish()
    }
}

impl DatagramKey {
    /// The datagram key of a topic's secret.
    ///
    /// ```
    /// use herald_direct::keys::SecretKey;
    /// use herald_direct::seal::DatagramKey;
    /// let key = DatagramKey::new(&SecretKey::from_bytes([7; 32]));
    /// assert_eq!(key.id(), DatagramKey::new(&SecretKey::from_bytes([7; 32])).id());
    /// ```
    pub fn new(secret: &SecretKey) -> DatagramKey {
        let id_hash = Sha256::new()
            .chain_update(b"herald datagram key id")
            .chain_update(secret.bytes())
            .finalize();
        let id = u32::from_be_bytes([id_hash[0], id_hash[1], id_hash[2], id_hash[3]]);
        let mac_key = derive(secret, b"herald datagram hmac");
        let aead_key = derive(secret, b"herald datagram aead");
        DatagramKey {
            id,
            mac: keyed_hmac(&mac_key),
            aead: XChaCha20Poly1305::new(&aead_key.into()),
        }
    }

    /// The key id a sealed datagram carries: the first 4 bytes of SHA-256 over a label and the
    /// secret, so both ends agree on it without configuring it, and keys can be rotated by
    /// giving receivers the old and the new key.
    pub fn id(&self) -> u32 {
        self.id
    }
}

fn keyed_hmac(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this arm is never taken.
        Err(_) => unreachable!("HMAC accepts every key length"),
    }
}

/// HMAC-SHA256(secret, label): a subkey for one use.
fn derive(secret: &SecretKey, label: &[u8]) -> [u8; 32] {
    let mut mac = keyed_hmac(secret.bytes());
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// The XChaCha20 nonce of a datagram: the sender's id and its sequence number, unique for as
/// long as the sender never reuses a sequence number (it counts up from 1 for its life).
fn nonce(sender: u128, seq: u64) -> XNonce {
    let mut n = [0u8; 24];
    n[..16].copy_from_slice(&sender.to_be_bytes());
    n[16..].copy_from_slice(&seq.to_be_bytes());
    n.into()
}

/// Appends a sealed datagram to `out`. `body` is an EVENT frame body (everything after its
/// length prefix); `seq` must never repeat for this `sender` (the nonce depends on it).
pub fn seal(
    key: &DatagramKey,
    encrypt: bool,
    sender: u128,
    seq: u64,
    sent_unix_ms: u64,
    body: &[u8],
    out: &mut BytesMut,
) {
    let start = out.len();
    let length = SEALED_HEADER_BYTES - LENGTH_PREFIX_BYTES + body.len() + TAG_BYTES;
    out.reserve(LENGTH_PREFIX_BYTES + length);
    out.put_u32(length as u32);
    out.put_u8(PROTOCOL_VERSION);
    out.put_u8(KIND_SEALED);
    out.put_u8(if encrypt { FLAG_ENCRYPTED } else { 0 });
    out.put_u32(key.id);
    out.put_u128(sender);
    out.put_u64(seq);
    out.put_u64(sent_unix_ms);
    let payload_at = out.len();
    out.put_slice(body);
    let tag: [u8; TAG_BYTES] = if encrypt {
        let (header, payload) = out[start..].split_at_mut(payload_at - start);
        match key
            .aead
            .encrypt_in_place_detached(&nonce(sender, seq), header, payload)
        {
            Ok(tag) => tag.into(),
            // Only a payload beyond 256 GiB fails; datagrams are a few KiB at most.
            Err(_) => unreachable!("XChaCha20-Poly1305 encrypts any datagram-sized payload"),
        }
    } else {
        let mut mac = key.mac.clone();
        mac.update(&out[start..]);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    };
    out.put_slice(&tag);
    debug_assert_eq!(out.len() - start, LENGTH_PREFIX_BYTES + length);
}

/// Bytes a sealed datagram of an EVENT frame body of `body_bytes` takes.
pub fn sealed_len(body_bytes: usize) -> usize {
    SEALED_HEADER_BYTES + body_bytes + TAG_BYTES
}

/// A sealed datagram's fields, decoded but not yet authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub key_id: u32,
    pub sender: u128,
    pub seq: u64,
    pub sent_unix_ms: u64,
    /// The datagram up to and including `sent_unix_ms`.
    header: Bytes,
    payload: Bytes,
    tag: [u8; TAG_BYTES],
}

/// Whether a datagram is sealed (its kind byte says so); anything else is decoded as a frame.
pub fn is_sealed(datagram: &[u8]) -> bool {
    datagram.len() > 5 && datagram[5] == KIND_SEALED
}

/// Decodes a sealed datagram's envelope, checking its length field, version, kind, flags and
/// size; the tag is checked by [`open`].
pub fn decode_sealed(datagram: Bytes) -> Result<Envelope, DecodeError> {
    if datagram.len() < SEALED_HEADER_BYTES + TAG_BYTES {
        return Err(DecodeError::Truncated {
            needed: SEALED_HEADER_BYTES + TAG_BYTES - datagram.len(),
        });
    }
    let field = u32::from_be_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
    if field != datagram.len() - LENGTH_PREFIX_BYTES {
        return Err(DecodeError::LengthMismatch {
            field,
            actual: datagram.len() - LENGTH_PREFIX_BYTES,
        });
    }
    if datagram[4] != PROTOCOL_VERSION {
        return Err(DecodeError::Version(datagram[4]));
    }
    if datagram[5] != KIND_SEALED {
        return Err(DecodeError::UnknownKind(datagram[5]));
    }
    let flags = datagram[6];
    if flags & !FLAG_ENCRYPTED != 0 {
        return Err(DecodeError::UnknownFlags(flags));
    }
    let be32 = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&datagram[at..at + 4]);
        u32::from_be_bytes(b)
    };
    let be64 = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&datagram[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let mut sender = [0u8; 16];
    sender.copy_from_slice(&datagram[11..27]);
    let tag_at = datagram.len() - TAG_BYTES;
    let mut tag = [0u8; TAG_BYTES];
    tag.copy_from_slice(&datagram[tag_at..]);
    Ok(Envelope {
        flags,
        key_id: be32(7),
        sender: u128::from_be_bytes(sender),
        seq: be64(27),
        sent_unix_ms: be64(35),
        header: datagram.slice(..SEALED_HEADER_BYTES),
        payload: datagram.slice(SEALED_HEADER_BYTES..tag_at),
        tag,
    })
}

/// Why a sealed datagram was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("no key with id {0:#010x} for this topic")]
    UnknownKey(u32),
    #[error("authentication tag does not match")]
    BadTag,
}

/// Checks an envelope's tag with the key its id names among `keys` and returns its payload (an
/// EVENT frame body), decrypted if it was encrypted. Tags are compared in constant time.
pub fn open(envelope: &Envelope, keys: &[DatagramKey]) -> Result<Bytes, OpenError> {
    let key = keys
        .iter()
        .find(|k| k.id == envelope.key_id)
        .ok_or(OpenError::UnknownKey(envelope.key_id))?;
    if envelope.flags & FLAG_ENCRYPTED != 0 {
        let mut plain = envelope.payload.to_vec();
        key.aead
            .decrypt_in_place_detached(
                &nonce(envelope.sender, envelope.seq),
                &envelope.header,
                &mut plain,
                (&envelope.tag).into(),
            )
            .map_err(|_| OpenError::BadTag)?;
        Ok(Bytes::from(plain))
    } else {
        let mut mac = key.mac.clone();
        mac.update(&envelope.header);
        mac.update(&envelope.payload);
        mac.verify_truncated_left(&envelope.tag)
            .map_err(|_| OpenError::BadTag)?;
        Ok(envelope.payload.clone())
    }
}

/// The anti-replay window of one sender: the highest sequence number accepted and a bitmap of
/// the [`REPLAY_WINDOW_SEQS`] numbers at or below it.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    highest: u64,
    bits: [u64; (REPLAY_WINDOW_SEQS / 64) as usize],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow {
            highest: 0,
            bits: [0; (REPLAY_WINDOW_SEQS / 64) as usize],
        }
    }
}

impl ReplayWindow {
    fn slot(seq: u64) -> (usize, u64) {
        let at = (seq % REPLAY_WINDOW_SEQS) as usize;
        (at / 64, 1u64 << (at % 64))
    }

    /// Accepts `seq` if it was never accepted and is not older than the window; returns false
    /// (a replay) otherwise. Sequence number 0 is never sent, so never accepted.
    pub fn accept(&mut self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.highest {
            if seq - self.highest >= REPLAY_WINDOW_SEQS {
                self.bits = [0; (REPLAY_WINDOW_SEQS / 64) as usize];
            } else {
                // Clear the slots the window slides over; they now stand for new numbers.
                for s in self.highest + 1..seq {
                    let (w, b) = Self::slot(s);
                    self.bits[w] &= !b;
                }
            }
            self.highest = seq;
            let (w, b) = Self::slot(seq);
            self.bits[w] |= b;
            return true;
        }
        if self.highest - seq >= REPLAY_WINDOW_SEQS {
            return false;
        }
        let (w, b) = Self::slot(seq);
        if self.bits[w] & b != 0 {
            return false;
        }
        self.bits[w] |= b;
        true
    }
}

/// Why an authentic datagram is refused as a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Its sequence number was accepted already or is older than the window.
    Seen,
    /// Its send time is further from the receiver's clock than `age_ms_max`.
    Stale,
}

/// Replay windows of every sender a receiver heard from, bounded by `senders_max`, and the age
/// limit that keeps a forgotten sender's datagrams from being replayed later.
///
/// A sender's window is forgotten (least recently heard first) only to make room for another
/// sender; a replay of its datagrams would then find no window, but it is older than the
/// datagram it copies, which the age limit refuses once `age_ms_max` has passed. The age check
/// assumes clocks synchronised to well within `age_ms_max`, as deadlines do.
#[derive(Debug)]
pub struct ReplayGuard {
    senders_max: usize,
    age_ms_max: u64,
    heard: u64,
    by_sender: HashMap<u128, (ReplayWindow, u64)>,
}

impl ReplayGuard {
    pub fn new(senders_max: usize, age_ms_max: u64) -> ReplayGuard {
        ReplayGuard {
            senders_max: senders_max.max(1),
            age_ms_max,
            heard: 0,
            by_sender: HashMap::new(),
        }
    }

    /// Checks an authenticated envelope against its sender's window and the age limit, and
    /// records it when accepted. Call it only after [`open`] succeeded, so forged datagrams
    /// never move a window.
    pub fn check(&mut self, envelope: &Envelope, now_unix_ms: u64) -> Result<(), Replay> {
        if now_unix_ms.abs_diff(envelope.sent_unix_ms) > self.age_ms_max {
            return Err(Replay::Stale);
        }
        self.heard += 1;
        if !self.by_sender.contains_key(&envelope.sender)
            && self.by_sender.len() >= self.senders_max
            && let Some(oldest) = self
                .by_sender
                .iter()
                .min_by_key(|(_, (_, heard))| *heard)
                .map(|(id, _)| *id)
        {
            self.by_sender.remove(&oldest);
        }
        let (window, heard) = self.by_sender.entry(envelope.sender).or_default();
        *heard = self.heard;
        if window.accept(envelope.seq) {
            Ok(())
        } else {
            Err(Replay::Seen)
        }
    }
}

/// Runs the sealed-datagram decoder over arbitrary bytes, then opens whatever decodes with a
/// known key (which must fail unless the bytes were sealed with it) and checks that sealing and
/// opening round-trip. The fuzz target and a proptest both call this.
pub fn fuzz_sealed(data: &[u8]) {
    let key = DatagramKey::new(&SecretKey::from_bytes([0x42; 32]));
    if let Ok(envelope) = decode_sealed(Bytes::copy_from_slice(data)) {
        let _ = open(&envelope, std::slice::from_ref(&key));
        let mut guard = ReplayGuard::new(4, 1000);
        let _ = guard.check(&envelope, envelope.sent_unix_ms);
    }
    for encrypt in [false, true] {
        let mut out = BytesMut::new();
        seal(&key, encrypt, 9, 1, 5, data, &mut out);
        assert_eq!(out.len(), sealed_len(data.len()));
        let envelope = decode_sealed(out.freeze());
        assert!(envelope.is_ok(), "a sealed datagram decodes");
        if let Ok(envelope) = envelope {
            assert_eq!(
                open(&envelope, std::slice::from_ref(&key)).as_deref(),
                Ok(data)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> DatagramKey {
        DatagramKey::new(&SecretKey::from_bytes([byte; 32]))
    }

    fn sealed(k: &DatagramKey, encrypt: bool, seq: u64, body: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        seal(k, encrypt, 77, seq, 1_000, body, &mut out);
        out.freeze()
    }

    #[test]
    fn sealed_datagrams_open_with_their_key_only() {
        for encrypt in [false, true] {
            let datagram = sealed(&key(1), encrypt, 1, b"event body");
            assert!(is_sealed(&datagram));
            let envelope = decode_sealed(datagram.clone()).unwrap();
            assert_eq!((envelope.sender, envelope.seq), (77, 1));
            assert_eq!(open(&envelope, &[key(1)]).unwrap(), &b"event body"[..]);
            assert_eq!(
                open(&envelope, &[key(2)]),
                Err(OpenError::UnknownKey(envelope.key_id))
            );
            // The plaintext is visible only without encryption.
            let visible = datagram.windows(10).any(|w| w == b"event body");
            assert_eq!(visible, !encrypt);
        }
    }

    #[test]
    fn any_flipped_bit_fails_the_tag() {
        for encrypt in [false, true] {
            let datagram = sealed(&key(1), encrypt, 3, b"payload");
            // Every byte after the length field, header fields included: key id and flags are
            // checked by lookup and decoding, the rest by the tag.
            for at in 4..datagram.len() {
                let mut bad = datagram.to_vec();
                bad[at] ^= 0x10;
                let opened = decode_sealed(Bytes::from(bad))
                    .map_err(|_| ())
                    .and_then(|e| open(&e, &[key(1)]).map_err(|_| ()));
                assert!(opened.is_err(), "flip at {at} (encrypt {encrypt})");
            }
        }
    }

    #[test]
    fn a_different_key_with_a_forged_id_fails_the_tag() {
        let mut attacker = key(9);
        attacker.id = key(1).id;
        let envelope = decode_sealed(sealed(&attacker, false, 1, b"x")).unwrap();
        assert_eq!(open(&envelope, &[key(1)]), Err(OpenError::BadTag));
    }

    #[test]
    fn the_replay_window_refuses_repeats_and_old_numbers() {
        let mut w = ReplayWindow::default();
        assert!(!w.accept(0));
        assert!(w.accept(5));
        assert!(!w.accept(5));
        assert!(w.accept(3), "late but new");
        assert!(!w.accept(3));
        assert!(w.accept(5 + REPLAY_WINDOW_SEQS - 1));
        assert!(w.accept(6), "still inside the window");
        assert!(w.accept(5 + REPLAY_WINDOW_SEQS));
        assert!(!w.accept(3), "slid out of the window");
        assert!(w.accept(10 * REPLAY_WINDOW_SEQS));
        assert!(!w.accept(10 * REPLAY_WINDOW_SEQS));
        assert!(w.accept(10 * REPLAY_WINDOW_SEQS - 1));
    }

    #[test]
    fn the_guard_refuses_stale_datagrams_and_bounds_its_senders() {
        let mut guard = ReplayGuard::new(2, 1000);
        let env = |sender: u128, seq: u64, sent: u64| {
            let mut out = BytesMut::new();
            seal(&key(1), false, sender, seq, sent, b"", &mut out);
            decode_sealed(out.freeze()).unwrap()
        };
        assert_eq!(guard.check(&env(1, 1, 5000), 5000), Ok(()));
        assert_eq!(guard.check(&env(1, 1, 5000), 5000), Err(Replay::Seen));
        assert_eq!(guard.check(&env(1, 2, 3000), 5000), Err(Replay::Stale));
        assert_eq!(guard.check(&env(2, 1, 5000), 5000), Ok(()));
        assert_eq!(guard.check(&env(3, 1, 5000), 5000), Ok(()));
        assert!(guard.by_sender.len() <= 2);
        assert!(
            !guard.by_sender.contains_key(&1),
            "least recently heard goes"
        );
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            fuzz_sealed(&data);
        }

        #[test]
        fn mutated_sealed_datagrams_never_open(encrypt in any::<bool>(), pos in any::<usize>(), xor in 1u8..) {
            let mut data = sealed(&key(1), encrypt, 1, b"some event").to_vec();
            let len = data.len();
            data[pos % len] ^= xor;
            fuzz_sealed(&data);
            let opened = decode_sealed(Bytes::from(data)).ok().and_then(|e| open(&e, &[key(1)]).ok());
            prop_assert!(opened.is_none());
        }

        #[test]
        fn the_window_accepts_each_number_once(seqs in proptest::collection::vec(1u64..3000, 0..200)) {
            let mut w = ReplayWindow::default();
            let mut model = std::collections::BTreeSet::new();
            let mut highest = 0;
            for seq in seqs {
                let fresh = !model.contains(&seq) && seq + REPLAY_WINDOW_SEQS > highest;
                prop_assert_eq!(w.accept(seq), fresh, "seq {}", seq);
                if fresh {
                    model.insert(seq);
                    highest = highest.max(seq);
                }
            }
        }
    }
}

//! The group-key handshake at the start of a direct connection: both ends prove they hold the
//! group's pre-shared key with HMAC-SHA256 over both sides' fresh nonces and their role, so
//! neither can be fooled by a replayed or reflected proof.
//!
//! Member → producer CHALLENGE (nonce_m); producer → member PROOF (nonce_p, its proof); member
//! → producer PROVEN (its proof), then HELLO as usual. The byte layout and the order of checks
//! are in `docs/direct-protocol.md` ("Group key").

use bytes::BytesMut;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{self, DecodeError, Frame, MAC_BYTES, NONCE_BYTES};
use crate::keys::SecretKey;

type HmacSha256 = Hmac<Sha256>;

/// Default bound on the whole handshake; a peer that has not finished by then is closed, so an
/// unauthenticated connection cannot hold a member's connection slot for long.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 5_000;

/// Which side a proof is made for; part of what the MAC covers, so a member's proof can never
/// pass for a producer's (a reflection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Producer,
    Member,
}

impl Role {
    fn label(self) -> &'static [u8] {
        match self {
            Role::Producer => b"herald direct producer",
            Role::Member => b"herald direct member",
        }
    }
}

/// A group's pre-shared key, ready to prove and check proofs. Its `Debug` hides the key.
#[derive(Clone)]
pub struct GroupKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupKey(..)")
    }
}

impl GroupKey {
    /// The group key of a secret. The proofs use HMAC-SHA256(secret, `"herald direct group
    /// key"`), not the secret itself, so the same file may serve as a topic key without one
    /// key being used by two protocols.
    ///
    /// ```
    /// use herald_direct::handshake::GroupKey;
    /// use herald_direct::keys::SecretKey;
    /// let key = GroupKey::new(&SecretKey::from_bytes([1; 32]));
    /// assert_eq!(format!("{key:?}"), "GroupKey(..)");
    /// ```
    pub fn new(secret: &SecretKey) -> GroupKey {
        let mut derive = keyed(secret.bytes());
        derive.update(b"herald direct group key");
        let derived = derive.finalize().into_bytes();
        GroupKey {
            mac: keyed(&derived),
        }
    }

    fn proof_mac(
        &self,
        role: Role,
        member_nonce: &[u8; NONCE_BYTES],
        producer_nonce: &[u8; NONCE_BYTES],
    ) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(role.label());
        mac.update(member_nonce);
        mac.update(producer_nonce);
        mac
    }

    fn proof(
        &self,
        role: Role,
        member_nonce: &[u8; NONCE_BYTES],
        producer_nonce: &[u8; NONCE_BYTES],
    ) -> [u8; MAC_BYTES] {
        self.proof_mac(role, member_nonce, producer_nonce)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Compares in constant time.
    fn verify(
        &self,
        role: Role,
        member_nonce: &[u8; NONCE_BYTES],
        producer_nonce: &[u8; NONCE_BYTES],
        mac: &[u8; MAC_BYTES],
    ) -> bool {
        self.proof_mac(role, member_nonce, producer_nonce)
            .verify_slice(mac)
            .is_ok()
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts every key length"),
    }
}

/// Why a group-key handshake failed. The connection is closed; its text is what the membership
/// view and the logs show.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    #[error("handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake: connection closed by the peer")]
    Closed,
    #[error("handshake: malformed frame: {0}")]
    Malformed(#[from] DecodeError),
    #[error("handshake: expected {expected}, got another frame")]
    Unexpected { expected: &'static str },
    #[error("the producer's group-key proof does not match: it does not hold this group's key")]
    ProducerProof,
    #[error("the member's group-key proof does not match: it does not hold this group's key")]
    MemberProof,
    #[error("the member has no group key (it sent HELLO without a challenge); refused")]
    MemberWithoutKey,
    #[error("the member requires a group key and this producer has none")]
    KeyRequired,
}

/// Reads one frame from `stream` (bytes after it stay in `buf`).
pub(crate) async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    frame_bytes_max: usize,
) -> Result<Frame, HandshakeError> {
    loop {
        if let Some(frame) = frame::decode_stream(buf, frame_bytes_max)? {
            return Ok(frame);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(HandshakeError::Closed);
        }
    }
}

async fn write_frame<S: AsyncWrite + Unpin>(
    stream: &mut S,
    frame: &Frame,
) -> Result<(), HandshakeError> {
    let mut out = BytesMut::new();
    frame::encode(frame, &mut out);
    stream.write_all(&out).await?;
    stream.flush().await?;
    Ok(())
}

/// Checks a producer's PROOF against the challenge; returns the producer's nonce.
pub fn check_proof(
    key: &GroupKey,
    member_nonce: &[u8; NONCE_BYTES],
    frame: &Frame,
) -> Result<[u8; NONCE_BYTES], HandshakeError> {
    let Frame::Proof { nonce, mac } = frame else {
        return Err(HandshakeError::Unexpected { expected: "PROOF" });
    };
    if !key.verify(Role::Producer, member_nonce, nonce, mac) {
        return Err(HandshakeError::ProducerProof);
    }
    Ok(*nonce)
}

/// Checks a member's PROVEN against both nonces.
pub fn check_proven(
    key: &GroupKey,
    member_nonce: &[u8; NONCE_BYTES],
    producer_nonce: &[u8; NONCE_BYTES],
    frame: &Frame,
) -> Result<(), HandshakeError> {
    let Frame::Proven { mac } = frame else {
        return Err(HandshakeError::Unexpected { expected: "PROVEN" });
    };
    if !key.verify(Role::Member, member_nonce, producer_nonce, mac) {
        return Err(HandshakeError::MemberProof);
    }
    Ok(())
}

/// The member's side: challenge, check the producer's proof, prove itself. The caller sends
/// HELLO next and bounds the whole call by its handshake timeout.
pub(crate) async fn member_side<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    key: &GroupKey,
    frame_bytes_max: usize,
) -> Result<(), HandshakeError> {
    let member_nonce = random_nonce();
    write_frame(
        stream,
        &Frame::Challenge {
            nonce: member_nonce,
        },
    )
    .await?;
    // Handshake frames are small: a producer cannot make the member buffer a large one before
    // it is authenticated.
    let proof = read_frame(stream, buf, frame_bytes_max.min(HANDSHAKE_FRAME_BYTES_MAX)).await?;
    let producer_nonce = check_proof(key, &member_nonce, &proof)?;
    let mac = key.proof(Role::Member, &member_nonce, &producer_nonce);
    write_frame(stream, &Frame::Proven { mac }).await
}

/// The largest frame read before the peer is authenticated.
const HANDSHAKE_FRAME_BYTES_MAX: usize = 256;

/// The producer's side, after it read the member's CHALLENGE: prove itself, check the member's
/// proof. The caller reads HELLO next.
pub(crate) async fn producer_side<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    key: &GroupKey,
    member_nonce: &[u8; NONCE_BYTES],
    frame_bytes_max: usize,
) -> Result<(), HandshakeError> {
    let producer_nonce = random_nonce();
    let mac = key.proof(Role::Producer, member_nonce, &producer_nonce);
    write_frame(
        stream,
        &Frame::Proof {
            nonce: producer_nonce,
            mac,
        },
    )
    .await?;
    let proven = read_frame(stream, buf, frame_bytes_max).await?;
    check_proven(key, member_nonce, &producer_nonce, &proven)
}

/// Fresh random bytes for a nonce.
fn random_nonce() -> [u8; NONCE_BYTES] {
    use rand::RngCore as _;
    let mut nonce = [0u8; NONCE_BYTES];
    // The thread generator is a CSPRNG seeded (and reseeded) from the operating system.
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

/// Runs the handshake decoder and both checks over arbitrary bytes: whatever decodes must be
/// refused as a proof (random bytes cannot hold a valid one), and an honest exchange must pass.
/// The fuzz target and a proptest both call this.
pub fn fuzz_handshake(data: &[u8]) {
    let key = GroupKey::new(&SecretKey::from_bytes([0x24; 32]));
    let member_nonce = [0x11; NONCE_BYTES];
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = frame::decode_stream(&mut buf, HANDSHAKE_FRAME_BYTES_MAX) {
        assert!(check_proof(&key, &member_nonce, &frame).is_err());
        assert!(check_proven(&key, &member_nonce, &member_nonce, &frame).is_err());
    }
    let mut producer_nonce = [0u8; NONCE_BYTES];
    for (i, b) in data.iter().take(NONCE_BYTES).enumerate() {
        producer_nonce[i] = *b;
    }
    let proof = Frame::Proof {
        nonce: producer_nonce,
        mac: key.proof(Role::Producer, &member_nonce, &producer_nonce),
    };
    assert!(check_proof(&key, &member_nonce, &proof).is_ok());
    let reflected = Frame::Proven {
        mac: key.proof(Role::Producer, &member_nonce, &producer_nonce),
    };
    assert!(check_proven(&key, &member_nonce, &producer_nonce, &reflected).is_err());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn key(byte: u8) -> GroupKey {
        GroupKey::new(&SecretKey::from_bytes([byte; 32]))
    }

    #[tokio::test]
    async fn both_sides_with_the_key_pass_and_a_wrong_key_fails_both_ways() {
        for (member_key, producer_key, ok) in [(1, 1, true), (1, 2, false)] {
            let (mut a, mut b) = tokio::io::duplex(1024);
            let member = tokio::spawn(async move {
                let mut buf = BytesMut::new();
                member_side(&mut a, &mut buf, &key(member_key), 1024).await
            });
            let mut buf = BytesMut::new();
            let Frame::Challenge { nonce } = read_frame(&mut b, &mut buf, 1024).await.unwrap()
            else {
                panic!("no challenge");
            };
            let producer = producer_side(&mut b, &mut buf, &key(producer_key), &nonce, 1024).await;
            drop(b);
            let member = member.await.unwrap();
            assert_eq!(member.is_ok(), ok, "{member:?}");
            assert_eq!(producer.is_ok(), ok, "{producer:?}");
            if !ok {
                assert!(matches!(member, Err(HandshakeError::ProducerProof)));
            }
        }
    }

    #[test]
    fn a_proof_for_other_nonces_or_the_other_role_fails() {
        let k = key(1);
        let (m, p) = ([1; 32], [2; 32]);
        let proof = k.proof(Role::Producer, &m, &p);
        assert!(k.verify(Role::Producer, &m, &p, &proof));
        assert!(
            !k.verify(Role::Producer, &[9; 32], &p, &proof),
            "replayed to a new challenge"
        );
        assert!(!k.verify(Role::Member, &m, &p, &proof), "reflected");
        assert!(!key(2).verify(Role::Producer, &m, &p, &proof));
    }

    proptest! {
        #[test]
        fn random_bytes_never_pass_or_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            fuzz_handshake(&data);
        }
    }
}

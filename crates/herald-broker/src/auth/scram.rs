//! SASL mechanisms: SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as a server, and
//! PLAIN (RFC 4616), both checked against stored SCRAM credentials so no password is kept.
//!
//! A SCRAM exchange is two client messages: client-first (`n,,n=user,r=nonce`) answered with
//! server-first (`r=nonce+ours,s=salt,i=iterations`), then client-final
//! (`c=biws,r=nonce,p=proof`) answered with server-final (`v=signature`). An unknown user gets
//! a made-up salt and fails at the proof, like a wrong password, so names cannot be probed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Fewest PBKDF2 iterations a stored credential may have (Kafka's minimum).
pub const ITERATIONS_MIN: u32 = 4096;
/// Most PBKDF2 iterations a stored credential may have (Kafka's maximum); bounds the work
/// one PLAIN authentication costs.
pub const ITERATIONS_MAX: u32 = 16384;
/// Bytes of random salt for a new credential.
pub const SALT_BYTES: usize = 32;
/// Longest SASL message accepted, in bytes; real ones are a few hundred.
pub const SASL_MESSAGE_BYTES_MAX: usize = 8 * 1024;

/// A SCRAM mechanism, with Kafka's numbering in the SCRAM admin APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mechanism {
    /// SCRAM-SHA-256 (Kafka type 1).
    Sha256,
    /// SCRAM-SHA-512 (Kafka type 2).
    Sha512,
}

impl Mechanism {
    /// Both, in Kafka's order.
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    /// The SASL name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// From the SASL name.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Kafka's `ScramMechanism` number.
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    /// From Kafka's number.
    pub fn from_kafka_type(value: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_type() == value)
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `SaltedPassword := Hi(Normalize(password), salt, i)`, PBKDF2 with this hash.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut out = vec![0; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
                out
            }
            Mechanism::Sha512 => {
                let mut out = vec![0; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
                out
            }
        }
    }
}

/// What the broker keeps of a password for one mechanism: never the password itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    /// Random salt.
    pub salt: Vec<u8>,
    /// PBKDF2 iterations.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// The credential for a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted_password(
        mechanism: Mechanism,
        salted_password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> ScramCredential {
        let client_key = mechanism.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt,
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(salted_password, b"Server Key"),
        }
    }

    /// A new credential for a password, with a fresh random salt.
    pub fn new(mechanism: Mechanism, password: &str, iterations: u32) -> ScramCredential {
        let mut salt = vec![0; SALT_BYTES];
        rand::rng().fill_bytes(&mut salt);
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        ScramCredential::from_salted_password(mechanism, &salted, salt, iterations)
    }

    /// Whether `password` is the one this credential was made from (PLAIN); costs
    /// `iterations` rounds of PBKDF2, so call it off the async threads.
    pub fn matches_password(&self, mechanism: Mechanism, password: &str) -> bool {
        let salted = mechanism.salted_password(password.as_bytes(), &self.salt, self.iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        bool::from(mechanism.hash(&client_key).ct_eq(&self.stored_key))
    }
}

/// Why a SASL exchange failed. The text is for the broker's log and never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SaslError {
    /// The message does not follow the mechanism's grammar.
    #[error("malformed {mechanism} message: {reason}")]
    Malformed {
        /// The mechanism.
        mechanism: &'static str,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The client asked for something not offered (channel binding, token authentication).
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    /// Wrong password or unknown user: the client is told the same for both.
    #[error("invalid credentials for user {user}")]
    InvalidCredentials {
        /// The user name the client gave.
        user: String,
    },
}

fn malformed(mechanism: Mechanism, reason: &'static str) -> SaslError {
    SaslError::Malformed {
        mechanism: mechanism.name(),
        reason,
    }
}

/// A parsed PLAIN message: `[authzid] NUL authcid NUL password`.
#[derive(Debug, PartialEq, Eq)]
pub struct PlainMessage<'a> {
    /// The user.
    pub user: &'a str,
    /// The password.
    pub password: &'a str,
}

/// Parses a PLAIN message; an authorization identity other than the user is refused, as
/// Kafka does.
pub fn parse_plain(message: &[u8]) -> Result<PlainMessage<'_>, SaslError> {
    let bad = |reason| SaslError::Malformed {
        mechanism: "PLAIN",
        reason,
    };
    if message.len() > SASL_MESSAGE_BYTES_MAX {
        return Err(bad("message too long"));
    }
    let text = std::str::from_utf8(message).map_err(|_| bad("not UTF-8"))?;
    let mut parts = text.split('\0');
    let (Some(authzid), Some(user), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected three NUL-separated fields"));
    };
    if user.is_empty() || password.is_empty() {
        return Err(bad("empty user or password"));
    }
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::Unsupported(
            "an authorization id other than the user",
        ));
    }
    Ok(PlainMessage { user, password })
}

/// The parsed client-first message.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFirst {
    /// The GS2 header as sent (`n,,` or `n,a=user,`), echoed base64 in client-final.
    pub gs2_header: String,
    /// The user name, unescaped.
    pub user: String,
    /// The client's nonce.
    pub nonce: String,
    /// `client-first-message-bare`, part of the signed AuthMessage.
    pub bare: String,
}

/// Parses a client-first message (RFC 5802 section 7).
pub fn parse_client_first(mechanism: Mechanism, message: &[u8]) -> Result<ClientFirst, SaslError> {
    let bad = |reason| malformed(mechanism, reason);
    if message.len() > SASL_MESSAGE_BYTES_MAX {
        return Err(bad("message too long"));
    }
    let text = std::str::from_utf8(message).map_err(|_| bad("not UTF-8"))?;
    let (cbind, rest) = text.split_once(',').ok_or_else(|| bad("no GS2 header"))?;
    match cbind {
        "n" | "y" => {}
        flag if flag.starts_with("p=") => return Err(SaslError::Unsupported("channel binding")),
        _ => return Err(bad("bad channel binding flag")),
    }
    let (authzid, bare) = rest.split_once(',').ok_or_else(|| bad("no GS2 header"))?;
    if !authzid.is_empty() && !authzid.starts_with("a=") {
        return Err(bad("bad authorization id"));
    }
    let gs2_header = format!("{cbind},{authzid},");
    let mut fields = bare.split(',');
    let mut user_field = fields.next().ok_or_else(|| bad("no user name"))?;
    if user_field.starts_with("m=") {
        return Err(SaslError::Unsupported("mandatory extensions"));
    }
    user_field = user_field
        .strip_prefix("n=")
        .ok_or_else(|| bad("no user name"))?;
    let user = unescape_name(user_field).ok_or_else(|| bad("bad escape in user name"))?;
    if user.is_empty() {
        return Err(bad("empty user name"));
    }
    let nonce = fields
        .next()
        .and_then(|field| field.strip_prefix("r="))
        .ok_or_else(|| bad("no nonce"))?;
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(bad("bad nonce"));
    }
    for extension in fields {
        // Kafka's delegation tokens announce themselves with an extension; Herald has none.
        if extension.starts_with("tokenauth=") {
            return Err(SaslError::Unsupported("delegation token authentication"));
        }
    }
    if let Some(authzid) = authzid.strip_prefix("a=") {
        if unescape_name(authzid).as_deref() != Some(user.as_str()) {
            return Err(SaslError::Unsupported(
                "an authorization id other than the user",
            ));
        }
    }
    Ok(ClientFirst {
        gs2_header,
        user,
        nonce: nonce.to_string(),
        bare: bare.to_string(),
    })
}

/// The parsed client-final message.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientFinal {
    /// The decoded channel binding (`c=`): must be the GS2 header.
    pub channel_binding: Vec<u8>,
    /// The combined nonce (`r=`).
    pub nonce: String,
    /// The decoded proof (`p=`).
    pub proof: Vec<u8>,
    /// The message without its proof, part of the signed AuthMessage.
    pub without_proof: String,
}

/// Parses a client-final message (RFC 5802 section 7).
pub fn parse_client_final(mechanism: Mechanism, message: &[u8]) -> Result<ClientFinal, SaslError> {
    let bad = |reason| malformed(mechanism, reason);
    if message.len() > SASL_MESSAGE_BYTES_MAX {
        return Err(bad("message too long"));
    }
    let text = std::str::from_utf8(message).map_err(|_| bad("not UTF-8"))?;
    let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(|| bad("no proof"))?;
    let mut fields = without_proof.split(',');
    let channel_binding = fields
        .next()
        .and_then(|field| field.strip_prefix("c="))
        .ok_or_else(|| bad("no channel binding"))?;
    let channel_binding = BASE64
        .decode(channel_binding)
        .map_err(|_| bad("channel binding is not base64"))?;
    let nonce = fields
        .next()
        .and_then(|field| field.strip_prefix("r="))
        .ok_or_else(|| bad("no nonce"))?;
    let proof = BASE64
        .decode(proof)
        .map_err(|_| bad("proof is not base64"))?;
    Ok(ClientFinal {
        channel_binding,
        nonce: nonce.to_string(),
        proof,
        without_proof: without_proof.to_string(),
    })
}

/// `=2C` and `=3D` back to `,` and `=`; any other `=` is an error (RFC 5802 `saslname`).
fn unescape_name(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(index) = rest.find('=') {
        out.push_str(&rest[..index]);
        let escape = rest.get(index..index + 3)?;
        out.push(match escape {
            "=2C" => ',',
            "=3D" => '=',
            _ => return None,
        });
        rest = &rest[index + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// A SCRAM exchange in progress on one connection, between server-first and client-final.
#[derive(Debug)]
pub struct ScramServer {
    mechanism: Mechanism,
    first: ClientFirst,
    server_first: String,
    nonce: String,
    /// `None` for an unknown user: the exchange continues and fails at the proof.
    credential: Option<ScramCredential>,
}

impl ScramServer {
    /// Answers a client-first message; `credential` is the user's, if the user exists.
    pub fn start(
        mechanism: Mechanism,
        first: ClientFirst,
        credential: Option<ScramCredential>,
    ) -> ScramServer {
        let mut ours = [0u8; 24];
        rand::rng().fill_bytes(&mut ours);
        // Hex, like Kafka's alphanumeric nonces: librdkafka 2.0 mangles a nonce with `/`, `+`
        // or `=` in it and then fails its own proof.
        let ours: String = ours.iter().map(|byte| format!("{byte:02x}")).collect();
        let nonce = format!("{}{ours}", first.nonce);
        let (salt, iterations) = match &credential {
            Some(credential) => (credential.salt.clone(), credential.iterations),
            None => {
                let mut salt = vec![0; SALT_BYTES];
                rand::rng().fill_bytes(&mut salt);
                (salt, ITERATIONS_MIN)
            }
        };
        let server_first = format!("r={nonce},s={},i={iterations}", BASE64.encode(salt));
        ScramServer {
            mechanism,
            first,
            server_first,
            nonce,
            credential,
        }
    }

    /// The server-first message to send.
    pub fn server_first(&self) -> &[u8] {
        self.server_first.as_bytes()
    }

    /// The user the client claims to be.
    pub fn user(&self) -> &str {
        &self.first.user
    }

    /// Checks a client-final message; on success returns the server-final message.
    pub fn finish(self, message: &[u8]) -> Result<Vec<u8>, SaslError> {
        let mechanism = self.mechanism;
        let last = parse_client_final(mechanism, message)?;
        if last.channel_binding != self.first.gs2_header.as_bytes() {
            return Err(malformed(
                mechanism,
                "channel binding differs from the GS2 header",
            ));
        }
        // Kafka accepts a nonce that ends with the agreed one, and librdkafka 2.0 relies on it:
        // it sends its own nonce in front of the combined one. The proof covers what was sent.
        if !last.nonce.ends_with(&self.nonce) {
            return Err(malformed(mechanism, "nonce differs from the one agreed"));
        }
        let invalid = || SaslError::InvalidCredentials {
            user: self.first.user.clone(),
        };
        let Some(credential) = &self.credential else {
            return Err(invalid());
        };
        let auth_message = format!(
            "{},{},{}",
            self.first.bare, self.server_first, last.without_proof
        );
        let signature = mechanism.hmac(&credential.stored_key, auth_message.as_bytes());
        if last.proof.len() != signature.len() {
            return Err(invalid());
        }
        let client_key: Vec<u8> = last
            .proof
            .iter()
            .zip(&signature)
            .map(|(proof, signature)| proof ^ signature)
            .collect();
        if !bool::from(mechanism.hash(&client_key).ct_eq(&credential.stored_key)) {
            return Err(invalid());
        }
        let server_signature = mechanism.hmac(&credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

/// Runs the SCRAM and PLAIN parsers on arbitrary bytes: the body of the SASL fuzz target and
/// its proptest. Must return without panicking.
#[doc(hidden)]
pub fn fuzz_sasl(data: &[u8]) {
    let _ = parse_plain(data);
    for mechanism in Mechanism::ALL {
        if let Ok(first) = parse_client_first(mechanism, data) {
            let credential = ScramCredential::from_salted_password(mechanism, b"x", vec![1], 4096);
            let server = ScramServer::start(mechanism, first, Some(credential));
            let _ = server.finish(data);
        }
        let _ = parse_client_final(mechanism, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SCRAM client, written from RFC 5802 to check the server against.
    fn client_final(
        mechanism: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let mut fields = server_first.split(',');
        let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
        let salt = BASE64
            .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = fields
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mechanism.hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = mechanism.hmac(&salted, b"Server Key");
        let expected = format!(
            "v={}",
            BASE64.encode(mechanism.hmac(&server_key, auth.as_bytes()))
        );
        (
            format!("{without_proof},p={}", BASE64.encode(proof)),
            expected.into_bytes(),
        )
    }

    fn exchange(mechanism: Mechanism, stored: Option<&str>, tried: &str) -> Result<(), SaslError> {
        let first = parse_client_first(mechanism, b"n,,n=al=2Cice,r=fyko+d2lbbFgONRv9qkxdawL")?;
        assert_eq!(first.user, "al,ice");
        let credential = stored.map(|password| ScramCredential::new(mechanism, password, 4096));
        let server = ScramServer::start(mechanism, first, credential);
        let server_first = String::from_utf8(server.server_first().to_vec()).unwrap();
        let (last, expected) = client_final(
            mechanism,
            tried,
            "n=al=2Cice,r=fyko+d2lbbFgONRv9qkxdawL",
            &server_first,
        );
        let server_final = server.finish(last.as_bytes())?;
        assert_eq!(server_final, expected);
        Ok(())
    }

    #[test]
    fn scram_accepts_the_password_and_refuses_others() {
        for mechanism in Mechanism::ALL {
            exchange(mechanism, Some("pencil"), "pencil").unwrap();
            assert!(matches!(
                exchange(mechanism, Some("pencil"), "pen"),
                Err(SaslError::InvalidCredentials { .. })
            ));
            assert!(matches!(
                exchange(mechanism, None, "pencil"),
                Err(SaslError::InvalidCredentials { .. })
            ));
        }
    }

    #[test]
    fn rfc7677_vector_derives_the_same_keys() {
        // RFC 7677 section 3: user "user", password "pencil".
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = Mechanism::Sha256.salted_password(b"pencil", &salt, 4096);
        let credential =
            ScramCredential::from_salted_password(Mechanism::Sha256, &salted, salt, 4096);
        let first =
            parse_client_first(Mechanism::Sha256, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        let mut server = ScramServer::start(Mechanism::Sha256, first, Some(credential));
        // Pin the server nonce to the RFC's.
        server.nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_string();
        server.server_first = format!("r={},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", server.nonce);
        let last = b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            server.finish(last).unwrap(),
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    #[test]
    fn malformed_and_unsupported_messages_are_refused() {
        let m = Mechanism::Sha512;
        for message in [
            &b""[..],
            b"n,,",
            b"x,,n=a,r=b",
            b"n,,n=a",
            b"n,,n=a=,r=b",
            b"n,,r=b",
            b"n,,n=,r=b",
        ] {
            assert!(parse_client_first(m, message).is_err(), "{message:?}");
        }
        assert_eq!(
            parse_client_first(m, b"p=tls-unique,,n=a,r=b"),
            Err(SaslError::Unsupported("channel binding"))
        );
        assert!(parse_client_first(m, b"n,,n=a,r=b,tokenauth=true").is_err());
        assert!(parse_client_first(m, b"n,a=a,n=a,r=b").is_ok());
        assert!(parse_client_first(m, b"n,a=b,n=a,r=b").is_err());
        assert!(parse_client_final(m, b"c=biws,r=x").is_err());
        assert!(parse_client_final(m, b"c=!!,r=x,p=AAAA").is_err());
    }

    #[test]
    fn plain_parses_three_fields_and_checks_the_stored_credential() {
        let message = parse_plain(b"\0alice\0secret").unwrap();
        assert_eq!(message.user, "alice");
        assert!(parse_plain(b"bob\0alice\0secret").is_err());
        assert!(parse_plain(b"alice\0secret").is_err());
        assert!(parse_plain(b"\0alice\0").is_err());
        let credential = ScramCredential::new(Mechanism::Sha256, "secret", 4096);
        assert!(credential.matches_password(Mechanism::Sha256, "secret"));
        assert!(!credential.matches_password(Mechanism::Sha256, "Secret"));
    }

    proptest::proptest! {
        #[test]
        fn sasl_parsers_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            fuzz_sasl(&data);
        }

        #[test]
        fn sasl_parsers_never_panic_on_near_messages(
            user in "[a-z=,]{0,8}", nonce in "[ -~]{0,12}", tail in "[ -~]{0,16}"
        ) {
            fuzz_sasl(format!("n,,n={user},r={nonce}{tail}").as_bytes());
            fuzz_sasl(format!("c=biws,r={nonce},p={tail}").as_bytes());
        }
    }
}

//! Direct over TLS with certificates made here (rcgen): members and producers with
//! certificates from the group's CA work together; anyone else is refused by the other side.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_direct::tls::{MemberTls, PublisherTls, TlsFiles};
use herald_direct::{
    BoxFuture, Handler, HandlerError, Member, MemberConfig, MemberState, Message, PublishError,
    Publisher, PublisherConfig, Received, RequestContext,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use crate::harness::{Recorder, eventually, wait_up};

/// `ca.pem` signs `member` and `producer`; `other-ca.pem` signs `rogue-member` and
/// `rogue-producer`. Member certificates name `member.herald`, not an address.
fn pki(dir: &Path) {
    let (group, group_pem) = ca("Herald group CA");
    let (other, other_pem) = ca("Unrelated CA");
    std::fs::write(dir.join("ca.pem"), group_pem).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other_pem).unwrap();
    for (name, issuer) in [
        ("member", &group),
        ("producer", &group),
        ("rogue-member", &other),
        ("rogue-producer", &other),
    ] {
        let mut params = CertificateParams::new(vec!["member.herald".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), certificate.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let certificate = params.self_signed(&key).unwrap();
    (Issuer::new(params, key), certificate.pem())
}

fn files(dir: &Path, ca: &str, who: Option<&str>) -> TlsFiles {
    let path = |s: String| -> PathBuf { dir.join(s) };
    TlsFiles {
        ca: path(format!("{ca}.pem")),
        certificate: who.map(|w| path(format!("{w}.pem"))),
        key: who.map(|w| path(format!("{w}.key"))),
    }
}

/// Records events and answers requests with their value reversed.
struct Echo(Arc<Recorder>);

impl Handler for Echo {
    fn on_event(&self, event: Received) -> BoxFuture<Result<(), HandlerError>> {
        self.0.seen.lock().push(event);
        Box::pin(async { Ok(()) })
    }

    fn on_request(
        &self,
        request: Received,
        _ctx: RequestContext,
    ) -> BoxFuture<Result<Bytes, HandlerError>> {
        let mut value = request.value.to_vec();
        value.reverse();
        Box::pin(async move { Ok(Bytes::from(value)) })
    }
}

async fn member(dir: &Path, who: &str, rec: &Arc<Recorder>) -> Member {
    let mut config = MemberConfig::new("orders", "g", "127.0.0.1:0".parse().unwrap());
    config.tls = Some(MemberTls::load(&files(dir, "ca", Some(who))).unwrap());
    config.handshake_timeout_ms = 2_000;
    Member::start(config, Arc::new(Echo(rec.clone())))
        .await
        .unwrap()
}

async fn publisher(m: &Member, tls: PublisherTls) -> Publisher {
    let mut config = PublisherConfig::new(vec![m.local_addr()]);
    config.tls = Some(tls);
    config.reconnect_interval_ms = 50;
    Publisher::start(config).await.unwrap()
}

/// Waits until the publisher's only member shows an error, checks it never came up and that a
/// publish fails; returns the error.
async fn refused(p: &Publisher) -> String {
    let seen = eventually(Duration::from_secs(5), || {
        p.members().first().is_some_and(|m| m.last_error.is_some())
    })
    .await;
    let view = p.members();
    assert!(seen, "no error: {view:?}");
    assert_ne!(view[0].state, MemberState::Up);
    let err = p
        .publish(Message::new("orders", "x"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::NoLiveMember { .. }), "{err}");
    view[0].last_error.clone().unwrap_or_default()
}

#[tokio::test]
async fn a_member_and_a_producer_of_the_group_deliver_and_answer_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let rec = Recorder::new();
    let m = member(dir.path(), "member", &rec).await;
    // Without a server name (the member is reached by address) and with the certificate's.
    for name in [None, Some("member.herald")] {
        let tls = PublisherTls::load(&files(dir.path(), "ca", Some("producer")), name).unwrap();
        let p = publisher(&m, tls).await;
        wait_up(&p, 1).await;
        for i in 0..50 {
            p.publish(
                Message::new("orders", format!("o{i}")),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        }
        let answer = p
            .request(Message::new("orders", "abc"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(answer, Bytes::from_static(b"cba"));
    }
    assert_eq!(rec.values().len(), 100);
    assert_eq!(m.stats().auth_failures, 0);
}

#[tokio::test]
async fn a_producer_without_a_certificate_of_the_group_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let rec = Recorder::new();
    let m = member(dir.path(), "member", &rec).await;
    for who in [None, Some("rogue-producer")] {
        let failures = m.stats().auth_failures;
        let tls = PublisherTls::load(&files(dir.path(), "ca", who), None).unwrap();
        let p = publisher(&m, tls).await;
        let error = refused(&p).await;
        assert!(error.contains("alert"), "{who:?}: {error}");
        assert!(
            eventually(Duration::from_secs(5), || m.stats().auth_failures
                > failures)
            .await,
            "{who:?}"
        );
    }
    // A producer without TLS at all does not get through either.
    let failures = m.stats().auth_failures;
    let plain = Publisher::start(PublisherConfig::new(vec![m.local_addr()]))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            plain
                .members()
                .first()
                .is_some_and(|v| v.last_error.is_some())
        })
        .await
    );
    assert_ne!(plain.members()[0].state, MemberState::Up);
    assert!(
        eventually(Duration::from_secs(5), || m.stats().auth_failures
            > failures)
        .await
    );
    assert!(rec.values().is_empty());
}

#[tokio::test]
async fn a_member_with_a_certificate_from_another_ca_or_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let rec = Recorder::new();
    // Signed by another CA: refused by the producer whatever the name.
    let rogue = member(dir.path(), "rogue-member", &rec).await;
    let tls = PublisherTls::load(&files(dir.path(), "ca", Some("producer")), None).unwrap();
    let error = refused(&publisher(&rogue, tls).await).await;
    assert!(error.contains("certificate"), "{error}");
    // The group's member, but the producer asks for another name.
    let honest = member(dir.path(), "member", &rec).await;
    let tls = PublisherTls::load(
        &files(dir.path(), "ca", Some("producer")),
        Some("elsewhere.herald"),
    )
    .unwrap();
    let error = refused(&publisher(&honest, tls).await).await;
    assert!(error.contains("certificate"), "{error}");
    assert!(rec.values().is_empty());
}

#[tokio::test]
async fn tls_and_a_group_key_together_need_both() {
    use herald_direct::handshake::GroupKey;
    use herald_direct::keys::SecretKey;
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let key = |b: u8| GroupKey::new(&SecretKey::from_bytes([b; 32]));
    let rec = Recorder::new();
    let mut config = MemberConfig::new("orders", "g", "127.0.0.1:0".parse().unwrap());
    config.tls = Some(MemberTls::load(&files(dir.path(), "ca", Some("member"))).unwrap());
    config.group_key = Some(key(1));
    let m = Member::start(config, Arc::new(Echo(rec.clone())))
        .await
        .unwrap();
    let producer = |group_key: GroupKey| {
        let mut config = PublisherConfig::new(vec![m.local_addr()]);
        config.tls =
            Some(PublisherTls::load(&files(dir.path(), "ca", Some("producer")), None).unwrap());
        config.group_key = Some(group_key);
        config.reconnect_interval_ms = 50;
        Publisher::start(config)
    };
    let good = producer(key(1)).await.unwrap();
    wait_up(&good, 1).await;
    good.publish(Message::new("orders", "both"), Duration::from_secs(5))
        .await
        .unwrap();
    // The right certificate but the wrong group key: refused inside the TLS session.
    let error = refused(&producer(key(2)).await.unwrap()).await;
    assert!(error.contains("handshake"), "{error}");
    assert_eq!(rec.values(), vec!["both".to_string()]);
    assert!(eventually(Duration::from_secs(5), || m.stats().auth_failures >= 1).await);
}

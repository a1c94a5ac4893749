//! A test PKI: a CA per instance, server certificates for chosen hosts and
//! client certificates for chosen principals, including the broken kinds the
//! handshake must refuse (expired, from another CA, without an identity).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// A certificate and its key, both PEM.
#[derive(Debug, Clone)]
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// One certificate authority.
#[derive(Debug)]
pub struct TestPki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestPki {
    pub fn new(name: &str) -> TestPki {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        valid_now(&mut params);
        let cert = params.self_signed(&key).unwrap();
        TestPki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn sign(&self, params: &CertificateParams) -> Pem {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `hosts` (DNS names or IP addresses).
    pub fn server(&self, hosts: &[&str]) -> Pem {
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        valid_now(&mut params);
        self.sign(&params)
    }

    /// A client certificate for `principal`: URI SAN when it contains
    /// `://`, else the subject CN.
    pub fn client(&self, principal: &str) -> Pem {
        self.sign(&client_params(principal))
    }

    /// A client certificate that expired yesterday.
    pub fn expired_client(&self, principal: &str) -> Pem {
        let mut params = client_params(principal);
        params.not_before = OffsetDateTime::now_utc() - Duration::days(30);
        params.not_after = OffsetDateTime::now_utc() - Duration::days(1);
        self.sign(&params)
    }

    /// A valid client certificate that names nobody (no URI SAN, no CN).
    pub fn anonymous_client(&self) -> Pem {
        let mut params = CertificateParams::new(vec!["client.invalid".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        valid_now(&mut params);
        self.sign(&params)
    }
}

fn client_params(principal: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    if principal.contains("://") {
        params.subject_alt_names = vec![SanType::URI(principal.try_into().unwrap())];
        params
            .distinguished_name
            .push(DnType::CommonName, "ignored-when-a-uri-san-exists");
    } else {
        params
            .distinguished_name
            .push(DnType::CommonName, principal);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    valid_now(&mut params);
    params
}

fn valid_now(params: &mut CertificateParams) {
    params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
    params.not_after = OffsetDateTime::now_utc() + Duration::days(1);
}

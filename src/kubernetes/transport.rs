//! The connection under the Kubernetes client: TLS to the API server and the credentials a
//! kubeconfig or a pod's ServiceAccount gives, without running credential plugins.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper::{Request, Uri};
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ConfigExt as _};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tower_layer::Layer as _;

use crate::small_file::{self, ReadError};
use crate::trust::TrustError;

/// How long a token file or a CA file read is used before it is read again. A ServiceAccount
/// token is rotated by the kubelet well before it expires; the cluster CA changes rarely.
const REREAD: Duration = Duration::from_secs(60);

/// Largest token, certificate or key file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Why the Kubernetes client cannot be built from the configuration found.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("the kubeconfig user authenticates with {0}, which fiskil-token-refresher does not run; give that user a token, a tokenFile or a client certificate (a ServiceAccount token from `kubectl create token` works), or run it in a pod with a ServiceAccount")]
    UnsupportedAuth(&'static str),
    #[error("the kubeconfig cluster sets insecure-skip-tls-verify, and fiskil-token-refresher always verifies the API server; give its CA as certificate-authority-data instead")]
    Insecure,
    #[error("the kubeconfig sets proxy-url, which fiskil-token-refresher does not use; reach the API server directly")]
    Proxy,
    #[error("the Kubernetes API server {0} is plain http:// and not on loopback; credentials are sent only over TLS or to loopback")]
    PlainHttp(String),
    #[error("cannot read the Kubernetes {what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("the Kubernetes {what} cannot be used: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("the kubeconfig's tls-server-name {0:?} is not a valid server name")]
    ServerName(String),
    #[error("cannot build the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// A client for `config`'s API server. Server certificates are checked against the
/// configuration's CA (re-read every minute when it names a file, as in a pod), else against
/// `default_roots`; a token file is re-read every minute.
pub(crate) fn client(
    config: &kube::Config,
    default_roots: impl FnOnce() -> Result<Arc<RootCertStore>, TransportError>,
) -> Result<kube::Client, TransportError> {
    client_rereading(config, default_roots, REREAD)
}

/// [`client`], reading a token file or a CA file again once the last read is `every` old.
fn client_rereading(
    config: &kube::Config,
    default_roots: impl FnOnce() -> Result<Arc<RootCertStore>, TransportError>,
    every: Duration,
) -> Result<kube::Client, TransportError> {
    let auth = &config.auth_info;
    if auth.exec.is_some() {
        return Err(TransportError::UnsupportedAuth("an exec credential plugin"));
    }
    if auth.auth_provider.is_some() {
        return Err(TransportError::UnsupportedAuth("an auth-provider"));
    }
    if auth.username.is_some() || auth.password.is_some() {
        return Err(TransportError::UnsupportedAuth("a username and password"));
    }
    if config.accept_invalid_certs {
        return Err(TransportError::Insecure);
    }
    if config.proxy_url.is_some() {
        return Err(TransportError::Proxy);
    }
    let https = config.cluster_url.scheme_str() == Some("https");
    if !https && !is_loopback(&config.cluster_url) {
        // Host and port only: a URL's user information may hold a password.
        let url = &config.cluster_url;
        let port = url.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
        let host = url.host().unwrap_or_default();
        return Err(TransportError::PlainHttp(format!("http://{host}{port}")));
    }
    let credential = Credential::new(auth, every)?;
    let tls = tls_config(config, default_roots, every)?;
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = ServerName::try_from(name.clone())
            .map_err(|_| TransportError::ServerName(name.clone()))?;
        builder =
            builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let mut connector = TimeoutConnector::new(builder.enable_http1().wrap_connector(tcp));
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http = HyperClient::builder(TokioExecutor::new()).build(connector);
    let headers = config
        .extra_headers_layer()
        .map_err(TransportError::Client)?;
    let service = config.base_uri_layer().layer(headers.layer(Authorize {
        inner: http,
        credential: Arc::new(credential),
    }));
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

fn is_loopback(uri: &Uri) -> bool {
    let host = uri.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The TLS configuration: the CA, and the client certificate when the user has one.
fn tls_config(
    config: &kube::Config,
    default_roots: impl FnOnce() -> Result<Arc<RootCertStore>, TransportError>,
    every: Duration,
) -> Result<rustls::ClientConfig, TransportError> {
    let builder = rustls::ClientConfig::builder();
    let builder = match (&config.root_cert_file, &config.root_cert) {
        (Some(path), _) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ReloadingCa::new(path.clone(), every)?)),
        (None, Some(ders)) => builder.with_root_certificates(Arc::new(root_store(
            ders.iter().map(|der| CertificateDer::from(der.as_slice())),
        )?)),
        (None, None) => builder.with_root_certificates(default_roots()?),
    };
    match identity(&config.auth_info)? {
        Some((chain, key)) => {
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TransportError::Invalid {
                    what: "client certificate",
                    reason: e.to_string(),
                })
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

fn root_store<'a>(
    certs: impl IntoIterator<Item = CertificateDer<'a>>,
) -> Result<RootCertStore, TransportError> {
    let mut store = RootCertStore::empty();
    for cert in certs {
        store.add(cert).map_err(|e| TransportError::Invalid {
            what: "CA certificate",
            reason: e.to_string(),
        })?;
    }
    if store.is_empty() {
        return Err(TransportError::Invalid {
            what: "CA certificate",
            reason: "no certificate found".to_owned(),
        });
    }
    Ok(store)
}

/// The user's client certificate chain and key, from the kubeconfig's data or files.
#[allow(clippy::type_complexity)]
fn identity(
    auth: &kube::config::AuthInfo,
) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TransportError> {
    use secrecy::ExposeSecret as _;
    let cert = pem_source(
        "client certificate",
        auth.client_certificate_data.as_deref(),
        auth.client_certificate.as_deref(),
    )?;
    let key = pem_source(
        "client key",
        auth.client_key_data.as_ref().map(|k| k.expose_secret()),
        auth.client_key.as_deref(),
    )?;
    let (cert, key) = match (cert, key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            return Err(TransportError::Invalid {
                what: "client certificate",
                reason: "the kubeconfig user has a certificate or a key, not both".to_owned(),
            });
        }
    };
    let chain = rustls_pemfile::certs(&mut cert.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|chain| !chain.is_empty())
        .ok_or_else(|| TransportError::Invalid {
            what: "client certificate",
            reason: "no PEM certificate found".to_owned(),
        })?;
    let key = rustls_pemfile::private_key(&mut key.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| TransportError::Invalid {
            what: "client key",
            reason: "no PEM private key found".to_owned(),
        })?;
    Ok(Some((chain, key)))
}

/// PEM text from base64 `data`, else from the file at `path`.
fn pem_source(
    what: &'static str,
    data: Option<&str>,
    path: Option<&str>,
) -> Result<Option<Vec<u8>>, TransportError> {
    if let Some(data) = data {
        let compact: String = data.split_whitespace().collect();
        return base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map(Some)
            .map_err(|e| TransportError::Invalid {
                what,
                reason: format!("its data is not base64: {e}"),
            });
    }
    path.map(|path| read_file(what, Path::new(path)))
        .transpose()
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, TransportError> {
    small_file::read_regular(path, MAX_FILE_BYTES).map_err(|e| TransportError::File {
        what,
        path: path.to_owned(),
        reason: match e {
            ReadError::NotRegular(kind) => format!("it is {kind}, not a regular file"),
            ReadError::TooLarge => format!("it holds more than {MAX_FILE_BYTES} bytes"),
            ReadError::Io(e) => e.to_string(),
        },
    })
}

/// What each request carries to authenticate, besides a client certificate.
enum Credential {
    None,
    Bearer(HeaderValue),
    /// A token file, read again once the last read is `every` old.
    TokenFile {
        path: PathBuf,
        every: Duration,
        last: Mutex<(HeaderValue, Instant)>,
    },
}

impl Credential {
    fn new(auth: &kube::config::AuthInfo, every: Duration) -> Result<Credential, TransportError> {
        use secrecy::ExposeSecret as _;
        if let Some(token) = &auth.token {
            return bearer(token.expose_secret()).map(Credential::Bearer).ok_or(
                TransportError::Invalid {
                    what: "token",
                    reason: "it is empty or holds characters a header cannot carry".to_owned(),
                },
            );
        }
        let Some(path) = &auth.token_file else {
            return Ok(Credential::None);
        };
        let path = PathBuf::from(path);
        let header = read_token(&path)?;
        Ok(Credential::TokenFile {
            path,
            every,
            last: Mutex::new((header, Instant::now())),
        })
    }

    /// The `Authorization` value for the next request.
    fn header(&self) -> Option<HeaderValue> {
        match self {
            Credential::None => None,
            Credential::Bearer(header) => Some(header.clone()),
            Credential::TokenFile { path, every, last } => {
                let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                if last.1.elapsed() >= *every {
                    // A token file being rotated may read as nothing for a moment: the last
                    // token stays in use and the file is read again a minute later.
                    match read_token(path) {
                        Ok(header) => last.0 = header,
                        Err(e) => tracing::warn!(error = %e, "kept the last Kubernetes token"),
                    }
                    last.1 = Instant::now();
                }
                Some(last.0.clone())
            }
        }
    }
}

fn read_token(path: &Path) -> Result<HeaderValue, TransportError> {
    let bytes = read_file("token file", path)?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| bearer(text.trim()))
        .ok_or_else(|| TransportError::File {
            what: "token file",
            path: path.to_owned(),
            reason: "it is empty or holds characters a header cannot carry".to_owned(),
        })
}

/// `Bearer <token>`, marked sensitive so that no debug output shows it.
fn bearer(token: &str) -> Option<HeaderValue> {
    if token.is_empty() {
        return None;
    }
    let mut header = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    header.set_sensitive(true);
    Some(header)
}

/// Adds the credential's `Authorization` header to each request.
#[derive(Clone)]
struct Authorize<S> {
    inner: S,
    credential: Arc<Credential>,
}

impl<S> tower_service::Service<Request<Body>> for Authorize<S>
where
    S: tower_service::Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if let Some(header) = self.credential.header() {
            request.headers_mut().insert(AUTHORIZATION, header);
        }
        self.inner.call(request)
    }
}

/// Verifies the API server against the CA file a pod mounts, read again once the last read is
/// a minute old, so that a rotated cluster CA is trusted without a restart. A file that cannot
/// be read or holds no certificate keeps the CA read last.
#[derive(Debug)]
struct ReloadingCa {
    path: PathBuf,
    every: Duration,
    current: Mutex<(Arc<WebPkiServerVerifier>, Instant)>,
}

impl ReloadingCa {
    fn new(path: PathBuf, every: Duration) -> Result<ReloadingCa, TransportError> {
        let verifier = ca_verifier(&path)?;
        Ok(ReloadingCa {
            path,
            every,
            current: Mutex::new((verifier, Instant::now())),
        })
    }

    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.1.elapsed() >= self.every {
            match ca_verifier(&self.path) {
                Ok(verifier) => current.0 = verifier,
                Err(e) => tracing::warn!(error = %e, "kept the last Kubernetes CA"),
            }
            current.1 = Instant::now();
        }
        Arc::clone(&current.0)
    }
}

fn ca_verifier(path: &Path) -> Result<Arc<WebPkiServerVerifier>, TransportError> {
    let pem = read_file("CA file", path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TransportError::File {
            what: "CA file",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    let roots = root_store(certs)?;
    WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| TransportError::Invalid {
            what: "CA certificate",
            reason: e.to_string(),
        })
}

impl ServerCertVerifier for ReloadingCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fiskil_stand_in::StandIn;

    fn work_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("fiskil-transport-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn no_roots() -> Result<Arc<RootCertStore>, TransportError> {
        panic!("the configuration's own CA should have been used")
    }

    fn config(url: &str) -> kube::Config {
        let mut config = kube::Config::new(url.parse().unwrap());
        config.root_cert = Some(vec![b"unused".to_vec()]);
        config
    }

    fn refusal(config: &kube::Config) -> String {
        match client(config, no_roots) {
            Ok(_) => panic!("a client was built"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn credentials_it_would_have_to_run_or_send_in_the_clear_are_refused() {
        let mut exec = config("https://api.example:6443");
        exec.auth_info.exec = Some(Default::default());
        assert!(refusal(&exec)
            .contains("an exec credential plugin, which fiskil-token-refresher does not run"));
        let mut provider = config("https://api.example:6443");
        provider.auth_info.auth_provider = Some(kube::config::AuthProviderConfig {
            name: "gcp".into(),
            config: Default::default(),
            other: Default::default(),
        });
        assert!(refusal(&provider).contains("an auth-provider"));
        let mut basic = config("https://api.example:6443");
        basic.auth_info.username = Some("admin".into());
        assert!(refusal(&basic).contains("a username and password"));
        let mut insecure = config("https://api.example:6443");
        insecure.accept_invalid_certs = true;
        assert!(refusal(&insecure).contains("insecure-skip-tls-verify"));
        let mut proxied = config("https://api.example:6443");
        proxied.proxy_url = Some("http://user:hunter2@proxy:3128".parse().unwrap());
        let message = refusal(&proxied);
        assert!(message.contains("proxy-url"));
        assert!(!message.contains("hunter2"), "{message}");
        let plain = config("http://admin:hunter2@api.example:8080");
        let message = refusal(&plain);
        assert!(
            message.contains("http://api.example:8080 is plain http:// and not on loopback"),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
        for loopback in [
            "http://127.0.0.1:8001",
            "http://[::1]:8001",
            "http://localhost:8001",
        ] {
            let mut local = kube::Config::new(loopback.parse().unwrap());
            local.auth_info.token = Some("t".to_owned().into());
            client(&local, || Ok(Arc::new(RootCertStore::empty()))).expect(loopback);
        }
    }

    #[test]
    fn a_token_file_is_read_again_and_a_bad_read_keeps_the_last_token() {
        let dir = work_dir("token");
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let auth = kube::config::AuthInfo {
            token_file: Some(path.to_str().unwrap().to_owned()),
            ..Default::default()
        };
        let every_time = Credential::new(&auth, Duration::ZERO).unwrap();
        let once_a_minute = Credential::new(&auth, REREAD).unwrap();
        let value =
            |credential: &Credential| credential.header().unwrap().to_str().unwrap().to_owned();
        assert_eq!(value(&every_time), "Bearer first");
        assert!(every_time.header().unwrap().is_sensitive());
        std::fs::write(&path, "second").unwrap();
        assert_eq!(value(&every_time), "Bearer second");
        assert_eq!(value(&once_a_minute), "Bearer first");
        std::fs::write(&path, "  \n").unwrap();
        assert_eq!(value(&every_time), "Bearer second");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(value(&every_time), "Bearer second");
        let missing = Credential::new(&auth, REREAD).err().unwrap().to_string();
        assert!(
            missing.contains("cannot read the Kubernetes token file"),
            "{missing}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_client_certificate_comes_from_data_or_files_and_needs_its_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["writer".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        let b64 = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
        let from_data = kube::config::AuthInfo {
            client_certificate_data: Some(b64(&cert_pem)),
            client_key_data: Some(b64(&key_pem).into()),
            ..Default::default()
        };
        let (chain, _) = identity(&from_data).unwrap().unwrap();
        assert_eq!(chain, vec![cert.der().clone()]);

        let dir = work_dir("identity");
        let (cert_file, key_file) = (dir.join("client.crt"), dir.join("client.key"));
        std::fs::write(&cert_file, &cert_pem).unwrap();
        std::fs::write(&key_file, &key_pem).unwrap();
        let from_files = kube::config::AuthInfo {
            client_certificate: Some(cert_file.to_str().unwrap().to_owned()),
            client_key: Some(key_file.to_str().unwrap().to_owned()),
            ..Default::default()
        };
        let (chain, _) = identity(&from_files).unwrap().unwrap();
        assert_eq!(chain, vec![cert.der().clone()]);

        let error = |auth: &kube::config::AuthInfo| identity(auth).err().unwrap().to_string();
        let no_key = kube::config::AuthInfo {
            client_certificate_data: Some(b64(&cert_pem)),
            ..Default::default()
        };
        assert!(error(&no_key).contains("a certificate or a key, not both"));
        let not_base64 = kube::config::AuthInfo {
            client_certificate_data: Some("%%%".to_owned()),
            client_key_data: Some(b64(&key_pem).into()),
            ..Default::default()
        };
        assert!(error(&not_base64)
            .contains("client certificate cannot be used: its data is not base64"));
        let swapped = kube::config::AuthInfo {
            client_certificate: Some(key_file.to_str().unwrap().to_owned()),
            client_key: Some(cert_file.to_str().unwrap().to_owned()),
            ..Default::default()
        };
        assert!(error(&swapped).contains("no PEM certificate found"));
        let missing = kube::config::AuthInfo {
            client_certificate: Some(dir.join("nope").to_str().unwrap().to_owned()),
            client_key: Some(key_file.to_str().unwrap().to_owned()),
            ..Default::default()
        };
        assert!(error(&missing).contains("cannot read the Kubernetes client certificate"));
        assert!(identity(&Default::default()).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Sends one request; the stand-in's API side answers 401 to the tokens it did not issue,
    /// which still shows that the TLS handshake passed and the token arrived.
    async fn send(client: &kube::Client) -> Result<(), kube::Error> {
        let request = http::Request::get("/api/v1/namespaces")
            .body(Vec::new())
            .unwrap();
        client.request_text(request).await.map(drop)
    }

    #[tokio::test]
    async fn the_api_server_is_checked_against_the_ca_file_read_again_after_a_rotation() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (old, new) = (StandIn::start("c", "s", 900), StandIn::start("c", "s", 900));
        new.enable_api();
        let dir = work_dir("ca");
        let (ca_file, token_file) = (dir.join("ca.crt"), dir.join("token"));
        std::fs::write(&ca_file, old.ca_pem()).unwrap();
        std::fs::write(&token_file, "pod-token").unwrap();
        let url = format!("https://localhost:{}", new.addr().port());
        let mut config = kube::Config::new(url.parse().unwrap());
        config.root_cert_file = Some(ca_file.clone());
        config.auth_info.token_file = Some(token_file.to_str().unwrap().to_owned());
        let client = client_rereading(&config, no_roots, Duration::ZERO).unwrap();

        let untrusted = send(&client).await.unwrap_err();
        assert!(
            format!("{untrusted:?}").contains("InvalidCertificate"),
            "{untrusted:?}"
        );
        assert!(new.api_seen().is_empty());

        std::fs::write(&ca_file, new.ca_pem()).unwrap();
        let answered = send(&client).await.unwrap_err();
        assert!(matches!(&answered, kube::Error::Api(_)), "{answered:?}");
        let seen = new.api_seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].token.as_deref(), Some("pod-token"));
        assert_eq!(seen[0].path, "/api/v1/namespaces");
        assert_eq!(seen[0].status, 401);

        std::fs::write(&ca_file, "not a certificate").unwrap();
        let kept = send(&client).await.unwrap_err();
        assert!(matches!(&kept, kube::Error::Api(_)), "{kept:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

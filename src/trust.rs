//! The certificate authorities trusted for HTTPS: the built-in Mozilla roots, `--ca-file`, and
//! the `SSL_CERT_FILE` / `SSL_CERT_DIR` bundles that cluster tooling hands a process.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The environment variables naming extra trust bundles, as OpenSSL reads them.
pub(crate) const SSL_CERT_FILE: &str = "SSL_CERT_FILE";
pub(crate) const SSL_CERT_DIR: &str = "SSL_CERT_DIR";

/// Where trusted certificate authorities come from, besides the built-in roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrustSources {
    /// `--ca-file`.
    pub ca_file: Option<PathBuf>,
    /// `SSL_CERT_FILE`: one PEM bundle.
    pub cert_file: Option<PathBuf>,
    /// `SSL_CERT_DIR`: directories (`:`-separated) whose files hold PEM certificates.
    pub cert_dirs: Vec<PathBuf>,
}

/// A trust bundle that cannot be used; names where it came from.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {origin} {path}: {source}")]
    Read {
        origin: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{origin} {path} holds no PEM certificate; give a PEM bundle (-----BEGIN CERTIFICATE-----)"
    )]
    Empty { origin: &'static str, path: PathBuf },
    #[error("{origin} {path} holds a certificate that cannot be used: {reason}")]
    Invalid {
        origin: &'static str,
        path: PathBuf,
        reason: String,
    },
}

impl TrustSources {
    /// `--ca-file` plus the bundles named by `env` (`SSL_CERT_FILE`, `SSL_CERT_DIR`); empty
    /// variables count as unset.
    pub(crate) fn new(
        ca_file: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> TrustSources {
        let set = |name| env(name).filter(|value: &String| !value.is_empty());
        TrustSources {
            ca_file,
            cert_file: set(SSL_CERT_FILE).map(PathBuf::from),
            cert_dirs: set(SSL_CERT_DIR)
                .map(|dirs| {
                    dirs.split(':')
                        .filter(|d| !d.is_empty())
                        .map(PathBuf::from)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The root store: built-in roots plus every configured bundle.
    ///
    /// Each file is read once however many sources name it (`SSL_CERT_DIR` usually holds the
    /// `SSL_CERT_FILE` bundle, each certificate's own file and a hash-named link to it), and a
    /// certificate already trusted (a built-in root, or one seen in another file) is not added
    /// again: the store holds each trust anchor once, which is what verification uses.
    pub(crate) fn root_store(&self) -> Result<rustls::RootCertStore, TrustError> {
        let mut roots = Roots::new();
        if let Some(path) = &self.ca_file {
            roots.add_bundle("--ca-file", path, true)?;
        }
        if let Some(path) = &self.cert_file {
            roots.add_bundle(SSL_CERT_FILE, path, true)?;
        }
        for dir in &self.cert_dirs {
            let entries = std::fs::read_dir(dir).map_err(|source| TrustError::Read {
                origin: SSL_CERT_DIR,
                path: dir.clone(),
                source,
            })?;
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            let mut found = 0;
            for file in &files {
                found += roots.add_bundle(SSL_CERT_DIR, file, false)?;
            }
            if found == 0 {
                return Err(TrustError::Empty {
                    origin: SSL_CERT_DIR,
                    path: dir.clone(),
                });
            }
        }
        tracing::debug!(
            roots = roots.store.len(),
            files = roots.files.len(),
            "trust roots loaded"
        );
        Ok(roots.store)
    }

    /// [`Self::root_store`], read once for all the clients that trust the same sources (the
    /// token client, the proxy and the notifications share one store).
    pub(crate) fn shared_root_store(&self) -> Result<Arc<rustls::RootCertStore>, TrustError> {
        static SHARED: Mutex<Option<(TrustSources, Arc<rustls::RootCertStore>)>> = Mutex::new(None);
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((sources, store)) = shared.as_ref() {
            if sources == self {
                return Ok(Arc::clone(store));
            }
        }
        let store = Arc::new(self.root_store()?);
        *shared = Some((self.clone(), Arc::clone(&store)));
        Ok(store)
    }

    /// A TLS client configuration trusting [`Self::root_store`]. It offers no ALPN protocol,
    /// so connections speak HTTP/1.1 (the HTTP clients that take it add their own if needed).
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, TrustError> {
        Ok(rustls::ClientConfig::builder()
            .with_root_certificates(self.shared_root_store()?)
            .with_no_client_auth())
    }
}

/// A root store being filled: which files were read, and each anchor once.
struct Roots {
    store: rustls::RootCertStore,
    /// Files read, by device and inode.
    files: HashSet<(u64, u64)>,
    /// Positions in `store` by the hash of their anchor's subject.
    index: HashMap<u64, Vec<usize>>,
    /// Hashes of the PEM blocks decoded so far.
    decoded: HashSet<u64>,
    /// The contents of the file being read.
    buffer: Vec<u8>,
    hasher: RandomState,
}

impl Roots {
    fn new() -> Roots {
        let mut roots = Roots {
            store: rustls::RootCertStore::empty(),
            files: HashSet::new(),
            index: HashMap::new(),
            decoded: HashSet::new(),
            buffer: Vec::new(),
            hasher: RandomState::new(),
        };
        for anchor in webpki_roots::TLS_SERVER_ROOTS {
            roots.push(anchor.clone());
        }
        roots
    }

    /// Adds `anchor` unless the store holds it already. Anchors are indexed by their subject
    /// alone (a fraction of the bytes of the whole anchor, and hashing the built-in roots is on
    /// every start's path); those with the same subject are compared whole.
    fn push(&mut self, anchor: rustls::pki_types::TrustAnchor<'static>) {
        let hash = self.hasher.hash_one(anchor.subject.as_ref());
        let same = self.index.entry(hash).or_default();
        if same.iter().any(|&i| self.store.roots[i] == anchor) {
            return;
        }
        same.push(self.store.roots.len());
        self.store.roots.push(anchor);
    }

    /// Adds the PEM certificates in `path` and returns how many it holds; a file without any is
    /// an error when `required` (a named bundle) and skipped otherwise (a directory's other
    /// files). A file already read counts for nothing.
    fn add_bundle(
        &mut self,
        origin: &'static str,
        path: &Path,
        required: bool,
    ) -> Result<usize, TrustError> {
        let read_error = |source| TrustError::Read {
            origin,
            path: path.to_owned(),
            source,
        };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            // A directory's dangling link or vanished file is skipped, as its other files are.
            Err(_) if !required => return Ok(0),
            Err(source) => return Err(read_error(source)),
        };
        if !required && !meta.is_file() {
            return Ok(0);
        }
        if !self.files.insert((meta.dev(), meta.ino())) {
            return Ok(0);
        }
        // One buffer for every file: a directory of small files would otherwise cost an
        // allocation (with musl, a mapping and an unmapping) for each.
        let mut pem = std::mem::take(&mut self.buffer);
        pem.clear();
        let added = match std::fs::File::open(path).and_then(|mut file| file.read_to_end(&mut pem))
        {
            Ok(_) => self.add_pem(origin, path, &pem, required),
            Err(source) => Err(read_error(source)),
        };
        self.buffer = pem;
        added
    }

    /// Adds the certificates of `pem`, the contents of `path`; see [`Roots::add_bundle`].
    fn add_pem(
        &mut self,
        origin: &'static str,
        path: &Path,
        pem: &[u8],
        required: bool,
    ) -> Result<usize, TrustError> {
        let mut found = 0;
        // A file of certificates only (the usual bundle) is decoded block by block, skipping the
        // blocks whose text was already decoded from another file: decoding is most of the cost.
        let blocks = certificate_blocks(pem);
        let whole = [pem];
        let parts: &[&[u8]] = match &blocks {
            Some(blocks) => blocks,
            None => &whole,
        };
        for part in parts {
            if blocks.is_some() {
                found += 1;
                if !self.decoded.insert(self.hasher.hash_one(part)) {
                    continue;
                }
            }
            for cert in rustls_pemfile::certs(&mut &part[..]) {
                let invalid = |reason: String| TrustError::Invalid {
                    origin,
                    path: path.to_owned(),
                    reason,
                };
                let cert = cert.map_err(|e| invalid(e.to_string()))?;
                let mut parsed = rustls::RootCertStore::empty();
                parsed.add(cert).map_err(|e| invalid(e.to_string()))?;
                for anchor in parsed.roots {
                    self.push(anchor);
                }
                if blocks.is_none() {
                    found += 1;
                }
            }
        }
        if found == 0 && required {
            return Err(TrustError::Empty {
                origin,
                path: path.to_owned(),
            });
        }
        Ok(found)
    }
}

const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
const END: &[u8] = b"-----END CERTIFICATE-----";

/// The `CERTIFICATE` blocks of `pem` when it holds nothing else but whitespace between them;
/// `None` for any other file (other PEM sections, comments), which is decoded as a whole.
fn certificate_blocks(pem: &[u8]) -> Option<Vec<&[u8]>> {
    let mut blocks = Vec::new();
    let mut rest = pem;
    loop {
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        rest = &rest[start..];
        if !rest.starts_with(BEGIN) {
            return None;
        }
        let end = rest.windows(END.len()).position(|w| w == END)? + END.len();
        blocks.push(&rest[..end]);
        rest = &rest[end..];
        if rest.iter().all(u8::is_ascii_whitespace) {
            return Some(blocks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_come_from_the_flag_and_the_environment() {
        let env = |name: &str| match name {
            "SSL_CERT_FILE" => Some("/etc/ssl/bundle.pem".to_owned()),
            "SSL_CERT_DIR" => Some("/a::/b".to_owned()),
            _ => None,
        };
        let sources = TrustSources::new(Some(PathBuf::from("/ca.pem")), env);
        assert_eq!(
            sources.cert_file,
            Some(PathBuf::from("/etc/ssl/bundle.pem"))
        );
        assert_eq!(
            sources.cert_dirs,
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
        let empty = TrustSources::new(None, |_| Some(String::new()));
        assert_eq!(empty, TrustSources::default());
    }

    #[test]
    fn only_files_of_certificate_blocks_are_split() {
        let one = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        let two = format!("\n{one}\n\n{one}\n");
        assert_eq!(certificate_blocks(two.as_bytes()).map(|b| b.len()), Some(2));
        assert_eq!(
            certificate_blocks(one.as_bytes()).unwrap()[0],
            one.as_bytes()
        );
        let commented = format!("# a root\n{one}\n");
        assert!(certificate_blocks(commented.as_bytes()).is_none());
        let key = format!("{one}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        assert!(certificate_blocks(key.as_bytes()).is_none());
        assert!(certificate_blocks(b"").is_none());
        assert!(certificate_blocks(b"-----BEGIN CERTIFICATE-----\nAAAA").is_none());
    }

    #[test]
    fn unusable_bundles_name_their_origin() {
        let dir = std::env::temp_dir().join(format!("fiskil-trust-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "no certificates here").unwrap();
        let sources = TrustSources {
            cert_file: Some(dir.join("notes.txt")),
            ..TrustSources::default()
        };
        let err = sources.root_store().unwrap_err().to_string();
        assert!(err.starts_with("SSL_CERT_FILE "), "{err}");
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let sources = TrustSources {
            cert_dirs: vec![dir.clone()],
            ..TrustSources::default()
        };
        let err = sources.root_store().unwrap_err().to_string();
        assert!(err.starts_with("SSL_CERT_DIR "), "{err}");
        let sources = TrustSources {
            ca_file: Some(dir.join("absent.pem")),
            ..TrustSources::default()
        };
        let err = sources.root_store().unwrap_err().to_string();
        assert!(err.starts_with("cannot read --ca-file "), "{err}");
        let built_in = TrustSources::default().root_store().unwrap().len();
        assert!(built_in > 100, "{built_in} built-in roots");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A self-signed CA certificate named `name`, with a key of its own, as PEM.
    fn ca_pem(name: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn each_anchor_is_held_once_and_a_shared_subject_keeps_both() {
        let dir = std::env::temp_dir().join(format!("fiskil-trust-once-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        let (a, b) = (ca_pem("fiskil test CA"), ca_pem("fiskil other CA"));
        // Another key under the same name: a different anchor that indexes alike.
        let a_again = ca_pem("fiskil test CA");
        std::fs::write(dir.join("ca.pem"), format!("{a}{a}{b}")).unwrap();
        std::fs::write(dir.join("bundle.pem"), format!("{b}{a_again}")).unwrap();
        // Not only certificate blocks: decoded whole, so its anchor meets the one already held.
        std::fs::write(dir.join("certs").join("a.pem"), format!("# a again\n{a}")).unwrap();
        let sources = TrustSources {
            ca_file: Some(dir.join("ca.pem")),
            cert_file: Some(dir.join("bundle.pem")),
            cert_dirs: vec![dir.join("certs")],
        };
        let store = sources.root_store().unwrap();
        let built_in = webpki_roots::TLS_SERVER_ROOTS.len();
        assert_eq!(store.len(), built_in + 3, "a, b and a_again, each once");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

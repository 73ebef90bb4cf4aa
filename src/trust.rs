//! The certificate authorities trusted for HTTPS: the built-in Mozilla roots, `--ca-file`, and
//! the `SSL_CERT_FILE` / `SSL_CERT_DIR` bundles that cluster tooling hands a process.

use std::path::{Path, PathBuf};

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
    pub(crate) fn root_store(&self) -> Result<rustls::RootCertStore, TrustError> {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = &self.ca_file {
            add_bundle(&mut roots, "--ca-file", path, true)?;
        }
        if let Some(path) = &self.cert_file {
            add_bundle(&mut roots, SSL_CERT_FILE, path, true)?;
        }
        for dir in &self.cert_dirs {
            let entries = std::fs::read_dir(dir).map_err(|source| TrustError::Read {
                origin: SSL_CERT_DIR,
                path: dir.clone(),
                source,
            })?;
            let before = roots.len();
            let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for file in files.iter().filter(|f| f.is_file()) {
                add_bundle(&mut roots, SSL_CERT_DIR, file, false)?;
            }
            if roots.len() == before {
                return Err(TrustError::Empty {
                    origin: SSL_CERT_DIR,
                    path: dir.clone(),
                });
            }
        }
        Ok(roots)
    }

    /// A TLS client configuration trusting [`Self::root_store`]. It offers no ALPN protocol,
    /// so connections speak HTTP/1.1 (the HTTP clients that take it add their own if needed).
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig, TrustError> {
        Ok(rustls::ClientConfig::builder()
            .with_root_certificates(self.root_store()?)
            .with_no_client_auth())
    }
}

/// Adds the PEM certificates in `path`; a file without any is an error when `required` (a
/// named bundle) and skipped otherwise (a directory's other files).
fn add_bundle(
    roots: &mut rustls::RootCertStore,
    origin: &'static str,
    path: &Path,
    required: bool,
) -> Result<(), TrustError> {
    let pem = std::fs::read(path).map_err(|source| TrustError::Read {
        origin,
        path: path.to_owned(),
        source,
    })?;
    let mut found = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let invalid = |reason: String| TrustError::Invalid {
            origin,
            path: path.to_owned(),
            reason,
        };
        let cert = cert.map_err(|e| invalid(e.to_string()))?;
        roots.add(cert).map_err(|e| invalid(e.to_string()))?;
        found += 1;
    }
    if found == 0 && required {
        return Err(TrustError::Empty {
            origin,
            path: path.to_owned(),
        });
    }
    Ok(())
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
}

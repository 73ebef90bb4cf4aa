//! Fuzzes the credential file reader with arbitrary file contents: it must never panic, an
//! accepted value is trimmed and non-empty, and an error never repeats the file's content.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use fiskil_token_refresher::{CredentialSources, Source};
use libfuzzer_sys::fuzz_target;
use secrecy::ExposeSecret;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fiskil-fuzz-credentials-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("client_id"), "fuzz-client").unwrap();
        dir
    })
}

fuzz_target!(|content: &[u8]| {
    let dir = dir();
    std::fs::write(dir.join("client_secret"), content).unwrap();
    let sources = CredentialSources {
        client_id: Source::File { name: "client_id", path: dir.join("client_id") },
        client_secret: Source::File { name: "client_secret", path: dir.join("client_secret") },
    };
    match sources.load() {
        Ok(credentials) => {
            let secret = credentials.client_secret.expose_secret();
            assert!(!secret.is_empty());
            assert_eq!(secret, secret.trim());
            assert_eq!(Some(secret), std::str::from_utf8(content).ok().map(str::trim));
        }
        Err(e) => {
            let text = String::from_utf8_lossy(content);
            let trimmed = text.trim();
            if trimmed.len() >= 12 {
                assert!(!e.to_string().contains(trimmed), "the error repeats the file's content");
            }
        }
    }
});

//! Build metadata for `--version`: the git commit the binary was built from and the build
//! profile. The commit comes from `FISKIL_GIT_COMMIT` when set (a Docker build has no `.git`; the
//! Dockerfile passes it as a build argument), else from `git` when the sources are a checkout,
//! else "unknown". No build dependencies: only `std` and the `git` program if present.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn is_commit(s: &str) -> bool {
    (7..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn main() {
    println!("cargo:rerun-if-env-changed=FISKIL_GIT_COMMIT");
    let from_env = std::env::var("FISKIL_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| is_commit(c));
    let commit = match from_env {
        Some(c) => c,
        None => {
            let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
            let in_checkout = Path::new(&manifest_dir).join(".git").exists();
            let found = if in_checkout {
                git(&["-C", &manifest_dir, "rev-parse", "HEAD"])
            } else {
                None
            };
            if found.is_some() {
                // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs.
                for path in ["HEAD", "packed-refs"] {
                    if let Some(p) = git(&["-C", &manifest_dir, "rev-parse", "--git-path", path]) {
                        println!(
                            "cargo:rerun-if-changed={}",
                            Path::new(&manifest_dir).join(p).display()
                        );
                    }
                }
                if let Some(branch) = git(&["-C", &manifest_dir, "symbolic-ref", "-q", "HEAD"]) {
                    if let Some(p) = git(&["-C", &manifest_dir, "rev-parse", "--git-path", &branch])
                    {
                        println!(
                            "cargo:rerun-if-changed={}",
                            Path::new(&manifest_dir).join(p).display()
                        );
                    }
                }
            } else {
                println!("cargo:rerun-if-changed=build.rs");
            }
            found
                .filter(|c| is_commit(c))
                .unwrap_or_else(|| "unknown".to_owned())
        }
    };
    // Cargo's PROFILE is "release" or "debug" (the base profile of a custom one).
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_owned());
    println!("cargo:rustc-env=FISKIL_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=FISKIL_BUILD_PROFILE={profile}");

    // A static musl binary is position-independent (static-pie) and relocates itself at start.
    // Packed relative relocations (DT_RELR, which musl's start-up code applies) take a few
    // kilobytes where the classic table takes 24 bytes for each of about 15,000 pointers.
    let musl = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "musl");
    if musl {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

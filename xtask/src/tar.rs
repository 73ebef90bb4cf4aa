//! A reproducible ustar writer: entries in the order given (the caller sorts them), fixed
//! owners, modes and modification time, no user or group names, no extended headers.

pub enum Kind {
    Dir,
    File(Vec<u8>),
}

pub struct Entry {
    /// Relative path without a leading "/"; directories without a trailing "/".
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub kind: Kind,
}

fn octal(field: &mut [u8], value: u64) {
    // NUL-terminated, zero-padded octal that fills the field.
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    assert!(
        text.len() == digits,
        "{value} does not fit a {}-byte tar field",
        field.len()
    );
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

fn header(entry: &Entry, mtime: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let name = match entry.kind {
        Kind::Dir => format!("{}/", entry.path),
        Kind::File(_) => entry.path.clone(),
    };
    assert!(
        name.len() <= 100 && !name.starts_with('/'),
        "tar path {name:?} unsupported"
    );
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(entry.mode));
    octal(&mut h[108..116], u64::from(entry.uid));
    octal(&mut h[116..124], u64::from(entry.gid));
    let (size, typeflag) = match &entry.kind {
        Kind::Dir => (0, b'5'),
        Kind::File(data) => (data.len() as u64, b'0'),
    };
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], 0); // devmajor
    octal(&mut h[337..345], 0); // devminor
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    octal(&mut h[148..155], sum);
    h[155] = b' ';
    h
}

/// The tar archive of `entries`, each with modification time `mtime` (seconds since the epoch).
pub fn archive(entries: &[Entry], mtime: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        out.extend_from_slice(&header(entry, mtime));
        if let Kind::File(data) = &entry.kind {
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    // Two zero blocks end the archive.
    out.resize(out.len() + 1024, 0);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_tarfile_reads_it_back() {
        let entries = [
            Entry {
                path: "etc".into(),
                mode: 0o755,
                uid: 0,
                gid: 0,
                kind: Kind::Dir,
            },
            Entry {
                path: "etc/passwd".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
                kind: Kind::File(b"root\n".to_vec()),
            },
            Entry {
                path: "home/nonroot".into(),
                mode: 0o700,
                uid: 65532,
                gid: 65532,
                kind: Kind::Dir,
            },
        ];
        let data = archive(&entries, 1_700_000_000);
        assert_eq!(data.len() % 512, 0);
        let Ok(mut child) = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, tarfile, io\n\
                 t = tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()))\n\
                 for m in t.getmembers():\n\
                 \x20   print(m.name, oct(m.mode), m.uid, m.gid, m.mtime, m.type.decode(), m.size)\n\
                 print(t.extractfile('etc/passwd').read().decode().strip())",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("SKIP: no python3 to read the archive back");
            return;
        };
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "etc 0o755 0 0 1700000000 5 0\n\
             etc/passwd 0o644 0 0 1700000000 0 5\n\
             home/nonroot 0o700 65532 65532 1700000000 5 0\n\
             root\n"
        );
    }
}

//! Reads small files a neighbour may have planted: regular files only, never blocking, capped.

use std::fs::{FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why a small file could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The path is not a regular file: what it is instead.
    NotRegular(&'static str),
    /// The file holds more than the cap.
    TooLarge,
    Io(io::Error),
}

/// Reads a regular file (after following symlinks) of at most `max` bytes. A FIFO, socket,
/// device or directory is refused before it is opened; the open does not block either, and the
/// opened file is checked again, in case the path was swapped in between.
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    refuse_odd(std::fs::metadata(path).map_err(ReadError::Io)?.file_type())?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(ReadError::Io)?;
    refuse_odd(file.metadata().map_err(ReadError::Io)?.file_type())?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge);
    }
    Ok(bytes)
}

fn refuse_odd(kind: FileType) -> Result<(), ReadError> {
    if kind.is_file() {
        return Ok(());
    }
    Err(ReadError::NotRegular(if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a device"
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = std::env::temp_dir().join(format!("fiskil-small-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert!(matches!(
            read_regular(&fifo, 32),
            Err(ReadError::NotRegular("a FIFO"))
        ));
        let zero = dir.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(
            read_regular(&zero, 32),
            Err(ReadError::NotRegular("a device"))
        ));
        assert!(matches!(
            read_regular(&dir, 32),
            Err(ReadError::NotRegular("a directory"))
        ));
        let sparse = dir.join("sparse");
        std::fs::File::create(&sparse)
            .unwrap()
            .set_len(2 << 30)
            .unwrap();
        assert!(matches!(
            read_regular(&sparse, 32),
            Err(ReadError::TooLarge)
        ));
        let small = dir.join("small");
        std::fs::write(&small, "4242\n").unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink(&small, &link).unwrap();
        assert_eq!(read_regular(&link, 32).unwrap(), b"4242\n");
        assert!(matches!(
            read_regular(&dir.join("missing"), 32),
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

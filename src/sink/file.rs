//! The token file: replaced atomically, so a reader always sees one whole token.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use secrecy::{ExposeSecret, SecretString};

use crate::cli::file_mode;
use crate::fiskil::Token;

/// The token file.
#[derive(clap::Args, Debug)]
#[command(next_help_heading = "Token file")]
pub(crate) struct FileArgs {
    /// Write the token to this file, atomically (this and/or --secret-name is required)
    #[arg(long, env = "FISKIL_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// raw: the token alone, no newline; json: {"token","expires_in","issued_at","expires_at"}
    #[arg(long, env = "FISKIL_TOKEN_FORMAT", value_enum, default_value_t = TokenFormat::Raw)]
    pub token_format: TokenFormat,

    /// Permissions of the token file, octal; set explicitly, not through the umask
    #[arg(long, env = "FISKIL_FILE_MODE", value_name = "MODE", default_value = "0640",
          value_parser = file_mode)]
    pub file_mode: u32,
}

impl FileArgs {
    /// The file output, if `--token-file` is given.
    pub(crate) fn settings(self) -> Option<FileOutput> {
        let (format, mode) = (self.token_format, self.file_mode);
        self.token_file
            .map(|path| FileOutput { path, format, mode })
    }
}

/// How the token file is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum TokenFormat {
    /// The token alone, without a trailing newline.
    Raw,
    /// A JSON object with the token and its times.
    Json,
}

/// Where the token goes.
#[derive(Debug, Clone)]
pub(crate) struct FileOutput {
    pub path: PathBuf,
    pub format: TokenFormat,
    pub mode: u32,
}

/// Numbers temporary files so concurrent writes never share one.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A token file that cannot be set up or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the directory of --token-file {path} does not exist; mount the shared volume there or change --token-file")]
    NoDirectory { path: PathBuf },
    #[error("--token-file {path} names a directory; give a file path inside it")]
    IsDirectory { path: PathBuf },
    #[error("--token-file {path} is {kind}, not a regular file; it is replaced only when it is a regular file or a symlink this user owns: point --token-file at a new path")]
    NotReplaceable { path: PathBuf, kind: &'static str },
    #[error("cannot write --token-file {path} as uid {uid}: {source}; {hint}")]
    Unwritable {
        path: PathBuf,
        uid: String,
        hint: String,
        source: io::Error,
    },
    #[error("cannot write the token file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Writes tokens to one file.
#[derive(Debug, Clone)]
pub(crate) struct FileSink {
    path: PathBuf,
    dir: PathBuf,
    temp_prefix: String,
    format: TokenFormat,
    mode: u32,
}

impl FileSink {
    /// Checks the target directory and removes temporary files a previous run left behind.
    pub(crate) fn new(output: &FileOutput) -> Result<Self, FileError> {
        let path = output.path.clone();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if path.is_dir() {
            return Err(FileError::IsDirectory { path });
        }
        if !dir.is_dir() {
            return Err(FileError::NoDirectory { path });
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| FileError::IsDirectory { path: path.clone() })?;
        let sink = FileSink {
            temp_prefix: format!(".{name}.tmp."),
            path,
            dir,
            format: output.format,
            mode: output.mode,
        };
        sink.remove_stale_temp_files();
        sink.prove_writable()?;
        tracing::debug!("the token file can be written");
        Ok(sink)
    }

    /// Proves at start, as the running user, that a token can be written exactly as it will be:
    /// a temporary file is created, synced and renamed over the token file (with the token file's
    /// current contents, so readers see no change) or, when there is none yet, renamed to a
    /// second temporary name and removed. That empty file is not synced: `fsync` of a file with
    /// no data fails for no reason that creating, writing and renaming it would not have shown
    /// (permissions, a read-only or full file system, a mount point), and on a disk-backed volume
    /// it costs a journal commit before the first token request is even sent.
    fn prove_writable(&self) -> Result<(), FileError> {
        let unwritable = |source: io::Error| self.unwritable(source);
        let existing = self.check_target().map_err(|e| match e {
            TargetError::NotReplaceable(kind) => FileError::NotReplaceable {
                path: self.path.clone(),
                kind,
            },
            TargetError::Io(source) => unwritable(source),
        })?;
        let contents = match existing {
            Some(()) => fs::read(&self.path).ok(),
            None => None,
        };
        let temp = self.temp_path();
        let proved = self
            .write_temp(
                &temp,
                contents.as_deref().unwrap_or_default(),
                contents.is_some(),
            )
            .and_then(|()| match &contents {
                Some(_) => fs::rename(&temp, &self.path),
                None => {
                    let moved = self.temp_path();
                    fs::rename(&temp, &moved).and_then(|()| fs::remove_file(&moved))
                }
            });
        if proved.is_err() {
            let _ = fs::remove_file(&temp);
        }
        proved.map_err(unwritable)
    }

    /// What is at the token file's path: `None` for nothing, `Some(())` for a file this program
    /// may replace (a regular file, or a symlink owned by this user).
    fn check_target(&self) -> Result<Option<()>, TargetError> {
        let meta = match fs::symlink_metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(TargetError::Io(e)),
        };
        let kind = meta.file_type();
        if kind.is_file() {
            return Ok(Some(()));
        }
        if kind.is_symlink() {
            let ours = current_uid().is_some_and(|uid| uid == meta.uid());
            return if ours {
                Ok(Some(()))
            } else {
                Err(TargetError::NotReplaceable(
                    "a symlink owned by another user",
                ))
            };
        }
        Err(TargetError::NotReplaceable(if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_block_device() || kind.is_char_device() {
            "a device"
        } else {
            "a special file"
        }))
    }

    fn unwritable(&self, source: io::Error) -> FileError {
        let dir = self.dir.display();
        let hint = match source.kind() {
            io::ErrorKind::ReadOnlyFilesystem => format!(
                "{dir} is on a read-only file system; mount a writable volume there (an emptyDir shared with the application)"
            ),
            io::ErrorKind::PermissionDenied => {
                let owner = fs::metadata(&self.dir)
                    .map(|m| {
                        format!(
                            " (owner uid {}, gid {}, mode {:04o})",
                            m.uid(),
                            m.gid(),
                            m.mode() & 0o7777
                        )
                    })
                    .unwrap_or_default();
                format!("this user may not create files in {dir}{owner}; give the pod an fsGroup that owns the volume, or make the directory writable for this user")
            }
            io::ErrorKind::ResourceBusy => format!(
                "{} is a mount point of its own (a subPath mount?) and cannot be replaced atomically; mount the whole directory and point --token-file inside it",
                self.path.display()
            ),
            _ => "check the volume mounted at the token file's directory".to_owned(),
        };
        FileError::Unwritable {
            path: self.path.clone(),
            uid: current_uid().map_or_else(|| "unknown".to_owned(), |uid| uid.to_string()),
            hint,
            source,
        }
    }

    /// Replaces the file with `token`. Runs on the blocking pool and always finishes (or
    /// cleans up) even when the caller stops waiting, so no temporary file is left behind.
    pub(crate) async fn write(&self, token: &Token) -> Result<(), FileError> {
        let contents = render(token, self.format);
        let sink = self.clone();
        let written = tokio::task::spawn_blocking(move || sink.replace(contents.expose_secret()))
            .await
            .unwrap_or_else(|join| Err(io::Error::other(join.to_string())));
        written.map_err(|source| FileError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn replace(&self, contents: &str) -> io::Result<()> {
        if let Err(e) = self.check_target() {
            return Err(match e {
                TargetError::NotReplaceable(kind) => {
                    io::Error::other(format!("it is now {kind}, which is never replaced"))
                }
                TargetError::Io(e) => e,
            });
        }
        let temp = self.temp_path();
        let result = self
            .write_temp(&temp, contents.as_bytes(), true)
            .and_then(|()| fs::rename(&temp, &self.path));
        if result.is_err() {
            let _ = fs::remove_file(&temp);
            return result;
        }
        tracing::debug!("token file replaced");
        // The new file is in place; failing to sync the directory only weakens durability
        // across a crash of the machine, which an in-memory volume does not have anyway.
        if let Err(e) = File::open(&self.dir).and_then(|dir| dir.sync_all()) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot sync the token file's directory");
        }
        Ok(())
    }

    fn temp_path(&self) -> PathBuf {
        self.dir.join(format!(
            "{}{}-{}",
            self.temp_prefix,
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn write_temp(&self, temp: &Path, contents: &[u8], sync: bool) -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.mode)
            .open(temp)?;
        file.set_permissions(fs::Permissions::from_mode(self.mode))?;
        file.write_all(contents)?;
        if sync {
            file.sync_all()?;
        }
        Ok(())
    }

    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(&self.temp_prefix)
            {
                match fs::remove_file(entry.path()) {
                    Ok(()) => {
                        tracing::info!(file = %entry.path().display(), "removed a temporary file left by an earlier run")
                    }
                    Err(e) => {
                        tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove a stale temporary file")
                    }
                }
            }
        }
    }
}

/// Why the token file's path cannot be replaced.
enum TargetError {
    NotReplaceable(&'static str),
    Io(io::Error),
}

/// The effective user id of this process, from `/proc/self/status` (no unsafe code needed).
fn current_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The file's contents in the chosen format.
pub(crate) fn render(token: &Token, format: TokenFormat) -> SecretString {
    match format {
        TokenFormat::Raw => token.value.clone(),
        TokenFormat::Json => SecretString::from(
            serde_json::json!({
                "token": token.value.expose_secret(),
                "expires_in": token.lifetime.as_secs(),
                "issued_at": humantime::format_rfc3339_millis(token.issued_at).to_string(),
                "expires_at": humantime::format_rfc3339_millis(token.expires_at()).to_string(),
            })
            .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn token(value: &str) -> Token {
        Token {
            value: SecretString::from(value),
            lifetime: Duration::from_secs(900),
            issued_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fiskil-file-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn json_format_carries_the_times() {
        let rendered = render(&token("abc"), TokenFormat::Json);
        let json: serde_json::Value = serde_json::from_str(rendered.expose_secret()).unwrap();
        assert_eq!(json["token"], "abc");
        assert_eq!(json["expires_in"], 900);
        assert_eq!(json["issued_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(json["expires_at"], "2023-11-14T22:28:20.000Z");
        assert_eq!(
            render(&token("abc"), TokenFormat::Raw).expose_secret(),
            "abc"
        );
    }

    #[tokio::test]
    async fn writes_with_the_mode_and_cleans_stale_temp_files() {
        let dir = temp_dir("mode");
        fs::write(dir.join(".token.tmp.1-1"), "half").unwrap();
        let output = FileOutput {
            path: dir.join("token"),
            format: TokenFormat::Raw,
            mode: 0o600,
        };
        let sink = FileSink::new(&output).unwrap();
        assert!(!dir.join(".token.tmp.1-1").exists());
        sink.write(&token("first")).await.unwrap();
        sink.write(&token("second")).await.unwrap();
        assert_eq!(fs::read_to_string(dir.join("token")).unwrap(), "second");
        let mode = fs::metadata(dir.join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_is_named() {
        let output = FileOutput {
            path: PathBuf::from("/nonexistent-fiskil/token"),
            format: TokenFormat::Raw,
            mode: 0o640,
        };
        let err = FileSink::new(&output).unwrap_err().to_string();
        assert!(err.contains("/nonexistent-fiskil/token"), "{err}");
        assert!(err.contains("does not exist"), "{err}");
    }
}

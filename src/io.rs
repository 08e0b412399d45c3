//! Files in and out, safely.
//!
//! Output: a regular file (or a new one) is written to a temporary sibling, fsynced and
//! renamed over the final name, so a crash never leaves a half-written file there; anything
//! else the path names — standard output (`-`, `/dev/stdout`), a terminal, a pipe or FIFO,
//! a device such as `/dev/null` or `/dev/full` — is written through as it is, never replaced.
//! A symlink is followed: its target is written (atomically, if a regular file), the link
//! stays. Temporary files of writers that were killed are removed on the next write there.
//!
//! Input: [`read_regular`] reads only regular files, with the size bound the file itself
//! declares, so a FIFO, `/dev/zero` or a directory given as data is an error, not a hang or
//! an unbounded read.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};

/// Where the bytes for an output path go.
#[derive(Debug, PartialEq)]
enum Target {
    Stdout,
    Stderr,
    /// Not a regular file (device, FIFO, socket, `/proc` or `/dev/fd` handle): opened and
    /// written as it is.
    Through(PathBuf),
    /// A regular file, existing or not: replaced atomically.
    Replace(PathBuf),
}

/// What `path` names as an output, following symlinks (at most 40, as the kernel).
fn target(path: &Path) -> Result<Target> {
    let mut path = path.to_path_buf();
    for _ in 0..40 {
        match path.to_str() {
            Some("-" | "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1") => return Ok(Target::Stdout),
            Some("/dev/stderr" | "/dev/fd/2" | "/proc/self/fd/2") => return Ok(Target::Stderr),
            _ => {}
        }
        if path.starts_with("/proc") || path.starts_with("/dev/fd") {
            return Ok(Target::Through(path));
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::Replace(path)),
            Err(e) => return Err(e).with_context(|| format!("output {}", path.display())),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let link = fs::read_link(&path).with_context(|| format!("output {}", path.display()))?;
            path = match path.parent() {
                Some(dir) if link.is_relative() => dir.join(link),
                _ => link,
            };
        } else if kind.is_dir() {
            bail!("output {} is a directory", path.display());
        } else if kind.is_file() {
            return Ok(Target::Replace(path));
        } else {
            return Ok(Target::Through(path));
        }
    }
    bail!("output {}: too many levels of symbolic links", path.display())
}

/// Checks, before any work, that `path` can be written as an output: not a directory, its
/// folder existing or creatable and writable, a special file writable by us.
pub fn check_output(path: &Path) -> Result<()> {
    let writable = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok();
        // SAFETY: access() reads a NUL-terminated path and touches no memory of ours.
        c.is_some_and(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
    };
    match target(path)? {
        Target::Stdout | Target::Stderr => Ok(()),
        Target::Through(p) if writable(&p) => Ok(()),
        Target::Through(p) => bail!("output {} is not writable", p.display()),
        Target::Replace(p) => {
            let mut dir = parent(&p).to_path_buf();
            // The nearest folder that exists must be a writable folder (the rest is created).
            while !dir.exists() {
                match dir.parent() {
                    Some(d) if !d.as_os_str().is_empty() => dir = d.to_path_buf(),
                    _ => dir = PathBuf::from("."),
                }
            }
            if !dir.is_dir() {
                bail!("output {}: {} is not a folder", p.display(), dir.display());
            }
            if !writable(&dir) {
                bail!("output {}: folder {} is not writable", p.display(), dir.display());
            }
            Ok(())
        }
    }
}

/// [`check_output`], and `path` is none of the command's `inputs`: an output that would
/// replace a file the command reads (`export --checkpoint m.pth --onnx m.pth`) is refused
/// before anything is read or written. Compared by device and inode, through links.
pub fn check_output_apart(path: &Path, inputs: &[&Path]) -> Result<()> {
    check_output(path)?;
    use std::os::unix::fs::MetadataExt;
    let Ok(out) = fs::metadata(path) else { return Ok(()) };
    if !out.is_file() {
        return Ok(());
    }
    for input in inputs {
        if fs::metadata(input).is_ok_and(|i| (i.dev(), i.ino()) == (out.dev(), out.ino())) {
            bail!("output {} is the input {}: refusing to write over it", path.display(), input.display());
        }
    }
    Ok(())
}

/// [`check_output_apart`] for each of a command's `outputs`, and no two of them the same
/// file: `test --json r.json --dump-scores r.json` would keep only the output written last.
/// Compared by the file each resolves to (links followed, its folder's real path); devices,
/// FIFOs and the standard streams may be named twice (`/dev/null`).
pub fn check_outputs(outputs: &[&Path], inputs: &[&Path]) -> Result<()> {
    let mut seen: Vec<(PathBuf, &Path)> = Vec::new();
    for &out in outputs {
        check_output_apart(out, inputs)?;
        let Target::Replace(file) = target(out)? else { continue };
        let dir = parent(&file);
        let dir = fs::canonicalize(dir).or_else(|_| std::path::absolute(dir))?;
        let key = dir.join(file.file_name().unwrap_or_default());
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            bail!(
                "outputs {} and {} are the same file: the one written last would replace the other",
                first.display(),
                out.display()
            );
        }
        seen.push((key, out));
    }
    Ok(())
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to the output `path`: atomically for a regular file (temp file + fsync +
/// rename + directory fsync), written through for anything else (module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    match target(path)? {
        Target::Stdout => std::io::stdout().lock().write_all(bytes).and_then(|_| std::io::stdout().flush()),
        Target::Stderr => std::io::stderr().lock().write_all(bytes),
        Target::Through(p) => write_through(&p, bytes),
        Target::Replace(p) => return replace(&p, bytes),
    }
    .with_context(|| format!("writing {}", path.display()))
}

/// Opens a special file for writing without creating or truncating it; a FIFO nobody reads
/// is an error at once (non-blocking open), not a wait.
fn write_through(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ENXIO) { std::io::Error::new(e.kind(), "a FIFO with no reader") } else { e }
    })?;
    // Blocking writes from here on: a pipe's reader sets the pace.
    // SAFETY: fcntl on a descriptor we own, with plain integer arguments.
    unsafe {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    f.write_all(bytes)?;
    f.flush()
}

/// Temporary siblings are named `.NAME.gateshift-tmp.PID.N`: a name no user file has by
/// chance, so that removing a dead writer's temporaries cannot remove anything else.
const TMP: &str = ".gateshift-tmp.";

fn replace(path: &Path, bytes: &[u8]) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent(path);
    fs::create_dir_all(dir).with_context(|| format!("creating directory {}", dir.display()))?;
    remove_stale_temporaries(dir);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}{TMP}{}.{n}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// The process id a temporary sibling's name carries, if it is one of ours.
fn temporary_owner(file_name: &str) -> Option<i32> {
    let rest = file_name.strip_prefix('.')?;
    let (pid, n) = rest[rest.rfind(TMP)? + TMP.len()..].split_once('.')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// Removes, once per folder and process, the temporary files of writers that no longer run
/// (killed between creating and renaming them).
pub fn remove_stale_temporaries(dir: &Path) {
    static DONE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);
    let key = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if DONE.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(HashSet::new).insert(key) {
        remove_stale(dir, &temporary_owner);
    }
}

/// Removes the regular files of `dir` whose names `owner` maps to a process that no longer
/// runs.
pub fn remove_stale(dir: &Path, owner: &dyn Fn(&str) -> Option<i32>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        if let Some(pid) = name.to_str().and_then(owner)
            && !process_alive(pid)
            && e.file_type().is_ok_and(|t| t.is_file())
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Reads the regular file `path` (`what` names it in errors: "checkpoint", "frame", …). A
/// FIFO, device, socket or directory is refused without blocking, and the read is bounded
/// by the size the file had when opened.
pub fn read_regular(path: &Path, what: &str) -> Result<Vec<u8>> {
    let file = open_regular(path, what)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut bytes).with_context(|| format!("reading {what} {}", path.display()))?;
    Ok(bytes)
}

/// Opens `path` for reading if it is a regular file (after symlinks), without blocking on a
/// FIFO; the error says what it is instead.
pub fn open_regular(path: &Path, what: &str) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open {what} {}", path.display()))?;
    let kind = file.metadata().with_context(|| format!("cannot open {what} {}", path.display()))?.file_type();
    if !kind.is_file() {
        bail!("{what} {} is {}, not a regular file", path.display(), describe(kind));
    }
    Ok(file)
}

/// Checks that `path` is a regular file (after symlinks) without opening it.
pub fn require_regular(path: &Path, what: &str) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("{what} {} does not exist", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {} is {}, not a regular file", path.display(), describe(meta.file_type()));
    }
    Ok(())
}

/// Checks that `path` is a folder (after symlinks).
pub fn require_dir(path: &Path, what: &str) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("{what} {} does not exist", path.display()))?;
    if !meta.is_dir() {
        bail!("{what} {} is {}, not a folder", path.display(), describe(meta.file_type()));
    }
    Ok(())
}

/// Whether process `pid` still runs (for the owners of temporaries).
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// "a directory", "a FIFO", … for messages.
pub fn describe(kind: fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_file() {
        "a regular file"
    } else if kind.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    /// Two outputs naming one file (as written, with `./`, through a link, or through a
    /// folder link) are refused naming both; distinct files and a device twice are not.
    #[test]
    fn two_outputs_naming_one_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink(d.join("sub"), d.join("alias")).unwrap();
        std::fs::write(d.join("sub/a.json"), "{}").unwrap();
        std::os::unix::fs::symlink(d.join("sub/a.json"), d.join("link.json")).unwrap();
        let a = d.join("sub/a.json");
        for other in [a.clone(), d.join("sub/./a.json"), d.join("link.json"), d.join("alias/a.json")] {
            let err = super::check_outputs(&[&a, &other], &[]).unwrap_err().to_string();
            assert!(err.contains("same file") && err.contains("a.json"), "{other:?}: {err}");
        }
        // Not yet existing, in a folder not yet made: compared as written, made absolute.
        let new = d.join("new/b.json");
        assert!(super::check_outputs(&[&new, &d.join("new/./b.json")], &[]).is_err());
        super::check_outputs(&[&a, &d.join("sub/b.json"), &new], &[]).unwrap();
        let null = std::path::Path::new("/dev/null");
        super::check_outputs(&[null, null], &[]).unwrap();
    }

    use super::*;

    #[test]
    fn special_outputs_are_written_through_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(target(Path::new("-")).unwrap(), Target::Stdout);
        assert_eq!(target(Path::new("/dev/stdout")).unwrap(), Target::Stdout);
        assert_eq!(target(Path::new("/dev/null")).unwrap(), Target::Through("/dev/null".into()));
        write_atomic(Path::new("/dev/null"), b"x").unwrap();
        assert!(Path::new("/dev/null").metadata().unwrap().file_type().is_char_device());
        let full = write_atomic(Path::new("/dev/full"), b"x").unwrap_err();
        assert!(format!("{full:#}").contains("/dev/full"), "{full:#}");
        assert!(Path::new("/dev/full").metadata().unwrap().file_type().is_char_device());
        // A symlink stays a symlink; its target is replaced.
        let real = dir.path().join("real.json");
        fs::write(&real, "old").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("real.json", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
        // A directory is refused before and at the write.
        assert!(check_output(dir.path()).is_err());
        assert!(write_atomic(dir.path(), b"x").is_err());
    }

    #[test]
    fn a_fifo_output_is_written_through_or_refused_without_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = write_atomic(&fifo, b"x").unwrap_err();
        assert!(format!("{e:#}").contains("no reader"), "{e:#}");
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || fs::read(&fifo).unwrap())
        };
        // Wait until the reader has the FIFO open.
        let mut tries = 0;
        while write_atomic(&fifo, b"hello").is_err() {
            tries += 1;
            assert!(tries < 500, "reader never opened the FIFO");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(reader.join().unwrap(), b"hello");
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    }

    #[test]
    fn stale_temporaries_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0 is never a live writer's; our own pid is alive.
        let dead = dir.path().join(".last.safetensors.gateshift-tmp.0.3");
        let alive = dir.path().join(format!(".x.gateshift-tmp.{}.0", std::process::id()));
        for p in [&dead, &alive] {
            fs::write(p, "partial").unwrap();
        }
        for user in [".notes.tmp.txt", ".notes.tmp.0", ".a.gateshift-tmp.0"] {
            fs::write(dir.path().join(user), "user file").unwrap();
        }
        write_atomic(&dir.path().join("out.json"), b"{}").unwrap();
        assert!(!dead.exists());
        assert!(alive.exists(), "a live writer's temporary is left alone");
        for user in [".notes.tmp.txt", ".notes.tmp.0", ".a.gateshift-tmp.0"] {
            assert!(dir.path().join(user).exists(), "{user}: files not named like ours are left alone");
        }
    }

    #[test]
    fn inputs_must_be_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        for (path, says) in [("/dev/zero", "character device"), ("/dev/null", "character device")] {
            let e = read_regular(Path::new(path), "frame").unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(path), "{e}");
        }
        let e = read_regular(dir.path(), "frame").unwrap_err().to_string();
        assert!(e.contains("directory"), "{e}");
        let fifo = dir.path().join("f");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_regular(&fifo, "frame").unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        let link = dir.path().join("zero.jpg");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = read_regular(&link, "frame").unwrap_err().to_string();
        assert!(e.contains("zero.jpg") && e.contains("character device"), "{e}");
        fs::write(dir.path().join("ok"), "abc").unwrap();
        assert_eq!(read_regular(&dir.path().join("ok"), "frame").unwrap(), b"abc");
    }
}

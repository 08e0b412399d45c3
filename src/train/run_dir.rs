//! A run folder: held by one process at a time (an advisory lock the kernel drops when the
//! process dies, kill -9 included), and holding one run. A new run refuses a folder that
//! holds anything but its lock, unless told to overwrite: then the files of the earlier run
//! are removed (and nothing else). Temporary files of a writer that was killed are removed
//! once the lock is held.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The files a run writes into its folder.
pub const RUN_FILES: [&str; 7] = [
    "config.toml",
    "last.safetensors",
    "best.safetensors",
    "metrics.jsonl",
    "curves.png",
    "train.log",
    crate::report::events::FILE_NAME,
];
const LOCK: &str = ".lock";

/// How a run starts in its folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A new run: the folder must be empty (or new), unless `overwrite`.
    Fresh { overwrite: bool },
    /// Continue the run whose `last.safetensors` the folder holds.
    Resume,
}

/// A locked run folder; the lock lasts as long as this value.
pub struct RunDir {
    pub path: PathBuf,
    _lock: File,
}

impl RunDir {
    /// Locks `path` (created if needed) for this process and checks it suits `start`.
    pub fn open(path: &Path, start: Start) -> Result<Self> {
        if path.exists() && !path.is_dir() {
            bail!("run folder {} exists and is not a folder", path.display());
        }
        if start == Start::Resume {
            resumable(path)?;
        }
        fs::create_dir_all(path).with_context(|| format!("creating run folder {}", path.display()))?;
        let lock = lock(path)?;
        crate::io::remove_stale_temporaries(path);
        // Earlier versions named a run file's temporary `.NAME.tmp.PID`.
        crate::io::remove_stale(path, &|name| {
            let (file, pid) = name.strip_prefix('.')?.rsplit_once(".tmp.")?;
            RUN_FILES.contains(&file).then(|| pid.parse().ok())?
        });
        let dir = Self { path: path.to_path_buf(), _lock: lock };
        if let Start::Fresh { overwrite } = start {
            dir.clear_for_new_run(overwrite)?;
        }
        Ok(dir)
    }

    /// A fresh run's folder: empty, or (with `overwrite`) rid of an earlier run's files.
    fn clear_for_new_run(&self, overwrite: bool) -> Result<()> {
        let mut held: Vec<String> = fs::read_dir(&self.path)
            .with_context(|| format!("reading run folder {}", self.path.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != LOCK)
            .collect();
        held.sort();
        if held.is_empty() {
            return Ok(());
        }
        if !overwrite {
            let more = if held.len() > 5 { format!(", … ({} in all)", held.len()) } else { String::new() };
            bail!(
                "run folder {} is not empty (holds {}{more}): continue the run there with --resume {0}, replace \
                 its run files with --overwrite, or choose another --out",
                self.path.display(),
                held.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            );
        }
        for name in RUN_FILES {
            let p = self.path.join(name);
            if p.exists() {
                fs::remove_file(&p).with_context(|| format!("removing {} (--overwrite)", p.display()))?;
            }
        }
        Ok(())
    }
}

/// Checks that `path` holds a run to resume: its `last.safetensors`.
pub fn resumable(path: &Path) -> Result<()> {
    if !path.join("last.safetensors").is_file() {
        bail!(
            "{} holds no last.safetensors to resume from (a run that stopped before its first epoch ended \
             starts again with --overwrite)",
            path.display()
        );
    }
    Ok(())
}

/// Takes the folder's lock without waiting, writing our pid into the lock file; if another
/// process holds it, the error names that process.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the lock {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        let by = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
        bail!("run folder {} is in use by another gateshift process{by}", dir.display());
    }
    file.set_len(0)?;
    file.rewind()?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_the_lock_ends_with_its_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        let first = RunDir::open(&run, Start::Fresh { overwrite: false }).unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too.
        let e = RunDir::open(&run, Start::Fresh { overwrite: true }).err().unwrap().to_string();
        assert!(e.contains("in use") && e.contains(&std::process::id().to_string()), "{e}");
        drop(first);
        RunDir::open(&run, Start::Fresh { overwrite: false }).unwrap();
    }

    #[test]
    fn a_folder_holding_anything_is_refused_unless_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        fs::create_dir(&run).unwrap();
        for f in ["config.toml", "metrics.jsonl", "best.safetensors", "notes.txt"] {
            fs::write(run.join(f), "x").unwrap();
        }
        let e = RunDir::open(&run, Start::Fresh { overwrite: false }).err().unwrap().to_string();
        assert!(e.contains("not empty") && e.contains("best.safetensors") && e.contains("--overwrite"), "{e}");
        assert!(run.join("best.safetensors").exists(), "nothing removed without --overwrite");
        let e = RunDir::open(&run, Start::Resume).err().unwrap().to_string();
        assert!(e.contains("no last.safetensors"), "{e}");
        drop(RunDir::open(&run, Start::Fresh { overwrite: true }).unwrap());
        assert!(!run.join("best.safetensors").exists() && !run.join("config.toml").exists());
        assert!(run.join("notes.txt").exists(), "--overwrite removes only run files");
        let e = RunDir::open(&tmp.path().join("run/notes.txt"), Start::Fresh { overwrite: true }).err().unwrap();
        assert!(e.to_string().contains("not a folder"), "{e}");
    }
}

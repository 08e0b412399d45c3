//! A run's logs, written by rank 0 as it trains:
//! - `metrics.jsonl`: one JSON line per iteration (`"kind": "step"`) and per epoch
//!   (`"kind": "epoch"`), appended as they happen;
//! - `events.out.tfevents.gateshift`: the same scalars for TensorBoard (`train/*` at the
//!   global step, `epoch/*` at the epoch);
//! - `train.log`: what the run said, each line with its UTC time, kept across resumes.
//!
//! The epoch lines are also the run state the checkpoint holds. On resume both scalar files
//! are rebuilt, atomically, from that state and from the iterations of the epochs it holds:
//! the lines of an interrupted epoch (which the resumed run replays) and a line torn by a kill
//! are dropped, so the files say exactly what the run that continues has done.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::report::events::{self, Scalar};
use crate::report::{EpochMetrics, Record, RunState, StepMetrics};

pub const METRICS: &str = "metrics.jsonl";
pub const TEXT: &str = "train.log";

/// The logs of a run; on ranks other than 0 it writes nothing.
pub struct RunLog {
    files: Option<Files>,
    show: bool,
}

struct Files {
    dir: PathBuf,
    metrics: File,
    events: File,
    /// `None` once a write to it failed.
    text: Option<File>,
}

impl RunLog {
    /// Rank 0's logs in the (locked) run folder `dir`, continuing `state`; `resumed` keeps
    /// the iterations of the epochs `state` holds. `show`: `say` also prints to stderr.
    pub fn open(dir: &Path, state: &RunState, resumed: bool, show: bool) -> Result<Self> {
        for name in [METRICS, events::FILE_NAME, TEXT] {
            regular_or_absent(&dir.join(name))?;
        }
        let steps = if resumed { kept_steps(&dir.join(METRICS), state.epochs_done)? } else { Vec::new() };
        let records = merge(steps, &state.history);
        let mut jsonl = String::new();
        let mut tf = events::file_version(now());
        // Each record at the time it was logged (an epoch line at its last iteration's).
        let mut wall = now();
        for r in &records {
            jsonl.push_str(&serde_json::to_string(r)?);
            jsonl.push('\n');
            if let Record::Step(s) = r {
                wall = s.time;
            }
            tf.extend(scalars(r, wall).iter().flat_map(events::scalar));
        }
        crate::io::write_atomic(&dir.join(METRICS), jsonl.as_bytes())?;
        crate::io::write_atomic(&dir.join(events::FILE_NAME), &tf)?;
        let files = Files {
            dir: dir.to_path_buf(),
            metrics: append(&dir.join(METRICS))?,
            events: append(&dir.join(events::FILE_NAME))?,
            text: Some(append(&dir.join(TEXT))?),
        };
        let mut log = Self { files: Some(files), show };
        let args: Vec<String> = std::env::args().collect();
        log.note(&format!("gateshift {} · {}", env!("CARGO_PKG_VERSION"), args.join(" ")));
        Ok(log)
    }

    /// The logs of a rank other than 0.
    pub fn silent(show: bool) -> Self {
        Self { files: None, show }
    }

    /// A line for the user (stderr, when shown) and for `train.log`.
    pub fn say(&mut self, line: &str) {
        if self.show {
            eprintln!("{line}");
        }
        self.note(line);
    }

    /// A line for `train.log` only. A failing write is reported once on stderr and not
    /// retried: the log must not stop a run that the checkpoints still keep.
    pub fn note(&mut self, line: &str) {
        let Some(f) = &mut self.files else { return };
        let Some(text) = &mut f.text else { return };
        let stamp = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S");
        if let Err(e) = writeln!(text, "{stamp} {line}") {
            eprintln!("warning: writing {}: {e}; train.log stops here", f.dir.join(TEXT).display());
            f.text = None;
        }
    }

    /// Appends one iteration's scalars.
    pub fn step(&mut self, s: &StepMetrics) -> Result<()> {
        self.record(&Record::Step(s.clone()), s.time, false)
    }

    /// Appends one epoch's metrics, then syncs both files.
    pub fn epoch(&mut self, m: &EpochMetrics) -> Result<()> {
        self.record(&Record::Epoch(m.clone()), now(), true)
    }

    fn record(&mut self, r: &Record, wall: f64, sync: bool) -> Result<()> {
        let Some(f) = &mut self.files else { return Ok(()) };
        let mut line = serde_json::to_string(r)?;
        line.push('\n');
        let tf: Vec<u8> = scalars(r, wall).iter().flat_map(events::scalar).collect();
        (|| -> std::io::Result<()> {
            f.metrics.write_all(line.as_bytes())?;
            f.events.write_all(&tf)?;
            if sync {
                f.metrics.sync_data()?;
                f.events.sync_data()?;
            }
            Ok(())
        })()
        .with_context(|| format!("appending to the logs in {}", f.dir.display()))
    }
}

/// The TensorBoard scalars of a record.
fn scalars(r: &Record, wall_time: f64) -> Vec<Scalar> {
    let scalar = |tag: &str, step: u64, value: f64| Scalar {
        tag: tag.into(),
        step: step as i64,
        value: value as f32,
        wall_time,
    };
    match r {
        Record::Step(s) => vec![
            scalar("train/loss", s.step, s.loss),
            scalar("train/lr", s.step, s.lr),
            scalar("train/clips_per_s", s.step, s.clips_per_s),
            scalar("train/data_wait", s.step, s.data_wait),
        ],
        Record::Epoch(m) => {
            let e = m.epoch as u64;
            let optional = [
                ("epoch/val_top1", m.val_top1),
                ("epoch/val_top5", m.val_top5),
                ("epoch/val_mean_class", m.val_mean_class),
                ("epoch/val_noun_top1", m.val_noun_top1),
                ("epoch/val_action_top1", m.val_action_top1),
            ];
            let mut v = vec![
                scalar("epoch/loss", e, m.loss),
                scalar("epoch/lr", e, m.lr),
                scalar("epoch/train_top1", e, m.train_top1),
                scalar("epoch/train_top5", e, m.train_top5),
                scalar("epoch/clips_per_s", e, m.clips_per_s),
                scalar("epoch/seconds", e, m.seconds),
            ];
            v.extend(optional.iter().filter_map(|(tag, x)| x.map(|x| scalar(tag, e, x))));
            v
        }
    }
}

/// The iteration lines of `path` from epochs `..= epochs`; lines of other kinds, of later
/// epochs, or torn by a kill are left out. No file: none.
fn kept_steps(path: &Path, epochs: usize) -> Result<Vec<StepMetrics>> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(Vec::new());
    }
    let bytes = crate::io::read_regular(path, "run log")?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text
        .lines()
        .filter_map(|l| match serde_json::from_str::<Record>(l) {
            Ok(Record::Step(s)) if s.epoch <= epochs => Some(s),
            _ => None,
        })
        .collect())
}

/// Each epoch's iterations followed by its epoch line.
fn merge(steps: Vec<StepMetrics>, history: &[EpochMetrics]) -> Vec<Record> {
    let mut out = Vec::with_capacity(steps.len() + history.len());
    let mut steps = steps.into_iter().peekable();
    for m in history {
        while let Some(s) = steps.next_if(|s| s.epoch <= m.epoch) {
            out.push(Record::Step(s));
        }
        out.push(Record::Epoch(m.clone()));
    }
    out.extend(steps.map(Record::Step));
    out
}

/// Opens a log file of the run folder for appending: a regular file, never through a link
/// or onto a FIFO or device put in its place.
fn append(path: &Path) -> Result<File> {
    regular_or_absent(path)?;
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("opening {} (a link is not followed)", path.display()))?;
    let kind = f.metadata()?.file_type();
    if !kind.is_file() {
        bail!("{} is {}, not a regular file", path.display(), crate::io::describe(kind));
    }
    Ok(f)
}

/// A log file of the run folder is ours: a regular file, or none yet.
fn regular_or_absent(path: &Path) -> Result<()> {
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && !meta.is_file()
    {
        bail!("{} is {}, not a regular file", path.display(), crate::io::describe(meta.file_type()));
    }
    Ok(())
}

/// Unix time in seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(epoch: usize, iter: usize, step: u64) -> StepMetrics {
        let loss = 1.0 / step as f64;
        StepMetrics { epoch, iter, step, loss, lr: 0.01, clips_per_s: 3.0, data_wait: 0.25, time: 1e9 }
    }

    fn epoch(epoch: usize) -> EpochMetrics {
        EpochMetrics {
            epoch,
            lr: 0.01,
            loss: 0.5,
            train_top1: 0.5,
            train_top5: 1.0,
            val_top1: Some(0.25),
            val_top5: None,
            val_mean_class: None,
            val_noun_top1: None,
            val_action_top1: None,
            clips_per_s: 2.0,
            seconds: 3.0,
        }
    }

    fn lines(dir: &Path) -> Vec<Record> {
        let text = std::fs::read_to_string(dir.join(METRICS)).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// A run killed in epoch 2 with a torn line: the resumed logs hold epoch 1's iterations and
    /// epoch line only, in both files, and go on from there.
    #[test]
    fn resume_drops_the_interrupted_epoch_and_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = RunState::default();
        let mut log = RunLog::open(dir.path(), &state, false, false).unwrap();
        for (e, i, s) in [(1, 1, 1), (1, 2, 2)] {
            log.step(&step(e, i, s)).unwrap();
        }
        log.epoch(&epoch(1)).unwrap();
        state.history.push(epoch(1));
        (state.epochs_done, state.steps_done) = (1, 2);
        log.step(&step(2, 1, 3)).unwrap();
        drop(log);
        let mut f = OpenOptions::new().append(true).open(dir.path().join(METRICS)).unwrap();
        f.write_all(b"{\"kind\":\"step\",\"epo").unwrap();
        let log = RunLog::open(dir.path(), &state, true, false).unwrap();
        drop(log);
        let want = vec![Record::Step(step(1, 1, 1)), Record::Step(step(1, 2, 2)), Record::Epoch(epoch(1))];
        assert_eq!(lines(dir.path()), want);
        let tf = events::read(&std::fs::read(dir.path().join(events::FILE_NAME)).unwrap()).unwrap();
        let tags: Vec<(String, i64)> = tf.iter().map(|s| (s.tag.clone(), s.step)).collect();
        assert_eq!(tags.iter().filter(|(t, _)| t == "train/loss").count(), 2);
        // Rebuilt at the times they were logged, not at the resume's.
        assert!(tf.iter().all(|s| s.wall_time == 1e9), "{tf:?}");
        assert!(tags.contains(&("epoch/val_top1".into(), 1)) && !tags.iter().any(|(t, _)| t == "epoch/val_top5"));
        let text = std::fs::read_to_string(dir.path().join(TEXT)).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    /// A link or FIFO put in place of a log file is refused, not followed or blocked on.
    #[test]
    fn special_files_in_place_of_a_log_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "mine").unwrap();
        for name in [TEXT, METRICS, events::FILE_NAME] {
            std::os::unix::fs::symlink(&target, dir.path().join(name)).unwrap();
            let err = RunLog::open(dir.path(), &RunState::default(), true, false).err().unwrap();
            assert!(format!("{err:#}").contains(&format!("{name} is a symbolic link")), "{err:#}");
            assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        let fifo = std::ffi::CString::new(dir.path().join(TEXT).to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let err = RunLog::open(dir.path(), &RunState::default(), true, false).err().unwrap();
        assert!(format!("{err:#}").contains("FIFO"), "{err:#}");
    }
}

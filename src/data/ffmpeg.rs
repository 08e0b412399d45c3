//! How the ffmpeg command-line tools are run: what an input may be, and how long we wait.
//!
//! A local file is always given as `file:` + its absolute path after `-i`, with only the
//! `file` protocol allowed, so a name like `concat:a.mp4|b.mp4`, `http://…` or `-report` is
//! a file name, never a protocol or an option. Network protocols and capture devices come
//! in only as live sources (`stream`), and those carry a timeout: a process that gives
//! nothing for that long is killed and the read is an error, not a wait.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// URL schemes a live source may use.
pub const NETWORK_PROTOCOLS: &[&str] = &["rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp"];

/// An input as ffmpeg is given it.
#[derive(Clone, Debug)]
pub struct Input {
    arg: OsString,
    /// ffmpeg's input format (`-f`), for capture devices.
    pub format: Option<String>,
    local: bool,
    /// Live sources: nothing from ffmpeg for this long ends the read with an error.
    pub timeout: Option<Duration>,
}

impl Input {
    /// A local file, by absolute path, under the `file` protocol alone.
    pub fn local(path: &Path) -> Self {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut arg = OsString::from("file:");
        arg.push(abs.as_os_str());
        Self { arg, format: None, local: true, timeout: None }
    }

    /// A network URL or a device name, as ffmpeg takes it.
    pub fn live(arg: &str, format: Option<String>, timeout: Duration) -> Self {
        Self { arg: arg.into(), format, local: false, timeout: Some(timeout) }
    }

    /// The input for messages (a local file by its path).
    pub fn name(&self) -> String {
        let s = self.arg.to_string_lossy();
        if self.local { s.trim_start_matches("file:").to_string() } else { s.into_owned() }
    }

    /// Appends `[-protocol_whitelist file] [-f FORMAT] [-rw_timeout µs] -i ARG` to `cmd`.
    pub fn args(&self, cmd: &mut Command) {
        if self.local {
            cmd.args(["-protocol_whitelist", "file"]);
        }
        if let Some(f) = &self.format {
            cmd.args(["-f", f]);
        }
        if let (Some(t), false) = (self.timeout, self.local) {
            let arg = self.arg.to_string_lossy();
            let scheme = arg.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
            if scheme.is_some_and(|s| NETWORK_PROTOCOLS.contains(&s.as_str())) {
                // Network reads also give up on their own (microseconds).
                cmd.arg("-rw_timeout").arg(t.as_micros().to_string());
            }
        }
        cmd.arg("-i").arg(&self.arg);
    }
}

/// `ffmpeg` / `ffprobe` with standard input closed.
pub fn tool(name: &str) -> Command {
    let mut c = Command::new(name);
    c.stdin(Stdio::null());
    c
}

fn spawn_error(name: &str, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!("`{name}` not found: video input needs ffmpeg (run scripts/setup.sh or apt-get install ffmpeg)")
    } else {
        anyhow::anyhow!("running {name}: {e}")
    }
}

/// Starts `cmd` (the tool `name`) with stdout and stderr piped.
pub fn spawn(cmd: &mut Command, name: &str) -> Result<Child> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|e| spawn_error(name, e))
}

/// Runs `cmd` to completion, collecting its output; with a `timeout`, a process still
/// running after it is killed and the run is an error.
pub fn run(cmd: &mut Command, name: &str, timeout: Option<Duration>) -> Result<Output> {
    let mut child = spawn(cmd, name)?;
    let Some(timeout) = timeout else {
        return child.wait_with_output().with_context(|| format!("running {name}"));
    };
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().with_context(|| format!("running {name}"))? {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{name} had no answer within {:.0} s (--timeout)", timeout.as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let joined = |t: std::thread::JoinHandle<Vec<u8>>| t.join().unwrap_or_default();
    Ok(Output { status, stdout: joined(stdout), stderr: joined(stderr) })
}

/// Kills a child process once `timeout` passes without [`Watchdog::alive`]. Its owner must
/// [`stop`](Watchdog::stop) it before waiting for the child, so that the pid it may signal
/// is still the child's.
pub struct Watchdog {
    last: Arc<Mutex<Instant>>,
    done: Arc<AtomicBool>,
    fired: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    pub fn start(child: &Child, timeout: Duration) -> Self {
        let pid = child.id() as libc::pid_t;
        let last = Arc::new(Mutex::new(Instant::now()));
        let (done, fired) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (l, d, f) = (last.clone(), done.clone(), fired.clone());
        let thread = std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                let late = l.lock().map(|t| t.elapsed() > timeout).unwrap_or(false);
                if late && !d.load(Ordering::SeqCst) {
                    f.store(true, Ordering::SeqCst);
                    // SAFETY: signals our own child, which its owner reaps only after `stop`
                    // has joined this thread, so the pid cannot have been reused.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
            }
        });
        Self { last, done, fired, thread: Some(thread) }
    }

    /// Progress: the timeout starts again.
    pub fn alive(&self) {
        if let Ok(mut t) = self.last.lock() {
            *t = Instant::now();
        }
    }

    /// Ends the watch; whether the child was killed for the timeout.
    pub fn stop(mut self) -> bool {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.fired.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_are_files_never_protocols_or_options() {
        for name in ["concat:a.mp4|b.mp4", "-report", "http://x/y.mp4", "subfile,,start,0,end,9,,:a.mp4"] {
            let mut cmd = Command::new("ffprobe");
            Input::local(Path::new(name)).args(&mut cmd);
            let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
            let i = args.iter().position(|a| a == "-i").unwrap();
            let abs = std::path::absolute(name).unwrap();
            assert_eq!(args[i + 1], format!("file:{}", abs.display()), "{args:?}");
            assert_eq!(&args[..2], ["-protocol_whitelist", "file"]);
        }
    }

    #[test]
    fn a_silent_process_is_killed_after_the_timeout() {
        let start = Instant::now();
        let e = run(Command::new("sleep").arg("30"), "sleep", Some(Duration::from_millis(300))).unwrap_err();
        assert!(e.to_string().contains("no answer"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10));
        let out = run(Command::new("true").stdin(Stdio::null()), "true", Some(Duration::from_secs(30))).unwrap();
        assert!(out.status.success());
    }
}

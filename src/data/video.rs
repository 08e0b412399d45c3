//! Video files decoded through the ffmpeg command-line tools (installed by
//! `scripts/setup.sh`): any container and codec ffmpeg knows. Frames are streamed as raw
//! RGB, only the sampled ones are kept, and decoding stops after the last sampled frame, so
//! memory stays bounded by the clip, not the video.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, Result, bail};
use image::RgbImage;

/// What `ffprobe` reports about a video's first video stream.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    /// Frames per second (average frame rate).
    pub fps: f64,
    /// Number of frames, counted by reading every packet of the stream.
    pub frames: usize,
}

fn tool(name: &str) -> Command {
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

/// Probes `path`. `exact` decodes every frame to count them (`-count_frames`); otherwise
/// packets are counted, which is the same for every common codec and much faster.
pub fn probe(path: &Path, exact: bool) -> Result<VideoInfo> {
    if !path.is_file() {
        bail!("video {} does not exist", path.display());
    }
    probe_input(path.as_os_str(), None, Some(exact))
}

/// A video input ffmpeg reads as it comes: a file, a URL (`rtsp://…`, `http://…`, `file:…`)
/// or a capture device (`/dev/video0` with format `v4l2`), for streaming inference.
#[derive(Clone, Debug)]
pub struct Source {
    pub input: OsString,
    /// ffmpeg's input format (`-f`), for devices; `None` lets ffmpeg detect it.
    pub format: Option<String>,
}

impl Source {
    /// Size and frame rate of the source's first video stream, without counting frames
    /// (`frames` is 0: a live source has no end to count to).
    pub fn probe(&self) -> Result<VideoInfo> {
        probe_input(&self.input, self.format.as_deref(), None)
    }

    /// Decodes the source from its start (scaled so the short side is `short_side`, if
    /// given) and hands each frame to `f` as it arrives, one frame in memory at a time,
    /// until the source ends or `f` fails. Returns the number of frames decoded.
    pub fn for_each_frame(
        &self,
        info: &VideoInfo,
        short_side: Option<u32>,
        f: impl FnMut(usize, RgbImage) -> Result<()>,
    ) -> Result<usize> {
        let (w, h) = output_size(info, short_side);
        let filter = format!("scale={w}:{h}:flags=bilinear");
        let (n, out) = stream(&self.input, self.format.as_deref(), &filter, None, (w, h), f)?;
        if !out.status.success() || n == 0 {
            bail!(
                "cannot decode video {}: {}",
                self.input.to_string_lossy(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(n)
    }
}

/// ffprobe on `input` (with input format `format`); `count`: `Some(exact)` counts frames
/// (decoding) or packets, `None` counts nothing (frames 0).
fn probe_input(input: &OsStr, format: Option<&str>, count: Option<bool>) -> Result<VideoInfo> {
    let name = input.to_string_lossy();
    let mut cmd = tool("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v:0"]);
    match count {
        Some(true) => cmd.arg("-count_frames"),
        Some(false) => cmd.arg("-count_packets"),
        None => &mut cmd,
    };
    if let Some(f) = format {
        cmd.args(["-f", f]);
    }
    let out = cmd
        .arg("-show_entries")
        .arg("stream=width,height,avg_frame_rate,r_frame_rate,nb_frames,nb_read_frames,nb_read_packets")
        .args(["-of", "json"])
        .arg(input)
        .output()
        .map_err(|e| spawn_error("ffprobe", e))?;
    if !out.status.success() {
        bail!("cannot read video {name}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("ffprobe output for {name} is not JSON"))?;
    let exact = count == Some(true);
    let s = v["streams"].get(0).ok_or_else(|| anyhow::anyhow!("video {name} has no video stream"))?;
    let num = |k: &str| s[k].as_u64().or_else(|| s[k].as_str().and_then(|x| x.parse().ok()));
    let rate = |k: &str| {
        let r = s[k].as_str()?;
        let (a, b) = r.split_once('/')?;
        let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
        (b > 0.0 && a > 0.0).then(|| a / b)
    };
    let frames = match count {
        Some(exact) => num(if exact { "nb_read_frames" } else { "nb_read_packets" }).unwrap_or(0) as usize,
        None => 0,
    };
    let (width, height) = (num("width").unwrap_or(0) as u32, num("height").unwrap_or(0) as u32);
    if width == 0 || height == 0 {
        bail!("video {name} has no decodable video stream");
    }
    // A container whose header promises clearly more frames than decode is truncated or
    // corrupt (a frame or two of difference is normal for AVI's trailing packets).
    if let Some(declared) = num("nb_frames").map(|d| d as usize)
        && exact
        && frames + 2 < declared
        && (frames as f64) < 0.95 * declared as f64
    {
        bail!("video {name} is truncated or corrupt: its header declares {declared} frames, only {frames} decode");
    }
    let fps = rate("avg_frame_rate").or_else(|| rate("r_frame_rate")).unwrap_or(25.0);
    Ok(VideoInfo { width, height, fps, frames })
}

/// `probe(path, true)` remembered for the life of the process, keyed by path, size and
/// modification time: the exact count needs a full decode, which a training run should pay
/// once per video, not once per epoch.
pub fn probe_cached(path: &Path) -> Result<VideoInfo> {
    type Key = (std::path::PathBuf, u64, Option<std::time::SystemTime>);
    static CACHE: OnceLock<Mutex<HashMap<Key, VideoInfo>>> = OnceLock::new();
    let meta = std::fs::metadata(path).with_context(|| format!("video {} does not exist", path.display()))?;
    let key = (path.to_path_buf(), meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(info) = cache.lock().expect("cache lock").get(&key) {
        return Ok(info.clone());
    }
    let info = probe(path, true)?;
    cache.lock().expect("cache lock").insert(key, info.clone());
    Ok(info)
}

/// Decodes the 0-based frames `indices` (any order, repeats allowed) of `path`, optionally
/// scaled so the short side is `short_side`. Returns them in the order asked.
pub fn read_frames(path: &Path, info: &VideoInfo, indices: &[usize], short_side: Option<u32>) -> Result<Vec<RgbImage>> {
    let mut wanted: Vec<usize> = indices.to_vec();
    wanted.sort_unstable();
    wanted.dedup();
    let Some(&last) = wanted.last() else { return Ok(Vec::new()) };
    if last >= info.frames {
        bail!("video {}: frame {last} asked, but it has {} frames", path.display(), info.frames);
    }
    let (w, h) = output_size(info, short_side);
    let select: Vec<String> = wanted.iter().map(|i| format!("eq(n\\,{i})")).collect();
    let filter = format!("select='{}',scale={w}:{h}:flags=bilinear", select.join("+"));
    let mut decoded = Vec::with_capacity(wanted.len());
    let (_, out) = stream(path.as_os_str(), None, &filter, Some(wanted.len()), (w, h), |_, img| {
        decoded.push(img);
        Ok(())
    })?;
    if decoded.len() < wanted.len() {
        let missing = wanted[decoded.len()];
        let msg = String::from_utf8_lossy(&out.stderr);
        bail!(
            "video {}: cannot decode frame {missing} (got {} of {} frames){}{}",
            path.display(),
            decoded.len(),
            wanted.len(),
            if msg.trim().is_empty() { "" } else { ": " },
            msg.trim()
        );
    }
    Ok(indices.iter().map(|i| decoded[wanted.binary_search(i).expect("present")].clone()).collect())
}

/// Runs ffmpeg on `input` (input format `format`) through `filter` (frames of `w`×`h`) and hands each decoded frame
/// to `f`, one frame in memory at a time, stopping after `max_frames`. Returns the number of
/// frames read and ffmpeg's exit status and stderr.
fn stream(
    input: &OsStr,
    format: Option<&str>,
    filter: &str,
    max_frames: Option<usize>,
    (w, h): (u32, u32),
    mut f: impl FnMut(usize, RgbImage) -> Result<()>,
) -> Result<(usize, std::process::Output)> {
    let mut child = decoder(input, format, filter, max_frames)?;
    let mut stdout = child.stdout.take().expect("piped");
    let (mut n, mut result) = (0, Ok(()));
    while max_frames.is_none_or(|m| n < m) {
        let mut buf = vec![0u8; (w * h * 3) as usize];
        if stdout.read_exact(&mut buf).is_err() {
            break;
        }
        if let Err(e) = f(n, RgbImage::from_raw(w, h, buf).expect("buffer size matches")) {
            result = Err(e);
            break;
        }
        n += 1;
    }
    drop(stdout);
    let out = child.wait_with_output().with_context(|| format!("decoding {}", input.to_string_lossy()))?;
    result?;
    Ok((n, out))
}

/// Frame size after scaling the short side to `short_side` (if given).
fn output_size(info: &VideoInfo, short_side: Option<u32>) -> (u32, u32) {
    match short_side {
        Some(s) if info.width <= info.height => (s, scaled(info.height, s, info.width)),
        Some(s) => (scaled(info.width, s, info.height), s),
        None => (info.width, info.height),
    }
}

/// An ffmpeg process decoding `input`'s first video stream through `filter` to raw RGB on
/// its stdout (stopping after `max_frames` output frames, if given).
fn decoder(
    input: &OsStr,
    format: Option<&str>,
    filter: &str,
    max_frames: Option<usize>,
) -> Result<std::process::Child> {
    let mut cmd = tool("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-threads", "1"]);
    if let Some(f) = format {
        cmd.args(["-f", f]);
    }
    cmd.arg("-i").arg(input).args(["-map", "0:v:0", "-vf", filter, "-fps_mode", "passthrough"]);
    if let Some(n) = max_frames {
        cmd.arg("-frames:v").arg(n.to_string());
    }
    cmd.args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error("ffmpeg", e))
}

/// `long · short / other`, rounded to an even number as video scalers prefer.
fn scaled(long: u32, short: u32, other: u32) -> u32 {
    let v = (long as f64 * short as f64 / other as f64).round() as u32;
    (v + v % 2).max(2)
}

/// True when `ffmpeg` and `ffprobe` can be run.
pub fn available() -> bool {
    ["ffmpeg", "ffprobe"].iter().all(|t| {
        tool(t).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    })
}

/// Streams every frame of `path` (optionally scaled to short side `short_side`) to `f`, one
/// frame in memory at a time. Returns the number of frames decoded.
pub fn for_each_frame(
    path: &Path,
    info: &VideoInfo,
    short_side: Option<u32>,
    f: impl FnMut(usize, RgbImage) -> Result<()>,
) -> Result<usize> {
    let (w, h) = output_size(info, short_side);
    let (n, out) = stream(path.as_os_str(), None, &format!("scale={w}:{h}:flags=bilinear"), None, (w, h), f)?;
    if !out.status.success() || n == 0 {
        bail!("cannot decode video {}: {}", path.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(n)
}

//! Video files decoded through the ffmpeg command-line tools (installed by
//! `scripts/setup.sh`): any container and codec ffmpeg knows. Frames are streamed as raw
//! RGB, only the sampled ones are kept, and decoding stops after the last sampled frame, so
//! memory stays bounded by the clip, not the video. How ffmpeg is invoked (local files only
//! as files, timeouts for live sources) is `data::ffmpeg`.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use image::RgbImage;

use crate::data::ffmpeg::{self, Input, NETWORK_PROTOCOLS, Watchdog, tool};

/// What `ffprobe` reports about a video's first video stream.
#[derive(Clone, Debug, PartialEq)]
pub struct VideoInfo {
    /// Displayed size (after the stream's rotation, if any).
    pub width: u32,
    pub height: u32,
    /// Frames per second (average frame rate).
    pub fps: f64,
    /// Number of frames, counted by reading every packet of the stream.
    pub frames: usize,
}

/// Probes the local video file `path` (regular files only: a FIFO or device is refused).
/// `exact` decodes every frame to count them (`-count_frames`); otherwise packets are
/// counted, which is the same for every common codec and much faster.
pub fn probe(path: &Path, exact: bool) -> Result<VideoInfo> {
    crate::io::require_regular(path, "video")?;
    probe_input(&Input::local(path), Some(exact))
}

/// A video input ffmpeg reads as it comes: a local file, FIFO or capture device, or a
/// network URL (`rtsp://…`, `http://…`), for streaming inference. Reads give up after the
/// timeout without a frame, so a server that never answers or a FIFO nobody writes to ends
/// in an error, not a wait.
#[derive(Clone, Debug)]
pub struct Source {
    input: Input,
}

impl Source {
    /// Recognises `input`: `file:PATH` or a path that exists (a regular file, FIFO or
    /// character device), a URL of a [`NETWORK_PROTOCOLS`] scheme, or, with an input
    /// `format` (`v4l2`, …), whatever that device layer names. Any other ffmpeg protocol
    /// (`concat:`, `subfile,,`, …) is refused.
    pub fn open(input: &str, format: Option<String>, timeout: Duration) -> Result<Self> {
        let local = input.strip_prefix("file:").unwrap_or(input);
        let scheme = input.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).filter(|_| local == input);
        let mut chosen = if let Some(scheme) = scheme {
            if !NETWORK_PROTOCOLS.contains(&scheme.as_str()) {
                bail!(
                    "{input}: {scheme}:// is not a protocol a live source may use ({})",
                    NETWORK_PROTOCOLS.join(", ")
                );
            }
            Input::live(input, None, timeout)
        } else if let Ok(meta) = std::fs::metadata(local) {
            let kind = meta.file_type();
            if !(kind.is_file() || kind.is_fifo() || kind.is_char_device()) {
                bail!("{local} is {}: not a video, FIFO or capture device", crate::io::describe(kind));
            }
            let mut i = Input::local(Path::new(local));
            i.timeout = Some(timeout);
            i
        } else if format.is_some() {
            Input::live(input, None, timeout)
        } else {
            bail!(
                "{input} is neither a video file, a frame folder nor a URL ({}://…; for a capture device give \
                 --input-format)",
                NETWORK_PROTOCOLS.join("|")
            );
        };
        chosen.format = format;
        Ok(Self { input: chosen })
    }

    /// Size and frame rate of the source's first video stream, without counting frames
    /// (`frames` is 0: a live source has no end to count to).
    pub fn probe(&self) -> Result<VideoInfo> {
        probe_input(&self.input, None)
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
        decode_all(&self.input, info, short_side, f)
    }
}

/// Streams every frame of the local video `path` (optionally scaled to short side
/// `short_side`) to `f`, one frame in memory at a time. Returns the number of frames decoded.
pub fn for_each_frame(
    path: &Path,
    info: &VideoInfo,
    short_side: Option<u32>,
    f: impl FnMut(usize, RgbImage) -> Result<()>,
) -> Result<usize> {
    crate::io::require_regular(path, "video")?;
    decode_all(&Input::local(path), info, short_side, f)
}

fn decode_all(
    input: &Input,
    info: &VideoInfo,
    short_side: Option<u32>,
    f: impl FnMut(usize, RgbImage) -> Result<()>,
) -> Result<usize> {
    let (w, h) = output_size(info, short_side)?;
    let (n, out) = stream(input, &format!("scale={w}:{h}:flags=bilinear"), None, (w, h), f)?;
    if !out.status.success() || n == 0 {
        bail!("cannot decode video {}: {}", input.name(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(n)
}

/// ffprobe on `input`; `count`: `Some(exact)` counts frames (decoding) or packets, `None`
/// counts nothing (frames 0). The size is the displayed one: a rotation in the stream's
/// display matrix (phones write ±90°) swaps width and height, as ffmpeg rotates decoded
/// frames (autorotate) before our filters see them.
fn probe_input(input: &Input, count: Option<bool>) -> Result<VideoInfo> {
    let name = input.name();
    let mut cmd = tool("ffprobe");
    cmd.args(["-v", "error", "-select_streams", "v:0"]);
    match count {
        Some(true) => cmd.arg("-count_frames"),
        Some(false) => cmd.arg("-count_packets"),
        None => &mut cmd,
    };
    cmd.arg("-show_entries")
        .arg("stream=width,height,avg_frame_rate,r_frame_rate,nb_frames,nb_read_frames,nb_read_packets:stream_side_data=rotation")
        .args(["-of", "json"]);
    input.args(&mut cmd);
    let out = ffmpeg::run(&mut cmd, "ffprobe", input.timeout).with_context(|| format!("probing {name}"))?;
    if !out.status.success() {
        bail!("cannot read video {name}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("ffprobe output for {name} is not JSON"))?;
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
    let (mut width, mut height) = (num("width").unwrap_or(0), num("height").unwrap_or(0));
    if width == 0 || height == 0 {
        bail!("video {name} has no decodable video stream");
    }
    crate::limits::frame_pixels(&format!("video {name}"), width, height)?;
    if quarter_turn(s) {
        (width, height) = (height, width);
    }
    // A container whose header promises clearly more frames than decode is truncated or
    // corrupt (a frame or two of difference is normal for AVI's trailing packets).
    if let Some(declared) = num("nb_frames").map(|d| d as usize)
        && count == Some(true)
        && falls_short(frames, declared)
    {
        bail!("video {name} is truncated or corrupt: its header declares {declared} frames, only {frames} decode");
    }
    let fps = rate("avg_frame_rate").or_else(|| rate("r_frame_rate")).unwrap_or(25.0);
    Ok(VideoInfo { width: width as u32, height: height as u32, fps, frames })
}

/// Whether `decoded` frames fall clearly short of the `expected` count a container declares
/// or its packets promise: more than 2 frames and more than 5% missing. A frame or two less
/// is normal (Xvid AVIs end with an empty packet; some headers count a frame the stream
/// does not hold).
pub fn falls_short(decoded: usize, expected: usize) -> bool {
    decoded.saturating_add(2) < expected && (decoded as f64) < 0.95 * expected as f64
}

/// Whether an ffprobe stream record's display matrix turns the picture by ±90°.
fn quarter_turn(stream: &serde_json::Value) -> bool {
    let sides = stream["side_data_list"].as_array().map(Vec::as_slice).unwrap_or_default();
    sides.iter().filter_map(|d| d["rotation"].as_f64()).any(|r| (r.rem_euclid(180.0) - 90.0).abs() < 1.0)
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
    crate::io::require_regular(path, "video")?;
    let (w, h) = output_size(info, short_side)?;
    let select: Vec<String> = wanted.iter().map(|i| format!("eq(n\\,{i})")).collect();
    let filter = format!("select='{}',scale={w}:{h}:flags=bilinear", select.join("+"));
    let mut decoded = Vec::with_capacity(wanted.len());
    let (_, out) = stream(&Input::local(path), &filter, Some(wanted.len()), (w, h), |_, img| {
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

/// Runs ffmpeg on `input` through `filter` (frames of `w`×`h`) and hands each decoded frame
/// to `f`, one frame in memory at a time, stopping after `max_frames`. Returns the number of
/// frames read and ffmpeg's exit status and stderr. A live input's timeout applies to the
/// wait for each frame.
fn stream(
    input: &Input,
    filter: &str,
    max_frames: Option<usize>,
    (w, h): (u32, u32),
    mut f: impl FnMut(usize, RgbImage) -> Result<()>,
) -> Result<(usize, std::process::Output)> {
    let mut cmd = tool("ffmpeg");
    cmd.args(["-v", "error", "-nostdin", "-threads", "1"]);
    input.args(&mut cmd);
    cmd.args(["-map", "0:v:0", "-vf", filter, "-fps_mode", "passthrough"]);
    if let Some(n) = max_frames {
        cmd.arg("-frames:v").arg(n.to_string());
    }
    cmd.args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]);
    let mut child = ffmpeg::spawn(&mut cmd, "ffmpeg")?;
    let dog = input.timeout.map(|t| Watchdog::start(&child, t));
    let mut stdout = child.stdout.take().expect("piped");
    let (mut n, mut result) = (0, Ok(()));
    while max_frames.is_none_or(|m| n < m) {
        let mut buf = vec![0u8; (w * h * 3) as usize];
        if stdout.read_exact(&mut buf).is_err() {
            break;
        }
        if let Some(dog) = &dog {
            dog.alive();
        }
        if let Err(e) = f(n, RgbImage::from_raw(w, h, buf).expect("buffer size matches")) {
            result = Err(e);
            break;
        }
        n += 1;
    }
    drop(stdout);
    let timed_out = dog.is_some_and(Watchdog::stop);
    let out = child.wait_with_output().with_context(|| format!("decoding {}", input.name()))?;
    if timed_out {
        let t = input.timeout.unwrap_or_default().as_secs_f64();
        bail!("no frame from {} for {t:.0} s after {n} frame(s) (--timeout): stopped waiting", input.name());
    }
    result?;
    Ok((n, out))
}

/// Frame size after scaling the short side to `short_side` (if given), within
/// [`crate::limits::MAX_FRAME_PIXELS`] (an extreme aspect ratio could ask for more).
fn output_size(info: &VideoInfo, short_side: Option<u32>) -> Result<(u32, u32)> {
    let (w, h) = match short_side {
        Some(s) if info.width <= info.height => (s, scaled(info.height, s, info.width)),
        Some(s) => (scaled(info.width, s, info.height), s),
        None => (info.width, info.height),
    };
    crate::limits::frame_pixels("the scaled video frame", w as u64, h as u64)?;
    Ok((w, h))
}

/// `long · short / other`, rounded to an even number as video scalers prefer.
fn scaled(long: u32, short: u32, other: u32) -> u32 {
    let v = (long as f64 * short as f64 / other as f64).round().min(u32::MAX as f64 / 2.0) as u32;
    (v + v % 2).max(2)
}

/// True when `ffmpeg` and `ffprobe` can be run.
pub fn available() -> bool {
    ["ffmpeg", "ffprobe"].iter().all(|t| {
        tool(t)
            .arg("-version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

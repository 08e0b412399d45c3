//! Optical flow: TV-L1 against OpenCV's on real frames (`tests/fixtures/flow_tvl1_opencv.safetensors`,
//! made by `scripts/flow_reference.py`), and `gateshift data extract-flow` on a generated
//! translation, from PNG frames and from H.264, with its resumable, parallel runs.

mod common;

use std::path::Path;
use std::process::Command;

use gateshift::flow::{Farneback, Flow, Plane, TvL1, dequantise, end_point_error};
use image::{GrayImage, RgbImage};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateshift"))
}

fn grey_plane(data: &burn::tensor::TensorData) -> Plane {
    let shape = data.shape().to_vec();
    Plane { w: shape[1], h: shape[0], data: data.as_slice::<f32>().expect("grey levels").to_vec() }
}

/// The EPE (whole image, and 8 px inside) of `ours` against each pair of an OpenCV fixture.
fn against_opencv(fixture: &str, ours: impl Fn(&Plane, &Plane) -> Flow) -> Vec<(f64, f64)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
    let (tensors, meta) = gateshift::checkpoint::safetensors::read(&path).unwrap();
    let pairs: Vec<serde_json::Value> = serde_json::from_str(&meta["pairs"]).unwrap();
    let mut out = Vec::new();
    for (k, pair) in pairs.iter().enumerate() {
        let i0 = grey_plane(&tensors[&format!("{k}.i0")]);
        let i1 = grey_plane(&tensors[&format!("{k}.i1")]);
        let reference = &tensors[&format!("{k}.flow")];
        let xy = reference.as_slice::<f32>().unwrap();
        let (w, h) = (i0.w, i0.h);
        let part = |c: usize| Plane { w, h, data: (0..w * h).map(|i| xy[2 * i + c]).collect() };
        let theirs = Flow { u: part(0), v: part(1) };
        let ours = ours(&i0, &i1);
        let (all, inner) = (end_point_error(&ours, &theirs, 0), end_point_error(&ours, &theirs, 8));
        let magnitude = end_point_error(&theirs, &Flow { u: Plane::zeros(w, h), v: Plane::zeros(w, h) }, 0);
        println!(
            "{fixture}: {} frame {} ({w}×{h}): EPE {all:.2e} px, interior {inner:.2e} px; mean |flow| {magnitude:.3} px",
            pair["clip"], pair["frame"]
        );
        out.push((all, inner));
    }
    out
}

#[test]
fn tvl1_agrees_with_opencv_on_real_frames() {
    for (all, inner) in against_opencv("flow_tvl1_opencv.safetensors", |a, b| TvL1::default().flow(a, b)) {
        assert!(all < 0.03 && inner < 0.03, "EPE {all} (interior {inner}) against OpenCV");
    }
}

#[test]
fn farneback_agrees_with_opencv_on_real_frames() {
    for (all, inner) in against_opencv("flow_farneback_opencv.safetensors", |a, b| Farneback::default().flow(a, b)) {
        assert!(all < 1e-4 && inner < 1e-4, "EPE {all} (interior {inner}) against OpenCV");
    }
}

/// A random smooth texture of `w`×`h`, the same for a seed.
fn texture(w: u32, h: u32, seed: u64) -> GrayImage {
    let mut s = seed;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 56) as f32
    };
    let raw: Vec<f32> = (0..w * h).map(|_| next()).collect();
    let at = |x: i64, y: i64| raw[(y.clamp(0, h as i64 - 1) * w as i64 + x.clamp(0, w as i64 - 1)) as usize];
    GrayImage::from_fn(w, h, |x, y| {
        let (x, y) = (x as i64, y as i64);
        let sum: f32 =
            (-2..=2).flat_map(|dy| (-2..=2).map(move |dx| (dx, dy))).map(|(dx, dy)| at(x + dx, y + dy)).sum();
        image::Luma([(sum / 25.0 * 2.0 - 128.0).clamp(0.0, 255.0) as u8])
    })
}

/// `n` frames of `w`×`h` cut from one texture, moving (dx, dy) whole pixels per frame.
fn translation(dir: &Path, n: u32, (w, h): (u32, u32), (dx, dy): (i32, i32)) {
    std::fs::create_dir_all(dir).unwrap();
    let canvas = texture(w + 40, h + 40, 7);
    for k in 0..n {
        let (ox, oy) = (20 - k as i32 * dx, 20 - k as i32 * dy);
        let frame = RgbImage::from_fn(w, h, |x, y| {
            let g = canvas.get_pixel((x as i32 + ox) as u32, (y as i32 + oy) as u32).0[0];
            image::Rgb([g, g, g])
        });
        frame.save(dir.join(format!("img_{:05}.png", k + 1))).unwrap();
    }
}

/// The flow stored in a folder's pair `t`, dequantised.
fn stored(dir: &Path, t: usize, bound: f32) -> Flow {
    let read = |c: &str| {
        let img = image::open(dir.join(format!("{c}_{t:05}.jpg"))).unwrap().to_luma8();
        Plane {
            w: img.width() as usize,
            h: img.height() as usize,
            data: img.pixels().map(|p| dequantise(p.0[0], bound)).collect(),
        }
    };
    Flow { u: read("x"), v: read("y") }
}

fn constant(w: usize, h: usize, (u, v): (f32, f32)) -> Flow {
    Flow { u: Plane { w, h, data: vec![u; w * h] }, v: Plane { w, h, data: vec![v; w * h] } }
}

/// `--method farneback` stores the same motion, and its parameters are checked.
#[test]
fn extract_flow_farneback_recovers_a_translation() {
    let dir = common::tmp("flow-farneback");
    let frames = dir.join("clips/walk");
    translation(&frames, 4, (96, 72), (2, -1));
    let out = dir.join("flow");
    let run = |extra: &[&str]| {
        bin()
            .args(["data", "extract-flow", "--template", "img_{:05d}.png", "--method", "farneback", "--out"])
            .arg(&out)
            .arg(&frames)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Farneback flow"));
    for t in 1..=3 {
        let epe = end_point_error(&stored(&out.join("walk"), t, 20.0), &constant(96, 72, (2.0, -1.0)), 12);
        assert!(epe < 0.5, "pair {t}: EPE {epe}");
    }
    // No pyramid (OpenCV allows levels = 0): the image alone still follows 2 px, into its own output.
    let o = bin()
        .args(["data", "extract-flow", "--template", "img_{:05d}.png", "--method", "farneback", "--levels", "0"])
        .arg("--out")
        .arg(dir.join("flow0"))
        .arg(&frames)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let epe = end_point_error(&stored(&dir.join("flow0/walk"), 1, 20.0), &constant(96, 72, (2.0, -1.0)), 12);
    assert!(epe < 0.5, "levels 0: EPE {epe}");
    for (flag, bad) in
        [("--pyr-scale", "1"), ("--pyr-scale", "nan"), ("--winsize", "4"), ("--poly-sigma", "0"), ("--levels", "21")]
    {
        let o = run(&[flag, bad]);
        assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains(flag), "{flag} {bad}");
    }
}

#[test]
fn extract_flow_recovers_a_translation_from_frames_and_from_h264() {
    let dir = common::tmp("flow-translation");
    let frames = dir.join("clips/walk");
    translation(&frames, 5, (96, 72), (2, -1));
    let out = dir.join("flow");
    let run = |input: &Path, extra: &[&str]| {
        bin()
            .args(["data", "extract-flow", "--template", "img_{:05d}.png", "--jobs", "2", "--out"])
            .arg(&out)
            .arg(input)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&frames, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for t in 1..=4 {
        let epe = end_point_error(&stored(&out.join("walk"), t, 20.0), &constant(96, 72, (2.0, -1.0)), 10);
        assert!(epe < 0.5, "pair {t}: EPE {epe}");
    }
    assert!(!out.join("walk/x_00005.jpg").exists(), "5 frames give 4 pairs");
    assert_eq!(std::fs::read_to_string(out.join("list.txt")).unwrap(), "walk 4 0\n");

    // A second run keeps the finished folder; a stale partial folder of a dead process goes.
    std::fs::create_dir_all(out.join(".walk.partial.999999999")).unwrap();
    let before = std::fs::metadata(out.join("walk/x_00001.jpg")).unwrap().modified().unwrap();
    let o = run(&frames, &[]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && text.contains("already there"), "{text}");
    assert!(!out.join(".walk.partial.999999999").exists());
    assert_eq!(std::fs::metadata(out.join("walk/x_00001.jpg")).unwrap().modified().unwrap(), before);

    if !common::ffmpeg() {
        return;
    }
    // The same motion through H.264 (4:2:0, lossy): a list of a video and a one-frame folder.
    let video = dir.join("clips/walk264.mp4");
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-framerate", "10", "-i"])
        .arg(frames.join("img_%05d.png"))
        .args(["-c:v", "libx264", "-crf", "12", "-pix_fmt", "yuv420p"])
        .arg(&video)
        .status()
        .unwrap();
    assert!(ok.success());
    // A list of frame folders, one of a single frame: that one fails by its line, no folder
    // is left for it, and the list holds the others.
    let single = dir.join("clips/still");
    translation(&single, 1, (96, 72), (0, 0));
    std::fs::write(dir.join("clips/frames.txt"), "walk 5 2\nstill 1 4\n").unwrap();
    let o = run(&dir.join("clips/frames.txt"), &[]);
    let text = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && text.contains("frames.txt:2") && text.contains("1 frame(s)"), "{text}");
    assert!(!out.join("still").exists(), "a failed input leaves no folder");
    assert_eq!(std::fs::read_to_string(out.join("list.txt")).unwrap(), "walk 4 2\n");
    // A video list, its own flow list.
    std::fs::write(dir.join("clips/videos.txt"), "walk264.mp4 3\n").unwrap();
    let o = run(&dir.join("clips/videos.txt"), &["--out-list", dir.join("videos_flow.txt").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(dir.join("videos_flow.txt")).unwrap(), "walk264 4 3\n");
    for t in 1..=4 {
        let epe = end_point_error(&stored(&out.join("walk264"), t, 20.0), &constant(96, 72, (2.0, -1.0)), 10);
        assert!(epe < 0.5, "H.264 pair {t}: EPE {epe}");
    }
}

/// Encodes the frames of `dir` (img_%05d.png) with `codec`, no B-frames, one keyframe.
fn encode(dir: &Path, codec: &str, out: &Path) {
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-framerate", "10", "-i"])
        .arg(dir.join("img_%05d.png"))
        .args(["-c:v", codec, "-bf", "0", "-g", "100", "-q:v", "2", "-pix_fmt", "yuv420p"])
        .arg(out)
        .status()
        .unwrap();
    assert!(ok.success(), "ffmpeg could not encode {codec}");
}

/// The share of the pixels ≥ 16 px inside the border whose stored vector is within 0.5 px
/// of `truth`.
fn share_near(flow: &Flow, truth: (f32, f32)) -> f64 {
    let (w, h) = (flow.u.w, flow.u.h);
    let (mut near, mut n) = (0usize, 0usize);
    for y in 16..h - 16 {
        for x in 16..w - 16 {
            n += 1;
            near += ((flow.u.at(x, y) - truth.0).hypot(flow.v.at(x, y) - truth.1) < 0.5) as usize;
        }
    }
    near as f64 / n as f64
}

#[test]
fn motion_vectors_of_h264_and_mpeg4_point_the_way_a_translation_moves() {
    if !common::ffmpeg() {
        return;
    }
    let dir = common::tmp("flow-mv");
    translation(&dir.join("frames"), 8, (160, 128), (2, -1));
    for (codec, file) in [("libx264", "walk.mp4"), ("mpeg4", "walk.avi")] {
        encode(&dir.join("frames"), codec, &dir.join(file));
        let o = bin()
            .args(["data", "extract-flow", "--method", "motion-vectors", "--out"])
            .arg(dir.join("mv"))
            .arg(dir.join(file))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&o.stderr);
        if !cfg!(feature = "libav") {
            assert!(!o.status.success() && text.contains("`libav` feature"), "{text}");
            continue;
        }
        assert!(o.status.success(), "{codec}: {text}");
        let name = file.split('.').next().unwrap();
        for t in 1..=7 {
            let share = share_near(&stored(&dir.join("mv").join(name), t, 20.0), (2.0, -1.0));
            println!("{codec} pair {t}: {:.0}% of the interior within 0.5 px of (2, −1)", 100.0 * share);
            assert!(share > 0.5, "{codec} pair {t}: only {share} near the true motion");
        }
    }
    // A frame folder has no stored vectors.
    let o = bin()
        .args(["data", "extract-flow", "--method", "motion-vectors", "--template", "img_{:05d}.png", "--out"])
        .arg(dir.join("mv2"))
        .arg(dir.join("frames"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "motion vectors from a frame folder");
}

//! CoViAR's motion-vector stream through the binary: `extract-flow --method motion-vectors
//! --accumulate` on a generated translation (H.264 and MPEG-4 part 2, with and without
//! B-frames), its picture-type file, and a flow network trained and tested with
//! `--sampling coviar` on stored fields and on videos whose vectors it reads itself.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::run::{bin, ok, toy_data};

/// `n` PNG frames of 96×64 cut from a smooth random texture moving (2, −1) pixels a frame.
fn translation(dir: &Path, n: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let (w, h) = (96u32, 64u32);
    let mut s = 11u64;
    let mut next = || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 56) as f32
    };
    let (cw, ch) = (w + 2 * n + 8, h + n + 8);
    let raw: Vec<f32> = (0..cw * ch).map(|_| next()).collect();
    let at = |x: u32, y: u32| raw[(y.min(ch - 1) * cw + x.min(cw - 1)) as usize];
    let smooth = |x: u32, y: u32| {
        let sum: f32 = (0..5).flat_map(|dy| (0..5).map(move |dx| (dx, dy))).map(|(dx, dy)| at(x + dx, y + dy)).sum();
        (sum / 25.0 * 2.0 - 128.0).clamp(0.0, 255.0) as u8
    };
    for k in 0..n {
        // Content moves +2 in x and −1 in y: the window slides the other way.
        let (ox, oy) = (2 * n - 2 * k, k);
        let frame = image::RgbImage::from_fn(w, h, |x, y| {
            let g = smooth(x + ox, y + oy);
            image::Rgb([g, g, g])
        });
        frame.save(dir.join(format!("img_{:05}.png", k + 1))).unwrap();
    }
}

/// Encodes the frames `pattern` (`…/img_%05d.png`) with `codec` and its extra options.
fn encode(pattern: &Path, codec: &str, extra: &[&str], out: &Path) {
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-framerate", "10", "-i"])
        .arg(pattern)
        .args(["-c:v", codec, "-pix_fmt", "yuv420p"])
        .args(extra)
        .arg(out)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg could not encode {codec}");
}

/// The share of the interior (16 px from the border) of stored pair `t` within 0.5 px of
/// `truth`, read back from the x/y JPEGs with denseflow's ±20 mapping.
fn share_near(dir: &Path, t: usize, truth: (f32, f32)) -> f64 {
    let read = |c: &str| image::open(dir.join(format!("{c}_{t:05}.jpg"))).unwrap().to_luma8();
    let (x, y) = (read("x"), read("y"));
    let value = |p: u8| gateshift::flow::dequantise(p, 20.0);
    let (mut near, mut n) = (0usize, 0usize);
    for j in 16..x.height() - 16 {
        for i in 16..x.width() - 16 {
            let (u, v) = (value(x.get_pixel(i, j).0[0]), value(y.get_pixel(i, j).0[0]));
            n += 1;
            near += ((u - truth.0).hypot(v - truth.1) < 0.5) as usize;
        }
    }
    near as f64 / n as f64
}

/// Accumulated vectors grow by the per-frame motion from each I-frame on (D = p·(2, −1) at
/// p frames past it) and are zero at the I-frames; B-frames, traced from their past
/// reference, land on the same line. The picture types are stored beside them; values
/// are clipped at ±20 px as CoViAR's.
#[test]
fn accumulated_motion_vectors_grow_from_each_i_frame() {
    assert!(common::ffmpeg(), "ffmpeg is needed (scripts/setup.sh installs it)");
    let dir = common::tmp("coviar-accumulate");
    translation(&dir.join("frames"), 13);
    let no_b: &[&str] = &["-g", "4", "-bf", "0", "-sc_threshold", "0"];
    let b_frames: &[&str] =
        &["-g", "6", "-bf", "2", "-b_strategy", "0", "-refs", "1", "-qp", "10", "-sc_threshold", "0"];
    // (file, codec, options, B-frames, least share near the truth)
    let cases: [(&str, &str, &[&str], bool, f64); 4] = [
        ("h264.mp4", "libx264", &[no_b, &["-refs", "1", "-qp", "10"]].concat(), false, 0.95),
        ("mpeg4.avi", "mpeg4", &[no_b, &["-q:v", "2"]].concat(), false, 0.95),
        ("h264b.mp4", "libx264", b_frames, true, 0.9),
        // x264's defaults: B-pyramid, three reference frames (followed approximately); 2·11 px
        // at frame 11 is past the ±20 bound.
        ("h264x.mp4", "libx264", &["-g", "12", "-qp", "10"], true, 0.8),
    ];
    for (file, codec, extra, with_b, floor) in cases {
        encode(&dir.join("frames/img_%05d.png"), codec, extra, &dir.join(file));
        let out = bin()
            .args(["data", "extract-flow", "--method", "motion-vectors", "--accumulate", "--quality", "100", "--out"])
            .arg(dir.join("mv"))
            .arg(dir.join(file))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        if !cfg!(feature = "libav") {
            assert!(!out.status.success() && text.contains("`libav` feature"), "{text}");
            return;
        }
        assert!(out.status.success(), "{file}: {text}");
        let folder = dir.join("mv").join(file.split('.').next().unwrap());
        let types = std::fs::read_to_string(folder.join("frame_types.txt")).unwrap();
        let types = types.trim_end();
        println!("{file}: picture types {types}");
        assert_eq!(types.len(), 13);
        assert!(types.starts_with('I') && types.chars().all(|c| "IPB".contains(c)), "{types}");
        if !with_b {
            assert_eq!(types, "IPPPIPPPIPPPI", "{file}: a GOP of 4 without B-frames");
        } else {
            assert!(types.contains('B'), "{file}: B-frames asked for: {types}");
        }
        // Pair t (1-based) is frame t's trace; p frames past the last I-frame.
        let mut since = 0usize;
        for (t, kind) in types.chars().enumerate().skip(1) {
            since = if kind == 'I' { 0 } else { since + 1 };
            // Stored as CoViAR's representation: clipped to ±20 px.
            let truth = ((2.0 * since as f32).min(20.0), -(since as f32).min(20.0));
            let share = share_near(&folder, t, truth);
            println!(
                "{file} frame {t} ({kind}, {since} past the I-frame): {:.0}% within 0.5 px of {truth:?}",
                100.0 * share
            );
            let least = if kind == 'I' { 0.99 } else { floor };
            assert!(share >= least, "{file} frame {t}: only {share} near {truth:?}");
        }
    }
    // The same output with other settings (each frame's own vectors): refused, not taken as
    // done, and nothing of it changed.
    let before = std::fs::read(dir.join("mv/h264/x_00003.jpg")).unwrap();
    let out = bin()
        .args(["data", "extract-flow", "--method", "motion-vectors", "--quality", "100", "--out"])
        .arg(dir.join("mv"))
        .arg(dir.join("h264.mp4"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("other settings") && err.contains("accumulate=true"), "{err}");
    assert_eq!(std::fs::read(dir.join("mv/h264/x_00003.jpg")).unwrap(), before);
    // --accumulate belongs to motion vectors.
    let out = bin()
        .args(["data", "extract-flow", "--accumulate", "--out"])
        .arg(dir.join("tvl1"))
        .arg(dir.join("frames"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--method motion-vectors"), "{err}");
}

/// The toy data's clips as MPEG-4 part 2 videos with a GOP of 4 (CoViAR's codec), and their
/// lists `<video> <label>` (`videos/train.txt`, `videos/val.txt`).
fn toy_videos(data: &Path, videos: &Path) {
    std::fs::create_dir_all(videos).unwrap();
    for split in ["train", "val"] {
        let mut list = String::new();
        for line in std::fs::read_to_string(data.join(format!("{split}.txt"))).unwrap().lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let video = videos.join(format!("{}.avi", fields[0].replace('/', "_")));
            encode(&data.join(fields[0]).join("img_%05d.jpg"), "mpeg4", &["-g", "4", "-bf", "0", "-q:v", "2"], &video);
            list += &format!("{} {}\n", video.display(), fields[2]);
        }
        std::fs::write(videos.join(format!("{split}.txt")), list).unwrap();
    }
}

/// `test --dump-scores` of a checkpoint with `args`: each video's class scores.
fn scores(ckpt: &Path, args: &[&str], list: &Path, dump: &Path) -> Vec<Vec<f64>> {
    ok(bin()
        .arg("test")
        .arg("--checkpoint")
        .arg(ckpt)
        .arg("--list")
        .arg(list)
        .args(args)
        .arg("--dump-scores")
        .arg(dump)
        .output()
        .unwrap());
    std::fs::read_to_string(dump)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["scores"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// A TSN network on accumulated motion vectors with CoViAR's sampling (one field per
/// segment): trained on stored fields, tested on them and on the videos (whose vectors it
/// reads itself) with the same result, and run by `predict`; wrong combinations refused.
#[test]
fn a_motion_vector_network_trains_and_tests_with_gop_sampling() {
    assert!(common::ffmpeg(), "ffmpeg is needed (scripts/setup.sh installs it)");
    if !cfg!(feature = "libav") {
        return;
    }
    let dir = common::tmp("coviar-train");
    let data = toy_data(&dir);
    let (videos, mv) = (dir.join("videos"), dir.join("mv"));
    toy_videos(&data, &videos);
    for split in ["train", "val"] {
        ok(bin()
            .args(["data", "extract-flow", "--method", "motion-vectors", "--accumulate", "--quality", "100"])
            .arg(videos.join(format!("{split}.txt")))
            .arg("--out")
            .arg(&mv)
            .arg("--out-list")
            .arg(mv.join(format!("{split}.txt")))
            .output()
            .unwrap());
    }
    let run = dir.join("run");
    let train = |list_dir: &Path, new_length: &str| {
        let mut c = bin();
        c.args(["train", "--arch", "resnet-mini", "--temporal", "none", "--segments", "3", "--epochs", "1"])
            .args(["--batch-size", "4", "--input-size", "32", "--scale-size", "32", "--workers", "2", "--seed", "3"])
            .args(["--warmup-epochs", "1", "--flip-swap", "0:1", "--quiet", "--modality", "flow"])
            .args(["--new-length", new_length, "--sampling", "coviar", "--train-list"])
            .arg(list_dir.join("train.txt"))
            .arg("--out")
            .arg(&run);
        c.output().unwrap()
    };
    ok(train(&mv, "1"));
    let ckpt = run.join("last.safetensors");
    let gop = ["--sampling", "coviar"];
    let stored = scores(&ckpt, &gop, &mv.join("val.txt"), &dir.join("stored.jsonl"));
    let live = ["--sampling", "coviar", "--flow-method", "motion-vectors", "--flow-accumulate"];
    let read = scores(&ckpt, &live, &videos.join("val.txt"), &dir.join("live.jsonl"));
    assert_eq!(stored.len(), 8);
    // Up to the JPEG round trip, against how much the scores vary from video to video.
    let classes = stored[0].len();
    let range = |c: usize| {
        let v = stored.iter().map(|s| s[c]);
        v.clone().fold(f64::MIN, f64::max) - v.fold(f64::MAX, f64::min)
    };
    let spread = (0..classes).map(range).fold(0.0, f64::max);
    let differ =
        stored.iter().zip(&read).flat_map(|(s, r)| s.iter().zip(r).map(|(a, b)| (a - b).abs())).fold(0.0, f64::max);
    println!("stored and live scores at most {differ:.2e} apart; videos up to {spread:.2e}");
    assert!(differ < 0.1 * spread, "stored {stored:?} live {read:?}: {differ} apart, videos {spread} apart");
    // Each validation video's scores differ from the others' (it is not one constant answer).
    assert!(stored.windows(2).any(|w| w[0] != w[1]), "{stored:?}");

    // predict on a video reads its vectors; on its stored folder, the same probabilities.
    let first = std::fs::read_to_string(videos.join("val.txt")).unwrap();
    let video = PathBuf::from(first.split_whitespace().next().unwrap());
    let folder = mv.join(video.file_stem().unwrap());
    let probabilities = |input: &Path, extra: &[&str]| {
        let out =
            bin().arg("predict").arg(input).arg("--checkpoint").arg(&ckpt).args(extra).arg("--json").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut p: Vec<(u64, f64)> = v["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["class"].as_u64().unwrap(), t["probability"].as_f64().unwrap()))
            .collect();
        p.sort_by_key(|t| t.0);
        p
    };
    let a = probabilities(&video, &["--flow-method", "motion-vectors", "--flow-accumulate"]);
    let b = probabilities(&folder, &[]);
    for (x, y) in a.iter().zip(&b) {
        assert!((x.1 - y.1).abs() < 0.02, "video {a:?} folder {b:?}");
    }

    // Refused, by name: GOP sampling without picture types, on an RGB or multi-field network,
    // accumulation without motion vectors, a picture-type file that lies.
    let refused = |out: std::process::Output, says: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(says), "expected {says:?}: {err}");
    };
    refused(train(&mv, "2"), "--new-length 1");
    let test = |list: &Path, extra: &[&str]| {
        bin().arg("test").arg("--checkpoint").arg(&ckpt).arg("--list").arg(list).args(extra).output().unwrap()
    };
    refused(test(&videos.join("val.txt"), &gop), "--flow-method motion-vectors");
    refused(test(&videos.join("val.txt"), &["--flow-accumulate"]), "needs --flow-method motion-vectors");
    let resized = ["--flow-method", "motion-vectors", "--flow-short-side", "16"];
    refused(
        bin().arg("predict").arg(&video).arg("--checkpoint").arg(&ckpt).args(resized).output().unwrap(),
        "own size",
    );
    std::fs::write(folder.join("frame_types.txt"), "IPPQ\n").unwrap();
    refused(test(&mv.join("val.txt"), &gop), "frame_types.txt:1:4");
    std::fs::write(folder.join("frame_types.txt"), "IPP\n").unwrap();
    refused(test(&mv.join("val.txt"), &gop), "the list and the folder disagree");
    std::fs::remove_file(folder.join("frame_types.txt")).unwrap();
    refused(test(&mv.join("val.txt"), &gop), "frame_types.txt is missing");
}

/// Against CoViAR's own loader: the accumulated vectors of three frames (GOP positions 5, 11
/// and 7) of a real clip re-encoded as CoViAR's `reencode.sh` does, computed by
/// `scripts/coviar_reference.py` (PyAV + the accumulation of `coviar_data_loader.c`, step
/// for step), are ours to the pixel; the picture types too.
#[test]
fn accumulated_vectors_equal_coviars_loader_on_a_real_clip() {
    if !cfg!(feature = "libav") {
        return;
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let (reference, meta) =
        gateshift::checkpoint::safetensors::read(&fixtures.join("coviar_accumulated_mv.safetensors")).unwrap();
    let mut fields = Vec::new();
    let kinds = gateshift::flow::accumulated::read_fields(&fixtures.join("coviar_soccer.m4v"), true, &mut |f| {
        fields.push(f);
        Ok(())
    })
    .unwrap();
    let types: String = kinds.iter().map(|k| k.letter()).collect();
    assert_eq!(types, meta["types"]);
    assert_eq!(fields.len(), types.len());
    for (name, theirs) in &reference {
        let frame: usize = name.strip_prefix("frame").unwrap().parse().unwrap();
        let theirs = theirs.as_slice::<f32>().unwrap();
        let ours = &fields[frame];
        let (w, h) = (ours.u.w, ours.u.h);
        assert_eq!(theirs.len(), w * h * 2);
        let mut differ = 0;
        for i in 0..w * h {
            differ += (ours.u.data[i] != theirs[2 * i] || ours.v.data[i] != theirs[2 * i + 1]) as usize;
        }
        let moving = (0..w * h).filter(|&i| theirs[2 * i] != 0.0 || theirs[2 * i + 1] != 0.0).count();
        println!("frame {frame}: {differ} of {} pixels differ from CoViAR's loader; {moving} moved", w * h);
        assert_eq!(differ, 0, "frame {frame}");
        assert!(moving > w * h / 10, "frame {frame}: too little motion to tell anything");
    }
}

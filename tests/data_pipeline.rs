//! The data pipeline end to end: rawframe datasets written by the synth generator, the
//! parallel loader's determinism, clear errors for broken inputs, and video decoding of the
//! real clips in `../shared/assets/clips` against ffprobe and against extracted frames.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use gateshift::data::list::{List, ListFormat};
use gateshift::data::transform::FlipMap;
use gateshift::data::{ClipDataset, FrameNaming, FrameOrder, Loader, Mode, Pipeline, Sampling, video};
use gateshift::model::modality::Input;
use gateshift::model::{Arch, InputSpec, Modality};
use gateshift::synth::{self, SynthConfig, sources::Sources};

fn toy_dataset(dir: &Path) -> synth::Written {
    let (objects, photos) = common::toy_synth_sources(dir);
    let sources = Sources::load(&objects, &photos, 100).unwrap();
    let cfg = SynthConfig {
        train_per_class: 3,
        val_per_class: 1,
        size: 32,
        pairs: 2,
        min_frames: 6,
        max_frames: 12,
        ..Default::default()
    };
    synth::generate(&cfg, &sources, &dir.join("data"), &|| {}).unwrap()
}

fn dataset(list: &Path, mode: Mode) -> ClipDataset {
    let list = List::read(list, list.parent(), ListFormat::Auto, None).unwrap();
    let pipeline = Pipeline {
        spec: Arch::ResnetMini.input(),
        size: 28,
        segments: 4,
        sampling: Sampling::Tsn,
        interval: 2,
        mode,
        order: FrameOrder::Normal,
        input: Input::RGB,
        live_flow: Default::default(),
    };
    ClipDataset { list, naming: FrameNaming::new("img_{:05d}.jpg", 1).unwrap(), pipeline }
}

fn train_mode() -> Mode {
    Mode::Train { scale: 32, flip: true, flip_map: FlipMap::parse("0:1", 2).unwrap() }
}

#[test]
fn loader_batches_are_identical_for_any_worker_count() {
    let dir = common::tmp("loader");
    let w = toy_dataset(&dir);
    let ds = Arc::new(dataset(&w.train_list, train_mode()));
    assert_eq!(ds.len(), 12);
    let run = |workers| {
        let loader = Loader::new(ds.clone(), (0..ds.len()).rev().collect(), 5, workers, 3, 7, 2, false).unwrap();
        loader.map(|b| b.unwrap()).collect::<Vec<_>>()
    };
    let (one, three) = (run(1), run(3));
    assert_eq!(one.len(), 3, "12 samples in batches of 5");
    assert_eq!(one[2].len(), 2);
    for (a, b) in one.iter().zip(&three) {
        assert_eq!(a.indices, b.indices);
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.data, b.data);
    }
    assert_eq!(one[0].indices, vec![11, 10, 9, 8, 7], "batches come in the given order");
    assert_eq!(one[0].data.len(), 5 * 4 * 3 * 28 * 28);
    // Test mode: 3 crops → 3 views per sample.
    let test = Arc::new(dataset(&w.val_list, Mode::Test { scale: 32, crops: 3, clips: 2 }));
    let b = Loader::new(test, vec![0, 1], 2, 2, 2, 0, 0, false).unwrap().next_batch().unwrap().unwrap();
    assert_eq!(b.views, 6);
    assert_eq!(b.data.len(), 2 * 6 * 4 * 3 * 28 * 28);
}

#[test]
fn broken_frames_are_errors_naming_the_file_and_list_line() {
    let dir = common::tmp("broken");
    let w = toy_dataset(&dir);
    let list = std::fs::read_to_string(&w.val_list).unwrap();
    let first: Vec<&str> = list.lines().next().unwrap().split(' ').collect();
    let frames = w.root.join(first[0]);
    // A frame missing in the middle of the folder.
    std::fs::remove_file(frames.join("img_00003.jpg")).unwrap();
    let ds = Arc::new(dataset(&w.val_list, Mode::Test { scale: 32, crops: 1, clips: 1 }));
    // Uniform sampling over 4 segments reads every frame of a 6-frame clip only sometimes;
    // read the clip with dense sampling so that frame 2 (file 3) is always asked for.
    let mut dense = (*ds).clone();
    dense.pipeline.sampling = Sampling::Dense;
    dense.pipeline.interval = 1;
    let err =
        Loader::new(Arc::new(dense.clone()), vec![0], 1, 1, 1, 0, 0, false).unwrap().next_batch().unwrap().unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("img_00003.jpg") && msg.contains("val.txt:1") && msg.contains("frame 2"), "{msg}");
    // With skip_bad the sample is skipped and counted.
    let mut loader = Loader::new(Arc::new(dense.clone()), vec![0, 1], 2, 1, 2, 0, 0, true).unwrap();
    let b = loader.next_batch().unwrap().unwrap();
    assert_eq!((b.len(), loader.skipped.len()), (1, 1));
    // A zero-byte JPEG.
    std::fs::write(frames.join("img_00003.jpg"), b"").unwrap();
    let err =
        Loader::new(Arc::new(dense.clone()), vec![0], 1, 1, 1, 0, 0, false).unwrap().next_batch().unwrap().unwrap_err();
    assert!(format!("{err:#}").contains("img_00003.jpg is empty"), "{err:#}");
    // A truncated JPEG.
    let good = std::fs::read(frames.join("img_00001.jpg")).unwrap();
    std::fs::write(frames.join("img_00003.jpg"), &good[..good.len() / 3]).unwrap();
    let err = Loader::new(Arc::new(dense), vec![0], 1, 1, 1, 0, 0, false).unwrap().next_batch().unwrap().unwrap_err();
    assert!(
        format!("{err:#}").contains("cannot decode frame") && format!("{err:#}").contains("img_00003.jpg"),
        "{err:#}"
    );
}

#[test]
fn malformed_list_line_is_named() {
    let dir = common::tmp("list");
    let list = dir.join("bad.txt");
    std::fs::write(&list, "a 10 1\nb ten 2\n").unwrap();
    let err = List::read(&list, None, ListFormat::Auto, None).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("bad.txt:2") && msg.contains("\"ten\""), "{msg}");
}

fn ffprobe_count(path: &Path) -> usize {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn real_clips_decode_with_true_frame_counts() {
    let Some(clips) = common::clips() else { return };
    let mut n = 0;
    for e in std::fs::read_dir(&clips).unwrap() {
        let path = e.unwrap().path();
        if !matches!(path.extension().and_then(|e| e.to_str()), Some("mp4" | "avi")) {
            continue;
        }
        let info = video::probe(&path, true).unwrap();
        assert_eq!(info.frames, ffprobe_count(&path), "{}", path.display());
        let last = info.frames - 1;
        let frames = video::read_frames(&path, &info, &[0, last / 2, last], Some(128)).unwrap();
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].width().min(frames[0].height()), 128);
        println!(
            "decoded {} ({} frames, {}×{} @ {:.2} fps)",
            path.display(),
            info.frames,
            info.width,
            info.height,
            info.fps
        );
        n += 1;
    }
    assert!(n >= 10, "expected the 10 shared clips, found {n}");
}

#[test]
fn video_frames_equal_extracted_rawframes() {
    let Some(clips) = common::clips() else { return };
    let dir = common::tmp("extract");
    let video_path = clips.join("v_SoccerJuggling_g23_c01.avi");
    let status = Command::new(env!("CARGO_BIN_EXE_gateshift"))
        .args(["data", "extract-frames"])
        .arg(&video_path)
        .arg("--out")
        .arg(&dir)
        .args(["--quality", "98"])
        .status()
        .unwrap();
    assert!(status.success());
    let naming = FrameNaming::new("img_{:05d}.jpg", 1).unwrap();
    let frames_dir = dir.join("v_SoccerJuggling_g23_c01");
    let info = video::probe(&video_path, true).unwrap();
    assert_eq!(naming.count(&frames_dir).unwrap(), info.frames);
    let idx = gateshift::data::sampling::tsn_test(info.frames, 8, 1);
    let decoded = video::read_frames(&video_path, &info, &idx, None).unwrap();
    let mut worst = 0.0f64;
    for (img, &i) in decoded.iter().zip(&idx) {
        let back = gateshift::data::rawframes::read_rgb(&naming.path(&frames_dir, 0, i)).unwrap();
        assert_eq!(img.dimensions(), back.dimensions());
        let mad = img.as_raw().iter().zip(back.as_raw()).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>()
            / img.as_raw().len() as f64;
        worst = worst.max(mad);
    }
    println!("video vs extracted JPEG frames: worst mean |diff| {worst:.3} (0–255)");
    assert!(worst < 2.5, "mean abs diff {worst}");
}

#[test]
fn truncated_video_is_a_clear_error() {
    let Some(clips) = common::clips() else { return };
    let dir = common::tmp("truncated");
    let bytes = std::fs::read(clips.join("basketball.mp4")).unwrap();
    let cut = dir.join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let list = dir.join("videos.txt");
    std::fs::write(&list, "cut.mp4 0\n").unwrap();
    let mut ds = dataset(&list, Mode::Test { scale: 32, crops: 1, clips: 1 });
    ds.pipeline.segments = 8;
    let err = Loader::new(Arc::new(ds), vec![0], 1, 1, 1, 0, 0, false).unwrap().next_batch().unwrap().unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("cut.mp4") && msg.contains("videos.txt:1"), "{msg}");
    println!("truncated mp4 → {msg}");
}

/// A flow folder of `fields` fields and its list: field i's x plane is 10·i + 5 everywhere,
/// its y plane 200 − 10·i.
fn flow_folder(dir: &Path, fields: u8) -> std::path::PathBuf {
    let clip = dir.join("clip");
    std::fs::create_dir_all(&clip).unwrap();
    for i in 0..fields {
        for (axis, v) in [("x", 10 * i + 5), ("y", 200 - 10 * i)] {
            image::GrayImage::from_pixel(8, 6, image::Luma([v]))
                .save(clip.join(format!("{axis}_{:05}.png", i + 1)))
                .unwrap();
        }
    }
    std::fs::write(dir.join("list.txt"), format!("clip {fields} 1\n")).unwrap();
    dir.join("list.txt")
}

/// Flow input: each segment's `L` consecutive fields as x₁ y₁ … x_L y_L, normalised with the
/// backbone's flow statistics; a flipped clip has every x plane inverted (255 − p) and its
/// label swapped.
#[test]
fn flow_segments_stack_consecutive_x_and_y_fields() {
    let dir = common::tmp("flow-fields");
    let list_file = flow_folder(&dir, 6);
    let spec = InputSpec { size: 4, bgr: false, range: 255.0, mean: [0.0; 3], std: [1.0; 3] };
    let read = |mode: Mode, seed: u64| {
        let list = List::read(&list_file, Some(&dir), ListFormat::Auto, None).unwrap();
        let pipeline = Pipeline { input: Input::new(Modality::Flow, 2), mode, ..Pipeline::test(spec, 4, 6, 2, 1, 1) };
        let naming = FrameNaming::for_modality("{}_{:05d}.png", 1, Modality::Flow).unwrap();
        let ds = ClipDataset { list, naming, pipeline };
        let clip = ds.get(0, &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed)).unwrap();
        assert_eq!(clip.data.len(), 2 * 2 * 2 * 16, "2 segments × 2 fields × (x, y) × 4²");
        let planes: Vec<f32> = clip.data.chunks(16).map(|p| p[0] + 128.0).collect();
        assert!(clip.data.chunks(16).all(|p| p.iter().all(|&v| v == p[0])), "uniform planes stay uniform");
        (planes, clip.label)
    };
    // tsn_test(6, 2, 2): starts 1 and 3.
    let (planes, _) = read(Mode::Test { scale: 6, crops: 1, clips: 1 }, 0);
    assert_eq!(planes, [15.0, 190.0, 25.0, 180.0, 35.0, 170.0, 45.0, 160.0]);
    let (mut flipped, mut plain) = (0, 0);
    for seed in 0..40 {
        let mode = Mode::Train { scale: 6, flip: true, flip_map: FlipMap::parse("0:1", 2).unwrap() };
        let (planes, label) = read(mode, seed);
        let xs: Vec<f32> = planes.iter().step_by(2).copied().collect();
        let ys: Vec<f32> = planes.iter().skip(1).step_by(2).copied().collect();
        let field = |y: f32| (200.0 - y) / 10.0;
        for (x, y) in xs.iter().zip(&ys) {
            let x_stored = 10.0 * field(*y) + 5.0;
            if label == 0 {
                assert_eq!(*x, 255.0 - x_stored, "flipped: x inverted");
            } else {
                assert_eq!(*x, x_stored);
            }
        }
        if label == 0 { flipped += 1 } else { plain += 1 }
    }
    assert!(flipped > 5 && plain > 5, "flips {flipped}, plain {plain}");
}

/// RGB difference reads `new_length + 1` consecutive frames per segment: segment starts as
/// TSN's test sampling with that length, the last frame repeated past the end; reversing
/// reverses every frame, shuffling moves whole segments.
#[test]
fn segments_of_consecutive_frames_for_rgb_difference() {
    let dir = common::tmp("consecutive");
    let clip = dir.join("clip");
    std::fs::create_dir_all(&clip).unwrap();
    for i in 0..10u8 {
        image::RgbImage::from_pixel(8, 8, image::Rgb([20 * i; 3]))
            .save(clip.join(format!("img_{:05}.png", i + 1)))
            .unwrap();
    }
    std::fs::write(dir.join("list.txt"), "clip 10 0\n").unwrap();
    let spec = gateshift::model::InputSpec { size: 8, bgr: false, range: 255.0, mean: [0.0; 3], std: [1.0; 3] };
    let frames_read = |order: FrameOrder, mode: Mode| -> Vec<usize> {
        let list = List::read(&dir.join("list.txt"), Some(&dir), ListFormat::Auto, None).unwrap();
        let input = Input::new(Modality::Rgbdiff, 2);
        let pipeline = Pipeline { order, input, mode, ..Pipeline::test(spec, 8, 8, 3, 1, 1) };
        let ds = ClipDataset { list, naming: FrameNaming::new("img_{:05d}.png", 1).unwrap(), pipeline };
        let clip = ds.get(0, &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5)).unwrap();
        assert_eq!(clip.data.len(), 3 * 3 * 3 * 64, "3 segments × 3 frames × RGB");
        clip.data.chunks(3 * 64).map(|frame| (frame[0] / 20.0).round() as usize).collect()
    };
    let test = || Mode::Test { scale: 8, crops: 1, clips: 1 };
    // tsn_test(10, 3, 3) starts 1, 4, 6.
    assert_eq!(frames_read(FrameOrder::Normal, test()), [1, 2, 3, 4, 5, 6, 6, 7, 8]);
    assert_eq!(frames_read(FrameOrder::Reverse, test()), [8, 7, 6, 6, 5, 4, 3, 2, 1]);
    let shuffled = frames_read(FrameOrder::Shuffle, test());
    let mut groups: Vec<&[usize]> = shuffled.chunks(3).collect();
    assert!(groups.iter().all(|g| g[1] == g[0] + 1 && g[2] == g[1] + 1), "{shuffled:?}");
    groups.sort();
    assert_eq!(groups.concat(), [1, 2, 3, 4, 5, 6, 6, 7, 8]);
    // Training: each segment a random start with room for its frames.
    let train = Mode::Train { scale: 8, flip: false, flip_map: FlipMap::default() };
    let read = frames_read(FrameOrder::Normal, train);
    for g in read.chunks(3) {
        assert!(g[1] == g[0] + 1 && g[2] == g[1] + 1 && g[2] <= 9, "{read:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// CoViAR's GOP sampling on a motion-vector folder of 12 fields (13 frames, an I-frame every
/// 4): the I-frames' fields (frames 4 and 8: fields 3 and 7) are never read, the frame
/// before each takes its place, and the test clip is CoViAR's centres.
#[test]
fn gop_sampling_never_reads_an_i_frame() {
    let dir = common::tmp("gop-sampling");
    let list_file = flow_folder(&dir, 12);
    std::fs::write(dir.join("clip/frame_types.txt"), "IPPPIPPPIPPPI\n").unwrap();
    let spec = InputSpec { size: 4, bgr: false, range: 255.0, mean: [0.0; 3], std: [1.0; 3] };
    let fields = |mode: Mode, seed: u64| -> Vec<u8> {
        let list = List::read(&list_file, Some(&dir), ListFormat::Auto, None).unwrap();
        let pipeline = Pipeline {
            input: Input::new(Modality::Flow, 1),
            sampling: Sampling::Coviar,
            mode,
            ..Pipeline::test(spec, 4, 6, 4, 1, 1)
        };
        let naming = FrameNaming::for_modality("{}_{:05d}.png", 1, Modality::Flow).unwrap();
        let ds = ClipDataset { list, naming, pipeline };
        let clip = ds.get(0, &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed)).unwrap();
        // y planes (unflipped): 200 − 10·field.
        clip.data.chunks(16).skip(1).step_by(2).map(|p| ((200.0 - (p[0] + 128.0)) / 10.0) as u8).collect()
    };
    // coviar_test(13, 4): frames 2, 5, 8 → 7, 11: fields 1, 4, 6, 10.
    assert_eq!(fields(Mode::Test { scale: 6, crops: 1, clips: 1 }, 0), [1, 4, 6, 10]);
    let mut seen = [0usize; 12];
    for seed in 0..300 {
        let mode = Mode::Train { scale: 6, flip: false, flip_map: FlipMap::default() };
        for f in fields(mode, seed) {
            seen[f as usize] += 1;
        }
    }
    assert_eq!((seen[3], seen[7], seen[11]), (0, 0, 0), "I-frame fields read: {seen:?}");
    // The frame before an I-frame is drawn in its place: about twice as often as a neighbour.
    assert!(seen[2] > seen[1] * 3 / 2 && seen[6] > seen[5] * 3 / 2, "{seen:?}");
    assert!(seen.iter().enumerate().all(|(i, &n)| [3, 7, 11].contains(&i) || n > 0), "{seen:?}");
}

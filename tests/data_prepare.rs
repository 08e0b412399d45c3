//! `gateshift data prepare`: small annotation files in each benchmark's real format, videos
//! made with ffmpeg (frame folders with JPEGs), and the lists, classes, swap maps and
//! `data.toml` that come out; parallel resumable extraction; hostile annotation files.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::run::bin;

fn prepare(dataset: &str, dir: &Path, extra: &[&str]) -> Output {
    bin()
        .args(["data", "prepare", dataset, "--annotations"])
        .arg(dir.join("ann"))
        .arg("--data")
        .arg(dir.join("data"))
        .arg("--out")
        .arg(dir.join("out"))
        .args(extra)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    common::run::ok(out)
}

fn failed(out: Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "expected a failure:\n{text}");
    text
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(String::from).collect()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A `frames`-frame test-pattern video at `path` (codec from the extension).
fn video(path: &Path, frames: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let codec: &[&str] = match path.extension().and_then(|e| e.to_str()) {
        Some("webm") => &["-c:v", "libvpx", "-b:v", "200k"],
        Some("avi") => &["-c:v", "mpeg4"],
        _ => &["-c:v", "libx264", "-pix_fmt", "yuv420p"],
    };
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v"])
        .arg(frames.to_string())
        .args(codec)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
}

/// A frame folder of `n` JPEGs named by `template` ("{:05d}.jpg" style, from 1).
fn frames(dir: &Path, n: usize, name: impl Fn(usize) -> String) {
    std::fs::create_dir_all(dir).unwrap();
    let jpeg =
        gateshift::synth::encode_jpeg(&image::RgbImage::from_pixel(16, 12, image::Rgb([90, 20, 200])), 90).unwrap();
    for i in 1..=n {
        std::fs::write(dir.join(name(i)), &jpeg).unwrap();
    }
}

fn config(dir: &Path) -> gateshift::train::config::TrainConfig {
    gateshift::train::config::TrainConfig::read(&dir.join("out/data.toml")).unwrap()
}

#[test]
fn something_v1_lists_sorted_classes_and_the_official_swap_map() {
    let dir = common::tmp("prep-ssv1");
    let ann = dir.join("ann");
    // Unsorted, as released; the official script sorts them.
    write(
        &ann.join("something-something-v1-labels.csv"),
        "Pushing something from right to left\nHolding something\nPushing something from left to right\n",
    );
    write(
        &ann.join("something-something-v1-train.csv"),
        "101;Holding something\n102;Pushing something from left to right\n103;Holding something\n",
    );
    write(&ann.join("something-something-v1-validation.csv"), "201;Pushing something from right to left\n");
    for (id, n) in [("101", 9), ("102", 12), ("201", 7)] {
        frames(&dir.join("data").join(id), n, |i| format!("{i:05}.jpg"));
    }
    let text = ok(prepare("something-v1", &dir, &["--jobs", "2"]));
    assert!(text.contains("1 annotated but missing"), "{text}");
    assert_eq!(
        lines(&dir.join("out/classes.txt")),
        ["Holding something", "Pushing something from left to right", "Pushing something from right to left"]
    );
    assert_eq!(lines(&dir.join("out/train.txt")), ["101 9 0", "102 12 1"]);
    assert_eq!(lines(&dir.join("out/val.txt")), ["201 7 2"]);
    assert!(lines(&dir.join("out/skipped.txt"))[0].contains("something-something-v1-train.csv:3"));
    let c = config(&dir);
    assert_eq!((c.data.flip_swap.as_str(), c.data.template.as_str(), c.data.first_index), ("1:2", "{:05d}.jpg", 1));
    assert_eq!(c.model.net.classes, 3);
    assert_eq!(c.data.root.unwrap(), std::fs::canonicalize(dir.join("data")).unwrap());
    // A class the label file does not have: named with file and line.
    write(
        &ann.join("something-something-v1-validation.csv"),
        "201;Pushing something from right to left\n202;Juggling\n",
    );
    let e = failed(prepare("something-v1", &dir, &[]));
    assert!(e.contains("something-something-v1-validation.csv:2") && e.contains("Juggling"), "{e}");
}

#[test]
fn something_v2_templates_name_the_classes() {
    if !common::ffmpeg() {
        return;
    }
    let dir = common::tmp("prep-ssv2");
    let ann = dir.join("ann");
    write(&ann.join("labels.json"), r#"{"Holding something": "1", "Approaching something with your camera": "0"}"#);
    write(
        &ann.join("train.json"),
        r#"[{"id": "7", "label": "holding a cup", "template": "Holding [something]", "placeholders": ["a cup"]},
            {"id": "8", "label": "approaching a box", "template": "Approaching [something] with your camera", "placeholders": ["a box"]}]"#,
    );
    write(
        &ann.join("validation.json"),
        r#"[{"id": "9", "label": "holding x", "template": "Holding [something]", "placeholders": ["x"]}]"#,
    );
    for id in ["7", "8", "9"] {
        video(&dir.join(format!("data/20bn-something-something-v2/{id}.webm")), 6);
    }
    ok(prepare("something-v2", &dir, &[]));
    assert_eq!(lines(&dir.join("out/classes.txt")), ["Approaching something with your camera", "Holding something"]);
    assert_eq!(
        lines(&dir.join("out/train.txt")),
        ["20bn-something-something-v2/7.webm 1", "20bn-something-something-v2/8.webm 0"]
    );
    assert_eq!(lines(&dir.join("out/val.txt")), ["20bn-something-something-v2/9.webm 1"]);
    // The produced list reads back as a video list, labels in range.
    let list = gateshift::data::List::read(
        &dir.join("out/train.txt"),
        Some(&dir.join("data")),
        gateshift::data::ListFormat::Auto,
        Some(2),
    )
    .unwrap();
    assert!(list.entries.iter().all(|e| e.is_video && e.path.is_file()));
    write(&ann.join("labels.json"), r#"{"Holding something": "1", "Approaching": "1"}"#);
    let e = failed(prepare("something-v2", &dir, &[]));
    assert!(e.contains("labels.json") && e.contains("distinct index"), "{e}");
}

#[test]
fn diving48_vocab_rows_are_the_classes() {
    if !common::ffmpeg() {
        return;
    }
    let dir = common::tmp("prep-diving");
    let ann = dir.join("ann");
    write(
        &ann.join("Diving48_vocab.json"),
        r#"[["Back", "15som", "05Twis", "FREE"], ["Forward", "25som", "NoTwis", "PIKE"]]"#,
    );
    write(
        &ann.join("Diving48_V2_train.json"),
        r#"[{"vid_name": "abc_00001", "label": 1, "start_frame": 0, "end_frame": 8}]"#,
    );
    write(
        &ann.join("Diving48_V2_test.json"),
        r#"[{"vid_name": "abc_00002", "label": 0, "start_frame": 0, "end_frame": 8}, {"vid_name": "gone", "label": 0, "start_frame": 0, "end_frame": 8}]"#,
    );
    video(&dir.join("data/rgb/abc_00001.mp4"), 8);
    video(&dir.join("data/rgb/abc_00002.mp4"), 8);
    let text = ok(prepare("diving48", &dir, &["--extract", "--jobs", "2"]));
    assert!(text.contains("2 videos extracted"), "{text}");
    assert_eq!(lines(&dir.join("out/classes.txt")), ["Back 15som 05Twis FREE", "Forward 25som NoTwis PIKE"]);
    assert_eq!(lines(&dir.join("out/train.txt")), ["rgb/abc_00001 8 1"]);
    assert_eq!(lines(&dir.join("out/val.txt")), ["rgb/abc_00002 8 0"]);
    assert!(dir.join("out/frames/rgb/abc_00001/img_00008.jpg").is_file());
    let c = config(&dir);
    assert_eq!((c.data.template.as_str(), c.data.flip_swap.as_str()), ("img_{:05d}.jpg", ""));
    write(&ann.join("Diving48_V2_train.json"), r#"[{"vid_name": "abc_00001", "label": 2}]"#);
    let e = failed(prepare("diving48", &dir, &[]));
    assert!(e.contains("Diving48_V2_train.json entry 1") && e.contains("label 2"), "{e}");
}

#[test]
fn kinetics_clips_by_youtube_id_and_time_missing_ones_listed() {
    if !common::ffmpeg() {
        return;
    }
    let dir = common::tmp("prep-kinetics");
    let ann = dir.join("ann");
    let header = "label,youtube_id,time_start,time_end,split,is_cc\n";
    write(
        &ann.join("kinetics400_train.csv"),
        &format!(
            "{header}\"passing American football (in game)\",aaa,14,24,train,0\nabseiling,bbb,0,10,train,0\nabseiling,ccc,3,13,train,0\n"
        ),
    );
    // As spreadsheet tools save it: a byte-order mark before the header.
    write(&ann.join("kinetics400_val.csv"), &format!("\u{feff}{header}abseiling,ddd,5,15,val,0\n"));
    video(&dir.join("data/train/passing American football (in game)/aaa_000014_000024.mp4"), 5);
    video(&dir.join("data/train/abseiling/bbb_000000_000010.mp4"), 5);
    video(&dir.join("data/val/ddd.mp4"), 5);
    let text = ok(prepare("kinetics", &dir, &[]));
    assert!(text.contains("1 annotated but missing"), "{text}");
    assert_eq!(lines(&dir.join("out/classes.txt")), ["abseiling", "passing American football (in game)"]);
    assert_eq!(
        lines(&dir.join("out/train.txt")),
        [
            "train/passing American football (in game)/aaa_000014_000024.mp4 1",
            "train/abseiling/bbb_000000_000010.mp4 0"
        ]
    );
    assert_eq!(lines(&dir.join("out/val.txt")), ["val/ddd.mp4 0"]);
    let skipped = lines(&dir.join("out/skipped.txt"));
    assert!(
        skipped.len() == 1
            && skipped[0].contains("kinetics400_train.csv:4")
            && skipped[0].contains("ccc_000003_000013"),
        "{skipped:?}"
    );
    // A time that is no time, a validation class training never saw.
    write(&ann.join("kinetics400_val.csv"), &format!("{header}abseiling,ddd,nan,15,val,0\n"));
    assert!(failed(prepare("kinetics", &dir, &[])).contains("kinetics400_val.csv:2"));
    write(&ann.join("kinetics400_val.csv"), &format!("{header}juggling,ddd,5,15,val,0\n"));
    assert!(failed(prepare("kinetics", &dir, &[])).contains("does not occur in the training CSV"));
}

#[test]
fn ucf101_and_hmdb51_official_splits() {
    if !common::ffmpeg() {
        return;
    }
    let dir = common::tmp("prep-ucf");
    let ann = dir.join("ann");
    write(&ann.join("classInd.txt"), "1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n");
    write(
        &ann.join("trainlist01.txt"),
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2\n",
    );
    write(&ann.join("testlist01.txt"), "HandstandPushups/v_HandStandPushups_g01_c01.avi\n");
    for v in [
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
        "HandstandPushups/v_HandStandPushups_g08_c01.avi",
        "HandstandPushups/v_HandStandPushups_g01_c01.avi",
    ] {
        video(&dir.join("data").join(v), 5);
    }
    ok(prepare("ucf101", &dir, &[]));
    assert_eq!(lines(&dir.join("out/classes.txt")), ["ApplyEyeMakeup", "HandstandPushups"]);
    assert_eq!(lines(&dir.join("out/train.txt"))[1], "HandstandPushups/v_HandStandPushups_g08_c01.avi 1");
    assert_eq!(lines(&dir.join("out/val.txt")), ["HandstandPushups/v_HandStandPushups_g01_c01.avi 1"]);
    assert!(failed(prepare("ucf101", &dir, &["--split", "2"])).contains("trainlist02.txt"));
    assert!(failed(prepare("ucf101", &dir, &["--split", "4"])).contains("splits 1, 2 and 3"));

    let dir = common::tmp("prep-hmdb");
    let ann = dir.join("ann");
    write(&ann.join("wave_test_split1.txt"), "w1.avi 1 \nw2.avi 2 \nw3.avi 0 \n");
    write(&ann.join("brush_hair_test_split1.txt"), "b1.avi 2 \n");
    write(&ann.join("brush_hair_test_split2.txt"), "b1.avi 1 \n");
    for v in ["wave/w1.avi", "wave/w2.avi", "brush_hair/b1.avi"] {
        video(&dir.join("data").join(v), 5);
    }
    ok(prepare("hmdb51", &dir, &[]));
    assert_eq!(lines(&dir.join("out/classes.txt")), ["brush_hair", "wave"]);
    assert_eq!(lines(&dir.join("out/train.txt")), ["wave/w1.avi 1"]);
    assert_eq!(lines(&dir.join("out/val.txt")), ["brush_hair/b1.avi 0", "wave/w2.avi 1"]);
    write(&ann.join("wave_test_split1.txt"), "w1.avi 1\nw2.avi 7\n");
    assert!(failed(prepare("hmdb51", &dir, &[])).contains("wave_test_split1.txt:2"));
}

/// EPIC-Kitchens-100's CSVs (narrations with quoted commas) over released frame folders.
pub fn epic_dataset(dir: &Path, verbs: usize, nouns: usize, rows: &[(&str, usize, usize, usize, usize)]) {
    let ann = dir.join("ann");
    let classes = |n: usize, what: &str| {
        let mut s = String::from("id,key,instances,category\n");
        for i in 0..n {
            s.push_str(&format!("{i},{what}{i},\"['{what}{i}']\",cat\n"));
        }
        s
    };
    write(&ann.join("EPIC_100_verb_classes.csv"), &classes(verbs, "verb"));
    write(&ann.join("EPIC_100_noun_classes.csv"), &classes(nouns, "noun"));
    let header = "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes\n";
    for (split, file) in [("train", "EPIC_100_train.csv"), ("val", "EPIC_100_validation.csv")] {
        let mut text = header.to_string();
        for (k, (video, start, stop, verb, noun)) in
            rows.iter().enumerate().filter(|(k, _)| (k % 2 == 1) == (split == "val"))
        {
            let p = &video[..3];
            text.push_str(&format!("{video}_{k},{p},{video},00:00:00.00,00:00:00.00,00:00:01.00,{start},{stop},\"take cup, then\",take,{verb},cup,{noun},\"['cup', 'tap']\",\"[{noun}]\"\n"));
        }
        write(&ann.join(file), &text);
    }
}

#[test]
fn epic_kitchens_segments_with_verb_and_noun() {
    let dir = common::tmp("prep-epic");
    epic_dataset(
        &dir,
        3,
        4,
        &[("P01_01", 1, 5, 0, 1), ("P01_01", 4, 9, 2, 3), ("P02_03", 2, 6, 1, 0), ("P02_03", 3, 40, 1, 2)],
    );
    frames(&dir.join("data/P01/rgb_frames/P01_01"), 10, |i| format!("frame_{i:010}.jpg"));
    frames(&dir.join("data/P02/rgb_frames/P02_03"), 8, |i| format!("frame_{i:010}.jpg"));
    let e = failed(prepare("epic-kitchens", &dir, &[]));
    // Segment 4 runs to frame 40 of an 8-frame recording: listed and reported.
    assert!(e.contains("EPIC_100_validation.csv:3") && e.contains("beyond the 8 frames"), "{e}");
    ok(prepare("epic-kitchens", &dir, &["--skip-bad"]));
    assert_eq!(lines(&dir.join("out/train.txt")), ["P01/rgb_frames/P01_01 0 5 0 1", "P02/rgb_frames/P02_03 1 5 1 0"]);
    assert_eq!(lines(&dir.join("out/val.txt")), ["P01/rgb_frames/P01_01 3 6 2 3"]);
    assert_eq!(lines(&dir.join("out/nouns.txt")), ["noun0", "noun1", "noun2", "noun3"]);
    assert_eq!(lines(&dir.join("out/classes.txt")).len(), 3);
    let c = config(&dir);
    assert_eq!((c.model.net.classes, c.model.net.noun_classes), (3, 4));
    assert_eq!((c.data.template.as_str(), c.data.first_index), ("frame_{:010d}.jpg", 1));
}

#[test]
fn extraction_runs_in_parallel_and_resumes() {
    if !common::ffmpeg() {
        return;
    }
    let dir = common::tmp("prep-extract");
    let ann = dir.join("ann");
    let mut train = String::new();
    write(&ann.join("classInd.txt"), "1 a\n2 b\n");
    for k in 0..20 {
        let class = ["a", "b"][k % 2];
        let rel = format!("{class}/v_{k:02}.avi");
        video(&dir.join("data").join(&rel), 4 + k % 3);
        train.push_str(&format!("{rel} {}\n", k % 2 + 1));
    }
    write(&ann.join("trainlist01.txt"), &train);
    write(&ann.join("testlist01.txt"), "a/v_00.avi\n");
    let text = ok(prepare("ucf101", &dir, &["--extract", "--jobs", "2"]));
    assert!(text.contains("20 videos extracted, 0 already done"), "{text}");
    let first = lines(&dir.join("out/train.txt"));
    assert_eq!(first.len(), 20);
    assert_eq!(first[3], "b/v_03 4 1");
    // A second run decodes nothing and writes the same lists.
    let text = ok(prepare("ucf101", &dir, &["--extract", "--jobs", "2"]));
    assert!(text.contains("0 videos extracted, 20 already done"), "{text}");
    assert_eq!(lines(&dir.join("out/train.txt")), first);
    // A run with other settings does not take these folders as its own.
    let e = failed(prepare("ucf101", &dir, &["--extract", "--jobs", "2", "--short-side", "16"]));
    assert!(e.contains("other settings") && e.contains("short_side=16"), "{e}");
    assert_eq!(lines(&dir.join("out/train.txt")), first);
    // A run killed mid-video left a partial folder (its process is gone) and no finished one.
    let frames_dir = dir.join("out/frames/a");
    std::fs::remove_dir_all(frames_dir.join("v_04")).unwrap();
    std::fs::create_dir_all(frames_dir.join(".v_04.partial.999999999")).unwrap();
    std::fs::write(frames_dir.join(".v_04.partial.999999999/img_00001.jpg"), b"half").unwrap();
    let text = ok(prepare("ucf101", &dir, &["--extract", "--jobs", "2"]));
    assert!(text.contains("1 videos extracted, 19 already done"), "{text}");
    assert!(!frames_dir.join(".v_04.partial.999999999").exists());
    assert_eq!(lines(&dir.join("out/train.txt")), first);
    // Two videos that would share one frame folder are refused, naming both.
    video(&dir.join("data/a/v_00.mp4"), 4);
    write(&ann.join("testlist01.txt"), "a/v_00.avi\na/v_00.mp4\n");
    let e = failed(prepare("ucf101", &dir, &["--extract"]));
    assert!(e.contains("v_00.avi") && e.contains("v_00.mp4") && e.contains("both"), "{e}");
    write(&ann.join("testlist01.txt"), "a/v_00.avi\n");
    std::fs::remove_file(dir.join("data/a/v_00.mp4")).unwrap();
    // A video that does not decode: listed, the others still prepared.
    std::fs::write(dir.join("data/a/v_06.avi"), b"not a video").unwrap();
    std::fs::remove_dir_all(frames_dir.join("v_06")).unwrap();
    let e = failed(prepare("ucf101", &dir, &["--extract", "--jobs", "2"]));
    assert!(e.contains("v_06.avi"), "{e}");
    assert_eq!(lines(&dir.join("out/train.txt")).len(), 19);
    assert!(lines(&dir.join("out/skipped.txt")).iter().any(|l| l.contains("v_06.avi")));
}

#[test]
fn hostile_annotation_files_are_refused_by_name() {
    let dir = common::tmp("prep-hostile");
    let ann = dir.join("ann");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    // A FIFO where a label file should be: refused without blocking.
    std::fs::create_dir_all(&ann).unwrap();
    let fifo = ann.join("something-something-v1-labels.csv");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let e = failed(prepare("something-v1", &dir, &[]));
    assert!(e.contains("FIFO") && e.contains("labels.csv"), "{e}");
    std::fs::remove_file(&fifo).unwrap();
    // A folder, non-UTF-8 bytes, JSON that is not JSON, no annotation files at all.
    std::fs::create_dir_all(ann.join("labels.json")).unwrap();
    assert!(failed(prepare("something-v2", &dir, &[])).contains("directory"));
    std::fs::remove_dir_all(ann.join("labels.json")).unwrap();
    std::fs::write(ann.join("labels.json"), [0xff, 0xfe, 0x00]).unwrap();
    assert!(failed(prepare("something-v2", &dir, &[])).contains("not UTF-8"));
    std::fs::write(ann.join("labels.json"), "{\"a\": \"0\",\n oops}").unwrap();
    let e = failed(prepare("something-v2", &dir, &[]));
    assert!(e.contains("labels.json") && e.contains("line 2"), "{e}");
    assert!(failed(prepare("kinetics", &dir, &[])).contains("no file named *train.csv"));
    // An EPIC row cut short, a negative frame, stop before start.
    epic_dataset(&dir, 2, 2, &[("P01_01", 1, 5, 0, 1)]);
    let train = ann.join("EPIC_100_train.csv");
    let text = std::fs::read_to_string(&train).unwrap();
    for bad in [",1,5,\"x\",take,0,cup,9,", ",-1,5,\"x\",take,0,cup,1,", ",5,1,\"x\",take,0,cup,1,"] {
        let header = text.lines().next().unwrap();
        write(&train, &format!("{header}\nP01_01_0,P01,P01_01,0,0,0{bad}\"[]\",\"[]\"\n"));
        let e = failed(prepare("epic-kitchens", &dir, &[]));
        assert!(e.contains("EPIC_100_train.csv:2"), "{bad}: {e}");
    }
    // An id that climbs out of the data folder; --jobs 0.
    write(&ann.join("something-something-v1-labels.csv"), "Holding something\n");
    write(&ann.join("something-something-v1-train.csv"), "../../etc;Holding something\n");
    write(&ann.join("something-something-v1-validation.csv"), "1;Holding something\n");
    let e = failed(prepare("something-v1", &dir, &[]));
    assert!(e.contains("something-something-v1-train.csv:1") && e.contains("plain folder name"), "{e}");
    assert!(failed(prepare("something-v1", &dir, &["--jobs", "0"])).contains("--jobs"));
    // Output onto a device file is refused before anything is read.
    let out = bin()
        .args(["data", "prepare", "ucf101", "--annotations"])
        .arg(&ann)
        .arg("--data")
        .arg(dir.join("data"))
        .args(["--out", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// EPIC-Kitchens end to end: `data prepare` → `train --config data.toml` with two heads →
/// `test` and `predict` reporting verb, noun and action.
#[test]
fn epic_kitchens_two_heads_train_and_test() {
    let dir = common::tmp("prep-epic-e2e");
    let mut rows = Vec::new();
    for k in 0..12 {
        let video = ["P01_01", "P02_01"][k % 2];
        rows.push((video, 1 + 2 * k, 8 + 2 * k, k % 3, (k / 2) % 2));
    }
    epic_dataset(&dir, 3, 2, &rows);
    for p in ["P01", "P02"] {
        let folder = dir.join(format!("data/{p}/rgb_frames/{p}_01"));
        std::fs::create_dir_all(&folder).unwrap();
        for i in 1..=40u8 {
            let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([i * 6, (x * 7) as u8, (y * 5) as u8]));
            std::fs::write(folder.join(format!("frame_{i:010}.jpg")), gateshift::synth::encode_jpeg(&img, 90).unwrap())
                .unwrap();
        }
    }
    ok(prepare("epic-kitchens", &dir, &[]));
    let run = dir.join("run");
    let text = ok(bin()
        .args(["train", "--config"])
        .arg(dir.join("out/data.toml"))
        .args(["--arch", "resnet-mini", "--segments", "4", "--epochs", "2", "--batch-size", "3", "--input-size", "32"])
        .args(["--scale-size", "32", "--workers", "1", "--warmup-epochs", "0", "--eval-every", "1", "--quiet", "--out"])
        .arg(&run)
        .output()
        .unwrap());
    let m = common::run::metrics(&run);
    assert_eq!(m.len(), 2, "{text}");
    for key in ["val_top1", "val_noun_top1", "val_action_top1"] {
        assert!(m[1][key].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)), "{key}: {}", m[1]);
    }
    let report = dir.join("test.json");
    let text = ok(bin()
        .args(["test", "--checkpoint"])
        .arg(run.join("last.safetensors"))
        .arg("--list")
        .arg(dir.join("out/val.txt"))
        .arg("--root")
        .arg(dir.join("data"))
        .args(["--template", "frame_{:010d}.jpg", "--workers", "1", "--json"])
        .arg(&report)
        .output()
        .unwrap());
    assert!(text.contains("verb top-1") && text.contains("action top-1"), "{text}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["videos"], 6);
    let (verb, noun, action) = (
        r["verb"]["top1"].as_f64().unwrap(),
        r["noun"]["top1"].as_f64().unwrap(),
        r["action"]["top1"].as_f64().unwrap(),
    );
    assert!(action <= verb.min(noun) + 1e-9, "{r}");
    assert_eq!(r["top1"], r["verb"]["top1"]);
    // The checkpoint records both heads: predict ranks verbs (named) and nouns.
    let text = ok(bin()
        .args(["predict", "--checkpoint"])
        .arg(run.join("last.safetensors"))
        .args(["--template", "frame_{:010d}.jpg", "--topk", "2"])
        .arg(dir.join("data/P01/rgb_frames/P01_01"))
        .output()
        .unwrap());
    assert!(text.contains("verb0") || text.contains("verb1") || text.contains("verb2"), "{text}");
    assert!(text.contains("noun 0") && text.contains("noun 1"), "{text}");
    // A one-head list given to the two-head model is refused by line.
    std::fs::write(dir.join("one.txt"), "P01/rgb_frames/P01_01 40 1\n").unwrap();
    let out = bin()
        .args(["test", "--checkpoint"])
        .arg(run.join("last.safetensors"))
        .arg("--list")
        .arg(dir.join("one.txt"))
        .arg("--root")
        .arg(dir.join("data"))
        .args(["--template", "frame_{:010d}.jpg"])
        .output()
        .unwrap();
    let e = failed(out);
    assert!(e.contains("one.txt:1") && e.contains("no noun"), "{e}");
}

/// Real HMDB51 AVIs (Xvid, trailing empty packets) from `../shared`: extracted and listed
/// with the frame counts `data check` agrees with.
#[test]
fn real_hmdb51_clips_extract_and_check() {
    let Some(clips) = common::clips() else { return };
    let dir = common::tmp("prep-real");
    let mut split = String::new();
    for (k, name) in [
        "RATRACE_wave_f_nm_np1_fr_goo_37.avi",
        "TrumanShow_wave_f_nm_np1_fr_med_26.avi",
        "SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi",
    ]
    .iter()
    .enumerate()
    {
        std::fs::create_dir_all(dir.join("data/wave")).unwrap();
        std::os::unix::fs::symlink(clips.join(name), dir.join("data/wave").join(name)).unwrap();
        split.push_str(&format!("{name} {} \n", if k < 2 { 1 } else { 2 }));
    }
    write(&dir.join("ann/wave_test_split1.txt"), &split);
    ok(prepare("hmdb51", &dir, &["--extract", "--jobs", "2", "--short-side", "128"]));
    assert_eq!(
        lines(&dir.join("out/train.txt")),
        ["wave/RATRACE_wave_f_nm_np1_fr_goo_37 72 0", "wave/TrumanShow_wave_f_nm_np1_fr_med_26 48 0"]
    );
    let c = config(&dir);
    let text = ok(bin()
        .args(["data", "check"])
        .arg(&c.data.train_list)
        .arg("--root")
        .arg(c.data.root.unwrap())
        .output()
        .unwrap());
    assert!(text.contains("2 entries checked, 0 problem(s)"), "{text}");
}

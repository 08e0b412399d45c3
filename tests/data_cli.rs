//! `gateshift data build-list` and `data check` through the binary: a class-per-folder tree of
//! frame folders becomes a list (labels in folder order), a seeded validation split that
//! partitions it, and class names; settings that cannot give a usable split are refused.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

fn gateshift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gateshift")).args(args).output().expect("binary runs")
}

/// `dir` with `frames` small JPEGs named as the official code names them.
fn frame_folder(dir: &Path, frames: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 1..=frames {
        image::RgbImage::from_pixel(8, 6, image::Rgb([10 * i as u8, 40, 90]))
            .save(dir.join(format!("img_{i:05}.jpg")))
            .unwrap();
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(String::from).collect()
}

#[test]
fn build_list_labels_by_folder_and_splits_reproducibly() {
    let dir = common::tmp("build_list");
    let tree = dir.join("tree");
    // Class folders are sorted: "jumping" is label 0, "waving" label 1.
    for (class, clip, frames) in
        [("waving", "w1", 5), ("waving", "w2", 6), ("jumping", "j1", 7), ("jumping", "j2", 8), ("jumping", "j3", 9)]
    {
        frame_folder(&tree.join(class).join(clip), frames);
    }
    std::fs::create_dir_all(tree.join("waving/empty")).unwrap(); // no frames: not listed
    let (out, val) = (dir.join("train.txt"), dir.join("val.txt"));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let build = |extra: &[&str]| {
        let mut args = vec!["data".to_string(), "build-list".into(), s(&tree), "--out".into(), s(&out)];
        args.extend(extra.iter().map(|a| a.to_string()));
        gateshift(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let o = build(&[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(lines(&dir.join("classes.txt")), ["jumping", "waving"]);
    let all: BTreeSet<String> = lines(&out).into_iter().collect();
    let expected: BTreeSet<String> = ["tree/jumping/j1 7 0", "tree/jumping/j2 8 0", "tree/jumping/j3 9 0"]
        .into_iter()
        .chain(["tree/waving/w1 5 1", "tree/waving/w2 6 1"])
        .map(String::from)
        .collect();
    assert_eq!(all, expected);
    let o = gateshift(&["data", "check", &s(&out), "--segments", "4"]);
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));

    // A validation split partitions the entries, the same way for the same seed.
    let split = |seed: &str| {
        let o = build(&["--val-fraction", "0.4", "--val-out", &s(&val), "--seed", seed]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (lines(&out), lines(&val))
    };
    let (train, held) = split("3");
    assert_eq!((train.len(), held.len()), (3, 2));
    let union: BTreeSet<String> = train.iter().chain(&held).cloned().collect();
    assert_eq!(union, all);
    assert_eq!(split("3"), (train, held));

    // Splits that cannot be used are refused, naming the setting.
    for (fraction, says) in [("1.5", "must be in [0, 1)"), ("nan", "must be in [0, 1)"), ("0.95", "leaves none")] {
        let o = build(&["--val-fraction", fraction, "--val-out", &s(&val)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says) && !err.contains("panicked"), "{fraction}: {err}");
    }
    let empty = dir.join("empty_tree");
    std::fs::create_dir_all(empty.join("a/clip")).unwrap();
    let o = gateshift(&["data", "build-list", &s(&empty), "--out", &s(&dir.join("none.txt"))]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("no frame folder"), "{err}");
}

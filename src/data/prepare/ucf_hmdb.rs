//! UCF101 and HMDB51 annotations, with their three official splits.
//!
//! - UCF101: `classInd.txt` (`1 ApplyEyeMakeup`), `trainlist0N.txt`
//!   (`ApplyEyeMakeup/v_….avi 1`, label 1-based) and `testlist0N.txt` (path only: the class
//!   is its folder). Videos at that path under DATA, or by file name anywhere under it.
//! - HMDB51: one `<class>_test_splitN.txt` per class, lines `<video>.avi <0|1|2>` (1 = train,
//!   2 = test, 0 = unused); classes sorted by name.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::annotations::{VideoIndex, find, read_text, stays_inside};
use super::{Annotations, Sample, Split, missing_line};

fn check_split(split: usize) -> Result<()> {
    if !(1..=3).contains(&split) {
        bail!("--split {split}: UCF101 and HMDB51 have splits 1, 2 and 3");
    }
    Ok(())
}

/// The video a split line names: at `rel` under DATA, else by file stem anywhere under it.
fn locate(data: &Path, videos: &VideoIndex, rel: &str) -> Option<PathBuf> {
    if stays_inside(Path::new(rel)) && data.join(rel).is_file() {
        return Some(PathBuf::from(rel));
    }
    let stem = Path::new(rel).file_stem()?.to_string_lossy().into_owned();
    videos.get(&stem).cloned()
}

pub fn read_ucf101(dir: &Path, data: &Path, split: usize) -> Result<Annotations> {
    check_split(split)?;
    let ind = find(dir, &["classInd.txt"])?;
    let mut classes = Vec::new();
    for (i, line) in read_text(&ind)?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = format!("{}:{}", ind.display(), i + 1);
        let (k, name) =
            line.trim().split_once(char::is_whitespace).with_context(|| format!("{at}: expected `<index> <class>`"))?;
        if k.parse::<usize>().ok() != Some(classes.len() + 1) {
            bail!("{at}: index {k:?}, expected {} (classes numbered 1, 2, … in order)", classes.len() + 1);
        }
        classes.push(name.trim().to_string());
    }
    let by_name: HashMap<String, usize> = classes.iter().enumerate().map(|(i, c)| (c.to_lowercase(), i)).collect();
    let videos = VideoIndex::scan(data)?;
    let mut missing = Vec::new();
    let mut splits = Vec::new();
    for (name, file) in [("train", format!("trainlist{split:02}.txt")), ("val", format!("testlist{split:02}.txt"))] {
        let path = find(dir, &[&file])?;
        let mut samples = Vec::new();
        for (i, line) in read_text(&path)?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let origin = format!("{}:{}", path.display(), i + 1);
            let mut fields = line.split_whitespace();
            let rel = fields.next().unwrap_or_default();
            let folder = rel.split('/').next().unwrap_or_default().to_lowercase();
            let label = match fields.next() {
                Some(k) => match k.parse::<usize>() {
                    Ok(k) if (1..=classes.len()).contains(&k) => k - 1,
                    _ => bail!("{origin}: label {k:?} is not in 1..={}", classes.len()),
                },
                None => *by_name
                    .get(&folder)
                    .with_context(|| format!("{origin}: {folder:?} is not a class of {}", ind.display()))?,
            };
            match locate(data, &videos, rel) {
                Some(v) => samples.push(Sample::video(origin, &v, label)),
                None => missing.push(missing_line(&origin, &format!("video {rel}"))),
            }
        }
        splits.push(Split { name, samples });
    }
    Ok(Annotations { classes, nouns: Vec::new(), splits, missing, naming: None })
}

pub fn read_hmdb51(dir: &Path, data: &Path, split: usize) -> Result<Annotations> {
    check_split(split)?;
    let suffix = format!("_test_split{split}.txt");
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(&suffix).map(|class| (class.to_string(), e.path()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: no <class>{suffix} split files", dir.display());
    }
    let videos = VideoIndex::scan(data)?;
    let (mut train, mut val, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    for (label, (class, path)) in files.iter().enumerate() {
        for (i, line) in read_text(path)?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let origin = format!("{}:{}", path.display(), i + 1);
            let (video, set) = line
                .trim()
                .rsplit_once(char::is_whitespace)
                .with_context(|| format!("{origin}: expected `<video> <0|1|2>`"))?;
            let to = match set.trim() {
                "1" => &mut train,
                "2" => &mut val,
                "0" => continue,
                s => bail!("{origin}: split mark {s:?}, expected 0, 1 or 2"),
            };
            match locate(data, &videos, &format!("{class}/{}", video.trim())) {
                Some(v) => to.push(Sample::video(origin, &v, label)),
                None => missing.push(missing_line(&origin, &format!("video {class}/{}", video.trim()))),
            }
        }
    }
    let classes = files.into_iter().map(|(c, _)| c).collect();
    let splits = vec![Split { name: "train", samples: train }, Split { name: "val", samples: val }];
    Ok(Annotations { classes, nouns: Vec::new(), splits, missing, naming: None })
}

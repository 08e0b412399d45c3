//! Kinetics-400/600/700 annotations: CSVs with the header `label,youtube_id,time_start,
//! time_end,split[,is_cc]` (`*train.csv`, and `*validate.csv` or `*val.csv`). Classes are
//! the training labels, sorted (as every Kinetics loader numbers them). A clip is the file
//! `<youtube_id>_<start:06>_<end:06>.<ext>` (the downloaders' name) or `<youtube_id>.<ext>`
//! anywhere under DATA; clips never downloaded are counted and listed, not fatal.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Result, bail};

use super::annotations::{Row, VideoIndex, columns, field, find_suffix, read_csv};
use super::{Annotations, Sample, Split, missing_line};

pub fn read(dir: &Path, data: &Path) -> Result<Annotations> {
    let train = find_suffix(dir, &["train.csv"])?;
    let val = find_suffix(dir, &["validate.csv", "val.csv"])?;
    let (train_header, train_rows) = read_csv(&train, b',', true)?;
    let [label_col] = columns(&train, &train_header, ["label"])?;
    let mut names = BTreeSet::new();
    for row in &train_rows {
        names.insert(field(&train, row, label_col)?.to_string());
    }
    let classes: Vec<String> = names.into_iter().collect();
    if classes.is_empty() {
        bail!("{} has no clips", train.display());
    }
    let videos = VideoIndex::scan(data)?;
    let mut missing = Vec::new();
    let mut splits = Vec::new();
    for (name, path) in [("train", train), ("val", val)] {
        let (header, rows) = read_csv(&path, b',', true)?;
        let cols = columns(&path, &header, ["label", "youtube_id", "time_start", "time_end"])?;
        let mut samples = Vec::with_capacity(rows.len());
        for row in &rows {
            let origin = format!("{}:{}", path.display(), row.line);
            let (label, file) = clip(&path, row, cols, &classes)?;
            match videos.get(&file).or_else(|| videos.get(field(&path, row, cols[1]).unwrap_or_default())) {
                Some(rel) => samples.push(Sample::video(origin, rel, label)),
                None => missing.push(missing_line(&origin, &format!("clip {file}"))),
            }
        }
        splits.push(Split { name, samples });
    }
    Ok(Annotations { classes, nouns: Vec::new(), splits, missing, naming: None })
}

/// The label and file stem of one CSV row.
fn clip(path: &Path, row: &Row, [l, id, start, end]: [usize; 4], classes: &[String]) -> Result<(usize, String)> {
    let at = || format!("{}:{}", path.display(), row.line);
    let name = field(path, row, l)?;
    let Ok(label) = classes.binary_search_by(|c| c.as_str().cmp(name)) else {
        bail!("{}: class {name:?} does not occur in the training CSV", at());
    };
    let seconds = |k: usize| -> Result<u64> {
        let s = field(path, row, k)?;
        match s.parse::<f64>() {
            Ok(v) if (0.0..1e6).contains(&v) => Ok(v as u64),
            _ => bail!("{}: time {s:?} is not a time in seconds", at()),
        }
    };
    let youtube_id = field(path, row, id)?;
    if youtube_id.is_empty() || youtube_id.contains(['/', '\n']) {
        bail!("{}: youtube_id {youtube_id:?} cannot name a file", at());
    }
    Ok((label, format!("{youtube_id}_{:06}_{:06}", seconds(start)?, seconds(end)?)))
}

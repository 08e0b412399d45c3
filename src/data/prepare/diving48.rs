//! Diving48 annotations (as the official GSM `process_dataset_diving.py`): entries
//! `{vid_name, label, start_frame, end_frame}` in `Diving48_V2_train.json` /
//! `Diving48_V2_test.json` (or V1's `Diving48_train.json` / `Diving48_test.json`); class k is
//! row k of `Diving48_vocab.json` (take-off, somersault, twist, flight), joined by spaces.
//! Videos `<vid_name>.mp4` anywhere under DATA. The test split is the validation list.

use std::path::Path;

use anyhow::{Result, bail};

use super::annotations::{VideoIndex, find, json_array, json_str, json_uint};
use super::{Annotations, Sample, Split, missing_line};

pub fn read(dir: &Path, data: &Path) -> Result<Annotations> {
    let vocab = find(dir, &["Diving48_vocab.json"])?;
    let mut classes = Vec::new();
    for (k, row) in json_array(&vocab)?.iter().enumerate() {
        let words: Option<Vec<&str>> = row.as_array().map(|a| a.iter().filter_map(|w| w.as_str()).collect());
        match words {
            Some(w) if !w.is_empty() => classes.push(w.join(" ")),
            _ => bail!("{} entry {}: expected a list of words, found {row}", vocab.display(), k + 1),
        }
    }
    let videos = VideoIndex::scan(data)?;
    let mut missing = Vec::new();
    let mut splits = Vec::new();
    for (name, files) in [
        ("train", ["Diving48_V2_train.json", "Diving48_train.json"]),
        ("val", ["Diving48_V2_test.json", "Diving48_test.json"]),
    ] {
        let path = find(dir, &files)?;
        let mut samples = Vec::new();
        for (k, entry) in json_array(&path)?.iter().enumerate() {
            let at = format!("{} entry {}", path.display(), k + 1);
            let id = json_str(entry, "vid_name", &at)?;
            let label = json_uint(entry, "label", &at)?;
            if label >= classes.len() {
                bail!("{at} ({id}): label {label} is beyond the {} classes of {}", classes.len(), vocab.display());
            }
            match videos.get(id) {
                Some(rel) => samples.push(Sample::video(format!("{at} ({id})"), rel, label)),
                None => missing.push(missing_line(&at, &format!("video {id}.mp4"))),
            }
        }
        splits.push(Split { name, samples });
    }
    Ok(Annotations { classes, nouns: Vec::new(), splits, missing, naming: None })
}

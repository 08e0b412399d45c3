//! Something-Something V1 and V2 annotations.
//!
//! - V1 (as the official GSM/TRN `process_dataset_something.py`): class names from
//!   `something-something-v1-labels.csv`, one per line, **sorted**; splits from
//!   `something-something-v1-{train,validation}.csv`, `id;class name`; frames in
//!   `DATA/<id>/{:05d}.jpg` from 1.
//! - V2 (as TSM's `gen_label_sth_v2.py`): classes from `labels.json` (`{"name": "index"}`);
//!   splits from `train.json` / `validation.json`, whose `template` with the brackets removed
//!   is the class name; videos `<id>.webm` anywhere under DATA.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Result, bail};

use super::annotations::{VideoIndex, field, find, json_array, json_str, read_csv, read_json, read_text, stays_inside};
use super::{Annotations, Sample, Source, Split, missing_line};
use crate::data::FrameNaming;

/// Something-Something V1: JPEG folders named by video id.
pub fn read_v1(dir: &Path, data: &Path) -> Result<Annotations> {
    let labels = find(dir, &["something-something-v1-labels.csv"])?;
    let mut classes: Vec<String> =
        read_text(&labels)?.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    classes.sort();
    if classes.is_empty() {
        bail!("{} names no class", labels.display());
    }
    let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let mut missing = Vec::new();
    let mut splits = Vec::new();
    for (name, file) in
        [("train", "something-something-v1-train.csv"), ("val", "something-something-v1-validation.csv")]
    {
        let path = find(dir, &[file])?;
        let (_, rows) = read_csv(&path, b';', false)?;
        let mut samples = Vec::with_capacity(rows.len());
        for row in &rows {
            let origin = format!("{}:{}", path.display(), row.line);
            let (id, class) = (field(&path, row, 0)?, field(&path, row, 1)?);
            let Some(&label) = index.get(class) else {
                bail!("{origin}: class {class:?} is not in {}", labels.display());
            };
            if !stays_inside(Path::new(id)) {
                bail!("{origin}: video id {id:?} is not a plain folder name");
            }
            if !data.join(id).is_dir() {
                missing.push(missing_line(&origin, &format!("frame folder {}", data.join(id).display())));
                continue;
            }
            samples.push(Sample { origin, source: Source::Frames(id.into()), span: None, label, noun: None });
        }
        splits.push(Split { name, samples });
    }
    Ok(Annotations { classes, nouns: Vec::new(), splits, missing, naming: Some(FrameNaming::new("{:05d}.jpg", 1)?) })
}

/// Something-Something V2: `.webm` videos named by id.
pub fn read_v2(dir: &Path, data: &Path) -> Result<Annotations> {
    let labels = find(dir, &["labels.json", "something-something-v2-labels.json"])?;
    let classes = class_table(&labels)?;
    let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let videos = VideoIndex::scan(data)?;
    let mut missing = Vec::new();
    let mut splits = Vec::new();
    for (name, files) in [
        ("train", ["train.json", "something-something-v2-train.json"]),
        ("val", ["validation.json", "something-something-v2-validation.json"]),
    ] {
        let path = find(dir, &files)?;
        let mut samples = Vec::new();
        for (k, entry) in json_array(&path)?.iter().enumerate() {
            let at = format!("{} entry {}", path.display(), k + 1);
            let id = match entry.get("id") {
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => json_str(entry, "id", &at)?.to_string(),
            };
            let template = json_str(entry, "template", &at)?.replace(['[', ']'], "");
            let Some(&label) = index.get(template.as_str()) else {
                bail!("{at} (id {id}): template {template:?} is not a class of {}", labels.display());
            };
            match videos.get(&id) {
                Some(rel) => samples.push(Sample::video(format!("{at} (id {id})"), rel, label)),
                None => missing.push(missing_line(&at, &format!("video {id}.webm"))),
            }
        }
        splits.push(Split { name, samples });
    }
    Ok(Annotations { classes, nouns: Vec::new(), splits, missing, naming: None })
}

/// `{"class name": "index", …}` → names in index order; the indices must be 0..K.
fn class_table(path: &Path) -> Result<Vec<String>> {
    let serde_json::Value::Object(map) = read_json(path)? else {
        bail!("{}: expected an object {{\"class name\": \"index\"}}", path.display());
    };
    let mut classes = vec![None; map.len()];
    for (name, v) in &map {
        let i = v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
        match i.map(|i| i as usize) {
            Some(i) if i < classes.len() && classes[i].is_none() => classes[i] = Some(name.clone()),
            _ => bail!("{}: class {name:?} has index {v}, not a distinct index below {}", path.display(), map.len()),
        }
    }
    if classes.is_empty() {
        bail!("{} names no class", path.display());
    }
    Ok(classes.into_iter().map(|c| c.unwrap_or_default()).collect())
}

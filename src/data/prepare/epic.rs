//! EPIC-Kitchens-100 annotations: action segments of long recordings, each with a verb and
//! a noun class (two heads; an action is right when both are).
//!
//! - classes: `EPIC_100_verb_classes.csv` and `EPIC_100_noun_classes.csv` (`id,key,…`: the
//!   `key` of id k names class k);
//! - segments: `EPIC_100_train.csv` and `EPIC_100_validation.csv` (`participant_id`,
//!   `video_id`, `start_frame`, `stop_frame` inclusive and 1-based, `verb_class`,
//!   `noun_class`);
//! - pixels: the released frames `DATA/<participant>/rgb_frames/<video_id>/frame_{:010d}.jpg`,
//!   or the recordings `<video_id>.MP4` anywhere under DATA (then `--extract`).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::annotations::{Row, VideoIndex, columns, field, find, read_csv, stays_inside, uint_field};
use super::{Annotations, Sample, Source, Split, missing_line};
use crate::data::FrameNaming;

/// Class names from `id,key,…`, ids dense from 0.
fn class_names(path: &Path) -> Result<Vec<String>> {
    let (header, rows) = read_csv(path, b',', true)?;
    let [id, key] = columns(path, &header, ["id", "key"])?;
    let mut names = Vec::with_capacity(rows.len());
    for row in &rows {
        let i = uint_field(path, row, id)?;
        if i != names.len() {
            bail!("{}:{}: id {i}, expected {} (ids numbered 0, 1, … in order)", path.display(), row.line, names.len());
        }
        names.push(field(path, row, key)?.to_string());
    }
    if names.is_empty() {
        bail!("{} names no class", path.display());
    }
    Ok(names)
}

pub fn read(dir: &Path, data: &Path) -> Result<Annotations> {
    let verbs = class_names(&find(dir, &["EPIC_100_verb_classes.csv"])?)?;
    let nouns = class_names(&find(dir, &["EPIC_100_noun_classes.csv"])?)?;
    crate::io::require_dir(data, "data folder")?;
    let mut videos: Option<VideoIndex> = None;
    let mut missing = Vec::new();
    let mut splits = Vec::new();
    for (name, file) in [("train", "EPIC_100_train.csv"), ("val", "EPIC_100_validation.csv")] {
        let path = find(dir, &[file])?;
        let (header, rows) = read_csv(&path, b',', true)?;
        let cols = columns(
            &path,
            &header,
            ["participant_id", "video_id", "start_frame", "stop_frame", "verb_class", "noun_class"],
        )?;
        let mut samples = Vec::with_capacity(rows.len());
        for row in &rows {
            let origin = format!("{}:{}", path.display(), row.line);
            let (span, label, noun) = segment(&path, row, cols, verbs.len(), nouns.len())?;
            let (participant, video) = (field(&path, row, cols[0])?, field(&path, row, cols[1])?);
            let frames = PathBuf::from(participant).join("rgb_frames").join(video);
            if !stays_inside(&frames) || frames.components().count() != 3 {
                bail!("{origin}: participant {participant:?} / video {video:?} are not plain names");
            }
            let source = if data.join(&frames).is_dir() {
                Some(Source::Frames(frames.clone()))
            } else {
                let index = match &mut videos {
                    Some(v) => v,
                    None => videos.insert(VideoIndex::scan(data)?),
                };
                index.get(video).map(|rel| Source::Video(rel.clone()))
            };
            match source {
                Some(source) => samples.push(Sample { origin, source, span: Some(span), label, noun: Some(noun) }),
                None => {
                    missing.push(missing_line(&origin, &format!("frames {} or video {video}.MP4", frames.display())))
                }
            }
        }
        splits.push(Split { name, samples });
    }
    let naming = Some(FrameNaming::new("frame_{:010d}.jpg", 1)?);
    Ok(Annotations { classes: verbs, nouns, splits, missing, naming })
}

/// A row's segment (0-based first frame, count), verb and noun.
fn segment(
    path: &Path,
    row: &Row,
    [_, _, start, stop, verb, noun]: [usize; 6],
    verbs: usize,
    nouns: usize,
) -> Result<((usize, usize), usize, usize)> {
    let at = format!("{}:{}", path.display(), row.line);
    let (start, stop) = (uint_field(path, row, start)?, uint_field(path, row, stop)?);
    if start == 0 || stop < start {
        bail!("{at}: frames {start}..{stop}: start_frame counts from 1 and stop_frame may not precede it");
    }
    crate::limits::at_most("stop_frame", stop, crate::limits::MAX_LIST_FRAMES)?;
    let (v, n) = (uint_field(path, row, verb)?, uint_field(path, row, noun)?);
    if v >= verbs || n >= nouns {
        bail!("{at}: verb {v} / noun {n} beyond the {verbs} verb and {nouns} noun classes");
    }
    Ok(((start - 1, stop - start + 1), v, n))
}

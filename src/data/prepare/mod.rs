//! `data prepare`: a benchmark's own annotation files → what gateshift reads (lists,
//! class names, the flip-swap map, a `[data]` config). One file per benchmark reads its
//! formats into [`Annotations`]; `extract.rs` decodes videos into frame folders in
//! parallel; `output.rs` writes the result.

pub mod annotations;
pub mod diving48;
pub mod epic;
pub mod extract;
pub mod kinetics;
pub mod output;
pub mod something;
pub mod ucf_hmdb;

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::data::FrameNaming;

/// The benchmarks `data prepare` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Benchmark {
    /// Something-Something V1: `something-something-v1-{labels,train,validation}.csv`, JPEG folders.
    SomethingV1,
    /// Something-Something V2: `labels.json`, `train.json`, `validation.json`, `.webm` videos.
    SomethingV2,
    /// Diving48 (V2 or V1 labels): `Diving48_V2_{train,test}.json`, `Diving48_vocab.json`.
    Diving48,
    /// Kinetics-400/600/700: CSVs `label,youtube_id,time_start,time_end,split`.
    Kinetics,
    /// UCF101: `classInd.txt`, `trainlist0N.txt`, `testlist0N.txt`.
    Ucf101,
    /// HMDB51: `<class>_test_splitN.txt` (1 = train, 2 = test).
    Hmdb51,
    /// EPIC-Kitchens-100: `EPIC_100_{train,validation}.csv`, verb and noun class CSVs.
    EpicKitchens,
}

/// Where a sample's pixels are, relative to the data folder.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    Video(PathBuf),
    Frames(PathBuf),
}

/// One annotated sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Where it is annotated ("train.csv:12"), for messages.
    pub origin: String,
    pub source: Source,
    /// A segment of a longer recording (EPIC-Kitchens): first frame (0-based) and count.
    pub span: Option<(usize, usize)>,
    pub label: usize,
    /// The second head's label: EPIC-Kitchens' noun (the first is the verb).
    pub noun: Option<usize>,
}

impl Sample {
    /// A whole video with one label.
    pub fn video(origin: String, rel: &Path, label: usize) -> Self {
        Self { origin, source: Source::Video(rel.to_path_buf()), span: None, label, noun: None }
    }
}

/// The samples of one split: `train` or `val`.
#[derive(Clone, Debug)]
pub struct Split {
    pub name: &'static str,
    pub samples: Vec<Sample>,
}

/// What a benchmark's annotation files say.
#[derive(Clone, Debug)]
pub struct Annotations {
    /// Class names in label order (EPIC-Kitchens: the verbs).
    pub classes: Vec<String>,
    /// The second head's class names (EPIC-Kitchens' nouns); empty for one head.
    pub nouns: Vec<String>,
    pub splits: Vec<Split>,
    /// Annotated samples whose video or frames are not under the data folder
    /// ("origin: what was looked for"): counted and listed, not fatal.
    pub missing: Vec<String>,
    /// How the frames of a frame-folder benchmark are named (SSv1, EPIC-Kitchens).
    pub naming: Option<FrameNaming>,
}

/// Reads `benchmark`'s annotations from `annotations`, resolving samples under `data`;
/// `split` picks UCF101's and HMDB51's official split (1–3).
pub fn read(benchmark: Benchmark, annotations: &Path, data: &Path, split: usize) -> Result<Annotations> {
    crate::io::require_dir(annotations, "annotation folder")?;
    match benchmark {
        Benchmark::SomethingV1 => something::read_v1(annotations, data),
        Benchmark::SomethingV2 => something::read_v2(annotations, data),
        Benchmark::Diving48 => diving48::read(annotations, data),
        Benchmark::Kinetics => kinetics::read(annotations, data),
        Benchmark::Ucf101 => ucf_hmdb::read_ucf101(annotations, data, split),
        Benchmark::Hmdb51 => ucf_hmdb::read_hmdb51(annotations, data, split),
        Benchmark::EpicKitchens => epic::read(annotations, data),
    }
}

/// The label pairs a horizontal flip exchanges: classes whose names turn into each other
/// when "left" and "right" swap ("Pushing something from left to right" ↔ "… from right
/// to left"). For Something-Something V1 this is the official map 86:87, 93:94, 166:167.
pub fn flip_pairs(classes: &[String]) -> Vec<(usize, usize)> {
    let index: std::collections::HashMap<String, usize> =
        classes.iter().enumerate().map(|(i, c)| (c.to_lowercase(), i)).collect();
    let mut pairs = Vec::new();
    for (i, name) in classes.iter().enumerate() {
        let mirrored = mirror(&name.to_lowercase());
        if let Some(&j) = index.get(&mirrored)
            && i < j
        {
            pairs.push((i, j));
        }
    }
    pairs
}

/// `name` with the words "left" and "right" exchanged.
fn mirror(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(match word.as_str() {
            "left" => "right",
            "right" => "left",
            w => w,
        });
        word.clear();
    };
    for ch in name.chars() {
        if ch.is_alphanumeric() {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The swap map in the form `[data] flip_swap` takes: "86:87,93:94".
pub fn flip_swap_string(pairs: &[(usize, usize)]) -> String {
    pairs.iter().map(|(a, b)| format!("{a}:{b}")).collect::<Vec<_>>().join(",")
}

/// Where a sample name would be looked for, for the missing list.
pub(crate) fn missing_line(origin: &str, what: &str) -> String {
    format!("{origin}: {what} not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_pairs_are_the_left_right_mirrors() {
        let names: Vec<String> = [
            "Pushing something from left to right",
            "Pushing something from right to left",
            "Turning the camera left while filming something",
            "Turning the camera right while filming something",
            "Moving something up",
            "Bright light",
        ]
        .map(String::from)
        .into();
        assert_eq!(flip_pairs(&names), vec![(0, 1), (2, 3)]);
        assert_eq!(flip_swap_string(&flip_pairs(&names)), "0:1,2:3");
        assert!(flip_pairs(&["a left".into(), "b right".into()]).is_empty());
    }
}

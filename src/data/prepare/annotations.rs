//! Reading the benchmarks' annotation files (CSV, JSON, plain text) with errors that name
//! the file and line, and finding the videos they refer to under the data folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::data::list::VIDEO_EXTENSIONS;

/// The UTF-8 text of an annotation file, without the byte-order mark spreadsheet tools
/// put first (it would otherwise be part of the first column's name).
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = crate::io::read_regular(path, "annotation file")?;
    let text = String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!("annotation file {} is not UTF-8 (byte {})", path.display(), e.utf8_error().valid_up_to())
    })?;
    Ok(text.strip_prefix('\u{feff}').map(str::to_string).unwrap_or(text))
}

/// Whether `rel` stays below the folder it is relative to: only plain names, no `..`, no
/// root (an annotation naming `../../x` must not make `--extract` write outside OUT).
pub fn stays_inside(rel: &Path) -> bool {
    rel.components().all(|c| matches!(c, std::path::Component::Normal(_))) && rel.components().next().is_some()
}

/// A JSON annotation file; a syntax error names the file, line and column.
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    serde_json::from_str(&read_text(path)?).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// The entries of a JSON array file (`what` names one entry in errors).
pub fn json_array(path: &Path) -> Result<Vec<serde_json::Value>> {
    match read_json(path)? {
        serde_json::Value::Array(a) => Ok(a),
        _ => bail!("{}: expected a JSON array of entries", path.display()),
    }
}

/// A string field of a JSON entry; `at` names the entry.
pub fn json_str<'a>(v: &'a serde_json::Value, key: &str, at: &str) -> Result<&'a str> {
    v.get(key).and_then(|s| s.as_str()).ok_or_else(|| anyhow::anyhow!("{at}: no string field {key:?}"))
}

/// A non-negative integer field of a JSON entry (a number or a numeric string).
pub fn json_uint(v: &serde_json::Value, key: &str, at: &str) -> Result<usize> {
    let f = v.get(key).ok_or_else(|| anyhow::anyhow!("{at}: no field {key:?}"))?;
    f.as_u64()
        .or_else(|| f.as_str().and_then(|s| s.trim().parse().ok()))
        .map(|n| n as usize)
        .ok_or_else(|| anyhow::anyhow!("{at}: field {key:?} = {f} is not a non-negative integer"))
}

/// One CSV row with the 1-based line it starts on.
pub struct Row {
    pub line: u64,
    pub fields: csv::StringRecord,
}

/// The rows of a CSV file (`delimiter` `,` or `;`); with `header`, the first row is the
/// column names, returned apart. Quoted fields (names with commas) are read as CSV does.
pub fn read_csv(path: &Path, delimiter: u8, header: bool) -> Result<(Vec<String>, Vec<Row>)> {
    let text = read_text(path)?;
    let mut reader =
        csv::ReaderBuilder::new().delimiter(delimiter).has_headers(header).flexible(true).from_reader(text.as_bytes());
    let names = if header {
        reader
            .headers()
            .with_context(|| format!("{}: unreadable header", path.display()))?
            .iter()
            .map(|s| s.trim().to_string())
            .collect()
    } else {
        Vec::new()
    };
    let mut rows = Vec::new();
    for record in reader.records() {
        let fields = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            anyhow::anyhow!("{}:{line}: {e}", path.display())
        })?;
        let line = fields.position().map_or(0, |p| p.line());
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        rows.push(Row { line, fields });
    }
    Ok((names, rows))
}

/// The columns of a CSV header by name, each required.
pub fn columns<const N: usize>(path: &Path, header: &[String], wanted: [&str; N]) -> Result<[usize; N]> {
    let mut out = [0; N];
    for (slot, name) in out.iter_mut().zip(wanted) {
        *slot = header.iter().position(|h| h.eq_ignore_ascii_case(name)).ok_or_else(|| {
            anyhow::anyhow!("{}: no column {name:?} in the header ({})", path.display(), header.join(","))
        })?;
    }
    Ok(out)
}

/// Field `k` of a row, trimmed; a short row is an error naming its line.
pub fn field<'a>(path: &Path, row: &'a Row, k: usize) -> Result<&'a str> {
    row.fields.get(k).map(str::trim).ok_or_else(|| {
        anyhow::anyhow!("{}:{}: {} field(s), expected at least {}", path.display(), row.line, row.fields.len(), k + 1)
    })
}

/// An integer field of a row.
pub fn uint_field(path: &Path, row: &Row, k: usize) -> Result<usize> {
    let s = field(path, row, k)?;
    s.parse().map_err(|_| anyhow::anyhow!("{}:{}: {s:?} is not a non-negative integer", path.display(), row.line))
}

/// The first of `names` that exists in `dir`; the error lists what was looked for.
pub fn find(dir: &Path, names: &[&str]) -> Result<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists()).ok_or_else(|| {
        anyhow::anyhow!("{}: none of {} found (the dataset's own annotation files)", dir.display(), names.join(", "))
    })
}

/// The one file in `dir` whose name ends with one of `suffixes` (case-insensitive).
pub fn find_suffix(dir: &Path, suffixes: &[&str]) -> Result<PathBuf> {
    let mut hits = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("reading annotation folder {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().to_ascii_lowercase();
        if suffixes.iter().any(|s| name.ends_with(s)) {
            hits.push(dir.join(name));
        }
    }
    hits.sort();
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => bail!("{}: no file named *{}", dir.display(), suffixes.join(" or *")),
        _ => bail!(
            "{}: {} files could be the annotation: {}",
            dir.display(),
            hits.len(),
            hits.iter().map(|h| h.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// The video files under the data folder by file stem (`abc_000010_000020` for
/// `train/abseiling/abc_000010_000020.mp4`), so that any folder layout is found.
pub struct VideoIndex {
    by_stem: HashMap<String, PathBuf>,
}

impl VideoIndex {
    /// Walks `data` (following links to folders) for files with a video extension.
    pub fn scan(data: &Path) -> Result<Self> {
        crate::io::require_dir(data, "data folder")?;
        let mut found: Vec<PathBuf> = walkdir::WalkDir::new(data)
            .follow_links(true)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file() && is_video(e.path()))
            .filter_map(|e| e.path().strip_prefix(data).ok().map(Path::to_path_buf))
            .collect();
        found.sort();
        let mut by_stem = HashMap::with_capacity(found.len());
        for rel in found {
            let stem = rel.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            by_stem.entry(stem).or_insert(rel);
        }
        Ok(Self { by_stem })
    }

    /// The video with this stem, relative to the data folder.
    pub fn get(&self, stem: &str) -> Option<&PathBuf> {
        self.by_stem.get(stem)
    }

    pub fn len(&self) -> usize {
        self.by_stem.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_stem.is_empty()
    }
}

fn is_video(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

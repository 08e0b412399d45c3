//! Each `examples/*.toml` recipe against the official training command quoted in its header:
//! the command's flags are read back from the comment and every one must match the value the
//! config resolves to (with the official codes' defaults for flags not given); the README's
//! recipe table names every example with the accuracy its header publishes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gateshift::train::config::TrainConfig;
use gateshift::train::schedule::Schedule;

/// The official command in the header: `python main.py …` up to the line without a `\`.
fn official_command(text: &str) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let mut words = Vec::new();
    let mut inside = false;
    for line in text.lines().map(|l| l.trim_start_matches('#').trim()) {
        if line.starts_with("python main.py") {
            inside = true;
        }
        if inside {
            words.extend(line.trim_end_matches('\\').split_whitespace().map(|w| w.to_string()));
            if !line.ends_with('\\') {
                break;
            }
        }
    }
    let (mut positional, mut flags) = (Vec::new(), BTreeMap::<String, Vec<String>>::new());
    let mut current: Option<String> = None;
    for w in words.into_iter().skip(2) {
        if let Some(flag) = w.strip_prefix("--").or_else(|| w.strip_prefix('-')) {
            let (name, value) = flag.split_once('=').map_or((flag, None), |(n, v)| (n, Some(v.to_string())));
            flags.entry(name.to_string()).or_default().extend(value);
            current = Some(name.to_string());
        } else if let Some(name) = &current {
            flags.get_mut(name).unwrap().push(w);
        } else {
            positional.push(w);
        }
    }
    (positional, flags)
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn check(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let c = TrainConfig::read(path).unwrap();
    let (positional, flags) = official_command(&text);
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(!flags.is_empty(), "{name}: no official command in the header");
    let value = |k: &str| flags.get(k).map(|v| v[0].clone());
    let num = |k: &str| value(k).map(|v| v.parse::<f64>().unwrap());
    let dataset = value("dataset").or_else(|| positional.first().cloned()).unwrap();
    let (m, o, d) = (&c.model.net, &c.optim, &c.data);
    assert_eq!(m.arch.name().to_lowercase(), value("arch").unwrap().to_lowercase(), "{name}: arch");
    assert_eq!(m.segments as f64, num("num_segments").unwrap(), "{name}: segments");
    assert_eq!(m.classes, if dataset == "diving48" { 48 } else { 174 }, "{name}: classes of {dataset}");
    assert_eq!(m.dropout, num("dropout").unwrap_or(0.5), "{name}: dropout");
    let temporal = ["gsm", "gsf", "shift"].into_iter().find(|t| flags.contains_key(*t)).unwrap();
    assert_eq!(m.temporal.name(), if temporal == "shift" { "tsm" } else { temporal }, "{name}: temporal");
    if let Some(r) = num("gsf_ch_ratio") {
        assert_eq!(m.gsf_ratio, Some(r as usize), "{name}: gsf ratio");
    }
    if let Some(div) = num("shift_div") {
        assert_eq!(m.shift_div as f64, div, "{name}: shift_div");
        assert_eq!(format!("{:?}", m.shift_place).to_lowercase(), value("shift_place").unwrap(), "{name}: place");
    }
    assert_eq!(o.batch_size as f64, num("batch-size").unwrap(), "{name}: batch size");
    assert_eq!(o.iter_size as f64, num("iter_size").unwrap_or(1.0), "{name}: iter_size");
    assert_eq!(o.lr, num("lr").unwrap(), "{name}: lr");
    assert_eq!(o.epochs as f64, num("epochs").unwrap(), "{name}: epochs");
    assert_eq!(c.eval_every as f64, num("eval-freq").unwrap(), "{name}: eval-freq");
    assert_eq!(o.clip_gradient, num("gd").unwrap(), "{name}: gd");
    assert_eq!(o.weight_decay, num("wd").or(num("weight-decay")).unwrap_or(5e-4), "{name}: weight decay");
    assert_eq!(o.momentum, 0.9, "{name}: momentum");
    // GSM has partial BN unless --npb; TSM the same; GSF has none.
    assert!(!o.partial_bn, "{name}: partial BN");
    assert!(temporal == "gsf" || flags.contains_key("npb"), "{name}: the command has no --npb");
    match flags.get("lr_steps") {
        Some(steps) => {
            let steps: Vec<usize> = steps.iter().map(|s| s.parse().unwrap()).collect();
            assert_eq!(
                (o.schedule, &o.lr_steps, o.warmup_epochs),
                (Schedule::Step, &steps, 0),
                "{name}: step schedule"
            );
        }
        None => assert_eq!((o.schedule, o.warmup_epochs as f64), (Schedule::Cosine, num("warmup").unwrap()), "{name}"),
    }
    // GSM and GSF flip with the left/right target transform on Something; TSM does not flip it.
    let (flip, swap) = match (temporal, dataset.as_str()) {
        ("shift", _) => (false, ""),
        (_, "diving48") => (true, ""),
        _ => (true, "86:87,93:94,166:167"),
    };
    assert_eq!((d.flip, d.flip_swap.as_str()), (flip, swap), "{name}: flip");
    let input = if m.arch.name().eq_ignore_ascii_case("inceptionv3") { 229 } else { 224 };
    assert_eq!((c.input_size(), c.scale_size()), (input, input * 256 / 224), "{name}: sizes");
    assert_eq!(
        c.precision == gateshift::train::precision::Precision::Bf16,
        flags.contains_key("with_amp"),
        "{name}: amp"
    );
    c.validate().unwrap();
}

#[test]
fn every_example_is_its_official_command() {
    let files = examples();
    assert!(files.len() >= 6, "{files:?}");
    for f in &files {
        check(f);
    }
}

#[test]
fn readme_recipe_table_names_each_example_and_its_accuracy() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for f in examples() {
        let text = std::fs::read_to_string(&f).unwrap();
        let published = text.lines().find_map(|l| l.split("Published").nth(1)).expect("a Published line");
        let accuracy = published.split('%').next().unwrap().rsplit(' ').next().unwrap().to_string();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let row = readme
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&name))
            .unwrap_or_else(|| panic!("README has no row for {name}"));
        assert!(row.contains(&accuracy), "{name}: README row {row:?} lacks {accuracy}");
    }
}

//! The layout rules of docs/ARCHITECTURE.md, checked on the source tree: model code free of
//! kernels and backend routing, files and functions of readable size, and no import circles
//! between files or between folders.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The file's text without `#[cfg(test)]` items (test modules may reach anywhere) and without
/// comments.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut skip_until: Option<String> = None;
    let mut cfg_test = false;
    for line in text.lines() {
        if let Some(end) = &skip_until {
            if line == end.as_str() {
                skip_until = None;
            }
            continue;
        }
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            cfg_test = true;
            continue;
        }
        if cfg_test {
            cfg_test = false;
            let indent = &line[..line.len() - trimmed.len()];
            if trimmed.ends_with('{') {
                skip_until = Some(format!("{indent}}}"));
            }
            continue;
        }
        let line = line.split("//").next().unwrap_or("");
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn model_code_has_no_kernels_routing_or_switches() {
    let mut bad = Vec::new();
    for file in rust_files(&src().join("model")) {
        let text = fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for needle in ["cfg(feature", "cfg(any(feature", "unsafe", "env::var", "var_os("] {
                if code.contains(needle) {
                    bad.push(format!("{}:{}: {needle}", file.display(), i + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "src/model/ must leave kernels, features and switches to src/ops/:\n{}", bad.join("\n"));
}

#[test]
fn files_and_functions_are_of_readable_size() {
    let mut bad = Vec::new();
    for file in rust_files(&src()) {
        let text = fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() > MAX_FILE_LINES {
            bad.push(format!("{}: {} lines", file.display(), lines.len()));
        }
        for (start, len) in functions(&lines) {
            if len > MAX_FN_LINES {
                bad.push(format!("{}:{}: function of {len} lines", file.display(), start + 1));
            }
        }
    }
    assert!(bad.is_empty(), "over {MAX_FILE_LINES} lines a file or {MAX_FN_LINES} a function:\n{}", bad.join("\n"));
}

/// (first line, length) of every function body in rustfmt'd code: from its `fn` line to the
/// closing brace at the same indentation.
fn functions(lines: &[&str]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let words: Vec<&str> = trimmed.split_whitespace().take(4).collect();
        let Some(pos) = words.iter().position(|w| *w == "fn") else { continue };
        let prefix_ok = words[..pos].iter().all(|w| {
            ["pub", "pub(crate)", "pub(super)", "const", "async", "unsafe", "extern", "\"C\""].contains(w)
                || w.starts_with("pub(in")
        });
        if !prefix_ok {
            continue;
        }
        // A one-line function (`fn f() {}`).
        let code = line.split("//").next().unwrap_or("").trim_end();
        if code.contains('{') && code.ends_with('}') {
            out.push((i, 1));
            continue;
        }
        // A declaration (`fn f(…);` in a trait) has no body.
        let signature_end = lines[i..]
            .iter()
            .map(|l| l.split("//").next().unwrap_or("").trim_end())
            .find(|l| l.ends_with('{') || l.ends_with(';'));
        if signature_end.is_none_or(|l| l.ends_with(';')) {
            continue;
        }
        let indent = &line[..line.len() - trimmed.len()];
        let close = format!("{indent}}}");
        if let Some(end) = lines[i..].iter().position(|l| *l == close) {
            out.push((i, end + 1));
        }
    }
    out
}

/// The module file a path names, taking the longest prefix that is a module: `crate::a::b::c`
/// → `src/a/b.rs` if `b` is a file and `c` an item in it.
fn resolve(root: &Path, segments: &[&str]) -> Option<PathBuf> {
    let mut best = None;
    let mut dir = root.to_path_buf();
    for seg in segments {
        let file = dir.join(format!("{seg}.rs"));
        let module = dir.join(seg).join("mod.rs");
        if module.exists() {
            best = Some(module);
        } else if file.exists() {
            best = Some(file);
        } else {
            break;
        }
        dir = dir.join(seg);
    }
    best
}

/// The directory a file's `super::` / `self::` resolve from, and the module's own file.
fn module_dir(file: &Path) -> (PathBuf, PathBuf) {
    let parent = file.parent().unwrap().to_path_buf();
    if file.file_name().unwrap() == "mod.rs" || file.file_name().unwrap() == "lib.rs" {
        (parent.clone(), parent)
    } else {
        (parent.clone(), parent.join(file.file_stem().unwrap()))
    }
}

/// Every path a file's (non-test) code names, `use` groups expanded.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let flat: String = code.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    let bytes: Vec<char> = flat.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let rest: String = bytes[i..bytes.len().min(i + 10)].iter().collect();
        let at_word = i == 0 || !(bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_' || bytes[i - 1] == ':');
        let starts = ["crate::", "super::", "self::", "gateshift::"].iter().find(|p| rest.starts_with(**p));
        if let (true, Some(p)) = (at_word, starts) {
            let (expanded, len) = expand(&bytes[i..], p.len());
            out.extend(expanded);
            i += len.max(1);
        } else {
            i += 1;
        }
    }
    out
}

/// Expands the path starting at `s` (`a::b::{c, d::{e}}`) into its leaves; returns them and
/// the characters read.
fn expand(s: &[char], _start: usize) -> (Vec<Vec<String>>, usize) {
    let mut prefix: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            i += 1;
        } else if c == ':' && s.get(i + 1) == Some(&':') {
            prefix.push(std::mem::take(&mut word));
            i += 2;
            if s.get(i) == Some(&'{') {
                let mut depth = 0;
                let mut j = i;
                while j < s.len() {
                    match s[j] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                let inner: String = s[i + 1..j].iter().collect();
                let mut leaves = Vec::new();
                for part in split_top(&inner) {
                    let part: Vec<char> = part.trim().chars().collect();
                    if part.is_empty() {
                        continue;
                    }
                    let (sub, _) = expand(&part, 0);
                    for mut leaf in sub {
                        let mut full = prefix.clone();
                        full.append(&mut leaf);
                        leaves.push(full);
                    }
                }
                return (leaves, j + 1);
            }
        } else {
            break;
        }
    }
    if !word.is_empty() {
        prefix.push(word);
    }
    (vec![prefix], i)
}

/// `inner` split at its top-level commas.
fn split_top(inner: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out
}

/// Import edges between the files of `src/` (library and binary), test code left out.
fn import_graph() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let root = src();
    let mut graph: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for file in rust_files(&root) {
        if file.file_name().unwrap() == "tests.rs" {
            continue;
        }
        let code = code(&fs::read_to_string(&file).unwrap());
        let edges = graph.entry(file.clone()).or_default();
        for path in paths(&code) {
            let segs: Vec<&str> = path.iter().map(String::as_str).collect();
            let target = match segs.first().copied() {
                // The binary's `crate::cli::…` and the library's `crate::…` both start at src/.
                Some("crate") | Some("gateshift") => resolve(&root, &segs[1..]),
                Some("super") => {
                    let (dir, _) = module_dir(&file);
                    let mut base =
                        if file.file_name().unwrap() == "mod.rs" { dir.parent().unwrap().to_path_buf() } else { dir };
                    let mut rest = &segs[1..];
                    while rest.first() == Some(&"super") {
                        base = base.parent().unwrap().to_path_buf();
                        rest = &rest[1..];
                    }
                    let module =
                        if base.join("mod.rs").exists() { base.join("mod.rs") } else { base.with_extension("rs") };
                    resolve(&base, rest).or(Some(module).filter(|m| m.exists()))
                }
                Some("self") => {
                    let (_, own) = module_dir(&file);
                    resolve(&own, &segs[1..])
                }
                _ => None,
            };
            if let Some(t) = target.filter(|t| *t != file) {
                edges.insert(t);
            }
        }
    }
    graph
}

/// Strongly connected components of more than one node (Tarjan's algorithm).
fn cycles<T: Ord + Clone>(graph: &BTreeMap<T, BTreeSet<T>>) -> Vec<Vec<T>> {
    struct State<T> {
        index: BTreeMap<T, usize>,
        low: BTreeMap<T, usize>,
        stack: Vec<T>,
        on: BTreeSet<T>,
        out: Vec<Vec<T>>,
    }
    fn visit<T: Ord + Clone>(v: &T, g: &BTreeMap<T, BTreeSet<T>>, s: &mut State<T>) {
        let n = s.index.len();
        s.index.insert(v.clone(), n);
        s.low.insert(v.clone(), n);
        s.stack.push(v.clone());
        s.on.insert(v.clone());
        for w in g.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, g, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(&w);
                let done = w == *v;
                comp.push(w);
                if done {
                    break;
                }
            }
            if comp.len() > 1 {
                s.out.push(comp);
            }
        }
    }
    let mut s = State { index: BTreeMap::new(), low: BTreeMap::new(), stack: vec![], on: BTreeSet::new(), out: vec![] };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(v, graph, &mut s);
        }
    }
    s.out
}

#[test]
fn no_import_circles_between_files_or_folders() {
    let root = src();
    let graph = import_graph();
    let show = |p: &PathBuf| p.strip_prefix(&root).unwrap().display().to_string();
    let mut found: Vec<String> = cycles(&graph)
        .iter()
        .map(|c| format!("files: {}", c.iter().map(show).collect::<Vec<_>>().join(" ↔ ")))
        .collect();
    // Folders: every file stands for the folder it is in.
    let mut folders: BTreeMap<PathBuf, BTreeSet<PathBuf>> = BTreeMap::new();
    for (from, tos) in &graph {
        let f = from.parent().unwrap().to_path_buf();
        let entry = folders.entry(f.clone()).or_default();
        for to in tos {
            let t = to.parent().unwrap().to_path_buf();
            if t != f && !f.starts_with(&t) {
                entry.insert(t);
            }
        }
    }
    found.extend(
        cycles(&folders).iter().map(|c| format!("folders: {}", c.iter().map(show).collect::<Vec<_>>().join(" ↔ "))),
    );
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

/// The checker itself: a planted circle and a planted long function are found.
#[test]
fn the_checks_find_what_they_look_for() {
    let mut g: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    g.insert(1, [2].into());
    g.insert(2, [3].into());
    g.insert(3, [1].into());
    g.insert(4, [1].into());
    assert_eq!(cycles(&g).len(), 1);
    let body = [
        "pub fn f() {",
        "    a();",
        "}",
        "    fn g(x: u8) -> u8 {",
        "        x",
        "    }",
        "    fn h(",
        "        x: u8,",
        "    );",
        "}",
    ];
    assert_eq!(functions(&body), vec![(0, 3), (3, 3)]);
    let p = paths("use crate::ops::{conv::{self, gemm}, route};\nlet x = super::kernels::Dims::new();");
    let p: Vec<String> = p.iter().map(|v| v.join("::")).collect();
    assert_eq!(
        p,
        ["crate::ops::conv::self", "crate::ops::conv::gemm", "crate::ops::route", "super::kernels::Dims::new"]
    );
    assert!(code("#[cfg(test)]\nmod tests {\n    use crate::x;\n}\nfn f() {}\n").contains("fn f"));
    assert!(!code("#[cfg(test)]\nmod tests {\n    use crate::x;\n}\n").contains("crate::x"));
}

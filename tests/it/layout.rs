//! The shape of the source tree (docs/design.md, "Stages and their owners"): no
//! source file over 500 lines, and no module importing one that imports it back,
//! in the library and in each binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 500;

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn every_source_file_is_at_most_500_lines() {
    let long: Vec<String> = ["src", "tests", "benches", "examples"]
        .into_iter()
        .flat_map(|dir| rust_files(&repo(dir)))
        .filter_map(|file| {
            let lines = std::fs::read_to_string(&file).expect("readable").lines().count();
            (lines > MAX_LINES).then(|| format!("{} has {lines} lines", file.display()))
        })
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:#?}");
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    // The library (its binaries are crates of their own), then each binary with modules.
    for (root, skip) in [("src", Some("bin")), ("src/bin/publisher", None)] {
        let graph = import_graph(&repo(root), skip);
        assert!(graph.len() > 3, "{root}: modules found: {graph:?}");
        let cycles: Vec<String> = graph
            .iter()
            .flat_map(|(a, targets)| targets.iter().map(move |b| (a, b)))
            .filter(|(a, b)| a < b && graph.get(*b).is_some_and(|back| back.contains(*a)))
            .map(|(a, b)| format!("{a} <-> {b}"))
            .collect();
        assert!(cycles.is_empty(), "{root}: modules importing each other: {cycles:#?}");
    }
}

/// Module path → the modules it imports (`crate::`, `super::`, child paths).
fn import_graph(root: &Path, skip: Option<&str>) -> BTreeMap<String, BTreeSet<String>> {
    let files: Vec<(String, PathBuf)> = rust_files(root)
        .into_iter()
        .filter(|f| skip.is_none_or(|s| !f.strip_prefix(root).expect("under root").starts_with(s)))
        .map(|f| (module_of(root, &f), f))
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    files
        .iter()
        .map(|(module, file)| {
            let text = std::fs::read_to_string(file).expect("readable");
            // Inline test modules import their parent by design; they are not part of the graph.
            let code = text.split("#[cfg(test)]\nmod tests {").next().unwrap_or_default();
            (module.clone(), imports(module, code, &modules))
        })
        .collect()
}

/// `store/read.rs` → `store::read`; `store/mod.rs` → `store`; `lib.rs`/`main.rs` → `""`.
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).expect("under root").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts.join("::")
}

fn imports(module: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    let within = |base: &str, path: &str| -> Option<String> {
        let full = if base.is_empty() { path.to_owned() } else { format!("{base}::{path}") };
        let segments: Vec<&str> = full.split("::").filter(|s| !s.is_empty()).collect();
        (1..=segments.len()).rev().map(|n| segments[..n].join("::")).find(|m| modules.contains(m))
    };
    // One line of code without comments, so that a `use` spread over lines reads whole.
    let code: Vec<&str> = code.lines().map(|l| l.split("//").next().unwrap_or_default()).collect();
    let code = code.join(" ");
    let mut found = BTreeSet::new();
    for path in paths_after(&code, "crate::") {
        found.insert(within("", &path).unwrap_or_default());
    }
    for path in paths_after(&code, "super::") {
        found.insert(within(parent, &path).unwrap_or_else(|| parent.to_owned()));
    }
    // `use child::Item` (a parent importing its own child).
    for path in paths_after(&code, "use ") {
        found.extend(within(module, &path).filter(|m| m.starts_with(module) && m != module));
    }
    found.remove(module);
    found
}

/// The paths that follow each `prefix` in `line`; `prefix{a, b::c}` gives `a`, `b::c`.
fn paths_after(line: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in line.match_indices(prefix) {
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = line[at + prefix.len()..].trim_start();
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = group.split('}').next().unwrap_or_default();
                out.extend(group.split(',').map(path_at).filter(|p| !p.is_empty()));
            }
            None => out.push(path_at(rest)),
        }
    }
    out
}

fn path_at(text: &str) -> String {
    text.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect()
}

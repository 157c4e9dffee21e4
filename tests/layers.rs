//! The house rules of `ARCHITECTURE.md`, checked on the source: every module
//! imports only the layers below it, and no two files import each other in a
//! circle. The allowed imports are written here once; a new upward import fails
//! this test and has to be argued for by changing the table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of the library and the modules it may import.
const ALLOWED: &[(&str, &[&str])] = &[
    // The base: no dependency on anything of ours (results reads through files).
    ("diagnostics", &[]),
    ("files", &[]),
    ("interrupt", &[]),
    ("linalg", &[]),
    ("rng", &[]),
    ("results", &["files"]),
    // Data, then the language (its checker asks manifests for split names).
    ("data", &["diagnostics", "files", "rng"]),
    ("lang", &["data", "diagnostics", "files"]),
    ("plan", &["lang", "data", "diagnostics"]),
    // The numerics.
    ("model", &["lang", "rng"]),
    (
        "train",
        &[
            "data",
            "interrupt",
            "lang",
            "linalg",
            "model",
            "results",
            "rng",
        ],
    ),
    ("eval", &["data", "lang", "linalg", "results", "rng"]),
    ("encode", &["data", "files", "linalg", "model", "rng"]),
    ("import", &["data", "encode", "files"]),
    // Readers of run directories.
    ("report", &["eval", "results"]),
    // The executor sits on top of everything it runs.
    (
        "exec",
        &[
            "data",
            "diagnostics",
            "eval",
            "files",
            "interrupt",
            "lang",
            "model",
            "plan",
            "report",
            "results",
            "rng",
            "train",
        ],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file of a top-level module (a file, or a folder).
fn files_of(module: &str) -> Vec<PathBuf> {
    let file = src().join(format!("{module}.rs"));
    let dir = src().join(module);
    let mut out = Vec::new();
    if file.is_file() {
        out.push(file);
    }
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The identifiers that follow `prefix` in `text` (`crate::` → `data`, ...).
fn names_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|n| !n.is_empty())
        .collect()
}

/// The source without comments (a doc comment may name any module).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_module_is_in_the_layer_table() {
    let allowed: BTreeSet<&str> = ALLOWED.iter().map(|(m, _)| *m).collect();
    let lib = code(&src().join("lib.rs"));
    for module in names_after(&lib, "pub mod ") {
        assert!(
            allowed.contains(module),
            "module `{module}` is not in tests/layers.rs's table: place it in a layer"
        );
    }
}

#[test]
fn imports_point_down_the_layers() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (module, may) in ALLOWED {
        for file in files_of(module) {
            let text = code(&file);
            for used in names_after(&text, "crate::") {
                if used != *module && allowed.contains_key(used) && !may.contains(&used) {
                    violations.push(format!(
                        "{} imports `{used}`, above or beside `{module}`",
                        file.strip_prefix(src()).unwrap().display()
                    ));
                }
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// A file's node: `module/sub` for a file of a folder module, `module` for a
/// module's root file (`mod.rs` or `module.rs`).
fn node_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).unwrap();
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .filter(|p| p != "mod")
        .collect();
    parts.join("/")
}

#[test]
fn no_circle_of_files() {
    let mut graph = petgraph::graphmap::DiGraphMap::<&str, ()>::new();
    let mut names: Vec<(String, Vec<String>)> = Vec::new();
    for (module, _) in ALLOWED {
        for file in files_of(module) {
            let node = node_of(&file);
            // `super::x` from `a/b` names `a/x` (for a top-level module's root
            // it names the crate root, which is not a file of ours).
            let parent = node
                .rsplit_once('/')
                .map_or(String::new(), |(p, _)| p.to_string());
            let text = code(&file);
            let mut targets = Vec::new();
            if !parent.is_empty() {
                for sub in names_after(&text, "super::") {
                    targets.push(format!("{parent}/{sub}"));
                }
            }
            for (i, _) in text.match_indices("crate::") {
                let rest = &text[i + 7..];
                let path: Vec<&str> = rest
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                    .next()
                    .unwrap_or("")
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .collect();
                if path.len() >= 2 {
                    targets.push(format!("{}/{}", path[0], path[1]));
                }
            }
            names.push((node, targets));
        }
    }
    let known: BTreeSet<String> = names.iter().map(|(n, _)| n.clone()).collect();
    let mut edges: Vec<(String, String)> = Vec::new();
    for (node, targets) in &names {
        for t in targets {
            // A module's root re-exporting its own files is not a circle.
            if known.contains(t) && t != node && !t.starts_with(&format!("{node}/")) {
                edges.push((node.clone(), t.clone()));
            }
        }
    }
    for (a, b) in &edges {
        graph.add_edge(a.as_str(), b.as_str(), ());
    }
    let cycles: Vec<Vec<&str>> = petgraph::algo::tarjan_scc(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    assert!(
        cycles.is_empty(),
        "files importing each other in a circle: {cycles:?}"
    );
}

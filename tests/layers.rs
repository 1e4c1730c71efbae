//! The crate's architecture as a rule: each top-level module imports only modules of its own layer or below
//! (docs/architecture.md draws the layers), and no two modules import each other, directly or round a cycle.
//! Read from the sources: every `crate::…`, `super::…` and `self::…` path in `src/` and `passes/`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules from the bottom up; a module may use its own layer and those below.
const LAYERS: &[&[&str]] = &[
    &["onnx", "limits"],
    &["tensor"],
    &["ir"],
    &["io", "analysis"],
    &["summary", "passes", "runtime"],
    &["verify"],
    &["calibrate"],
    &["convert"],
    &["api", "error"],
    &["cli", "python"],
    &["lib"],
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&top))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `src/ir/import.rs` → `ir::import`, `src/ir/mod.rs` → `ir`,
/// `passes/fuse.rs` → `passes::fuse`, `src/lib.rs` → `lib`.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap();
    let mut parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts[0] == "src" {
        parts.remove(0);
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The paths a file names, each as the words after `crate::`, `super::` or `self::` (resolved against the
/// file's module), up to the first word that is not a module: `crate::ir::patch::Patch` → `ir::patch::Patch`.
fn referenced(text: &str, module: &[String], is_dir_module: bool) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    // Comments say where things are, they do not import them.
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    for (prefix, base) in [
        ("crate::", Vec::new()),
        (
            "super::",
            // `super` of `a::b` (a file) is `a`; of `a::b` written as `a/b/mod.rs` it is `a` as well.
            module[..module.len().saturating_sub(1)].to_vec(),
        ),
        (
            "self::",
            if is_dir_module {
                module.to_vec()
            } else {
                module[..module.len().saturating_sub(1)].to_vec()
            },
        ),
    ] {
        let mut rest = code.as_str();
        while let Some(at) = rest.find(prefix) {
            let before = rest[..at].chars().last();
            rest = &rest[at + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            for path in expand(rest) {
                let mut full = base.clone();
                full.extend(path);
                found.push(full);
            }
        }
    }
    found
}

/// The paths at the start of `text`: `a::b::C` → [[a, b, C]]; `a::{b, c::D}` → [[a, b], [a, c, D]].
fn expand(text: &str) -> Vec<Vec<String>> {
    let mut words = Vec::new();
    let mut rest = text;
    loop {
        let word: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if word.is_empty() {
            break;
        }
        rest = &rest[word.len()..];
        words.push(word);
        if let Some(r) = rest.strip_prefix("::") {
            rest = r;
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                return group[..end]
                    .split(',')
                    .flat_map(|item| expand(item.trim()))
                    .map(|tail| words.iter().cloned().chain(tail).collect())
                    .collect();
            }
        } else {
            break;
        }
    }
    vec![words]
}

#[test]
fn no_module_imports_one_above_it_and_no_modules_import_each_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    sources(&root.join("src"), &mut files);
    sources(&root.join("passes"), &mut files);
    files.retain(|f| !f.starts_with(root.join("src/onnx/generated")));
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| {
            let mut m = module_of(root, f);
            if m.first().is_some_and(|p| p == "passes") || f.starts_with(root.join("passes")) {
                m = std::iter::once("passes".to_string())
                    .chain(
                        f.strip_prefix(root.join("passes"))
                            .unwrap()
                            .with_extension("")
                            .components()
                            .map(|c| c.as_os_str().to_string_lossy().into_owned())
                            .filter(|p| p != "mod"),
                    )
                    .collect();
            }
            (m, f.clone())
        })
        .collect();
    // The deepest known module a path names.
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| modules.contains_key(m))
    };
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (module, file) in &modules {
        let text = std::fs::read_to_string(file).unwrap();
        let is_dir_module = file.file_name().is_some_and(|n| n == "mod.rs");
        for path in referenced(&text, module, is_dir_module) {
            let Some(target) = resolve(&path) else {
                continue;
            };
            // A module naming its own items or its submodules is no import.
            if target.starts_with(module) || module.is_empty() {
                continue;
            }
            let (from, to) = (&module[0], &target[0]);
            if let (Some(a), Some(b)) = (layer_of(from), layer_of(to))
                && b > a
            {
                wrong.push(format!(
                    "{} imports {} (layer {b} above its {a})",
                    module.join("::"),
                    target.join("::")
                ));
            }
            edges.entry(module.clone()).or_default().insert(target);
        }
    }
    // Cycles between modules: one depth-first search per module, over edges between distinct modules that
    // are not each other's ancestors (a parent naming its child is how Rust declares it).
    let related = |a: &Vec<String>, b: &Vec<String>| a.starts_with(b) || b.starts_with(a);
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((m, path)) = stack.pop() {
            for next in edges.get(&m).into_iter().flatten() {
                if related(&m, next) {
                    continue;
                }
                if next == start {
                    let names: Vec<String> = path.iter().map(|p| p.join("::")).collect();
                    wrong.push(format!(
                        "cycle: {} -> {}",
                        names.join(" -> "),
                        start.join("::")
                    ));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

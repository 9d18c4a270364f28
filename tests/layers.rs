//! The modules of `src/` form no import circle (issue 20): each top-level module (a file or a
//! folder of `src/`) may use another only if that one does not, directly or through others, use
//! it back; and the same holds for the files inside each folder. The graph is read from the
//! source text (`crate::a`, `use crate::{a, b::c}`, `super::x`; a module's `#[cfg(test)] mod`
//! is left out), so the check needs no build of its own and runs in CI with the other tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The `crate::…` paths a file names: the first segment, and the second when present.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        // `wagate_crate::` or `my_crate::` are other names, not this crate.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        out.extend(paths_at(rest));
    }
    out
}

/// Paths starting at `s` (just after `crate::` or `super::`): `a::b`, or a `{…}` group.
fn paths_at(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(group) = s.strip_prefix('{') {
        let mut depth = 1;
        let mut end = group.len();
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = &group[..end];
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&inner[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&inner[start..]);
        return items
            .into_iter()
            .flat_map(paths_at)
            .filter(|p| !p.is_empty())
            .collect();
    }
    let mut segments = Vec::new();
    let mut s = s;
    loop {
        let ident: String = s
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        segments.push(ident.clone());
        s = &s[ident.len()..];
        match s.strip_prefix("::") {
            Some(next) if segments.len() < 2 && !next.trim_start().starts_with('{') => s = next,
            Some(next) if segments.len() < 2 => {
                // `a::{b, c}`: the first segment, then each item of the group as the second.
                return paths_at(next)
                    .into_iter()
                    .map(|p| {
                        let mut full = segments.clone();
                        full.extend(p.into_iter().take(1));
                        full
                    })
                    .collect();
            }
            _ => break,
        }
    }
    if segments.is_empty() {
        Vec::new()
    } else {
        vec![segments]
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file is: its path under `src/` without `.rs`, `mod.rs` naming its folder.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src/");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// Any cycle in `graph`, as the list of its nodes.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let at = stack.iter().position(|n| n == node).unwrap_or(0);
                let mut cycle = stack[at..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, stack) {
                return Some(c);
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

fn graphs() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // "" is the graph of the top-level modules; "store" the graph of the files in src/store/.
    let mut graphs: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in files {
        let module = module_of(&src, &file);
        let Some(top) = module.first().cloned() else {
            continue;
        };
        if top == "lib" || top == "main" {
            continue;
        }
        let whole = std::fs::read_to_string(&file).expect("read a source file");
        // A module's unit tests may check it against a sibling; only the code itself counts.
        let text = whole
            .find("#[cfg(test)]\nmod ")
            .map_or(whole.as_str(), |at| &whole[..at]);
        let mut uses = crate_paths(text);
        // `super::x` inside a folder's file names a sibling in the same folder.
        if module.len() == 2 {
            let mut rest = text;
            while let Some(i) = rest.find("super::") {
                rest = &rest[i + "super::".len()..];
                for p in paths_at(rest) {
                    let mut full = vec![top.clone()];
                    full.extend(p.into_iter().take(1));
                    uses.push(full);
                }
            }
        }
        let top_graph = graphs.entry(String::new()).or_default();
        top_graph.entry(top.clone()).or_default();
        for used in &uses {
            if used[0] != top {
                top_graph
                    .entry(top.clone())
                    .or_default()
                    .insert(used[0].clone());
            }
        }
        if module.len() == 2 {
            let inner = graphs.entry(top.clone()).or_default();
            inner.entry(module[1].clone()).or_default();
            for used in &uses {
                if used[0] == top && used.len() == 2 && used[1] != module[1] {
                    inner
                        .entry(module[1].clone())
                        .or_default()
                        .insert(used[1].clone());
                }
            }
        }
    }
    // Keep only edges to modules that exist (a path's second segment may be an item).
    for graph in graphs.values_mut() {
        let nodes: BTreeSet<String> = graph.keys().cloned().collect();
        for edges in graph.values_mut() {
            edges.retain(|e| nodes.contains(e));
        }
    }
    graphs
}

#[test]
fn src_modules_form_no_import_circle() {
    let graphs = graphs();
    assert!(graphs.get("").is_some_and(|g| g.len() > 5), "read src/");
    let circles: Vec<String> = graphs
        .iter()
        .filter_map(|(folder, graph)| {
            let cycle = find_cycle(graph)?;
            let place = if folder.is_empty() {
                "src/".to_string()
            } else {
                format!("src/{folder}/")
            };
            Some(format!("{place}: {}", cycle.join(" -> ")))
        })
        .collect();
    assert!(
        circles.is_empty(),
        "modules import each other in a circle:\n{}\nmove what both need into the lower one, or \
         hand the higher one's work in as a narrow handle (docs/ARCHITECTURE.md, 'Layers')",
        circles.join("\n")
    );
}

#[test]
fn the_reader_sees_uses() {
    let paths = crate_paths(
        "use crate::{app::{App, Who}, store::Store}; let x = crate::model::client::X; \
         wagate_crate::no;",
    );
    let firsts: Vec<_> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        firsts,
        ["app::App", "app::Who", "store::Store", "model::client"]
    );
}

#[test]
fn sql_statements_live_in_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let outside: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("store")))
        .filter(|f| {
            let text = std::fs::read_to_string(f).expect("read a source file");
            ["sqlx::query", "query_as(", "query_scalar("]
                .iter()
                .any(|needle| text.contains(needle))
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(outside.is_empty(), "SQL outside src/store/: {outside:?}");
}

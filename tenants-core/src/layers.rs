//! The modules form layers, each using only those below it (the crate layout): names and
//! specs, the renderer, the catalog reader, the comparison, the planner, then the runtime.
//! This test reads the sources and fails on any `crate::` path that points up or sideways.

use std::collections::BTreeSet;
use std::path::Path;

/// The layer of a top-level module; modules not listed are the runtime and integrations at
/// the top, which may use every layer below them.
fn layer(module: &str) -> u8 {
    match module {
        "registry" => 0,
        "tenant" => 1,
        "config" | "spec" => 2,
        "policy" => 3,
        "catalog" => 4,
        "verify" => 5,
        "plan" | "error" | "scope" | "footprint" => 6,
        "transaction" => 7,
        _ => 10,
    }
}

/// The modules a source text names through `crate::` outside comments.
fn uses(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // `use crate::{a::X, b};`
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .collect(),
                None => vec![rest],
            };
            for name in names {
                let module: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !module.is_empty() {
                    used.insert(module);
                }
            }
        }
    }
    used
}

fn visit(dir: &Path, top: Option<&str>, found: &mut Vec<(String, String)>) {
    let entries = std::fs::read_dir(dir).expect("read src");
    for entry in entries {
        let path = entry.expect("entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let module = top.map_or(name.clone(), str::to_string);
        if path.is_dir() {
            visit(&path, Some(&module), found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("read source");
            for used in uses(&text) {
                found.push((module.clone(), used));
            }
        }
    }
}

/// The module behind each name `lib.rs` re-exports (`pub use config::{Config, ..}`), so
/// that `crate::Config` counts as a use of `config`.
fn reexports(lib: &str) -> Vec<(String, String)> {
    let mut names = Vec::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.trim_end_matches(';').split_once("::") else {
            continue;
        };
        for item in items.trim_matches(|c| c == '{' || c == '}').split(',') {
            names.push((item.trim().to_string(), module.to_string()));
        }
    }
    names
}

#[test]
fn every_module_uses_only_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("read lib.rs");
    let reexported = reexports(&lib);
    let mut found = Vec::new();
    visit(&src, None, &mut found);
    for (_, used) in &mut found {
        if let Some((_, module)) = reexported.iter().find(|(name, _)| name == used) {
            *used = module.clone();
        }
    }
    let upward: Vec<String> = found
        .iter()
        .filter(|(module, used)| {
            module != used && module != "lib" && layer(used) >= layer(module) && layer(module) < 10
        })
        .map(|(module, used)| format!("{module} uses {used}"))
        .collect();
    assert!(
        upward.is_empty(),
        "modules using a layer not below them: {upward:?}"
    );
}

#[test]
fn the_reader_sees_grouped_and_plain_paths() {
    let used = uses(
        "use crate::{config::Config, spec::X};\nlet x = crate::verify::compare();\n// crate::plan in a comment",
    );
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        ["config", "spec", "verify"]
    );
}

//! The layering of DESIGN.md ("Layers") and README.md, checked on the
//! source: every `crate::<module>` path in a module's code (comments aside)
//! must name a module that module may use. The table below is the rule; it
//! is itself ordered so that each module may use only modules listed
//! before it, so the modules form no import cycle.
//!
//! A grep rather than `cargo modules`: nothing to install, and a failure
//! names the file, the line and the forbidden edge.

use std::fs;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and what it may import, lowest first.
const LAYERS: &[(&str, &[&str])] = &[
    // Frames, masking, UTF-8, close codes, the accept key: pure RFC 6455.
    ("protocol", &[]),
    // Leaf types every layer may use.
    ("wire", &[]),
    ("topic", &[]),
    ("tick", &["protocol", "topic"]),
    // Read by all, importing none of the layers.
    ("config", &["wire", "topic"]),
    ("metrics", &[]),
    // The pure HTTP layer and the topic layer, side by side.
    (
        "http",
        &["protocol", "wire", "topic", "tick", "config", "metrics"],
    ),
    (
        "broker",
        &["protocol", "wire", "topic", "tick", "config", "metrics"],
    ),
    // Cluster mode's engine: NATS on its own thread, feeding the topic table.
    (
        "cluster",
        &[
            "protocol", "wire", "topic", "tick", "config", "metrics", "broker",
        ],
    ),
    // Sockets: everything above, but the configuration only in settings.rs.
    (
        "net",
        &[
            "protocol", "wire", "topic", "tick", "config", "metrics", "http", "broker",
        ],
    ),
    // Wiring, then the command line on top.
    (
        "server",
        &[
            "protocol", "wire", "topic", "tick", "config", "metrics", "http", "broker", "cluster",
            "net",
        ],
    ),
    ("cli", &["config", "server"]),
];

/// Files of a layer that alone may use a module the layer may use.
const ONLY_FROM: &[(&str, &str, &str)] = &[("net", "config", "src/net/settings.rs")];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`None`: the crate
/// root, the binary and the load generator, which sit on top).
fn module_of(path: &Path) -> Option<String> {
    let relative = path.strip_prefix("src").ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.trim_end_matches(".rs");
    (!matches!(module, "lib" | "main" | "bin")).then(|| module.to_owned())
}

/// The modules a line's code names as `crate::<module>`.
fn crate_paths(line: &str) -> Vec<&str> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        // `crate::` itself, not the tail of `some_crate::`.
        .filter(|(at, _)| !code[..*at].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        .map(|(at, _)| {
            let rest = &code[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn the_layer_table_is_ordered_so_no_cycle_is_possible() {
    for (i, (layer, may_use)) in LAYERS.iter().enumerate() {
        for used in *may_use {
            let at = LAYERS.iter().position(|(l, _)| l == used);
            assert!(
                at.is_some_and(|at| at < i),
                "{layer} may use {used}, which is not listed before it"
            );
        }
    }
}

#[test]
fn every_import_points_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::env::set_current_dir(root).expect("cd to the crate");
    let mut files = Vec::new();
    rust_files(Path::new("src"), &mut files);
    let mut violations = Vec::new();
    let mut modules_seen = Vec::new();
    for file in &files {
        let Some(module) = module_of(file) else {
            continue;
        };
        modules_seen.push(module.clone());
        let Some((_, may_use)) = LAYERS.iter().find(|(l, _)| *l == module) else {
            violations.push(format!(
                "{}: module {module} is not in the layer table",
                file.display()
            ));
            continue;
        };
        let text = fs::read_to_string(file).expect("read source");
        for (number, line) in text.lines().enumerate() {
            for used in crate_paths(line) {
                if used == module {
                    continue;
                }
                let allowed = may_use.contains(&used);
                let restricted = ONLY_FROM
                    .iter()
                    .find(|(layer, target, _)| *layer == module && *target == used);
                let from_the_one_file =
                    restricted.is_none_or(|(_, _, only)| Path::new(only) == file.as_path());
                if !(allowed && from_the_one_file) {
                    violations.push(format!(
                        "{}:{}: {module} -> {used}: {}",
                        file.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layering (DESIGN.md, \"Layers\"):\n{}",
        violations.join("\n")
    );
    // The check looked at every layer (a renamed directory would make it vacuous).
    for (layer, _) in LAYERS {
        assert!(
            modules_seen.iter().any(|m| m == layer),
            "no file of {layer} was read"
        );
    }
}

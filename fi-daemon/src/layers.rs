//! The daemon's modules in layers, checked against their `crate::` paths: a module may use
//! the modules of lower layers only, so there is no import circle and nothing points back
//! up. docs/ARCHITECTURE.md draws the same table; `cargo test -p fi-daemon layers` checks it.

/// Bottom first. A module not listed here fails the test: place it when you add it.
const LAYERS: &[&[&str]] = &[
    // The machine, the kernel object, plain values.
    &[
        "cgroup_fs",
        "clock",
        "config",
        "ebpf_object",
        "events",
        "instance",
        "links",
        "observed",
    ],
    // What is built on the machine's own interfaces: fi's netlink filters.
    &["tc_filters"],
    // The data plane and what only reads the machine.
    &["dataplane", "cut", "targets", "graph", "store"],
    // State services.
    &["rules", "delay", "requests", "heartbeat"],
    // The core that owns them.
    &["control"],
    // Services and tasks built on the core.
    &["explore", "pump", "interfaces"],
    // The services together, then the transport.
    &["daemon"],
    &["server"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// The top-level modules a source text names through `crate::`, comments left out.
fn used_modules(source: &str) -> Vec<String> {
    used_through(source, "crate::")
}

/// The names a source text takes through `prefix` (`crate::`, `super::`), comments left
/// out.
fn used_through(source: &str, prefix: &str) -> Vec<String> {
    let code: String = source
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find(prefix) {
        rest = &rest[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a::b, c::{d, e}}`: the first name of each top-level item.
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &group[i..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_ascii_alphabetic() || c == '_') => {
                        found.push(identifier(&group[i..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(identifier(rest));
        }
    }
    found
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir)
            .expect("the source directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn modules_use_only_lower_layers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut wrong = Vec::new();
        for file in files {
            let relative = file.strip_prefix(&src).expect("under src");
            let module = relative
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .map(|name| name.trim_end_matches(".rs").to_owned())
                .expect("a module name");
            if ["lib", "bin", "layers"].contains(&module.as_str()) {
                continue;
            }
            let Some(own) = layer_of(&module) else {
                wrong.push(format!("{module}: not in LAYERS (src/layers.rs)"));
                continue;
            };
            let text = std::fs::read_to_string(&file).expect("a source file");
            for used in used_modules(&text) {
                if used == module || used.is_empty() {
                    continue;
                }
                match layer_of(&used) {
                    Some(layer) if layer < own => {}
                    _ => wrong.push(format!("{}: uses crate::{used}", relative.display())),
                }
            }
        }
        wrong.sort();
        wrong.dedup();
        assert!(
            wrong.is_empty(),
            "imports that point up or sideways:\n{}",
            wrong.join("\n")
        );
    }

    /// Inside a module directory (`explore/`, `server/`...), the files use each other
    /// through `super::` without a circle.
    #[test]
    fn sibling_modules_form_no_circle() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut circles = Vec::new();
        for dir in std::fs::read_dir(&src).expect("src").flatten() {
            let dir = dir.path();
            if !dir.is_dir() || dir.ends_with("bin") {
                continue;
            }
            let mut edges: Vec<(String, Vec<String>)> = Vec::new();
            for file in std::fs::read_dir(&dir)
                .expect("a module directory")
                .flatten()
            {
                let path = file.path();
                let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
                    continue;
                };
                if path.extension().is_none_or(|e| e != "rs") || name == "mod" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("a source file");
                let mut uses = used_through(&text, "super::");
                uses.retain(|u| u != name && u != "super" && u != "tests");
                edges.push((name.to_owned(), uses));
            }
            // Depth-first search for a path back to where it started.
            for (start, _) in &edges {
                let mut stack = vec![(start.clone(), vec![start.clone()])];
                while let Some((at, path)) = stack.pop() {
                    let next = edges.iter().find(|(n, _)| *n == at).map(|(_, u)| u);
                    for used in next.into_iter().flatten() {
                        if used == start {
                            circles.push(format!(
                                "{}: {} -> {used}",
                                dir.display(),
                                path.join(" -> ")
                            ));
                        } else if !path.contains(used) {
                            let mut longer = path.clone();
                            longer.push(used.clone());
                            stack.push((used.clone(), longer));
                        }
                    }
                }
            }
        }
        assert!(circles.is_empty(), "circles:\n{}", circles.join("\n"));
    }

    #[test]
    fn the_scanner_reads_grouped_and_plain_paths() {
        let text = "use crate::{a::B, c::{d, e}, f};\nlet x = crate::g::h(); // crate::comment\n";
        assert_eq!(used_modules(text), ["a", "c", "f", "g"]);
    }
}

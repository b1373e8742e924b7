//! The layout a newcomer walks: `src/lib.rs` lists the top-level modules
//! bottom to top, and no module uses one listed after it (arrows point
//! down only, so there is no import circle); no source file grows past 600
//! lines, and each binary's `main` file stays thin. Read from the source
//! itself, as `python3 ../shared/tools/module-graph.py src` does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;
const MAX_MAIN_LINES: usize = 150;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `pub mod NAME;` lines of `src/lib.rs`, in order.
fn layers() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("pub mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules `text` names through `crate::` (also inside
/// `use crate::{a::X, b}`), leaving out comments and test code.
fn uses(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    let code: String = code
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each path at depth 0 of the group.
            let (mut depth, mut first) = (0, true);
            let mut j = 0;
            let bytes = group.as_bytes();
            while j < bytes.len() {
                match bytes[j] {
                    b'{' => {
                        depth += 1;
                        first = true;
                    }
                    b'}' if depth == 0 => break,
                    b'}' => depth -= 1,
                    b',' => first = true,
                    b':' => first = false,
                    c if c.is_ascii_lowercase() || c == b'_' => {
                        let name = ident(&group[j..]);
                        if depth == 0 && first {
                            found.insert(name.clone());
                        }
                        first = false;
                        j += name.len();
                        continue;
                    }
                    _ => {}
                }
                j += 1;
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let order = layers();
    assert!(order.len() > 10, "src/lib.rs lists {order:?}");
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut upward = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src()).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        let Some(here) = order.iter().position(|m| *m == top) else {
            continue; // lib.rs and bin/
        };
        for used in uses(&std::fs::read_to_string(&file).unwrap()) {
            if let Some(there) = order.iter().position(|m| *m == used) {
                if there > here {
                    upward.push(format!("{} uses {used}", rel.display()));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "arrows must point down (src/lib.rs lists the layers bottom to top): {upward:#?}"
    );
}

#[test]
fn no_file_outgrows_one_head() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for file in files {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        let main = file.parent().is_some_and(|p| p.ends_with("bin"));
        let max = if main { MAX_MAIN_LINES } else { MAX_LINES };
        assert!(
            lines <= max,
            "{} has {lines} lines (at most {max})",
            file.display()
        );
    }
}

#[test]
fn the_use_scanner_sees_grouped_and_plain_uses() {
    let text = "use crate::channel::ChannelArch;\nuse crate::{manifest::{self, X}, time};\n\
                // crate::boot in a comment\nfn f() { crate::text::printable(\"\"); }\n\
                #[cfg(test)]\nuse crate::provider;\n";
    let got: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(got, ["channel", "manifest", "text", "time"]);
}

//! The maths lives in `docs/` (issue 13, item 6): a clone has no `shared/SPEC.md`, so nothing in
//! the repository may send a reader there, and every `docs/<page>.md` the code, the README or a
//! script cites must exist and be listed in the docs index.

use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TREES: &[&str] = &["src", "kernels", "tests", "benches", "bench", "examples", "scripts", ".ci"];
const SUFFIXES: &[&str] = &["rs", "cu", "cuh", "hpp", "h", "py", "sh", "md", "toml"];

fn source_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| SUFFIXES.contains(&e)) {
                out.push(path);
            }
        }
    }
    let mut files = vec![Path::new(ROOT).join("README.md")];
    for tree in TREES {
        walk(&Path::new(ROOT).join(tree), &mut files);
    }
    // The rewriting script names the old form on purpose, and so does this file.
    files.retain(|p| !p.ends_with("scripts/spec_to_docs.py") && !p.ends_with("tests/docs_cited.rs"));
    assert!(files.len() > 50, "found only {} source files under {ROOT}", files.len());
    files
}

/// `docs/<name>.md` citations in `text`.
fn cited_pages(text: &str) -> Vec<String> {
    let mut pages = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("docs/") {
        let tail = &rest[at + 5..];
        let name: String = tail.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
        if !name.is_empty() && tail[name.len()..].starts_with(".md") {
            pages.push(name);
        }
        rest = tail;
    }
    pages
}

#[test]
fn nothing_cites_the_spec_outside_the_repository() {
    let old_form = format!("SPEC {}", '§');
    let offenders: Vec<String> = source_files()
        .iter()
        .filter_map(|p| {
            let text = std::fs::read_to_string(p).ok()?;
            let n = text.matches(&old_form).count();
            (n > 0).then(|| format!("{} ({n})", p.strip_prefix(ROOT).unwrap().display()))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "these files still cite {old_form}N, which a clone does not have; run `python3 scripts/spec_to_docs.py`: {offenders:?}"
    );
}

#[test]
fn every_cited_docs_page_exists_and_is_indexed() {
    let index = std::fs::read_to_string(Path::new(ROOT).join("docs/README.md")).unwrap();
    let mut missing = Vec::new();
    for p in source_files() {
        let Ok(text) = std::fs::read_to_string(&p) else { continue };
        for page in cited_pages(&text).into_iter().filter(|p| p != "README") {
            let file = Path::new(ROOT).join("docs").join(format!("{page}.md"));
            if !file.is_file() || !index.contains(&format!("({page}.md)")) {
                missing.push(format!("docs/{page}.md (cited in {})", p.strip_prefix(ROOT).unwrap().display()));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(missing.is_empty(), "cited docs pages that do not exist or are not in docs/README.md: {missing:?}");
}

#[test]
fn citation_scanner_finds_pages() {
    assert_eq!(cited_pages("see docs/steering.md and docs/writing-a-reward.md, not docs/x"), ["steering", "writing-a-reward"]);
}

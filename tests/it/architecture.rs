//! Keeps ARCHITECTURE.md's "Where each APNs rule is enforced" tables true: every file they
//! name exists under `src/`, and every item named after a file (`Type::method`, a function,
//! a const) appears in that file. A rename that forgets the table fails here, naming the row.

use std::path::Path;

/// The document, read when this test binary is compiled (a change rebuilds it).
const ARCHITECTURE: &str = include_str!("../../ARCHITECTURE.md");

/// The heading of the part that holds the tables.
const SECTION: &str = "## Where each APNs rule is enforced";

/// The backticked spans of `cell`, in order.
fn spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// True when `word` occurs in `text` as a whole identifier.
fn has_identifier(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + word.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

/// The problems of one table row's "where" cell: files that do not exist and items missing
/// from the file named before them.
fn check_where(cell: &str, src: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut file: Option<(String, String)> = None;
    for span in spans(cell) {
        if span.ends_with(".rs") {
            match std::fs::read_to_string(src.join(span)) {
                Ok(text) => file = Some((span.to_owned(), text)),
                Err(e) => {
                    problems.push(format!("src/{span}: {e}"));
                    file = None;
                }
            }
            continue;
        }
        let Some((name, text)) = &file else { continue };
        // Only plain paths name code; spans like `08` or `{"reason"}` are wire values.
        let path = span.trim_end_matches("()");
        let is_path = path
            .split("::")
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            && path.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
        if !is_path {
            continue;
        }
        for part in path.split("::") {
            if !has_identifier(text, part) {
                problems.push(format!("src/{name} has no `{part}` (from `{span}`)"));
            }
        }
    }
    problems
}

#[test]
fn every_rule_names_code_that_exists() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let section = ARCHITECTURE
        .split_once(SECTION)
        .expect("ARCHITECTURE.md has the rule tables")
        .1;
    let mut rows = 0;
    let mut problems = Vec::new();
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').collect();
        let Some(cell) = cells.get(cells.len().saturating_sub(2)) else {
            continue;
        };
        if cell.trim() == "where" || cell.trim_start().starts_with("---") {
            continue;
        }
        rows += 1;
        for p in check_where(cell, &src) {
            problems.push(format!("{}: {p}", cells[1].trim()));
        }
    }
    // The four tables hold about a hundred rules; far fewer means the parser lost them.
    assert!(rows > 80, "only {rows} rule rows found in ARCHITECTURE.md");
    assert!(
        problems.is_empty(),
        "ARCHITECTURE.md names code that is not there:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_check_fails_on_a_missing_item_or_file() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert!(check_where(" `hub/state.rs`: `State::route` ", &src).is_empty());
    let missing = check_where(" `hub/state.rs`: `State::no_such_rule` ", &src);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(missing[0].contains("no_such_rule"));
    assert_eq!(
        check_where(" `hub/nowhere.rs`: `State::route` ", &src).len(),
        1
    );
    // Wire values and prose are not code.
    assert!(check_where(" `08`, `{\"reason\"}`, `apns-id` ", &src).is_empty());
}

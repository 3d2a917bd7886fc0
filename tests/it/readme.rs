//! The README's "Using it from Rust tests" example is `tests/readme_example.rs`, which
//! `cargo test` compiles and runs; this test fails when the README's `rust` block and that
//! file differ in anything but trailing whitespace.

/// The README, read when this test binary is compiled (a change rebuilds it).
const README: &str = include_str!("../../README.md");

/// The example as a test file.
const EXAMPLE: &str = include_str!("../readme_example.rs");

/// The section's heading in the README.
const SECTION: &str = "## Using it from Rust tests";

/// The lines of the section under [`SECTION`], up to the next `## ` heading.
fn section(readme: &str) -> Vec<&str> {
    readme
        .lines()
        .skip_while(|l| l.trim_end() != SECTION)
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .collect()
}

/// The lines of the first fenced block of `lang` in `lines`.
fn fenced<'a>(lines: &[&'a str], lang: &str) -> Option<Vec<&'a str>> {
    let open = format!("```{lang}");
    let start = lines.iter().position(|l| l.trim_end() == open)? + 1;
    let len = lines[start..].iter().position(|l| l.trim_end() == "```")?;
    Some(lines[start..start + len].to_vec())
}

/// `lines` without trailing whitespace on each line and without blank lines at the end.
fn trimmed<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = lines.into_iter().map(str::trim_end).collect();
    while out.last() == Some(&"") {
        out.pop();
    }
    out
}

#[test]
fn the_readme_example_is_tests_readme_example_rs() {
    let section = section(README);
    assert!(!section.is_empty(), "README.md has no section {SECTION:?}");
    let block = trimmed(fenced(&section, "rust").expect("a ```rust block in the section"));
    let file = trimmed(EXAMPLE.lines());
    if let Some(i) = (0..block.len().max(file.len())).find(|&i| block.get(i) != file.get(i)) {
        panic!(
            "README.md ({SECTION}) and tests/readme_example.rs differ at line {} of the \
             example:\n  README: {:?}\n  file:   {:?}\nCopy the file into the README (or the \
             other way round) so that the README shows code that compiles.",
            i + 1,
            block.get(i),
            file.get(i)
        );
    }
}

#[test]
fn the_readme_names_the_dev_dependencies_the_example_needs() {
    let section = section(README);
    let toml = fenced(&section, "toml").expect("a ```toml block in the section");
    assert_eq!(
        toml.first().map(|l| l.trim_end()),
        Some("[dev-dependencies]")
    );
    assert!(
        toml.iter().any(|l| l.starts_with("apns-sim = ")),
        "{toml:?}"
    );
    let tokio = toml
        .iter()
        .find(|l| l.starts_with("tokio = "))
        .expect("a tokio line");
    // #[tokio::test] needs the macros and a runtime; the example's waits need time.
    for feature in ["\"macros\"", "\"rt\"", "\"time\""] {
        assert!(tokio.contains(feature), "tokio without {feature}: {tokio}");
    }
}

#[test]
fn the_comparison_sees_a_difference() {
    let readme = "# x\n## Using it from Rust tests\n\n```rust\nfn a() {}   \n```\n## Next\n```rust\nfn b() {}\n```\n";
    let block = trimmed(fenced(&section(readme), "rust").unwrap());
    assert_eq!(block, ["fn a() {}"]);
    assert_eq!(block, trimmed("fn a() {}\n\n".lines()));
    assert_ne!(block, trimmed("fn a() { }\n".lines()));
}

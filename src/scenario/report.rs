//! What a run found, for people and for programs: the timeline and a verdict per
//! expectation of each file, written as text (the CLI's output), JSON (`--json`) and JUnit
//! XML (`--junit`: one `testsuite` per file, one `testcase` per expectation, each failure
//! with the expected and the seen). JUnit is written with quick-junit, which CI systems'
//! own tooling (nextest) uses, so the XML is what their parsers read.

use serde::Serialize;

/// One line of a run's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineLine {
    /// Milliseconds since the run started (wall time).
    pub at_ms: u64,
    /// The step's name.
    pub step: String,
    /// What happened, in words.
    pub text: String,
    /// False when the step could not do what it says (its verdict fails too).
    pub ok: bool,
}

/// The verdict on one expectation (or on a step that could not run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The expectation's name.
    pub name: String,
    /// Its line in the file.
    pub line: usize,
    /// Whether it holds.
    pub passed: bool,
    /// What was expected, in words.
    pub expected: String,
    /// What was seen, in words.
    pub seen: String,
    /// On failure, the records that came closest (shown notifications, answers, log
    /// entries), at most [`MAX_CLOSEST`].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub closest: Vec<String>,
}

/// The most records a failed verdict quotes: enough to see the near miss, short enough to
/// read.
pub const MAX_CLOSEST: usize = 5;

/// One file's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The file, as named on the command line.
    pub file: String,
    /// The scenario's name (its `name`, else the file's).
    pub name: String,
    /// What happened, step by step.
    pub timeline: Vec<TimelineLine>,
    /// One per expectation, in file order, then one per step that failed to run.
    pub verdicts: Vec<Verdict>,
    /// Why the run could not start or finish (the file is invalid, the simulator failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the run took, ms.
    pub duration_ms: u64,
}

impl FileReport {
    /// Every verdict holds and nothing stopped the run.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.verdicts.iter().all(|v| v.passed)
    }

    /// A file that could not run, with the reason.
    pub fn failed(file: &str, error: String) -> Self {
        FileReport {
            file: file.to_owned(),
            name: file.to_owned(),
            timeline: Vec::new(),
            verdicts: Vec::new(),
            error: Some(error),
            duration_ms: 0,
        }
    }
}

impl Verdict {
    /// The verdict as the CLI prints it: `PASS name` or `FAIL name (line N)` with the
    /// expected, the seen and the closest records indented below.
    pub fn text(&self) -> String {
        if self.passed {
            return format!("  PASS {}: {}", self.name, self.seen);
        }
        let mut out = format!(
            "  FAIL {} (line {})\n       expected: {}\n       seen:     {}",
            self.name, self.line, self.expected, self.seen
        );
        for record in &self.closest {
            out.push_str(&format!("\n       closest:  {record}"));
        }
        out
    }
}

/// The `--json` report: `{"passed": bool, "files": [FileReport…]}`.
pub fn json(reports: &[FileReport]) -> serde_json::Value {
    serde_json::json!({
        "passed": reports.iter().all(FileReport::passed),
        "files": reports,
    })
}

/// The `--junit` report: one test suite per file, one test case per verdict. A file that
/// could not run is a suite with one errored case saying why.
pub fn junit(reports: &[FileReport]) -> Result<String, quick_junit::SerializeError> {
    use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

    let mut report = Report::new("apns-sim scenarios");
    for file in reports {
        let mut suite = TestSuite::new(file.name.as_str());
        suite.set_time(std::time::Duration::from_millis(file.duration_ms));
        if let Some(error) = &file.error {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
            status.set_message(error.as_str());
            let mut case = TestCase::new("run", status);
            case.set_classname(file.file.as_str());
            suite.add_test_case(case);
        }
        for verdict in &file.verdicts {
            let status = if verdict.passed {
                TestCaseStatus::success()
            } else {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                status.set_message(format!(
                    "expected {}; seen {}",
                    verdict.expected, verdict.seen
                ));
                let mut description = format!(
                    "line {}\nexpected: {}\nseen: {}",
                    verdict.line, verdict.expected, verdict.seen
                );
                for record in &verdict.closest {
                    description.push_str(&format!("\nclosest: {record}"));
                }
                status.set_description(description);
                status
            };
            let mut case = TestCase::new(verdict.name.as_str(), status);
            case.set_classname(file.file.as_str());
            suite.add_test_case(case);
        }
        let out: String = file
            .timeline
            .iter()
            .map(|l| format!("+{}ms {}: {}\n", l.at_ms, l.step, l.text))
            .collect();
        suite.set_system_out(out);
        report.add_test_suite(suite);
    }
    report.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(passed: bool) -> FileReport {
        FileReport {
            file: "scenarios/x.toml".into(),
            name: "x <&>".into(),
            timeline: vec![TimelineLine {
                at_ms: 3,
                step: "push-1".into(),
                text: "http2 → A: 200".into(),
                ok: true,
            }],
            verdicts: vec![Verdict {
                name: "A shows".into(),
                line: 12,
                passed,
                expected: "1 notification".into(),
                seen: "0 \"notifications\"".into(),
                closest: vec!["none".into()],
            }],
            error: None,
            duration_ms: 40,
        }
    }

    #[test]
    fn junit_reads_back_with_its_failure() {
        let xml = junit(&[sample(false), sample(true)]).unwrap();
        let back = quick_junit::Report::deserialize_from_str(&xml).unwrap();
        assert_eq!(back.test_suites.len(), 2);
        assert_eq!(back.failures, 1);
        let case = &back.test_suites[0].test_cases[0];
        assert_eq!(case.name.as_str(), "A shows");
        assert!(
            xml.contains("expected 1 notification; seen 0 &quot;notifications&quot;"),
            "{xml}"
        );
    }

    #[test]
    fn json_and_text_say_expected_and_seen() {
        let report = json(&[sample(false)]);
        assert_eq!(report["passed"], false);
        assert_eq!(
            report["files"][0]["verdicts"][0]["seen"],
            "0 \"notifications\""
        );
        let text = sample(false).verdicts[0].text();
        assert!(text.contains("expected: 1 notification"), "{text}");
        assert!(text.contains("closest:  none"), "{text}");
        assert!(sample(true).passed());
    }
}

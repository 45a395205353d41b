//! Student notebooks generated from solution sources (`hw9 release`).
//!
//! A solution source (`notebooks/solutions/<name>.ipynb`) holds the answers between lines
//! `// BEGIN SOLUTION` and `// END SOLUTION` (nbgrader's convention, in Rust comments). Text after
//! `BEGIN SOLUTION` is the hint. In the student notebook (`notebooks/<name>.ipynb`):
//! - in a code cell the region becomes `todo!("TODO: <hint>")` at the region's indentation, so the
//!   function around it keeps its signature and the cell still compiles;
//! - in a markdown cell (written answers) the region becomes an answer placeholder;
//! - `:dep hw9 = { path = "../.." }` becomes `{ path = ".." }` (the student notebook sits one
//!   folder up);
//! - a cell tagged `repository-only` is left out (it names what only the course's repository has:
//!   the crate's reference layers, its `hw9 summarize`, BENCHMARKS.md), and a markdown cell tagged
//!   `student-only` says in its place what the student's handout has (the tag is dropped);
//! - outputs, execution counts and timing metadata are cleared.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, Result};
use hw9_grade::spec::GradingSpec;

const BEGIN: &str = "// BEGIN SOLUTION";
const END: &str = "// END SOLUTION";
/// What a written answer becomes in the student notebook.
pub const ANSWER_PLACEHOLDER: &str = "**Your answer:** *(write it here)*";
const DEP_SOLUTION: &str = r#":dep hw9 = { path = "../.." }"#;
const DEP_STUDENT: &str = r#":dep hw9 = { path = ".." }"#;
/// A cell that only the repository's solution source has.
pub const REPOSITORY_ONLY: &str = "repository-only";
/// A markdown cell written for the student version (kept there, its tag dropped).
pub const STUDENT_ONLY: &str = "student-only";

/// A cell's tags.
fn tags_of(cell: &Value) -> Vec<String> {
    cell["metadata"]["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// A cell's source as one string (nbformat stores a string or a list of lines).
pub fn source_of(cell: &Value) -> String {
    match &cell["source"] {
        Value::String(s) => s.clone(),
        Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

/// nbformat's on-disk form of a source: a list of lines, each but the last ending in `\n`.
fn source_lines(text: &str) -> Value {
    Value::Array(text.split_inclusive('\n').map(|l| Value::String(l.to_string())).collect())
}

/// One solution region found in a cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// The hint after `BEGIN SOLUTION:` (empty when none), shown in the `todo!`.
    pub hint: String,
    /// The lines between the markers.
    pub lines: Vec<String>,
}

/// Splits a cell's text into the student text and the regions it removed. `place` renders a
/// region's replacement from its indentation and hint.
fn strip_regions(text: &str, place: impl Fn(&str, &str) -> String, at: &str) -> Result<(String, Vec<Region>)> {
    let mut out = String::new();
    let mut regions = Vec::new();
    let mut open: Option<(usize, String, String, Vec<String>)> = None; // (line, indent, hint, body)
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix(BEGIN) {
            if let Some((first, ..)) = &open {
                return Err(Error::Input(format!(
                    "{at}, line {}: BEGIN SOLUTION inside the region opened at line {}",
                    n + 1,
                    first + 1
                )));
            }
            let indent: String = line.chars().take_while(|c| c.is_whitespace() && *c != '\n').collect();
            let hint = rest.trim_start_matches([':', '-', '—']).trim().to_string();
            open = Some((n, indent, hint, Vec::new()));
        } else if trimmed.starts_with(END) {
            let Some((_, indent, hint, body)) = open.take() else {
                return Err(Error::Input(format!("{at}, line {}: END SOLUTION without BEGIN SOLUTION", n + 1)));
            };
            out.push_str(&place(&indent, &hint));
            if line.ends_with('\n') {
                out.push('\n');
            }
            regions.push(Region { hint, lines: body });
        } else if let Some((.., body)) = &mut open {
            body.push(line.trim_end_matches('\n').to_string());
        } else {
            out.push_str(line);
        }
    }
    if let Some((first, ..)) = open {
        return Err(Error::Input(format!("{at}, line {}: BEGIN SOLUTION has no END SOLUTION", first + 1)));
    }
    Ok((out, regions))
}

fn todo_line(indent: &str, hint: &str) -> String {
    let hint = if hint.is_empty() { "write this part" } else { hint };
    format!("{indent}todo!({:?})", format!("TODO: {hint}"))
}

/// The student version of one solution notebook, and the regions it removed.
pub fn release_notebook(solution: &Value, name: &str) -> Result<(Value, Vec<Region>)> {
    let mut nb = solution.clone();
    let cells = nb["cells"]
        .as_array_mut()
        .ok_or_else(|| Error::Input(format!("{name}: not a notebook (no \"cells\" list)")))?;
    for (i, cell) in cells.iter().enumerate() {
        let tags = tags_of(cell);
        if tags.iter().any(|t| t == STUDENT_ONLY)
            && (cell["cell_type"] != "markdown" || tags.iter().any(|t| t == REPOSITORY_ONLY))
        {
            return Err(Error::Input(format!(
                "{name} cell {i}: only a markdown cell can be {STUDENT_ONLY}, and not also {REPOSITORY_ONLY}"
            )));
        }
    }
    let repository_only = |c: &Value| tags_of(c).iter().any(|t| t == REPOSITORY_ONLY);
    // Errors name a cell by its place in the solution source, before any cell is left out.
    let source_index: Vec<usize> = (0..cells.len()).filter(|&i| !repository_only(&cells[i])).collect();
    cells.retain(|c| !repository_only(c));
    let mut removed = Vec::new();
    for (i, cell) in cells.iter_mut().enumerate() {
        let at = format!("{name} cell {}", source_index[i]);
        let tags = cell.get_mut("metadata").and_then(|m| m.get_mut("tags")).and_then(Value::as_array_mut);
        let no_tags_left = tags.is_some_and(|tags| {
            tags.retain(|t| t != STUDENT_ONLY);
            tags.is_empty()
        });
        if no_tags_left {
            if let Some(meta) = cell["metadata"].as_object_mut() {
                meta.remove("tags");
            }
        }
        let text = source_of(cell);
        let (text, regions) = match cell["cell_type"].as_str() {
            Some("code") => {
                let (t, r) = strip_regions(&text, todo_line, &at)?;
                (t.replace(DEP_SOLUTION, DEP_STUDENT), r)
            }
            Some("markdown") => strip_regions(&text, |indent, _| format!("{indent}{ANSWER_PLACEHOLDER}"), &at)?,
            _ => (text, Vec::new()),
        };
        removed.extend(regions);
        cell["source"] = source_lines(&text);
        if cell["cell_type"] == "code" {
            cell["outputs"] = Value::Array(Vec::new());
            cell["execution_count"] = Value::Null;
        }
        if let Some(meta) = cell["metadata"].as_object_mut() {
            meta.remove("execution");
        }
    }
    Ok((nb, removed))
}

/// Serialises a notebook the way nbformat writes it: sorted keys, one-space indent, final newline.
pub fn to_nbformat_string(nb: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b" ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    serde::Serialize::serialize(nb, &mut ser).expect("a JSON value always serialises");
    let mut s = String::from_utf8(buf).expect("serde_json writes UTF-8");
    s.push('\n');
    s
}

/// Lines of solution text that must never reach a student notebook: each substantial line of
/// each region (comments, braces and short lines left aside).
pub fn secret_lines(regions: &[Region]) -> Vec<String> {
    regions
        .iter()
        .flat_map(|r| &r.lines)
        .map(|l| l.trim().to_string())
        .filter(|l| l.len() >= 12 && !l.starts_with("//"))
        .collect()
}

/// What [`release_all`] did for one notebook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The solution source.
    pub solution: PathBuf,
    /// The student notebook written from it.
    pub student: PathBuf,
    /// Whether the student file or the grading spec differed from the generated one (and was
    /// rewritten, unless checking).
    pub changed: bool,
    /// How many solution regions became TODOs.
    pub regions: usize,
}

/// Every `*.ipynb` in `dir`, parsed, in name order.
pub fn read_notebooks(dir: &Path) -> Result<Vec<(PathBuf, Value)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ipynb"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            let nb =
                serde_json::from_str(&text).map_err(|e| Error::corrupt("notebook", path.clone(), e.to_string()))?;
            Ok((path, nb))
        })
        .collect()
}

/// Releases every `*.ipynb` in `solutions` into `out`, and each one's grading spec (its
/// `hw9.grading` metadata) into `specs/<notebook>.json`. With `check`, writes nothing and only
/// reports which files are out of date. Fails if a student notebook would contain solution text.
pub fn release_all(solutions: &Path, out: &Path, specs: &Path, check: bool) -> Result<Vec<Released>> {
    let mut done = Vec::new();
    for (path, solution) in read_notebooks(solutions)? {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let (student, regions) = release_notebook(&solution, &name)?;
        let rendered = to_nbformat_string(&student);
        for secret in secret_lines(&regions) {
            // Compare in the file's JSON-escaped form.
            let escaped = serde_json::to_string(&secret)?;
            if rendered.contains(&escaped[1..escaped.len() - 1]) {
                return Err(Error::Input(format!(
                    "{name}: solution text would reach the student notebook outside a region: {secret:?}"
                )));
            }
        }
        let target = out.join(&name);
        let mut files = vec![(target.clone(), rendered)];
        if let Some(spec) = GradingSpec::from_notebook(&solution, &name)? {
            let stem = name.trim_end_matches(".ipynb");
            files.push((specs.join(format!("{stem}.json")), serde_json::to_string_pretty(&spec)? + "\n"));
        }
        let mut changed = false;
        for (file, text) in files {
            if std::fs::read_to_string(&file).map_or(true, |old| old != text) {
                changed = true;
                if !check {
                    crate::io::write_atomic(&file, text.as_bytes())?;
                }
            }
        }
        done.push(Released { solution: path, student: target, changed, regions: regions.len() });
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nb(cells: Value) -> Value {
        json!({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    }

    #[test]
    fn code_regions_become_todo_with_the_hint_at_the_same_indent() {
        let src = ":dep hw9 = { path = \"../..\" }\nfn mse(a: &Tensor, b: &Tensor) -> Tensor {\n    // BEGIN SOLUTION: the mean of squared differences\n    let d = a - b;\n    (&d * &d).mean(Kind::Float)\n    // END SOLUTION\n}\n";
        let solution = nb(
            json!([{"cell_type": "code", "source": src, "outputs": [{"output_type": "stream"}], "execution_count": 3, "metadata": {"execution": {}, "tags": ["t"]}}]),
        );
        let (student, regions) = release_notebook(&solution, "x").unwrap();
        let cell = &student["cells"][0];
        assert_eq!(
            source_of(cell),
            ":dep hw9 = { path = \"..\" }\nfn mse(a: &Tensor, b: &Tensor) -> Tensor {\n    todo!(\"TODO: the mean of squared differences\")\n}\n"
        );
        assert_eq!(cell["outputs"], json!([]));
        assert_eq!(cell["execution_count"], Value::Null);
        assert_eq!(cell["metadata"], json!({"tags": ["t"]}));
        assert_eq!(regions.len(), 1);
        assert_eq!(secret_lines(&regions), vec!["let d = a - b;", "(&d * &d).mean(Kind::Float)"]);
    }

    #[test]
    fn markdown_answers_become_a_placeholder_and_bad_markers_are_errors() {
        let solution = nb(
            json!([{"cell_type": "markdown", "source": ["Q1?\n", "// BEGIN SOLUTION\n", "Heads attend to the previous token.\n", "// END SOLUTION\n"], "metadata": {}}]),
        );
        let (student, _) = release_notebook(&solution, "x").unwrap();
        assert_eq!(source_of(&student["cells"][0]), format!("Q1?\n{ANSWER_PLACEHOLDER}\n"));
        let open = nb(json!([{"cell_type": "code", "source": "a\n// BEGIN SOLUTION\nb\n", "metadata": {}}]));
        assert_eq!(
            release_notebook(&open, "x.ipynb").unwrap_err().to_string(),
            "invalid input: x.ipynb cell 0, line 2: BEGIN SOLUTION has no END SOLUTION"
        );
        let stray = nb(json!([{"cell_type": "code", "source": "// END SOLUTION\n", "metadata": {}}]));
        assert!(release_notebook(&stray, "x").unwrap_err().to_string().contains("END SOLUTION without BEGIN"));
    }

    #[test]
    fn repository_only_cells_are_left_out_and_student_only_cells_kept_untagged() {
        let solution = nb(json!([
            {"cell_type": "markdown", "source": "Run `hw9 summarize`.", "metadata": {"tags": ["repository-only"]}},
            {"cell_type": "code", "source": "evaluation_table()", "metadata": {"tags": ["repository-only", "plot"]}, "outputs": []},
            {"cell_type": "markdown", "source": "The course's figures.", "metadata": {"tags": ["student-only"]}},
            {"cell_type": "code", "source": "plot()", "metadata": {"tags": ["plot"]}, "outputs": []},
            {"cell_type": "markdown", "source": "no tags", "metadata": {}},
        ]));
        let (student, _) = release_notebook(&solution, "x").unwrap();
        let cells = student["cells"].as_array().unwrap();
        assert_eq!(cells.iter().map(source_of).collect::<Vec<_>>(), ["The course's figures.", "plot()", "no tags"]);
        assert_eq!(cells[0]["metadata"], json!({}), "the student-only tag is dropped");
        assert_eq!(cells[1]["metadata"]["tags"], json!(["plot"]));
        assert_eq!(cells[2]["metadata"], json!({}), "no tags key appears where there was none");
        let bad = nb(json!([{"cell_type": "code", "source": "x", "metadata": {"tags": ["student-only"]}}]));
        assert!(release_notebook(&bad, "x").unwrap_err().to_string().contains("only a markdown cell"));
        // An error names the cell by its place in the solution source.
        let open = nb(json!([
            {"cell_type": "markdown", "source": "repo", "metadata": {"tags": ["repository-only"]}},
            {"cell_type": "code", "source": "// BEGIN SOLUTION\nx\n", "metadata": {}, "outputs": []},
        ]));
        assert!(release_notebook(&open, "x").unwrap_err().to_string().contains("x cell 1, line 1"));
    }

    #[test]
    fn serialises_like_nbformat() {
        let v = json!({"b": [1], "a": {"c": "é"}});
        assert_eq!(to_nbformat_string(&v), "{\n \"a\": {\n  \"c\": \"é\"\n },\n \"b\": [\n  1\n ]\n}\n");
    }
}

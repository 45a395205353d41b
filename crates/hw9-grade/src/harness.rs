//! The student's code as a program the grader builds and runs: a notebook's TODO cells, taken
//! from the submitted notebook, with the release's check cells around them, in one `main`.
//!
//! A TODO cell is a code cell of the released student notebook that holds `todo!("TODO`: the
//! release ([`hw9::grading::release`] in the crate) puts one there for every solution region. The
//! submitted notebook's cell with the same nbformat `id` is the student's answer; when the
//! student deleted it or made a new one, the cell that defines the same items (`fn mse`, `struct
//! FaceNet`, …) is; when neither is there, the release's own cell stands (its `todo!` fails that
//! check with a message that says so). Every other cell of the submitted notebook is left out:
//! its check cells are the release's, so what a student edits there changes nothing, and cells a
//! student added are not run (helpers belong in the TODO cell that uses them).
//!
//! The program is one `fn main`: items (a struct, its `impl`, a `fn`) are legal inside a function
//! body, the cells' statements run in the notebook's order, and `?` works as in a cell. The
//! check cells call `rec.check(&fixtures, …)` as in the notebook; the harness's `fixtures` are
//! the graded cases the grader hands it and its `rec` writes each check's outputs as it goes
//! (`hw9::grading::check::Recorder::for_grader`). Each cell is marked by a line comment so a compiler
//! error's line names the cell it is in ([`Harness::cell_at_line`]).
//!
//! After the check cells comes the grader's measurement of the submitted models
//! (`assets/grading/measure/<notebook>.rs`, [`Harness::with_measure`]): the submission's weights
//! loaded into the models the student's TODO cells define, on held-out data (`hw9::tasks::measure`).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::written::source_of;
use crate::{Error, Result};

/// The lines the harness's recorder prints (`hw9::grading::check::Recorder::for_grader`), which
/// [`crate::rerun`] reads from its stdout.
pub mod lines {
    /// `BEGIN <check>`: the check starts (a crash or a timeout before its output is this check's).
    pub const BEGIN: &str = "HW9-GRADE-BEGIN";
    /// `OUTPUT <check> <base64 of a safetensors file>`: its outputs on the graded case.
    pub const OUTPUT: &str = "HW9-GRADE-OUTPUT";
    /// `FAILED <check> <why, one line>`: it panicked or returned no tensor.
    pub const FAILED: &str = "HW9-GRADE-FAILED";
    /// `END`: the harness reached its end.
    pub const END: &str = "HW9-GRADE-END";
    /// `HARNESS <nonce>`: printed first, before any student code runs, so the grader knows the
    /// binary it ran is the one it just built from this submission.
    pub const HARNESS: &str = "HW9-GRADE-HARNESS";
}

/// What marks a TODO cell in a released notebook.
pub const TODO_MARK: &str = "todo!(\"TODO";

/// One code cell of a notebook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// nbformat 4.5's cell id, when the notebook has one.
    pub id: Option<String>,
    /// The cell's source.
    pub source: String,
}

/// The code cells of a notebook (its JSON), in order.
pub fn code_cells(notebook: &Value) -> Result<Vec<Cell>> {
    let cells =
        notebook["cells"].as_array().ok_or_else(|| Error::Input("not a notebook: it has no list of cells".into()))?;
    Ok(cells
        .iter()
        .filter(|c| c["cell_type"] == "code")
        .map(|c| Cell { id: c["id"].as_str().map(str::to_string), source: source_of(c) })
        .collect())
}

/// The items a cell defines at its top level, as `fn name`, `struct Name`, `impl Trait for
/// Name`, `impl Name`: how a moved TODO cell is found again.
pub fn items_of(source: &str) -> BTreeSet<String> {
    let mut items = BTreeSet::new();
    for line in source.lines() {
        if line.starts_with(char::is_whitespace) {
            continue;
        }
        let mut words = line
            .split(|c: char| c.is_whitespace() || c == '(' || c == '<' || c == '{' || c == ';')
            .map(|w| w.trim_end_matches(':'))
            .filter(|w| !w.is_empty())
            .skip_while(|w| *w == "pub" || *w == "pub(crate)");
        let (Some(kind), Some(name)) = (words.next(), words.next()) else { continue };
        match kind {
            "fn" | "struct" | "enum" | "trait" => {
                items.insert(format!("{kind} {name}"));
            }
            "impl" => {
                let rest: Vec<&str> = std::iter::once(name).chain(words).collect();
                let target = match rest.iter().position(|w| *w == "for") {
                    Some(i) => format!("impl {} for {}", rest[..i].join(" "), rest.get(i + 1).copied().unwrap_or("")),
                    None => format!("impl {}", rest[0]),
                };
                items.insert(target);
            }
            _ => {}
        }
    }
    items
}

/// Where a TODO cell's code came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The submitted notebook's cell with the release cell's id.
    SameId,
    /// The submitted notebook's cell that defines the same items (the id was not found).
    SameItems,
    /// Not found in the submitted notebook: the release's cell (its `todo!`) stands.
    Missing,
}

/// One TODO cell of the harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoCell {
    /// The release cell's id (or its position among the code cells, `#n`).
    pub id: String,
    /// What it defines (from the release's cell).
    pub items: BTreeSet<String>,
    /// Where its code came from.
    pub source: Source,
    /// The code put into the harness.
    pub code: String,
}

/// A part of the harness's `main`, with the lines it spans in `main.rs` (1-based, inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// `todo` (a TODO cell, by index into [`Harness::todos`]) or `check` / `prelude`.
    pub kind: PartKind,
    /// First line in `main.rs`.
    pub first: usize,
    /// Last line in `main.rs`.
    pub last: usize,
}

/// What a part of the harness is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartKind {
    /// The grader's own lines (imports, fixtures, recorder).
    Prelude,
    /// The TODO cell [`Harness::todos`]`[i]`.
    Todo(usize),
    /// A check cell of the release.
    Check,
    /// The grader's measurement of the submitted models.
    Measure,
}

/// The program that runs a submission's TODO cells on the graded cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Harness {
    /// The notebook, e.g. `04_facenet`.
    pub notebook: String,
    /// The TODO cells in notebook order.
    pub todos: Vec<TodoCell>,
    /// The checks the release's check cells run, in order.
    pub checks: Vec<String>,
    /// The TODO cells whose code is the release's `todo!` instead of the student's, and why (a
    /// cell that did not compile is replaced by [`Harness::without`]).
    pub replaced: Vec<(usize, String)>,
    /// A number unique to this harness, which its program prints first ([`lines::HARNESS`]).
    pub nonce: String,
    /// The grader's measurement code, when it measures the submitted models.
    pub measure: Option<String>,
    /// The outputs the measurement prints (`measure.<model>`).
    pub measures: Vec<String>,
    /// The release's code cells (kept to rebuild the source).
    release: Vec<Cell>,
    /// Which release cells are TODO cells (index into `todos`) or check cells.
    layout: Vec<(usize, PartKind)>,
}

/// The names of the checks a cell runs (`rec.check(&fixtures, "name"`).
pub fn checks_in(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(i) = rest.find("rec.check(") {
        rest = &rest[i + "rec.check(".len()..];
        if let Some(q) = rest.find('"') {
            let after = &rest[q + 1..];
            if let Some(end) = after.find('"') {
                out.push(after[..end].to_string());
            }
        }
    }
    out
}

impl Harness {
    /// The harness for `student` (a submitted notebook) from `release` (the released student
    /// notebook of the same name, as the grader has it).
    pub fn new(notebook: &str, release: &Value, student: &Value) -> Result<Self> {
        let release = code_cells(release)?;
        let student = code_cells(student)?;
        let mut todos = Vec::new();
        let mut checks = Vec::new();
        let mut layout = Vec::new();
        let mut used = BTreeSet::new();
        for (n, cell) in release.iter().enumerate() {
            if cell.source.contains(TODO_MARK) {
                let items = items_of(&cell.source);
                let id = cell.id.clone().unwrap_or_else(|| format!("#{n}"));
                let by_id =
                    cell.id.as_ref().and_then(|id| student.iter().position(|s| s.id.as_deref() == Some(id.as_str())));
                let by_items = || {
                    (!items.is_empty())
                        .then(|| student.iter().position(|s| items.is_subset(&items_of(&s.source))))
                        .flatten()
                };
                let (source, code) = match by_id.filter(|i| !used.contains(i)) {
                    Some(i) => {
                        used.insert(i);
                        (Source::SameId, student[i].source.clone())
                    }
                    None => match by_items().filter(|i| !used.contains(i)) {
                        Some(i) => {
                            used.insert(i);
                            (Source::SameItems, student[i].source.clone())
                        }
                        None => (Source::Missing, cell.source.clone()),
                    },
                };
                layout.push((n, PartKind::Todo(todos.len())));
                todos.push(TodoCell { id, items, source, code: strip_commands(&code) });
            } else {
                let names = checks_in(&cell.source);
                if !names.is_empty() {
                    checks.extend(names);
                    layout.push((n, PartKind::Check));
                }
            }
        }
        if checks.is_empty() {
            return Err(Error::Input(format!("the release of {notebook} has no check cells: nothing to re-run")));
        }
        let nonce = {
            use sha2::Digest;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let mut h = sha2::Sha256::new();
            h.update(format!("{}{:?}{}", std::process::id(), now, notebook));
            for t in &todos {
                h.update(t.code.as_bytes());
            }
            h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
        };
        Ok(Harness {
            notebook: notebook.to_string(),
            todos,
            checks,
            replaced: Vec::new(),
            nonce,
            measure: None,
            measures: Vec::new(),
            release,
            layout,
        })
    }

    /// The same harness measuring the submitted models with `code` (the grader's
    /// `assets/grading/measure/<notebook>.rs`) after the checks; `None` measures nothing.
    pub fn with_measure(mut self, code: Option<String>) -> Self {
        self.measures = code.as_deref().map(measures_in).unwrap_or_default();
        self.measure = code;
        self
    }

    /// The release's `use` lines (from its first cell that loads the fixtures).
    fn imports(&self) -> Vec<String> {
        let setup = self.release.iter().find(|c| c.source.contains("Fixtures::load"));
        setup
            .map(|c| c.source.lines().filter(|l| l.trim_start().starts_with("use ")).map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// `main.rs` and the lines each part spans.
    pub fn source(&self) -> (String, Vec<Part>) {
        let mut out = String::new();
        let mut parts = Vec::new();
        let mut line = 1;
        let mut push = |out: &mut String, text: &str, kind: PartKind, parts: &mut Vec<Part>| {
            let text = if text.ends_with('\n') { text.to_string() } else { format!("{text}\n") };
            let n = text.lines().count();
            out.push_str(&text);
            parts.push(Part { kind, first: line, last: line + n - 1 });
            line += n;
        };
        let prelude = format!(
            "// The grader's harness for {nb} (hw9-grade): the student's TODO cells, the release's check cells.\n\
             #![allow(warnings)]\n\
             fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {{\n\
             println!(\"\\n{marker} {nonce}\");\n\
             {imports}\n\
             let device = tch::Device::Cpu;\n\
             let profile = hw9::Profile::Cpu;\n\
             let fixtures = hw9::grading::check::Fixtures::load_from(\"{nb}\", std::path::Path::new(&std::env::var(\"HW9_GRADE_CASES\")?))?;\n\
             let mut rec = hw9::grading::check::Recorder::for_grader(\"{nb}\")?;\n",
            nb = self.notebook,
            marker = lines::HARNESS,
            nonce = self.nonce,
            imports = self.imports().join("\n"),
        );
        push(&mut out, &prelude, PartKind::Prelude, &mut parts);
        for (n, kind) in &self.layout {
            let code = match kind {
                PartKind::Todo(i) => &self.todos[*i].code,
                _ => &self.release[*n].source,
            };
            let label = match kind {
                PartKind::Todo(i) => format!("// ---- TODO cell {} ----\n", self.todos[*i].id),
                _ => "// ---- check cell ----\n".to_string(),
            };
            push(&mut out, &format!("{label}{code}\n;\n"), *kind, &mut parts);
        }
        if let Some(code) = &self.measure {
            push(
                &mut out,
                &format!("// ---- the grader's measurement ----\n{code}\n;\n"),
                PartKind::Measure,
                &mut parts,
            );
        }
        push(&mut out, "rec.finish()?;\nOk(())\n}\n", PartKind::Prelude, &mut parts);
        (out, parts)
    }

    /// The part a line of `main.rs` is in.
    pub fn cell_at_line(&self, line: usize) -> Option<PartKind> {
        self.source().1.into_iter().find(|p| p.first <= line && line <= p.last).map(|p| p.kind)
    }

    /// The same harness with TODO cell `i` replaced by the release's (its `todo!`), `why`
    /// recorded: a cell that does not compile costs its own checks, not the others'.
    pub fn without(&self, i: usize, why: &str) -> Self {
        let mut h = self.clone();
        if let Some((n, _)) = self.layout.iter().find(|(_, k)| *k == PartKind::Todo(i)) {
            h.todos[i].code = self.release[*n].source.clone();
        }
        h.replaced.push((i, why.to_string()));
        h
    }
}

/// The outputs a measurement prints: `measure.<model>` for each `&measure, "<model>"` it names.
pub fn measures_in(code: &str) -> Vec<String> {
    code.split("&measure, \"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|m| format!("measure.{m}"))
        .collect()
}

/// A cell without evcxr's commands (`:dep`, `:timing`, …): lines that start with `:` at the top
/// level.
fn strip_commands(source: &str) -> String {
    source.split_inclusive('\n').filter(|l| !l.starts_with(':')).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nb(cells: &[(&str, &str)]) -> Value {
        json!({"cells": cells.iter().map(|(id, src)| json!({"cell_type": "code", "id": id, "source": src, "metadata": {}})).collect::<Vec<_>>()})
    }

    fn release() -> Value {
        nb(&[
            ("setup", ":dep hw9 = { path = \"..\" }\nuse hw9::prelude::*;\nlet fixtures = Fixtures::load(\"00_x\")?;\nlet mut rec = Recorder::new(\"00_x\");"),
            ("t1", "/// doc\nfn mse(a: &Tensor, b: &Tensor) -> Tensor {\n    todo!(\"TODO: mean\")\n}"),
            ("c1", "rec.check(&fixtures, \"mse\", |c| mse(&c[\"a\"], &c[\"b\"]));"),
            ("t2", "struct Net { w: i64 }\nimpl nn::ModuleT for Net {\n    fn forward_t(&self, x: &Tensor, t: bool) -> Tensor { todo!(\"TODO: x\") }\n}"),
            ("c2", "let n = Net { w: 1 };\nrec.check(&fixtures, \"net\", |c| n.forward_t(&c[\"x\"], false));\nrec.check(&fixtures, \"net2\", |c| n.forward_t(&c[\"x\"], false));"),
            ("other", "println!(\"not a check\");"),
        ])
    }

    #[test]
    fn items_are_found_by_kind_and_name() {
        let items = items_of("#[derive(Debug)]\npub struct Net { w: i64 }\nimpl nn::ModuleT for Net {\n  fn inner() {}\n}\nimpl Net {}\nfn f<T>(x: T) {}\nlet x = 1;");
        let want: BTreeSet<String> =
            ["struct Net", "impl nn::ModuleT for Net", "impl Net", "fn f"].iter().map(|s| s.to_string()).collect();
        assert_eq!(items, want);
        assert_eq!(checks_in("rec.check(&fixtures, \"a\", |c| f(c));\nrec.check(&fx, \"b.c\", g)"), ["a", "b.c"]);
    }

    #[test]
    fn todo_cells_come_from_the_student_by_id_then_by_items_and_checks_from_the_release() {
        let student = nb(&[
            ("setup", "use hw9::prelude::*; let secret = 1;"),
            ("c1", "rec.check(&fixtures, \"mse\", |c| Tensor::from(0.0));"), // edited check: ignored
            ("t1", ":timing\nfn mse(a: &Tensor, b: &Tensor) -> Tensor {\n    (a - b).square().mean(Kind::Float)\n}"),
            ("new-id", "struct Net { w: i64 }\nimpl nn::ModuleT for Net {\n    fn forward_t(&self, x: &Tensor, t: bool) -> Tensor { x * 2 }\n}"),
            ("added", "fn helper() {}"),
        ]);
        let h = Harness::new("00_x", &release(), &student).unwrap();
        assert_eq!(h.checks, ["mse", "net", "net2"]);
        assert_eq!(h.todos.len(), 2);
        assert_eq!(h.todos[0].source, Source::SameId);
        assert!(!h.todos[0].code.contains(":timing") && h.todos[0].code.contains("square()"));
        assert_eq!(h.todos[1].source, Source::SameItems);
        let (main, parts) = h.source();
        assert!(main.contains("rec.check(&fixtures, \"mse\", |c| mse(&c[\"a\"], &c[\"b\"]));"), "{main}");
        assert!(!main.contains("Tensor::from(0.0)") && !main.contains("helper") && !main.contains("secret"));
        assert!(!main.contains(":dep") && main.contains("use hw9::prelude::*;"));
        assert!(!main.contains("not a check"));
        // Every line of the source is in exactly one part, in order.
        assert_eq!(parts.first().map(|p| p.first), Some(1));
        assert_eq!(parts.last().map(|p| p.last), Some(main.lines().count()));
        assert!(parts.windows(2).all(|w| w[1].first == w[0].last + 1));
        let line = main.lines().position(|l| l.contains("square()")).unwrap() + 1;
        assert_eq!(h.cell_at_line(line), Some(PartKind::Todo(0)));
        // A cell that does not compile gives way to the release's.
        let h2 = h.without(0, "error[E0308]");
        assert!(h2.source().0.contains("todo!(\"TODO: mean\")") && h2.replaced.len() == 1);
    }

    #[test]
    fn a_missing_todo_cell_keeps_the_release_code() {
        let student = nb(&[("x", "fn unrelated() {}")]);
        let h = Harness::new("00_x", &release(), &student).unwrap();
        assert!(h.todos.iter().all(|t| t.source == Source::Missing));
        assert!(h.source().0.contains("todo!(\"TODO: mean\")"));
        assert!(Harness::new("00_x", &nb(&[("a", "fn f() {}")]), &student).is_err());
    }
}

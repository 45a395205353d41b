//! The written part: every question of the homework with the student's answer, gathered from the
//! notebooks into one document (`hw9 written`, `make written`), and into each submission.
//!
//! A question lives in a markdown cell whose metadata names it: `"hw9": {"question": "1(c)"}`
//! (the homework's part, then its letter). The cell holds the question, then the answer:
//! - in a solution source, between `// BEGIN SOLUTION` and `// END SOLUTION`;
//! - in a student notebook, after `**Your answer:**` (the placeholder `*(write it here)*` counts
//!   as no answer);
//! - otherwise, whatever follows the question's first paragraph.
//!
//! Questions are ordered as the homework orders them (part, then letter), whatever notebook holds
//! them. Images in an answer — a screenshot pasted into the cell (a cell attachment) or a file
//! beside the notebook — are embedded in the HTML and copied beside the Markdown.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

const BEGIN: &str = "// BEGIN SOLUTION";
const END: &str = "// END SOLUTION";
const ANSWER_LABEL: &str = "**Your answer:**";
const PLACEHOLDER: &str = "*(write it here)*";

/// The homework's parts, as its text names them.
pub const PARTS: [(u32, &str); 5] = [
    (1, "Read a Research Paper: FaceNet"),
    (2, "Masked Auto-Encoding"),
    (3, "Coding Question: Summarization (Part I)"),
    (4, "Coding Question: Visualizing Attention"),
    (5, "Homework Process and Study Group"),
];

/// One written question and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The question's id, e.g. `1(c)` or `4(a.1)`.
    pub id: String,
    /// The notebook that holds it, e.g. `04_facenet`.
    pub notebook: String,
    /// The question, as Markdown.
    pub question: String,
    /// The answer, as Markdown (empty when unanswered).
    pub answer: String,
    /// The cell's attachments (pasted images): name → (MIME type, base64 data).
    #[serde(default)]
    pub attachments: BTreeMap<String, (String, String)>,
}

impl Answer {
    /// Whether there is an answer.
    pub fn answered(&self) -> bool {
        !self.answer.trim().is_empty()
    }

    /// The homework part (the number the id starts with).
    pub fn part(&self) -> u32 {
        order_key(&self.id).first().and_then(|t| t.0).unwrap_or(u32::MAX)
    }
}

/// The id split into numbers and words, so that `4(a.10)` sorts after `4(a.2)`.
pub fn order_key(id: &str) -> Vec<(Option<u32>, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<(Option<u32>, String)>| {
        if !cur.is_empty() {
            out.push((cur.parse().ok(), std::mem::take(cur)));
        }
    };
    for ch in id.chars() {
        if ch.is_alphanumeric() {
            if cur.chars().next().is_some_and(|c| c.is_ascii_digit() != ch.is_ascii_digit()) {
                flush(&mut cur, &mut out);
            }
            cur.push(ch);
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

pub(crate) fn source_of(cell: &Value) -> String {
    match &cell["source"] {
        Value::String(s) => s.clone(),
        Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
        _ => String::new(),
    }
}

/// Drops a leading `**Question X.**` label: the document titles each question with its id.
fn strip_label(question: &str) -> String {
    let q = question.trim();
    if let Some(rest) = q.strip_prefix("**Question") {
        if let Some(end) = rest.find("**") {
            return rest[end + 2..].trim().to_string();
        }
    }
    q.to_string()
}

/// Splits a question cell's text into the question and the answer.
pub fn split_question(text: &str) -> (String, String) {
    if let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) {
        if b < e {
            let after_begin = text[b..].find('\n').map_or(e, |n| b + n + 1).min(e);
            return (strip_label(&text[..b]), text[after_begin..e].trim().to_string());
        }
    }
    if let Some(at) = text.find(ANSWER_LABEL) {
        let answer = text[at + ANSWER_LABEL.len()..].replace(PLACEHOLDER, "");
        return (strip_label(&text[..at]), answer.trim().to_string());
    }
    match text.trim().split_once("\n\n") {
        Some((q, a)) => (strip_label(q), a.trim().to_string()),
        None => (strip_label(text), String::new()),
    }
}

/// The written questions of one notebook (its JSON bytes), in homework order.
pub fn answers_of_notebook(notebook: &str, bytes: &[u8]) -> Result<Vec<Answer>> {
    let nb: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::Input(format!("{notebook}: expected a notebook (JSON), got a parse error: {e}")))?;
    let cells = nb["cells"]
        .as_array()
        .ok_or_else(|| Error::Input(format!("{notebook}: expected a notebook with a \"cells\" list")))?;
    let mut out = Vec::new();
    for cell in cells.iter().filter(|c| c["cell_type"] == "markdown") {
        let Some(id) = cell["metadata"]["hw9"]["question"].as_str() else { continue };
        let (question, answer) = split_question(&source_of(cell));
        let mut attachments = BTreeMap::new();
        if let Some(att) = cell["attachments"].as_object() {
            for (name, bundle) in att {
                if let Some((mime, data)) =
                    bundle.as_object().and_then(|b| b.iter().find(|(m, _)| m.starts_with("image/")))
                {
                    if let Some(data) = data.as_str() {
                        attachments.insert(name.clone(), (mime.clone(), data.replace('\n', "")));
                    }
                }
            }
        }
        out.push(Answer { id: id.to_string(), notebook: notebook.to_string(), question, answer, attachments });
    }
    out.sort_by_key(|a| order_key(&a.id));
    Ok(out)
}

/// Every written question of the notebooks `*.ipynb` directly in `dir`, in homework order.
pub fn gather(dir: &Path) -> Result<Vec<Answer>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ipynb"))
        .collect();
    paths.sort();
    let mut all = Vec::new();
    for path in paths {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        all.extend(answers_of_notebook(&name, &bytes)?);
    }
    all.sort_by_key(|a| order_key(&a.id));
    Ok(all)
}

/// An image an answer refers to, resolved: a cell attachment, or a file under the notebook's
/// folder (no absolute paths, no `..`).
fn resolve_image(src: &str, answer: &Answer, base: Option<&Path>) -> Option<(String, Vec<u8>)> {
    if let Some(name) = src.strip_prefix("attachment:") {
        let (mime, data) = answer.attachments.get(name)?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(data).ok()?;
        return Some((mime.clone(), bytes));
    }
    let rel = Path::new(src);
    if src.contains("://") || !rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return None;
    }
    let mime = match rel.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        _ => return None,
    };
    let bytes = std::fs::read(base?.join(rel)).ok()?;
    (bytes.len() <= 16 << 20).then(|| (mime.to_string(), bytes))
}

/// The image sources (`![..](src)`) of a Markdown text.
fn image_sources(markdown: &str) -> Vec<String> {
    pulldown_cmark::Parser::new(markdown)
        .filter_map(|e| match e {
            pulldown_cmark::Event::Start(pulldown_cmark::Tag::Image { dest_url, .. }) => Some(dest_url.to_string()),
            _ => None,
        })
        .collect()
}

/// Markdown to HTML, with each resolvable image inlined as a data URI.
fn to_html(markdown: &str, answer: &Answer, base: Option<&Path>) -> String {
    use pulldown_cmark::{Event, Tag};
    let events = pulldown_cmark::Parser::new_ext(markdown, pulldown_cmark::Options::ENABLE_TABLES).map(|e| match e {
        Event::Start(Tag::Image { link_type, dest_url, title, id }) => {
            let dest = match resolve_image(&dest_url, answer, base) {
                Some((mime, bytes)) => {
                    format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes)).into()
                }
                None => dest_url,
            };
            Event::Start(Tag::Image { link_type, dest_url: dest, title, id })
        }
        // Raw HTML in an answer is shown as text, not run.
        Event::Html(h) | Event::InlineHtml(h) => Event::Text(h),
        other => other,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The written part as Markdown and HTML, and the questions left unanswered.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The Markdown document (images referred to as `figures/<file>`).
    pub markdown: String,
    /// The self-contained HTML page (images inline; prints to PDF from a browser).
    pub html: String,
    /// Figures the Markdown refers to: file name → bytes.
    pub figures: BTreeMap<String, Vec<u8>>,
    /// `id (notebook)` of each unanswered question.
    pub unanswered: Vec<String>,
}

/// Renders `answers` (in the order given). `base` is the notebooks' folder, against which image
/// paths in answers resolve; with `None`, only cell attachments are embedded and other image
/// links are left as written.
pub fn render(answers: &[Answer], base: Option<&Path>) -> Written {
    let mut md = String::from("# Homework 9 — written answers\n");
    let mut body = String::new();
    let mut figures = BTreeMap::new();
    let mut unanswered = Vec::new();
    let mut part = None;
    for a in answers {
        if part != Some(a.part()) {
            part = Some(a.part());
            let title = PARTS.iter().find(|(n, _)| *n == a.part()).map_or("Other questions", |(_, t)| t);
            md.push_str(&format!("\n## {}. {title}\n", a.part()));
            body.push_str(&format!("<h2>{}. {}</h2>\n", a.part(), escape(title)));
        }
        let mut answer_md = a.answer.clone();
        for src in image_sources(&a.answer) {
            if let Some((mime, bytes)) = resolve_image(&src, a, base) {
                let ext = mime.trim_start_matches("image/").replace("svg+xml", "svg").replace("jpeg", "jpg");
                let name = format!("{}-{}-{}.{ext}", a.notebook, sanitize(&a.id), figures.len() + 1);
                answer_md = answer_md.replace(&format!("]({src})"), &format!("](figures/{name})"));
                figures.insert(name, bytes);
            }
        }
        md.push_str(&format!("\n### {} — {}\n\n*{}*\n\n", a.id, a.question, a.notebook));
        body.push_str(&format!(
            "<section><h3>{}</h3><div class=\"q\">{}<p class=\"nb\">{}</p></div>",
            escape(&a.id),
            to_html(&a.question, a, base),
            escape(&a.notebook)
        ));
        if a.answered() {
            md.push_str(&format!("{answer_md}\n"));
            body.push_str(&format!("<div class=\"a\">{}</div></section>\n", to_html(&a.answer, a, base)));
        } else {
            md.push_str("**(unanswered)**\n");
            body.push_str("<div class=\"a missing\">(unanswered)</div></section>\n");
            unanswered.push(format!("{} ({})", a.id, a.notebook));
        }
    }
    if !unanswered.is_empty() {
        md.push_str(&format!(
            "\n## Unanswered\n\n{}\n",
            unanswered.iter().map(|u| format!("- {u}")).collect::<Vec<_>>().join("\n")
        ));
        body.push_str(&format!(
            "<h2>Unanswered</h2><ul>{}</ul>\n",
            unanswered.iter().map(|u| format!("<li>{}</li>", escape(u))).collect::<String>()
        ));
    }
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Homework 9 — written answers</title>\n<style>\n\
         body {{ font-family: Georgia, serif; max-width: 46em; margin: 2em auto; padding: 0 1em; line-height: 1.45; }}\n\
         h2 {{ border-bottom: 1px solid #999; margin-top: 2em; }} section {{ break-inside: avoid; margin: 1.2em 0; }}\n\
         .q {{ color: #333; }} .nb {{ color: #888; font-size: 0.85em; margin: 0; }}\n\
         .a {{ border-left: 3px solid #4a7; padding: 0.2em 0.8em; margin-top: 0.4em; }} .missing {{ border-color: #c44; color: #c44; }}\n\
         img {{ max-width: 100%; }} table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #bbb; padding: 0.2em 0.5em; }}\n\
         @media print {{ body {{ margin: 0; max-width: none; }} }}\n</style></head>\n<body>\n<h1>Homework 9 — written answers</h1>\n{body}</body></html>\n"
    );
    Written { markdown: md, html, figures, unanswered }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect::<String>()
        .trim_matches('_')
        .to_string()
}

/// Where [`write_written`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenPaths {
    /// `written.md`.
    pub markdown: PathBuf,
    /// `written.html`.
    pub html: PathBuf,
    /// Questions in the document.
    pub questions: usize,
    /// `id (notebook)` of each unanswered question.
    pub unanswered: Vec<String>,
}

/// Gathers the notebooks in `notebooks` and writes `written.md` (with `figures/`) and
/// `written.html` into `out`, each atomically.
pub fn write_written(notebooks: &Path, out: &Path) -> Result<WrittenPaths> {
    let answers = gather(notebooks)?;
    if answers.is_empty() {
        return Err(Error::Input(format!(
            "no written questions in the notebooks of {}: expected markdown cells marked as questions (hw9 notebooks)",
            notebooks.display()
        )));
    }
    let w = render(&answers, Some(notebooks));
    let paths = WrittenPaths {
        markdown: out.join("written.md"),
        html: out.join("written.html"),
        questions: answers.len(),
        unanswered: w.unanswered.clone(),
    };
    for (name, bytes) in &w.figures {
        hw9_env::write_atomic(&out.join("figures").join(name), bytes).map_err(|e| Error::io(out, e))?;
    }
    hw9_env::write_atomic(&paths.markdown, w.markdown.as_bytes()).map_err(|e| Error::io(&paths.markdown, e))?;
    hw9_env::write_atomic(&paths.html, w.html.as_bytes()).map_err(|e| Error::io(&paths.html, e))?;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_as_the_homework_orders_them() {
        let mut ids = vec!["5(a)", "4(a.10)", "1(c)", "4(a.2)", "3(a)", "1(a)", "4(b.1)"];
        ids.sort_by_key(|id| order_key(id));
        assert_eq!(ids, vec!["1(a)", "1(c)", "3(a)", "4(a.2)", "4(a.10)", "4(b.1)", "5(a)"]);
    }

    #[test]
    fn the_answer_is_found_in_a_solution_a_student_notebook_and_a_free_form_cell() {
        let sol = "**Question 1(a).** Which?\n\n// BEGIN SOLUTION\nNN1 and NN2.\n// END SOLUTION";
        assert_eq!(split_question(sol), ("Which?".to_string(), "NN1 and NN2.".to_string()));
        let empty = "**Question 1(a).** Which?\n\n**Your answer:** *(write it here)*";
        assert_eq!(split_question(empty), ("Which?".to_string(), String::new()));
        let filled = "**Question 1(a).** Which?\n\n**Your answer:** Two CNNs.\n\nMore.";
        assert_eq!(split_question(filled).1, "Two CNNs.\n\nMore.");
        let free = "**Question 1(a).** Which?\n\nInception.";
        assert_eq!(split_question(free).1, "Inception.");
    }
}

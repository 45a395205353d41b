//! Grading a folder of submissions into a gradebook (`hw9 grade <folder>`): every `.zip` at any
//! depth is one student's upload of one notebook; each gets a row with its points per item and its
//! total, or the reason it was rejected. A malformed, tampered or foreign zip never stops the
//! batch. The gradebook is written as CSV (for a spreadsheet or an LMS import) and JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use hw9_env::progress::Progress;

use crate::grade::{grade, Assets, Status};
use crate::{write_atomic, Error, Result};

/// One submission's line in the gradebook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradebookRow {
    /// Who submitted: the folder the zip is in when it is named `hw9_submission.zip`, else the
    /// zip's path without `.zip` (relative to the graded folder).
    pub student: String,
    /// The zip, relative to the graded folder.
    pub file: String,
    /// The notebook it is a submission of (none when it was rejected).
    pub notebook: Option<String>,
    /// The profile it ran in.
    pub profile: Option<String>,
    /// Points given.
    pub points: f64,
    /// Points possible (0 when rejected: the notebook is unknown).
    pub max_points: f64,
    /// Item name → points given.
    pub items: BTreeMap<String, f64>,
    /// Items not graded (a `quick`-profile run) and why.
    pub not_graded: BTreeMap<String, String>,
    /// Why the upload was rejected, if it was.
    pub error: Option<String>,
}

/// Every row of a batch, in the order of the zips' paths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Gradebook {
    /// One row per zip found.
    pub rows: Vec<GradebookRow>,
}

/// Every `.zip` under `dir` at any depth, sorted; links are not followed.
pub(crate) fn find_zips(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(false) {
        let entry = entry.map_err(|e| Error::walk(dir, e))?;
        if entry.file_type().is_file() && entry.path().extension().is_some_and(|x| x.eq_ignore_ascii_case("zip")) {
            found.push(entry.into_path());
        }
    }
    found.sort();
    Ok(found)
}

/// The student a zip belongs to (see [`GradebookRow::student`]).
pub(crate) fn student_of(rel: &Path) -> String {
    let named_default = rel.file_name().is_some_and(|n| n == "hw9_submission.zip");
    let who = match rel.parent().filter(|p| named_default && !p.as_os_str().is_empty()) {
        Some(parent) => parent.to_path_buf(),
        None => rel.with_extension(""),
    };
    who.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// How many submissions a re-run batch grades at once: `HW9_GRADE_JOBS`, else the number of
/// cores, at most one per 2 GiB of available memory (a harness build's linker and a run stay
/// under ~1 GiB together; BENCHMARKS.md "Grading by re-running").
pub fn rerun_jobs() -> usize {
    if let Some(n) = std::env::var("HW9_GRADE_JOBS").ok().and_then(|v| v.parse::<usize>().ok()) {
        return n.max(1);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let available_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(2 << 20);
    cores.min((available_kb / (2 << 20)) as usize).max(1)
}

fn row_for(dir: &Path, zip: &Path, assets: &Assets) -> GradebookRow {
    let rel = zip.strip_prefix(dir).unwrap_or(zip).to_path_buf();
    let mut row = GradebookRow {
        student: student_of(&rel),
        file: rel.to_string_lossy().into_owned(),
        notebook: None,
        profile: None,
        points: 0.0,
        max_points: 0.0,
        items: BTreeMap::new(),
        not_graded: BTreeMap::new(),
        error: None,
    };
    match grade(zip, assets) {
        Ok(report) => {
            (row.points, row.max_points) = report.points();
            for item in &report.items {
                row.items.insert(item.name.clone(), item.points);
                if item.status == Status::NotGraded {
                    row.not_graded.insert(item.name.clone(), item.message.clone());
                }
            }
            row.notebook = Some(report.notebook);
            row.profile = Some(report.profile);
        }
        Err(e) => row.error = Some(e.to_string()),
    }
    row
}

/// Grades every zip under `dir` (see the module doc) with the grader's files in `assets`, with a
/// progress bar. Re-running ([`Assets::rerun`]) grades [`rerun_jobs`] submissions at once, each
/// worker in its own work folder and as its own sandbox uid (builds take turns on the shared
/// target folder; runs overlap).
pub fn grade_folder(dir: &Path, assets: &Assets) -> Result<Gradebook> {
    let zips = find_zips(dir)?;
    let bar = std::sync::Mutex::new(Progress::new("grading", zips.len() as u64));
    let jobs = if assets.rerun.is_some() { rerun_jobs().min(zips.len().max(1)) } else { 1 };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let rows: std::sync::Mutex<Vec<(usize, GradebookRow)>> = std::sync::Mutex::new(Vec::with_capacity(zips.len()));
    std::thread::scope(|scope| {
        for worker in 0..jobs {
            let mut mine = assets.clone();
            if let Some(cfg) = &mut mine.rerun {
                cfg.work_dir = cfg.work_dir.join(format!("worker-{worker}"));
                cfg.run_limits.uid += worker as u32;
            }
            let (zips, next, rows, bar) = (&zips, &next, &rows, &bar);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(zip) = zips.get(i) else { break };
                let row = row_for(dir, zip, &mine);
                if let Ok(mut b) = bar.lock() {
                    b.tick(&row.student);
                }
                if let Ok(mut r) = rows.lock() {
                    r.push((i, row));
                }
            });
        }
    });
    let mut rows = rows.into_inner().map_err(|_| Error::Input("a grading worker panicked".into()))?;
    rows.sort_by_key(|(i, _)| *i);
    let rows: Vec<GradebookRow> = rows.into_iter().map(|(_, r)| r).collect();
    let rejected = rows.iter().filter(|r| r.error.is_some()).count();
    if let Ok(mut b) = bar.into_inner() {
        b.finish(&format!("{} submissions, {rejected} rejected", rows.len()));
    }
    Ok(Gradebook { rows })
}

impl Gradebook {
    /// The CSV: `student, file, notebook, profile, points, max_points, error`, then one column per
    /// graded item (`<notebook>:<item>`, empty where it does not apply), then `not_graded`.
    pub fn to_csv(&self) -> Result<Vec<u8>> {
        let columns: BTreeSet<String> = self
            .rows
            .iter()
            .flat_map(|r| r.items.keys().map(move |k| format!("{}:{k}", r.notebook.as_deref().unwrap_or(""))))
            .collect();
        let mut w = csv::Writer::from_writer(Vec::new());
        let head = ["student", "file", "notebook", "profile", "points", "max_points", "error"];
        let csv_err = |e: csv::Error| Error::Input(format!("writing the gradebook CSV: {e}"));
        w.write_record(head.iter().map(|s| s.to_string()).chain(columns.iter().cloned()).chain(["not_graded".into()]))
            .map_err(csv_err)?;
        for r in &self.rows {
            let nb = r.notebook.clone().unwrap_or_default();
            let mut record = vec![
                r.student.clone(),
                r.file.clone(),
                nb.clone(),
                r.profile.clone().unwrap_or_default(),
                r.points.to_string(),
                r.max_points.to_string(),
                r.error.clone().unwrap_or_default(),
            ];
            record.extend(columns.iter().map(|c| {
                c.strip_prefix(&format!("{nb}:"))
                    .and_then(|item| r.items.get(item))
                    .map_or(String::new(), f64::to_string)
            }));
            record.push(r.not_graded.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("; "));
            w.write_record(&record).map_err(csv_err)?;
        }
        w.into_inner().map_err(|e| Error::Input(format!("writing the gradebook CSV: {e}")))
    }

    /// A CSV a Canvas gradebook imports ("Grades → Import"): Canvas's columns `Student, ID, SIS
    /// User ID, SIS Login ID, Section`, then one column per notebook (`hw9 <notebook>`), a
    /// `Points Possible` row first. The student's folder name goes into `SIS Login ID` (Canvas
    /// matches rows by it when `ID` is empty); a student's best upload of a notebook counts.
    pub fn to_canvas_csv(&self) -> Result<Vec<u8>> {
        let notebooks: BTreeSet<&str> = self.rows.iter().filter_map(|r| r.notebook.as_deref()).collect();
        let mut best: BTreeMap<(&str, &str), f64> = BTreeMap::new();
        let mut possible: BTreeMap<&str, f64> = BTreeMap::new();
        for r in &self.rows {
            if let Some(nb) = r.notebook.as_deref() {
                let e = best.entry((r.student.as_str(), nb)).or_insert(r.points);
                *e = e.max(r.points);
                possible.insert(nb, r.max_points);
            }
        }
        let students: BTreeSet<&str> = self.rows.iter().map(|r| r.student.as_str()).collect();
        let csv_err = |e: csv::Error| Error::Input(format!("writing the Canvas CSV: {e}"));
        let mut w = csv::Writer::from_writer(Vec::new());
        let fixed = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"];
        w.write_record(fixed.iter().map(|s| s.to_string()).chain(notebooks.iter().map(|n| format!("hw9 {n}"))))
            .map_err(csv_err)?;
        let mut points_row =
            vec!["Points Possible".to_string(), String::new(), String::new(), String::new(), String::new()];
        points_row.extend(notebooks.iter().map(|n| possible.get(n).map_or(String::new(), f64::to_string)));
        w.write_record(&points_row).map_err(csv_err)?;
        for s in students {
            let mut record = vec![s.to_string(), String::new(), String::new(), s.to_string(), String::new()];
            record.extend(notebooks.iter().map(|n| best.get(&(s, *n)).map_or(String::new(), f64::to_string)));
            w.write_record(&record).map_err(csv_err)?;
        }
        w.into_inner().map_err(|e| Error::Input(format!("writing the Canvas CSV: {e}")))
    }

    /// Writes `gradebook.csv`, `gradebook.json` and `canvas.csv` ([`Gradebook::to_canvas_csv`])
    /// into `out`; returns the first two's paths.
    pub fn write(&self, out: &Path) -> Result<(PathBuf, PathBuf)> {
        let (csv_path, json_path) = (out.join("gradebook.csv"), out.join("gradebook.json"));
        write_atomic(&csv_path, &self.to_csv()?)?;
        write_atomic(&json_path, &serde_json::to_vec_pretty(self)?)?;
        write_atomic(&out.join("canvas.csv"), &self.to_canvas_csv()?)?;
        Ok((csv_path, json_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn students_come_from_folders_or_file_names() {
        assert_eq!(student_of(Path::new("alice/hw9_submission.zip")), "alice");
        assert_eq!(student_of(Path::new("sec1/bob/hw9_submission.zip")), "sec1/bob");
        assert_eq!(student_of(Path::new("carol_01_vit_mae.zip")), "carol_01_vit_mae");
        assert_eq!(student_of(Path::new("hw9_submission.zip")), "hw9_submission");
    }

    #[test]
    fn the_canvas_csv_has_points_possible_and_each_students_best_upload() {
        let row = |student: &str, nb: Option<&str>, points: f64| GradebookRow {
            student: student.into(),
            file: format!("{student}.zip"),
            notebook: nb.map(str::to_string),
            profile: None,
            points,
            max_points: if nb.is_some() { 19.0 } else { 0.0 },
            items: BTreeMap::new(),
            not_graded: BTreeMap::new(),
            error: None,
        };
        let book = Gradebook {
            rows: vec![
                row("alice", Some("04_facenet"), 11.0),
                row("alice", Some("04_facenet"), 19.0),
                row("bob", Some("04_facenet"), 8.0),
                row("carol", None, 0.0),
            ],
        };
        let text = String::from_utf8(book.to_canvas_csv().unwrap()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Student,ID,SIS User ID,SIS Login ID,Section,hw9 04_facenet");
        assert_eq!(lines[1], "Points Possible,,,,,19");
        assert_eq!(lines[2], "alice,,,alice,,19");
        assert_eq!(lines[3], "bob,,,bob,,8");
        assert_eq!(lines[4], "carol,,,carol,,");
    }
}

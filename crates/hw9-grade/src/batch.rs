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

/// Grades every zip under `dir` (see the module doc) with the grader's files in `assets`, with a
/// progress bar.
pub fn grade_folder(dir: &Path, assets: &Assets) -> Result<Gradebook> {
    let zips = find_zips(dir)?;
    let mut bar = Progress::new("grading", zips.len() as u64);
    let mut rows = Vec::with_capacity(zips.len());
    for zip in zips {
        let rel = zip.strip_prefix(dir).unwrap_or(&zip).to_path_buf();
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
        match grade(&zip, assets) {
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
        bar.tick(&row.student);
        rows.push(row);
    }
    let rejected = rows.iter().filter(|r| r.error.is_some()).count();
    bar.finish(&format!("{} submissions, {rejected} rejected", rows.len()));
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

    /// Writes `gradebook.csv` and `gradebook.json` into `out`; returns their paths.
    pub fn write(&self, out: &Path) -> Result<(PathBuf, PathBuf)> {
        let (csv_path, json_path) = (out.join("gradebook.csv"), out.join("gradebook.json"));
        write_atomic(&csv_path, &self.to_csv()?)?;
        write_atomic(&json_path, &serde_json::to_vec_pretty(self)?)?;
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
}

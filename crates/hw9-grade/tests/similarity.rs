//! The similarity report (hw9_grade::similarity) on real notebooks: a copy with names changed
//! tops the table at 100 %, an untouched handout shares nothing with anyone, and the page is
//! written.

use std::io::Write;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn zip_with(path: &Path, name: &str, notebook: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).expect("create"));
    z.start_file(name, zip::write::SimpleFileOptions::default()).expect("entry");
    z.write_all(notebook.as_bytes()).expect("write");
    z.finish().expect("finish");
}

#[test]
fn a_renamed_copy_tops_the_table_and_the_template_is_shared_by_nobody() {
    let dir = tempfile::tempdir().expect("tempdir");
    let solution = std::fs::read_to_string(repo().join("notebooks/solutions/04_facenet.ipynb")).expect("solution");
    let release = std::fs::read_to_string(repo().join("notebooks/04_facenet.ipynb")).expect("release");
    // bob copied alice's answers and renamed her variables.
    let renamed = solution.replace("d_ap", "dist_pos").replace("d_an", "dist_neg").replace("hardest_p", "hp");
    zip_with(&dir.path().join("alice/hw9_submission.zip"), "04_facenet.ipynb", &solution);
    zip_with(&dir.path().join("bob/hw9_submission.zip"), "04_facenet.ipynb", &renamed);
    zip_with(&dir.path().join("carol/hw9_submission.zip"), "04_facenet.ipynb", &release);
    zip_with(&dir.path().join("eve/hw9_submission.zip"), "notes.txt", "no notebook here");
    let out = dir.path().join("similarity.html");
    let pairs = hw9_grade::similarity::report(dir.path(), &repo().join("notebooks"), &out).expect("report");
    assert_eq!(pairs.len(), 3, "{pairs:?}");
    assert_eq!((pairs[0].a.as_str(), pairs[0].b.as_str(), pairs[0].overlap), ("alice", "bob", 1.0));
    assert!(pairs[0].shared >= 20, "the TODOs' code gives many fingerprints: {}", pairs[0].shared);
    assert!(pairs.iter().filter(|p| p.a == "carol" || p.b == "carol").all(|p| p.shared == 0), "{pairs:?}");
    let page = std::fs::read_to_string(&out).expect("page");
    assert!(page.contains("<td>alice</td><td>bob</td><td>100 %</td>"));
    assert!(page.contains("eve: "), "a zip without a notebook is listed as not compared");
}

//! `hw9-grade`: grades hw9 submissions without libtorch (see the `hw9_grade` crate).
//!
//! ```text
//! hw9-grade submission.zip            # one upload: each item with its points, and the total
//! hw9-grade uploads/ --out grades/    # every zip under a folder into gradebook.csv and .json
//! hw9-grade gradescope --notebook 01_vit_mae   # Gradescope's run_autograder
//! hw9-grade bundle --out build/gradescope     # one autograder zip per Gradescope assignment
//! ```

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hw9_grade::gradescope::{run, Layout};
use hw9_grade::{Assets, Result};

#[derive(Parser)]
#[command(name = "hw9-grade", version, about = "Grade hw9 submissions (no libtorch needed)")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// A hw9_submission.zip (or a submission_log.json), or a folder of zips at any depth.
    path: Option<PathBuf>,
    /// Where a folder's gradebook.csv and gradebook.json go (default: the folder).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The grader's files: `fixtures/` and `grading/` under this folder (default: the repository's
    /// assets, or a grader bundle's root).
    #[arg(long, global = true)]
    assets: Option<PathBuf>,
    /// A fixture file to grade against instead of the notebook's own (a point per check).
    #[arg(long)]
    fixtures: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Gradescope's autograder: grade the upload in <root>/submission, write <root>/results/results.json.
    Gradescope {
        /// The notebook this Gradescope assignment grades, e.g. 01_vit_mae.
        #[arg(long)]
        notebook: String,
        /// Gradescope's folder (`/autograder`; `$GRADESCOPE_ROOT` overrides it, for tests).
        #[arg(long, env = "GRADESCOPE_ROOT", default_value = "/autograder")]
        root: PathBuf,
    },
    /// Write one Gradescope autograder zip per assignment (make gradescope).
    Bundle {
        /// Where the zips go.
        #[arg(long, default_value = "build/gradescope")]
        out: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    let mut assets = cli.assets.map_or_else(Assets::default, Assets::at);
    assets.fixtures_file = cli.fixtures;
    let outcome: Result<bool> = match (cli.command, cli.path) {
        (Some(Cmd::Gradescope { notebook, root }), _) => run(&Layout::under(&root), &notebook, &assets).map(|r| {
            println!("{}\nscore {} ({} tests)", r.output, r.score, r.tests.len());
            true
        }),
        (Some(Cmd::Bundle { out }), _) => std::env::current_exe()
            .map_err(|e| hw9_grade::Error::io("hw9-grade", e))
            .and_then(|exe| hw9_grade::gradescope::write_bundles(&hw9_env::paths::root(), &assets.dir, &exe, &out))
            .map(|zips| {
                for (zip, a) in zips.iter().zip(hw9_grade::gradescope::ASSIGNMENTS) {
                    println!("{} -> \"{}\" (grades {})", zip.display(), a.title, a.notebook);
                }
                true
            }),
        (None, Some(path)) => hw9_grade::grade_path(&path, cli.out.as_deref(), &assets),
        (None, None) => {
            eprintln!("give a submission zip or a folder (hw9-grade --help)");
            std::process::exit(2);
        }
    };
    match outcome {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

//! `hw9-grade`: grades hw9 submissions without libtorch (see the `hw9_grade` crate).
//!
//! ```text
//! hw9-grade submission.zip            # one upload re-run: each item with its points, and the total
//! hw9-grade uploads/ --out grades/    # every zip under a folder into gradebook.csv and .json
//! hw9-grade --read-outputs submission.zip   # the outputs it recorded (a self-check, not a grade)
//! hw9-grade gradescope --notebook 01_vit_mae   # Gradescope's run_autograder
//! hw9-grade bundle --handout build/handout/hw9 --out build/gradescope   # Gradescope autograder zips
//! hw9-grade similarity uploads/ --out similarity.html   # TODO code shared between submissions
//! ```

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hw9_grade::gradescope::{run_with_policy, Layout};
use hw9_grade::{Assets, GradeArgs, Result};

#[derive(Parser)]
#[command(name = "hw9-grade", version, about = "Grade hw9 submissions by re-running their code")]
#[command(args_conflicts_with_subcommands = true, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// One upload or a folder (the arguments `hw9 grade` takes too).
    #[command(flatten)]
    grade: Option<GradeArgs>,
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
        /// The grader's files (default: a grader bundle's root, or the repository's assets).
        #[arg(long)]
        assets: Option<PathBuf>,
        /// Re-run the upload's code with an unpacked re-running bundle (`/autograder/source`):
        /// its handout crate, hidden cases and warm build.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// With --bundle: build and run the released notebook once (setup.sh's warm build), grade nothing.
        #[arg(long, requires = "bundle")]
        warm: bool,
    },
    /// How much TODO code the submissions under a folder share, template removed (an HTML table).
    Similarity {
        /// The folder of submission zips (any depth, as for grading).
        folder: PathBuf,
        /// The released student notebooks (the template).
        #[arg(long, default_value = "notebooks")]
        release: PathBuf,
        /// The report.
        #[arg(long, default_value = "similarity.html")]
        out: PathBuf,
    },
    /// Write one Gradescope autograder zip per assignment (make gradescope).
    Bundle {
        /// Where the zips go.
        #[arg(long, default_value = "build/gradescope")]
        out: PathBuf,
        /// The grader's files to bundle (default: the repository's assets).
        #[arg(long)]
        assets: Option<PathBuf>,
        /// The student handout's crate (`make handout` writes build/handout/hw9): the bundles then
        /// re-run each upload's code; without it they only read what the upload recorded.
        #[arg(long)]
        handout: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    let assets_at = |dir: Option<PathBuf>| dir.map_or_else(Assets::default, Assets::at);
    let outcome: Result<bool> = match (cli.command, cli.grade) {
        (Some(Cmd::Gradescope { notebook, root, assets, bundle, warm }), _) => {
            let mut assets = assets_at(assets);
            assets.rerun = bundle.as_deref().map(hw9_grade::rerun::RerunConfig::for_bundle);
            match (&assets.rerun, warm) {
                (Some(cfg), true) => hw9_grade::gradescope::warm(&notebook, cfg).map(|line| {
                    println!("{:<10} {line}", "warm");
                    true
                }),
                _ => run_with_policy(&Layout::under(&root), &notebook, &assets).map(|r| {
                    println!("{}\nscore {} ({} tests)", r.output, r.score, r.tests.len());
                    true
                }),
            }
        }
        (Some(Cmd::Similarity { folder, release, out }), _) => hw9_grade::similarity::report(&folder, &release, &out)
            .map(|pairs| {
                for p in pairs.iter().take(10) {
                    println!("{:>4.0} %  {:>4} shared  {}  {} ~ {}", p.overlap * 100.0, p.shared, p.notebook, p.a, p.b);
                }
                println!("{} pairs compared: {}", pairs.len(), out.display());
                true
            }),
        (Some(Cmd::Bundle { out, assets, handout }), _) => std::env::current_exe()
            .map_err(|e| hw9_grade::Error::io("hw9-grade", e))
            .and_then(|exe| {
                let dir = assets_at(assets).dir;
                hw9_grade::gradescope::write_bundles(&hw9_env::paths::root(), &dir, &exe, handout.as_deref(), &out)
            })
            .map(|zips| {
                for (zip, a) in zips.iter().zip(hw9_grade::gradescope::ASSIGNMENTS) {
                    println!("{} -> \"{}\" (grades {})", zip.display(), a.title, a.notebook);
                }
                true
            }),
        (None, Some(grade)) => grade.run(),
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

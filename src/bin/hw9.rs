//! The hw9 command line: `doctor` (check the installation), `release` (student notebooks from
//! the solution sources), `handout` (the student handout), `grade` (a submission or a folder), `written` (the written answers in one document), `vit-mae`, `summarize`, `train-gpt` and `facenet` (each
//! notebook's training with the crate's models), `bench` and `bench-summarizer` (step times),
//! `tokenizer` and `corpus` (rebuild the committed summarization data). `hw9 --help` lists them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hw9::doctor::{self, Check};
#[cfg(feature = "reference")]
use hw9::train::Precision;

#[derive(Parser)]
#[command(name = "hw9", version, about = "hw9: ViT, MAE and Transformers in Rust notebooks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// The model sizes a step benchmark times.
#[cfg(feature = "reference")]
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Sizes {
    /// The `cpu` profile's sizes.
    Cpu,
    /// The original homework's sizes.
    Full,
    /// Both.
    Both,
}

/// The precisions a step benchmark times.
#[cfg(feature = "reference")]
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Precisions {
    /// fp32 only.
    Fp32,
    /// bf16 autocast only.
    Bf16,
    /// fp32 then bf16, with the ratio.
    Both,
}

#[cfg(feature = "reference")]
impl Precisions {
    fn list(self) -> Vec<Precision> {
        match self {
            Precisions::Fp32 => vec![Precision::Fp32],
            Precisions::Bf16 => vec![Precision::Bf16],
            Precisions::Both => vec![Precision::Fp32, Precision::Bf16],
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Check libtorch, the kernelspec, evcxr, the data and the versions; print a fix per problem.
    Doctor,
    /// Write the student notebooks (notebooks/*.ipynb) from the solution sources.
    Release {
        /// Write nothing; fail if a student notebook is not what the sources produce.
        #[arg(long)]
        check: bool,
        /// Folder of solution sources.
        #[arg(long, default_value_os_t = hw9::paths::root().join("notebooks/solutions"))]
        solutions: PathBuf,
        /// Folder the student notebooks go to.
        #[arg(long, default_value_os_t = hw9::paths::root().join("notebooks"))]
        out: PathBuf,
    },
    #[cfg(feature = "reference")]
    /// Train notebook 1's four stages (ViT, MAE pretraining, linear probe, finetune) with the
    /// crate's models on Fashion-MNIST, in the profile HW9_PROFILE names; print accuracies and times.
    VitMae {
        /// Where the pretrained MAE is saved (as mae/model.safetensors + mae/config.json).
        #[arg(long, default_value = "build/vit-mae")]
        out: PathBuf,
        /// Train the supervised ViT only (the first stage), print its accuracy and time.
        #[arg(long)]
        vit_only: bool,
    },
    #[cfg(feature = "reference")]
    /// Train notebook 4's FaceNet embedding (semi-hard triplets) and run its experiments
    /// (embedding size, data size, triplet selection) in the profile HW9_PROFILE names; print the
    /// verification, identification and clustering results.
    Facenet {
        /// Also write the whole report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Every notebook's plan for a profile as JSON (sizes, training, thresholds), and the
    /// benchmarks' sizes: what tools/bench_torch*.py build their PyTorch models from.
    Plan {
        /// The profile: quick, cpu or full (default: HW9_PROFILE's).
        #[arg(long, value_parser = |s: &str| hw9::Profile::parse(s).map_err(|e| e.to_string()))]
        profile: Option<hw9::Profile>,
    },
    #[cfg(feature = "reference")]
    /// Time one training step of notebook 1's ViT and MAE (batch 128) in the cpu and full sizes.
    Bench {
        #[arg(long, default_value_t = 128)]
        batch: i64,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// libtorch threads (default: libtorch's choice).
        #[arg(long)]
        threads: Option<i32>,
        /// The forward pass's precision: fp32, bf16, or both (fp32 then bf16, each size, with
        /// their ratio).
        #[arg(long, value_enum, default_value_t = Precisions::Fp32)]
        precision: Precisions,
    },
    #[cfg(feature = "reference")]
    /// Train notebook 2's summarizer (crate layers) in the profile HW9_PROFILE names; print each
    /// epoch's validation loss and accuracy, test ROUGE and sample summaries.
    Summarize {
        /// Each epoch's weights are exported to <out>/epoch-N.
        #[arg(long, default_value = "build/summarizer")]
        out: PathBuf,
        /// TensorBoard event files.
        #[arg(long, default_value = "build/runs/summarizer")]
        logdir: PathBuf,
        /// Save the run's state in this folder every minute; run the same command again after an
        /// interruption and it continues where it stopped (mid-epoch, or the rest of --minutes).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Override the profile's epochs.
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        epochs: Option<i64>,
        /// Label smoothing ε of the training loss (0: the notebook's plain cross-entropy).
        #[arg(long, default_value_t = 0.0)]
        label_smoothing: f64,
        /// Also write the ROUGE table (Lead-k, greedy and beam with and without n-gram blocking)
        /// and a gallery of 20 random test summaries to <out>/evaluation.json.
        #[arg(long)]
        evaluate: bool,
        /// BERT2BERT: the encoder (and the decoder's self-attention and feed-forward blocks)
        /// start from MiniLM-L6 (or $HW9_BERT_DIR), with its WordPiece tokenizer.
        #[arg(long)]
        warm_start: bool,
        /// Decoder layers of the warm-started model (from BERT's first layers).
        #[arg(long, default_value_t = 2, requires = "warm_start", value_parser = clap::value_parser!(i64).range(1..))]
        decoder_layers: i64,
        /// Override the profile's peak learning rate.
        #[arg(long)]
        lr: Option<f64>,
        /// Train for this many minutes of wall time instead of the profile's epochs.
        #[arg(long, conflicts_with = "epochs")]
        minutes: Option<f64>,
    },
    #[cfg(feature = "reference")]
    /// Time one training step of notebook 2's summarizer (batch 16) in the cpu and full sizes.
    BenchSummarizer {
        /// Which sizes.
        #[arg(long, value_enum, default_value_t = Sizes::Both)]
        size: Sizes,
        #[arg(long, default_value_t = 16)]
        batch: i64,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// libtorch threads (default: libtorch's choice).
        #[arg(long)]
        threads: Option<i32>,
        /// The forward pass's precision: fp32, bf16, or both.
        #[arg(long, value_enum, default_value_t = Precisions::Fp32)]
        precision: Precisions,
    },
    /// Build the summarization corpus from apt's Translation-en index (see `make corpus`).
    Corpus {
        /// The decompressed Translation-en file.
        #[arg(long)]
        from: PathBuf,
        #[arg(long, default_value_os_t = hw9::data::corpus::corpus_path())]
        out: PathBuf,
        /// Documents shorter than this many words are dropped.
        #[arg(long, default_value_t = 20)]
        min_words: usize,
    },
    /// Train the summarizer's byte-level BPE tokenizer on the corpus' training split.
    Tokenizer {
        #[arg(long, default_value_t = 8000)]
        vocab: usize,
        #[arg(long, default_value_os_t = hw9::data::text::tokenizer_path())]
        out: PathBuf,
    },
    /// Train the small GPT-2 that notebook 3 looks inside (GPT-2's tokenizer, Debian descriptions).
    TrainGpt {
        /// Wall-clock budget in minutes (default: the profile's, 10 in cpu).
        #[arg(long)]
        minutes: Option<f64>,
        #[arg(long, default_value_os_t = hw9::models::gpt2::default_gpt2_dir())]
        out: PathBuf,
        /// Save the run's state in this folder every minute; run the same command again after an
        /// interruption and it trains for the rest of the budget.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Override the profile's windows per batch (16).
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
        batch: Option<i64>,
        /// Override the profile's peak learning rate (1e-3).
        #[arg(long)]
        lr: Option<f64>,
    },
    /// SmolLM2-135M-Instruct (converted by setup): greedy generation, with the load time, one
    /// forward with every layer's attention and the generation speed measured.
    Smollm2 {
        /// A prompt to continue; with --chat, a message to answer.
        #[arg(default_value = "The capital of France is")]
        prompt: String,
        /// Answer the prompt as the instruct model's user message (its chat template).
        #[arg(long)]
        chat: bool,
        #[arg(long, default_value_t = 40)]
        max_new_tokens: usize,
        /// Forwards with attention to time (median reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// Fine-tune SmolLM2-135M-Instruct's top layers into a summarizer (notebook 2's optional
    /// section), then score it with ROUGE on the test documents beside Lead-k.
    FinetuneLm {
        /// Wall-clock training budget in minutes (default: the profile's, 20 in cpu); 0 scores
        /// the base model as it is (zero-shot).
        #[arg(long)]
        minutes: Option<f64>,
        #[arg(long, default_value_os_t = hw9::tasks::lm_summarizer::default_dir())]
        out: PathBuf,
        /// Save the run's state in this folder every minute; run the same command again after an
        /// interruption and it trains for the rest of the budget (another budget or setting starts
        /// afresh, in a folder of its own).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Override the profile's top layers trained (8).
        #[arg(long)]
        top_layers: Option<usize>,
        /// Override the profile's documents per step (8).
        #[arg(long)]
        batch: Option<usize>,
        /// Override the profile's peak learning rate (3e-4).
        #[arg(long)]
        lr: Option<f64>,
        /// Override the profile's document cut in tokens (128).
        #[arg(long)]
        max_doc_tokens: Option<usize>,
        /// Test documents to score (the first N; 0 skips the scoring).
        #[arg(long, default_value_t = 1000)]
        test: usize,
        /// Score the summarizer saved in --out instead of training one.
        #[arg(long, conflicts_with_all = ["minutes", "state", "top_layers", "batch", "lr", "max_doc_tokens"])]
        evaluate_only: bool,
    },
    /// A small resumable training run (tests and the fault-injection benchmark kill it with
    /// SIGKILL and run it again): saves its state every 10 steps into <dir>, continues from it,
    /// and writes the final weights to <dir>/final.safetensors.
    #[command(hide = true)]
    FitDemo {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Gather every written question with your answer, in homework order, from the notebooks into
    /// written.md and written.html (prints to PDF from a browser); list the unanswered ones.
    Written {
        /// The folder of notebooks to read.
        #[arg(long, default_value_os_t = hw9::paths::root().join("notebooks"))]
        notebooks: PathBuf,
        /// Where written.md, written.html and figures/ go.
        #[arg(long, default_value_os_t = hw9::paths::root().join("written"))]
        out: PathBuf,
    },
    /// Write the student handout (no answers) as a folder and a .tar.gz, and the grader's files
    /// beside it (make handout).
    Handout {
        /// Where <out>/hw9, <out>/hw9-handout.tar.gz and <out>/grader go.
        #[arg(long, default_value = "build/handout")]
        out: PathBuf,
    },
    /// Grade a hw9_submission.zip by re-running its code on the hidden cases (the TA's side), or
    /// every zip in a folder (any depth) into gradebook.csv and gradebook.json; --read-outputs
    /// checks the outputs it recorded instead.
    Grade(hw9_grade::GradeArgs),
}

/// Times a benchmark in each precision asked, a line each: `<label>: <name> <s> s, ...`, and after
/// fp32 the other precision's ratio to it (tools/bench_pairs.py reads the fp32 lines).
#[cfg(feature = "reference")]
fn timed_precisions(
    label: &str,
    precisions: Precisions,
    mut time: impl FnMut(Precision) -> hw9::Result<Vec<(&'static str, f64)>>,
) -> hw9::Result<()> {
    let mut fp32: Option<Vec<(&str, f64)>> = None;
    for p in precisions.list() {
        let figures = time(p)?;
        let text: Vec<String> = figures.iter().map(|(n, s)| format!("{n} {s:.3} s")).collect();
        let tag = if p == Precision::Fp32 { String::new() } else { format!(" [{p}]") };
        let ratio = fp32.as_ref().map_or(String::new(), |base| {
            let r: Vec<String> =
                figures.iter().zip(base).map(|((n, s), (_, b))| format!("{n} {:.2}x", s / b)).collect();
            format!(" (bf16/fp32: {})", r.join(", "))
        });
        println!("{label}: {}{tag}{ratio}", text.join(", "));
        fp32 = fp32.or(Some(figures));
    }
    Ok(())
}

/// `hw9 fit-demo`: an MLP with dropout on synthetic data, 12 epochs of 40 steps, resumable.
fn fit_demo(dir: &std::path::Path) -> hw9::Result<()> {
    use hw9::train::{Evaluation, Every, Fit, OptimConfig, Schedule, Step};
    use tch::nn::{self, ModuleT};
    use tch::{Device, Kind, Tensor};
    tch::set_num_threads(1);
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = nn::seq_t()
        .add(nn::linear(vs.root() / "a", 32, 1024, Default::default()))
        .add_fn(|x| x.relu())
        .add_fn_t(|x, train| x.dropout(0.2, train))
        .add(nn::linear(vs.root() / "b", 1024, 1, Default::default()));
    let x = Tensor::arange(32 * 1024, (Kind::Float, Device::Cpu)).reshape([1024, 32]).sin();
    let y = x.sum_dim_intlist([1].as_slice(), true, Kind::Float).cos();
    let optim = OptimConfig::adamw(1e-3, (0.9, 0.999), 0.01).schedule(Schedule::WarmupCosine { warmup: 0.05 });
    let fit = Fit::epochs("fit-demo", 12, 40, &optim).resumable(dir, &"fit-demo-mlp-32-1024-1", Every::Steps(10), 3)?;
    let batches = |_epoch| {
        let order = Tensor::randperm(1024, (Kind::Int64, Device::Cpu));
        (0..40).map(move |b| order.narrow(0, b * 25, 25))
    };
    let step = |idx: Tensor| {
        let loss = (net.forward_t(&x.index_select(0, &idx), true) - y.index_select(0, &idx)).square().mean(Kind::Float);
        Ok(Step { loss, weight: 25.0, correct: None })
    };
    let eval = || {
        Ok(Evaluation {
            loss: Some((net.forward_t(&x, false) - &y).square().mean(Kind::Float).double_value(&[])),
            accuracy: None,
        })
    };
    fit.run(&vs, batches, step, eval)?;
    vs.save(dir.join("final.safetensors"))?;
    Ok(())
}

/// Runs a small computation through libtorch: the part of doctor that needs it loaded.
fn check_compute() -> Check {
    let device = hw9::device();
    let run = || -> Result<f64, tch::TchError> {
        let x = tch::Tensor::f_ones([64, 64], (tch::Kind::Float, device))?;
        x.f_matmul(&x)?.f_sum(tch::Kind::Double)?.f_double_value(&[])
    };
    match run() {
        Ok(v) if v == 64.0 * 64.0 * 64.0 => {
            let cuda = if tch::Cuda::is_available() {
                format!("CUDA available ({} device(s))", tch::Cuda::device_count())
            } else {
                "no CUDA device: running on the CPU".to_string()
            };
            Check::ok(
                "compute",
                format!("a matmul on {device:?} gives the right sum; {cuda}; {} threads", tch::get_num_threads()),
            )
        }
        Ok(v) => Check::fail(
            "compute",
            format!("a 64x64 ones matmul summed to {v}, expected 262144"),
            "rm -rf .venv && make setup",
        ),
        Err(e) => Check::fail("compute", format!("libtorch failed: {e}"), "rm -rf .venv && make setup"),
    }
}

fn run(cmd: Cmd) -> hw9::Result<bool> {
    match cmd {
        Cmd::Doctor => {
            let mut checks = doctor::checks();
            checks.push(check_compute());
            Ok(doctor::report(&checks))
        }
        Cmd::Release { check, solutions, out } => {
            let specs = hw9::paths::assets().join("grading");
            let done = hw9::grading::release::release_all(&solutions, &out, &specs, check)?;
            let stale: Vec<_> = done.iter().filter(|r| r.changed).collect();
            for r in &done {
                let state = match (r.changed, check) {
                    (false, _) => "up to date",
                    (true, true) => "OUT OF DATE",
                    (true, false) => "written",
                };
                println!(
                    "{state:11} {} ({} solution regions) from {}",
                    r.student.display(),
                    r.regions,
                    r.solution.display()
                );
            }
            if check && !stale.is_empty() {
                println!("{} student notebook(s) differ from their sources: run `make release`", stale.len());
                return Ok(false);
            }
            Ok(true)
        }
        #[cfg(feature = "reference")]
        Cmd::VitMae { out, vit_only: true } => {
            let profile = hw9::profile()?;
            let (acc, secs) = hw9::tasks::vit_mae::run_vit(profile, hw9::device())?;
            let (v, _, _) = hw9::plan::VitMaePlan::for_profile(profile).thresholds;
            println!(
                "ViT test accuracy     {acc:.4} (threshold {v}) in {secs:.0} s (nothing saved in {})",
                out.display()
            );
            Ok(acc >= v)
        }
        #[cfg(feature = "reference")]
        Cmd::VitMae { out, vit_only: false } => {
            let profile = hw9::profile()?;
            let r = hw9::tasks::vit_mae::run_vit_mae(profile, hw9::device(), &out)?;
            let (v, p, f) = hw9::plan::VitMaePlan::for_profile(profile).thresholds;
            println!("ViT test accuracy     {:.4} (threshold {v}) in {:.0} s", r.vit_acc, r.seconds[0]);
            println!("MAE pretraining       {:.0} s", r.seconds[1]);
            println!("linear probe accuracy {:.4} (threshold {p}) in {:.0} s", r.probe_acc, r.seconds[2]);
            println!("finetune accuracy     {:.4} (threshold {f}) in {:.0} s", r.finetune_acc, r.seconds[3]);
            println!("total {:.0} s", r.seconds.iter().sum::<f64>());
            Ok(r.vit_acc >= v && r.probe_acc >= p && r.finetune_acc >= f)
        }
        #[cfg(feature = "reference")]
        Cmd::Facenet { json } => {
            let profile = hw9::profile()?;
            let r = hw9::tasks::facenet::run_facenet(profile, hw9::device())?;
            let (val, nn, purity) = hw9::plan::FacenetPlan::for_profile(profile).thresholds;
            let all: Vec<_> = std::iter::once(r.main.clone())
                .chain(r.dims.clone())
                .chain(r.fractions.clone())
                .chain(r.minings.clone())
                .collect();
            println!("{}", hw9::tasks::facenet::experiments_table(&all));
            let m = &r.main.report;
            println!(
                "main run: VAL {:.4} at FAR {:.1e} (threshold {val}), NN accuracy {:.4} (threshold {nn}), purity {:.4} (threshold {purity}); total {:.0} s",
                m.verification.val, m.verification.far, m.nn_accuracy, m.purity,
                all.iter().map(|e| e.seconds).sum::<f64>()
            );
            if let Some(path) = json {
                hw9::io::write_atomic(&path, &serde_json::to_vec_pretty(&r)?)?;
            }
            Ok(m.verification.val >= val && m.nn_accuracy >= nn && m.purity >= purity)
        }
        #[cfg(feature = "reference")]
        Cmd::Bench { batch, warmup, steps, threads, precision } => {
            if let Some(t) = threads {
                tch::set_num_threads(t);
            }
            let device = hw9::device();
            println!(
                "device {device:?}, {} threads, batch {batch}, median of {steps} steps after {warmup}",
                tch::get_num_threads()
            );
            for profile in [hw9::Profile::Cpu, hw9::Profile::Full] {
                timed_precisions(&format!("{profile:>4} sizes"), precision, |p| {
                    let (vit, mae) = hw9::bench::vit_mae_steps(profile, batch, warmup, steps, device, p)?;
                    Ok(vec![("ViT step", vit), ("MAE step", mae)])
                })?;
            }
            Ok(true)
        }
        #[cfg(feature = "reference")]
        Cmd::Summarize {
            out,
            logdir,
            state,
            epochs,
            label_smoothing,
            evaluate,
            warm_start,
            decoder_layers,
            lr,
            minutes,
        } => {
            let start = std::time::Instant::now();
            let opts = hw9::tasks::summarization::SummarizeOptions {
                out,
                logdir,
                state,
                epochs,
                minutes,
                label_smoothing,
                lr,
                warm_start: warm_start.then_some(decoder_layers),
                evaluate,
            };
            let r = hw9::tasks::summarization::run_summarization(hw9::profile()?, hw9::device(), &opts)?;
            for e in &r.history.epochs {
                let (loss, acc) = (e.val_loss.unwrap_or(f64::NAN), e.val_acc.unwrap_or(f64::NAN));
                println!(
                    "epoch {}: train loss {:.4}, validation loss {loss:.4}, validation accuracy {acc:.4} ({:.0} s)",
                    e.epoch, e.train_loss, e.seconds
                );
            }
            println!("training {:.0} s for {} steps", r.training_seconds, r.history.step_losses.len());
            for s in &r.samples {
                println!("- {}\n  reference: {}\n  generated: {}", s.package, s.reference, s.generated);
            }
            if let Some(lead) = &r.lead {
                let (r1, r2, rl) = lead.test;
                let val = lead.validation.iter().find(|v| v.0 == lead.k).map_or(f64::NAN, |v| v.3);
                println!(
                    "Lead-k: k = {} (validation ROUGE-L {val:.4}); test R1 {r1:.4} R2 {r2:.4} RL {rl:.4} ({} docs)",
                    lead.k, r.test_docs
                );
            }
            for row in &r.model {
                let [r1, r2, rl] = row.rouge;
                let repeats = if row.gallery.is_empty() {
                    String::new()
                } else {
                    format!("; gallery summaries with a word three times in a row: {}/20", row.gallery_triple_repeats)
                };
                println!(
                    "test ROUGE, {} ({} docs): R1 {r1:.4} R2 {r2:.4} RL {rl:.4}{repeats} ({:.0} s)",
                    row.decoding, r.test_docs, row.seconds
                );
            }
            println!("total {:.0} s", start.elapsed().as_secs_f64());
            Ok(true)
        }
        #[cfg(feature = "reference")]
        Cmd::BenchSummarizer { size, batch, warmup, steps, threads, precision } => {
            if let Some(t) = threads {
                tch::set_num_threads(t);
            }
            let device = hw9::device();
            let vocab = hw9::data::text::SubwordTokenizer::load_default()?.vocab_size();
            println!(
                "device {device:?}, {} threads, batch {batch}, vocab {vocab}, median of {steps} steps after {warmup}",
                tch::get_num_threads()
            );
            use hw9::models::summarizer::SummarizerConfig;
            let [(_, cpu_src, cpu_tgt), (_, full_src, full_tgt)] = hw9::plan::SUMMARIZER_BENCH_LENGTHS;
            for (which, name, cfg, src, tgt) in [
                (Sizes::Cpu, "cpu", SummarizerConfig::cpu(vocab), cpu_src, cpu_tgt),
                (Sizes::Full, "full", SummarizerConfig::full(vocab), full_src, full_tgt),
            ] {
                if size != Sizes::Both && size != which {
                    continue;
                }
                timed_precisions(&format!("{name:>4} size (source {src}, summary {tgt} tokens)"), precision, |p| {
                    Ok(vec![("step", hw9::bench::summarizer_step(&cfg, batch, src, tgt, warmup, steps, device, p)?)])
                })?;
            }
            Ok(true)
        }
        Cmd::Corpus { from, out, min_words } => {
            let text = std::fs::read_to_string(&from).map_err(|e| hw9::Error::io(&from, e))?;
            let raw = hw9::data::corpus::parse_translation(&text);
            let n_raw = raw.len();
            let pairs = hw9::data::corpus::clean(raw, min_words);
            hw9::data::corpus::write_pairs(&pairs, &out)?;
            let count = |s: &str| hw9::data::corpus::split(&pairs, s).len();
            println!(
                "{n_raw} descriptions -> {} pairs (train {}, validation {}, test {}) in {}",
                pairs.len(),
                count("train"),
                count("validation"),
                count("test"),
                out.display()
            );
            Ok(true)
        }
        Cmd::Plan { profile } => {
            let profile = match profile {
                Some(p) => p,
                None => hw9::profile()?,
            };
            let vocab = hw9::data::text::SubwordTokenizer::load_default()?.vocab_size();
            let lengths: Vec<_> = hw9::plan::SUMMARIZER_BENCH_LENGTHS
                .iter()
                .map(|&(size, src, tgt)| serde_json::json!({"size": size, "source": src, "summary": tgt}))
                .collect();
            let plans = serde_json::json!({
                "profile": profile,
                "vit_mae": hw9::plan::VitMaePlan::for_profile(profile),
                "summarization": hw9::plan::SummarizationPlan::for_profile(profile, vocab),
                "gpt": hw9::plan::GptPlan::for_profile(profile),
                "facenet": hw9::plan::FacenetPlan::for_profile(profile),
                "bench_summarizer": {
                    "cpu": hw9::models::summarizer::SummarizerConfig::cpu(vocab),
                    "full": hw9::models::summarizer::SummarizerConfig::full(vocab),
                    "lengths": lengths,
                },
            });
            println!("{}", serde_json::to_string_pretty(&plans)?);
            Ok(true)
        }
        Cmd::Tokenizer { vocab, out } => {
            let pairs = hw9::data::corpus::read_pairs(&hw9::data::corpus::corpus_path())?;
            let train = hw9::data::corpus::split(&pairs, "train");
            let texts = train.iter().flat_map(|p| [p.document.as_str(), p.summary.as_str()]);
            let start = std::time::Instant::now();
            let tok = hw9::data::text::SubwordTokenizer::train(texts, vocab)?;
            tok.save(&out)?;
            let lens = |f: fn(&hw9::data::corpus::Pair) -> &str| -> hw9::Result<Vec<usize>> {
                let mut v = train
                    .iter()
                    .map(|p| tok.encode(f(p), usize::MAX).map(|t| t.len()))
                    .collect::<hw9::Result<Vec<_>>>()?;
                v.sort_unstable();
                Ok(v)
            };
            let (docs, sums) = (lens(|p| &p.document)?, lens(|p| &p.summary)?);
            let q = |v: &[usize], f: f64| v[((v.len() - 1) as f64 * f) as usize];
            println!(
                "{} ids trained on {} pairs in {:.1} s; saved to {}",
                tok.vocab_size(),
                train.len(),
                start.elapsed().as_secs_f64(),
                out.display()
            );
            println!(
                "document tokens: median {}, p90 {}, p99 {}, max {}",
                q(&docs, 0.5),
                q(&docs, 0.9),
                q(&docs, 0.99),
                q(&docs, 1.0)
            );
            println!(
                "summary tokens:  median {}, p90 {}, p99 {}, max {}",
                q(&sums, 0.5),
                q(&sums, 0.9),
                q(&sums, 0.99),
                q(&sums, 1.0)
            );
            Ok(true)
        }
        Cmd::TrainGpt { minutes, out, state, batch, lr } => {
            let profile = hw9::profile()?;
            let mut plan = hw9::plan::GptPlan::for_profile(profile);
            if let Some(m) = minutes {
                plan.seconds = m * 60.0;
            }
            if let Some(b) = batch {
                plan.batch_size = b;
            }
            if let Some(lr) = lr {
                plan.optim.lr = lr;
            }
            if let Some(dir) = state {
                plan.resumable_in(dir);
            }
            let r = hw9::tasks::language_model::train_small_gpt2(&plan, &out, hw9::device())?;
            println!(
                "{} steps, {} tokens in {:.0} s; loss {:.3} -> {:.3}; saved to {}",
                r.steps,
                r.tokens_seen,
                r.seconds,
                r.first_loss,
                r.final_loss,
                out.display()
            );
            Ok(true)
        }
        Cmd::Smollm2 { prompt, chat, max_new_tokens, repeats } => {
            smollm2(&prompt, chat, max_new_tokens, repeats)?;
            Ok(true)
        }
        Cmd::FinetuneLm { minutes, out, state, top_layers, batch, lr, max_doc_tokens, test, evaluate_only } => {
            let mut plan = hw9::tasks::lm_summarizer::LmSummaryPlan::for_profile(hw9::profile()?);
            if let Some(m) = minutes {
                if !(m.is_finite() && m >= 0.0) {
                    return Err(hw9::Error::Input(format!("--minutes: expected 0 or more, got {m}")));
                }
                plan.seconds = m * 60.0;
            }
            if let Some(k) = top_layers {
                plan.model.top_layers = k;
            }
            if let Some(b) = batch {
                plan.batch_size = b;
            }
            if let Some(lr) = lr {
                plan.optim.lr = lr;
            }
            if let Some(n) = max_doc_tokens {
                plan.model.max_doc_tokens = n;
            }
            if let Some(dir) = state {
                plan.resumable_in(dir);
            }
            finetune_lm(&plan, &out, test, evaluate_only)?;
            Ok(true)
        }
        Cmd::FitDemo { dir } => {
            fit_demo(&dir)?;
            Ok(true)
        }
        Cmd::Written { notebooks, out } => {
            let w = hw9_grade::written::write_written(&notebooks, &out)?;
            println!(
                "wrote {} and {} ({} questions from {})",
                w.markdown.display(),
                w.html.display(),
                w.questions,
                notebooks.display()
            );
            if w.unanswered.is_empty() {
                println!("every question is answered");
            } else {
                println!("unanswered ({}):", w.unanswered.len());
                for u in &w.unanswered {
                    println!("  {u}");
                }
            }
            Ok(true)
        }
        Cmd::Handout { out } => {
            let h = hw9::grading::handout::write_handout(&hw9::paths::root(), &out)?;
            println!(
                "handout: {} ({} files) and {}; grader files (autograder expected outputs, points): {}",
                h.dir.display(),
                h.files,
                h.archive.display(),
                h.grader.display()
            );
            Ok(true)
        }
        Cmd::Grade(args) => Ok(args.run()?),
    }
}

fn main() {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

/// `hw9 finetune-lm`: trains (or loads, or takes the base model as it is), then scores the first
/// `test` test documents with ROUGE beside Lead-k, and prints a few synopses.
fn finetune_lm(
    plan: &hw9::tasks::lm_summarizer::LmSummaryPlan,
    out: &std::path::Path,
    test: usize,
    evaluate_only: bool,
) -> hw9::Result<()> {
    use hw9::tasks::lm_summarizer::{fine_tune, test_rouge, LmSummarizer};
    let device = hw9::device();
    let zero_shot = !evaluate_only && plan.seconds <= 0.0;
    // Never write over a folder that holds something else (the base model, say).
    let config = out.join("config.json");
    if !evaluate_only && !zero_shot && config.exists() {
        let text = std::fs::read_to_string(&config).map_err(|e| hw9::Error::io(&config, e))?;
        if serde_json::from_str::<hw9::tasks::lm_summarizer::LmSummarizerConfig>(&text).is_err() {
            return Err(hw9::Error::Input(format!(
                "--out {}: expected a folder of its own or an earlier fine-tuned summarizer's, got one whose \
                 config.json is something else: choose another --out",
                out.display()
            )));
        }
    }
    let s = if evaluate_only {
        LmSummarizer::load(out, device)?
    } else if zero_shot {
        println!("no training: the base model as it is (zero-shot)");
        LmSummarizer::base(&plan.model, device)?
    } else {
        let (s, r) = fine_tune(plan, out, device)?;
        println!("{}", serde_json::to_string_pretty(&r)?);
        println!("saved to {}", out.display());
        s
    };
    if test == 0 {
        return Ok(());
    }
    let pairs = hw9::data::corpus::read_pairs(&hw9::data::corpus::corpus_path())?;
    let test_pairs: Vec<hw9::data::corpus::Pair> =
        hw9::data::corpus::split(&pairs, "test").into_iter().take(test).cloned().collect();
    let t0 = std::time::Instant::now();
    let (predictions, (r1, r2, rl)) = test_rouge(&s, &test_pairs, test)?;
    let secs = t0.elapsed().as_secs_f64();
    let validation: Vec<hw9::data::corpus::Pair> =
        hw9::data::corpus::split(&pairs, "validation").into_iter().take(test).cloned().collect();
    let lead = hw9::tasks::summarization::lead_baseline_of(&validation, &test_pairs, 4..=20, test)?;
    let (k, (l1, l2, ll)) = (lead.k, lead.test);
    println!(
        "{} test documents in {secs:.0} s ({:.2} s each): ROUGE-1 {r1:.4} ROUGE-2 {r2:.4} ROUGE-L {rl:.4}; \
         Lead-{k} (k chosen on validation) {l1:.4} {l2:.4} {ll:.4}",
        test_pairs.len(),
        secs / test_pairs.len().max(1) as f64
    );
    for (p, pred) in test_pairs.iter().zip(&predictions).take(8) {
        println!("- {}\n  reference: {}\n  model:     {pred}", p.package, p.summary);
    }
    let scores = serde_json::json!({
        "documents": test_pairs.len(), "seconds": secs,
        "model": if zero_shot { "the base model, zero-shot" } else { "fine-tuned" }, "config": s.config,
        "rouge": [r1, r2, rl], "lead": { "k": k, "rouge": [l1, l2, ll] },
        "predictions": predictions,
    });
    // A zero-shot score goes beside, never over, a fine-tuned model's own.
    let file = if zero_shot { "test_rouge_zero_shot.json" } else { "test_rouge.json" };
    if out.exists() {
        hw9::io::write_atomic(&out.join(file), &serde_json::to_vec_pretty(&scores)?)?;
        println!("scores and summaries in {}", out.join(file).display());
    }
    Ok(())
}

/// `hw9 smollm2`: loads the model, times a forward with attention over a 20-token sentence, and
/// generates.
fn smollm2(prompt: &str, chat: bool, max_new_tokens: usize, repeats: usize) -> hw9::Result<()> {
    use hw9::models::llama::load_default;
    let device = hw9::device();
    let t0 = std::time::Instant::now();
    let (_vs, model, tok) = load_default(device)?;
    println!(
        "loaded SmolLM2-135M-Instruct in {:.2} s ({device:?}, {} threads)",
        t0.elapsed().as_secs_f64(),
        tch::get_num_threads()
    );
    let sentence = "The quick brown fox jumps over the lazy dog, and then it runs back into the dark forest."; // 20 tokens
    let mut secs = Vec::new();
    let mut n = 0;
    for _ in 0..repeats.max(1) {
        let t = std::time::Instant::now();
        let (tokens, out) = model.attend(&tok, sentence)?;
        let _ = out.layers.last().map(|l| l.probs.sum(tch::Kind::Float).double_value(&[]));
        secs.push(t.elapsed().as_secs_f64());
        n = tokens.len();
    }
    secs.sort_by(f64::total_cmp);
    println!(
        "forward with attention ({n} tokens, {} layers): median {:.3} s, first {:.3} s over {} runs",
        model.cfg.num_hidden_layers,
        secs[secs.len() / 2],
        secs[0],
        secs.len()
    );
    let text = if chat { hw9::data::tokenize::LlamaTokenizer::chat_prompt(prompt) } else { prompt.to_string() };
    let (ids, _) = tok.encode(&text)?;
    let g = model.generate(&ids, max_new_tokens, &tok.stop_ids())?;
    println!(
        "generated {} tokens: prompt ({} tokens) {:.3} s, then {:.1} tokens/s",
        g.ids.len(),
        ids.len(),
        g.prompt_seconds,
        g.tokens_per_second
    );
    println!("{prompt}{}", if chat { "\n→ " } else { "" });
    println!("{}", tok.decode(&g.ids)?);
    Ok(())
}

//! The grader's measurement of a submission's trained models (issue 29): the submitted weights
//! loaded into the notebook's **own** model code and evaluated on held-out data whose labels stay
//! with the grader. The thresholds are graded on these figures; the ones the student's notebook
//! printed are shown beside them and never scored.
//!
//! Two sides, in two programs (`hw9_grade::rerun` builds both into its harness crate):
//! - **trusted**, outside the sandbox, no student code in it ([`prepare`], [`score`],
//!   [`trusted_main`]): `prepare` writes the held-out inputs the sandbox may read — the test
//!   images normalised as the notebook's trainers normalise them, in an order the grader shuffles
//!   with a seed drawn per grading run, without their labels; the summarizer's validation pairs,
//!   tokenised — and a key (the labels, in that order) that never enters the sandbox. `score`
//!   computes each figure from the sandbox's outputs and the key with the crate's own functions:
//!   accuracy; VAL at FAR, nearest-neighbour accuracy and k-means purity
//!   ([`crate::tasks::verification`]).
//! - **in the harness**, beside the student's TODO cells ([`Measure`], [`classifier`],
//!   [`embedding`], [`summarizer`]): builds the student's model with the plan of the profile the
//!   submission ran in, loads `weights/<model>.safetensors` (every variable, by name and shape),
//!   runs it in evaluation mode and prints what it computed (predicted classes, embeddings, the
//!   summarizer's validation loss and accuracy) as the grader's lines
//!   ([`Recorder::grader_output`]).
//!
//! What it cannot prevent: a model that recognises the held-out images (Fashion-MNIST's test set
//! is public: a lookup of its images and labels could travel in the submitted weights, as extra
//! variables the student's model code reads; the shuffled order does not stop it), and,
//! for the summarizer, teacher forcing: its validation loss is computed in the sandbox from the
//! targets the decoder is fed, as the notebook computes it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use crate::data::seq2seq::Example;
use crate::data::text::SummaryData;
use crate::error::{Error, Result};
use crate::grading::check::Recorder;
use crate::models::summarizer::Summarizer;
use crate::plan::{FacenetPlan, SummarizationPlan, VitMaePlan};
use crate::profile::Profile;

/// The environment variables the grader sets for the harness: the held-out inputs' file.
pub const INPUTS_VAR: &str = "HW9_GRADE_MEASURE";
/// The folder holding the submission's `<model>.safetensors`.
pub const WEIGHTS_VAR: &str = "HW9_GRADE_WEIGHTS";
/// The profile the submission ran in (its plan sizes the models).
pub const PROFILE_VAR: &str = "HW9_GRADE_PROFILE";

/// The models a notebook submits (`weights/<model>.safetensors`) and the figures each gives, as
/// the grading spec names the thresholds.
pub fn models_of(notebook: &str) -> &'static [(&'static str, &'static [&'static str])] {
    match notebook {
        "01_vit_mae" => {
            &[("vit", &["vit_test_acc"]), ("probe", &["linear_probe_test_acc"]), ("finetune", &["finetune_test_acc"])]
        }
        "02_summarization" => {
            &[("summarizer", &["val_loss", "val_acc"]), ("summarizer_previous", &["val_loss_decrease"])]
        }
        "04_facenet" => &[("facenet", &["val_at_far", "nn_accuracy", "kmeans_purity"])],
        // No weights: the line is trained again by the grader, with the notebook's own `mse`.
        "00_setup_check" => &[("line", &["line_fit"])],
        _ => &[],
    }
}

/// The name of a model's output among the grader's lines.
pub fn output_name(model: &str) -> String {
    format!("measure.{model}")
}

// ---------------------------------------------------------------------------------------------
// In the harness.

/// The held-out inputs and the submitted weights, as the grader hands them to the harness.
#[derive(Debug)]
pub struct Measure {
    inputs: BTreeMap<String, Tensor>,
    weights: PathBuf,
    profile: Profile,
}

impl Measure {
    /// The measurement the grader asked for (`HW9_GRADE_MEASURE`, `HW9_GRADE_WEIGHTS`,
    /// `HW9_GRADE_PROFILE`), or `None` when it asked for none.
    pub fn from_env() -> Result<Option<Self>> {
        let Some(inputs) = std::env::var_os(INPUTS_VAR) else { return Ok(None) };
        let weights = std::env::var_os(WEIGHTS_VAR)
            .map(PathBuf::from)
            .ok_or_else(|| Error::Input(format!("{INPUTS_VAR} is set but {WEIGHTS_VAR} is not")))?;
        let profile = Profile::parse(&std::env::var(PROFILE_VAR).unwrap_or_default())?;
        let inputs = Path::new(&inputs);
        let inputs = Tensor::read_safetensors(inputs)
            .map_err(|e| Error::corrupt("held-out inputs", inputs.to_path_buf(), e.to_string()))?
            .into_iter()
            .collect();
        Ok(Some(Measure { inputs, weights, profile }))
    }

    /// The profile the submission ran in.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    fn input(&self, name: &str) -> std::result::Result<&Tensor, String> {
        self.inputs.get(name).ok_or_else(|| format!("the grader's inputs have no {name:?}"))
    }

    /// Loads the submitted `<model>.safetensors` into `vs`: every variable by name and shape.
    fn load(&self, model: &str, vs: &nn::VarStore) -> std::result::Result<(), String> {
        let path = self.weights.join(format!("{model}.safetensors"));
        let tensors =
            crate::io::read_weights(&path, "the submission has no such weights").map_err(|e| e.to_string())?;
        crate::io::copy_weights(vs, &tensors, &format!("the submitted weights {model:?}")).map_err(|e| {
            format!("{e} (the weights must fit the model your notebook builds in the {} profile)", self.profile)
        })
    }
}

/// Runs `f` on `inputs` in chunks of 500 rows, without gradients.
fn chunked(inputs: &Tensor, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
    let n = inputs.size()[0];
    tch::no_grad(|| {
        let parts: Vec<Tensor> = (0..n).step_by(500).map(|s| f(&inputs.narrow(0, s, 500.min(n - s)))).collect();
        Tensor::cat(&parts, 0)
    })
}

fn rows(t: &Tensor, n: i64, what: &str) -> std::result::Result<(), String> {
    if t.dim() != 2 || t.size()[0] != n {
        return Err(format!(
            "expected {what} of shape (n, d) with n = {n}, got {}",
            crate::error::fmt_shape(&t.size())
        ));
    }
    if t.isfinite().all().int64_value(&[]) == 0 {
        return Err(format!("expected finite {what}, got NaN or infinity"));
    }
    Ok(())
}

/// Measures a classifier: builds it with `build` (the notebook's own code), loads the submitted
/// weights `model`, and prints its predicted class for each held-out image (`images`).
pub fn classifier<M: ModuleT>(
    rec: &mut Recorder,
    m: &Measure,
    model: &str,
    build: impl FnOnce(&nn::Path) -> M,
) -> bool {
    rec.grader_output(&output_name(model), || {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build(&vs.root());
        m.load(model, &vs)?;
        let images = m.input("images")?;
        let logits = chunked(images, |x| net.forward_t(x, false).to_kind(Kind::Float));
        rows(&logits, images.size()[0], "logits")?;
        Ok(vec![(output_name(model), logits.argmax(-1, false).to_kind(Kind::Int64))])
    })
}

/// Measures an embedding: builds it with `build`, loads the weights `model`, and prints the
/// embeddings of the held-out `test_images` and `gallery_images`.
pub fn embedding<M: ModuleT>(rec: &mut Recorder, m: &Measure, model: &str, build: impl FnOnce(&nn::Path) -> M) -> bool {
    rec.grader_output(&output_name(model), || {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build(&vs.root());
        m.load(model, &vs)?;
        let mut out = Vec::new();
        for (i, set) in ["test_images", "gallery_images"].iter().enumerate() {
            let images = m.input(set)?;
            let emb = chunked(images, |x| net.forward_t(x, false).to_kind(Kind::Float));
            rows(&emb, images.size()[0], "embeddings")?;
            out.push((format!("{}.{i}", output_name(model)), emb));
        }
        Ok(out)
    })
}

/// The setup check's line fit, measured by training it again: the notebook's training (a 1 → 1
/// linear layer, plain SGD at 0.1, 200 steps) on the grader's points (`line_x`, `line_y`: the
/// notebook's line `y = 3x − 1` with noise, drawn per grading run), with the notebook's own `loss`
/// (its `mse`); prints the learned slope.
pub fn line_fit(rec: &mut Recorder, m: &Measure, model: &str, loss: impl Fn(&Tensor, &Tensor) -> Tensor) -> bool {
    use tch::nn::{Module, OptimizerConfig};
    rec.grader_output(&output_name(model), || {
        let (x, y) = (m.input("line_x")?, m.input("line_y")?);
        let vs = nn::VarStore::new(Device::Cpu);
        let line = nn::linear(vs.root() / "line", 1, 1, Default::default());
        let mut opt = nn::Sgd::default().build(&vs, 0.1).map_err(|e| e.to_string())?;
        for _ in 0..200 {
            let l = loss(&line.forward(x), y);
            if l.numel() != 1 || !l.requires_grad() {
                return Err(format!(
                    "expected the loss as one number that gradients flow through, got shape {}{}",
                    crate::error::fmt_shape(&l.size()),
                    if l.requires_grad() { "" } else { " without a gradient" }
                ));
            }
            opt.backward_step(&l);
        }
        Ok(vec![(output_name(model), line.ws.detach().reshape([1]).to_kind(Kind::Double))])
    })
}

/// The validation examples from the inputs' flat token lists.
fn examples_of(m: &Measure) -> std::result::Result<Vec<Example>, String> {
    let list = |flat: &str, lens: &str| -> std::result::Result<Vec<Vec<i64>>, String> {
        let flat = Vec::<i64>::try_from(m.input(flat)?).map_err(|e| e.to_string())?;
        let lens = Vec::<i64>::try_from(m.input(lens)?).map_err(|e| e.to_string())?;
        let mut at = 0usize;
        let mut out = Vec::new();
        for l in lens {
            let end = at + l.max(0) as usize;
            out.push(flat.get(at..end).ok_or("the grader's inputs are inconsistent")?.to_vec());
            at = end;
        }
        Ok(out)
    };
    let src = list("src", "src_lengths")?;
    let tgt = list("tgt", "tgt_lengths")?;
    Ok(src.into_iter().zip(tgt).map(|(src, tgt)| Example { src, tgt }).collect())
}

/// The summarizer's plan for a measurement (its vocabulary size is the grader's input).
pub fn summarization_plan(m: &Measure) -> Result<SummarizationPlan> {
    let vocab = m.input("vocab_size").map_err(Error::Input)?.int64_value(&[]);
    Ok(SummarizationPlan::for_profile(m.profile, vocab))
}

/// Measures a summarizer: builds it with `build`, loads the weights `model`, and prints its mean
/// loss per target token and teacher-forced accuracy on the validation pairs, as the notebook's
/// training computes them after each epoch.
pub fn summarizer(
    rec: &mut Recorder,
    m: &Measure,
    model: &str,
    build: impl FnOnce(&nn::Path) -> Result<Summarizer>,
) -> bool {
    rec.grader_output(&output_name(model), || {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = build(&vs.root()).map_err(|e| e.to_string())?;
        m.load(model, &vs)?;
        let examples = examples_of(m)?;
        let (loss, acc) =
            crate::tasks::summarization::evaluate(&net, &examples, 64, Device::Cpu).map_err(|e| e.to_string())?;
        Ok(vec![(output_name(model), Tensor::from_slice(&[loss, acc]))])
    })
}

// ---------------------------------------------------------------------------------------------
// The grader's side.

type Named = Vec<(String, Tensor)>;

/// Shuffles `images` and `labels` alike with `seed`; also returns the order (row `i` of the
/// shuffled set is row `order[i]` of the given one).
fn shuffled(images: &Tensor, labels: &Tensor, seed: u64) -> (Tensor, Tensor, Tensor) {
    tch::manual_seed(seed as i64);
    let order = Tensor::randperm(images.size()[0], (Kind::Int64, Device::Cpu));
    (images.index_select(0, &order), labels.index_select(0, &order), order)
}

/// Rows of a shuffled set put back in the given order (see [`shuffled`]).
fn unshuffled(rows: &Tensor, order: &Tensor) -> Tensor {
    rows.index_select(0, &order.argsort(0, false))
}

/// The held-out inputs for the sandbox and the key that stays with the grader, for `notebook`'s
/// models in `profile`, shuffled with `seed`.
pub fn prepare(notebook: &str, profile: Profile, seed: u64) -> Result<(Named, Named)> {
    match notebook {
        "01_vit_mae" => {
            let data = VitMaePlan::for_profile(profile).data()?;
            let (images, labels, _) = shuffled(&data.normalize(&data.test.images), &data.test.labels, seed);
            Ok((vec![("images".into(), images)], vec![("labels".into(), labels)]))
        }
        "04_facenet" => {
            let plan = FacenetPlan::for_profile(profile);
            let data = plan.data()?;
            let first = |set: &crate::data::images::ImageSet, n: i64| {
                let n = n.min(set.images.size()[0]);
                (data.normalize(&set.images.narrow(0, 0, n)), set.labels.narrow(0, 0, n))
            };
            let (test, test_labels) = first(&data.test, plan.eval.test);
            let (gallery, gallery_labels) = first(&data.train, plan.eval.gallery);
            let (test, test_labels, test_order) = shuffled(&test, &test_labels, seed);
            let (gallery, gallery_labels, _) = shuffled(&gallery, &gallery_labels, seed.wrapping_add(1));
            Ok((
                vec![("test_images".into(), test), ("gallery_images".into(), gallery)],
                vec![
                    ("test_labels".into(), test_labels),
                    ("gallery_labels".into(), gallery_labels),
                    ("test_order".into(), test_order),
                ],
            ))
        }
        "02_summarization" => {
            let vocab_probe = SummarizationPlan::for_profile(profile, 1);
            let data = SummaryData::load(&vocab_probe.data)?;
            let flat = |f: fn(&Example) -> &Vec<i64>| {
                let all: Vec<i64> = data.validation.iter().flat_map(|e| f(e).iter().copied()).collect();
                let lens: Vec<i64> = data.validation.iter().map(|e| f(e).len() as i64).collect();
                (Tensor::from_slice(&all), Tensor::from_slice(&lens))
            };
            let (src, src_lengths) = flat(|e| &e.src);
            let (tgt, tgt_lengths) = flat(|e| &e.tgt);
            Ok((
                vec![
                    ("src".into(), src),
                    ("src_lengths".into(), src_lengths),
                    ("tgt".into(), tgt),
                    ("tgt_lengths".into(), tgt_lengths),
                    ("vocab_size".into(), Tensor::from(data.tokenizer.vocab_size())),
                ],
                vec![("validation_pairs".into(), Tensor::from(data.validation.len() as i64))],
            ))
        }
        "00_setup_check" => {
            // The notebook's line, y = 3x − 1 plus noise, at points of this grading run.
            tch::manual_seed(seed as i64);
            let x = Tensor::rand([64, 1], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
            let y = &x * 3.0 - 1.0 + Tensor::randn([64, 1], (Kind::Float, Device::Cpu)) * 0.1;
            Ok((vec![("line_x".into(), x), ("line_y".into(), y)], vec![("slope".into(), Tensor::from(3.0f64))]))
        }
        _ => Err(Error::Input(format!("no models of {notebook:?} are measured"))),
    }
}

/// The most a summarizer one epoch before the last may lose on the validation pairs: the `cpu`
/// runs' previous epoch comes to about 5.3 (BENCHMARKS.md), a model never trained to about 9.4.
/// "The loss fell in the last epoch" is only graded against a previous model that was trained.
pub const PREVIOUS_EPOCH_MAX_LOSS: f64 = 6.0;

fn accuracy(predicted: &Tensor, labels: &Tensor) -> Result<f64> {
    if predicted.size() != labels.size() {
        return Err(Error::Shape { what: "predicted classes".into(), expected: labels.size(), got: predicted.size() });
    }
    Ok(predicted
        .to_kind(Kind::Int64)
        .eq_tensor(&labels.to_kind(Kind::Int64))
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[]))
}

/// Each figure of `notebook` that the sandbox's `outputs` (by [`output_name`]) and the `key`
/// give, or why it could not be computed.
pub fn score(
    notebook: &str,
    profile: Profile,
    outputs: &BTreeMap<String, Tensor>,
    key: &BTreeMap<String, Tensor>,
) -> BTreeMap<String, std::result::Result<f64, String>> {
    let mut figures = BTreeMap::new();
    let get = |name: &str| outputs.get(name).ok_or_else(|| format!("no output {name}"));
    let keyed = |name: &str| key.get(name).ok_or_else(|| format!("the key has no {name}"));
    for (model, names) in models_of(notebook) {
        let out = output_name(model);
        let computed: std::result::Result<Vec<f64>, String> = match notebook {
            "01_vit_mae" => (|| {
                let acc = accuracy(get(&out)?, keyed("labels")?).map_err(|e| e.to_string())?;
                Ok(vec![acc])
            })(),
            "04_facenet" => (|| {
                use crate::tasks::verification::{kmeans, nearest_neighbour_accuracy, purity, verification};
                let plan = FacenetPlan::for_profile(profile);
                // As the notebook computes them: float embeddings (the grader's file holds doubles).
                let (emb, gallery) =
                    (get(&format!("{out}.0"))?.to_kind(Kind::Float), get(&format!("{out}.1"))?.to_kind(Kind::Float));
                let (emb, gallery) = (&emb, &gallery);
                let (labels, gallery_labels) = (keyed("test_labels")?, keyed("gallery_labels")?);
                if emb.size()[0] != labels.size()[0] || gallery.size()[0] != gallery_labels.size()[0] {
                    return Err("one embedding per held-out image was expected".to_string());
                }
                let v = verification(emb, labels, plan.eval.target_far).map_err(|e| e.to_string())?;
                let nn = nearest_neighbour_accuracy(gallery, gallery_labels, emb, labels);
                // k-means in the notebook's order of the images, from fixed starts: the same
                // figure whatever order this grading run showed the images in.
                let order = keyed("test_order")?;
                let (emb, labels) = (unshuffled(emb, order), unshuffled(labels, order));
                tch::manual_seed(0);
                let clusters = kmeans(&emb, 10, plan.eval.kmeans_restarts, 50).map_err(|e| e.to_string())?;
                Ok(vec![v.val, nn, purity(&clusters, &labels)])
            })(),
            "02_summarization" if *model == "summarizer" => (|| {
                let v = Vec::<f64>::try_from(get(&out)?.to_kind(Kind::Double)).map_err(|e| e.to_string())?;
                match v[..] {
                    [loss, acc] => Ok(vec![loss, acc]),
                    _ => Err("expected the loss and the accuracy".to_string()),
                }
            })(),
            "02_summarization" => (|| {
                let pair = |name: &str| -> std::result::Result<f64, String> {
                    let v = Vec::<f64>::try_from(get(name)?.to_kind(Kind::Double)).map_err(|e| e.to_string())?;
                    v.first().copied().ok_or_else(|| "an empty output".to_string())
                };
                let (previous, last) = (pair(&out)?, pair(&output_name("summarizer"))?);
                if previous > PREVIOUS_EPOCH_MAX_LOSS {
                    return Err(format!(
                        "the previous epoch's model loses {previous:.2} on the validation pairs, more than \
                         {PREVIOUS_EPOCH_MAX_LOSS}: not a trained model one epoch before the last (the notebook's \
                         last cell submits output/summarizer/epoch-<last - 1>)"
                    ));
                }
                Ok(vec![previous - last])
            })(),
            "00_setup_check" => (|| {
                let w = Vec::<f64>::try_from(get(&out)?.to_kind(Kind::Double)).map_err(|e| e.to_string())?;
                let slope = keyed("slope")?.double_value(&[]);
                match w[..] {
                    [w] => Ok(vec![1.0 - (w - slope).abs()]),
                    _ => Err("expected the learned slope".to_string()),
                }
            })(),
            _ => Err(format!("no models of {notebook:?} are measured")),
        };
        match computed {
            Ok(values) => {
                for (name, v) in names.iter().zip(values) {
                    let ok = if v.is_finite() { Ok(v) } else { Err(format!("not a number ({v})")) };
                    figures.insert(name.to_string(), ok);
                }
            }
            Err(why) => {
                for name in names.iter() {
                    figures.insert(name.to_string(), Err(why.clone()));
                }
            }
        }
    }
    figures
}

fn read_named(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    Ok(Tensor::read_safetensors(path)
        .map_err(|e| Error::corrupt("safetensors file", path.to_path_buf(), e.to_string()))?
        .into_iter()
        .collect())
}

fn write_named(path: &Path, named: &Named) -> Result<()> {
    let refs: Vec<(&str, Tensor)> = named.iter().map(|(n, t)| (n.as_str(), t.contiguous())).collect();
    Tensor::write_safetensors(&refs, path)?;
    Ok(())
}

/// The grader's own program (the harness crate's `measure` binary, with no student code in it):
///
/// ```text
/// measure prepare <notebook> <profile> <seed> <inputs.safetensors> <key.safetensors>
/// measure score <notebook> <profile> <outputs.safetensors> <key.safetensors>
/// ```
///
/// `score` prints `{"figures": {name: value}, "errors": {name: why}}` as one line of JSON.
pub fn trusted_main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        Error::Input(
            "usage: measure prepare <notebook> <profile> <seed> <inputs> <key> | measure score <notebook> <profile> <outputs> <key>"
                .into(),
        )
    };
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["prepare", notebook, profile, seed, inputs, key] => {
            let seed: u64 = seed.parse().map_err(|_| usage())?;
            let (shown, kept) = prepare(notebook, Profile::parse(profile)?, seed)?;
            write_named(Path::new(inputs), &shown)?;
            write_named(Path::new(key), &kept)
        }
        ["score", notebook, profile, outputs, key] => {
            let figures = score(
                notebook,
                Profile::parse(profile)?,
                &read_named(Path::new(outputs))?,
                &read_named(Path::new(key))?,
            );
            let (ok, errors): (BTreeMap<_, _>, BTreeMap<_, _>) = figures.into_iter().partition(|(_, v)| v.is_ok());
            let ok: BTreeMap<String, f64> = ok.into_iter().filter_map(|(k, v)| v.ok().map(|v| (k, v))).collect();
            let errors: BTreeMap<String, String> =
                errors.into_iter().filter_map(|(k, v)| v.err().map(|e| (k, e))).collect();
            println!("{}", serde_json::json!({ "figures": ok, "errors": errors }));
            Ok(())
        }
        _ => Err(usage()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_matching_classes_and_refuses_a_wrong_length() {
        let labels = Tensor::from_slice(&[0i64, 1, 2, 3]);
        assert_eq!(accuracy(&Tensor::from_slice(&[0.0f64, 1.0, 0.0, 3.0]), &labels).unwrap(), 0.75);
        assert!(accuracy(&Tensor::from_slice(&[0i64, 1]), &labels).is_err());
    }

    #[test]
    fn every_graded_threshold_is_measured_by_one_model() {
        for nb in ["00_setup_check", "01_vit_mae", "02_summarization", "04_facenet"] {
            let spec = hw9_grade::spec::GradingSpec::load(&crate::paths::assets(), nb).unwrap();
            let mut measured: Vec<&str> = models_of(nb).iter().flat_map(|(_, f)| f.iter().copied()).collect();
            measured.sort();
            let graded: Vec<&str> = spec.thresholds.keys().map(String::as_str).collect();
            assert_eq!(measured, graded, "{nb}");
        }
    }

    #[test]
    fn a_shuffled_set_is_put_back_in_order() {
        let x = Tensor::arange(12, (Kind::Int64, Device::Cpu)).reshape([6, 2]);
        let y = Tensor::arange(6, (Kind::Int64, Device::Cpu));
        let (sx, sy, order) = shuffled(&x, &y, 7);
        assert_ne!(Vec::<i64>::try_from(&sy).unwrap(), (0..6).collect::<Vec<i64>>());
        assert!(unshuffled(&sx, &order).equal(&x) && unshuffled(&sy, &order).equal(&y));
    }

    #[test]
    fn the_summarizer_figures_come_from_its_two_outputs() {
        let outputs: BTreeMap<String, Tensor> = [
            (output_name("summarizer"), Tensor::from_slice(&[4.8f64, 0.25])),
            (output_name("summarizer_previous"), Tensor::from_slice(&[5.0f64, 0.22])),
        ]
        .into_iter()
        .collect();
        let f = score("02_summarization", Profile::Cpu, &outputs, &BTreeMap::new());
        assert_eq!(f["val_loss"], Ok(4.8));
        assert_eq!(f["val_acc"], Ok(0.25));
        assert!((f["val_loss_decrease"].clone().unwrap() - 0.2).abs() < 1e-12);
        let missing = score("02_summarization", Profile::Cpu, &BTreeMap::new(), &BTreeMap::new());
        assert!(missing.values().all(|v| v.is_err()), "{missing:?}");
        // An untrained "previous" model (a loss of 9.4) earns no "the loss fell".
        let untrained: BTreeMap<String, Tensor> = [
            (output_name("summarizer"), Tensor::from_slice(&[4.8f64, 0.25])),
            (output_name("summarizer_previous"), Tensor::from_slice(&[9.4f64, 0.0])),
        ]
        .into_iter()
        .collect();
        let f = score("02_summarization", Profile::Cpu, &untrained, &BTreeMap::new());
        assert!(f["val_loss_decrease"].as_ref().is_err_and(|e| e.contains("not a trained model")), "{f:?}");
        assert_eq!(f["val_loss"], Ok(4.8));
    }

    #[test]
    fn the_line_fit_is_one_minus_the_slopes_distance_from_three() {
        let prepared = prepare("00_setup_check", Profile::Quick, 5).unwrap();
        let key: BTreeMap<String, Tensor> = prepared.1.into_iter().collect();
        for (w, fit) in [(3.0, 1.0), (2.9, 0.9), (3.5, 0.5)] {
            let outputs: BTreeMap<String, Tensor> =
                [(output_name("line"), Tensor::from_slice(&[w]))].into_iter().collect();
            let f = score("00_setup_check", Profile::Quick, &outputs, &key);
            assert!((f["line_fit"].clone().unwrap() - fit).abs() < 1e-9, "{w}: {f:?}");
        }
        // The points differ per grading run (the seed) and lie on the notebook's line.
        let (x5, y5) = (&prepared.0[0].1, &prepared.0[1].1);
        let again = prepare("00_setup_check", Profile::Quick, 6).unwrap();
        assert!(!x5.equal(&again.0[0].1));
        let residual = (y5 - (x5 * 3.0 - 1.0)).abs().max().double_value(&[]);
        assert!(residual < 0.6, "{residual}");
    }
}

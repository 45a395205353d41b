//! How far above its threshold each graded figure lands, over seeds and implementations: the
//! measurements the notebooks' thresholds are set from (BENCHMARKS.md, "Thresholds over seeds").
//!
//!     cargo run --release --example threshold_spread -- vit-mae reference 0,1,2,3,4
//!     cargo run --release --example threshold_spread -- vit-mae variant 0,1,2,3,4
//!     cargo run --release --example threshold_spread -- table
//!
//! Notebooks: `vit-mae` (ViT, linear probe and finetune accuracy), `summarization` (validation
//! loss and accuracy after 2 epochs, and the loss falling in the last one), `facenet` (VAL at
//! FAR 1e-3, nearest-neighbour accuracy, k-means purity of the main run). Each in the `cpu`
//! profile, as the notebook runs it, with either the crate's reference models or an independently
//! written correct implementation of every TODO (`variant`: a convolution for the patch
//! embedding, the masking by indexing and scatters, attention by einsum with an additive mask,
//! the summed `(a−b)²` distances, …), seeded with `tch::manual_seed(seed)` and the runs' data
//! order from `seed` — as a student's code, which draws its random numbers in another order,
//! starts from other weights. Each run appends a line to `build/threshold-spread/<notebook>.jsonl`;
//! `table` prints the minimum, median and maximum of every figure beside its threshold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hw9::data::text::SummaryData;
use hw9::models::facenet::{positive_pairs, ConvTrunk, FaceNet, FacenetConfig, Triplets};
use hw9::models::mae::{Mae, MaeClassifier, MaeConfig, MaskedAutoencoder};
use hw9::models::summarizer::Summarizer;
use hw9::models::transformer::{LayerConfig, SeqLayer, Stack};
use hw9::models::vit::{TransformerEncoder, Vit, VitConfig};
use hw9::plan::{FacenetPlan, SummarizationPlan, VitMaePlan};
use hw9::tasks::facenet::experiment;
use hw9::tasks::images::{train_classifier, train_mae};
use hw9::tasks::triplet::TripletFns;
use hw9::train::{load_checkpoint_into, save_checkpoint, Every, ResumeConfig};
use hw9::{Profile, Result};
use serde_json::{json, Value};
use tch::nn::{self, Module, ModuleT};
use tch::{Device, Kind, Tensor};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from("build/threshold-spread");
    std::fs::create_dir_all(&out).map_err(|e| hw9::Error::io(&out, e))?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["table"] => {
            print!("{}", table(&out)?);
            Ok(())
        }
        [notebook, which, seeds] => {
            let variant = match which {
                "reference" => false,
                "variant" => true,
                _ => return Err(usage()),
            };
            for seed in seeds.split(',') {
                let seed: u64 = seed.parse().map_err(|_| usage())?;
                let t = Instant::now();
                let runs = out.join("runs").join(format!("{notebook}-{which}-{seed}"));
                let _ = std::fs::remove_dir_all(&runs);
                let resume = ResumeConfig { dir: runs.clone(), every: Every::Seconds(600.0), seed };
                tch::manual_seed(seed as i64);
                let figures = match notebook {
                    "vit-mae" => vit_mae(variant, resume, &runs)?,
                    "summarization" => summarization(variant, resume, &runs)?,
                    "facenet" => facenet(variant, resume)?,
                    _ => return Err(usage()),
                };
                let line = json!({"notebook": notebook, "impl": which, "seed": seed, "figures": figures,
                    "seconds": t.elapsed().as_secs_f64()});
                println!("{line}");
                let file = out.join(format!("{notebook}.jsonl"));
                let mut text = std::fs::read_to_string(&file).unwrap_or_default();
                text.push_str(&format!("{line}\n"));
                hw9::io::write_atomic(&file, text.as_bytes())?;
                let _ = std::fs::remove_dir_all(&runs);
            }
            Ok(())
        }
        _ => Err(usage()),
    }
}

fn usage() -> hw9::Error {
    hw9::Error::Input(
        "usage: threshold_spread (vit-mae|summarization|facenet) (reference|variant) 0,1,2,3,4 | table".into(),
    )
}

/// Each graded figure with its threshold: `(name, at least?, threshold)`.
fn thresholds() -> BTreeMap<&'static str, Vec<(&'static str, bool, f64)>> {
    let v = VitMaePlan::for_profile(Profile::Cpu).thresholds;
    let s = SummarizationPlan::for_profile(Profile::Cpu, 8000).expected;
    let f = FacenetPlan::for_profile(Profile::Cpu).thresholds;
    BTreeMap::from([
        ("vit-mae", vec![("vit_acc", true, v.0), ("probe_acc", true, v.1), ("finetune_acc", true, v.2)]),
        ("summarization", vec![("val_loss_decrease", true, 0.01), ("val_loss", false, s.0), ("val_acc", true, s.1)]),
        ("facenet", vec![("val_at_far", true, f.0), ("nn_accuracy", true, f.1), ("kmeans_purity", true, f.2)]),
    ])
}

/// The min / median / max of every figure, per implementation, beside its threshold.
fn table(out: &Path) -> Result<String> {
    let mut s = String::from(
        "| notebook | figure | threshold | implementation | runs | min | median | max | worst margin |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (nb, figures) in thresholds() {
        let file = out.join(format!("{nb}.jsonl"));
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        let runs: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        for (name, at_least, threshold) in &figures {
            for which in ["reference", "variant", "all"] {
                let mut xs: Vec<f64> = runs
                    .iter()
                    .filter(|r| which == "all" || r["impl"] == which)
                    .filter_map(|r| r["figures"][name].as_f64())
                    .collect();
                if xs.is_empty() {
                    continue;
                }
                xs.sort_by(f64::total_cmp);
                let worst = if *at_least { xs[0] - threshold } else { threshold - xs[xs.len() - 1] };
                let cmp = if *at_least { "≥" } else { "≤" };
                s += &format!(
                    "| {nb} | {name} | {cmp} {threshold} | {which} | {} | {:.4} | {:.4} | {:.4} | {worst:+.4} |\n",
                    xs.len(),
                    xs[0],
                    xs[xs.len() / 2],
                    xs[xs.len() - 1]
                );
            }
        }
    }
    Ok(s)
}

// ---------------------------------------------------------------- notebook 1

/// The patch embedding as a convolution with stride P.
fn conv_embed(vs: &nn::Path, c: i64, d: i64, p: i64) -> nn::Conv2D {
    nn::conv2d(vs / "patch_conv", c, d, p, nn::ConvConfig { stride: p, ..Default::default() })
}

fn tokens(conv: &nn::Conv2D, images: &Tensor) -> Tensor {
    images.apply(conv).flatten(2, 3).transpose(1, 2) // (B, D, h, w) -> (B, N, D)
}

/// A ViT written otherwise: convolution, CLS repeated, LayerNorm on the CLS output.
#[derive(Debug)]
struct VitV {
    conv: nn::Conv2D,
    cls: Tensor,
    pos: Tensor,
    encoder: TransformerEncoder,
    norm: nn::LayerNorm,
    head: nn::Linear,
}

impl VitV {
    fn new(vs: &nn::Path, cfg: &VitConfig) -> Self {
        let d = cfg.encoder.d_model;
        let init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        VitV {
            conv: conv_embed(vs, cfg.channels, d, cfg.patch_size),
            cls: vs.var("cls", &[1, 1, d], init),
            pos: vs.var("pos", &[1, cfg.n_patches() + 1, d], init),
            encoder: TransformerEncoder::new(&(vs / "encoder"), &cfg.encoder),
            norm: nn::layer_norm(vs / "norm", vec![d], Default::default()),
            head: nn::linear(vs / "head", d, cfg.n_classes, Default::default()),
        }
    }
}

impl ModuleT for VitV {
    fn forward_t(&self, images: &Tensor, _train: bool) -> Tensor {
        let x = tokens(&self.conv, images);
        let x = Tensor::cat(&[self.cls.repeat([x.size()[0], 1, 1]), x], 1) + &self.pos;
        self.head.forward(&self.norm.forward(&self.encoder.forward(&x).select(1, 0)))
    }
}

/// An MAE written otherwise: convolution, masking by indexing and scatters, restoring by indexing.
#[derive(Debug)]
struct MaeV {
    cfg: MaeConfig,
    conv: nn::Conv2D,
    cls: Tensor,
    pos: Tensor,
    encoder: TransformerEncoder,
    norm: nn::LayerNorm,
    dec_embed: nn::Linear,
    mask_token: Tensor,
    dec_pos: Tensor,
    decoder: TransformerEncoder,
    dec_norm: nn::LayerNorm,
    dec_pred: nn::Linear,
}

impl MaeV {
    fn new(vs: &nn::Path, cfg: &MaeConfig) -> Self {
        let (d, dd, n, p, c) =
            (cfg.encoder.d_model, cfg.decoder.d_model, cfg.n_patches(), cfg.patch_size, cfg.channels);
        let init = nn::Init::Randn { mean: 0.0, stdev: 0.02 };
        MaeV {
            cfg: cfg.clone(),
            conv: conv_embed(vs, c, d, p),
            cls: vs.var("cls", &[1, 1, d], init),
            pos: vs.var("pos", &[1, n + 1, d], init),
            encoder: TransformerEncoder::new(&(vs / "encoder"), &cfg.encoder),
            norm: nn::layer_norm(vs / "norm", vec![d], Default::default()),
            dec_embed: nn::linear(vs / "dec_embed", d, dd, Default::default()),
            mask_token: vs.var("mask_token", &[1, 1, dd], init),
            dec_pos: vs.var("dec_pos", &[1, n + 1, dd], init),
            decoder: TransformerEncoder::new(&(vs / "decoder"), &cfg.decoder),
            dec_norm: nn::layer_norm(vs / "dec_norm", vec![dd], Default::default()),
            dec_pred: nn::linear(vs / "dec_pred", dd, c * p * p, Default::default()),
        }
    }

    fn rows(b: i64, device: Device) -> Tensor {
        Tensor::arange(b, (Kind::Int64, device)).unsqueeze(1)
    }

    /// The encoded visible patches (CLS first), the mask (1 = masked) and the restoring order.
    fn encode_masked(&self, images: &Tensor) -> (Tensor, Tensor, Tensor) {
        let n = self.cfg.n_patches();
        let x = tokens(&self.conv, images) + self.pos.narrow(1, 1, n);
        let (b, dev) = (x.size()[0], x.device());
        let keep = self.cfg.keep_length();
        let ids = Tensor::rand([b, n], (Kind::Float, dev)).argsort(1, false);
        let kept = x.index(&[Some(&Self::rows(b, dev)), Some(&ids.narrow(1, 0, keep))]);
        let order = Tensor::arange(n, (Kind::Int64, dev)).expand([b, n], false).contiguous();
        let restore = ids.zeros_like().scatter(1, &ids, &order);
        let mask = Tensor::ones([b, n], (Kind::Float, dev)).scatter_value(1, &ids.narrow(1, 0, keep), 0.0);
        let cls = (&self.cls + self.pos.narrow(1, 0, 1)).repeat([b, 1, 1]);
        (self.norm.forward(&self.encoder.forward(&Tensor::cat(&[cls, kept], 1))), mask, restore)
    }

    fn decode(&self, encoded: &Tensor, restore: &Tensor) -> Tensor {
        let n = self.cfg.n_patches();
        let x = self.dec_embed.forward(encoded);
        let (b, k1, _) = x.size3().expect("(B, 1+K, Dd)");
        let all = Tensor::cat(&[x.narrow(1, 1, k1 - 1), self.mask_token.repeat([b, n + 1 - k1, 1])], 1);
        let patches = all.index(&[Some(&Self::rows(b, x.device())), Some(restore)]);
        let x = Tensor::cat(&[x.narrow(1, 0, 1), patches], 1) + &self.dec_pos;
        self.dec_pred.forward(&self.dec_norm.forward(&self.decoder.forward(&x))).narrow(1, 1, n)
    }

    fn representation(&self, images: &Tensor) -> Tensor {
        let x = tokens(&self.conv, images) + self.pos.narrow(1, 1, self.cfg.n_patches());
        let cls = (&self.cls + self.pos.narrow(1, 0, 1)).repeat([x.size()[0], 1, 1]);
        self.norm.forward(&self.encoder.forward(&Tensor::cat(&[cls, x], 1)))
    }
}

impl MaskedAutoencoder for MaeV {
    fn reconstruct(&self, images: &Tensor) -> Result<(Tensor, Tensor)> {
        let (encoded, mask, restore) = self.encode_masked(images);
        Ok((self.decode(&encoded, &restore), mask))
    }

    fn patch_size(&self) -> i64 {
        self.cfg.patch_size
    }

    fn unpatchify(&self, patches: &Tensor) -> Result<Tensor> {
        let (b, n, _) = patches.size3()?;
        let (p, c) = (self.cfg.patch_size, self.cfg.channels);
        let side = (n as f64).sqrt().round() as i64 * p;
        Ok(patches.transpose(1, 2).col2im([side, side], [p, p], [1, 1], [0, 0], [p, p]).reshape([b, c, side, side]))
    }
}

#[derive(Debug)]
struct MaeClassifierV {
    mae: MaeV,
    norm: nn::LayerNorm,
    head: nn::Linear,
    detach: bool,
}

impl ModuleT for MaeClassifierV {
    fn forward_t(&self, images: &Tensor, _train: bool) -> Tensor {
        let rep = if self.detach {
            tch::no_grad(|| self.mae.representation(images))
        } else {
            self.mae.representation(images)
        };
        let pooled = rep.sum_dim_intlist(1, false, Kind::Float) / rep.size()[1] as f64;
        self.head.forward(&self.norm.forward(&pooled))
    }
}

fn vit_mae(variant: bool, resume: ResumeConfig, runs: &Path) -> Result<Value> {
    let mut plan = VitMaePlan::for_profile(Profile::Cpu);
    for t in [&mut plan.vit_train, &mut plan.mae_train, &mut plan.probe_train, &mut plan.finetune_train] {
        t.resume = Some(resume.clone());
    }
    let data = plan.data()?;
    let device = hw9::device();
    let vs = nn::VarStore::new(device);
    let h = if variant {
        train_classifier(&VitV::new(&vs.root(), &plan.vit), &vs, &data, &plan.vit_train, "ViT")?
    } else {
        train_classifier(&Vit::new(&vs.root(), &plan.vit)?, &vs, &data, &plan.vit_train, "ViT")?
    };
    let vit_acc = h.final_val_acc().unwrap_or(0.0);
    let pretrained = runs.join("mae");
    let vs = nn::VarStore::new(device);
    if variant {
        train_mae(&MaeV::new(&vs.root(), &plan.mae), &vs, &data, &plan.mae_train, "MAE pretraining")?;
    } else {
        train_mae(&Mae::new(&vs.root(), &plan.mae)?, &vs, &data, &plan.mae_train, "MAE pretraining")?;
    }
    save_checkpoint(&vs, &plan.mae, &pretrained)?;
    let mut accs = Vec::new();
    for (detach, cfg, title) in [(true, &plan.probe_train, "linear probe"), (false, &plan.finetune_train, "finetune")] {
        let vs = nn::VarStore::new(device);
        let d = plan.mae.encoder.d_model;
        let h = if variant {
            let mae = MaeV::new(&(vs.root() / "mae"), &plan.mae);
            let c = vs.root() / "classifier";
            let clf = MaeClassifierV {
                mae,
                norm: nn::layer_norm(&c / "norm", vec![d], Default::default()),
                head: nn::linear(&c / "head", d, 10, Default::default()),
                detach,
            };
            load_checkpoint_into(&vs, "mae", &plan.mae, &pretrained)?;
            train_classifier(&clf, &vs, &data, cfg, title)?
        } else {
            let mae = Mae::new(&(vs.root() / "mae"), &plan.mae)?;
            let clf = MaeClassifier::new(&(vs.root() / "classifier"), mae, 10, detach);
            load_checkpoint_into(&vs, "mae", &plan.mae, &pretrained)?;
            train_classifier(&clf, &vs, &data, cfg, title)?
        };
        accs.push(h.final_val_acc().unwrap_or(0.0));
    }
    Ok(json!({"vit_acc": vit_acc, "probe_acc": accs[0], "finetune_acc": accs[1]}))
}

// ---------------------------------------------------------------- notebook 2

/// Multi-head attention written otherwise: einsum, an additive −1e9 mask, one projection per
/// input.
#[derive(Debug)]
struct AttentionV {
    q: nn::Linear,
    k: nn::Linear,
    v: nn::Linear,
    out: nn::Linear,
    h: i64,
}

impl AttentionV {
    fn new(vs: &nn::Path, d: i64, h: i64) -> Self {
        let lin = |n: &str| nn::linear(vs / n, d, d, Default::default());
        AttentionV { q: lin("q"), k: lin("k"), v: lin("v"), out: lin("out"), h }
    }

    fn forward(&self, query: &Tensor, kv: &Tensor, pad: Option<&Tensor>, causal: bool) -> Tensor {
        let (b, t, d) = query.size3().expect("(B, T, D)");
        let s = kv.size()[1];
        let heads = |x: Tensor, n: i64| x.view([b, n, self.h, d / self.h]).permute([0, 2, 1, 3]);
        let (q, k, v) = (heads(self.q.forward(query), t), heads(self.k.forward(kv), s), heads(self.v.forward(kv), s));
        let mut scores = Tensor::einsum("bhtd,bhsd->bhts", &[&q, &k], None::<i64>) / ((d / self.h) as f64).sqrt();
        if let Some(p) = pad {
            scores += p.to_kind(Kind::Float).view([b, 1, 1, s]) * -1e9;
        }
        if causal {
            scores += Tensor::ones([t, s], (Kind::Float, query.device())).triu(1) * -1e9;
        }
        let w = scores.softmax(-1, Kind::Float);
        let ctx = Tensor::einsum("bhts,bhsd->bhtd", &[&w, &v], None::<i64>);
        self.out.forward(&ctx.permute([0, 2, 1, 3]).reshape([b, t, d]))
    }
}

#[derive(Debug)]
struct LayerV {
    attn: AttentionV,
    attn_norm: nn::LayerNorm,
    cross: Option<(AttentionV, nn::LayerNorm)>,
    ff1: nn::Linear,
    ff2: nn::Linear,
    ff_norm: nn::LayerNorm,
    p: f64,
}

impl LayerV {
    fn new(vs: &nn::Path, cfg: &LayerConfig, stack: Stack) -> Self {
        let (d, h) = (cfg.d_model, cfg.n_heads);
        let ln = |n: &str| nn::layer_norm(vs / n, vec![d], Default::default());
        LayerV {
            attn: AttentionV::new(&(vs / "attn"), d, h),
            attn_norm: ln("attn_norm"),
            cross: (stack == Stack::Decoder).then(|| (AttentionV::new(&(vs / "cross"), d, h), ln("cross_norm"))),
            ff1: nn::linear(vs / "ff1", d, cfg.d_ffn, Default::default()),
            ff2: nn::linear(vs / "ff2", cfg.d_ffn, d, Default::default()),
            ff_norm: ln("ff_norm"),
            p: cfg.dropout,
        }
    }
}

impl SeqLayer for LayerV {
    fn forward(
        &self,
        x: &Tensor,
        padding_mask: Option<&Tensor>,
        encoder_out: Option<&Tensor>,
        encoder_padding_mask: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let drop = |y: Tensor| y.dropout(self.p, train);
        let x = self.attn_norm.forward(&(x + drop(self.attn.forward(x, x, padding_mask, self.cross.is_some()))));
        let x = match (&self.cross, encoder_out) {
            (Some((attn, norm)), Some(enc)) => {
                norm.forward(&(&x + drop(attn.forward(&x, enc, encoder_padding_mask, false))))
            }
            _ => x,
        };
        let ff = self.ff2.forward(&drop(self.ff1.forward(&x).clamp_min(0.0)));
        self.ff_norm.forward(&(&x + drop(ff)))
    }
}

/// Position ids by a loop over each row's tokens.
fn positions_v(tokens: &Tensor, pad: i64) -> Tensor {
    let (b, t) = tokens.size2().expect("(B, T)");
    let ids = Vec::<i64>::try_from(tokens.to_device(Device::Cpu).reshape([-1])).expect("int64");
    let mut out = vec![pad; ids.len()];
    for r in 0..b as usize {
        let mut n = pad;
        for j in 0..t as usize {
            if ids[r * t as usize + j] != pad {
                n += 1;
                out[r * t as usize + j] = n;
            }
        }
    }
    Tensor::from_slice(&out).reshape([b, t]).to_device(tokens.device())
}

fn summarization(variant: bool, resume: ResumeConfig, runs: &Path) -> Result<Value> {
    let tokenizer = hw9::data::text::SubwordTokenizer::load_default()?;
    let mut plan = SummarizationPlan::for_profile(Profile::Cpu, tokenizer.vocab_size());
    plan.train.resume = Some(resume);
    let data = SummaryData::load(&plan.data)?;
    let vs = nn::VarStore::new(hw9::device());
    let model = if variant {
        Summarizer::with_layers(&vs.root(), &plan.model, |p, c, s| Box::new(LayerV::new(p, c, s)), positions_v)?
    } else {
        Summarizer::new(&vs.root(), &plan.model)?
    };
    let h = hw9::tasks::summarization::train_summarizer(
        &model,
        &vs,
        &data,
        &plan.train,
        &runs.join("checkpoints"),
        &runs.join("tensorboard"),
    )?;
    let first = h.epochs.first().and_then(|e| e.val_loss).unwrap_or(f64::NAN);
    let last = h.final_val_loss().unwrap_or(f64::NAN);
    Ok(json!({"val_loss_decrease": first - last, "val_loss": last, "val_acc": h.final_val_acc().unwrap_or(0.0)}))
}

// ---------------------------------------------------------------- notebook 4

#[derive(Debug)]
struct FaceNetV {
    trunk: ConvTrunk,
    head: nn::Linear,
}

impl ModuleT for FaceNetV {
    fn forward_t(&self, images: &Tensor, train: bool) -> Tensor {
        let e = self.head.forward(&self.trunk.forward_t(images, train));
        &e / (&e * &e).sum_dim_intlist(-1, true, Kind::Float).sqrt().clamp_min(1e-12)
    }
}

// distances_v, loss_v, semi_hard_v, batch_hard_v: the same functions the checks test
// (tests/checks_across_cpus.rs) against PyTorch on every kernel selection.
include!("../tests/variants/facenet.rs");

fn facenet(variant: bool, resume: ResumeConfig) -> Result<Value> {
    let mut plan = FacenetPlan::for_profile(Profile::Cpu);
    plan.train.resume = Some(resume);
    let data = plan.data()?;
    let device = hw9::device();
    let run = if variant {
        let fns = TripletFns { distances: distances_v, loss: loss_v, semi_hard: semi_hard_v, batch_hard: batch_hard_v };
        let cfg: FacenetConfig = plan.model.clone();
        experiment("main (variant)", &data, &fns, &plan.train, &plan.eval, device, |p| {
            Ok(FaceNetV {
                trunk: ConvTrunk::new(&(p / "trunk"), &cfg)?,
                head: nn::linear(p / "head", cfg.trunk_dim(), cfg.embedding_dim, Default::default()),
            })
        })?
    } else {
        let fns = TripletFns::reference();
        experiment("main", &data, &fns, &plan.train, &plan.eval, device, |p| FaceNet::new(p, &plan.model))?
    };
    let r = &run.report;
    Ok(json!({"val_at_far": r.verification.val, "nn_accuracy": r.nn_accuracy, "kmeans_purity": r.purity,
        "auc": r.verification.auc}))
}

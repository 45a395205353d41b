//! Times notebook 2's three ROUGE passes (greedy, beam 4, beam 4 without repeated 2-grams) over
//! the first 1,000 test documents with a trained `cpu`-profile summarizer, and prints their
//! scores: what issue 16's "ROUGE in seconds" is measured with (BENCHMARKS.md). Twice: with the
//! crate's layers (their decoding step caches keys and values) and with layers that only have a
//! `forward`, as the notebook's (the trait's default step recomputes the prefix).
//!
//!     cargo run --release --example rouge_decoding -- build/summarizer-scratch/epoch-2

use std::path::PathBuf;
use std::time::Instant;

use hw9::models::decoding::DecodeConfig;
use hw9::models::summarizer::Summarizer;
use hw9::models::transformer::{make_positions, SeqLayer, TransformerLayer};
use hw9::plan::SummarizationPlan;
use hw9::Profile;
use tch::Tensor;

fn main() -> hw9::Result<()> {
    let dir = std::env::args().nth(1).map(PathBuf::from).ok_or_else(|| {
        hw9::Error::Config(
            "expected a checkpoint folder of a cpu-profile summarizer (config.json, model.safetensors)".into(),
        )
    })?;
    let tokenizer = hw9::data::text::SubwordTokenizer::load(&hw9::data::text::tokenizer_path())?;
    let plan = SummarizationPlan::for_profile(Profile::Cpu, tokenizer.vocab_size());
    let t = Instant::now();
    let data = hw9::data::text::SummaryData::load_with(tokenizer, &plan.data)?;
    println!("data {:.1} s", t.elapsed().as_secs_f64());
    let vs = tch::nn::VarStore::new(hw9::device());
    let model = Summarizer::new(&vs.root(), &plan.model)?;
    hw9::train::load_checkpoint(&vs, &plan.model, &dir)?;
    let plain_vs = tch::nn::VarStore::new(hw9::device());
    let plain = Summarizer::with_layers(
        &plain_vs.root(),
        &plan.model,
        |p, c, stack| Box::new(ForwardOnly(TransformerLayer::new(p, c, stack))),
        make_positions,
    )?;
    hw9::train::load_checkpoint(&plain_vs, &plan.model, &dir)?;
    for (layers, model) in [("crate's layers", &model), ("forward-only layers", &plain)] {
        println!("{layers}:");
        rouge(model, &data, &plan)?;
    }
    Ok(())
}

/// A layer with only a `forward`, like the notebook's: decoding recomputes the prefix.
#[derive(Debug)]
struct ForwardOnly(TransformerLayer);

impl SeqLayer for ForwardOnly {
    fn forward(
        &self,
        x: &Tensor,
        pad: Option<&Tensor>,
        enc: Option<&Tensor>,
        enc_pad: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        self.0.forward(x, pad, enc, enc_pad, train)
    }
}

fn rouge(model: &Summarizer, data: &hw9::data::text::SummaryData, plan: &SummarizationPlan) -> hw9::Result<()> {
    for (name, cfg) in [
        ("greedy", DecodeConfig::greedy(plan.beam.max_len)),
        ("beam", plan.beam),
        ("beam, no repeated 2-gram", plan.beam.no_repeat_ngram(2)),
    ] {
        let t = Instant::now();
        let (r1, r2, rl) = hw9::tasks::summarization::test_rouge(model, data, plan.data.max_src, plan.rouge_docs, cfg)?;
        println!("  {name}: {:.1} s, ROUGE-1 {r1:.4} ROUGE-2 {r2:.4} ROUGE-L {rl:.4}", t.elapsed().as_secs_f64());
    }
    Ok(())
}

//! Notebook 2's training (the crate's layers, 2 epochs of the `cpu` plan) with other sizes: what a
//! cheaper plan costs in validation loss (BENCHMARKS.md, issue 16).
//!
//!     cargo run --release --example summarizer_sizes -- max_src=64
//!
//! Keys (each optional, the `cpu` profile's value otherwise): `max_src` (document tokens, EOS
//! included), `batch` (pairs per batch), `lr` (peak rate), `epochs`, `d_ffn`.

use std::path::Path;
use std::time::Instant;

use hw9::models::summarizer::Summarizer;
use hw9::plan::SummarizationPlan;
use hw9::Profile;

fn main() -> hw9::Result<()> {
    let tokenizer = hw9::data::text::SubwordTokenizer::load_default()?;
    let mut plan = SummarizationPlan::for_profile(Profile::Cpu, tokenizer.vocab_size());
    for arg in std::env::args().skip(1) {
        let bad = || {
            hw9::Error::Config(format!("expected key=number with key max_src, batch, lr, epochs or d_ffn, got {arg:?}"))
        };
        let (key, value) = arg.split_once('=').ok_or_else(bad)?;
        let v: f64 = value.parse().map_err(|_| bad())?;
        match key {
            "max_src" => plan.data.max_src = v as usize,
            "batch" => plan.train.batch_size = v as i64,
            "lr" => plan.train.optim.lr = v,
            "epochs" => plan.train.epochs = v as i64,
            "d_ffn" => plan.model.d_ffn = v as i64,
            _ => return Err(bad()),
        }
    }
    println!("{plan:?}");
    let t = Instant::now();
    let data = hw9::data::text::SummaryData::load_with(tokenizer, &plan.data)?;
    println!("data {:.1} s", t.elapsed().as_secs_f64());
    let vs = tch::nn::VarStore::new(hw9::device());
    let model = Summarizer::new(&vs.root(), &plan.model)?;
    let out = Path::new("build/summarizer-sizes");
    let t = Instant::now();
    let history = hw9::tasks::summarization::train_summarizer(&model, &vs, &data, &plan.train, out, &out.join("runs"))?;
    for e in &history.epochs {
        println!(
            "epoch {}: train loss {:.4}, validation loss {:.4}, accuracy {:.4}",
            e.epoch,
            e.train_loss,
            e.val_loss.unwrap_or(f64::NAN),
            e.val_acc.unwrap_or(f64::NAN)
        );
    }
    println!("trained in {:.0} s", t.elapsed().as_secs_f64());
    Ok(())
}

//! Integrated gradients on SmolLM2 (hw9::tasks::interpret): how the sum of the attributions
//! approaches the output's change from the baseline as the steps grow (completeness), for two
//! predictions. `cargo run --release --example ig_convergence`; figures in BENCHMARKS.md.

use hw9::data::tokenize::LlamaTokenizer;
use hw9::models::llama::{default_llama_dir, Llama};
use hw9::tasks::interpret::integrated_gradients;
use tch::{Device, Kind, Tensor};
fn main() {
    let dir = default_llama_dir();
    let (_vs, model) = Llama::load(&dir, Device::Cpu).unwrap();
    let tok = LlamaTokenizer::load(&dir.join("tokenizer.json")).unwrap();
    for text in ["When Mary and John went to the store, John gave a drink to", "The capital of France is"] {
        let x = Tensor::from_slice(&tok.encode(text).unwrap().0).unsqueeze(0);
        let t = x.size()[1];
        let target = tok.encode(if text.starts_with("When") { " Mary" } else { " Paris" }).unwrap().0[0];
        for steps in [16, 32, 64, 128, 256] {
            let (a, d) = integrated_gradients(&model, &x, t - 1, target, steps).unwrap();
            println!("{text:?} steps {steps}: sum {:.4} diff {:.4}", a.sum(Kind::Double).double_value(&[]), d);
        }
    }
}

//! What attention does not show, on SmolLM2-135M (hw9::tasks::interpret), each against its
//! reference: the logit lens's last layer is the model's own logits; ablating no head changes
//! nothing; integrated gradients add up to the change of the output (completeness); and ablating
//! the induction heads found by their attention hurts the repeated half far more than ablating as
//! many other heads.

use hw9::data::tokenize::LlamaTokenizer;
use hw9::models::llama::{default_llama_dir, Ablation, HeadAblation, Llama};
use hw9::tasks::heads::{induction_scores, repeated_tokens};
use hw9::tasks::interpret::{ablation_curve, input_x_gradient, integrated_gradients, logit_lens, AblationPlan};
use tch::{nn, Device, Kind, Tensor};

fn load() -> (nn::VarStore, Llama, LlamaTokenizer) {
    let dir = default_llama_dir();
    let (vs, model) = Llama::load(&dir, Device::Cpu).unwrap_or_else(|e| panic!("{e} (run `make setup`)"));
    let tok = LlamaTokenizer::load(&dir.join("tokenizer.json")).unwrap();
    (vs, model, tok)
}

fn ids(tok: &LlamaTokenizer, text: &str) -> Tensor {
    Tensor::from_slice(&tok.encode(text).unwrap().0).unsqueeze(0)
}

#[test]
fn the_logit_lens_reads_every_layer_and_its_last_layer_is_the_models_logits() {
    let (_vs, model, tok) = load();
    let x = ids(&tok, "The capital of France is Paris, and the capital of Italy is Rome.");
    let t = x.size()[1];
    let lens = logit_lens(&model, &x).unwrap();
    assert_eq!(lens.target_probs.size(), [model.cfg.num_hidden_layers + 1, t - 1]);
    assert_eq!(lens.last_layer_max_diff, 0.0, "the lens's last layer must be the model's logits");
    let (lo, hi) = (lens.target_probs.min().double_value(&[]), lens.target_probs.max().double_value(&[]));
    assert!((0.0..=1.0).contains(&lo) && hi <= 1.0, "probabilities in [0, 1], got {lo}..{hi}");
    // The model's own top token is the lens's top token at the last layer.
    let top = model.logits(&x).unwrap().select(0, 0).narrow(0, 0, t - 1).argmax(-1, false);
    assert!(lens.top_ids.select(0, model.cfg.num_hidden_layers).equal(&top));
    // The layers read something: the true next token is likelier at the end than after the embeddings.
    let first = lens.target_probs.get(0).mean(Kind::Float).double_value(&[]);
    let last = lens.target_probs.get(model.cfg.num_hidden_layers).mean(Kind::Float).double_value(&[]);
    assert!(last > first + 0.1, "mean probability of the next token: embeddings {first:.3}, last layer {last:.3}");
    assert!(logit_lens(&model, &x.narrow(1, 0, 1)).unwrap_err().to_string().contains("T ≥ 2"));
}

#[test]
fn ablating_no_head_changes_nothing_ablating_one_does_and_a_wrong_head_is_named() {
    let (_vs, model, tok) = load();
    let x = ids(&tok, "The cat sat on the mat because it was tired.");
    let plain = model.logits(&x).unwrap();
    for mode in [Ablation::Zero, Ablation::Mean] {
        let none = model.logits_ablated(&x, &HeadAblation { heads: vec![], mode }).unwrap();
        assert!(none.equal(&plain), "ablating no head changed the logits ({mode:?})");
        let one = model.logits_ablated(&x, &HeadAblation { heads: vec![(18, 6)], mode }).unwrap();
        let moved = (one - &plain).abs().max().double_value(&[]);
        assert!(moved > 1e-3, "ablating layer 18 head 6 ({mode:?}) moved the logits by only {moved}");
    }
    let err = model.logits_ablated(&x, &HeadAblation { heads: vec![(30, 0)], mode: Ablation::Zero }).unwrap_err();
    assert!(err.to_string().contains("layers 0..30 and heads 0..9"), "{err}");
}

#[test]
fn integrated_gradients_add_up_to_the_change_of_the_output() {
    let (_vs, model, tok) = load();
    let x = ids(&tok, "When Mary and John went to the store, John gave a drink to");
    let t = x.size()[1];
    let target = tok.encode(" Mary").unwrap().0[0];
    let (attr, diff) = integrated_gradients(&model, &x, t - 1, target, 128).unwrap();
    assert_eq!(attr.size(), [t]);
    assert_eq!(attr.double_value(&[0]), 0.0, "the first token is its own baseline");
    let total = attr.sum(Kind::Double).double_value(&[]);
    assert!(
        (total - diff).abs() <= 0.05 * diff.abs() + 0.1,
        "completeness: attributions add up to {total:.4}, the output moved by {diff:.4}"
    );
    let ixg = input_x_gradient(&model, &x, t - 1, target).unwrap();
    assert_eq!(ixg.size(), [t]);
    assert!(ixg.isfinite().all().int64_value(&[]) == 1);
    let err = integrated_gradients(&model, &x, t, target, 8).unwrap_err().to_string();
    assert!(err.contains(&format!("position in 0..{t}")), "{err}");
}

#[test]
fn ablating_the_induction_heads_hurts_the_repeated_half_more_than_as_many_other_heads() {
    let (_vs, model, _tok) = load();
    let len = 20;
    let rep = repeated_tokens(2, len, 1000..20000, 0, 3).unwrap();
    let out = tch::no_grad(|| model.forward(&rep)).unwrap();
    let scores = induction_scores(&out.layers, len).unwrap();
    let plan = AblationPlan { k_max: 3, draws: 2, mode: Ablation::Mean, seed: 1 };
    let (induction, random) = ablation_curve(&model, &rep, len, &scores, plan).unwrap();
    assert_eq!(induction.len(), 4);
    assert_eq!(induction[0], random[0], "no head ablated: the same loss");
    assert!(
        induction[3] > random[3] + 0.5,
        "loss on the second copy with 3 heads ablated: induction heads {:.2}, random heads {:.2} (none: {:.2})",
        induction[3],
        random[3],
        induction[0]
    );
}

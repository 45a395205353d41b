//! The summarizer fine-tuned from SmolLM2-135M (hw9::tasks::lm_summarizer): its examples score
//! only the synopsis, `Llama::lm_loss` is the cross-entropy of the model's own logits there,
//! gradients reach the top layers only, a short fine-tuning lowers the validation loss and what
//! it saves loads back to the same summaries, and bad input gets an error that names the limit.

use hw9::data::corpus::Pair;
use hw9::models::llama::Llama;
use hw9::tasks::lm_summarizer::{fine_tune, LmSummarizer, LmSummaryPlan};
use hw9::Profile;
use tch::{Device, Kind, Tensor};

fn base() -> LmSummarizer {
    LmSummarizer::base(&LmSummaryPlan::for_profile(Profile::Cpu).model, Device::Cpu)
        .unwrap_or_else(|e| panic!("{e} (run `make setup`)"))
}

fn pair(document: &str, summary: &str) -> Pair {
    Pair { package: "p".into(), document: document.into(), summary: summary.into(), split: "test".into() }
}

const DOC: &str = "GNU grep searches one or more input files for lines containing a match to a specified \
                   pattern. By default, grep outputs the matching lines.";

#[test]
fn an_example_scores_the_synopsis_and_its_end_only() {
    let s = base();
    let (input, labels) = s.example(&pair(DOC, "GNU grep, egrep and fgrep")).unwrap();
    assert_eq!(input.len(), labels.len());
    let prompt = s.prompt_ids(DOC).unwrap();
    // Position t predicts token t + 1: the last prompt position predicts the synopsis' first token.
    assert!(labels[..prompt.len() - 1].iter().all(|&l| l == -1), "the prompt is not scored");
    let scored: Vec<i64> = labels[prompt.len() - 1..].to_vec();
    assert!(scored.iter().all(|&l| l >= 0));
    assert_eq!(scored.last().copied(), s.tok.id("<|im_end|>"), "the synopsis ends with <|im_end|>");
    assert_eq!(s.tok.decode(&scored).unwrap(), "GNU grep, egrep and fgrep");
    assert_eq!(&input[..prompt.len()], prompt.as_slice());
    // The document is cut to max_doc_tokens of the model's tokenizer.
    let long = "word ".repeat(1000);
    let cut = s.prompt_ids(&long).unwrap().len();
    assert_eq!(cut, prompt.len() - s.tok.encode(DOC).unwrap().0.len() + s.config.max_doc_tokens);
}

/// `(input_ids, labels)` of `examples`, right-padded with `pad` and −1.
fn padded(examples: &[(Vec<i64>, Vec<i64>)], pad: i64) -> (Tensor, Tensor) {
    let t = examples.iter().map(|e| e.0.len()).max().unwrap();
    let mut ids = Vec::new();
    let mut labels = Vec::new();
    for (x, y) in examples {
        ids.extend(x.iter().copied().chain(std::iter::repeat_n(pad, t - x.len())));
        labels.extend(y.iter().copied().chain(std::iter::repeat_n(-1, t - y.len())));
    }
    let shape = [examples.len() as i64, t as i64];
    (Tensor::from_slice(&ids).reshape(shape), Tensor::from_slice(&labels).reshape(shape))
}

#[test]
fn lm_loss_is_the_cross_entropy_of_the_models_logits_on_the_scored_positions() {
    let s = base();
    let examples = vec![
        s.example(&pair(DOC, "GNU grep, egrep and fgrep")).unwrap(),
        s.example(&pair("A small tool.", "tool")).unwrap(),
    ];
    let (ids, labels) = padded(&examples, 2);
    let layers = s.model.cfg.num_hidden_layers as usize;
    let loss = tch::no_grad(|| s.model.lm_loss(&ids, &labels, layers - 8)).unwrap().double_value(&[]);
    // By hand from the model's logits over the whole padded batch.
    let logits = s.model.logits(&ids).unwrap(); // (B, T, V)
    let logp = logits.log_softmax(-1, Kind::Float);
    let flat = labels.reshape([-1]);
    let keep = flat.ge(0).nonzero().squeeze_dim(1);
    let picked = logp.reshape([-1, s.model.cfg.vocab_size]).index_select(0, &keep);
    let nll = -picked.gather(1, &flat.index_select(0, &keep).unsqueeze(1), false).mean(Kind::Float);
    let by_hand = nll.double_value(&[]);
    assert!((loss - by_hand).abs() < 1e-4, "lm_loss {loss} against {by_hand} from the logits");
    // Freezing changes what is recorded, not the value.
    let all = tch::no_grad(|| s.model.lm_loss(&ids, &labels, 0)).unwrap().double_value(&[]);
    assert!((loss - all).abs() < 1e-5, "{loss} with 22 layers frozen, {all} with none");
    // Right padding changes nothing for the real tokens (causal attention): the short example's
    // logits alone equal its rows in the padded batch.
    let short = Tensor::from_slice(&examples[1].0).unsqueeze(0);
    let n = examples[1].0.len() as i64;
    let alone = s.model.logits(&short).unwrap();
    let in_batch = logits.get(1).narrow(0, 0, n).unsqueeze(0);
    let diff = (alone - in_batch).abs().max().double_value(&[]);
    assert!(diff < 1e-3, "padding changed the short example's logits by {diff}");
}

#[test]
fn only_the_top_layers_and_the_final_norm_get_gradients() {
    let s = base();
    let (ids, labels) = padded(&[s.example(&pair(DOC, "GNU grep")).unwrap()], 2);
    let layers = s.model.cfg.num_hidden_layers as usize;
    let first = layers - s.config.top_layers;
    tch::with_grad(|| s.model.lm_loss(&ids, &labels, first).unwrap().backward());
    let mut trained = 0;
    for (name, t) in s.vs.variables() {
        let layer =
            name.strip_prefix("model.layers.").and_then(|r| r.split('.').next()).and_then(|i| i.parse::<usize>().ok());
        let expect = layer.is_some_and(|i| i >= first) || name == "model.norm.weight";
        let g = t.grad();
        assert_eq!(g.defined(), expect, "{name}: gradient {}", if g.defined() { "recorded" } else { "missing" });
        if expect {
            assert!(g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{name}: a zero gradient");
            trained += 1;
        }
    }
    // 9 weights a layer (2 norms, 4 attention projections, 3 MLP projections) and the final norm.
    assert_eq!(trained, 9 * s.config.top_layers + 1);
    assert_eq!(s.trained.variables().len(), trained, "the trained store holds exactly these");
}

#[test]
fn fine_tuning_lowers_the_synopsis_loss_and_the_saved_layers_load_back() {
    let out = tempfile::tempdir().unwrap();
    let mut plan = LmSummaryPlan::for_profile(Profile::Quick);
    plan.max_steps = Some(6); // the same work on any machine, however loaded
    let (s, report) = fine_tune(&plan, out.path(), Device::Cpu).unwrap();
    assert_eq!((report.steps, report.documents), (6, 6 * plan.batch_size), "{report:?}");
    assert!(
        report.validation_after < report.validation_before - 0.1,
        "the synopsis loss on validation did not fall: {report:?}"
    );
    // Only the trained layers are saved, and loading them over the base model gives its summaries.
    let saved = Tensor::read_safetensors(out.path().join("model.safetensors")).unwrap();
    assert_eq!(saved.len(), 9 * plan.model.top_layers + 1);
    assert!(saved.iter().all(|(n, _)| n.starts_with("model.layers.") || n == "model.norm.weight"));
    let loaded = LmSummarizer::load(out.path(), Device::Cpu).unwrap();
    for doc in [DOC, "Python bindings for the GNU Scientific Library, for numerical computing."] {
        assert_eq!(loaded.summarize(doc).unwrap(), s.summarize(doc).unwrap());
    }
    assert_ne!(base().summarize(DOC).unwrap(), "", "the base model writes something too");
}

#[test]
fn bad_input_gets_an_error_that_names_the_limit() {
    let s = base();
    let e = s.summarize("  \n").unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    let mut cfg = s.config.clone();
    cfg.top_layers = 31;
    let e = LmSummarizer::base(&cfg, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("at most the model's 30 layers, got 31"), "{e}");
    let mut cfg = s.config.clone();
    cfg.max_doc_tokens = 9000;
    let e = LmSummarizer::base(&cfg, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("context of 8192"), "{e}");
    let ids = Tensor::from_slice(&[1i64, 2, 3]).unsqueeze(0);
    let e = s.model.lm_loss(&ids, &Tensor::from_slice(&[1i64, 2]).unsqueeze(0), 0).unwrap_err().to_string();
    assert!(e.contains("expected the input's shape (1, 3), got (1, 2)"), "{e}");
    let e = s.model.lm_loss(&ids, &Tensor::from_slice(&[-1i64, -1, -1]).unsqueeze(0), 0).unwrap_err().to_string();
    assert!(e.contains("at least one label"), "{e}");
    let e = s.model.lm_loss(&ids, &Tensor::from_slice(&[1i64, 2, 49152]).unsqueeze(0), 0).unwrap_err().to_string();
    assert!(e.contains("expected ids below 49152 (or −1 for none), got 49152"), "{e}");
    let e = s.loss(&[]).unwrap_err().to_string();
    assert!(e.contains("at least one example"), "{e}");
    let mut cfg = s.config.clone();
    cfg.base = "another-llama".into();
    let e = LmSummarizer::base(&cfg, Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("expected the base model \"another-llama\""), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = LmSummarizer::load(empty.path(), Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("no fine-tuned summarizer in") && e.contains("finetune-lm"), "{e}");
    let mut plan = LmSummaryPlan::for_profile(Profile::Quick);
    plan.max_steps = Some(0);
    let e = fine_tune(&plan, empty.path(), Device::Cpu).unwrap_err().to_string();
    assert!(e.contains("no step was trained"), "{e}");
    assert!(!empty.path().join("model.safetensors").exists(), "nothing saved from a run that trained nothing");
    let long = Tensor::zeros([1, 8193], (Kind::Int64, Device::Cpu));
    let e = s.model.lm_loss(&long, &long, 0).unwrap_err().to_string();
    assert!(e.contains("1 to 8192 tokens, got 8193"), "{e}");
    let _: &Llama = &s.model;
}

//! Summaries from a trained [`Summarizer`]: greedy decoding and beam search, both incremental
//! (each step runs only the newest position through the decoder), with the options fairseq and
//! Hugging Face `generate` have: a length penalty, a minimum and a maximum length, and no-repeat
//! n-gram blocking.

use std::collections::{HashMap, HashSet};

use tch::{Kind, Tensor};

use crate::data::seq2seq::EOS;
use crate::error::{Error, Result};
use crate::models::summarizer::Summarizer;

/// How to decode.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DecodeConfig {
    /// Hypotheses kept per document (1 = greedy).
    pub beams: usize,
    /// Most tokens generated per summary (EOS not counted).
    pub max_len: i64,
    /// A finished hypothesis scores `sum of log-probabilities / length^length_penalty`
    /// (Hugging Face's convention): above 1 favours longer summaries, below 1 shorter ones.
    pub length_penalty: f64,
    /// Fewest tokens before EOS may end a summary (EOS is given no probability before; 0 = no
    /// minimum): Hugging Face's `min_length`, fairseq's `--min-len`.
    #[serde(default)]
    pub min_len: i64,
    /// No n-gram of this size appears twice in a summary (0 = off): a token that would complete
    /// an n-gram the hypothesis already holds gets no probability. Hugging Face's
    /// `no_repeat_ngram_size`, fairseq's `--no-repeat-ngram-size`.
    #[serde(default)]
    pub no_repeat_ngram: usize,
}

impl DecodeConfig {
    /// Greedy decoding of at most `max_len` tokens.
    pub fn greedy(max_len: i64) -> Self {
        DecodeConfig { beams: 1, max_len, length_penalty: 1.0, min_len: 0, no_repeat_ngram: 0 }
    }

    /// Beam search with `beams` hypotheses, at most `max_len` tokens, length penalty `length_penalty` (α).
    pub fn beam(beams: usize, max_len: i64, length_penalty: f64) -> Self {
        DecodeConfig { beams, max_len, length_penalty, min_len: 0, no_repeat_ngram: 0 }
    }

    /// The same, with no n-gram of `n` tokens repeated (0 = off).
    pub fn no_repeat_ngram(self, n: usize) -> Self {
        DecodeConfig { no_repeat_ngram: n, ..self }
    }

    /// The same, with at least `min_len` tokens before EOS.
    pub fn min_len(self, min_len: i64) -> Self {
        DecodeConfig { min_len, ..self }
    }

    fn validate(&self) -> Result<()> {
        if self.beams == 0 || self.max_len < 1 || self.min_len < 0 || self.min_len > self.max_len {
            return Err(Error::Config(format!(
                "decoding needs at least 1 beam, max_len >= 1 and 0 <= min_len <= max_len; got {} beams, min_len {}, \
                 max_len {}",
                self.beams, self.min_len, self.max_len
            )));
        }
        if !self.length_penalty.is_finite() {
            return Err(Error::Config(format!("length_penalty must be finite, got {}", self.length_penalty)));
        }
        Ok(())
    }
}

/// The tokens that would complete an `n`-gram `prefix` already holds: fairseq's and Hugging
/// Face's no-repeat-n-gram rule (the last `n - 1` tokens, looked up among earlier n-grams).
pub fn banned_tokens(prefix: &[i64], n: usize) -> HashSet<i64> {
    if n == 0 || prefix.len() + 1 < n {
        return HashSet::new();
    }
    if n == 1 {
        return prefix.iter().copied().collect();
    }
    let mut seen: HashMap<&[i64], HashSet<i64>> = HashMap::new();
    for w in prefix.windows(n) {
        seen.entry(&w[..n - 1]).or_default().insert(w[n - 1]);
    }
    seen.get(&prefix[prefix.len() + 1 - n..]).cloned().unwrap_or_default()
}

/// Gives no probability to what `cfg` forbids at step `t` for each row's prefix: EOS before
/// `min_len` tokens, tokens that would repeat an n-gram. `logits: (R, V)`, one prefix per row.
fn constrain(logits: Tensor, prefixes: &[&[i64]], t: i64, cfg: &DecodeConfig) -> Tensor {
    let mut logits = logits;
    if t < cfg.min_len {
        logits = logits.index_fill(1, &Tensor::from_slice(&[EOS]).to_device(logits.device()), f64::NEG_INFINITY);
    }
    if cfg.no_repeat_ngram > 0 {
        let (mut rows, mut cols) = (Vec::new(), Vec::new());
        for (r, p) in prefixes.iter().enumerate() {
            for tok in banned_tokens(p, cfg.no_repeat_ngram) {
                rows.push(r as i64);
                cols.push(tok);
            }
        }
        if !rows.is_empty() {
            let device = logits.device();
            let idx =
                [Some(Tensor::from_slice(&rows).to_device(device)), Some(Tensor::from_slice(&cols).to_device(device))];
            let inf = Tensor::full([rows.len() as i64], f64::NEG_INFINITY, (logits.kind(), device));
            logits = logits.index_put(&idx, &inf, false);
        }
    }
    logits
}

/// Summaries of `src: (B, S)` as token ids (without EOS), one per document.
pub fn generate(model: &Summarizer, src: &Tensor, cfg: DecodeConfig) -> Result<Vec<Vec<i64>>> {
    cfg.validate()?;
    let max_len = cfg.max_len.min(model.cfg.max_positions);
    let cfg = DecodeConfig { max_len, min_len: cfg.min_len.min(max_len), ..cfg };
    tch::no_grad(|| if cfg.beams == 1 { greedy(model, src, &cfg) } else { beam_search(model, src, &cfg) })
}

fn greedy(model: &Summarizer, src: &Tensor, cfg: &DecodeConfig) -> Result<Vec<Vec<i64>>> {
    let (mut enc, mut mask) = model.encode(src, false)?;
    let b = src.size()[0] as usize;
    let mut caches = model.new_caches();
    let mut tokens = Tensor::full([b as i64], EOS, (Kind::Int64, src.device()));
    let mut out = vec![Vec::new(); b];
    // The document of each row still decoding: a finished row leaves the batch (and its caches),
    // so the others do not pay for it.
    let mut alive: Vec<usize> = (0..b).collect();
    for t in 0..cfg.max_len {
        let logits = model.step(&tokens, t, &mut caches, &enc, &mask)?;
        let prefixes: Vec<&[i64]> = alive.iter().map(|&i| out[i].as_slice()).collect();
        let next = constrain(logits, &prefixes, t, cfg).argmax(-1, false);
        let mut keep = Vec::with_capacity(alive.len());
        for (r, id) in Vec::<i64>::try_from(&next)?.into_iter().enumerate() {
            if id != EOS {
                out[alive[r]].push(id);
                keep.push(r as i64);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() == alive.len() {
            tokens = next;
        } else {
            let idx = Tensor::from_slice(&keep).to_device(src.device());
            (enc, mask) = (enc.index_select(0, &idx), mask.index_select(0, &idx));
            for c in caches.iter_mut() {
                c.reorder(&idx);
            }
            tokens = next.index_select(0, &idx);
            alive = keep.iter().map(|&r| alive[r as usize]).collect();
        }
    }
    Ok(out)
}

/// A live or finished hypothesis.
#[derive(Debug, Clone)]
struct Hyp {
    tokens: Vec<i64>,
    logp: f64,
}

fn beam_search(model: &Summarizer, src: &Tensor, cfg: &DecodeConfig) -> Result<Vec<Vec<i64>>> {
    let (k, max_len, alpha) = (cfg.beams, cfg.max_len, cfg.length_penalty);
    let b = src.size()[0] as usize;
    let device = src.device();
    // The beams of each document still searching side by side: rows j*k .. j*k + k - 1 belong to
    // document alive[j]. A finished document leaves the batch (rows, caches, encoder output).
    let mut alive: Vec<usize> = (0..b).collect();
    let rows = Tensor::arange(b as i64, (Kind::Int64, device)).repeat_interleave_self_int(k as i64, 0, None);
    let (mut enc, mut mask) = model.encode(&src.index_select(0, &rows), false)?;
    let mut caches = model.new_caches();
    let score = |h: &Hyp| h.logp / (h.tokens.len().max(1) as f64).powf(alpha);
    // At the first step all beams hold the same prefix: only beam 0 may expand.
    let mut live: Vec<Vec<Hyp>> = (0..b)
        .map(|_| (0..k).map(|j| Hyp { tokens: vec![], logp: if j == 0 { 0.0 } else { f64::NEG_INFINITY } }).collect())
        .collect();
    let mut finished: Vec<Vec<Hyp>> = vec![Vec::new(); b];
    let mut tokens = Tensor::full([(b * k) as i64], EOS, (Kind::Int64, device));
    for t in 0..max_len {
        let logp = model.step(&tokens, t, &mut caches, &enc, &mask)?.log_softmax(-1, Kind::Float); // (B*k, V)
        let prefixes: Vec<&[i64]> = alive.iter().flat_map(|&i| live[i].iter()).map(|h| h.tokens.as_slice()).collect();
        let logp = constrain(logp, &prefixes, t, cfg);
        let v = logp.size()[1];
        let prev =
            Tensor::from_slice(&alive.iter().flat_map(|&i| live[i].iter()).map(|h| h.logp as f32).collect::<Vec<_>>())
                .to_device(device);
        let cand = (logp + prev.unsqueeze(1)).view([alive.len() as i64, -1]); // (B, k*V)
        let (top, idx) = cand.topk(2 * k as i64, -1, true, true);
        let (top, idx) = (Vec::<f32>::try_from(top.flatten(0, 1))?, Vec::<i64>::try_from(idx.flatten(0, 1))?);
        let (mut origin, mut next_tokens, mut still) = (Vec::new(), Vec::new(), Vec::new());
        for (j, &i) in alive.iter().enumerate() {
            let mut next = Vec::with_capacity(k);
            for c in 0..2 * k {
                let (s, id) = (top[j * 2 * k + c] as f64, idx[j * 2 * k + c]);
                let (beam, tok) = ((id / v) as usize, id % v);
                if !s.is_finite() || next.len() == k {
                    continue;
                }
                let prefix = &live[i][beam].tokens;
                if tok == EOS {
                    finished[i].push(Hyp { tokens: prefix.clone(), logp: s });
                } else {
                    let mut tokens = prefix.clone();
                    tokens.push(tok);
                    next.push((beam, Hyp { tokens, logp: s }));
                }
            }
            while next.len() < k {
                // Fewer than k continuations (a tiny vocabulary): repeat a dead one.
                next.push((0, Hyp { tokens: vec![], logp: f64::NEG_INFINITY }));
            }
            // Done when k hypotheses have finished and no live one can still beat the worst.
            finished[i].sort_by(|a, b| score(b).total_cmp(&score(a)));
            finished[i].truncate(k);
            let best_live = next.iter().map(|(_, h)| score(h)).fold(f64::NEG_INFINITY, f64::max);
            live[i] = next.iter().map(|(_, h)| h.clone()).collect();
            if finished[i].len() == k && finished[i].last().is_some_and(|w| score(w) >= best_live) {
                continue;
            }
            still.push(i);
            for (beam, h) in next {
                origin.push((j * k + beam) as i64);
                next_tokens.push(h.tokens.last().copied().unwrap_or(EOS));
            }
        }
        if still.is_empty() {
            break;
        }
        let origin = Tensor::from_slice(&origin).to_device(device);
        if still.len() < alive.len() {
            // Every row of a document holds the same encoder output: any of its rows will do.
            (enc, mask) = (enc.index_select(0, &origin), mask.index_select(0, &origin));
            for c in caches.iter_mut() {
                c.reorder(&origin);
            }
            alive = still;
        } else {
            for c in caches.iter_mut() {
                c.reorder_within_documents(&origin);
            }
        }
        tokens = Tensor::from_slice(&next_tokens).to_device(device);
    }
    Ok((0..b)
        .map(|i| {
            let mut all: Vec<Hyp> = finished[i].to_vec();
            if all.is_empty() {
                all = live[i].iter().filter(|h| h.logp.is_finite()).cloned().collect();
            }
            all.into_iter().max_by(|a, b| score(a).total_cmp(&score(b))).map(|h| h.tokens).unwrap_or_default()
        })
        .collect())
}

#[cfg(all(test, feature = "reference"))]
mod tests {
    use super::*;
    use crate::models::summarizer::SummarizerConfig;
    use tch::nn::{self, OptimizerConfig};
    use tch::Device;

    /// A tiny model trained for 300 steps to copy each of `seqs` (then EOS).
    fn copy_model(seqs: &[Vec<i64>]) -> (nn::VarStore, Summarizer, crate::data::seq2seq::Batch) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = SummarizerConfig { d_model: 32, d_ffn: 64, ..SummarizerConfig::tiny(12) };
        let m = Summarizer::new(&vs.root(), &cfg).unwrap();
        let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
        let examples: Vec<crate::data::seq2seq::Example> = seqs
            .iter()
            .map(|s| crate::data::seq2seq::Example {
                src: [s.clone(), vec![EOS]].concat(),
                tgt: [s.clone(), vec![EOS]].concat(),
            })
            .collect();
        let batch = crate::data::seq2seq::Batch::new(&examples.iter().collect::<Vec<_>>(), Device::Cpu);
        for _ in 0..300 {
            let (loss, _, _) = m.loss(&batch, true).unwrap();
            opt.backward_step(&loss);
        }
        (vs, m, batch)
    }

    /// Greedy and beam search must both copy what the model learned to copy.
    #[test]
    fn greedy_and_beam_search_decode_what_a_model_learned() {
        let _rng = crate::rng::test_lock();
        let seqs: Vec<Vec<i64>> = vec![vec![3, 4, 5], vec![6, 7], vec![8, 9, 10, 11], vec![4, 4, 9]];
        let (_vs, m, batch) = copy_model(&seqs);
        let greedy = generate(&m, &batch.src, DecodeConfig::greedy(10)).unwrap();
        assert_eq!(greedy, seqs);
        let beam = generate(&m, &batch.src, DecodeConfig::beam(3, 10, 1.0)).unwrap();
        assert_eq!(beam, seqs);
        // A one-token budget stops every summary after one token.
        let short = generate(&m, &batch.src, DecodeConfig::beam(2, 1, 1.0)).unwrap();
        assert!(short.iter().all(|s| s.len() <= 1), "{short:?}");
        assert!(generate(&m, &batch.src, DecodeConfig::beam(0, 5, 1.0)).is_err());
    }

    fn repeats(s: &[i64], n: usize) -> bool {
        let grams: Vec<&[i64]> = s.windows(n).collect();
        grams.iter().enumerate().any(|(i, g)| grams[..i].contains(g))
    }

    #[test]
    fn banned_tokens_complete_an_earlier_ngram() {
        assert_eq!(banned_tokens(&[1, 2, 3, 1, 2], 3), HashSet::from([3]));
        assert_eq!(banned_tokens(&[5, 6, 5], 2), HashSet::from([6]));
        assert_eq!(banned_tokens(&[5, 6, 7, 5, 8, 5], 2), HashSet::from([6, 8]));
        assert_eq!(banned_tokens(&[1, 2], 1), HashSet::from([1, 2]));
        assert!(banned_tokens(&[1, 2], 3).is_empty() && banned_tokens(&[1, 2, 1], 0).is_empty());
    }

    /// A model that learned to repeat never repeats an n-gram once blocking is on, greedy or beam;
    /// min_len holds; one beam is still greedy.
    #[test]
    fn blocking_and_min_len_constrain_what_a_model_learned() {
        let _rng = crate::rng::test_lock();
        // Targets that repeat themselves: "4 4 9", "6 7 6 7", "8 8 8".
        let seqs: Vec<Vec<i64>> = vec![vec![4, 4, 9], vec![6, 7, 6, 7], vec![8, 8, 8], vec![3, 5]];
        let (_vs, m, batch) = copy_model(&seqs);
        assert_eq!(generate(&m, &batch.src, DecodeConfig::greedy(10)).unwrap(), seqs, "it learned to repeat");
        for n in [1, 2, 3] {
            for cfg in [DecodeConfig::greedy(10), DecodeConfig::beam(3, 10, 1.0)] {
                let out = generate(&m, &batch.src, cfg.no_repeat_ngram(n)).unwrap();
                assert!(out.iter().all(|s| !repeats(s, n)), "{n}-gram repeated with {cfg:?}: {out:?}");
            }
            let g = generate(&m, &batch.src, DecodeConfig::greedy(10).no_repeat_ngram(n).min_len(2)).unwrap();
            let b = generate(&m, &batch.src, DecodeConfig::beam(1, 10, 1.0).no_repeat_ngram(n).min_len(2)).unwrap();
            assert_eq!(g, b, "one beam is greedy with the options too");
        }
        // "3 5" stops after 2 tokens; with min_len 6 every summary is at least 6 tokens long.
        for cfg in [DecodeConfig::greedy(10), DecodeConfig::beam(3, 10, 1.0)] {
            let out = generate(&m, &batch.src, cfg.min_len(6)).unwrap();
            assert!(out.iter().all(|s| s.len() >= 6), "{cfg:?}: {out:?}");
        }
        let err = generate(&m, &batch.src, DecodeConfig::greedy(4).min_len(5)).unwrap_err().to_string();
        assert!(err.contains("min_len 5, max_len 4"), "{err}");
    }

    /// Documents leave the batch as they finish: each one's summary is the one it gets alone.
    #[test]
    fn a_batch_decodes_each_document_as_it_would_alone() {
        let _rng = crate::rng::test_lock();
        let seqs: Vec<Vec<i64>> = vec![vec![3, 4, 5], vec![6, 7], vec![8, 9, 10, 11], vec![4, 4, 9]];
        let (_vs, trained, batch) = copy_model(&seqs);
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let random = Summarizer::new(&vs.root(), &SummarizerConfig::tiny(20)).unwrap();
        let src = Tensor::from_slice(&[5i64, 6, 7, EOS, 9, 10, EOS, 0, 11, EOS, 0, 0]).reshape([3, 4]);
        // The trained model's summaries end at different steps; the random one's run to max_len.
        for (m, src, varied) in [(&trained, &batch.src, true), (&random, &src, false)] {
            for cfg in [
                DecodeConfig::greedy(12),
                DecodeConfig::beam(3, 12, 1.0),
                DecodeConfig::beam(2, 12, 0.6).no_repeat_ngram(2).min_len(1),
            ] {
                let all = generate(m, src, cfg).unwrap();
                let lengths: HashSet<usize> = all.iter().map(Vec::len).collect();
                assert!(!varied || lengths.len() > 1, "documents should finish at different steps: {all:?}");
                for (i, summary) in all.iter().enumerate() {
                    let alone = generate(m, &src.narrow(0, i as i64, 1), cfg).unwrap();
                    assert_eq!(&alone[0], summary, "document {i} with {cfg:?}");
                }
            }
        }
    }

    /// Beam search with one beam is greedy decoding.
    #[test]
    fn one_beam_is_greedy() {
        let _rng = crate::rng::test_lock();
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Summarizer::new(&vs.root(), &SummarizerConfig::tiny(20)).unwrap();
        let src = Tensor::from_slice(&[5i64, 6, 7, EOS, 9, 10, EOS, 0]).reshape([2, 4]);
        let greedy = generate(&m, &src, DecodeConfig::greedy(6)).unwrap();
        let one_beam = tch::no_grad(|| beam_search(&m, &src, &DecodeConfig::beam(1, 6, 1.0))).unwrap();
        assert_eq!(greedy, one_beam);
        assert!(greedy.iter().all(|s| s.len() <= 6));
    }
}

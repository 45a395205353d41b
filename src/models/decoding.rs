//! Summaries from a trained [`Summarizer`]: greedy decoding and beam search with a length
//! penalty, both incremental (each step runs only the newest position through the decoder).

use tch::{Kind, Tensor};

use crate::data::text::EOS;
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
}

impl DecodeConfig {
    /// Greedy decoding of at most `max_len` tokens.
    pub fn greedy(max_len: i64) -> Self {
        DecodeConfig { beams: 1, max_len, length_penalty: 1.0 }
    }

    /// Beam search with `beams` hypotheses, at most `max_len` tokens, length penalty `length_penalty` (α).
    pub fn beam(beams: usize, max_len: i64, length_penalty: f64) -> Self {
        DecodeConfig { beams, max_len, length_penalty }
    }
}

/// Summaries of `src: (B, S)` as token ids (without EOS), one per document.
pub fn generate(model: &Summarizer, src: &Tensor, cfg: DecodeConfig) -> Result<Vec<Vec<i64>>> {
    if cfg.beams == 0 || cfg.max_len < 1 {
        return Err(Error::Config(format!(
            "decoding needs at least 1 beam and max_len >= 1, got {} beams and max_len {}",
            cfg.beams, cfg.max_len
        )));
    }
    let max_len = cfg.max_len.min(model.cfg.max_positions);
    tch::no_grad(|| {
        if cfg.beams == 1 {
            greedy(model, src, max_len)
        } else {
            beam_search(model, src, cfg.beams, max_len, cfg.length_penalty)
        }
    })
}

fn greedy(model: &Summarizer, src: &Tensor, max_len: i64) -> Result<Vec<Vec<i64>>> {
    let (enc, mask) = model.encode(src, false)?;
    let b = src.size()[0] as usize;
    let mut caches = model.new_caches();
    let mut tokens = Tensor::full([b as i64], EOS, (Kind::Int64, src.device()));
    let (mut out, mut done) = (vec![Vec::new(); b], vec![false; b]);
    for t in 0..max_len {
        tokens = model.step(&tokens, t, &mut caches, &enc, &mask)?.argmax(-1, false);
        for (i, id) in Vec::<i64>::try_from(&tokens)?.into_iter().enumerate() {
            if !done[i] {
                if id == EOS {
                    done[i] = true;
                } else {
                    out[i].push(id);
                }
            }
        }
        if done.iter().all(|&d| d) {
            break;
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

fn beam_search(model: &Summarizer, src: &Tensor, k: usize, max_len: i64, alpha: f64) -> Result<Vec<Vec<i64>>> {
    let b = src.size()[0] as usize;
    let device = src.device();
    // Every document's beams side by side: rows b*k .. b*k + k - 1.
    let rows = Tensor::arange(b as i64, (Kind::Int64, device)).repeat_interleave_self_int(k as i64, 0, None);
    let (enc, mask) = model.encode(&src.index_select(0, &rows), false)?;
    let mut caches = model.new_caches();
    let score = |h: &Hyp| h.logp / (h.tokens.len().max(1) as f64).powf(alpha);
    // At the first step all beams hold the same prefix: only beam 0 may expand.
    let mut live: Vec<Vec<Hyp>> = (0..b)
        .map(|_| (0..k).map(|j| Hyp { tokens: vec![], logp: if j == 0 { 0.0 } else { f64::NEG_INFINITY } }).collect())
        .collect();
    let mut finished: Vec<Vec<Hyp>> = vec![Vec::new(); b];
    let mut done = vec![false; b];
    let mut tokens = Tensor::full([(b * k) as i64], EOS, (Kind::Int64, device));
    for t in 0..max_len {
        let logp = model.step(&tokens, t, &mut caches, &enc, &mask)?.log_softmax(-1, Kind::Float); // (B*k, V)
        let v = logp.size()[1];
        let prev =
            Tensor::from_slice(&live.iter().flatten().map(|h| h.logp as f32).collect::<Vec<_>>()).to_device(device);
        let cand = (logp + prev.unsqueeze(1)).view([b as i64, -1]); // (B, k*V)
        let (top, idx) = cand.topk(2 * k as i64, -1, true, true);
        let (top, idx) = (Vec::<f32>::try_from(top.flatten(0, 1))?, Vec::<i64>::try_from(idx.flatten(0, 1))?);
        let (mut origin, mut next_tokens) = (Vec::with_capacity(b * k), Vec::with_capacity(b * k));
        for i in 0..b {
            let mut next = Vec::with_capacity(k);
            for c in 0..2 * k {
                let (s, id) = (top[i * 2 * k + c] as f64, idx[i * 2 * k + c]);
                let (beam, tok) = ((id / v) as usize, id % v);
                if !s.is_finite() || next.len() == k {
                    continue;
                }
                let prefix = &live[i][beam].tokens;
                if tok == EOS {
                    if !done[i] {
                        finished[i].push(Hyp { tokens: prefix.clone(), logp: s });
                    }
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
            if finished[i].len() == k && finished[i].last().is_some_and(|w| score(w) >= best_live) {
                done[i] = true;
            }
            for (beam, h) in next {
                origin.push((i * k + beam) as i64);
                next_tokens.push(h.tokens.last().copied().unwrap_or(EOS));
                live[i].push(h);
            }
            live[i].drain(..k);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        let origin = Tensor::from_slice(&origin).to_device(device);
        for c in caches.iter_mut() {
            c.reorder(&origin);
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

    /// A tiny model trained to copy its source: greedy and beam search must both copy it.
    #[test]
    fn greedy_and_beam_search_decode_what_a_model_learned() {
        let _rng = crate::test_rng_lock();
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = SummarizerConfig { d_model: 32, d_ffn: 64, ..SummarizerConfig::tiny(12) };
        let m = Summarizer::new(&vs.root(), &cfg).unwrap();
        let mut opt = nn::Adam::default().build(&vs, 1e-2).unwrap();
        let seqs: Vec<Vec<i64>> = vec![vec![3, 4, 5], vec![6, 7], vec![8, 9, 10, 11], vec![4, 4, 9]];
        let examples: Vec<crate::data::text::Example> = seqs
            .iter()
            .map(|s| crate::data::text::Example {
                src: [s.clone(), vec![EOS]].concat(),
                tgt: [s.clone(), vec![EOS]].concat(),
            })
            .collect();
        let batch = crate::data::text::Batch::new(&examples.iter().collect::<Vec<_>>(), Device::Cpu);
        for _ in 0..300 {
            let (loss, _, _) = m.loss(&batch, true).unwrap();
            opt.backward_step(&loss);
        }
        let greedy = generate(&m, &batch.src, DecodeConfig::greedy(10)).unwrap();
        assert_eq!(greedy, seqs);
        let beam = generate(&m, &batch.src, DecodeConfig::beam(3, 10, 1.0)).unwrap();
        assert_eq!(beam, seqs);
        // A one-token budget stops every summary after one token.
        let short = generate(&m, &batch.src, DecodeConfig::beam(2, 1, 1.0)).unwrap();
        assert!(short.iter().all(|s| s.len() <= 1), "{short:?}");
        assert!(generate(&m, &batch.src, DecodeConfig::beam(0, 5, 1.0)).is_err());
    }

    /// Beam search with one beam is greedy decoding.
    #[test]
    fn one_beam_is_greedy() {
        let _rng = crate::test_rng_lock();
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Summarizer::new(&vs.root(), &SummarizerConfig::tiny(20)).unwrap();
        let src = Tensor::from_slice(&[5i64, 6, 7, EOS, 9, 10, EOS, 0]).reshape([2, 4]);
        let greedy = generate(&m, &src, DecodeConfig::greedy(6)).unwrap();
        let one_beam = tch::no_grad(|| beam_search(&m, &src, 1, 6, 1.0)).unwrap();
        assert_eq!(greedy, one_beam);
        assert!(greedy.iter().all(|s| s.len() <= 6));
    }
}

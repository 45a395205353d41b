//! The sequence-to-sequence types the summarizer, its decoding and its data share: the special
//! token ids, a tokenized (document → summary) [`Example`], a padded [`Batch`] and the
//! padding-aware batching. A leaf: it knows no tokenizer, file or model.
//!
//! Token ids follow T5's layout: `<pad>` = 0, `</s>` (EOS) = 1, `<unk>` = 2. A source is the
//! document's tokens then EOS; a target is the summary's tokens then EOS; the decoder reads EOS
//! followed by the target shifted right, and the loss ignores label -100 (padding).

use tch::{Device, Kind, Tensor};

/// Padding id.
pub const PAD: i64 = 0;
/// End of sequence; also the decoder's first input.
pub const EOS: i64 = 1;
/// Unknown (byte-level BPE never needs it; kept for T5's layout).
pub const UNK: i64 = 2;
/// Labels with this value are ignored by the loss and the accuracy.
pub const IGNORE: i64 = -100;
/// One tokenized pair: `src` = document tokens + EOS, `tgt` = summary tokens + EOS.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Document tokens, then EOS.
    pub src: Vec<i64>,
    /// Summary tokens, then EOS.
    pub tgt: Vec<i64>,
}

/// A padded batch.
#[derive(Debug)]
pub struct Batch {
    /// `(B, S)` document ids, padded with [`PAD`].
    pub src: Tensor,
    /// `(B, T)` decoder input: EOS, then the target shifted right; padded with [`PAD`].
    pub dec_in: Tensor,
    /// `(B, T)` next-token labels (the target), padded with [`IGNORE`] = -100.
    pub labels: Tensor,
}

impl Batch {
    /// Pads `examples` to the longest of each side.
    pub fn new(examples: &[&Example], device: Device) -> Batch {
        let s = examples.iter().map(|e| e.src.len()).max().unwrap_or(1);
        let t = examples.iter().map(|e| e.tgt.len()).max().unwrap_or(1);
        let (mut src, mut dec_in, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for e in examples {
            src.extend(e.src.iter().copied().chain(std::iter::repeat(PAD)).take(s));
            dec_in.extend(
                std::iter::once(EOS)
                    .chain(e.tgt[..e.tgt.len() - 1].iter().copied())
                    .chain(std::iter::repeat(PAD))
                    .take(t),
            );
            labels.extend(e.tgt.iter().copied().chain(std::iter::repeat(IGNORE)).take(t));
        }
        let b = examples.len() as i64;
        let to = |v: Vec<i64>, n: usize| Tensor::from_slice(&v).reshape([b, n as i64]).to_device(device);
        Batch { src: to(src, s), dec_in: to(dec_in, t), labels: to(labels, t) }
    }

    /// Examples in the batch `B`.
    pub fn size(&self) -> i64 {
        self.src.size()[0]
    }
}

/// Padding-aware batches: examples of similar document length go together, so little compute
/// goes to padding. With `shuffle`, examples are shuffled (libtorch's seeded generator), sorted
/// by length within pools of 50 batches, and the batches' order is shuffled again; without,
/// batches follow the sorted order of the whole set. Returns indices into `examples`.
pub fn batch_indices(examples: &[Example], batch_size: usize, shuffle: bool) -> Vec<Vec<usize>> {
    let n = examples.len();
    let batch_size = batch_size.max(1);
    let perm = |n: usize| -> Vec<usize> {
        Vec::<i64>::try_from(Tensor::randperm(n as i64, (Kind::Int64, Device::Cpu)))
            .unwrap_or_default()
            .into_iter()
            .map(|i| i as usize)
            .collect()
    };
    let mut order: Vec<usize> = if shuffle { perm(n) } else { (0..n).collect() };
    let pool = if shuffle { batch_size * 50 } else { n.max(1) };
    for chunk in order.chunks_mut(pool) {
        chunk.sort_by_key(|&i| std::cmp::Reverse(examples[i].src.len()));
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    if shuffle {
        let p = perm(batches.len());
        batches = p.into_iter().map(|i| std::mem::take(&mut batches[i])).collect();
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(src: usize, tgt: usize) -> Example {
        Example { src: (10..10 + src as i64).collect(), tgt: (20..20 + tgt as i64).collect() }
    }

    #[test]
    fn a_batch_pads_shifts_and_ignores_padding() {
        let (a, b) =
            (Example { src: vec![5, 6, EOS], tgt: vec![7, 8, EOS] }, Example { src: vec![9, EOS], tgt: vec![3, EOS] });
        let batch = Batch::new(&[&a, &b], Device::Cpu);
        assert_eq!(Vec::<i64>::try_from(batch.src.flatten(0, 1)).unwrap(), vec![5, 6, EOS, 9, EOS, PAD]);
        assert_eq!(Vec::<i64>::try_from(batch.dec_in.flatten(0, 1)).unwrap(), vec![EOS, 7, 8, EOS, 3, PAD]);
        assert_eq!(Vec::<i64>::try_from(batch.labels.flatten(0, 1)).unwrap(), vec![7, 8, EOS, 3, EOS, IGNORE]);
    }

    #[test]
    fn batches_cover_every_example_once_and_group_lengths() {
        tch::manual_seed(0);
        let examples: Vec<Example> = (0..1000).map(|i| ex(1 + (i * 37) % 200, 3)).collect();
        let batches = batch_indices(&examples, 16, true);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        // Sorting within pools keeps padding low: far less than random batches would have.
        let pad: usize = batches
            .iter()
            .map(|b| {
                b.iter().map(|&i| examples[i].src.len()).max().unwrap() * b.len()
                    - b.iter().map(|&i| examples[i].src.len()).sum::<usize>()
            })
            .sum();
        let real: usize = examples.iter().map(|e| e.src.len()).sum();
        assert!(pad * 10 < real, "padding {pad} vs real tokens {real}");
    }
}

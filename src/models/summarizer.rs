//! The Transformer encoder-decoder summarizer of notebook 2, as in the original homework:
//! learned positional embeddings shared by the encoder and the decoder, one embedding
//! LayerNorm, input and output embeddings tied, the decoder's input starting from EOS, and a
//! loss that ignores label -100. Its layers are [`SeqLayer`]s: the crate's
//! [`TransformerLayer`], or the student's own from the notebook.
//!
//! (Over 500 lines: about 180 of them are its tests — incremental = full decoding, padding
//! invariance, the loss against full logits, gradients, error messages — kept beside the model.)

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Reduction, Tensor};

use super::transformer::{dropout, Activation, LayerCache, LayerConfig, SeqLayer, Stack};
use crate::data::seq2seq::{Batch, IGNORE, PAD};
use crate::error::{Error, Result};

/// The summarizer's sizes. Saved as `config.json` beside a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummarizerConfig {
    /// Token ids (the tokenizer's vocabulary size).
    pub vocab_size: i64,
    /// Model width `D`.
    pub d_model: i64,
    /// Attention heads `H` (`D % H == 0`).
    pub n_heads: i64,
    /// Encoder layers.
    pub encoder_layers: i64,
    /// Decoder layers.
    pub decoder_layers: i64,
    /// Width of each layer's feed-forward block.
    pub d_ffn: i64,
    /// Dropout on embeddings, residual branches and the feed-forward block while training.
    pub dropout: f64,
    /// Longest source or target in tokens: positions `1..=max_positions` are learned (0 is padding's).
    pub max_positions: i64,
    /// The feed-forward activation of the crate's layers (the homework's ReLU; GELU for a model
    /// warm-started from BERT). A student's own layers choose their own.
    /// (Not written when ReLU, so configs and checkpoints from before the field are unchanged.)
    #[serde(default, skip_serializing_if = "Activation::is_relu")]
    pub activation: Activation,
}

impl SummarizerConfig {
    /// The original homework's model: 4 + 4 layers, d_model 512, 8 heads, d_ffn 2048, dropout 0.1.
    pub fn full(vocab_size: i64) -> Self {
        SummarizerConfig {
            vocab_size,
            d_model: 512,
            n_heads: 8,
            encoder_layers: 4,
            decoder_layers: 4,
            d_ffn: 2048,
            dropout: 0.1,
            max_positions: 1024,
            activation: Activation::Relu,
        }
    }

    /// Sized so that 2 epochs on the Debian corpus take at most 20 minutes on 2 CPU cores, in
    /// the notebook (see BENCHMARKS.md).
    pub fn cpu(vocab_size: i64) -> Self {
        SummarizerConfig {
            vocab_size,
            d_model: 192,
            n_heads: 4,
            encoder_layers: 2,
            decoder_layers: 2,
            d_ffn: 512,
            dropout: 0.1,
            max_positions: 256,
            activation: Activation::Relu,
        }
    }

    /// A tiny model for tests.
    pub fn tiny(vocab_size: i64) -> Self {
        SummarizerConfig {
            vocab_size,
            d_model: 16,
            n_heads: 2,
            encoder_layers: 2,
            decoder_layers: 2,
            d_ffn: 32,
            dropout: 0.0,
            max_positions: 64,
            activation: Activation::Relu,
        }
    }

    /// The sizes of each of its layers.
    pub fn layer(&self) -> LayerConfig {
        LayerConfig { d_model: self.d_model, n_heads: self.n_heads, d_ffn: self.d_ffn, dropout: self.dropout }
    }

    /// Refuses sizes that cannot work, saying why.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("d_ffn", self.d_ffn),
            ("max_positions", self.max_positions),
        ];
        if let Some((name, v)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(Error::Config(format!("{name} must be positive, got {v}")));
        }
        if self.d_model % self.n_heads != 0 {
            return Err(Error::Config(format!(
                "d_model ({}) must be divisible by n_heads ({})",
                self.d_model, self.n_heads
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Config(format!("dropout must be in [0, 1), got {}", self.dropout)));
        }
        Ok(())
    }
}

/// The encoder-decoder. Parameter names: `embed_tokens.weight`, `embed_positions.weight`,
/// `layernorm_embedding.*`, `encoder.layers.{i}.*`, `decoder.layers.{i}.*`.
#[derive(Debug)]
pub struct Summarizer {
    /// Its sizes.
    pub cfg: SummarizerConfig,
    /// `(V, D)` token embeddings, also the output projection (tied).
    pub embed_tokens: Tensor,
    /// `(1 + max_positions, D)` learned positions, shared by encoder and decoder; row 0 is padding's.
    pub embed_positions: Tensor,
    /// LayerNorm over token + position embeddings.
    pub layernorm_embedding: nn::LayerNorm,
    /// The encoder's layers.
    pub encoder: Vec<Box<dyn SeqLayer>>,
    /// The decoder's layers.
    pub decoder: Vec<Box<dyn SeqLayer>>,
    /// Position ids of a padded batch: `(tokens (B, T), pad) -> (B, T)`, padding keeping `pad`.
    pub positions: fn(&Tensor, i64) -> Tensor,
}

impl Summarizer {
    /// The summarizer with the crate's [`TransformerLayer`]s and position ids.
    #[cfg(feature = "reference")]
    pub fn new(vs: &nn::Path, cfg: &SummarizerConfig) -> Result<Self> {
        use super::transformer::{make_positions, TransformerLayer};
        let act = cfg.activation;
        Self::with_layers(
            vs,
            cfg,
            |p, c, stack| Box::new(TransformerLayer::new(p, c, stack).with_activation(act)),
            make_positions,
        )
    }

    /// The summarizer with layers built by `layer(path, sizes, stack)` and position ids from
    /// `positions(tokens, pad)` — a student's own, in notebook 2.
    pub fn with_layers(
        vs: &nn::Path,
        cfg: &SummarizerConfig,
        mut layer: impl FnMut(&nn::Path, &LayerConfig, Stack) -> Box<dyn SeqLayer>,
        positions: fn(&Tensor, i64) -> Tensor,
    ) -> Result<Self> {
        cfg.validate()?;
        let init = nn::Init::Randn { mean: 0.0, stdev: (cfg.d_model as f64).powf(-0.5) };
        let embed_tokens = (vs / "embed_tokens").var("weight", &[cfg.vocab_size, cfg.d_model], init);
        let embed_positions = (vs / "embed_positions").var("weight", &[cfg.max_positions + 1, cfg.d_model], init);
        tch::no_grad(|| {
            // Padding's rows are zero (and get no gradient: see `embed`).
            let _ = embed_tokens.get(PAD).zero_();
            let _ = embed_positions.get(PAD).zero_();
        });
        let sizes = cfg.layer();
        let mut stack = |name: &str, n: i64, stack: Stack| {
            let p = vs / name / "layers";
            (0..n).map(|i| layer(&(&p / i), &sizes, stack)).collect::<Vec<_>>()
        };
        let encoder = stack("encoder", cfg.encoder_layers, Stack::Encoder);
        let decoder = stack("decoder", cfg.decoder_layers, Stack::Decoder);
        Ok(Summarizer {
            cfg: cfg.clone(),
            embed_tokens,
            embed_positions,
            layernorm_embedding: nn::layer_norm(vs / "layernorm_embedding", vec![cfg.d_model], Default::default()),
            encoder,
            decoder,
            positions,
        })
    }

    fn check_tokens(&self, what: &str, tokens: &Tensor) -> Result<()> {
        if tokens.dim() != 2 || tokens.kind() != Kind::Int64 {
            return Err(Error::Input(format!(
                "{what}: expected int64 token ids (B, T), got {:?} of shape {:?}",
                tokens.kind(),
                tokens.size()
            )));
        }
        let t = tokens.size()[1];
        if t > self.cfg.max_positions {
            return Err(Error::Input(format!("{what}: {t} tokens, but the model has {} positions: truncate the input (or build a config with more max_positions)", self.cfg.max_positions)));
        }
        if tokens.numel() > 0 {
            let (lo, hi) = (tokens.min().int64_value(&[]), tokens.max().int64_value(&[]));
            if lo < 0 || hi >= self.cfg.vocab_size {
                return Err(Error::Input(format!(
                    "{what}: token ids must be in 0..{}, got {lo}..={hi}",
                    self.cfg.vocab_size
                )));
            }
        }
        Ok(())
    }

    /// Token + position embeddings → LayerNorm → dropout.
    ///
    /// # Shapes
    /// `tokens, positions: (B, T)` int64 → `(B, T, D)`.
    pub fn embed(&self, tokens: &Tensor, positions: &Tensor, train: bool) -> Tensor {
        let x = Tensor::embedding(&self.embed_tokens, tokens, PAD, false, false)
            + Tensor::embedding(&self.embed_positions, positions, PAD, false, false);
        dropout(&self.layernorm_embedding.forward(&x), self.cfg.dropout, train)
    }

    /// # Shapes
    /// `src: (B, S)` ids → `(encoder_out (B, S, D), src_padding_mask (B, S) bool, true = padding)`.
    pub fn encode(&self, src: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        self.check_tokens("source", src)?;
        let mask = src.eq(PAD);
        let mut x = self.embed(src, &(self.positions)(src, PAD), train);
        for (i, layer) in self.encoder.iter().enumerate() {
            x = checked(layer.forward(&x, Some(&mask), None, None, train), &x, "encoder", i)?;
        }
        Ok((x, mask))
    }

    /// # Shapes
    /// `dec_in: (B, T)` ids (EOS first), `encoder_out: (B, S, D)`, `src_padding_mask: (B, S)` →
    /// decoder states `(B, T, D)`.
    pub fn decode(
        &self,
        dec_in: &Tensor,
        encoder_out: &Tensor,
        src_padding_mask: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        self.check_tokens("decoder input", dec_in)?;
        let mask = dec_in.eq(PAD);
        let mut x = self.embed(dec_in, &(self.positions)(dec_in, PAD), train);
        for (i, layer) in self.decoder.iter().enumerate() {
            x = checked(
                layer.forward(&x, Some(&mask), Some(encoder_out), Some(src_padding_mask), train),
                &x,
                "decoder",
                i,
            )?;
        }
        Ok(x)
    }

    /// Next-token logits through the tied output projection: `(B, T, D)` → `(B, T, V)`.
    pub fn logits(&self, states: &Tensor) -> Tensor {
        states.matmul(&self.embed_tokens.tr()) // (B, T, D) x (D, V) -> (B, T, V)
    }

    /// # Shapes
    /// `src: (B, S)`, `dec_in: (B, T)` → logits `(B, T, V)`.
    pub fn forward_t(&self, src: &Tensor, dec_in: &Tensor, train: bool) -> Result<Tensor> {
        let (enc, mask) = self.encode(src, train)?;
        Ok(self.logits(&self.decode(dec_in, &enc, &mask, train)?))
    }

    /// Mean cross-entropy over the labels that are not -100, and the teacher-forced next-token
    /// accuracy's counts `(correct, counted)` over the same labels.
    pub fn loss(&self, batch: &Batch, train: bool) -> Result<(Tensor, i64, i64)> {
        self.loss_smoothed(batch, train, 0.0)
    }

    /// [`Summarizer::loss`] with label smoothing `epsilon` (0 = plain cross-entropy; libtorch's
    /// `label_smoothing`, PyTorch's `F.cross_entropy(..., label_smoothing=ε)`).
    pub fn loss_smoothed(&self, batch: &Batch, train: bool, epsilon: f64) -> Result<(Tensor, i64, i64)> {
        if !(0.0..1.0).contains(&epsilon) {
            return Err(Error::Config(format!("label smoothing must be in [0, 1), got {epsilon}")));
        }
        if batch.labels.size() != batch.dec_in.size() {
            return Err(Error::Shape {
                what: "labels (the decoder input's shape)".into(),
                expected: batch.dec_in.size(),
                got: batch.labels.size(),
            });
        }
        let (enc, mask) = self.encode(&batch.src, train)?;
        let states = self.decode(&batch.dec_in, &enc, &mask, train)?;
        // The output projection only where a label is scored: the same loss as projecting every
        // position and ignoring -100, without the ~40 % of a batch's summary positions that are
        // padding (the costliest product of the step: 8,000 × D per position).
        let labels = batch.labels.reshape([-1]);
        let scored = labels.ne(IGNORE).nonzero().squeeze_dim(1);
        // reshape, not view: a student's layer may hand back a non-contiguous tensor.
        let logits = self.logits(&states.reshape([-1, self.cfg.d_model]).index_select(0, &scored)); // (N, V)
        let labels = labels.index_select(0, &scored);
        let loss = logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, IGNORE, epsilon);
        let correct = logits.argmax(-1, false).eq_tensor(&labels).sum(Kind::Int64).int64_value(&[]);
        Ok((loss, correct, labels.size()[0]))
    }

    /// Empty caches, one per decoder layer.
    pub fn new_caches(&self) -> Vec<LayerCache> {
        self.decoder.iter().map(|_| LayerCache::default()).collect()
    }

    /// One incremental decoding step: the token at decoder position `t` (0 = the EOS start),
    /// with `caches` holding positions `0..t`.
    ///
    /// # Shapes
    /// `tokens: (B,)` ids, `encoder_out: (B, S, D)`, `src_padding_mask: (B, S)` → logits `(B, V)`.
    pub fn step(
        &self,
        tokens: &Tensor,
        t: i64,
        caches: &mut [LayerCache],
        encoder_out: &Tensor,
        src_padding_mask: &Tensor,
    ) -> Result<Tensor> {
        if t >= self.cfg.max_positions {
            return Err(Error::Input(format!("decoding step {t}: the model has {} positions", self.cfg.max_positions)));
        }
        let tokens = tokens.reshape([-1, 1]);
        let positions = Tensor::full([tokens.size()[0], 1], PAD + 1 + t, (Kind::Int64, tokens.device()));
        let mut x = self.embed(&tokens, &positions, false);
        for (layer, cache) in self.decoder.iter().zip(caches.iter_mut()) {
            x = layer.step(&x, cache, encoder_out, Some(src_padding_mask));
        }
        Ok(self.logits(&x).squeeze_dim(1))
    }
}

/// A layer must keep its input's shape `(B, T, D)`; a student's layer that does not is named.
fn checked(out: Tensor, input: &Tensor, stack: &str, i: usize) -> Result<Tensor> {
    if out.size() != input.size() {
        return Err(Error::Shape {
            what: format!("{stack} layer {i}'s output (a layer keeps its input's shape (B, T, D))"),
            expected: input.size(),
            got: out.size(),
        });
    }
    Ok(out)
}

#[cfg(all(test, feature = "reference"))]
mod tests {
    use super::*;
    use crate::data::seq2seq::{Example, EOS};
    use tch::Device;

    fn model(dropout: f64) -> (nn::VarStore, Summarizer) {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Summarizer::new(&vs.root(), &SummarizerConfig { dropout, ..SummarizerConfig::tiny(50) }).unwrap();
        (vs, m)
    }

    /// A layer that applies a function to its input, for what the model does with odd layers.
    #[derive(Debug)]
    struct FnLayer(fn(&Tensor) -> Tensor);

    impl SeqLayer for FnLayer {
        fn forward(&self, x: &Tensor, _: Option<&Tensor>, _: Option<&Tensor>, _: Option<&Tensor>, _: bool) -> Tensor {
            (self.0)(x)
        }
    }

    fn batch() -> Batch {
        let a = Example { src: vec![5, 6, 7, 8, EOS], tgt: vec![9, 10, 11, EOS] };
        let b = Example { src: vec![12, 13, EOS], tgt: vec![14, EOS] };
        Batch::new(&[&a, &b], Device::Cpu)
    }

    #[test]
    fn incremental_decoding_equals_full_decoding() {
        let _rng = crate::rng::test_lock();
        let (_vs, m) = model(0.0);
        let batch = batch();
        let (enc, mask) = m.encode(&batch.src, false).unwrap();
        let dec_in = Tensor::from_slice(&[EOS, 9, 10, 11, EOS, 14, 15, 16]).reshape([2, 4]);
        let full = m.logits(&m.decode(&dec_in, &enc, &mask, false).unwrap());
        let mut caches = m.new_caches();
        for t in 0..4 {
            let step = m.step(&dec_in.select(1, t), t, &mut caches, &enc, &mask).unwrap();
            let diff = (step - full.select(1, t)).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "step {t}: max difference {diff}");
        }
    }

    #[test]
    fn padding_the_source_does_not_change_the_output() {
        let _rng = crate::rng::test_lock();
        let (_vs, m) = model(0.0);
        let short = Tensor::from_slice(&[12i64, 13, EOS]).reshape([1, 3]);
        let padded = Tensor::from_slice(&[12i64, 13, EOS, PAD, PAD]).reshape([1, 5]);
        let dec_in = Tensor::from_slice(&[EOS, 14]).reshape([1, 2]);
        let a = m.forward_t(&short, &dec_in, false).unwrap();
        let b = m.forward_t(&padded, &dec_in, false).unwrap();
        assert!((a - b).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn the_loss_ignores_padding_and_falls_on_a_repeated_batch() {
        let _rng = crate::rng::test_lock();
        let (vs, m) = model(0.0);
        let batch = batch();
        let (loss, correct, counted) = m.loss(&batch, true).unwrap();
        assert_eq!(counted, 6, "4 + 2 real target tokens");
        assert!(correct <= counted);
        let first = loss.double_value(&[]);
        assert!((first - (50f64).ln()).abs() < 1.5, "initial loss {first} should be near ln V");
        let mut opt = nn::OptimizerConfig::build(nn::Adam::default(), &vs, 1e-2).unwrap();
        for _ in 0..60 {
            let (l, _, _) = m.loss(&batch, true).unwrap();
            opt.backward_step(&l);
        }
        let (last, correct, _) = m.loss(&batch, false).unwrap();
        assert!(last.double_value(&[]) < first * 0.2, "{first} -> {}", last.double_value(&[]));
        assert_eq!(correct, 6);
    }

    #[test]
    fn the_loss_equals_cross_entropy_over_every_position_with_padding_ignored() {
        // The loss projects only the scored positions: it must be the cross-entropy of the full
        // logits with -100 ignored, in value, accuracy and gradient, label smoothing included.
        let _rng = crate::rng::test_lock();
        for epsilon in [0.0, 0.1] {
            let (vs, m) = model(0.0);
            let batch = batch();
            let (loss, correct, counted) = m.loss_smoothed(&batch, false, epsilon).unwrap();
            loss.backward();
            let packed: Vec<Tensor> = vs.trainable_variables().iter().map(|v| v.grad().copy()).collect();
            vs.trainable_variables().iter().for_each(|v| {
                let _ = v.grad().zero_();
            });
            let logits = m.forward_t(&batch.src, &batch.dec_in, false).unwrap().view([-1, 50]);
            let labels = batch.labels.view([-1]);
            let full = logits.cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, IGNORE, epsilon);
            full.backward();
            let diff = (loss.double_value(&[]) - full.double_value(&[])).abs();
            assert!(
                diff < 1e-6,
                "epsilon {epsilon}: loss {} against {}",
                loss.double_value(&[]),
                full.double_value(&[])
            );
            let scored = labels.ne(IGNORE);
            let right = logits.argmax(-1, false).eq_tensor(&labels).logical_and(&scored).sum(Kind::Int64);
            assert_eq!((correct, counted), (right.int64_value(&[]), 6));
            for (p, v) in packed.iter().zip(vs.trainable_variables()) {
                let d = (p - v.grad()).abs().max().double_value(&[]);
                assert!(d < 1e-6, "gradient differs by {d}");
            }
        }
        let (_vs, m) = model(0.0);
        let mut bad = batch();
        bad.labels = bad.labels.narrow(1, 0, 2);
        let msg = m.loss(&bad, false).unwrap_err().to_string();
        assert!(msg.contains("expected shape (2, 4), got (2, 2)"), "{msg}");
    }

    #[test]
    fn a_layer_that_returns_a_non_contiguous_tensor_still_gives_a_loss() {
        // A student's layer may end in a transpose: the loss must not need contiguous states.
        let _rng = crate::rng::test_lock();
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Summarizer::with_layers(
            &vs.root(),
            &SummarizerConfig::tiny(50),
            |_, _, _| Box::new(FnLayer(|x| x.transpose(0, 1).contiguous().transpose(0, 1))),
            super::super::transformer::make_positions,
        )
        .unwrap();
        let (loss, _, counted) = m.loss(&batch(), false).unwrap();
        assert_eq!(counted, 6);
        assert!(loss.double_value(&[]).is_finite());
    }

    #[test]
    fn every_parameter_gets_a_gradient_and_padding_positions_none() {
        let _rng = crate::rng::test_lock();
        let (vs, m) = model(0.1);
        let (loss, _, _) = m.loss(&batch(), true).unwrap();
        loss.backward();
        for (name, var) in vs.variables() {
            let g = var.grad();
            assert!(g.defined() && g.isfinite().all().int64_value(&[]) == 1, "{name}");
            assert!(g.abs().sum(Kind::Double).double_value(&[]) > 0.0, "{name} got no gradient");
        }
        // Padding's position row is looked up but gets no gradient (`padding_idx`). Its token row
        // does get one, through the tied output projection (the logit of <pad>).
        assert_eq!(m.embed_positions.grad().get(PAD).abs().sum(Kind::Double).double_value(&[]), 0.0);
        assert_eq!(m.embed_positions.get(PAD).abs().sum(Kind::Double).double_value(&[]), 0.0);
    }

    #[test]
    fn bad_inputs_and_configs_say_what_was_expected() {
        let _rng = crate::rng::test_lock();
        let (_vs, m) = model(0.0);
        let too_long = Tensor::ones([1, 65], (Kind::Int64, Device::Cpu));
        assert!(m.encode(&too_long, false).unwrap_err().to_string().contains("64 positions"));
        let bad_id = Tensor::from_slice(&[3i64, 99]).reshape([1, 2]);
        assert!(m.encode(&bad_id, false).unwrap_err().to_string().contains("0..50, got 3..=99"));
        let floats = Tensor::ones([1, 2], (Kind::Float, Device::Cpu));
        assert!(m.encode(&floats, false).unwrap_err().to_string().contains("int64"));
        // A layer that changes the shape is named, with both shapes.
        let vs = nn::VarStore::new(Device::Cpu);
        let bad = Summarizer::with_layers(
            &vs.root(),
            &SummarizerConfig::tiny(50),
            |_, _, _| Box::new(FnLayer(|x| x.narrow(2, 0, 8))),
            super::super::transformer::make_positions,
        )
        .unwrap();
        let msg = bad.encode(&bad_id.clamp(0, 49), false).unwrap_err().to_string();
        assert!(
            msg.contains("encoder layer 0's output") && msg.contains("expected shape (1, 2, 16), got (1, 2, 8)"),
            "{msg}"
        );
        let cfg = SummarizerConfig { n_heads: 3, ..SummarizerConfig::tiny(50) };
        assert!(cfg.validate().unwrap_err().to_string().contains("divisible"));
    }
}

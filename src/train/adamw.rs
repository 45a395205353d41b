//! AdamW written in the crate, with its state in the open: the moment estimates and the step
//! count are saved in a checkpoint and loaded back, so that a run resumed mid-epoch continues
//! exactly where it stopped ([`super::Fit::resumable`]). tch's optimizer wraps libtorch's, whose
//! state cannot be read out.
//!
//! The update is libtorch's `torch::optim::AdamW` step (decoupled weight decay first,
//! bias-corrected moments, `eps` added to `sqrt(v̂)`, the moments moved as `lerp` does). On the
//! CPU, for `f32` variables, it is one fused pass in Rust over each variable's weights, gradient
//! and moments (as PyTorch's `AdamW(fused=True)`; tch exposes neither `_fused_adamw_` nor the
//! `_foreach_` ops): in notebook 2's summarizer (3.3 M weights) clipping and the update took
//! 6.8–7.5 ms a step as ten tensor ops per variable, and take about 4 ms so (BENCHMARKS.md).
//! Elsewhere (CUDA, other kinds) it is written with tch's in-place tensor ops into one scratch
//! buffer. Either way the rounding differs from libtorch's kernels in the last bits: runs through
//! this optimizer are reproducible among themselves, not bit-equal to runs through tch's.

use std::collections::HashMap;
use std::path::Path;

use tch::{nn, Kind, Tensor};

use super::OptimConfig;
use crate::error::{Error, Result};

/// AdamW over a `VarStore`'s trainable variables, named as the store names them.
#[derive(Debug)]
pub struct AdamW {
    vars: Vec<(String, Tensor)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Room for the largest variable's intermediate values (the unfused update only).
    scratch: Option<Tensor>,
    /// Updates taken so far (the bias corrections' `t`).
    pub step: i64,
    lr: f64,
    cfg: OptimConfig,
    /// Whether `f32` variables on the CPU take the fused pass (off only in tests, to compare).
    fused: bool,
}

impl AdamW {
    /// AdamW with `cfg`'s betas, epsilon and weight decay over `vs`'s trainable variables.
    pub fn new(vs: &nn::VarStore, cfg: &OptimConfig) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |v: &[(String, Tensor)]| v.iter().map(|(_, t)| t.zeros_like()).collect::<Vec<_>>();
        AdamW {
            exp_avg: zeros(&vars),
            exp_avg_sq: zeros(&vars),
            scratch: None,
            vars,
            step: 0,
            lr: cfg.lr,
            cfg: cfg.clone(),
            fused: true,
        }
    }

    /// The learning rate of the next updates.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Zeroes the gradients, back-propagates `loss` and updates, with the gradients' global norm
    /// clipped when the config says so (as tch's `clip_grad_norm`, but the stored gradients are
    /// left as back-propagation computed them: the update scales them as it reads them).
    pub fn backward_step(&mut self, loss: &Tensor) {
        for (_, v) in &self.vars {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        loss.backward();
        tch::no_grad(|| self.update());
    }

    /// Clips the gradients' global norm when the config says so, then takes one AdamW step.
    fn update(&mut self) {
        let grads: Vec<Tensor> = self.vars.iter().map(|(_, v)| v.grad()).collect();
        let fusable: Vec<bool> = self
            .vars
            .iter()
            .zip(&grads)
            .zip(self.exp_avg.iter().zip(&self.exp_avg_sq))
            .map(|(((_, p), g), (m, v))| {
                self.fused && [p, g, m, v].iter().all(|t| fusable(t) && t.numel() == p.numel())
            })
            .collect();
        // The factor every gradient is multiplied by: min(1, max_norm / (‖g‖ + 1e-6)), as tch's
        // `clip_grad_norm`.
        let mut coef = 1.0;
        if let Some(max) = self.cfg.clip_norm {
            let mut norms = Vec::new();
            let mut fused = Vec::new();
            for (g, &fast) in grads.iter().zip(&fusable) {
                if fast {
                    // SAFETY: `fusable` accepted `g`; only `sums_of_squares` reads it.
                    fused.push(unsafe { f32_slice(g) });
                } else if g.defined() {
                    norms.push(g.to_kind(Kind::Float).norm());
                }
            }
            let mut sum_sq = sums_of_squares(&fused, crate::parallel::threads()).iter().fold(0.0, |t, s| t + s);
            if !norms.is_empty() {
                // One synchronisation for all the variables the fused pass does not take (CUDA).
                sum_sq += Tensor::stack(&norms, 0).to_kind(Kind::Double).square().sum(Kind::Double).double_value(&[]);
            }
            coef = (max / (sum_sq.sqrt() + 1e-6)).min(1.0);
        }
        self.step += 1;
        let (b1, b2) = self.cfg.betas;
        let bias1 = 1.0 - b1.powi(self.step as i32);
        let bias2 = 1.0 - b2.powi(self.step as i32);
        let step_size = self.lr / bias1;
        let decay = 1.0 - self.lr * self.cfg.weight_decay;
        let hyper = Hyper {
            coef: coef as f32,
            decay: decay as f32,
            w1: (1.0 - b1) as f32,
            w2: (1.0 - b2) as f32,
            step_size: step_size as f32,
            bias2_sqrt: bias2.sqrt() as f32,
            eps: self.cfg.eps as f32,
        };
        let mut lanes = Vec::new();
        for (i, &fast) in fusable.iter().enumerate() {
            if fast {
                // SAFETY: four contiguous f32 CPU tensors with one number of values (checked by
                // `fusable`), distinct (a variable, its gradient and this optimizer's own
                // moments). The weight is written under `no_grad` as libtorch's optimizers write
                // it (its autograd version counter is not bumped: a graph still holding it would
                // not notice, as after `set_data`), and nothing else touches them meanwhile.
                lanes.push(unsafe { Lanes::of(&self.vars[i].1, &grads[i], &self.exp_avg[i], &self.exp_avg_sq[i]) });
            }
        }
        fused_steps(lanes, &hyper, crate::parallel::threads());
        let largest = self.vars.iter().map(|(_, t)| t.numel()).max().unwrap_or(0) as i64;
        let moments = self.exp_avg.iter_mut().zip(self.exp_avg_sq.iter_mut());
        for ((((_, p), g), (m, v)), fast) in self.vars.iter().zip(&grads).zip(moments).zip(fusable) {
            if fast || !g.defined() {
                continue;
            }
            let g = if coef < 1.0 { g * coef } else { g.shallow_clone() };
            let mut p = p.shallow_clone();
            if self.cfg.weight_decay != 0.0 {
                let _ = p.g_mul_scalar_(decay);
            }
            // Every operation in place, into the moments or one scratch buffer: a temporary
            // the size of a large embedding costs more (fresh pages) than the arithmetic.
            let _ = m.lerp_(&g, 1.0 - b1); // m = b1·m + (1 - b1)·g
            let scratch = self.scratch.get_or_insert_with(|| Tensor::empty([largest], (p.kind(), p.device())));
            let mut buf = scratch.narrow(0, 0, p.numel() as i64).view_as(&p);
            let _ = g.mul_out(&buf, &g); // g²
            let _ = v.lerp_(&buf, 1.0 - b2); // v = b2·v + (1 - b2)·g²
            let _ = v.sqrt_out(&buf);
            // p -= step_size · m / (sqrt(v / bias2) + eps), as p += m / (denominator / -step_size)
            let _ = buf.g_div_scalar_(bias2.sqrt()).g_add_scalar_(self.cfg.eps).g_div_scalar_(-step_size);
            let _ = p.addcdiv_(&*m, &buf);
        }
    }

    /// The moment estimates, named `exp_avg.<variable>` and `exp_avg_sq.<variable>`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let named = |prefix: &str, ts: &[Tensor]| -> Vec<(String, Tensor)> {
            self.vars.iter().zip(ts).map(|((n, _), t)| (format!("{prefix}.{n}"), t.shallow_clone())).collect()
        };
        let mut all = named("exp_avg", &self.exp_avg);
        all.extend(named("exp_avg_sq", &self.exp_avg_sq));
        all
    }

    /// Writes the moment estimates to `path` (safetensors).
    pub fn save(&self, path: &Path) -> Result<()> {
        let state = self.state();
        let named: Vec<(&str, Tensor)> = state.iter().map(|(n, t)| (n.as_str(), t.to_kind(Kind::Float))).collect();
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Loads moment estimates written by [`AdamW::save`] and the step count; every variable's
    /// two tensors must be there with its shape.
    pub fn load(&mut self, path: &Path, step: i64) -> Result<()> {
        let read = Tensor::read_safetensors(path)
            .map_err(|e| Error::corrupt("optimizer state", path.to_path_buf(), e.to_string()))?;
        let map: HashMap<String, Tensor> = read.into_iter().collect();
        let mut loaded = Vec::new();
        for (prefix, list) in [("exp_avg", &self.exp_avg), ("exp_avg_sq", &self.exp_avg_sq)] {
            for ((name, _), t) in self.vars.iter().zip(list.iter()) {
                let key = format!("{prefix}.{name}");
                let got = map.get(&key).ok_or_else(|| {
                    Error::corrupt("optimizer state", path.to_path_buf(), format!("{key} is missing"))
                })?;
                if got.size() != t.size() {
                    return Err(Error::Shape { what: key, expected: t.size(), got: got.size() });
                }
                loaded.push(got.to_kind(t.kind()).to_device(t.device()));
            }
        }
        let n = self.vars.len();
        let mut it = loaded.into_iter();
        self.exp_avg = it.by_ref().take(n).collect();
        self.exp_avg_sq = it.collect();
        self.step = step;
        Ok(())
    }
}

/// One step's constants, in `f32` as the fused pass computes.
struct Hyper {
    /// The clipping factor.
    coef: f32,
    /// `1 - lr · weight_decay`.
    decay: f32,
    /// `lerp`'s weights: `1 - beta1`, `1 - beta2`.
    w1: f32,
    w2: f32,
    /// `lr / (1 - beta1^t)`.
    step_size: f32,
    /// `sqrt(1 - beta2^t)`.
    bias2_sqrt: f32,
    eps: f32,
}

/// Whether `t` is a defined, contiguous `f32` CPU tensor the fused pass can read.
fn fusable(t: &Tensor) -> bool {
    t.defined() && t.device() == tch::Device::Cpu && t.kind() == Kind::Float && t.is_contiguous()
}

/// A contiguous `f32` CPU tensor's values (none for an empty tensor, whose data pointer may be
/// null).
///
/// # Safety
/// `t` is defined, a contiguous `f32` CPU tensor (`fusable`), and nothing writes it meanwhile.
unsafe fn f32_slice(t: &Tensor) -> &[f32] {
    if t.numel() == 0 {
        return &[];
    }
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

/// Values per block of [`sum_of_squares`]: summed in `f32` lanes within a block, in `f64` across.
const SQUARES_BLOCK: usize = 4096;

/// Σ x², accumulated in `f32` lanes over blocks of 4,096 values and in `f64` across blocks, on
/// one thread: what [`sums_of_squares`] gives for each slice.
#[cfg(test)]
fn sum_of_squares(x: &[f32]) -> f64 {
    x.chunks(SQUARES_BLOCK).map(block_sum_of_squares).fold(0.0, |t, b| t + b)
}

/// [`sum_of_squares`] of each slice, its blocks spread over up to `threads` of libtorch's threads:
/// each slice's blocks are added in order afterwards, so the sums are those of one thread, bit
/// for bit.
fn sums_of_squares(xs: &[&[f32]], threads: usize) -> Vec<f64> {
    let blocks: Vec<&[f32]> = xs.iter().flat_map(|x| x.chunks(SQUARES_BLOCK)).collect();
    let mut block_sums = vec![0f64; blocks.len()];
    let values: usize = xs.iter().map(|x| x.len()).sum();
    let threads = crate::parallel::team_for(values, threads);
    let per_part = blocks.len().div_ceil(threads).max(1);
    let parts: Vec<_> = blocks.chunks(per_part).zip(block_sums.chunks_mut(per_part)).collect();
    crate::parallel::for_each(parts, |(blocks, sums)| {
        for (b, s) in blocks.iter().zip(sums) {
            *s = block_sum_of_squares(b);
        }
    });
    let mut sums = block_sums.into_iter();
    xs.iter().map(|x| sums.by_ref().take(x.len().div_ceil(SQUARES_BLOCK)).fold(0.0, |t, b| t + b)).collect()
}

/// Σ x² of at most [`SQUARES_BLOCK`] values: 16 `f32` lanes (each lane's additions in the same
/// order at any vector width), then `f64`.
fn block_sum_of_squares(block: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, checked just above.
        return unsafe { block_sum_of_squares_avx2(block) };
    }
    block_sum_of_squares_portable(block)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_sum_of_squares_avx2(block: &[f32]) -> f64 {
    block_sum_of_squares_portable(block)
}

#[inline(always)]
fn block_sum_of_squares_portable(block: &[f32]) -> f64 {
    let mut lanes = [0f32; 16];
    let mut chunks = block.chunks_exact(16);
    for c in chunks.by_ref() {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v * v;
        }
    }
    lanes.iter().map(|&l| f64::from(l)).sum::<f64>()
        + chunks.remainder().iter().map(|&r| f64::from(r) * f64::from(r)).sum::<f64>()
}

/// One variable's weights, gradient and moments (or the same stretch of each), as slices.
struct Lanes<'a> {
    p: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
}

impl<'a> Lanes<'a> {
    /// # Safety
    /// `p`, `g`, `m` and `v` are distinct, defined, contiguous `f32` CPU tensors with the same
    /// number of values, which nothing else reads or writes while the slices live.
    unsafe fn of(p: &'a Tensor, g: &'a Tensor, m: &'a Tensor, v: &'a Tensor) -> Self {
        let n = p.numel();
        if n == 0 {
            return Lanes { p: &mut [], g: &[], m: &mut [], v: &mut [] };
        }
        let mutable = |t: &Tensor| unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n) };
        Lanes { p: mutable(p), g: unsafe { f32_slice(g) }, m: mutable(m), v: mutable(v) }
    }

    fn len(&self) -> usize {
        self.p.len()
    }

    fn split_at(self, k: usize) -> (Self, Self) {
        let (p1, p2) = self.p.split_at_mut(k);
        let (g1, g2) = self.g.split_at(k);
        let (m1, m2) = self.m.split_at_mut(k);
        let (v1, v2) = self.v.split_at_mut(k);
        (Lanes { p: p1, g: g1, m: m1, v: v1 }, Lanes { p: p2, g: g2, m: m2, v: v2 })
    }

    /// AdamW on these values: `p`, `m`, `v` written, `g` read. Eight lanes at a time with AVX2
    /// where the CPU has it (square root and division are exactly rounded at any width, and
    /// nothing is fused into an FMA: the same bits either way). Without the dispatch the
    /// kernel's build (opt-level 2, incremental) left it four lanes wide with a scalar square root.
    fn step(self, h: &Hyper) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { self.step_avx2(h) };
            return;
        }
        self.step_portable(h);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn step_avx2(self, h: &Hyper) {
        self.step_portable(h);
    }

    #[inline(always)]
    fn step_portable(self, h: &Hyper) {
        for (((p, &g), m), v) in self.p.iter_mut().zip(self.g).zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
            let g = g * h.coef;
            *m += h.w1 * (g - *m);
            *v += h.w2 * (g * g - *v);
            *p = *p * h.decay - h.step_size * *m / (v.sqrt() / h.bias2_sqrt + h.eps);
        }
    }
}

/// The fused pass over every variable, on up to `threads` threads (one per 2¹⁵ values at most;
/// libtorch's own workers, see `crate::parallel`): the values split into equal stretches, each
/// thread taking one. Each value's arithmetic is the same whatever the split, so the result does
/// not depend on the number of threads.
fn fused_steps(lanes: Vec<Lanes>, h: &Hyper, threads: usize) {
    let total: usize = lanes.iter().map(Lanes::len).sum();
    let threads = crate::parallel::team_for(total, threads);
    if threads == 1 {
        lanes.into_iter().for_each(|l| l.step(h));
        return;
    }
    let quota = total.div_ceil(threads);
    let mut parts: Vec<Vec<Lanes>> = (0..threads).map(|_| Vec::new()).collect();
    let (mut part, mut room) = (0, quota);
    for mut l in lanes {
        while part + 1 < threads && l.len() > room {
            let (a, b) = l.split_at(room);
            if a.len() > 0 {
                parts[part].push(a);
            }
            l = b;
            part += 1;
            room = quota;
        }
        room = room.saturating_sub(l.len());
        parts[part].push(l);
    }
    crate::parallel::for_each(parts, |part| part.into_iter().for_each(|l| l.step(h)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{Module, OptimizerConfig};

    fn model(vs: &nn::VarStore) -> nn::Sequential {
        nn::seq().add(nn::linear(vs.root() / "a", 4, 8, Default::default())).add_fn(|x| x.tanh()).add(nn::linear(
            vs.root() / "b",
            8,
            1,
            Default::default(),
        ))
    }

    /// Two copies of one model on random data (seeded with `seed`), whose first gradients' norm
    /// is above `clip` (so that clipping at `clip` does something).
    struct Twins {
        x: Tensor,
        y: Tensor,
        vs1: nn::VarStore,
        vs2: nn::VarStore,
        m1: nn::Sequential,
        m2: nn::Sequential,
    }

    fn twins(seed: i64, clip: f64) -> Twins {
        tch::manual_seed(seed);
        let x = Tensor::randn([16, 4], tch::kind::FLOAT_CPU);
        let y = Tensor::randn([16, 1], tch::kind::FLOAT_CPU);
        let (vs1, vs2) = (nn::VarStore::new(tch::Device::Cpu), nn::VarStore::new(tch::Device::Cpu));
        let (m1, m2) = (model(&vs1), model(&vs2));
        tch::no_grad(|| {
            for (n, t) in vs2.variables() {
                t.shallow_clone().copy_(&vs1.variables()[&n]);
            }
        });
        (m1.forward(&x) - &y).square().mean(Kind::Float).backward();
        let norm: f64 =
            vs1.trainable_variables().iter().map(|v| v.grad().square().sum(Kind::Double).double_value(&[])).sum();
        assert!(norm.sqrt() > clip, "the first gradients' norm {} would not be clipped", norm.sqrt());
        Twins { x, y, vs1, vs2, m1, m2 }
    }

    /// Every variable of `a` within `limit` of `b`'s.
    fn assert_close(a: &nn::VarStore, b: &nn::VarStore, limit: f64) {
        for (n, t) in a.variables() {
            let diff = (&t - &b.variables()[&n]).abs().max().double_value(&[]);
            assert!(diff < limit, "{n}: {diff}");
        }
    }

    /// Close to libtorch's AdamW (same algorithm, different rounding): after 30 steps with
    /// weight decay and clipping, every weight within 1e-5 of tch's.
    #[test]
    fn it_follows_libtorchs_adamw() {
        let cfg = OptimConfig::adamw(1e-2, (0.9, 0.95), 0.1).clip(0.5);
        let Twins { x, y, vs1, vs2, m1, m2 } = twins(0, 0.5);
        let mut ours = AdamW::new(&vs1, &cfg);
        let mut theirs =
            nn::AdamW { beta1: 0.9, beta2: 0.95, wd: 0.1, eps: 1e-8, amsgrad: false }.build(&vs2, 1e-2).unwrap();
        for _ in 0..30 {
            ours.backward_step(&(m1.forward(&x) - &y).square().mean(Kind::Float));
            theirs.backward_step_clip_norm(&(m2.forward(&x) - &y).square().mean(Kind::Float), 0.5);
        }
        assert_close(&vs1, &vs2, 1e-5);
    }

    /// The fused pass and the tensor ops compute the same update: after 30 steps with weight
    /// decay and clipping, within 1e-6.
    #[test]
    fn the_fused_pass_matches_the_tensor_ops() {
        let cfg = OptimConfig::adamw(1e-2, (0.9, 0.95), 0.1).clip(0.05);
        let Twins { x, y, vs1, vs2, m1, m2 } = twins(2, 0.05);
        let mut fused = AdamW::new(&vs1, &cfg);
        let mut ops = AdamW { fused: false, ..AdamW::new(&vs2, &cfg) };
        for _ in 0..30 {
            fused.backward_step(&(m1.forward(&x) - &y).square().mean(Kind::Float));
            ops.backward_step(&(m2.forward(&x) - &y).square().mean(Kind::Float));
        }
        assert!(ops.scratch.is_some() && fused.scratch.is_none(), "each took its own path");
        assert_close(&vs1, &vs2, 1e-6);
        for (a, b) in fused.state().iter().zip(ops.state().iter()) {
            let diff = (&a.1 - &b.1).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{}: {diff}", a.0);
        }
    }

    /// A variable with no values (its data pointer may be null) is stepped over, the others move.
    #[test]
    fn an_empty_variable_is_stepped_over() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let a = vs.root().ones("a", &[3]);
        let empty = vs.root().zeros("empty", &[0, 4]);
        let mut opt = AdamW::new(&vs, &OptimConfig::adamw(1e-2, (0.9, 0.999), 0.01).clip(1.0));
        opt.backward_step(&((&a * 2.0).sum(Kind::Float) + empty.sum(Kind::Float)));
        assert_eq!(empty.size(), [0, 4]);
        assert!(a.double_value(&[0]) < 1.0);
    }

    /// Split over threads, every value gets the same arithmetic: bit for bit the one-thread result,
    /// with stretches cut inside variables and variables of every size.
    #[test]
    fn the_fused_pass_is_the_same_on_any_number_of_threads() {
        let h = Hyper { coef: 0.7, decay: 0.999, w1: 0.1, w2: 0.001, step_size: 1e-3, bias2_sqrt: 0.03, eps: 1e-8 };
        let sizes = [300_000usize, 7, 0, 150_001, 1 << 18, 3, 600_000];
        let fill = |seed: usize, n: usize| -> Vec<f32> {
            (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) / 997.0).collect()
        };
        let run = |threads: usize| -> Vec<Vec<f32>> {
            let mut state: Vec<[Vec<f32>; 4]> = sizes
                .iter()
                .enumerate()
                .map(|(k, &n)| {
                    [fill(k, n), fill(k + 10, n), fill(k + 20, n), fill(k + 30, n).iter().map(|x| x.abs()).collect()]
                })
                .collect();
            let lanes = state
                .iter_mut()
                .map(|[p, g, m, v]| Lanes {
                    p: p.as_mut_slice(),
                    g: g.as_slice(),
                    m: m.as_mut_slice(),
                    v: v.as_mut_slice(),
                })
                .collect();
            fused_steps(lanes, &h, threads);
            state.into_iter().flat_map(|[p, _, m, v]| [p, m, v]).collect()
        };
        let one = run(1);
        assert!(one.iter().flatten().all(|x| x.is_finite()));
        for threads in [2, 3, 4] {
            assert!(run(threads) == one, "{threads} threads differ from one");
        }
        // The vectorised pass (where the CPU has one) gives the portable pass's bits.
        let (mut p1, g, mut m1, mut v1) = (fill(1, 1003), fill(2, 1003), fill(3, 1003), fill(4, 1003));
        v1.iter_mut().for_each(|x| *x = x.abs());
        let (mut p2, mut m2, mut v2) = (p1.clone(), m1.clone(), v1.clone());
        Lanes { p: &mut p1, g: &g, m: &mut m1, v: &mut v1 }.step(&h);
        Lanes { p: &mut p2, g: &g, m: &mut m2, v: &mut v2 }.step_portable(&h);
        assert!(p1 == p2 && m1 == m2 && v1 == v2, "the dispatched pass differs from the portable one");
        // And the arithmetic itself, for one value.
        let (p, g, m, v) = (0.5f32, 0.2f32, 0.1f32, 0.04f32);
        let mut lane = ([p], [g], [m], [v]);
        Lanes { p: &mut lane.0, g: &lane.1, m: &mut lane.2, v: &mut lane.3 }.step(&h);
        let g = g * h.coef;
        let m2 = m + h.w1 * (g - m);
        let v2 = v + h.w2 * (g * g - v);
        assert_eq!(lane.2[0], m2);
        assert_eq!(lane.3[0], v2);
        assert_eq!(lane.0[0], p * h.decay - h.step_size * m2 / (v2.sqrt() / h.bias2_sqrt + h.eps));
    }

    #[test]
    fn the_sum_of_squares_matches_f64() {
        let x: Vec<f32> = (0..10_007).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let exact: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        assert!((sum_of_squares(&x) - exact).abs() < 1e-6 * exact);
        assert_eq!(sum_of_squares(&[]), 0.0);
        // Blocks spread over threads: each slice's sum is the one-thread sum, bit for bit; and
        // the vectorised block sum is the portable one.
        let sizes = [10_007usize, 0, 4096, 1, 300_001, 8191];
        let xs: Vec<Vec<f32>> = sizes.iter().map(|&n| x.iter().copied().cycle().take(n).collect()).collect();
        let slices: Vec<&[f32]> = xs.iter().map(Vec::as_slice).collect();
        let one: Vec<f64> = slices.iter().map(|x| sum_of_squares(x)).collect();
        for threads in [1, 2, 3] {
            assert_eq!(sums_of_squares(&slices, threads), one, "{threads} threads");
        }
        assert_eq!(block_sum_of_squares(&x[..4096]), block_sum_of_squares_portable(&x[..4096]));
    }

    #[test]
    fn saved_state_resumes_to_identical_weights() {
        tch::manual_seed(1);
        let x = Tensor::randn([16, 4], tch::kind::FLOAT_CPU);
        let y = Tensor::randn([16, 1], tch::kind::FLOAT_CPU);
        let cfg = OptimConfig::adamw(1e-2, (0.9, 0.999), 0.01);
        let dir = tempfile::tempdir().unwrap();
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let m = model(&vs);
        let mut opt = AdamW::new(&vs, &cfg);
        for _ in 0..5 {
            opt.backward_step(&(m.forward(&x) - &y).square().mean(Kind::Float));
        }
        vs.save(dir.path().join("w.safetensors")).unwrap();
        opt.save(&dir.path().join("o.safetensors")).unwrap();
        for _ in 0..5 {
            opt.backward_step(&(m.forward(&x) - &y).square().mean(Kind::Float));
        }
        let vs2 = nn::VarStore::new(tch::Device::Cpu);
        let mut vs2m = vs2;
        let m2 = model(&vs2m);
        vs2m.load(dir.path().join("w.safetensors")).unwrap();
        let mut opt2 = AdamW::new(&vs2m, &cfg);
        opt2.load(&dir.path().join("o.safetensors"), 5).unwrap();
        for _ in 0..5 {
            opt2.backward_step(&(m2.forward(&x) - &y).square().mean(Kind::Float));
        }
        for (n, t) in vs.variables() {
            assert!(t.equal(&vs2m.variables()[&n]), "{n} differs after resuming");
        }
    }
}

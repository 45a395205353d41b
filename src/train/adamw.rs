//! AdamW written in the crate, with its state in the open: the moment estimates and the step
//! count are saved in a checkpoint and loaded back, so that a run resumed mid-epoch continues
//! exactly where it stopped ([`super::Fit::resumable`]). tch's optimizer wraps libtorch's, whose
//! state cannot be read out.
//!
//! The update is libtorch's `torch::optim::AdamW` step (decoupled weight decay first, bias-
//! corrected moments, `eps` added to `sqrt(v̂)`), written with tch's in-place tensor ops (the
//! moments move by `lerp_`, as PyTorch's own Adam does; intermediate values go to one scratch
//! buffer, never to fresh tensors): tch has no `add_(other, alpha)` or `addcmul_(t1, t2, value)`,
//! so the rounding differs from libtorch's kernels in the last bits — runs through this optimizer
//! are reproducible among themselves, not bit-equal to runs through tch's.

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
    /// Room for the largest variable's intermediate values.
    scratch: Tensor,
    /// Updates taken so far (the bias corrections' `t`).
    pub step: i64,
    lr: f64,
    cfg: OptimConfig,
}

impl AdamW {
    /// AdamW with `cfg`'s betas, epsilon and weight decay over `vs`'s trainable variables.
    pub fn new(vs: &nn::VarStore, cfg: &OptimConfig) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |v: &[(String, Tensor)]| v.iter().map(|(_, t)| t.zeros_like()).collect::<Vec<_>>();
        let largest = vars.iter().map(|(_, t)| t.numel()).max().unwrap_or(0) as i64;
        let options = vars.first().map_or((Kind::Float, tch::Device::Cpu), |(_, t)| (t.kind(), t.device()));
        AdamW {
            exp_avg: zeros(&vars),
            exp_avg_sq: zeros(&vars),
            scratch: Tensor::empty([largest], options),
            vars,
            step: 0,
            lr: cfg.lr,
            cfg: cfg.clone(),
        }
    }

    /// The learning rate of the next updates.
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Zeroes the gradients, back-propagates `loss`, clips the gradients' global norm when the
    /// config says so (as tch's `clip_grad_norm`), and updates.
    pub fn backward_step(&mut self, loss: &Tensor) {
        for (_, v) in &self.vars {
            let mut g = v.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        loss.backward();
        tch::no_grad(|| {
            if let Some(max) = self.cfg.clip_norm {
                let norms: Vec<Tensor> =
                    self.vars.iter().map(|(_, v)| v.grad()).filter(|g| g.defined()).map(|g| g.norm()).collect();
                if !norms.is_empty() {
                    let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
                    let coef = max / (total + 1e-6);
                    if coef < 1.0 {
                        for (_, v) in &self.vars {
                            let mut g = v.grad();
                            if g.defined() {
                                let _ = g.g_mul_scalar_(coef);
                            }
                        }
                    }
                }
            }
            self.step += 1;
            let (b1, b2) = self.cfg.betas;
            let bias1 = 1.0 - b1.powi(self.step as i32);
            let bias2 = 1.0 - b2.powi(self.step as i32);
            let step_size = self.lr / bias1;
            for ((_, p), (m, v)) in self.vars.iter().zip(self.exp_avg.iter_mut().zip(self.exp_avg_sq.iter_mut())) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut p = p.shallow_clone();
                if self.cfg.weight_decay != 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - self.lr * self.cfg.weight_decay);
                }
                // Every operation in place, into the moments or one scratch buffer: a temporary
                // the size of a large embedding costs more (fresh pages) than the arithmetic.
                let _ = m.lerp_(&g, 1.0 - b1); // m = b1·m + (1 - b1)·g
                let mut buf = self.scratch.narrow(0, 0, p.numel() as i64).view_as(&p);
                let _ = g.mul_out(&buf, &g); // g²
                let _ = v.lerp_(&buf, 1.0 - b2); // v = b2·v + (1 - b2)·g²
                let _ = v.sqrt_out(&buf);
                // p -= step_size · m / (sqrt(v / bias2) + eps), as p += m / (denominator / -step_size)
                let _ = buf.g_div_scalar_(bias2.sqrt()).g_add_scalar_(self.cfg.eps).g_div_scalar_(-step_size);
                let _ = p.addcdiv_(&*m, &buf);
            }
        });
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

    /// Close to libtorch's AdamW (same algorithm, different rounding): after 30 steps with
    /// weight decay and clipping, every weight within 1e-5 of tch's.
    #[test]
    fn it_follows_libtorchs_adamw() {
        tch::manual_seed(0);
        let x = Tensor::randn([16, 4], tch::kind::FLOAT_CPU);
        let y = Tensor::randn([16, 1], tch::kind::FLOAT_CPU);
        let cfg = OptimConfig::adamw(1e-2, (0.9, 0.95), 0.1).clip(0.5);
        let (vs1, vs2) = (nn::VarStore::new(tch::Device::Cpu), nn::VarStore::new(tch::Device::Cpu));
        let (m1, m2) = (model(&vs1), model(&vs2));
        tch::no_grad(|| {
            for (n, t) in vs2.variables() {
                t.shallow_clone().copy_(&vs1.variables()[&n]);
            }
        });
        let mut ours = AdamW::new(&vs1, &cfg);
        let mut theirs =
            nn::AdamW { beta1: 0.9, beta2: 0.95, wd: 0.1, eps: 1e-8, amsgrad: false }.build(&vs2, 1e-2).unwrap();
        for _ in 0..30 {
            ours.backward_step(&(m1.forward(&x) - &y).square().mean(Kind::Float));
            theirs.backward_step_clip_norm(&(m2.forward(&x) - &y).square().mean(Kind::Float), 0.5);
        }
        for (n, t) in vs1.variables() {
            let diff = (&t - &vs2.variables()[&n]).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{n}: {diff}");
        }
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

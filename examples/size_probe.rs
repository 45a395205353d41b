//! Times training steps of candidate ViT/MAE sizes (used to size the cpu profile).
use hw9::mae::{Mae, MaeConfig, MaskedAutoencoder, forward_loss};
use hw9::prelude::*;
use hw9::vit::{EncoderConfig, Vit, VitConfig};
use std::time::Instant;

fn main() -> hw9::Result<()> {
    tch::set_num_threads(2);
    let dev = Device::Cpu;
    let x = Tensor::randn([128, 1, 28, 28], (Kind::Float, dev));
    let y = Tensor::randint(10, [128], (Kind::Int64, dev));
    for (d, l, f) in [(64, 4, 128), (128, 4, 256), (128, 4, 512), (256, 4, 1024)] {
        let vs = nn::VarStore::new(dev);
        let cfg = VitConfig { image_size: 28, channels: 1, patch_size: 4, encoder: EncoderConfig { d_model: d, n_heads: 4, n_layers: l, d_ffn: f }, n_classes: 10 };
        let m = Vit::new(&vs.root(), &cfg)?;
        let mut opt = nn::AdamW::default().build(&vs, 1e-3)?;
        let mut t = vec![];
        for _ in 0..6 { let s = Instant::now(); let loss = m.forward_t(&x, true).cross_entropy_for_logits(&y); opt.backward_step(&loss); t.push(s.elapsed().as_secs_f64()); }
        println!("vit d{d} l{l} f{f}: {:.3} s/step", t[2..].iter().sum::<f64>() / 4.0);
        let vs = nn::VarStore::new(dev);
        let mut mc = MaeConfig::fashion_mnist_full();
        mc.encoder = cfg.encoder.clone();
        mc.decoder = EncoderConfig { d_model: d / 2, n_heads: 4, n_layers: 2, d_ffn: f / 2 };
        let m = Mae::new(&vs.root(), &mc)?;
        let mut opt = nn::AdamW::default().build(&vs, 1e-3)?;
        let mut t = vec![];
        for _ in 0..6 { let s = Instant::now(); let (p, mk) = m.reconstruct(&x)?; let loss = forward_loss(&x, &p, &mk, 4)?; opt.backward_step(&loss); t.push(s.elapsed().as_secs_f64()); }
        println!("mae d{d} l{l} f{f}: {:.3} s/step", t[2..].iter().sum::<f64>() / 4.0);
    }
    Ok(())
}

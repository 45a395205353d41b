//! Notebook 1's four stages (ViT, MAE pretraining, linear probe, finetune) with other sizes than
//! the `cpu` profile's: how the profile's sizes were chosen (BENCHMARKS.md, issue 16).
//!
//!     cargo run --release --features reference --example vit_mae_sizes -- patch=7 epochs=5,5,3,3
//!
//! Keys (each optional, the `cpu` profile's value otherwise): `patch` (ViT and MAE), `d` (model
//! width, the ffn twice it), `layers`, `epochs` (four stages, comma-separated), `lr` (four
//! stages), `vit_only=1`.

use hw9::plan::VitMaePlan;
use hw9::Profile;

fn main() -> hw9::Result<()> {
    let mut plan = VitMaePlan::for_profile(Profile::Cpu);
    let mut vit_only = false;
    for arg in std::env::args().skip(1) {
        let (key, value) = arg.split_once('=').ok_or_else(|| bad(&arg))?;
        let list = |n: usize| -> hw9::Result<Vec<f64>> {
            let v: Vec<f64> = value.split(',').map(str::parse).collect::<Result<_, _>>().map_err(|_| bad(&arg))?;
            if v.len() == n {
                Ok(v)
            } else {
                Err(bad(&arg))
            }
        };
        match key {
            "patch" => {
                let p = list(1)?[0] as i64;
                plan.vit.patch_size = p;
                plan.mae.patch_size = p;
            }
            "d" => {
                let d = list(1)?[0] as i64;
                for e in [&mut plan.vit.encoder, &mut plan.mae.encoder] {
                    e.d_model = d;
                    e.d_ffn = 2 * d;
                }
            }
            "layers" => {
                let l = list(1)?[0] as i64;
                plan.vit.encoder.n_layers = l;
                plan.mae.encoder.n_layers = l;
            }
            "epochs" => {
                let e = list(4)?;
                for (t, e) in stages(&mut plan).into_iter().zip(e) {
                    t.epochs = e as i64;
                }
            }
            "lr" => {
                let lr = list(4)?;
                for (t, lr) in stages(&mut plan).into_iter().zip(lr) {
                    t.optim.lr = lr;
                }
            }
            "vit_only" => vit_only = true,
            _ => return Err(bad(&arg)),
        }
    }
    println!("{plan:?}");
    let device = hw9::device();
    if vit_only {
        let data = plan.data()?;
        let t = std::time::Instant::now();
        let vs = tch::nn::VarStore::new(device);
        let vit = hw9::models::vit::Vit::new(&vs.root(), &plan.vit)?;
        let h = hw9::tasks::images::train_classifier(&vit, &vs, &data, &plan.vit_train, "ViT")?;
        println!("ViT {:.4} in {:.0} s", h.final_val_acc().unwrap_or(0.0), t.elapsed().as_secs_f64());
        return Ok(());
    }
    let r = hw9::tasks::vit_mae::run_vit_mae_plan(
        Profile::Cpu,
        &plan,
        device,
        std::path::Path::new("build/vit-mae-sizes"),
    )?;
    println!(
        "ViT {:.4} ({:.0} s), MAE loss {:.4} ({:.0} s), probe {:.4} ({:.0} s), finetune {:.4} ({:.0} s); {:.0} s in all",
        r.vit_acc,
        r.seconds[0],
        r.histories[1].epochs.last().map_or(f64::NAN, |e| e.train_loss),
        r.seconds[1],
        r.probe_acc,
        r.seconds[2],
        r.finetune_acc,
        r.seconds[3],
        r.seconds.iter().sum::<f64>()
    );
    Ok(())
}

fn stages(plan: &mut VitMaePlan) -> [&mut hw9::train::TrainConfig; 4] {
    [&mut plan.vit_train, &mut plan.mae_train, &mut plan.probe_train, &mut plan.finetune_train]
}

fn bad(arg: &str) -> hw9::Error {
    hw9::Error::Config(format!(
        "expected key=value with key patch, d, layers, epochs (4 numbers), lr (4 numbers) or vit_only, got {arg:?}"
    ))
}

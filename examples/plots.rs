//! Draws the plot module's figures into build/plots/ to look at: `cargo run --example plots`.
use hw9::prelude::*;

fn main() -> hw9::Result<()> {
    let out = std::path::Path::new("build/plots");
    let losses: Vec<f64> = (0..300).map(|i| 2.3 * (-(i as f64) / 60.0).exp() + 0.1).collect();
    LineChart::new("Training loss")
        .x_label("step")
        .y_label("cross-entropy")
        .series("train", &losses)
        .series_xy("validation", &[99.0, 199.0, 299.0], &[0.9, 0.45, 0.3])
        .draw()?
        .save(out.join("line.png"))?;
    let tokens = ["[CLS]", "i", "wanted", "to", "have", "a", "party", "[SEP]"];
    hw9::seed(0);
    let att = Tensor::randn([8, 8], (Kind::Float, Device::Cpu)).softmax(-1, Kind::Float);
    Heatmap::from_tensor("layer 0, head 3", &att)?
        .row_labels(tokens)
        .col_labels(tokens)
        .draw()?
        .save(out.join("heatmap.png"))?;
    let q = Tensor::randn([1, 12], (Kind::Float, Device::Cpu));
    Heatmap::from_tensor("query of \"party\"", &q)?.row_labels(["q"]).draw()?.save(out.join("row.png"))?;
    println!("wrote {}", out.display());
    Ok(())
}

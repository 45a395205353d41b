//! Attention views on the real MiniLM: each draws, with the right layout, and bad requests are
//! errors that say what exists. The figures are kept in build/views/ to look at.

use hw9::attention::{default_bert_dir, Bert, EncoderOutput, Tokenizer};
use hw9::plot::PALETTE;
use hw9::views::{attention_heatmap, head_view, model_view, neuron_view};
use tch::Device;

fn minilm() -> (Vec<String>, EncoderOutput) {
    let (_vs, bert) = Bert::load(&default_bert_dir(), Device::Cpu).unwrap_or_else(|e| panic!("{e} (run `make setup`)"));
    let tok = Tokenizer::load(&default_bert_dir().join("tokenizer.json")).unwrap();
    let enc = tok.encode("I wanted to have a party", Some("I bought a cake for it.")).unwrap();
    let (ids, types) = enc.tensors(Device::Cpu);
    (enc.tokens.clone(), bert.forward(&ids, &types, None).unwrap())
}

fn decode(fig: &hw9::plot::Figure) -> image::RgbImage {
    image::load_from_memory(fig.png()).unwrap().to_rgb8()
}

#[test]
fn every_view_draws_the_real_models_attention() {
    let (tokens, out) = minilm();
    let dir = hw9::paths::root().join("build/views");
    let fig = head_view(&out.layers, 2, &[0, 3], &tokens).unwrap();
    let img = decode(&fig);
    // Lines of head 0 and head 3 in their colours (blended with white where faint).
    for h in [0usize, 3] {
        let c = PALETTE[h];
        let near = img.pixels().filter(|p| (0..3).all(|i| (p.0[i] as i32 - [c.0, c.1, c.2][i] as i32).abs() < 40)).count();
        assert!(near > 100, "head {h}: {near} pixels in its colour");
    }
    fig.save(dir.join("head_view.png")).unwrap();

    let fig = model_view(&out.layers).unwrap();
    let (w, h) = fig.size();
    assert!(w > 12 * 60 && h > 6 * 60, "a 6 x 12 grid: {w}x{h}");
    fig.save(dir.join("model_view.png")).unwrap();

    let fig = neuron_view(&out.layers, 1, 4, 6, &tokens).unwrap();
    assert!(fig.size().1 > 4 * 200, "four stacked panels");
    fig.save(dir.join("neuron_view.png")).unwrap();

    attention_heatmap(&out.layers, 0, 0, &tokens).unwrap().draw().unwrap().save(dir.join("heatmap.png")).unwrap();
}

#[test]
fn bad_requests_say_what_exists() {
    let (tokens, out) = minilm();
    let err = head_view(&out.layers, 9, &[], &tokens).unwrap_err().to_string();
    assert!(err.contains("layer 9 does not exist: the model has 6"), "{err}");
    let err = attention_heatmap(&out.layers, 0, 0, &tokens[1..]).unwrap_err().to_string();
    assert!(err.contains(&format!("expected {} tokens", tokens.len())), "{err}");
    let err = neuron_view(&out.layers, 0, 0, 99, &tokens).unwrap_err().to_string();
    assert!(err.contains("query token 99 does not exist"), "{err}");
    let err = head_view(&out.layers, 0, &[12], &tokens).unwrap_err().to_string();
    assert!(err.contains("no sequence 0, head 12"), "{err}");
}

//! Attention views on the real MiniLM: each draws, with the right layout, and bad requests are
//! errors that say what exists. The figures are kept in build/views/ to look at.

use hw9::data::tokenize::Tokenizer;
use hw9::models::attention::ModelOutput;
use hw9::models::bert::{default_bert_dir, Bert};
use hw9::visuals::attention_views::{attention_heatmap, head_view, model_view, neuron_view, qkv_view};
use hw9::visuals::PALETTE;
use tch::Device;

fn minilm() -> (Vec<String>, ModelOutput) {
    let (_vs, bert) = Bert::load(&default_bert_dir(), Device::Cpu).unwrap_or_else(|e| panic!("{e} (run `make setup`)"));
    let tok = Tokenizer::load(&default_bert_dir().join("tokenizer.json")).unwrap();
    let enc = tok.encode("I wanted to have a party", Some("I bought a cake for it.")).unwrap();
    let (ids, types) = enc.tensors(Device::Cpu);
    (enc.tokens.clone(), bert.forward(&ids, &types, None).unwrap())
}

fn decode(fig: &hw9::visuals::Figure) -> image::RgbImage {
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
        let near =
            img.pixels().filter(|p| (0..3).all(|i| (p.0[i] as i32 - [c.0, c.1, c.2][i] as i32).abs() < 40)).count();
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

    // Queries, keys and values of "party" in layer 3, head 5: the output row is the attention-
    // weighted mean of the values.
    let party = tokens.iter().position(|t| t == "party").unwrap();
    let fig = qkv_view(&out.layers, 3, 5, party, &tokens).unwrap();
    let (w, h) = fig.size();
    assert!(w > 3 * 200 && h > 3 * 150, "keys, values and attention side by side, query above, output below: {w}x{h}");
    fig.save(dir.join("qkv_view.png")).unwrap();
    let l = &out.layers[3];
    let p = l.probs.get(0).get(5).get(party as i64); // (T,)
    let manual = p.unsqueeze(0).matmul(&l.values.get(0).get(5)); // the output row the view draws
    assert_eq!(manual.size(), vec![1, l.values.size()[3]]);
    assert!((p.sum(tch::Kind::Float).double_value(&[]) - 1.0).abs() < 1e-5);
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
    let err = qkv_view(&out.layers, 0, 12, 1, &tokens).unwrap_err().to_string();
    assert!(err.contains("head 12 does not exist: the layer has 12"), "{err}");
    let err = qkv_view(&out.layers, 6, 0, 1, &tokens).unwrap_err().to_string();
    assert!(err.contains("layer 6 does not exist: the model has 6"), "{err}");
    let err = head_view(&out.layers, 0, &[12], &tokens).unwrap_err().to_string();
    assert!(err.contains("no sequence 0, head 12"), "{err}");
}

/// A single layer with one head whose attention is `p (T, T)`.
fn one_layer(p: tch::Tensor) -> Vec<hw9::models::attention::LayerAttention> {
    let t = p.size()[0];
    let z = tch::Tensor::zeros([1, 1, t, 4], (tch::Kind::Float, Device::Cpu));
    vec![hw9::models::attention::LayerAttention {
        probs: p.reshape([1, 1, t, t]),
        queries: z.shallow_clone(),
        keys: z.shallow_clone(),
        values: z,
        kv_heads: 1,
    }]
}

#[test]
fn head_statistics_describe_known_patterns() {
    let t = 5;
    let tokens: Vec<String> = ["[CLS]", "a", "b", "c", "[SEP]"].map(String::from).to_vec();
    // Every token looks at the previous one (the first at itself).
    let prev = tch::Tensor::eye(t, (tch::Kind::Float, Device::Cpu)).roll([-1], [1]).triu(-1).tril(-1);
    let _ = prev.get(0).get(0).fill_(1.0);
    let s = &hw9::visuals::attention_views::head_stats(&one_layer(prev), &tokens).unwrap()[0];
    assert!((s.prev_share - 1.0).abs() < 1e-9 && s.entropy.abs() < 1e-6, "{s:?}");
    assert!((s.mean_distance - 4.0 / 5.0).abs() < 1e-9, "{s:?}");
    // Uniform attention: entropy ln T, a fifth on [CLS] and on [SEP].
    let uniform = tch::Tensor::full([t, t], 1.0 / t as f64, (tch::Kind::Float, Device::Cpu));
    let s = &hw9::visuals::attention_views::head_stats(&one_layer(uniform), &tokens).unwrap()[0];
    assert!(
        (s.entropy - (t as f64).ln()).abs() < 1e-6
            && (s.cls_share - 0.2).abs() < 1e-6
            && (s.sep_share - 0.2).abs() < 1e-6,
        "{s:?}"
    );
}

#[test]
fn rollout_rows_sum_to_one_and_identity_attention_rolls_out_to_identity() {
    let eye = tch::Tensor::eye(4, (tch::Kind::Float, Device::Cpu));
    let r = hw9::visuals::attention_views::rollout(&one_layer(eye.shallow_clone())).unwrap();
    assert!(r.allclose(&eye, 1e-6, 1e-6, false));
    let (tokens, out) = minilm();
    let r = hw9::visuals::attention_views::rollout(&out.layers).unwrap();
    assert_eq!(r.size(), [tokens.len() as i64, tokens.len() as i64]);
    let sums = r.sum_dim_intlist(-1, false, tch::Kind::Float);
    assert!(sums.allclose(&tch::Tensor::ones_like(&sums), 1e-5, 1e-5, false));
}

#[test]
fn attention_differences_of_a_sentence_with_itself_vanish_and_lengths_must_match() {
    let (tokens, out) = minilm();
    let h = hw9::visuals::attention_views::attention_difference(&out.layers, &out.layers, 3, 2, &tokens).unwrap();
    let img = decode(&h.annotate(false).draw().unwrap());
    // All cells are the colour of 0 on a [-1, 1] scale.
    let zero = plotters::style::colors::colormaps::ViridisRGB::get_color_normalized(0.0, -1.0, 1.0);
    let mid = img.pixels().filter(|p| p.0 == [zero.0, zero.1, zero.2]).count();
    assert!(mid > 16 * 16 * 100, "{mid}");
    let shorter = one_layer(tch::Tensor::eye(3, (tch::Kind::Float, Device::Cpu)));
    let err = hw9::visuals::attention_views::attention_difference(&out.layers, &shorter, 0, 0, &tokens)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the sentences need as many tokens"), "{err}");
}

/// Pixels of `img` in viridis' two ends: yellow (attention 1) and dark purple (attention 0).
fn viridis_ends(img: &image::RgbImage) -> (usize, usize) {
    let yellow = img.pixels().filter(|p| p.0[0] > 200 && p.0[1] > 200 && p.0[2] < 90).count();
    let purple = img.pixels().filter(|p| p.0[0] < 90 && p.0[1] < 30 && (60..110).contains(&p.0[2])).count();
    (yellow, purple)
}

#[test]
fn the_model_view_draws_each_heads_weights_cell_by_cell() {
    // Two layers of one head over 8 tokens: layer 0 looks at the first token, layer 1 at itself.
    let t = 8i64;
    let first = tch::Tensor::zeros([t, t], (tch::Kind::Float, Device::Cpu));
    let _ = first.narrow(1, 0, 1).fill_(1.0);
    let own = tch::Tensor::eye(t, (tch::Kind::Float, Device::Cpu));
    let layers: Vec<_> = one_layer(first).into_iter().chain(one_layer(own)).collect();
    let img = decode(&model_view(&layers).unwrap());
    // A cell is max(90 / T, 2) pixels square: each layer has T cells at 1 and T·(T−1) at 0.
    let cell = (90 / t).max(2) as usize;
    let (yellow, purple) = viridis_ends(&img);
    assert_eq!((yellow, purple), (2 * 8 * cell * cell, 2 * 8 * 7 * cell * cell), "cells of weight 1 and 0");
    // Where the ones are: layer 0's in its map's first column, layer 1's on its diagonal.
    let (left, top, gap) = (40u32, 50u32, 8u32);
    let map = cell as u32 * t as u32;
    let at = |layer: u32, row: u32, col: u32| {
        let (x, y) = (
            left + col * cell as u32 + cell as u32 / 2,
            top + layer * (map + gap) + row * cell as u32 + cell as u32 / 2,
        );
        let p = img.get_pixel(x, y).0;
        p[0] > 200 && p[1] > 200
    };
    for r in 0..t as u32 {
        assert!(at(0, r, 0) && (r == 0 || !at(0, r, r)), "layer 0, row {r}");
        assert!(at(1, r, r) && (r == 0 || !at(1, r, 0)), "layer 1, row {r}");
    }
}

#[test]
fn the_neuron_and_qkv_views_change_with_the_query_they_show() {
    let (tokens, out) = minilm();
    let differ = |a: &hw9::visuals::Figure, b: &hw9::visuals::Figure| {
        let (a, b) = (decode(a), decode(b));
        assert_eq!(a.dimensions(), b.dimensions());
        a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count() as f64 / (a.width() * a.height()) as f64
    };
    let n = |q| neuron_view(&out.layers, 1, 4, q, &tokens).unwrap();
    assert_eq!(differ(&n(6), &n(6)), 0.0, "the same query draws the same figure");
    assert!(differ(&n(6), &n(2)) > 0.01, "another query token, another query and products");
    let v = |q| qkv_view(&out.layers, 3, 5, q, &tokens).unwrap();
    assert_eq!(differ(&v(4), &v(4)), 0.0);
    assert!(differ(&v(4), &v(1)) > 0.01, "another query token, another attention and output");
}

/// Layers of random attention (rows sum to 1) for `b` sequences of `t` tokens.
fn random_layers(n: usize, b: i64, h: i64, t: i64) -> Vec<hw9::models::attention::LayerAttention> {
    let z = tch::Tensor::zeros([b, h, t, 4], (tch::Kind::Float, Device::Cpu));
    (0..n)
        .map(|_| hw9::models::attention::LayerAttention {
            probs: (tch::Tensor::randn([b, h, t, t], (tch::Kind::Float, Device::Cpu)) * 2.0)
                .softmax(-1, tch::Kind::Float),
            queries: z.shallow_clone(),
            keys: z.shallow_clone(),
            values: z.shallow_clone(),
            kv_heads: h,
        })
        .collect()
}

#[test]
fn batched_rollout_equals_the_rollout_of_each_sequence_and_a_plain_loop() {
    use hw9::visuals::attention_views::{rollout, rollout_batch};
    tch::manual_seed(3);
    let (b, h, t) = (3, 2, 5);
    let layers = random_layers(4, b, h, t);
    let all = rollout_batch(&layers).unwrap();
    assert_eq!(all.size(), [b, t, t]);
    for i in 0..b {
        let one: Vec<_> = layers
            .iter()
            .map(|l| hw9::models::attention::LayerAttention {
                probs: l.probs.narrow(0, i, 1),
                queries: l.queries.narrow(0, i, 1),
                keys: l.keys.narrow(0, i, 1),
                values: l.values.narrow(0, i, 1),
                kv_heads: h,
            })
            .collect();
        assert!(rollout(&one).unwrap().allclose(&all.get(i), 1e-6, 1e-6, false));
    }
    // Sequence 1 by hand in f64: flow = Â_L ⋯ Â_1, Â = rows-normalised (mean over heads + I) / 2.
    let t_us = t as usize;
    let mut flow: Vec<Vec<f64>> = (0..t_us).map(|r| (0..t_us).map(|c| f64::from(u8::from(r == c))).collect()).collect();
    for l in &layers {
        let p = Vec::<f32>::try_from(l.probs.get(1).reshape([-1])).unwrap();
        let mut a = vec![vec![0.0f64; t_us]; t_us];
        for (r, row) in a.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                let mean = (0..h as usize).map(|k| f64::from(p[(k * t_us + r) * t_us + c])).sum::<f64>() / h as f64;
                *v = 0.5 * mean + if r == c { 0.5 } else { 0.0 };
            }
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|v| *v /= s);
        }
        flow = (0..t_us).map(|r| (0..t_us).map(|c| (0..t_us).map(|k| a[r][k] * flow[k][c]).sum()).collect()).collect();
    }
    let got = Vec::<f32>::try_from(all.get(1).reshape([-1])).unwrap();
    for r in 0..t_us {
        for c in 0..t_us {
            assert!((f64::from(got[r * t_us + c]) - flow[r][c]).abs() < 1e-6, "({r}, {c})");
        }
    }
    let mut wrong = random_layers(2, b, h, t);
    wrong[1].probs = wrong[1].probs.narrow(2, 0, 4);
    let err = rollout_batch(&wrong).unwrap_err().to_string();
    assert!(err.contains("layer 1's attention is (3, 2, 4, 5), expected (3, H, 5, 5)"), "{err}");
    assert!(rollout_batch(&[]).is_err());
}

#[test]
fn the_attention_overlay_reddens_the_weighted_patch_and_leaves_the_others_grey() {
    use hw9::visuals::images::attention_overlay;
    let images = tch::Tensor::full([2, 1, 28, 28], 200, (tch::Kind::Uint8, Device::Cpu));
    let mut w = vec![0.0f32; 32];
    w[5] = 0.3; // image 0: patch 5 (row 1, column 1 of the 4×4 grid) only; stretched to 1
    w[16..].iter_mut().for_each(|v| *v = 1.0); // image 1: every patch alike: no red
    w[31] = 1.5; // but the last patch (row 3, column 3)
    let weights = tch::Tensor::from_slice(&w).reshape([2, 16]);
    let out = attention_overlay(&images, &weights).unwrap();
    assert_eq!(out.size(), [2, 3, 28, 28]);
    let px = |i: i64, y: i64, x: i64| Vec::<f32>::try_from(out.get(i).select(1, y).select(1, x)).unwrap();
    let grey = 200.0 / 255.0;
    let red = [0.3 * grey + 0.7, 0.3 * grey + 0.7 * 0.15, 0.3 * grey];
    for (got, want) in px(0, 10, 12).iter().zip(red) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    assert!(px(0, 2, 2).iter().all(|v| (v - grey).abs() < 1e-6));
    assert!(px(1, 27, 27).iter().zip(red).all(|(g, r)| (g - r).abs() < 1e-5));
    assert!(px(1, 0, 0).iter().all(|v| (v - grey).abs() < 1e-6));
    let alike =
        attention_overlay(&images.narrow(0, 0, 1), &tch::Tensor::ones([1, 16], (tch::Kind::Float, Device::Cpu)));
    assert!(alike.unwrap().allclose(
        &tch::Tensor::full([1, 3, 28, 28], f64::from(grey), (tch::Kind::Float, Device::Cpu)),
        1e-6,
        1e-6,
        false
    ));
    let err = attention_overlay(&images, &weights.narrow(1, 0, 15)).unwrap_err().to_string();
    assert!(err.contains("N = g² patches") && err.contains("weights (2, 15)"), "{err}");
    let err = attention_overlay(&images, &weights.narrow(0, 0, 1)).unwrap_err().to_string();
    assert!(err.contains("one row of weights per image"), "{err}");
}

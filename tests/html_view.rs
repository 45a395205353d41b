//! The interactive attention page: self-contained (no network), and drawn by a real browser
//! (headless Chromium runs its scripts; the DOM it dumps has the SVG lines, and a screenshot
//! shows them).

use std::process::Command;

use hw9::data::tokenize::Tokenizer;
use hw9::models::bert::{default_bert_dir, Bert};
use hw9::visuals::attention_html::AttentionHtml;
use tch::Device;

fn page() -> (AttentionHtml, Vec<String>) {
    let (_vs, bert) = Bert::load(&default_bert_dir(), Device::Cpu).unwrap_or_else(|e| panic!("{e} (run `make setup`)"));
    let tok = Tokenizer::load(&default_bert_dir().join("tokenizer.json")).unwrap();
    let enc = tok.encode("I wanted to have a party", Some("I bought a cake for it.")).unwrap();
    let (ids, types) = enc.tensors(Device::Cpu);
    let out = bert.forward(&ids, &types, None).unwrap();
    (AttentionHtml::new("MiniLM </script> test", &out.layers, &enc.tokens).unwrap(), enc.tokens)
}

fn chromium() -> &'static str {
    let path = "/usr/bin/chromium";
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: `make test` installs it (Debian package chromium)"
    );
    path
}

fn headless(args: &[&str]) -> std::process::Output {
    let profile_tmp = tempfile::tempdir().unwrap();
    let profile = profile_tmp.path().to_path_buf();
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium runs")
}

#[test]
fn the_page_is_self_contained() {
    let (page, tokens) = page();
    let html = page.html();
    // The only URL is the SVG namespace name, which is never fetched.
    let outside = html.replace("http://www.w3.org/2000/svg", "");
    assert!(
        !outside.contains("http://") && !outside.contains("https://") && !html.contains("<link"),
        "the page loads something from outside"
    );
    assert!(!html.contains("<script src"), "scripts must be inline");
    assert!(html.contains("\"tokens\":[\"[CLS]\",\"i\",\"wanted\""));
    assert!(!html.contains("</script> test"), "a title with </script> must not close the script");
    assert_eq!(tokens.len(), 16);
}

#[test]
fn chromium_runs_the_scripts_and_draws_the_head_view() {
    let (page, _) = page();
    let dir = hw9::paths::root().join("build/views");
    let file = dir.join("attention.html");
    page.save(&file).unwrap();
    let url = format!("file://{}", file.display());
    let dom = String::from_utf8_lossy(&headless(&["--dump-dom", &url]).stdout).into_owned();
    assert!(dom.contains("id=\"hw9-svg\""), "the script did not draw the SVG: {}", &dom[..dom.len().min(500)]);
    let lines = dom.matches("<line").count();
    assert!(lines > 100, "only {lines} attention lines drawn");
    assert_eq!(dom.matches("<option").count(), 6, "one option per layer");
    let shot = dir.join("attention.png");
    let _ = std::fs::remove_file(&shot);
    headless(&["--window-size=700,500", &format!("--screenshot={}", shot.display()), &url]);
    let img = image::open(&shot).expect("a screenshot").to_rgb8();
    // Head 0's blue lines are on screen.
    let blue = img.pixels().filter(|p| p.0[2] > 150 && p.0[0] < 120 && p.0[1] < 170).count();
    assert!(blue > 200, "the screenshot shows {blue} blue pixels");
}

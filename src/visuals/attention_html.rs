//! An interactive head view and model view in one self-contained HTML page: inline JavaScript and
//! CSS, no CDN, so it cannot come up blank because a script failed to load (bertviz's most common
//! complaint). Layer selection, head toggles, hover a token to highlight its attention; a model
//! view tab with every layer × head. Shown in notebooks as `text/html`, or saved as a file.

use std::path::Path;

use serde::Serialize;
use tch::Kind;

use crate::error::{Error, Result};
use crate::models::attention::LayerAttention;

#[derive(Serialize)]
struct ViewData<'a> {
    title: &'a str,
    tokens: &'a [String],
    /// `[layer][head][query][key]`, rounded to 4 decimals.
    attention: Vec<Vec<Vec<Vec<f32>>>>,
}

/// The page for sequence 0 of `layers`' attention.
pub struct AttentionHtml {
    html: String,
}

impl AttentionHtml {
    /// Builds the page; `tokens` must have one entry per position.
    pub fn new(title: &str, layers: &[LayerAttention], tokens: &[String]) -> Result<Self> {
        let first = layers.first().ok_or_else(|| Error::Input("an attention view needs at least one layer".into()))?;
        let t = first.probs.size()[2];
        if tokens.len() as i64 != t {
            return Err(Error::Input(format!("expected {t} tokens (one per position), got {}", tokens.len())));
        }
        let attention = layers
            .iter()
            .map(|l| {
                // (H, T, T), rounded to 4 decimals for the page
                let p = (l.probs.get(0).detach().to_device(tch::Device::Cpu).to_kind(Kind::Float) * 1e4).round() / 1e4;
                let (h, t) = (p.size()[0], p.size()[1]);
                let flat = Vec::<f32>::try_from(p.reshape([-1]))?;
                Ok((0..h as usize)
                    .map(|hd| {
                        (0..t as usize)
                            .map(|i| flat[(hd * t as usize + i) * t as usize..][..t as usize].to_vec())
                            .collect()
                    })
                    .collect())
            })
            .collect::<Result<Vec<_>>>()?;
        let data = serde_json::to_string(&ViewData { title, tokens, attention })?;
        // Keep "</script>" in token text from closing the script element.
        let data = data.replace("</", "<\\/");
        Ok(AttentionHtml { html: TEMPLATE.replace("__TITLE__", &escape(title)).replace("__DATA__", &data) })
    }

    /// The whole page.
    pub fn html(&self) -> &str {
        &self.html
    }

    /// Writes the page to `path` (atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_atomic(path.as_ref(), self.html.as_bytes())
    }

    /// Shows the page inline in a notebook (evcxr's `text/html`).
    pub fn evcxr_display(&self) {
        println!("EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT", self.html);
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

const TEMPLATE: &str = r##"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
.hw9-attn { font: 14px/1.2 sans-serif; color: #222; }
.hw9-attn .bar { margin: 4px 0 8px; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
.hw9-attn .head { display: inline-block; width: 14px; height: 14px; border-radius: 2px; cursor: pointer; opacity: 1; }
.hw9-attn .head.off { opacity: 0.15; }
.hw9-attn .tab { cursor: pointer; padding: 2px 8px; border: 1px solid #999; border-radius: 3px; }
.hw9-attn .tab.on { background: #333; color: #fff; }
.hw9-attn svg text { font: 13px sans-serif; cursor: default; }
.hw9-attn .grid { display: grid; gap: 4px; }
.hw9-attn .grid canvas { image-rendering: pixelated; border: 1px solid #ddd; }
</style></head>
<body><div class="hw9-attn" id="hw9-root">
<div class="bar"><b>__TITLE__</b>
 <span class="tab on" data-view="head">head view</span><span class="tab" data-view="model">model view</span>
 <label>layer <select id="hw9-layer"></select></label> <span id="hw9-heads"></span></div>
<div id="hw9-view"></div>
</div>
<script>
(function () {
  var data = __DATA__;
  var colors = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22","#17becf","#393b79","#637939"];
  var root = document.getElementById("hw9-root"), view = document.getElementById("hw9-view");
  var layerSel = document.getElementById("hw9-layer"), headsBox = document.getElementById("hw9-heads");
  var nL = data.attention.length, nH = data.attention[0].length, T = data.tokens.length;
  var on = []; for (var h = 0; h < nH; h++) on.push(true);
  var mode = "head", hover = -1;
  for (var l = 0; l < nL; l++) { var o = document.createElement("option"); o.value = l; o.text = l; layerSel.appendChild(o); }
  for (var h = 0; h < nH; h++) (function (h) {
    var s = document.createElement("span"); s.className = "head"; s.title = "head " + h; s.style.background = colors[h % colors.length];
    s.onclick = function () { on[h] = !on[h]; s.className = on[h] ? "head" : "head off"; draw(); };
    headsBox.appendChild(s);
  })(h);
  layerSel.onchange = draw;
  root.querySelectorAll(".tab").forEach(function (t) { t.onclick = function () {
    mode = t.getAttribute("data-view");
    root.querySelectorAll(".tab").forEach(function (u) { u.className = u === t ? "tab on" : "tab"; });
    draw(); }; });
  function svgEl(name, attrs) { var e = document.createElementNS("http://www.w3.org/2000/svg", name); for (var k in attrs) e.setAttribute(k, attrs[k]); return e; }
  function drawHead() {
    var L = +layerSel.value, rowH = 22, w = 520, h = T * rowH + 10, xl = 180, xr = 340;
    var svg = svgEl("svg", { width: w, height: h, id: "hw9-svg" });
    for (var hd = 0; hd < nH; hd++) { if (!on[hd]) continue;
      for (var i = 0; i < T; i++) { if (hover >= 0 && hover !== i) continue;
        for (var j = 0; j < T; j++) { var a = data.attention[L][hd][i][j]; if (a < 0.01) continue;
          svg.appendChild(svgEl("line", { x1: xl + 5, y1: i * rowH + 15, x2: xr - 5, y2: j * rowH + 15,
            stroke: colors[hd % colors.length], "stroke-width": 2, "stroke-opacity": Math.min(1, a) })); } } }
    data.tokens.forEach(function (tok, i) {
      [[xl, "end"], [xr, "start"]].forEach(function (p, side) {
        var t = svgEl("text", { x: p[0], y: i * rowH + 19, "text-anchor": p[1], "font-weight": hover === i && side === 0 ? "bold" : "normal" });
        t.textContent = tok;
        if (side === 0) { t.onmouseenter = function () { hover = i; draw(); }; t.onmouseleave = function () { hover = -1; draw(); }; }
        svg.appendChild(t); }); });
    view.appendChild(svg);
  }
  function drawModel() {
    var cell = Math.max(2, Math.floor(80 / T)), grid = document.createElement("div");
    grid.className = "grid"; grid.style.gridTemplateColumns = "repeat(" + nH + ", auto)";
    for (var L = 0; L < nL; L++) for (var hd = 0; hd < nH; hd++) {
      var c = document.createElement("canvas"); c.width = T * cell; c.height = T * cell; c.title = "layer " + L + ", head " + hd;
      var g = c.getContext("2d");
      for (var i = 0; i < T; i++) for (var j = 0; j < T; j++) {
        var v = Math.round(255 * (1 - data.attention[L][hd][i][j]));
        g.fillStyle = "rgb(" + v + "," + v + ",255)"; g.fillRect(j * cell, i * cell, cell, cell); }
      grid.appendChild(c); }
    view.appendChild(grid);
  }
  function draw() { view.innerHTML = ""; if (mode === "head") drawHead(); else drawModel(); }
  draw();
})();
</script></body></html>
"##;

"""The live page: one self-contained HTML document (inline style and script, system fonts, no
CDN: a board is often offline). Its script draws the state embedded at load, then polls
/api/state twice a second; the stream is an <img> on /stream.mjpg. Text from the model (labels)
and the server (warnings) is set with textContent, never parsed as HTML."""

from __future__ import annotations

import html
import json
from typing import Any

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%(title)s</title>
<style nonce="%(nonce)s">
body{margin:0;font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#111;color:#eee}
header{padding:8px 14px;background:#222;display:flex;gap:12px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:16px;margin:0;font-weight:600}
#status{font-size:13px;padding:1px 8px;border-radius:9px;background:#2a6}
#status.off{background:#a33}
main{display:flex;flex-wrap:wrap;gap:14px;padding:14px}
#view{flex:1 1 480px;max-width:960px}
#view img{width:100%%;background:#000;display:block;border-radius:4px;min-height:120px}
aside{flex:1 1 260px;max-width:420px}
section{background:#1c1c1c;border-radius:6px;padding:10px 12px;margin-bottom:12px}
h2{font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:#9aa;margin:0 0 6px}
#top1{font-size:22px;font-weight:600;margin-bottom:6px}
ol{margin:0;padding:0;list-style:none}
li.k{display:grid;grid-template-columns:1fr 56px;gap:2px 8px;margin:4px 0}
li.k .bar{grid-column:1/3;height:5px;background:#333;border-radius:3px}
li.k .bar span{display:block;height:5px;background:#4a9;border-radius:3px}
li.k .p{text-align:right;font-variant-numeric:tabular-nums}
dl{display:grid;grid-template-columns:auto 1fr;gap:2px 12px;margin:0}
dt{color:#9aa}dd{margin:0;font-variant-numeric:tabular-nums}
#agree{font-size:20px;font-weight:600}
svg{width:100%%;height:70px;background:#151515;border-radius:4px;margin-top:6px}
#warnings li{color:#f88;font-size:13px;margin:3px 0}
#warnings li.none{color:#9aa}
.hide{display:none}
</style></head>
<body>
<header><h1 id="title">%(title)s</h1><span id="status">live</span></header>
<main>
<div id="view"><img id="stream" src="/stream.mjpg" alt="annotated live stream"></div>
<aside>
<section><h2>Top classes</h2><div id="top1">waiting for the first frame</div><ol id="topk"></ol></section>
<section><h2>Speed</h2><dl>
<dt>FPS</dt><dd id="fps">-</dd><dt>inference</dt><dd id="infer">-</dd>
<dt>frame</dt><dd id="frame">-</dd><dt>dropped</dt><dd id="dropped">0</dd><dt>bad</dt><dd id="bad">0</dd>
</dl></section>
<section id="shadow"><h2>FP32 agreement (rolling)</h2><div id="agree">n/a</div><div id="compared"></div>
<svg id="chart" viewBox="0 0 120 100" preserveAspectRatio="none"><polyline id="line" fill="none"
 stroke="#4a9" stroke-width="2" vector-effect="non-scaling-stroke" points=""/></svg></section>
<section><h2>Warnings</h2><ol id="warnings"><li class="none">none</li></ol></section>
</aside></main>
<noscript>This page needs JavaScript for the numbers; the stream is at /stream.mjpg.</noscript>
<script type="application/json" id="initial">%(state)s</script>
<script nonce="%(nonce)s">
"use strict";
const $ = (id) => document.getElementById(id);
const num = (v, d, unit) => (v === null || v === undefined) ? "-" : v.toFixed(d) + (unit || "");
function item(cls, parts) {
  const li = document.createElement("li");
  li.className = cls;
  for (const p of parts) li.appendChild(p);
  return li;
}
function span(text, cls) {
  const s = document.createElement("span");
  s.textContent = text;
  if (cls) s.className = cls;
  return s;
}
function render(s) {
  const st = $("status");
  st.textContent = s.running ? "live" : "stopped";
  st.className = s.running ? "" : "off";
  const top = s.top || [];
  $("top1").textContent = top.length ? top[0][0] : "waiting for the first frame";
  $("topk").replaceChildren(...top.map(([label, score]) => {
    const bar = span("", "bar"), fill = document.createElement("span");
    fill.style.width = Math.max(0, Math.min(100, 100 * score)).toFixed(1) + "%%";
    bar.appendChild(fill);
    return item("k", [span(label), span((100 * score).toFixed(1) + " %%", "p"), bar]);
  }));
  $("fps").textContent = num(s.fps, 1);
  $("infer").textContent = num(s.infer_ms, 1, " ms");
  $("frame").textContent = s.frame === null ? "-" : String(s.frame);
  $("dropped").textContent = String(s.dropped);
  $("bad").textContent = String(s.bad);
  $("shadow").classList.toggle("hide", !s.shadow);
  $("agree").textContent = num(s.agreement, 1, " %%");
  $("compared").textContent = s.comparisons ? s.comparisons + " frames compared (window " + s.window + ")" : "";
  const h = s.agreement_history || [];
  $("line").setAttribute("points", h.map((v, i) => (h.length < 2 ? 0 : 120 * i / (h.length - 1)).toFixed(1)
    + "," + (95 - 0.9 * v).toFixed(1)).join(" "));
  const w = s.warnings || [];
  $("warnings").replaceChildren(...(w.length ? w.slice().reverse().map((t) => item("", [span(t)]))
                                             : [item("none", [span("none")])]));
}
render(JSON.parse($("initial").textContent));
async function poll() {
  try {
    const r = await fetch("/api/state", {cache: "no-store", credentials: "same-origin"});
    if (r.ok) render(await r.json());
    else { $("status").textContent = "no access: open the full URL with ?token="; $("status").className = "off"; }
  } catch (e) {
    $("status").textContent = "connection lost"; $("status").className = "off";
  }
  setTimeout(poll, 500);
}
setTimeout(poll, 500);
$("stream").addEventListener("error", () => setTimeout(() => { $("stream").src = "/stream.mjpg?r=" + Date.now(); }, 2000));
</script>
</body></html>
"""


def render_page(state: dict[str, Any], *, nonce: str) -> str:
    """The page with `state` embedded (JSON inside a non-executed script element; <, > and &
    escaped so no label can end it) and `nonce` on the inline style and script (the
    Content-Security-Policy allows only those)."""
    data = json.dumps(state, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _PAGE % {"title": html.escape(str(state.get("title", "edgesqueeze")) + " - edgesqueeze live"),
                    "nonce": html.escape(nonce), "state": data}

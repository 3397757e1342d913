"""The progress view's static files: its stylesheet, auto-refresh script and icons, inline.

Served by the app under ``static/`` (the network may be closed: no CDN, no build step, no data
files to package). The page works without the script: it then refreshes itself with a
``<meta http-equiv="refresh">`` in ``<noscript>``. With it, every few seconds the script fetches
the same URL and swaps the ``#pb-content`` element, so the scroll position stays, a text
selection (a command being copied) pauses it, and a hidden tab does not poll. It also lets links
to DAGs and runs open in the Airflow UI from inside the UI's sandboxed frame.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["ASSETS", "Asset"]


class Asset(NamedTuple):
    """One static file: its text and media type."""

    text: str
    media_type: str


_CSS = """
:root {
  --bg: #f6f7f9; --surface: #ffffff; --border: #dfe3e8; --text: #1c2430; --muted: #5f6b7a;
  --accent: #017cee; --accent-soft: #e6f2fe; --track: #e8ebef;
  --pending: #8c96a3; --running: #0b84c6; --completed: #1e8e3e; --failed: #d1242f;
  --interrupted: #b7791f; --stalled: #dd6b20; --warn-bg: #fff8e6; --warn-border: #f0c36d;
  --err-bg: #fdecee; --err-border: #f1a5ab;
  color-scheme: light dark;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #11151b; --surface: #181d25; --border: #2c3440; --text: #e3e8ef; --muted: #98a3b3;
    --accent: #4aa3ff; --accent-soft: #17273a; --track: #2a313c;
    --warn-bg: #2b2415; --warn-border: #7a5c1e; --err-bg: #2e1719; --err-border: #7c2d33;
  }
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--bg); color: var(--text); }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", sans-serif; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.topbar {
  display: flex; align-items: center; gap: 12px; padding: 10px 20px;
  background: var(--surface); border-bottom: 1px solid var(--border);
  position: sticky; top: 0; z-index: 2;
}
.brand { display: flex; align-items: center; gap: 8px; font-weight: 650; font-size: 15px; color: var(--text); }
.brand img { width: 20px; height: 20px; }
.topbar .sub { color: var(--muted); }
.spacer { flex: 1; }
.live { color: var(--muted); font-size: 12.5px; }
.live::before {
  content: ""; display: inline-block; width: 8px; height: 8px; border-radius: 50%;
  background: var(--completed); margin-right: 6px; vertical-align: 1px;
}
.live.paused::before { background: var(--pending); }
.live.failing::before { background: var(--failed); }
button, select {
  font: inherit; color: var(--text); background: var(--surface); border: 1px solid var(--border);
  border-radius: 6px; padding: 3px 10px; cursor: pointer;
}
button:hover, select:hover { border-color: var(--accent); }
.jsonlink { font-size: 12.5px; border: 1px solid var(--border); border-radius: 6px; padding: 3px 8px; }
main { padding: 18px 20px 28px; }
.pagehead { display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; margin-bottom: 6px; }
h1 { font-size: 20px; margin: 0; font-weight: 650; overflow-wrap: anywhere; }
h2 { font-size: 15px; margin: 0 0 10px; font-weight: 650; }
.crumbs { margin-bottom: 8px; font-size: 13px; }
.meta { color: var(--muted); font-size: 12.5px; margin: 2px 0 14px; }
.meta span + span::before { content: "·"; margin: 0 7px; color: var(--border); }
.filters { display: flex; gap: 10px; align-items: center; margin-left: auto; color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(170px, 1fr)); gap: 12px; margin-bottom: 16px; }
.card { background: var(--surface); border: 1px solid var(--border); border-radius: 8px; padding: 10px 14px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 20px; font-weight: 650; margin-top: 2px; font-variant-numeric: tabular-nums; }
.card .s { color: var(--muted); font-size: 12.5px; }
.card.alert .v { color: var(--failed); }
.card.wide { grid-column: span 2; }
.pad { padding: 0 16px; }
.panel.flush > .pad:last-child { padding-bottom: 12px; }
.panel { background: var(--surface); border: 1px solid var(--border); border-radius: 8px; padding: 14px 16px; margin-bottom: 16px; }
.panel.flush { padding: 0; overflow-x: auto; }
.panel.flush h2 { padding: 12px 16px 0; }
.notice { border-radius: 8px; padding: 12px 16px; margin-bottom: 16px; border: 1px solid var(--warn-border); background: var(--warn-bg); }
.notice.error { border-color: var(--err-border); background: var(--err-bg); }
.notice h2 { margin-bottom: 4px; }
.notice p { margin: 4px 0; }
.notice .detail { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; white-space: pre-wrap; word-break: break-word; }
table.grid { width: 100%; border-collapse: collapse; background: var(--surface); font-variant-numeric: tabular-nums; }
.grid th, .grid td { padding: 8px 10px; text-align: left; border-bottom: 1px solid var(--border); vertical-align: top; }
.grid th { font-size: 12px; color: var(--muted); font-weight: 600; text-transform: uppercase; letter-spacing: .04em; white-space: nowrap; background: var(--surface); }
.grid tbody tr:hover td { background: var(--accent-soft); }
.grid tr.note td { border-top: 0; padding-top: 0; color: var(--muted); font-size: 12.5px; }
.grid tr.has-note td { border-bottom: 0; }
.grid .num { text-align: right; white-space: nowrap; }
.grid .nowrap { white-space: nowrap; }
.grid .key { min-width: 220px; max-width: 460px; font-weight: 550; }
.grid .key .small { margin-top: 1px; }
.grid .holder { min-width: 200px; max-width: 320px; font-size: 12px; }
.grid .msg { word-break: break-word; max-width: 560px; }
.muted { color: var(--muted); }
.nb { white-space: nowrap; }
.small { font-size: 12.5px; font-weight: 400; }
.bad { color: var(--failed); font-weight: 600; }
.warn { color: var(--stalled); font-weight: 600; }
.state { display: inline-flex; align-items: center; gap: 6px; white-space: nowrap; font-weight: 550; }
.state::before { content: ""; width: 9px; height: 9px; border-radius: 50%; background: var(--pending); }
.state.running::before { background: var(--running); }
.state.completed::before { background: var(--completed); }
.state.failed::before { background: var(--failed); }
.state.interrupted::before { background: var(--interrupted); }
.state.stalled::before { background: var(--stalled); }
.state.failed { color: var(--failed); }
.state.interrupted { color: var(--interrupted); }
.state.stalled { color: var(--stalled); }
.bar { display: flex; align-items: center; gap: 8px; min-width: 130px; }
.bar .pct { width: 44px; text-align: right; font-size: 12.5px; color: var(--muted); font-variant-numeric: tabular-nums; }
progress { appearance: none; -webkit-appearance: none; flex: 1; height: 8px; border: 0; border-radius: 4px; background: var(--track); overflow: hidden; }
progress::-webkit-progress-bar { background: var(--track); border-radius: 4px; }
progress::-webkit-progress-value { background: var(--running); border-radius: 4px; }
progress::-moz-progress-bar { background: var(--running); border-radius: 4px; }
progress.completed::-webkit-progress-value { background: var(--completed); }
progress.completed::-moz-progress-bar { background: var(--completed); }
progress.failed::-webkit-progress-value { background: var(--failed); }
progress.failed::-moz-progress-bar { background: var(--failed); }
progress.interrupted::-webkit-progress-value, progress.stalled::-webkit-progress-value { background: var(--interrupted); }
progress.interrupted::-moz-progress-bar, progress.stalled::-moz-progress-bar { background: var(--interrupted); }
progress.pending::-webkit-progress-value { background: var(--pending); }
progress.pending::-moz-progress-bar { background: var(--pending); }
.big .bar progress { height: 14px; border-radius: 7px; }
.big .bar .pct { font-size: 15px; width: 60px; color: var(--text); font-weight: 650; }
.chips { display: flex; flex-wrap: wrap; gap: 8px; margin-bottom: 12px; }
.chip { border: 1px solid var(--border); border-radius: 999px; padding: 2px 10px; font-size: 12.5px; }
.chip b { color: var(--failed); margin-left: 4px; }
dl.howto { display: grid; grid-template-columns: max-content 1fr; gap: 6px 14px; margin: 8px 0 0; }
dl.howto dt { color: var(--muted); }
dl.howto dd { margin: 0; }
code.copy { user-select: all; background: var(--bg); border: 1px solid var(--border); border-radius: 5px; padding: 2px 6px; word-break: break-all; }
.empty { text-align: center; padding: 36px 16px; color: var(--muted); }
footer.help { color: var(--muted); font-size: 12.5px; margin-top: 8px; }
footer.help code { font-size: 12px; }
"""

_JS = """
// Auto-refresh: swap #pb-content for a fresh copy every few seconds, unless paused.
(() => {
  "use strict";
  const seconds = Number(document.body.dataset.refresh || 0);
  const live = document.getElementById("pb-live");
  const button = document.getElementById("pb-pause");
  if (!seconds || !live || !button) return;
  const KEY = "parallel-batch-paused";
  let paused = sessionStorage.getItem(KEY) === "1";
  let busy = false;
  function show(text, cls) {
    live.textContent = text;
    live.className = "live" + (cls ? " " + cls : "");
  }
  function label() {
    button.textContent = paused ? "Resume" : "Pause";
    show(paused ? "Paused" : "Live, every " + seconds + " s", paused ? "paused" : "");
  }
  button.hidden = false;
  button.addEventListener("click", () => {
    paused = !paused;
    sessionStorage.setItem(KEY, paused ? "1" : "0");
    label();
    if (!paused) refresh();
  });
  document.querySelectorAll("form.filters select").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  async function refresh() {
    if (paused || busy || document.hidden) return;
    if (String(window.getSelection() || "")) return;  // someone is copying a command
    busy = true;
    try {
      const response = await fetch(location.href, {
        headers: { Accept: "text/html" }, cache: "no-store", credentials: "same-origin",
      });
      const doc = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = doc.getElementById("pb-content");
      const current = document.getElementById("pb-content");
      if (!fresh || !current) throw new Error("no content in the answer");
      current.replaceWith(fresh);
      label();
    } catch (error) {
      show("Refresh failed, retrying", "failing");
    } finally {
      busy = false;
    }
  }
  label();
  setInterval(refresh, seconds * 1000);
  document.addEventListener("visibilitychange", refresh);
})();

// Links into the Airflow UI open in the UI itself. The UI shows this page in a sandboxed
// frame that may not navigate the top window, so the link goes through the UI's router (same
// origin): push the URL on the top window's history and let its router follow.
document.addEventListener("click", (event) => {
  const link = event.target instanceof Element ? event.target.closest("a[data-airflow]") : null;
  if (!link || window.top === window || event.button !== 0) return;
  if (event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
  try {
    const top = window.top;
    const url = new URL(link.href, document.baseURI);
    if (url.origin !== top.location.origin) return;
    event.preventDefault();
    top.history.pushState(null, "", url.pathname + url.search + url.hash);
    top.dispatchEvent(new top.PopStateEvent("popstate", { state: null }));
  } catch (error) {
    // Another origin: leave the click to the browser.
  }
});
"""


def _icon(color: str) -> str:
    # Three bars of a progress chart, in the view's accent colour.
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" '
        f'stroke="{color}" stroke-width="2.6" stroke-linecap="round">'
        '<path d="M4 6h16"/><path d="M4 12h11"/><path d="M4 18h6"/></svg>'
    )


ASSETS: dict[str, Asset] = {
    "style.css": Asset(_CSS, "text/css; charset=utf-8"),
    "page.js": Asset(_JS, "text/javascript; charset=utf-8"),
    "icon.svg": Asset(_icon("#017cee"), "image/svg+xml"),
    "icon-dark.svg": Asset(_icon("#4aa3ff"), "image/svg+xml"),
}

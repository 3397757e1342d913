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

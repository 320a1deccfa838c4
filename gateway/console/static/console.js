// The console's own script (no libraries). Pages work without it; it adds local times,
// copy buttons and confirmations. Loaded as a file: the Content-Security-Policy allows no
// inline script.
"use strict";

// Times arrive as <time datetime="…UTC…" title="… UTC">; show them in the browser's zone and
// keep UTC on hover.
function localizeTimes(root) {
  const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  for (const el of root.querySelectorAll("time[datetime]")) {
    const d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d)) el.textContent = fmt.format(d);
  }
}

// Format numbers marked data-number in the browser's locale.
function localizeNumbers(root) {
  const fmt = new Intl.NumberFormat();
  for (const el of root.querySelectorAll("[data-number]")) {
    const n = Number(el.getAttribute("data-number"));
    if (!isNaN(n)) el.textContent = fmt.format(n);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localizeTimes(document);
  localizeNumbers(document);
  // The browser's zone, for forms that default a time zone field.
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  for (const el of document.querySelectorAll("input[data-default-zone]")) {
    if (!el.value) el.value = zone;
  }
});

// <button data-copy="id"> copies the text of the element with that id.
document.addEventListener("click", async (e) => {
  const btn = e.target.closest("[data-copy]");
  if (!btn) return;
  const el = document.getElementById(btn.getAttribute("data-copy"));
  if (!el) return;
  try {
    await navigator.clipboard.writeText(el.textContent);
    btn.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    btn.textContent = "Selected: press Ctrl+C";
  }
});

// <form data-confirm="…"> asks before submitting.
document.addEventListener("submit", (e) => {
  const msg = e.target.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) e.preventDefault();
});

// Forms mark themselves busy while submitting, so a double click does not send twice.
document.addEventListener("submit", (e) => {
  if (e.defaultPrevented) return;
  for (const b of e.target.querySelectorAll("button[type=submit]")) b.disabled = true;
  e.target.setAttribute("aria-busy", "true");
});

window.cmConsole = { localizeTimes, localizeNumbers };

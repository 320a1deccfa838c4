// The live events page: rows from the console's event stream (/console/events/live, fed by
// ingest's TailEvents), newest first, at most data-max-rows of them. Every value goes into
// the page as text (textContent), never as HTML.
"use strict";

(() => {
  const table = document.getElementById("live-events");
  if (!table || !window.EventSource) return;
  const body = table.tBodies[0];
  const maxRows = Number(table.getAttribute("data-max-rows")) || 200;
  const status = document.getElementById("live-status");
  const empty = document.getElementById("live-empty");
  const pauseBtn = document.getElementById("live-pause");
  const filter = document.getElementById("live-filter");
  let paused = false;
  let held = []; // outcomes that arrived while paused, shown on resume (bounded like the table)
  const seen = new Set(); // keys of the rows shown: a reconnect resends the recent outcomes

  const say = (text) => { status.textContent = text; };

  function key(o) {
    return JSON.stringify([o.outcome, o.eventId || "", o.time || "", o.field || "", o.source || ""]);
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function details(o) {
    switch (o.outcome) {
      case "rejected": return (o.field ? o.field + ": " : "") + (o.reason || "");
      case "dropped": return o.dropped + " outcomes missed (over the stream's rate)";
      case "suppressed": return "data subject suppressed";
      default: return o.properties || "";
    }
  }

  function applyFilter(tr) {
    const want = filter.value;
    tr.hidden = want !== "" && tr.getAttribute("data-outcome") !== want;
  }

  function show(o) {
    const k = key(o);
    if (seen.has(k)) return;
    seen.add(k);
    const tr = document.createElement("tr");
    tr.setAttribute("data-outcome", o.outcome);
    tr.setAttribute("data-key", k);
    const t = cell(tr, "");
    if (o.time) {
      const el = document.createElement("time");
      el.setAttribute("datetime", o.time);
      const d = new Date(o.time);
      el.title = isNaN(d) ? o.time : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC");
      el.textContent = isNaN(d) ? o.time : d.toLocaleTimeString();
      t.appendChild(el);
    }
    const oc = cell(tr, "");
    const badge = document.createElement("span");
    badge.className = "state " + o.outcome;
    badge.textContent = o.outcome;
    oc.appendChild(badge);
    cell(tr, o.eventId);
    cell(tr, o.type);
    cell(tr, o.name);
    cell(tr, o.user);
    cell(tr, o.campaign);
    cell(tr, o.variant);
    cell(tr, details(o), "details");
    cell(tr, o.source, "muted");
    applyFilter(tr);
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > maxRows) {
      const last = body.rows[body.rows.length - 1];
      seen.delete(last.getAttribute("data-key"));
      body.removeChild(last);
    }
    empty.hidden = true;
  }

  function receive(o) {
    if (paused) {
      held.push(o);
      if (held.length > maxRows) held.shift();
      say("Paused: " + held.length + " new outcome(s) waiting.");
      return;
    }
    show(o);
  }

  pauseBtn.addEventListener("click", () => {
    paused = !paused;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    pauseBtn.setAttribute("aria-pressed", String(paused));
    if (!paused) {
      const waiting = held;
      held = [];
      for (const o of waiting) show(o);
      say("Live.");
    } else {
      say("Paused.");
    }
  });

  filter.addEventListener("change", () => {
    for (const tr of body.rows) applyFilter(tr);
  });

  say("Connecting…");
  const source = new EventSource(table.getAttribute("data-source"));
  source.addEventListener("open", () => { if (!paused) say("Live."); });
  source.addEventListener("outcome", (e) => {
    try { receive(JSON.parse(e.data)); } catch { /* not ours: ignore */ }
  });
  source.addEventListener("problem", (e) => {
    let p = {};
    try { p = JSON.parse(e.data); } catch { /* shown as a generic problem */ }
    if (p.final) {
      source.close(); // it would be refused again: reload once the cause is gone
      say((p.message || "The live stream stopped.") + " Reload the page to try again.");
    } else {
      say((p.message || "The live stream stopped.") + " Reconnecting…");
    }
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      say("The live stream was refused (your role may not allow it, or too many are open). Reload the page to try again.");
    } else {
      say("Connection lost. Reconnecting…");
    }
  });
})();

// Live counters of the campaign analytics page: an EventSource on the page's live stream
// (the element with data-live-src names it) puts each push's numbers into the elements marked
// data-live="impressions|clicks|conversions", as text. A "problem" event, or a stream that
// cannot be opened, shows "live updates paused: <reason>" and the stream is opened again
// after a pause that grows up to a minute.
"use strict";

(function () {
  const status = document.querySelector("[data-live-src]");
  if (!status || !window.EventSource) return;
  const src = status.getAttribute("data-live-src");
  const normal = status.textContent;
  const fmt = new Intl.NumberFormat();
  let delay = 2000;
  let source = null;
  let timer = null;

  function show(text, paused) {
    status.textContent = text;
    status.classList.toggle("error", paused);
  }

  function update(counters) {
    for (const name of ["impressions", "clicks", "conversions"]) {
      const n = Number(counters[name]);
      if (!Number.isFinite(n)) continue;
      const text = fmt.format(n);
      for (const el of document.querySelectorAll('[data-live="' + name + '"]')) {
        if (el.textContent !== text) {
          el.textContent = text;
          el.classList.add("changed");
          setTimeout(() => el.classList.remove("changed"), 1200);
        }
      }
    }
  }

  function reconnect(reason) {
    show("Live updates paused: " + reason, true);
    if (source) source.close();
    source = null;
    clearTimeout(timer);
    timer = setTimeout(connect, delay);
    delay = Math.min(delay * 2, 60000);
  }

  function connect() {
    source = new EventSource(src);
    source.addEventListener("open", () => {
      delay = 2000;
      show(normal, false);
    });
    source.addEventListener("counters", (e) => {
      try {
        update(JSON.parse(e.data));
      } catch {
        // a malformed push is skipped; the next one comes in seconds
      }
    });
    source.addEventListener("problem", (e) => {
      let msg = "the counters cannot be read right now.";
      try {
        msg = JSON.parse(e.data).message || msg;
      } catch {
        // keep the general reason
      }
      reconnect(msg);
    });
    source.addEventListener("error", () => {
      // The browser retries a dropped stream by itself; one it closed (an error answer, such
      // as a refusal or a lost session) is opened again here, more slowly each time.
      if (source && source.readyState === EventSource.CLOSED) reconnect("the connection was refused or lost; retrying.");
      else show("Live updates paused: reconnecting…", true);
    });
  }

  document.addEventListener("visibilitychange", () => {
    // A hidden tab keeps no stream open; it reconnects when shown again.
    if (document.hidden) {
      if (source) source.close();
      source = null;
      clearTimeout(timer);
    } else if (!source) {
      connect();
    }
  });
  connect();
})();

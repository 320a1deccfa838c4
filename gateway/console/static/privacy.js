// The request page of an open data-subject request reloads itself every few seconds, so its
// state and each service's progress show as they change — unless the user is typing in one of
// its forms (an extension's reason), whose text a reload would lose.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const live = document.querySelector("[data-refresh-seconds]");
  if (!live) return;
  const seconds = Math.max(2, Number(live.getAttribute("data-refresh-seconds")) || 5);
  const typing = () => {
    const el = document.activeElement;
    if (el && el.closest("form")) return true;
    for (const f of document.querySelectorAll("textarea, input[type=text], input[type=number]")) {
      if (f.value !== f.defaultValue) return true;
    }
    return false;
  };
  setInterval(() => {
    if (!document.hidden && !typing()) window.location.reload();
  }, seconds * 1000);
});

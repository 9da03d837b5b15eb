// callwatch dashboard: small conveniences on top of pages that work without JavaScript.
"use strict";
document.addEventListener("keydown", (event) => {
  // Ctrl+Enter (or Cmd+Enter) runs the SQL in the editor.
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.matches("form.sql textarea")) {
    event.preventDefault();
    event.target.form.submit();
  }
});
// A refresh never closes what the user opened: open <details> stay open across swaps.
document.addEventListener("htmx:beforeSwap", () => {
  window.callwatchOpen = Array.from(document.querySelectorAll("main details[open]"), (d) => d.dataset.span || d.querySelector("summary")?.textContent);
});
document.addEventListener("htmx:afterSwap", () => {
  const open = new Set(window.callwatchOpen || []);
  document.querySelectorAll("main details").forEach((d) => {
    if (open.has(d.dataset.span || d.querySelector("summary")?.textContent)) d.open = true;
  });
});

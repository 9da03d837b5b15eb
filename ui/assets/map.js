// callwatch service map: pan, zoom, focus, find and filters on top of the static SVG.
// Without this script the map is a scrollable drawing at its natural size.
"use strict";
(() => {
  // What the user chose, kept across the page's auto-refresh (which swaps the map).
  const kept = { view: null, focus: undefined, depth: null, toggles: null };
  const MIN_SCALE = 0.05;
  const MAX_SCALE = 4;
  const PAN_STEP = 80;

  function setup() {
    const frame = document.querySelector(".map-frame[data-map]");
    const tools = document.querySelector(".map-tools");
    if (!frame || !tools || frame.dataset.live) return;
    frame.dataset.live = "1";
    frame.classList.add("live");
    tools.hidden = false;
    const svg = frame.querySelector("svg.map");
    const view = svg.querySelector("g.view");
    const size = { w: Number(svg.getAttribute("width")), h: Number(svg.getAttribute("height")) };
    // A map shorter than the frame does not leave the frame mostly empty.
    frame.style.height = `${Math.max(320, Math.min(window.innerHeight * 0.74, size.h + 24))}px`;
    const nodes = Array.from(svg.querySelectorAll("a.node"));
    const edges = Array.from(svg.querySelectorAll("a.edge"));
    const byIndex = new Map(nodes.map((n) => [Number(n.dataset.index), n]));
    const out = new Map();
    const into = new Map();
    for (const edge of edges) {
      const from = Number(edge.dataset.from);
      const to = Number(edge.dataset.to);
      if (!out.has(from)) out.set(from, []);
      if (!into.has(to)) into.set(to, []);
      out.get(from).push(to);
      into.get(to).push(from);
    }

    // The view: user space → screen is translate(x, y) scale(k).
    let t = kept.view || start();
    function start() {
      const box = frame.getBoundingClientRect();
      return {
        x: size.w < box.width ? (box.width - size.w) / 2 : 0,
        y: size.h < box.height ? (box.height - size.h) / 2 : 0,
        k: 1,
      };
    }
    function apply() {
      view.setAttribute("transform", `translate(${t.x.toFixed(1)} ${t.y.toFixed(1)}) scale(${t.k.toFixed(4)})`);
      kept.view = t;
    }
    function pan(dx, dy) {
      t = { ...t, x: t.x + dx, y: t.y + dy };
      apply();
    }
    function reset() {
      t = start();
      apply();
    }
    function zoomAt(factor, cx, cy) {
      const k = Math.min(MAX_SCALE, Math.max(MIN_SCALE, t.k * factor));
      t = { k, x: cx - ((cx - t.x) * k) / t.k, y: cy - ((cy - t.y) * k) / t.k };
      apply();
    }
    function zoomCentre(factor) {
      const box = frame.getBoundingClientRect();
      zoomAt(factor, box.width / 2, box.height / 2);
    }
    function fit() {
      const box = frame.getBoundingClientRect();
      const k = Math.min(box.width / size.w, box.height / size.h, 1);
      t = { k, x: (box.width - size.w * k) / 2, y: (box.height - size.h * k) / 2 };
      apply();
    }
    function centreOn(node) {
      const shape = node.querySelector("rect, path").getBBox();
      const box = frame.getBoundingClientRect();
      const k = Math.max(t.k, 1);
      t = { k, x: box.width / 2 - (shape.x + shape.width / 2) * k, y: box.height / 2 - (shape.y + shape.height / 2) * k };
      apply();
    }

    // Focus: a node with its callers and callees to a depth. A topic between a producer
    // and its consumers costs no depth: it is part of the call, not a hop.
    function depthOf(select) {
      return select.value === "all" ? Infinity : Number(select.value);
    }
    function reach(start, links, depth) {
      const seen = new Map([[start, 0]]);
      const queue = [start];
      while (queue.length) {
        const node = queue.shift();
        for (const next of links.get(node) || []) {
          const cost = seen.get(node) + (byIndex.get(next)?.classList.contains("topic") ? 0 : 1);
          if (cost > depth || (seen.has(next) && seen.get(next) <= cost)) continue;
          seen.set(next, cost);
          queue.push(next);
        }
      }
      return seen.keys();
    }
    const depthSelect = tools.querySelector("select.depth");
    const bar = tools.querySelector(".focus-bar");
    const link = bar.querySelector(".focus-link");
    function focus(name) {
      const node = nodes.find((n) => n.dataset.node === name);
      kept.focus = node ? name : null;
      kept.depth = depthSelect.value;
      const url = new URL(window.location.href);
      if (node) {
        const index = Number(node.dataset.index);
        const depth = depthOf(depthSelect);
        const keep = new Set([...reach(index, out, depth), ...reach(index, into, depth)]);
        for (const n of nodes) {
          n.classList.toggle("faded", !keep.has(Number(n.dataset.index)));
          n.classList.toggle("focused", n === node);
        }
        for (const e of edges) {
          e.classList.toggle("faded", !(keep.has(Number(e.dataset.from)) && keep.has(Number(e.dataset.to))));
        }
        link.textContent = name;
        link.href = node.getAttribute("href");
        bar.hidden = false;
        url.searchParams.set("focus", name);
        url.searchParams.set("depth", depthSelect.value);
      } else {
        for (const el of [...nodes, ...edges]) el.classList.remove("faded", "focused");
        bar.hidden = true;
        url.searchParams.delete("focus");
        url.searchParams.delete("depth");
      }
      history.replaceState(null, "", url);
    }

    // Pointers: one drags the map, two pinch it. A drag is not a click.
    const pointers = new Map();
    let moved = 0;
    let pinch = 0;
    const spread = () => {
      const [a, b] = Array.from(pointers.values());
      return Math.hypot(a.x - b.x, a.y - b.y);
    };
    frame.addEventListener("pointerdown", (event) => {
      pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
      if (pointers.size === 1) moved = 0;
      if (pointers.size === 2) pinch = spread();
    });
    frame.addEventListener("pointermove", (event) => {
      const last = pointers.get(event.pointerId);
      if (!last) return;
      const dx = event.clientX - last.x;
      const dy = event.clientY - last.y;
      pointers.set(event.pointerId, { x: event.clientX, y: event.clientY });
      if (pointers.size === 1) {
        moved += Math.abs(dx) + Math.abs(dy);
        if (moved > 4) {
          if (!frame.hasPointerCapture(event.pointerId)) frame.setPointerCapture(event.pointerId);
          frame.classList.add("dragging");
          pan(dx, dy);
        }
      } else if (pointers.size === 2 && pinch > 0) {
        const now = spread();
        const box = frame.getBoundingClientRect();
        const [a, b] = Array.from(pointers.values());
        moved += 5;
        zoomAt(now / pinch, (a.x + b.x) / 2 - box.left, (a.y + b.y) / 2 - box.top);
        pinch = now;
      }
    });
    const release = (event) => {
      pointers.delete(event.pointerId);
      if (pointers.size < 2) pinch = 0;
      if (pointers.size === 0) frame.classList.remove("dragging");
    };
    frame.addEventListener("pointerup", release);
    frame.addEventListener("pointercancel", release);
    frame.addEventListener(
      "click",
      (event) => {
        if (moved > 4) {
          event.preventDefault();
          event.stopPropagation();
          return;
        }
        const node = event.target.closest("a.node");
        if (node) {
          event.preventDefault();
          focus(kept.focus === node.dataset.node ? null : node.dataset.node);
        }
      },
      true,
    );
    // A double click opens the node's page, as a click does without the script.
    frame.addEventListener("dblclick", (event) => {
      const node = event.target.closest("a.node");
      if (node) window.location.href = node.getAttribute("href");
    });
    frame.addEventListener(
      "wheel",
      (event) => {
        event.preventDefault();
        const box = frame.getBoundingClientRect();
        zoomAt(Math.exp(-event.deltaY * 0.0015), event.clientX - box.left, event.clientY - box.top);
      },
      { passive: false },
    );
    frame.addEventListener("keydown", (event) => {
      const keys = {
        ArrowLeft: () => pan(PAN_STEP, 0),
        ArrowRight: () => pan(-PAN_STEP, 0),
        ArrowUp: () => pan(0, PAN_STEP),
        ArrowDown: () => pan(0, -PAN_STEP),
        "+": () => zoomCentre(1.25),
        "=": () => zoomCentre(1.25),
        "-": () => zoomCentre(0.8),
        0: fit,
        1: reset,
        Escape: () => focus(null),
      };
      const action = keys[event.key];
      if (action && !event.ctrlKey && !event.metaKey && !event.altKey) {
        event.preventDefault();
        action();
      }
    });

    const acts = { in: () => zoomCentre(1.25), out: () => zoomCentre(0.8), fit, reset, clear: () => focus(null) };
    for (const button of tools.querySelectorAll("button[data-act]")) {
      button.onclick = () => acts[button.dataset.act]();
    }
    const find = tools.querySelector("input.find");
    find.onchange = () => {
      const wanted = find.value.trim().toLowerCase();
      const node =
        nodes.find((n) => n.dataset.node.toLowerCase() === wanted) ||
        nodes.find((n) => n.dataset.node.toLowerCase().includes(wanted));
      if (wanted && node) {
        focus(node.dataset.node);
        centreOn(node);
      }
    };
    depthSelect.onchange = () => focus(kept.focus);
    const toggles = Array.from(tools.querySelectorAll("input[data-toggle]"));
    if (kept.toggles === null) kept.toggles = {};
    for (const box of toggles) {
      box.checked = Boolean(kept.toggles[box.dataset.toggle]);
      frame.classList.toggle(box.dataset.toggle, box.checked);
      box.onchange = () => {
        kept.toggles[box.dataset.toggle] = box.checked;
        frame.classList.toggle(box.dataset.toggle, box.checked);
      };
    }

    apply();
    depthSelect.value = kept.depth || (["1", "2", "all"].includes(frame.dataset.depth) ? frame.dataset.depth : "1");
    const initial = kept.focus === undefined ? frame.dataset.focus : kept.focus;
    if (initial) focus(initial);
  }

  document.addEventListener("DOMContentLoaded", setup);
  document.addEventListener("htmx:afterSwap", setup);
  if (document.readyState !== "loading") setup();
})();

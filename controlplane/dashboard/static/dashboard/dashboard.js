/*
 * crawlfleet operator dashboard: charts, CSRF for htmx requests, and following logs.
 *
 * Load after htmx and Chart.js, e.g. in <head>:
 *   <meta name="csrf-token" content="{{ csrf_token }}">
 *   <script src="{% static 'dashboard/vendor/htmx.min.js' %}" defer></script>
 *   <script src="{% static 'dashboard/vendor/chart.umd.min.js' %}" defer></script>
 *   <script src="{% static 'dashboard/dashboard.js' %}" defer></script>
 *
 * Charts:  <div class="chart"><canvas data-chart='{"type": "line", "labels": [...],
 *            "datasets": [{"label": "Runs", "data": [...]}], "options": {...}}'></canvas></div>
 *          ("options" is optional and merged over the defaults below.)
 * Logs:    <pre class="log" id="..." data-follow>...</pre>
 */
(function () {
  "use strict";

  /* ---- CSRF: Django accepts the token in the X-CSRFToken header. The token is read on each
     request, not once, so a page whose <meta> was swapped in by htmx still sends the current one.
     htmx only sends requests to this origin (htmx.config.selfRequestsOnly), so it does not leak. */
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta && meta.content) {
      event.detail.headers["X-CSRFToken"] = meta.content;
    }
  });

  /* ---- Charts */

  function cssVar(name, fallback) {
    var value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  function drawCharts(root) {
    if (typeof Chart === "undefined" || !root.querySelectorAll) return;
    var canvases = Array.prototype.slice.call(root.querySelectorAll("canvas[data-chart]"));
    if (root.matches("canvas[data-chart]")) canvases.push(root);
    if (!canvases.length) return;

    // Follow the stylesheet's fonts and palette (and so its dark mode). Grid lines are set on the
    // scales, not via Chart.defaults.borderColor: changing that turns off Chart.js's automatic
    // dataset colours.
    var border = cssVar("--border", "rgba(0,0,0,0.1)");
    Chart.defaults.font.family = cssVar("--font-sans", Chart.defaults.font.family);
    Chart.defaults.color = cssVar("--fg-muted", Chart.defaults.color);
    Chart.defaults.scale.grid.color = border;
    Chart.defaults.scale.border.color = border;

    canvases.forEach(function (canvas) {
      var spec;
      try {
        spec = JSON.parse(canvas.getAttribute("data-chart"));
      } catch (error) {
        console.error("dashboard: bad data-chart JSON", canvas, error);
        return;
      }
      // A canvas can be processed twice (e.g. nested htmx:load events); Chart.js refuses to
      // reuse a canvas that still has a chart.
      var old = Chart.getChart(canvas);
      if (old) old.destroy();
      new Chart(canvas, {
        type: spec.type || "line",
        data: spec.data || { labels: spec.labels || [], datasets: spec.datasets || [] },
        options: Object.assign(
          {
            responsive: true,
            maintainAspectRatio: false, // the .chart container sets the size
            animation: false,           // polled fragments would re-animate on every swap
            interaction: { mode: "index", intersect: false },
          },
          spec.options
        ),
      });
    });
  }

  // Charts on canvases htmx is about to remove would otherwise stay registered in Chart.js,
  // with their resize observers, for the life of the page.
  document.addEventListener("htmx:beforeCleanupElement", function (event) {
    if (typeof Chart === "undefined" || event.target.tagName !== "CANVAS") return;
    var chart = Chart.getChart(event.target);
    if (chart) chart.destroy();
  });

  /* ---- Following logs: a log is kept scrolled to the bottom after swaps unless the user has
     scrolled up in it. The choice and position are remembered by the log's id, so they survive
     a swap that replaces the <pre> itself (give such logs an id). */

  var paused = new Map(); // log id (or element, without an id) -> scrollTop the user left it at

  function logKey(el) {
    return el.id || el;
  }

  // Scroll events do not bubble, so listen in the capture phase.
  document.addEventListener(
    "scroll",
    function (event) {
      var el = event.target;
      if (!(el instanceof Element) || !el.matches("pre.log[data-follow]")) return;
      var atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 24;
      if (atBottom) paused.delete(logKey(el));
      else paused.set(logKey(el), el.scrollTop);
    },
    true
  );

  function followLogs() {
    document.querySelectorAll("pre.log[data-follow]").forEach(function (el) {
      var key = logKey(el);
      // A replaced <pre> starts at the top: put it back where the user was reading.
      el.scrollTop = paused.has(key) ? paused.get(key) : el.scrollHeight;
    });
  }

  /* ---- Wiring. htmx fires htmx:load on <body> once the page is ready and on each element it
     swaps in (including history restores), so one listener covers first paint and updates. */

  document.addEventListener("htmx:load", function (event) {
    drawCharts(event.target);
    followLogs();
  });
  document.addEventListener("htmx:afterSwap", followLogs);

  if (typeof htmx === "undefined") {
    // Without htmx (it failed to load), still draw the page's charts once.
    document.addEventListener("DOMContentLoaded", function () {
      drawCharts(document.body);
      followLogs();
    });
  }
})();

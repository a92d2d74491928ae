"use strict";
(function () {
  var SVGNS = "http://www.w3.org/2000/svg";
  var D = JSON.parse(document.getElementById("psr-data").textContent);
  var main = document.getElementById("psr-main");
  // span: the narrowest heatmap colour range, so that differences far below what matters (0.01 dB) do not
  // fill the whole ramp; a wider spread of the values widens it.
  var METRIC = { psnr: { label: "PSNR", unit: " dB", digits: 2, span: 2 }, ssim: { label: "SSIM", unit: "", digits: 3, span: 0.05 } };
  var PALETTE = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0b7285", "#a61e4d", "#5c940d",
                 "#862e9c", "#d9480f"];
  var DASHES = ["", "6 3", "2 3", "8 3 2 3", "1 2"];

  function h(tag, attrs, children) {
    var el = document.createElement(tag);
    setAll(el, attrs);
    append(el, children);
    return el;
  }
  function s(tag, attrs, children) {
    var el = document.createElementNS(SVGNS, tag);
    setAll(el, attrs);
    append(el, children);
    return el;
  }
  function setAll(el, attrs) {
    Object.keys(attrs || {}).forEach(function (k) {
      var v = attrs[k];
      if (v === null || v === undefined || v === false) return;
      if (k === "text") el.textContent = String(v);
      else if (k === "on") Object.keys(v).forEach(function (e) { el.addEventListener(e, v[e]); });
      else el.setAttribute(k, String(v));
    });
  }
  function append(el, children) {
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) return;
      el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
  }
  function fmt(v, digits) { return (v === null || v === undefined) ? "–" : Number(v).toFixed(digits); }
  function byKey(list, keys) {
    var map = {};
    list.forEach(function (item) { map[keys.map(function (k) { return item[k]; }).join("\u0001")] = item; });
    return function () { return map[Array.prototype.join.call(arguments, "\u0001")]; };
  }
  function colorOf(name) { var i = D.train.indexOf(name); return PALETTE[(i < 0 ? 0 : i) % PALETTE.length]; }

  // Colour ramps: sequential (viridis-like) for values, diverging (blue-white-red) for gains.
  var SEQ = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  var DIV = [[33, 102, 172], [146, 197, 222], [247, 247, 247], [244, 165, 130], [178, 24, 43]];
  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, isFinite(t) ? t : 0.5)) * (stops.length - 1);
    var i = Math.min(Math.floor(t), stops.length - 2), f = t - i;
    var c = stops[i].map(function (a, j) { return Math.round(a + f * (stops[i + 1][j] - a)); });
    return c;
  }
  function css(c) { return "rgb(" + c.join(",") + ")"; }
  function ink(c) { return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) > 140 ? "#111" : "#fff"; }
  function gradient(stops) {
    return "linear-gradient(to right," + stops.map(css).join(",") + ")";
  }

  var state = { metric: "psnr", colour: "value", model: "all" };

  // ------------------------------------------------------------------ header and controls
  var runs = D.runs;
  function distinct(key) {
    return runs.map(function (r) { return r[key]; }).filter(function (v, i, a) { return a.indexOf(v) === i; });
  }
  document.getElementById("psr-summary").textContent =
    runs.length + " runs · models: " + D.models.join(", ") + " · train degradations: " + D.train.join(", ") +
    " · seeds: " + distinct("seed").join(", ") + " · generated " + D.generated;

  function radio(group, value, label, checked, onchange) {
    var input = h("input", { type: "radio", name: group, value: value, checked: checked ? "checked" : null,
                             on: { change: onchange } });
    return h("label", {}, [input, " " + label]);
  }
  var controls = document.getElementById("psr-controls");
  controls.appendChild(h("fieldset", {}, [h("legend", { text: "metric" }),
    radio("metric", "psnr", "PSNR", true, function () { setMetric("psnr"); }), " ",
    radio("metric", "ssim", "SSIM", false, function () { setMetric("ssim"); })]));
  controls.appendChild(h("fieldset", {}, [h("legend", { text: "heatmap colour" }),
    radio("colour", "value", "value", true, function () { state.colour = "value"; paintHeatmaps(); }), " ",
    radio("colour", "gain", "gain over " + D.baseline, false, function () { state.colour = "gain"; paintHeatmaps(); })]));
  var select = h("select", { id: "psr-model", on: { change: function (e) { state.model = e.target.value; filterModels(); } } },
    [h("option", { value: "all", text: "all models" })].concat(D.models.map(function (m) {
      return h("option", { value: m, text: m });
    })));
  controls.appendChild(h("fieldset", {}, [h("legend", { text: "model" }), select]));
  function setMetric(m) { state.metric = m; document.body.setAttribute("data-metric", m); }
  function filterModels() {
    document.querySelectorAll("[data-model-block]").forEach(function (el) {
      el.hidden = state.model !== "all" && el.getAttribute("data-model-block") !== state.model;
    });
  }

  function section(id, title, intro) {
    var sec = h("section", { id: id }, [h("h2", { text: title })]);
    if (intro) sec.appendChild(h("p", { class: "note", text: intro }));
    main.appendChild(sec);
    return sec;
  }
  function missingNote(parent, key, what) {
    var names = D.missing[key];
    if (!names.length) return;
    var all = names.length === runs.length;
    parent.appendChild(h("p", { class: "note missing", "data-missing": key,
      text: (all ? "No run has " : names.length + " of " + runs.length + " runs have no ") + what +
            (all ? "." : ": " + names.join(", ") + ".") }));
  }

  if (D.skipped.length) {
    var box = h("div", { class: "warn", id: "psr-skipped" }, [h("strong", {
      text: D.skipped.length + " run(s) left out of this report (summary.json unreadable or missing):" })]);
    box.appendChild(h("ul", {}, D.skipped.map(function (sk) {
      return h("li", { class: "skipped", text: sk.path + ": " + sk.reason });
    })));
    main.appendChild(box);
  }
  if (D.notes.length) {
    main.appendChild(h("div", { class: "warn" }, [h("ul", {}, D.notes.map(function (n) { return h("li", { text: n }); }))]));
  }

  // ------------------------------------------------------------------ heatmaps
  var heatSec = section("ablation", "Degradation ablation: train × test",
    "Rows: the degradation a model was trained on; columns: the degradation it was tested on (cross-evaluation) " +
    "and real image pairs (italic). Each cell is the mean over seeds, under it ± the standard deviation over seeds " +
    "and the number of runs (hover for each seed's value). The diagonal is " +
    "outlined; the last row is the " + D.baseline + " baseline on the same test images.");
  missingNote(heatSec, "cross_eval", "cross-evaluation results (cross_eval in summary.json; train with " +
    "cross_eval.crappifiers=[...] or experiment=degradation_ablation)");
  missingNote(heatSec, "real_eval", "real-pair results (real_eval in summary.json; train with cross_eval.real_pairs=[...])");
  var heatCells = [];
  ["psnr", "ssim"].forEach(function (metric) {
    var M = METRIC[metric], HM = D.heatmap[metric];
    var view = h("div", { class: "metric-view", "data-metric": metric });
    if (!D.columns.length || !HM.cells.length) {
      view.appendChild(h("p", { class: "note", text: "No " + M.label + " heatmap: no run of this folder has cross_eval or real_eval results." }));
      heatSec.appendChild(view);
      return;
    }
    var cellOf = byKey(HM.cells, ["model", "train", "test"]);
    var baseOf = byKey(HM.baseline, ["model", "test"]);
    var legend = h("div", { class: "legend", "data-legend": metric });
    view.appendChild(legend);
    var wrap = h("div", { class: "heatmaps" });
    D.models.forEach(function (model) {
      var table = h("table", { class: "heatmap", "data-model": model, "data-metric": metric });
      var head = h("tr", {}, [h("th", { class: "row", text: "train ↓  test →" })]);
      D.columns.forEach(function (c) {
        head.appendChild(h("th", { class: c.kind === "real" ? "real" : null, text: c.name,
                                   title: c.kind === "real" ? "real image pairs" : "synthetic degradation" }));
      });
      table.appendChild(h("thead", {}, [head]));
      var body = h("tbody");
      function addCell(tr, cell, base, train, c, isBase) {
        var td = h("td", { class: "cell" + (isBase ? " baseline" : ""), "data-model": model,
                           "data-train": isBase ? D.baseline : train, "data-test": c.name, "data-kind": c.kind,
                           "data-metric": metric, "data-role": isBase ? "baseline" : "model" });
        if (!cell) {
          td.classList.add("empty");
          td.setAttribute("data-value", "");
          td.textContent = "–";
          td.title = "no result";
        } else {
          td.setAttribute("data-value", String(cell.mean));
          td.setAttribute("data-n", String(cell.n));
          td.textContent = fmt(cell.mean, M.digits);
          // The spread over seeds, drawn under the mean by CSS (the cell's text stays the mean alone).
          if (cell.n > 1) td.setAttribute("data-spread", "± " + fmt(cell.std, M.digits) + " (n=" + cell.n + ")");
          var tip = (isBase ? D.baseline + " baseline" : model + " trained on " + train) + ", tested on " + c.name +
            ": " + M.label + " " + fmt(cell.mean, M.digits) + M.unit + " ± " + fmt(cell.std, M.digits) +
            " (n=" + cell.n + ": " + cell.values.map(function (v) { return fmt(v, M.digits); }).join(", ") + ")";
          if (!isBase && base) tip += "; gain " + (cell.mean - base.mean >= 0 ? "+" : "") + fmt(cell.mean - base.mean, M.digits);
          td.title = tip;
          heatCells.push({ td: td, metric: metric, value: cell.mean, gain: base ? cell.mean - base.mean : (isBase ? 0 : null) });
        }
        if (!isBase && train === c.name && c.kind === "synthetic") td.classList.add("diag");
        tr.appendChild(td);
      }
      D.train.forEach(function (train) {
        var tr = h("tr", {}, [h("th", { class: "row", text: train })]);
        D.columns.forEach(function (c) { addCell(tr, cellOf(model, train, c.key), baseOf(model, c.key), train, c, false); });
        body.appendChild(tr);
      });
      var btr = h("tr", { class: "baseline-row" }, [h("th", { class: "row", text: D.baseline + " (no training)" })]);
      D.columns.forEach(function (c) { addCell(btr, baseOf(model, c.key), null, null, c, true); });
      body.appendChild(btr);
      table.appendChild(body);
      wrap.appendChild(h("div", { "data-model-block": model }, [h("h3", { text: model + " · " + M.label }), table]));
    });
    view.appendChild(wrap);
    heatSec.appendChild(view);
  });
  function paintHeatmaps() {
    ["psnr", "ssim"].forEach(function (metric) {
      var mine = heatCells.filter(function (c) { return c.metric === metric; });
      var legend = document.querySelector('[data-legend="' + metric + '"]');
      if (!mine.length || !legend) return;
      var gain = state.colour === "gain";
      var vals = mine.map(function (c) { return gain ? c.gain : c.value; }).filter(function (v) { return v !== null; });
      if (!vals.length) vals = [0, 1];  // nothing to colour by (no baseline figures for gains)
      var M = METRIC[metric];
      var lo = Math.min.apply(null, vals), hi = Math.max.apply(null, vals);
      var widened = hi - lo < M.span;
      if (gain) { hi = Math.max(Math.abs(lo), Math.abs(hi), M.span / 2); lo = -hi; }
      else if (widened) { var mid = (lo + hi) / 2; lo = mid - M.span / 2; hi = mid + M.span / 2; }
      var stops = gain ? DIV : SEQ;
      mine.forEach(function (c) {
        var v = gain ? c.gain : c.value;
        if (v === null) { c.td.style.background = "#f2f4f7"; c.td.style.color = "#667085"; return; }
        var col = ramp(stops, hi > lo ? (v - lo) / (hi - lo) : 0.5);
        c.td.style.background = css(col);
        c.td.style.color = ink(col);
      });
      legend.textContent = "";
      legend.setAttribute("data-lo", String(lo));
      legend.setAttribute("data-hi", String(hi));
      append(legend, [gain ? "gain over " + D.baseline + " " : M.label + " ", h("span", { text: fmt(lo, M.digits) }),
        h("span", { class: "ramp", style: "background:" + gradient(stops) }), h("span", { text: fmt(hi, M.digits) + M.unit }),
        " (one colour scale for all models; it spans at least " + fmt(M.span, M.digits) + M.unit +
        ", so smaller differences look alike" + (gain ? ", white = no gain" : "") + ")"]);
    });
  }
  paintHeatmaps();

  // ------------------------------------------------------------------ axes helpers
  function ticks(lo, hi, count) {
    if (!(hi > lo)) { var pad = Math.abs(lo) * 0.05 || 1; lo -= pad; hi += pad; }
    var raw = (hi - lo) / Math.max(1, count), mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; }).find(function (st) { return st >= raw; });
    var start = Math.floor(lo / step) * step, end = Math.ceil(hi / step) * step, out = [];
    for (var v = start; v <= end + step * 1e-9; v += step) out.push(Number(v.toFixed(10)));
    return { lo: start, hi: end, ticks: out, step: step };
  }
  function tickLabel(v, step) { var d = (String(Number(step.toFixed(10))).split(".")[1] || "").length; return v.toFixed(Math.min(d, 4)); }
  // A y axis starts at 0 (every bar chart does), or it is drawn broken: a gap and two slashes at its foot,
  // and the lowest tick labelled, so that a truncated axis never passes for a full one.
  function frame(W, H, m, yr, ylabel) {
    var broken = yr.lo > 0;
    var svg = s("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img", "data-y-from": yr.lo,
      "data-y-broken": broken ? "true" : "false" });
    var y = function (v) { return m.t + (H - m.t - m.b) * (1 - (v - yr.lo) / (yr.hi - yr.lo)); };
    var grid = s("g", { class: "grid" }), axis = s("g", { class: "axis" });
    yr.ticks.forEach(function (t) {
      grid.appendChild(s("line", { x1: m.l, x2: W - m.r, y1: y(t), y2: y(t) }));
      axis.appendChild(s("text", { x: m.l - 6, y: y(t) + 4, "text-anchor": "end", text: tickLabel(t, yr.step) }));
    });
    var foot = H - m.b;
    axis.appendChild(s("line", { x1: m.l, x2: m.l, y1: m.t, y2: broken ? foot - 12 : foot }));
    axis.appendChild(s("line", { x1: m.l, x2: W - m.r, y1: foot, y2: foot }));
    if (broken) {
      var mark = s("g", { class: "axis-break" }, [s("title", { text: "axis broken: it starts at " + tickLabel(yr.lo, yr.step) + ", not 0" })]);
      [-11, -6].forEach(function (dy) {
        mark.appendChild(s("line", { x1: m.l - 5, x2: m.l + 5, y1: foot + dy + 3, y2: foot + dy - 3, stroke: "#344054", "stroke-width": 1.5 }));
      });
      mark.appendChild(s("line", { x1: m.l, x2: m.l, y1: foot - 5, y2: foot }));
      axis.appendChild(mark);
    }
    axis.appendChild(s("text", { x: 12, y: m.t + (H - m.t - m.b) / 2, "text-anchor": "middle",
      transform: "rotate(-90 12 " + (m.t + (H - m.t - m.b) / 2) + ")", text: ylabel }));
    svg.appendChild(grid);
    svg.appendChild(axis);
    return { svg: svg, y: y };
  }
  function keyRow(items) {
    return h("div", { class: "keys" }, items.map(function (it) {
      var mark = s("svg", { width: 22, height: 8, class: "swatch-line" }, [s("line", { x1: 0, x2: 22, y1: 4, y2: 4,
        stroke: it.color, "stroke-width": it.width || 2.5, "stroke-dasharray": it.dash || null })]);
      return h("span", {}, [mark, " " + it.label]);
    }));
  }
  var BASE_COLOR = "#495057";

  // ------------------------------------------------------------------ bars
  var barSec = section("bars", "Models over seeds",
    "Bar: mean over seeds; whisker: min–max over seeds; dots: the seeds. Dark tick: the " + D.baseline +
    " baseline on the same images; on gain charts the baseline is the 0 line. Every bar axis starts at 0. " +
    "Grouped by training degradation, one colour per model.");
  // gain: the values are differences to the baseline, which is then the zero line.
  function barChart(metric, list, baseList, title, gain) {
    var M = METRIC[metric];
    if (!list.length) return h("p", { class: "note", text: title + ": no data." });
    var at = byKey(list, ["model", "train"]), baseAt = byKey(baseList || [], ["model", "train"]);
    var lows = [0], highs = [0];
    list.concat(baseList || []).forEach(function (c) { lows.push(c.min); highs.push(c.max); });
    var lo = Math.min.apply(null, lows), hi = Math.max.apply(null, highs), pad = (hi - lo) * 0.06;
    var yr = ticks(lo < 0 ? lo - pad : 0, hi > 0 ? hi + pad : 0, 5);
    var groups = D.train.filter(function (t) { return D.models.some(function (m) { return at(m, t); }); });
    var bw = 22, gap = 8, gw = Math.max(74, D.models.length * (bw + 4) + gap * 2);  // room for the group's name
    var m = { l: 52, r: gain ? 64 : 10, t: 10, b: 44 }, W = Math.max(260, m.l + m.r + groups.length * gw), H = 250;
    var ylabel = gain ? "gain over " + D.baseline + (M.unit ? " (" + M.unit.trim() + ")" : "") : M.label + M.unit;
    var F = frame(W, H, m, yr, ylabel), svg = F.svg, zero = F.y(0);
    var palette = function (model) { return PALETTE[D.models.indexOf(model) % PALETTE.length]; };
    groups.forEach(function (train, gi) {
      var gx = m.l + gi * gw + gap;
      svg.appendChild(s("text", { x: gx + gw / 2 - gap, y: H - m.b + 16, "text-anchor": "middle", text: train }));
      D.models.forEach(function (model, mi) {
        var c = at(model, train); if (!c) return;
        var x = gx + mi * (bw + 4), g = s("g", { class: "bar", "data-model": model, "data-train": train,
          "data-metric": metric, "data-value": c.mean, "data-kind": gain ? "gain" : "value" });
        var what = gain ? "gain over " + D.baseline + " " : "";
        g.appendChild(s("rect", { x: x, y: Math.min(zero, F.y(c.mean)), width: bw, height: Math.abs(zero - F.y(c.mean)),
          fill: palette(model), opacity: 0.8, "data-from": 0 }, [s("title", { text: model + " on " + train + ": " + what +
          fmt(c.mean, M.digits) + M.unit + " (n=" + c.n + ", min " + fmt(c.min, M.digits) + ", max " + fmt(c.max, M.digits) + ")" })]));
        g.appendChild(s("line", { x1: x + bw / 2, x2: x + bw / 2, y1: F.y(c.min), y2: F.y(c.max), stroke: "#111", "stroke-width": 1.5 }));
        [c.min, c.max].forEach(function (v) {
          g.appendChild(s("line", { x1: x + bw / 2 - 5, x2: x + bw / 2 + 5, y1: F.y(v), y2: F.y(v), stroke: "#111", "stroke-width": 1.5 }));
        });
        c.values.forEach(function (v) { g.appendChild(s("circle", { cx: x + bw / 2, cy: F.y(v), r: 2.5, fill: "#fff", stroke: "#111" })); });
        var b = baseAt(model, train);
        if (b) {
          g.appendChild(s("line", { x1: x - 3, x2: x + bw + 3, y1: F.y(b.mean), y2: F.y(b.mean), stroke: "#fff", "stroke-width": 5 }));
          g.appendChild(s("line", { class: "baseline-tick", x1: x - 3, x2: x + bw + 3, y1: F.y(b.mean), y2: F.y(b.mean),
            stroke: BASE_COLOR, "stroke-width": 2.5 }, [s("title", { text: D.baseline + " baseline: " + fmt(b.mean, M.digits) + M.unit })]));
        }
        svg.appendChild(g);
      });
    });
    if (gain) {
      svg.appendChild(s("line", { class: "baseline-zero", x1: m.l, x2: W - m.r, y1: zero, y2: zero, stroke: BASE_COLOR,
        "stroke-width": 2 }, [s("title", { text: D.baseline + " baseline: gain 0" })]));
      svg.appendChild(s("text", { x: W - m.r + 4, y: zero + 4, text: "= " + D.baseline }));
    }
    var chart = h("div", { class: "chart", "data-chart": gain ? "gain" : "value" }, [h("h3", { text: title }), svg]);
    var keys = D.models.map(function (model) { return { label: model, color: palette(model) }; });
    if (gain || (baseList && baseList.length)) keys.push({ label: D.baseline + " baseline" + (gain ? " (0)" : ""), color: BASE_COLOR });
    chart.appendChild(keyRow(keys));
    return chart;
  }
  ["psnr", "ssim"].forEach(function (metric) {
    var B = D.bars[metric], M = METRIC[metric];
    var view = h("div", { class: "metric-view charts", "data-metric": metric });
    view.appendChild(barChart(metric, B.val, B.val_baseline, "Best validation " + M.label + " (own degradation)", false));
    view.appendChild(barChart(metric, B.gain, null, "Gain in " + M.label + " over " + D.baseline + " (best validation epoch)", true));
    if (B.cross.length) view.appendChild(barChart(metric, B.cross, B.cross_baseline, "Cross-evaluation " + M.label + ", mean over test degradations", false));
    barSec.appendChild(view);
  });

  // ------------------------------------------------------------------ learning curves
  var curveSec = section("curves", "Learning curves",
    "Validation metric per epoch, one line per run: colour = training degradation, dash = seed; the dot marks the best epoch. " +
    "The wide pale line in the same colour is the " + D.baseline + " baseline on that degradation's validation pairs. " +
    "Metric axes that do not start at 0 are drawn broken (two slashes at the foot); loss axes start at 0.");
  missingNote(curveSec, "history", "learning curves (history in summary.json)");
  var seeds = distinct("seed");
  function curveChart(model, key, title, ylabel, bestKey, baseKey, fromZero) {
    var mine = runs.filter(function (r) { return r.label === model && r.history && r.history.some(function (p) { return p[key] !== undefined; }); });
    if (!mine.length) return null;
    var xs = [], ys = [];
    mine.forEach(function (r) {
      r.history.forEach(function (p) {
        if (p[key] !== undefined) { xs.push(p.epoch); ys.push(p[key]); }
        if (baseKey && p[baseKey] !== undefined) ys.push(p[baseKey]);
      });
    });
    var ylo = Math.min.apply(null, ys), yhi = Math.max.apply(null, ys);
    var yr = ticks(fromZero ? Math.min(0, ylo) : ylo - (yhi - ylo) * 0.08, yhi, 5);
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs); if (x1 === x0) x1 = x0 + 1;
    var m = { l: 52, r: 12, t: 10, b: 34 }, W = 420, H = 240;
    var F = frame(W, H, m, yr, ylabel), svg = F.svg;
    var x = function (v) { return m.l + (W - m.l - m.r) * (v - x0) / (x1 - x0); };
    var xt = ticks(x0, x1, 6);
    xt.ticks.filter(function (t) { return t >= x0 && t <= x1 && Math.abs(t - Math.round(t)) < 1e-9; }).forEach(function (t) {
      svg.appendChild(s("text", { x: x(t), y: H - m.b + 14, "text-anchor": "middle", text: String(t) }));
    });
    svg.appendChild(s("text", { x: (m.l + W - m.r) / 2, y: H - 4, "text-anchor": "middle", text: "epoch" }));
    var drawn = {};  // runs with the same validation pairs (seeds of a degradation, often) share one baseline line
    mine.forEach(function (r) {
      var pts = baseKey ? r.history.filter(function (p) { return p[baseKey] !== undefined; }) : [];
      var id = r.crappifier + "|" + pts.map(function (p) { return p.epoch + ":" + p[baseKey].toFixed(6); }).join(",");
      if (!pts.length || drawn[id]) return;
      drawn[id] = true;
      svg.appendChild(s("polyline", { class: "baseline-curve", "data-key": baseKey, "data-train": r.crappifier, fill: "none",
        stroke: colorOf(r.crappifier), "stroke-width": 6, "stroke-opacity": 0.28, "stroke-linecap": "round",
        points: pts.map(function (p) { return x(p.epoch).toFixed(1) + "," + F.y(p[baseKey]).toFixed(1); }).join(" ") },
        [s("title", { text: D.baseline + " baseline on " + r.crappifier + ": " + fmt(pts[pts.length - 1][baseKey], 3) })]));
    });
    mine.forEach(function (r) {
      var pts = r.history.filter(function (p) { return p[key] !== undefined; });
      var color = colorOf(r.crappifier), dash = DASHES[Math.max(0, seeds.indexOf(r.seed)) % DASHES.length];
      svg.appendChild(s("polyline", { class: "curve", "data-run": r.name, "data-key": key, fill: "none", stroke: color,
        "stroke-width": 1.6, "stroke-dasharray": dash || null,
        points: pts.map(function (p) { return x(p.epoch).toFixed(1) + "," + F.y(p[key]).toFixed(1); }).join(" ") },
        [s("title", { text: r.name + " (" + r.crappifier + ", seed " + r.seed + ")" })]));
      if (bestKey && r.best && r.best.epoch !== undefined && r.best[key] !== undefined) {
        svg.appendChild(s("circle", { cx: x(r.best.epoch), cy: F.y(r.best[key]), r: 3.2, fill: color },
          [s("title", { text: r.name + ": best " + fmt(r.best[key], 3) + " at epoch " + r.best.epoch })]));
      }
    });
    var chart = h("div", { class: "chart" }, [h("h3", { text: model + " · " + title }), svg]);
    if (!baseKey) chart.appendChild(h("p", { class: "note", text: "No baseline here: the " + D.baseline + " baseline has no training loss." }));
    return chart;
  }
  var crapKeys = keyRow(D.train.map(function (t) { return { label: "trained on " + t, color: colorOf(t) }; })
    .concat(seeds.map(function (sd, i) { return { label: "seed " + sd, color: "#444", dash: DASHES[i % DASHES.length] }; }))
    .concat([{ label: D.baseline + " baseline", color: "rgba(73,80,87,0.35)", width: 6 }]));
  curveSec.appendChild(crapKeys);
  var anyCurve = false;
  ["psnr", "ssim"].forEach(function (metric) {
    var view = h("div", { class: "metric-view", "data-metric": metric });
    D.models.forEach(function (model) {
      var row = h("div", { class: "charts", "data-model-block": model });
      var a = curveChart(model, "val/" + metric, "val/" + metric, METRIC[metric].label + METRIC[metric].unit, true,
        "val/baseline_" + metric, false);
      var b = curveChart(model, "train/loss", "train/loss", "train loss", false, null, true);
      if (a) row.appendChild(a);
      if (b) row.appendChild(b);
      if (a || b) { view.appendChild(row); anyCurve = true; }
    });
    curveSec.appendChild(view);
  });
  if (!anyCurve) curveSec.appendChild(h("p", { class: "note", text: "No learning curves to draw." }));

  // ------------------------------------------------------------------ panels
  var panelSec = section("panels", "Validation panels (last epoch)",
    "Each panel: input (nearest) | prediction | target | baseline, with each row's PSNR / SSIM and grey range.");
  missingNote(panelSec, "panel", "validation panels (panels/val_epoch*.png)");
  var grid = h("div", { class: "panels" });
  runs.forEach(function (r) {
    if (!r.panel) return;
    grid.appendChild(h("figure", { "data-model-block": r.label }, [
      h("img", { src: r.panel, alt: r.name + " " + r.panel_name, loading: "lazy" }),
      h("figcaption", { text: r.label + " · " + r.crappifier + " · seed " + r.seed + " · " + r.panel_name })]));
  });
  panelSec.appendChild(grid);

  // ------------------------------------------------------------------ runs table
  var tableSec = section("runs", "Runs", "Click a column to sort. Best = the epoch with the best monitored metric.");
  var cols = [
    ["run", function (r) { return r.name; }, null], ["model", function (r) { return r.label; }, null],
    ["train degradation", function (r) { return r.crappifier; }, null], ["seed", function (r) { return r.seed; }, 0],
    ["scale", function (r) { return r.scale; }, 0], ["best epoch", function (r) { return r.best.epoch; }, 0],
    ["val PSNR", function (r) { return r.best["val/psnr"]; }, 2], ["val SSIM", function (r) { return r.best["val/ssim"]; }, 3],
    [D.baseline + " PSNR", function (r) { return r.best["val/baseline_psnr"]; }, 2],
    [D.baseline + " SSIM", function (r) { return r.best["val/baseline_ssim"]; }, 3],
    ["gain (dB)", function (r) { return r.gain_db; }, 2], ["steps", function (r) { return r.steps; }, 0],
    ["epochs", function (r) { return r.epochs; }, 0], ["wall time (s)", function (r) { return r.wall_time_s; }, 1]
  ];
  var tbody = h("tbody"), sortState = { col: -1, dir: 1 };
  var headRow = h("tr", {}, cols.map(function (c, i) {
    return h("th", { text: c[0], on: { click: function () { sortBy(i); } } });
  }));
  function fill(list) {
    tbody.textContent = "";
    list.forEach(function (r) {
      tbody.appendChild(h("tr", { "data-run": r.name, "data-model-block": r.label }, cols.map(function (c) {
        var v = c[1](r);
        var num = c[2] !== null;
        return h("td", { class: num ? "num" : null, text: num ? (v === null || v === undefined ? "–" : Number(v).toFixed(c[2])) : (v === null || v === undefined ? "–" : String(v)) });
      })));
    });
    filterModels();
  }
  function sortBy(i) {
    sortState.dir = sortState.col === i ? -sortState.dir : 1;
    sortState.col = i;
    var get = cols[i][1];
    fill(runs.slice().sort(function (a, b) {
      var x = get(a), y = get(b);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sortState.dir;
    }));
    headRow.querySelectorAll("th").forEach(function (th, j) {
      th.className = j === i ? (sortState.dir > 0 ? "sorted-asc" : "sorted-desc") : "";
    });
  }
  tableSec.appendChild(h("div", { class: "runs-wrap" }, [h("table", { class: "runs" }, [h("thead", {}, [headRow]), tbody])]));
  fill(runs);

  // ------------------------------------------------------------------ task-based evaluation (segmentation)
  if (D.segmentation && D.segmentation.length) {
    var segSec = section("segmentation", "Task-based evaluation: segmentation",
      "evaluate.py task=segment: a segmentation model on the high-quality image, the raw low-quality one, its " +
      "restoration and the classical filters, scored against the reference (labels or the high-quality " +
      "segmentation). Recovered: the share of the IoU gap between raw and high quality that a method closes; " +
      "the best classical filter in bold.");
    var segCols = [["evaluation", "evaluation", null], ["reference", "reference", null], ["method", "method", null],
      ["images", "n", 0], ["IoU", "iou", 3], ["Dice", "dice", 3], ["recovered", "recovered", -1],
      ["F1@0.5", "f1", 3], ["AP@0.5", "ap", 3]];
    segSec.appendChild(h("div", { class: "runs-wrap" }, [h("table", { class: "runs segmentation" }, [
      h("thead", {}, [h("tr", {}, segCols.map(function (c) { return h("th", { text: c[0] }); }))]),
      h("tbody", {}, D.segmentation.map(function (r) {
        return h("tr", { "data-evaluation": r.evaluation, "data-method": r.method,
                         class: r.best_classical ? "best" : null }, segCols.map(function (c) {
          var v = r[c[1]];
          if (c[2] === null) return h("td", { text: v === null || v === undefined ? "–" : String(v) });
          if (c[2] < 0) return h("td", { class: "num", text: v === null || v === undefined ? "–" : Math.round(100 * v) + " %" });
          return h("td", { class: "num", text: fmt(v, c[2]) });
        }));
      }))])]));
  }
  document.body.setAttribute("data-rendered", "true");
})();

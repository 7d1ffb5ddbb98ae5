// Charts drawn as inline SVG by hand: small line charts of vital signs,
// horizontal bar charts for the shift's numbers, and a plan of GPS fixes
// around home (no map tiles). Each chart is an <svg role="img"> with a
// text summary for screen readers and text labels on the drawing.
"use strict";
(function () {
  const EC = window.EC;
  const S = EC.svg;
  const t = EC.t;
  const charts = (EC.charts = {});

  function frame(w, h, label) {
    return S("svg", {
      viewBox: "0 0 " + w + " " + h,
      role: "img",
      "aria-label": label,
      class: "chart",
      preserveAspectRatio: "xMinYMin meet",
    });
  }
  const r1 = (x) => Math.round(x * 10) / 10;

  /**
   * A small line chart over time.
   * o: {label, unit, series: [{name, points: [[ms, value]...], cls}],
   *     from, to, band: [lo, hi] (normal range, shaded), marker (ms of the
   *     alert), fmt (value -> text), digits}
   */
  charts.line = function (o) {
    const W = 256;
    const H = 112;
    const L = 30;
    const R = 48;
    const T = 20;
    const B = 18;
    const pw = W - L - R;
    const ph = H - T - B;
    const fmtv = o.fmt || ((v) => EC.fmtNum(v, o.digits === undefined ? 0 : o.digits));
    const all = [];
    for (const s of o.series) for (const p of s.points) all.push(p[1]);
    // The newest reading of any series (band or bed sensor).
    let last = null;
    for (const s of o.series) {
      const p = s.points[s.points.length - 1];
      if (p && (!last || p[0] > last[0])) last = p;
    }

    let summary;
    if (!all.length) summary = t("chart.noData", { label: o.label });
    else {
      const parts = o.series
        .filter((s) => s.points.length)
        .map((s) => {
          const vs = s.points.map((p) => p[1]);
          const lp = s.points[s.points.length - 1];
          return t("chart.lineSummary", {
            name: s.name || o.label,
            last: fmtv(lp[1]),
            unit: o.unit,
            at: EC.fmtHM(lp[0]),
            min: fmtv(Math.min(...vs)),
            max: fmtv(Math.max(...vs)),
            n: vs.length,
          });
        });
      summary = o.label + ": " + parts.join("; ");
    }
    const svg = frame(W, H, summary);
    svg.append(S("title", { text: summary }));
    svg.append(S("text", { x: 2, y: 13, class: "c-title", text: o.label + (o.unit ? " (" + o.unit + ")" : "") }));

    // Scale
    let lo = Math.min(...all, ...(o.band || []));
    let hi = Math.max(...all, ...(o.band || []));
    if (!Number.isFinite(lo) || !Number.isFinite(hi)) {
      lo = 0;
      hi = 1;
    }
    if (hi - lo < 1e-9) {
      hi += 1;
      lo -= 1;
    }
    const pad = (hi - lo) * 0.12;
    lo -= pad;
    hi += pad;
    const span = Math.max(1, o.to - o.from);
    const x = (ms) => r1(L + ((ms - o.from) / span) * pw);
    const y = (v) => r1(T + (1 - (v - lo) / (hi - lo)) * ph);

    svg.append(S("rect", { x: L, y: T, width: pw, height: ph, class: "c-plot" }));
    if (o.band) {
      const y1 = y(o.band[1]);
      const y0 = y(o.band[0]);
      svg.append(S("rect", { x: L, y: y1, width: pw, height: Math.max(0, y0 - y1), class: "c-band" }));
    }
    // Axes labels: value range, then times.
    svg.append(S("text", { x: L - 4, y: T + 8, class: "c-axis", "text-anchor": "end", text: fmtv(hi - pad) }));
    svg.append(S("text", { x: L - 4, y: T + ph, class: "c-axis", "text-anchor": "end", text: fmtv(lo + pad) }));
    const mid = o.from + span / 2;
    svg.append(S("text", { x: L, y: H - 5, class: "c-axis", text: EC.fmtHM(o.from) }));
    svg.append(S("text", { x: x(mid), y: H - 5, class: "c-axis", "text-anchor": "middle", text: EC.fmtHM(mid) }));
    svg.append(S("text", { x: L + pw, y: H - 5, class: "c-axis", "text-anchor": "end", text: EC.fmtHM(o.to) }));

    if (Number.isFinite(o.marker) && o.marker >= o.from && o.marker <= o.to) {
      svg.append(S("line", { x1: x(o.marker), x2: x(o.marker), y1: T, y2: T + ph, class: "c-marker" }));
      // The label on the side with room: left of the line near the right edge.
      const right = x(o.marker) > L + pw * 0.75;
      svg.append(
        S("text", {
          x: x(o.marker) + (right ? -3 : 3),
          y: T + 9,
          class: "c-marker-label",
          "text-anchor": right ? "end" : "start",
          text: t("chart.alert"),
        }),
      );
    }

    if (!all.length) {
      svg.append(S("text", { x: L + pw / 2, y: T + ph / 2 + 4, class: "c-empty", "text-anchor": "middle", text: t("chart.none") }));
      return svg;
    }

    // Lines, broken where readings stop for more than 5 minutes.
    o.series.forEach((s, i) => {
      const cls = "c-line " + (s.cls || "s" + i);
      let run = [];
      const flush = () => {
        if (run.length > 1) svg.append(S("polyline", { points: run.join(" "), class: cls }));
        else if (run.length === 1) {
          const [px, py] = run[0].split(",");
          svg.append(S("circle", { cx: px, cy: py, r: 1.8, class: "c-dot " + (s.cls || "s" + i) }));
        }
        run = [];
      };
      let prev = null;
      for (const [ms, v] of s.points) {
        if (prev !== null && ms - prev > 5 * 60 * 1000) flush();
        run.push(x(ms) + "," + y(v));
        prev = ms;
      }
      flush();
      if (s.points.length) {
        const lp = s.points[s.points.length - 1];
        svg.append(S("circle", { cx: x(lp[0]), cy: y(lp[1]), r: 3, class: "c-last " + (s.cls || "s" + i) }));
      }
    });
    // The latest value, large, at the right.
    if (last) {
      // Blood pressure reads as one value, systolic/diastolic.
      const lastText = o.joinLast
        ? o.series
            .filter((s) => s.points.length)
            .map((s) => fmtv(s.points[s.points.length - 1][1]))
            .join("/")
        : fmtv(last[1]);
      const out = o.band && (last[1] < o.band[0] || last[1] > o.band[1]);
      svg.append(S("text", { x: W - 2, y: T + 20, class: "c-value" + (out ? " c-out" : ""), "text-anchor": "end", text: lastText }));
      svg.append(S("text", { x: W - 2, y: T + 36, class: "c-axis", "text-anchor": "end", text: EC.fmtHM(last[0]) }));
    }
    return svg;
  };

  /**
   * Horizontal bars with labels and values as text.
   * o: {title, items: [{label, value, text, cls}], max, targets: [{value, label}],
   *     unitFmt: value -> axis text}
   */
  charts.bars = function (o) {
    const W = 480;
    const labelW = o.labelW || 150;
    const valueW = o.valueW || 90;
    const rowH = 26;
    const top = o.targets && o.targets.length ? 34 : 12;
    const H = top + Math.max(1, o.items.length) * rowH + 8;
    const pw = W - labelW - valueW;
    const max = Math.max(
      o.max || 0,
      ...o.items.map((i) => i.value),
      ...o.items.map((i) => (Number.isFinite(i.target) ? i.target * 1.1 : 0)),
      1e-9,
    );
    const summary =
      o.title +
      ": " +
      (o.items.length ? o.items.map((i) => i.label + " " + i.text).join(", ") : t("chart.none")) +
      (o.targets && o.targets.length ? ". " + o.targets.map((g) => g.label).join(", ") : "");
    const svg = frame(W, H, summary);
    svg.append(S("title", { text: summary }));
    const x = (v) => r1(labelW + (Math.max(0, v) / max) * pw);
    if (!o.items.length) {
      svg.append(S("text", { x: W / 2, y: top + 14, class: "c-empty", "text-anchor": "middle", text: t("chart.none") }));
    }
    o.items.forEach((it, i) => {
      const yy = top + i * rowH;
      svg.append(S("text", { x: labelW - 8, y: yy + 17, class: "c-label", "text-anchor": "end", text: it.label }));
      svg.append(S("rect", { x: labelW, y: yy + 4, width: pw, height: rowH - 8, class: "c-track" }));
      const wv = Math.max(it.value > 0 ? 2 : 0, x(it.value) - labelW);
      svg.append(S("rect", { x: labelW, y: yy + 4, width: wv, height: rowH - 8, class: "c-bar " + (it.cls || "") }));
      svg.append(S("text", { x: labelW + pw + 6, y: yy + 17, class: "c-label c-num", text: it.text }));
      if (Number.isFinite(it.target)) {
        // This row's own target: a tick across the bar.
        const gx = x(it.target);
        svg.append(S("line", { x1: gx, x2: gx, y1: yy + 1, y2: yy + rowH - 1, class: "c-target" }));
      }
    });
    for (const g of o.targets || []) {
      const gx = x(g.value);
      svg.append(S("line", { x1: gx, x2: gx, y1: top - 6, y2: H - 6, class: "c-target" }));
      svg.append(S("text", { x: gx, y: top - 10, class: "c-axis c-target-label", "text-anchor": "middle", text: g.short || g.label }));
    }
    return svg;
  };

  // ---------------------------------------------------------------
  // The GPS plan

  /** Metres east and north of (lat0, lon0). */
  function project(lat0, lon0, lat, lon) {
    const kx = 111320 * Math.cos((lat0 * Math.PI) / 180);
    return [(lon - lon0) * kx, (lat - lat0) * 110574];
  }
  charts.distanceM = function (a, b) {
    const [dx, dy] = project(a.lat, a.lon, b.lat, b.lon);
    return Math.hypot(dx, dy);
  };
  function niceLength(m) {
    const steps = [5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];
    let best = steps[0];
    for (const s of steps) if (s <= m) best = s;
    return best;
  }
  const fmtM = (m) => (m >= 1000 ? EC.fmtNum(m / 1000, 1) + " km" : Math.round(m) + " m");
  charts.fmtM = fmtM;

  /**
   * GPS fixes against home and the safe radius.
   * o: {home: {lat, lon} | null, radius: metres | null,
   *     fixes: [{lat, lon, t, acc}] oldest first, tz}
   */
  charts.plan = function (o) {
    const W = 360;
    const H = 300;
    const fixes = o.fixes || [];
    const home = o.home;
    const centre =
      home ||
      (fixes.length
        ? {
            lat: fixes.reduce((s, f) => s + f.lat, 0) / fixes.length,
            lon: fixes.reduce((s, f) => s + f.lon, 0) / fixes.length,
          }
        : null);
    const last = fixes.length ? fixes[fixes.length - 1] : null;
    const lastD = last && home ? charts.distanceM(home, last) : null;
    const outside = lastD !== null && o.radius ? lastD > o.radius : false;

    const bits = [];
    if (home) bits.push(t("plan.home"));
    else bits.push(t("plan.noHome"));
    if (o.radius) bits.push(t("plan.radius", { r: fmtM(o.radius) }));
    bits.push(t("plan.fixes", { n: fixes.length }));
    if (last) {
      bits.push(
        lastD !== null
          ? t(outside ? "plan.lastOut" : "plan.lastIn", { d: fmtM(lastD), at: EC.fmtHM(last.t) })
          : t("plan.lastAt", { at: EC.fmtHM(last.t) }),
      );
    }
    const summary = t("plan.title") + ": " + bits.join("; ");
    const svg = frame(W, H, summary);
    svg.classList.add("plan");
    svg.append(S("title", { text: summary }));
    svg.append(S("rect", { x: 0, y: 0, width: W, height: H, class: "p-bg" }));
    if (!centre) {
      svg.append(S("text", { x: W / 2, y: H / 2, class: "c-empty", "text-anchor": "middle", text: t("plan.nothing") }));
      return svg;
    }
    let extent = Math.max(o.radius || 0, 40);
    for (const f of fixes) {
      const [dx, dy] = project(centre.lat, centre.lon, f.lat, f.lon);
      extent = Math.max(extent, Math.abs(dx), Math.abs(dy));
    }
    extent *= 1.15;
    const k = (Math.min(W, H) / 2 - 14) / extent;
    const cx = W / 2;
    const cy = H / 2;
    const pt = (f) => {
      const [dx, dy] = project(centre.lat, centre.lon, f.lat, f.lon);
      return [r1(cx + dx * k), r1(cy - dy * k)];
    };

    // Faint rings every scale step, for distance at a glance.
    const step = niceLength(extent / 2);
    for (let m = step; m <= extent * 1.5; m += step) {
      svg.append(S("circle", { cx, cy, r: r1(m * k), class: "p-ring" }));
    }
    if (home && o.radius) {
      svg.append(S("circle", { cx, cy, r: r1(o.radius * k), class: "p-safe" }));
      svg.append(S("text", { x: cx, y: r1(cy - o.radius * k) - 4, class: "p-label", "text-anchor": "middle", text: t("plan.safe", { r: fmtM(o.radius) }) }));
    }
    if (home) {
      // A small house at home.
      svg.append(
        S("path", {
          d: `M${cx - 7},${cy + 6} v-7 l7,-6 l7,6 v7 z`,
          class: "p-home",
        }),
      );
      svg.append(S("text", { x: cx + 10, y: cy + 14, class: "p-label", text: t("plan.homeLabel") }));
    }
    if (fixes.length > 1) {
      svg.append(S("polyline", { points: fixes.map((f) => pt(f).join(",")).join(" "), class: "p-path" }));
    }
    const n = fixes.length;
    fixes.forEach((f, i) => {
      const [px, py] = pt(f);
      const out = home && o.radius ? charts.distanceM(home, f) > o.radius : false;
      const isLast = i === n - 1;
      if (isLast && f.acc) {
        svg.append(S("circle", { cx: px, cy: py, r: r1(Math.max(2, f.acc * k)), class: "p-acc" }));
      }
      const c = S("circle", {
        cx: px,
        cy: py,
        r: isLast ? 5.5 : 3,
        class: "p-fix" + (out ? " p-out" : "") + (isLast ? " p-last" : ""),
      });
      // Older fixes fade.
      c.setAttribute("opacity", isLast ? "1" : String(r1(0.35 + (0.55 * (i + 1)) / n)));
      c.append(S("title", { text: EC.fmtTime(f.t) + (home ? " · " + fmtM(charts.distanceM(home, f)) : "") }));
      svg.append(c);
      if (isLast) {
        svg.append(S("text", { x: px + 8, y: py - 7, class: "p-label p-last-label", text: EC.fmtHM(f.t) }));
      }
    });
    // Scale bar and north.
    const bar = niceLength(extent / 2);
    const bw = r1(bar * k);
    svg.append(S("line", { x1: 12, x2: 12 + bw, y1: H - 14, y2: H - 14, class: "p-scale" }));
    svg.append(S("text", { x: 12, y: H - 19, class: "p-label", text: fmtM(bar) }));
    svg.append(S("path", { d: `M${W - 18},14 l5,12 l-5,-3 l-5,3 z`, class: "p-north" }));
    svg.append(S("text", { x: W - 18, y: 38, class: "p-label", "text-anchor": "middle", text: t("plan.north") }));
    return svg;
  };
})();

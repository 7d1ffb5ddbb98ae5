// The shift's numbers: AlertService.Stats over today or a chosen range,
// answer times against the 60 s / 180 s targets and alerts by kind and
// severity, as SVG bar charts with text labels.
"use strict";
(function () {
  const EC = window.EC;
  const el = EC.el;
  const t = EC.t;
  const $ = EC.$;

  const stats = (EC.stats = {});
  let last = null; // {req, res, from, to}
  let pending = 0;
  let timer = null;

  function dateValue(d) {
    const p2 = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + p2(d.getMonth() + 1) + "-" + p2(d.getDate());
  }
  /** Local midnight of an <input type=date> value. */
  function midnight(v) {
    const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v || "");
    if (!m) return null;
    return new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  }

  stats.init = function () {
    const today = dateValue(new Date(EC.now()));
    $("stats-from").value = today;
    $("stats-to").value = today;
    $("stats-form").addEventListener("submit", (e) => {
      e.preventDefault();
      stats.refresh();
    });
    $("stats-today").addEventListener("click", () => {
      const d = dateValue(new Date(EC.now()));
      $("stats-from").value = d;
      $("stats-to").value = d;
      stats.refresh();
    });
  };

  /** Communities to choose from, as the queue knows them. */
  stats.setCommunities = function (list) {
    const sel = $("stats-community");
    const keep = sel.value;
    EC.put(sel,
      el("option", { value: "", text: t("filter.all") }),
      ...list.map((c) => el("option", { value: c, text: c })),
    );
    sel.value = list.includes(keep) ? keep : "";
  };

  stats.shown = function () {
    stats.refresh();
    clearInterval(timer);
    // Today's numbers move during the shift.
    timer = setInterval(() => {
      if (!$("panel-stats").hidden && last && last.to > EC.now()) stats.refresh(true);
    }, 30 * 1000);
  };
  stats.hidden = function () {
    clearInterval(timer);
    timer = null;
  };

  stats.refresh = async function (quiet) {
    const errEl = $("stats-error");
    const from = midnight($("stats-from").value);
    const toDay = midnight($("stats-to").value);
    if (!from || !toDay) {
      errEl.textContent = t("stats.badRange");
      return;
    }
    if (toDay < from) {
      errEl.textContent = t("stats.toBeforeFrom");
      return;
    }
    errEl.textContent = "";
    const to = new Date(toDay.getFullYear(), toDay.getMonth(), toDay.getDate() + 1);
    const req = { from: from.toISOString(), to: to.toISOString() };
    const community = $("stats-community").value;
    if (community) req.community = community;
    const my = ++pending;
    if (!quiet) $("stats-charts").setAttribute("aria-busy", "true");
    try {
      const res = await EC.rpc("AlertService", "Stats", req);
      if (my !== pending) return;
      last = { req, res, from: from.getTime(), to: to.getTime(), community };
      render();
    } catch (e) {
      if (my !== pending) return;
      errEl.textContent = EC.app.errorText(e);
    } finally {
      if (my === pending) $("stats-charts").removeAttribute("aria-busy");
    }
  };

  stats.rerender = function () {
    if (last) render();
  };

  const n = (v) => Number(v || 0);

  function card(label, value, note, cls) {
    return el(
      "div",
      { class: "card " + (cls || "") },
      el("dt", { text: label }),
      el("dd", null, el("span", { class: "card-value", text: value }), note ? el("span", { class: "card-note", text: note }) : null),
    );
  }

  function render() {
    const r = last.res || {};
    const hot = n(r.hotlineTotal);
    const w60 = Number(r.acknowledgedWithin60s || 0);
    const w180 = Number(r.acknowledgedWithin180s || 0);
    const p50 = Number(r.ackP50Seconds || 0);
    const p95 = Number(r.ackP95Seconds || 0);
    const haveAck = hot > 0 && n(r.acknowledged) > 0;
    const lastDay = new Date(last.to - 1);
    $("stats-range").textContent = t("stats.range", {
      from: new Date(last.from).toLocaleDateString(EC.lang()),
      to: lastDay.toLocaleDateString(EC.lang()),
      community: last.community || t("filter.all"),
    });

    const met = (ok) => (ok ? "ok" : "miss");
    $("stats-summary").replaceChildren(
      el(
        "dl",
        { class: "cards" },
        card(t("stats.total"), EC.fmtNum(n(r.total), 0)),
        card(t("stats.hotline"), EC.fmtNum(hot, 0)),
        card(
          t("stats.within60"),
          hot ? EC.fmtPct(w60) : "—",
          t("stats.target", { v: EC.fmtPct(0.975) }),
          hot ? met(w60 >= 0.975) : "",
        ),
        card(
          t("stats.within180"),
          hot ? EC.fmtPct(w180) : "—",
          t("stats.target", { v: EC.fmtPct(0.99) }),
          hot ? met(w180 >= 0.99) : "",
        ),
        card(t("stats.p50"), haveAck ? EC.fmtDuration(p50) : "—"),
        card(t("stats.p95"), haveAck ? EC.fmtDuration(p95) : "—"),
      ),
    );

    const charts = [];
    const fig = (title, svg, note) =>
      el("figure", { class: "stat-chart" }, el("figcaption", null, el("h3", { text: title }), note ? el("p", { class: "muted small", text: note }) : null), svg);

    // Answer times against the alarm-centre targets.
    charts.push(
      fig(
        t("stats.chartShares"),
        EC.charts.bars({
          title: t("stats.chartShares"),
          max: 1,
          valueW: 190,
          items: [
            {
              label: t("stats.within60"),
              value: hot ? w60 : 0,
              target: 0.975,
              text: (hot ? EC.fmtPct(w60) : "—") + " / " + t("stats.targetShort", { v: EC.fmtPct(0.975) }),
              cls: hot ? (w60 >= 0.975 ? "good" : "bad") : "",
            },
            {
              label: t("stats.within180"),
              value: hot ? w180 : 0,
              target: 0.99,
              text: (hot ? EC.fmtPct(w180) : "—") + " / " + t("stats.targetShort", { v: EC.fmtPct(0.99) }),
              cls: hot ? (w180 >= 0.99 ? "good" : "bad") : "",
            },
          ],
        }),
        t("stats.sharesNote"),
      ),
    );
    charts.push(
      fig(
        t("stats.chartTimes"),
        EC.charts.bars({
          title: t("stats.chartTimes"),
          valueW: 190,
          items: [
            {
              label: t("stats.p50"),
              value: haveAck ? p50 : 0,
              target: 60,
              text: (haveAck ? EC.fmtDuration(p50) : "—") + " / " + t("stats.targetShort", { v: EC.fmtDuration(60) }),
              cls: haveAck ? (p50 <= 60 ? "good" : "bad") : "",
            },
            {
              label: t("stats.p95"),
              value: haveAck ? p95 : 0,
              target: 180,
              text: (haveAck ? EC.fmtDuration(p95) : "—") + " / " + t("stats.targetShort", { v: EC.fmtDuration(180) }),
              cls: haveAck ? (p95 <= 180 ? "good" : "bad") : "",
            },
          ],
        }),
      ),
    );

    // By kind (all severities of a kind together) and by severity.
    const byKind = new Map();
    const bySev = new Map([["CRITICAL", 0], ["HIGH", 0], ["MEDIUM", 0], ["LOW", 0]]);
    const kindSev = new Map();
    for (const k of r.byKind || []) {
      byKind.set(k.kind, (byKind.get(k.kind) || 0) + n(k.count));
      bySev.set(k.severity, (bySev.get(k.severity) || 0) + n(k.count));
      const rank = EC.SEVERITY_RANK[k.severity] || 0;
      if (!kindSev.has(k.kind) || (EC.SEVERITY_RANK[kindSev.get(k.kind)] || 0) < rank) kindSev.set(k.kind, k.severity);
    }
    const kinds = [...byKind.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
    charts.push(
      fig(
        t("stats.chartKinds"),
        EC.charts.bars({
          title: t("stats.chartKinds"),
          items: kinds.map(([k, c]) => ({
            label: EC.tv("kind.", k),
            value: c,
            text: EC.fmtNum(c, 0),
            cls: "sev-" + String(kindSev.get(k) || "").toLowerCase(),
          })),
        }),
      ),
    );
    charts.push(
      fig(
        t("stats.chartSeverity"),
        EC.charts.bars({
          title: t("stats.chartSeverity"),
          items: [...bySev.entries()]
            .filter(([s]) => EC.SEVERITY_RANK[s])
            .map(([s, c]) => ({ label: EC.tv("severity.", s), value: c, text: EC.fmtNum(c, 0), cls: "sev-" + s.toLowerCase() })),
        }),
      ),
    );
    charts.push(
      fig(
        t("stats.chartSteps"),
        EC.charts.bars({
          title: t("stats.chartSteps"),
          items: [
            { label: t("stats.total"), value: n(r.total), text: EC.fmtNum(n(r.total), 0), cls: "neutral" },
            { label: t("stats.acknowledged"), value: n(r.acknowledged), text: EC.fmtNum(n(r.acknowledged), 0), cls: "neutral" },
            { label: t("stats.dispatched"), value: n(r.dispatched), text: EC.fmtNum(n(r.dispatched), 0), cls: "neutral" },
            { label: t("stats.resolved"), value: n(r.resolved), text: EC.fmtNum(n(r.resolved), 0), cls: "neutral" },
          ],
        }),
      ),
    );
    $("stats-charts").replaceChildren(...charts);
  }
})();

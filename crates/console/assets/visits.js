// Carers' visits: one provider's month (VisitService.ProviderReport), its
// counts, every visit with its flags, and the same as a CSV file for a
// spreadsheet. Also the providers' names, for the record's visit section.
"use strict";
(function () {
  const EC = window.EC;
  const el = EC.el;
  const t = EC.t;
  const $ = EC.$;

  const visits = (EC.visits = {});
  /** provider_id -> name, once ListProviders answered. */
  let providers = null;
  let loading = null;
  /** The report shown: {providerId, month, res}. */
  let last = null;
  let pending = 0;

  const n = (v) => Number(v || 0);

  function monthValue(d) {
    return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0");
  }

  visits.init = function () {
    $("visits-month").value = monthValue(new Date(EC.now()));
    $("visits-form").addEventListener("submit", (e) => {
      e.preventDefault();
      visits.refresh();
    });
    $("visits-csv").addEventListener("click", download);
  };

  /** The providers, read once (the registry has few); a name for the record. */
  function loadProviders() {
    if (!loading)
      loading = EC.rpc("RegistryService", "ListProviders", {})
        .then((r) => {
          providers = new Map((r.providers || []).map((p) => [p.providerId, p.name]));
          fillProviders();
          if (EC.record.isOpen()) EC.record.rerender();
        })
        .catch((e) => {
          loading = null;
          throw e;
        });
    return loading;
  }
  visits.providerName = function (id) {
    if (!id) return "";
    if (!providers) {
      loadProviders().catch(() => {});
      return "";
    }
    return providers.get(id) || "";
  };

  function fillProviders() {
    const sel = $("visits-provider");
    const keep = sel.value;
    const list = [...(providers || new Map()).entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1));
    EC.put(
      sel,
      list.length ? null : el("option", { value: "", text: t("visits.noProviders") }),
      ...list.map(([id, name]) => el("option", { value: id, text: name ? name + " (" + id + ")" : id })),
    );
    if (list.some(([id]) => id === keep)) sel.value = keep;
  }

  visits.shown = async function () {
    try {
      await loadProviders();
    } catch (e) {
      $("visits-error").textContent = EC.app.errorText(e);
      return;
    }
    if (!last && $("visits-provider").value) visits.refresh();
  };

  visits.refresh = async function () {
    const err = $("visits-error");
    const providerId = $("visits-provider").value;
    const month = $("visits-month").value;
    if (!providerId) {
      err.textContent = t("visits.needProvider");
      return;
    }
    if (!/^\d{4}-\d{2}$/.test(month)) {
      err.textContent = t("visits.needMonth");
      return;
    }
    err.textContent = "";
    const my = ++pending;
    $("visits-table").setAttribute("aria-busy", "true");
    try {
      const res = await EC.rpc("VisitService", "ProviderReport", { providerId, month });
      if (my !== pending) return;
      last = { providerId, month, res };
      render();
    } catch (e) {
      if (my !== pending) return;
      err.textContent = EC.app.errorText(e);
    } finally {
      if (my === pending) $("visits-table").removeAttribute("aria-busy");
    }
  };

  visits.rerender = function () {
    fillProviders();
    if (last) render();
  };

  function card(label, value, note, key) {
    return el(
      "div",
      { class: "card", "data-count": key },
      el("dt", { text: label }),
      el("dd", null, el("span", { class: "card-value", text: value }), note ? el("span", { class: "card-note", text: note }) : null),
    );
  }

  function render() {
    const r = last.res || {};
    const c = r.counts || {};
    const name = visits.providerName(last.providerId);
    $("visits-range").textContent = t("visits.range", {
      provider: name ? name + " (" + last.providerId + ")" : last.providerId,
      month: last.month,
    });
    const num = (v) => EC.fmtNum(n(v), 0);
    $("visits-summary").replaceChildren(
      el(
        "dl",
        { class: "cards" },
        card(t("visits.c.planned"), num(c.planned), null, "planned"),
        card(t("visits.c.done"), num(c.done), t("visits.c.unplannedNote", { n: num(c.unplanned) }), "done"),
        card(t("visits.c.onTime"), num(c.onTime), null, "onTime"),
        card(t("visits.c.late"), num(c.late), null, "late"),
        card(t("visits.c.missed"), num(c.missed), null, "missed"),
        card(t("visits.c.short"), num(c.short), null, "short"),
        card(t("visits.c.uncorroborated"), num(c.uncorroborated), null, "uncorroborated"),
        card(t("visits.c.unverified"), num(c.unverified), null, "unverified"),
        card(t("visits.c.noCheckIn"), num(c.noCheckIn), null, "noCheckIn"),
        card(t("visits.c.noCheckOut"), num(c.noCheckOut), null, "noCheckOut"),
        card(
          t("visits.c.followUps"),
          num(c.followUps),
          t("visits.c.followUpsNote", {
            satisfied: num(c.satisfied),
            complaint: num(c.complaint),
            noAnswer: num(c.noAnswer),
            open: num(c.followUpOpen),
          }),
          "followUps",
        ),
        card(
          t("visits.c.minutes"),
          num(c.minutesDelivered) + " / " + num(c.minutesPlanned),
          t("visits.c.minutesNote"),
          "minutes",
        ),
      ),
    );
    const rows = r.visits || [];
    const hm = (ts) => (Number.isFinite(EC.ms(ts)) ? EC.fmtHM(EC.ms(ts)) : "—");
    $("visits-csv").disabled = !r.csv;
    if (!rows.length) {
      EC.put($("visits-table"), el("p", { class: "empty", text: t("visits.none") }));
      return;
    }
    const th = (k) => el("th", { scope: "col", text: t(k) });
    EC.put(
      $("visits-table"),
      el(
        "table",
        { class: "readings visit-rows", id: "visits-rows" },
        el("caption", { class: "sr-only", text: t("visits.caption", { month: last.month }) }),
        el(
          "thead",
          null,
          el(
            "tr",
            null,
            ["visits.col.day", "visits.col.elder", "visits.col.service", "visits.col.carer", "visits.col.status",
              "visits.col.in", "visits.col.out", "visits.col.length", "visits.col.flags", "visits.col.followUp"].map(th),
          ),
        ),
        el(
          "tbody",
          null,
          rows.map((v) =>
            el(
              "tr",
              { "data-visit-id": v.visitId, "data-status": v.status, "data-flags": (v.flags || []).join(" ") },
              el("td", { text: v.day || "" }),
              el("td", null, (EC.elderNow.get(v.elderId) || {}).name || v.elderId),
              el("td", { text: v.service ? EC.tv("service.", v.service) : t("visit.unplanned") }),
              el("td", { text: v.carerId || "—" }),
              el("td", { text: EC.tv("visitStatus.", v.status) }),
              el("td", { class: "num", text: hm(v.checkIn) }),
              el("td", { class: "num", text: hm(v.checkOut) }),
              el("td", { class: "num", text: n(v.lengthMin) + " / " + n(v.plannedMin) + " " + t("visits.min") }),
              el("td", { text: (v.flags || []).map((f) => EC.tv("visitFlag.", f)).join(", ") }),
              el("td", { text: v.followUp ? EC.tv("outcome.", v.followUp) : "—" }),
            ),
          ),
        ),
      ),
    );
    // Names come from the registry, asked once per report.
    if (!r._asked) {
      r._asked = true;
      const missing = [...new Set(rows.map((v) => v.elderId))].filter((id) => !EC.elderNow.has(id));
      if (missing.length)
        Promise.all(missing.map((id) => EC.elder(id))).then(() => {
          if (last && last.res === r) render();
        });
    }
  }

  /** The report's CSV as a file, made in the browser. */
  function download() {
    if (!last || !last.res || !last.res.csv) return;
    const name = "visits-" + last.providerId + "-" + last.month + ".csv";
    // The byte-order mark lets spreadsheets read the file as UTF-8.
    const blob = new Blob(["\ufeff", last.res.csv], { type: "text/csv;charset=utf-8" });
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60 * 1000);
    window.eldercareConsole.download = { name, size: blob.size, csv: last.res.csv };
  }
})();

// The record: everything about one alert on one screen. Who the person
// is, what raised the alert, the last hour of vital signs, the GPS fixes
// against home, the device that spoke and the alert's whole history,
// kept live from the feed while it is open.
"use strict";
(function () {
  const EC = window.EC;
  const el = EC.el;
  const t = EC.t;
  const $ = EC.$;

  const HOUR = 3600 * 1000;
  const REFRESH_MS = 30 * 1000;

  /** The open record: {id, alert, history, elder, devices, latest, vitals, fixes, silences, gen}. */
  let cur = null;
  let gen = 0;
  let timer = null;
  let loadTimer = null;

  const rec = (EC.record = {});
  rec.isOpen = () => cur !== null;
  rec.alertId = () => (cur ? cur.id : null);
  rec.alert = () => (cur ? cur.alert : null);
  rec.history = () => (cur ? cur.history : []);

  function section(id) {
    return $(id).querySelector(".rec-body");
  }

  // ---------------------------------------------------------------
  // Readings as text

  const UNITS = {
    hr: "unit.bpm",
    spo2: "unit.pct",
    rr: "unit.perMin",
    temp_c: "unit.celsius",
    sys: "unit.mmHg",
    dia: "unit.mmHg",
    battery_pct: "unit.pct",
    rssi: "unit.dBm",
    accuracy_m: "unit.m",
  };
  function fmtField(k, v) {
    if (typeof v === "boolean") return t(v ? "bool.yes" : "bool.no");
    if (k === "confidence" && typeof v === "number") return EC.fmtPct(v);
    if (k === "type" || k === "room") return EC.tv(k === "type" ? "event." : "room.", v);
    if (typeof v === "number") {
      const digits = k === "lat" || k === "lon" ? 6 : k === "movement" ? 2 : 1;
      const u = UNITS[k] ? " " + t(UNITS[k]) : "";
      return EC.fmtNum(v, digits) + u;
    }
    return String(v);
  }
  /** "心率 84 次/分 · 血氧 98 %" for a reading's body. */
  EC.fmtReading = function (body) {
    return Object.entries(body)
      .filter(([k]) => k !== "ts" && k !== "seq")
      .map(([k, v]) => EC.tv("field.", k) + " " + fmtField(k, v))
      .join(" · ");
  };

  // ---------------------------------------------------------------
  // Opening and closing

  /** Opens the record of alert `id`; focus moves to its title unless told. */
  rec.open = function (id, opts) {
    const o = opts || {};
    const same = cur && cur.id === id;
    if (!same) {
      gen += 1;
      const a = EC.app.alert(id);
      cur = {
        id,
        gen,
        alert: a || null,
        history: [],
        // The queue fetched the elder for the row: draw them at once.
        elder: (a && EC.elderNow.get(a.elderId)) || null,
        devices: new Map(),
        latest: [],
        vitals: null,
        fixes: null,
        silences: [],
        loading: true,
      };
    }
    const root = $("record");
    root.hidden = false;
    root.dataset.alertId = id;
    document.body.classList.add("record-open");
    renderAll();
    if (o.focus !== false) $("record-title").focus();
    if (!same) {
      clearTimeout(loadTimer);
      const g = cur.gen;
      if (o.follow) loadTimer = setTimeout(() => load(g), 200);
      else load(g);
    }
    clearInterval(timer);
    timer = setInterval(() => {
      if (cur) loadContext(cur.gen);
    }, REFRESH_MS);
  };

  rec.close = function () {
    if (!cur) return;
    cur = null;
    gen += 1;
    clearInterval(timer);
    timer = null;
    const root = $("record");
    root.hidden = true;
    delete root.dataset.alertId;
    document.body.classList.remove("record-open");
    EC.app.afterRecordClosed();
  };

  async function load(g) {
    if (!cur || cur.gen !== g) return;
    const id = cur.id;
    const lang = EC.lang();
    let alert;
    try {
      alert = await EC.rpc("AlertService", "GetAlert", { id, language: lang });
    } catch (e) {
      if (!cur || cur.gen !== g) return;
      cur.loading = false;
      EC.app.toast(t("err.load", { what: t("record.title"), msg: e.message }), true);
      renderAll();
      return;
    }
    if (!cur || cur.gen !== g) return;
    mergeAlert(alert);
    mergeHistory(alert.history || []);
    cur.loading = false;
    renderAll();
    cur.elder = await EC.elder(alert.elderId);
    if (!cur || cur.gen !== g) return;
    renderAll();
    loadContext(g);
  }

  /** Readings, devices and silences: loaded on open and every 30 s. */
  async function loadContext(g) {
    if (!cur || cur.gen !== g || !cur.alert) return;
    const a = cur.alert;
    const to = EC.now();
    const from = to - HOUR;
    const range = { from: new Date(from).toISOString(), to: new Date(to + 60 * 1000).toISOString() };
    const jobs = [
      EC.rpcAll(
        "TelemetryService",
        "ListReadings",
        Object.assign({ elderId: a.elderId, streams: ["vitals", "sleep"], order: "READING_ORDER_OLDEST_FIRST", pageSize: 1000 }, range),
        "readings",
        10,
      )
        .then((rs) => {
          if (cur && cur.gen === g) {
            cur.vitals = { from, to, readings: rs };
            renderVitals();
          }
        })
        .catch((e) => {
          if (cur && cur.gen === g) {
            cur.vitals = { from, to, readings: [], error: e.message };
            renderVitals();
          }
        }),
      EC.rpcAll(
        "TelemetryService",
        "ListReadings",
        Object.assign({ elderId: a.elderId, streams: ["location"], order: "READING_ORDER_OLDEST_FIRST", pageSize: 1000 }, range),
        "readings",
        5,
      )
        .then((rs) => {
          if (cur && cur.gen === g) {
            cur.fixes = { from, to, readings: rs };
            renderGps();
          }
        })
        .catch((e) => {
          if (cur && cur.gen === g) {
            cur.fixes = { from, to, readings: [], error: e.message };
            renderGps();
          }
        }),
      EC.rpc("TelemetryService", "LatestReadings", { elderId: a.elderId })
        .then((r) => {
          if (cur && cur.gen === g) cur.latest = (r && r.readings) || [];
        })
        .catch(() => {}),
      EC.rpc("AlertService", "ListSilences", {})
        .then((r) => {
          if (cur && cur.gen === g) cur.silences = (r && r.silences) || [];
        })
        .catch(() => {}),
    ];
    const ids = [a.deviceId, a.subject].filter((d, i, arr) => d && arr.indexOf(d) === i);
    for (const d of ids) {
      if (cur.devices.has(d)) continue;
      jobs.push(
        EC.rpc("RegistryService", "GetDevice", { deviceId: d })
          .then((dev) => {
            if (cur && cur.gen === g) cur.devices.set(d, dev);
          })
          .catch(() => {
            if (cur && cur.gen === g) cur.devices.set(d, null);
          }),
      );
    }
    await Promise.all(jobs);
    if (!cur || cur.gen !== g) return;
    renderDevice();
    renderSilences();
  }

  function mergeAlert(a) {
    if (!cur.alert || !(EC.ms(a.updatedAt) < EC.ms(cur.alert.updatedAt))) {
      const h = cur.alert && cur.alert.history;
      cur.alert = Object.assign({}, a);
      if (!cur.alert.history && h) cur.alert.history = h;
    }
  }
  function mergeHistory(entries) {
    const bySeq = new Map(cur.history.map((h) => [String(h.seq), h]));
    for (const h of entries) bySeq.set(String(h.seq), h);
    cur.history = [...bySeq.values()].sort((x, y) => Number(x.seq) - Number(y.seq));
  }

  /** An alert event from the feed (already applied to the queue). */
  rec.onEvent = function (ev) {
    if (!cur || !ev.alert || ev.alert.id !== cur.id) return;
    mergeAlert(ev.alert);
    mergeHistory([
      { seq: ev.seq, kind: ev.kind, actor: ev.actor, at: ev.at, note: ev.note, state: ev.alert.state },
    ]);
    renderHead();
    renderCause();
    renderHistory();
  };

  /** An action's answer: the alert after it. */
  rec.onAlert = function (a) {
    if (!cur || !a || a.id !== cur.id) return;
    mergeAlert(a);
    renderHead();
    renderCause();
  };

  /** The whole record again (language switch, clock tick). */
  rec.rerender = function () {
    if (cur) renderAll();
  };
  /** Refetch the summary in the new language. */
  rec.relang = function () {
    if (!cur) return;
    renderAll();
    const g = cur.gen;
    EC.rpc("AlertService", "GetAlert", { id: cur.id, language: EC.lang() })
      .then((a) => {
        if (cur && cur.gen === g) {
          mergeAlert(a);
          mergeHistory(a.history || []);
          renderAll();
        }
      })
      .catch(() => {});
  };

  function renderAll() {
    renderHead();
    renderPerson();
    renderCause();
    renderVitals();
    renderGps();
    renderDevice();
    renderSilences();
    renderHistory();
  }

  // ---------------------------------------------------------------
  // Sections

  function tz() {
    return EC.elderTz(cur && cur.elder);
  }
  function dl(rows) {
    const d = el("dl", { class: "facts" });
    for (const [k, v] of rows) {
      if (v === null || v === undefined || v === "") continue;
      d.append(el("dt", { text: k }), el("dd", null, v));
    }
    return d;
  }
  function tel(phone) {
    if (!phone) return el("span", { class: "muted", text: t("record.none") });
    return el("a", { href: "tel:" + phone.replace(/[^0-9+]/g, ""), class: "tel" }, phone);
  }

  function renderHead() {
    const a = cur.alert;
    const title = $("record-title");
    const status = $("record-status");
    const summary = $("record-summary");
    if (!a) {
      title.textContent = cur.loading ? t("record.loading") : t("record.title");
      EC.put(status);
      summary.textContent = "";
      return;
    }
    const elder = cur.elder || EC.elderNow.get(a.elderId);
    title.textContent = t("record.heading", {
      kind: EC.app.kindText(a),
      who: elder ? elder.name : a.elderId,
    });
    summary.textContent = EC.summaryOf(a);
    const sev = String(a.severity || "").toLowerCase();
    const st = String(a.state || "").toLowerCase();
    const parts = [
      el("span", { class: "badge sev-" + sev, text: EC.tv("severity.", a.severity) }),
      el("span", { class: "badge state-" + st, text: EC.tv("state.", a.state) }),
    ];
    if (a.escalations) parts.push(el("span", { class: "badge esc", text: t("record.escalations", { n: a.escalations }) }));
    if (a.muted) parts.push(el("span", { class: "badge muted-badge", text: t("queue.muted") }));
    if (a.queue) parts.push(el("span", { class: "badge plain", text: EC.tv("queueName.", a.queue) }));
    if (a.state === "RESOLVED" && a.outcome && !a.recorded)
      parts.push(el("span", { class: "badge plain", text: t("record.outcome", { o: EC.tv("outcome.", a.outcome) }) }));
    // Late, recorded: as the queue row shows them.
    parts.push(...EC.app.marks(a).filter(Boolean));
    EC.put(status, ...parts);
  }

  function renderPerson() {
    const body = section("record-person");
    const a = cur.alert;
    const e = cur.elder;
    if (!a) {
      EC.put(body, el("p", { class: "muted", text: t("record.loading") }));
      return;
    }
    if (!e) {
      EC.put(body,
        el("p", { class: "muted", text: cur.loading ? t("record.loading") : t("record.noElder", { id: a.elderId }) }),
      );
      return;
    }
    const flags = (e.flags || []).map((f) =>
      el("li", { class: "flag flag-" + f, text: EC.tv("flag.", f) }),
    );
    const age = (e.flags || []).includes("age80plus") ? t("record.age80") : t("record.ageUnknown");
    const home =
      e.homeLat !== undefined && e.homeLat !== null && e.homeLon !== undefined && e.homeLon !== null
        ? EC.fmtNum(e.homeLat, 5) + ", " + EC.fmtNum(e.homeLon, 5)
        : t("record.none");
    const tzText = EC.tzDiffers(tz())
      ? t("record.tzDiff", { tz: tz(), now: EC.fmtHM(EC.now(), tz()) })
      : tz();
    const contact =
      e.contactName || e.contactPhone
        ? el("span", null, (e.contactName || "") + " ", tel(e.contactPhone))
        : el("span", { class: "muted", text: t("record.none") });
    EC.put(body,
      el("p", { class: "person-name" }, el("strong", { text: e.name }), " ", el("span", { class: "muted", text: e.elderId })),
      flags.length ? el("ul", { class: "flags", "aria-label": t("record.flags") }, flags) : null,
      dl([
        [t("record.age"), age],
        [t("record.phone"), tel(e.phone)],
        [t("record.address"), e.address || t("record.none")],
        [t("record.area"), [e.district, e.community].filter(Boolean).join(" · ") || t("record.none")],
        [t("record.contact"), contact],
        [t("record.homePos"), home],
        [t("record.safeRadius"), e.safeRadiusM ? EC.charts.fmtM(e.safeRadiusM) : t("record.noFence")],
        [t("record.tz"), tzText],
        [t("record.night"), (e.nightStart || "21:00") + "–" + (e.nightEnd || "07:00")],
      ]),
    );
  }

  function renderCause() {
    const body = section("record-cause");
    const a = cur.alert;
    if (!a) {
      EC.put(body, el("p", { class: "muted", text: t("record.loading") }));
      return;
    }
    const z = tz();
    const ws = EC.ms(a.windowStart);
    const we = EC.ms(a.windowEnd);
    const win =
      Number.isFinite(ws) && Number.isFinite(we)
        ? t("record.window", { from: EC.fmtBoth(ws, z), to: EC.fmtBoth(we, z), d: EC.fmtDuration((we - ws) / 1000) })
        : null;
    const detected = EC.ms(a.detectedAt);
    const ack = EC.ms(a.acknowledgedAt);
    const rows = [
      [t("record.kind"), EC.app.kindText(a)],
      [t("record.raisedAt"), EC.fmtBoth(EC.ms(a.raisedAt), z, true)],
      [t("record.detectedAt"), EC.fmtBoth(detected, z, true)],
      [t("record.windowLabel"), win],
      [t("record.occurrences"), a.occurrences > 1 ? String(a.occurrences) : null],
      [t("record.score"), a.score ? String(a.score) : null],
      [
        t("record.ackAt"),
        Number.isFinite(ack)
          ? t("record.answeredIn", { at: EC.fmtBoth(ack, z), d: EC.fmtDuration((ack - detected) / 1000) })
          : null,
      ],
      [t("record.dispatchedAt"), Number.isFinite(EC.ms(a.dispatchedAt)) ? EC.fmtBoth(EC.ms(a.dispatchedAt), z) : null],
      [
        t("record.responder"),
        a.responder && a.responder.type
          ? el(
              "span",
              null,
              EC.tv("responder.", a.responder.type) + " " + (a.responder.name || "") + " ",
              a.responder.phone ? tel(a.responder.phone) : null,
            )
          : null,
      ],
      [t("record.resolvedAt"), Number.isFinite(EC.ms(a.resolvedAt)) ? EC.fmtBoth(EC.ms(a.resolvedAt), z) : null],
    ];
    const factors = !(a.factors || []).length
      ? null
      : a.kind === "trend"
        ? el("div", null, el("h4", { text: t("trend.factors") }), el("ul", { class: "factors" }, a.factors.map((f) => el("li", { text: EC.factorText(f) }))))
        : el("div", null, el("h4", { text: t("record.factors") }), el("ul", { class: "factors" }, a.factors.map((f) => el("li", { text: f }))));
    const readings = (a.readings || []).length
      ? el(
          "div",
          null,
          el("h4", { id: "readings-title", text: t("record.readings") }),
          el(
            "table",
            { class: "readings", "aria-labelledby": "readings-title" },
            el(
              "thead",
              null,
              el(
                "tr",
                null,
                el("th", { scope: "col", text: t("record.rTime") }),
                el("th", { scope: "col", text: t("record.rDevice") }),
                el("th", { scope: "col", text: t("record.rValues") }),
              ),
            ),
            el(
              "tbody",
              null,
              a.readings.map((r) =>
                el(
                  "tr",
                  null,
                  el("td", { text: EC.fmtBoth(EC.ms(r.ts), z) }),
                  el("td", { text: r.deviceId + " · " + EC.tv("stream.", r.stream) }),
                  el("td", { text: EC.fmtReading(EC.body(r)) }),
                ),
              ),
            ),
          ),
        )
      : null;
    EC.put(body, el("p", { class: "cause-summary", text: EC.summaryOf(a) }), dl(rows), factors, readings);
    renderFollowUp();
    renderVisit();
  }

  /** Whole minutes between two times, or null without both. */
  function minutes(from, to) {
    return Number.isFinite(from) && Number.isFinite(to) ? Math.round((to - from) / 60000) : null;
  }

  /**
   * A carer's visit, as the alert carries it (Alert.visit): ids only, the
   * provider's name when the registry gave it.
   */
  function renderVisit() {
    const sec = $("record-visit");
    const a = cur.alert;
    const v = a && a.visit;
    sec.hidden = !v;
    if (!v) return;
    const z = tz();
    const when = (ts) => (Number.isFinite(EC.ms(ts)) ? EC.fmtBoth(EC.ms(ts), z) : t("record.none"));
    const ws = EC.ms(v.windowStart);
    const we = EC.ms(v.windowEnd);
    const len = minutes(EC.ms(v.checkIn), EC.ms(v.checkOut));
    const planned = Number(v.plannedMin || 0);
    const lengthText =
      len === null
        ? t("visit.noLength")
        : planned
          ? t("visit.lengthOf", { len, planned })
          : t("visit.lengthOnly", { len });
    const provider = EC.visits.providerName(v.providerId);
    const flags = (v.flags || []).length
      ? el(
          "ul",
          { class: "flags visit-flags", "aria-label": t("visit.flags") },
          v.flags.map((f) => el("li", { class: "flag", "data-flag": f, text: EC.tv("visitFlag.", f) })),
        )
      : el("span", { class: "muted", text: t("visit.noFlags") });
    const signs = (v.signs || []).length
      ? el(
          "ul",
          { class: "factors visit-signs" },
          v.signs.map((g) =>
            el("li", {
              "data-sign": g.kind,
              text: [when(g.at), EC.tv("sign.", g.kind), g.room ? EC.tv("room.", g.room) : ""].filter(Boolean).join(" · "),
            }),
          ),
        )
      : el("span", { class: "muted", text: t("visit.noSigns") });
    EC.put(
      sec.querySelector(".rec-body"),
      dl([
        [t("visit.id"), el("code", { "data-visit-id": v.visitId, text: v.visitId || "—" })],
        [t("visit.provider"), provider ? provider + " (" + v.providerId + ")" : v.providerId || t("record.none")],
        [t("visit.carer"), v.carerId || t("record.none")],
        [t("visit.service"), v.service ? EC.tv("service.", v.service) : t("visit.unplanned")],
        [t("visit.day"), v.day],
        [
          t("visit.window"),
          Number.isFinite(ws) && Number.isFinite(we) ? EC.fmtBoth(ws, z) + " – " + EC.fmtBoth(we, z) : t("visit.noPlan"),
        ],
        [t("visit.checkIn"), when(v.checkIn)],
        [t("visit.checkOut"), when(v.checkOut)],
        [t("visit.length"), lengthText],
        [t("visit.via"), v.via],
        [t("visit.flags"), flags],
        [t("visit.signs"), signs],
      ]),
    );
  }

  /**
   * The follow-up call: the elder's answer, one button each. The note
   * typed survives the section being drawn again (an event, a tick).
   */
  function renderFollowUp() {
    const sec = $("record-followup");
    const a = cur.alert;
    const on = !!a && a.kind === "follow_up";
    sec.hidden = !on;
    if (!on) return;
    const body = sec.querySelector(".rec-body");
    let form = body.querySelector("form");
    // Drawn anew for another alert or language; a note typed is kept.
    const typed = form && form.dataset.alertId === a.id ? form.querySelector("textarea").value : "";
    if (!form || form.dataset.alertId !== a.id || form.dataset.lang !== EC.lang()) {
      const buttons = EC.FOLLOW_UP_OUTCOMES.map((o) =>
        el("button", { type: "button", class: o === "satisfied" ? "primary" : null, "data-outcome": o, text: EC.tv("outcome.", o) }),
      );
      form = el(
        "form",
        { class: "follow-up", "data-alert-id": a.id, "data-lang": EC.lang(), novalidate: "" },
        el("p", { class: "muted small", id: "followup-help", text: t("followUp.help") }),
        el(
          "div",
          { class: "field" },
          el("label", { for: "followup-note", text: t("followUp.note") }),
          el("textarea", { id: "followup-note", rows: "2" }),
        ),
        el("div", { class: "dlg-buttons follow-up-buttons", role: "group", "aria-label": t("followUp.outcome"), "aria-describedby": "followup-help" }, buttons),
        el("p", { class: "follow-up-done", "aria-live": "polite" }),
        el("p", { class: "error-text", role: "alert" }),
      );
      form.addEventListener("submit", (e) => e.preventDefault());
      for (const b of buttons)
        b.addEventListener("click", async () => {
          const err = form.querySelector(".error-text");
          err.textContent = "";
          for (const x of buttons) x.disabled = true;
          try {
            await EC.app.resolveFollowUp(a, b.dataset.outcome, form.querySelector("textarea").value.trim());
          } catch (x) {
            err.textContent = EC.app.errorText(x);
          } finally {
            renderFollowUp();
          }
        });
      form.querySelector("textarea").value = typed;
      EC.put(body, form);
    }
    const done = a.state === "RESOLVED";
    for (const b of form.querySelectorAll("button[data-outcome]")) b.disabled = done || !EC.app.can("resolve");
    form.querySelector("textarea").disabled = done || !EC.app.can("resolve");
    form.querySelector(".follow-up-done").textContent = done
      ? t("followUp.done", { o: EC.tv("outcome.", a.outcome), at: EC.fmtBoth(EC.ms(a.resolvedAt), tz(), true) })
      : "";
  }

  function series(readings, stream, field) {
    const pts = [];
    for (const r of readings) {
      if (r.stream !== stream) continue;
      const b = EC.body(r);
      const v = b[field];
      if (typeof v === "number" && Number.isFinite(v)) pts.push([EC.ms(r.ts), v]);
    }
    return pts;
  }

  function renderVitals() {
    const body = section("record-vitals");
    const v = cur.vitals;
    const a = cur.alert;
    const to = v ? v.to : EC.now();
    const from = v ? v.from : to - HOUR;
    const rs = v ? v.readings : [];
    const marker = a ? EC.ms(a.detectedAt) : NaN;
    const common = { from, to, marker };
    const sev = (name, stream, field, cls) => ({ name, points: series(rs, stream, field), cls });
    const hr = [sev(t("vital.hrBand"), "vitals", "hr", "s0"), sev(t("vital.hrBed"), "sleep", "hr", "s1")];
    const rr = [sev(t("vital.rrBand"), "vitals", "rr", "s0"), sev(t("vital.rrBed"), "sleep", "rr", "s1")];
    const charts = [
      EC.charts.line(Object.assign({ label: t("vital.hr"), unit: t("unit.bpm"), series: hr.filter((s, i) => i === 0 || s.points.length), band: [51, 90] }, common)),
      EC.charts.line(Object.assign({ label: t("vital.spo2"), unit: "%", series: [sev(t("vital.spo2"), "vitals", "spo2", "s0")], band: [96, 100] }, common)),
      EC.charts.line(Object.assign({ label: t("vital.rr"), unit: t("unit.perMin"), series: rr.filter((s, i) => i === 0 || s.points.length), band: [12, 20] }, common)),
    ];
    const temp = sev(t("vital.temp"), "vitals", "temp_c", "s0");
    if (temp.points.length)
      charts.push(EC.charts.line(Object.assign({ label: t("vital.temp"), unit: "°C", series: [temp], band: [36.1, 38.0], digits: 1 }, common)));
    const sys = sev(t("vital.sys"), "vitals", "sys", "s0");
    if (sys.points.length)
      charts.push(
        EC.charts.line(
          Object.assign({ label: t("vital.bp"), unit: "mmHg", series: [sys, sev(t("vital.dia"), "vitals", "dia", "s1")], band: [111, 219], joinLast: true }, common),
        ),
      );
    const note = !v
      ? el("p", { class: "muted", text: t("record.loading") })
      : v.error
        ? el("p", { class: "error-text", text: t("err.load", { what: t("record.vitals"), msg: v.error }) })
        : el("p", { class: "muted small", text: t("vital.legend", { n: rs.length }) });
    EC.put(body, el("div", { class: "vitals-grid" }, charts), note);
  }

  function renderGps() {
    const body = section("record-gps");
    const e = cur.elder;
    const a = cur.alert;
    const fx = cur.fixes;
    const seen = new Set();
    const fixes = [];
    const add = (r) => {
      if (r.stream !== "location") return;
      const k = r.deviceId + "|" + r.ts;
      if (seen.has(k)) return;
      seen.add(k);
      const b = EC.body(r);
      if (typeof b.lat === "number" && typeof b.lon === "number")
        fixes.push({ lat: b.lat, lon: b.lon, acc: b.accuracy_m, t: EC.ms(r.ts) });
    };
    for (const r of (fx && fx.readings) || []) add(r);
    for (const r of (a && a.readings) || []) add(r);
    fixes.sort((x, y) => x.t - y.t);
    const home =
      e && typeof e.homeLat === "number" && typeof e.homeLon === "number" ? { lat: e.homeLat, lon: e.homeLon } : null;
    const radius = e && e.safeRadiusM ? e.safeRadiusM : null;
    const plan = EC.charts.plan({ home, radius, fixes, tz: tz() });
    let caption;
    if (!fx) caption = t("record.loading");
    else if (fx.error) caption = t("err.load", { what: t("record.gps"), msg: fx.error });
    else if (!fixes.length) caption = t("plan.noFixes");
    else {
      const last = fixes[fixes.length - 1];
      const d = home ? EC.charts.distanceM(home, last) : null;
      caption =
        d === null
          ? t("plan.captionNoHome", { at: EC.fmtBoth(last.t, tz()), n: fixes.length })
          : t(radius && d > radius ? "plan.captionOut" : "plan.captionIn", {
              at: EC.fmtBoth(last.t, tz()),
              d: EC.charts.fmtM(d),
              n: fixes.length,
            });
    }
    EC.put(body, plan, el("p", { class: "small" + (fx && fx.error ? " error-text" : ""), text: caption }));
  }

  function renderDevice() {
    const body = section("record-device");
    const a = cur.alert;
    if (!a) {
      EC.put(body, el("p", { class: "muted", text: t("record.loading") }));
      return;
    }
    const ids = [a.deviceId, a.subject].filter((d, i, arr) => d && arr.indexOf(d) === i);
    const blocks = ids.map((id) => {
      const dev = cur.devices.get(id);
      const mine = cur.latest.filter((r) => r.deviceId === id);
      const status = mine.find((r) => r.stream === "status");
      const lastHeard = mine.reduce((m, r) => Math.max(m, EC.ms(r.ts)), -Infinity);
      const sb = status ? EC.body(status) : null;
      return el(
        "div",
        { class: "device" },
        dl([
          [t("device.id"), id],
          [t("device.kind"), dev ? EC.tv("deviceKind.", dev.kind) : dev === null ? t("device.unknown") : t("record.loading")],
          [t("device.room"), dev && dev.room ? EC.tv("room.", dev.room) : null],
          [t("device.heartbeat"), dev ? EC.fmtDuration(dev.heartbeatS || 300) : null],
          [
            t("device.lastHeard"),
            Number.isFinite(lastHeard)
              ? t("device.ago", { at: EC.fmtBoth(lastHeard, tz()), d: EC.fmtDuration((EC.now() - lastHeard) / 1000) })
              : null,
          ],
          [t("device.status"), sb ? EC.fmtReading(sb) : null],
        ]),
      );
    });
    EC.put(body, ...(blocks.length ? blocks : [el("p", { class: "muted", text: t("record.none") })]));
  }

  function renderSilences() {
    const wrap = $("record-silences");
    const body = section("record-silences");
    const a = cur.alert;
    if (!a) {
      wrap.hidden = true;
      return;
    }
    const now = EC.now();
    const mine = cur.silences.filter(
      (s) =>
        !s.endedAt &&
        EC.ms(s.until) > now &&
        (s.elderId === a.elderId || (s.deviceId && (s.deviceId === a.deviceId || s.deviceId === a.subject))),
    );
    wrap.hidden = mine.length === 0;
    EC.put(body,
      el(
        "ul",
        { class: "silences" },
        mine.map((s) =>
          el(
            "li",
            null,
            t("silence.line", {
              kind: EC.tv("kind.", s.kind),
              who: s.deviceId || s.elderId,
              until: EC.fmtBoth(EC.ms(s.until), tz(), true),
              by: s.createdBy || t("history.system"),
              reason: s.reason || "",
            }),
            " ",
            el("button", {
              type: "button",
              class: "small-btn",
              disabled: !EC.app.can("silence"),
              text: t("silence.end"),
              onclick: () => endSilence(s),
            }),
          ),
        ),
      ),
    );
  }

  async function endSilence(s) {
    try {
      await EC.rpc("AlertService", "EndSilence", { id: s.id });
      EC.app.toast(t("silence.ended"));
      if (cur) {
        cur.silences = cur.silences.filter((x) => x.id !== s.id);
        renderSilences();
      }
    } catch (e) {
      EC.app.toast(EC.app.errorText(e), true);
    }
  }
  /** A silence was made: show it without waiting for the next refresh. */
  rec.onSilence = function (s) {
    if (!cur || !s) return;
    cur.silences = cur.silences.filter((x) => x.id !== s.id).concat([s]);
    renderSilences();
  };

  function renderHistory() {
    const list = $("record-history").querySelector("ol");
    const z = tz();
    const empty = $("history-empty");
    empty.hidden = cur.history.length > 0;
    empty.textContent = cur.loading ? t("record.loading") : t("record.none");
    EC.put(list,
      ...cur.history.map((h) => {
        const kind = EC.eventKind(h.kind);
        return el(
          "li",
          { "data-kind": kind, "data-seq": String(h.seq), class: "h-" + kind },
          el("time", { datetime: h.at || "", text: EC.fmtBoth(EC.ms(h.at), z) }),
          " ",
          el("strong", { text: EC.tv("ev.", kind) }),
          " · ",
          el("span", { class: "actor", text: h.actor || t("history.system") }),
          h.state ? el("span", { class: "muted", text: " → " + EC.tv("state.", h.state) }) : null,
          h.note ? el("p", { class: "note", text: h.note }) : null,
        );
      }),
    );
  }
})();

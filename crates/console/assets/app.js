// The hotline console: sign-in, the live queues, acting on alerts,
// keyboard use, sound and screen-reader announcements. The record
// (record.js), the charts (charts.js) and the shift's numbers (stats.js)
// are in files of their own; helpers in util.js, strings in i18n.js.
"use strict";
(function () {
  const EC = window.EC;
  const el = EC.el;
  const t = EC.t;
  const $ = EC.$;

  /** For the browser tests and for anyone curious: rings played, seqs applied. */
  const PUBLIC = (window.eldercareConsole = { rings: 0, applied: [] });

  /** The queues the server puts alerts on (Alert.queue), each a tab. */
  const QUEUES = ["hotline", "operations", "care", "provider", "supervision", "follow_up"];
  /** Queues answered at leisure: no deadline, escalations or silences shown. */
  const CALM = EC.CALM_QUEUES;
  /** Tabs that are views of their own, not queues. */
  const VIEWS = ["stats", "visits"];
  const TABS = ["hotline", "operations", "care", "provider", "supervision", "follow_up", "stats", "visits"];
  /** How far back the care queue shows what was recorded, not raised. */
  const RECORDED_DAYS = 7;
  /** Resolved alerts read for it at most (newest first), in pages of 1000. */
  const RECORDED_PAGES = 3;
  const ACTIONS = ["ack", "dispatch", "escalate", "note", "resolve", "silence"];
  /** What each role may do (docs/api.md, "Calls and roles"). */
  const ROLE_CAN = {
    operator: ACTIONS,
    dispatcher: ["dispatch", "note", "resolve"],
    viewer: [],
    admin: [],
  };
  /** Outcomes the server accepts from each state. */
  const OUTCOMES = {
    OPEN: ["false_alarm"],
    ACKNOWLEDGED: ["false_alarm", "handled_by_phone"],
    DISPATCHED: ["false_alarm", "handled_by_phone", "responder_on_site", "sent_to_hospital"],
  };
  const PER_DEVICE = ["device_offline", "low_battery"];
  const DAY_MS = 24 * 3600 * 1000;

  const state = {
    me: null,
    /** Unresolved alerts by id, every queue. */
    alerts: new Map(),
    /**
     * Alerts recorded, not raised (born resolved) by id, for the care
     * queue: those of the last RECORDED_DAYS days.
     */
    recorded: new Map(),
    /** Resolved alerts by id -> updatedAt (ms): older pictures of them are ignored. */
    gone: new Map(),
    /** The last seq applied; the feed resumes after it. */
    lastSeq: 0,
    /** Server time the queue was read: events before it are history, not news. */
    listTime: Infinity,
    tab: "hotline",
    selected: Object.fromEntries(QUEUES.map((q) => [q, null])),
    order: Object.fromEntries(QUEUES.map((q) => [q, []])),
    filter: { district: "", community: "" },
    feed: null,
    gen: 0,
    retry: null,
    conn: "reconnecting",
    fresh: new Map(),
    /** The queue has been read once since sign-in. */
    loaded: false,
    /** Events that came while the queue was being read, to apply after it. */
    held: [],
    /** The `gen` whose queue read is under way (0: none). */
    reading: 0,
  };

  const app = (EC.app = {});
  app.alert = (id) => state.alerts.get(id) || state.recorded.get(id) || null;
  app.can = (action) => !!state.me && (ROLE_CAN[state.me.role] || []).includes(action);

  // ---------------------------------------------------------------
  // Messages: the toast, the live region, errors

  let toastTimer = null;
  app.toast = function (msg, isError) {
    const n = $("toast");
    n.textContent = msg;
    n.classList.toggle("error", !!isError);
    n.classList.add("show");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(
      () => {
        n.classList.remove("show");
        n.textContent = "";
      },
      isError ? 10000 : 6000,
    );
  };
  const toast = app.toast;

  function announce(text) {
    const n = $("announce");
    n.textContent = "";
    // A change the screen reader notices even when the text repeats.
    setTimeout(() => {
      n.textContent = text;
    }, 60);
  }

  app.errorText = function (e) {
    if (!e) return t("err.unknown");
    switch (e.code) {
      case "unavailable":
        return e.status ? t("err.unavailable", { msg: e.message }) : t("err.network");
      case "permission_denied":
        return t("err.permission", { msg: e.message });
      case "unauthenticated":
        return t("err.unauthenticated");
      case "not_found":
        return t("err.notFound", { msg: e.message });
      default:
        return e.message || t("err.unknown");
    }
  };
  const errorText = app.errorText;

  // ---------------------------------------------------------------
  // Sound: a ring made with the Web Audio API. Browsers allow sound after
  // a user gesture: the sign-in is one, and any click or key later.

  let audio = null;
  function unlockAudio() {
    try {
      if (!audio) {
        const AC = window.AudioContext || window.webkitAudioContext;
        if (!AC) return;
        audio = new AC();
        audio.addEventListener("statechange", updateSound);
      }
      if (audio.state === "suspended") audio.resume().catch(() => {});
    } catch (_) {
      /* no audio on this machine */
    }
    updateSound();
  }
  function tone(pattern) {
    if (!audio) return;
    if (audio.state === "suspended") audio.resume().catch(() => {});
    const t0 = audio.currentTime + 0.03;
    const osc = audio.createOscillator();
    const g = audio.createGain();
    osc.type = "square";
    osc.connect(g);
    g.connect(audio.destination);
    g.gain.setValueAtTime(0.0001, t0);
    let end = t0;
    pattern.forEach(([f1, f2], i) => {
      const s = t0 + i * 0.6;
      osc.frequency.setValueAtTime(f1, s);
      osc.frequency.setValueAtTime(f2, s + 0.2);
      g.gain.setValueAtTime(0.0001, s);
      g.gain.linearRampToValueAtTime(0.16, s + 0.02);
      g.gain.setValueAtTime(0.16, s + 0.38);
      g.gain.linearRampToValueAtTime(0.0001, s + 0.42);
      end = s + 0.45;
    });
    osc.start(t0);
    osc.stop(end + 0.05);
  }
  function ring() {
    PUBLIC.rings += 1;
    try {
      if (!audio) unlockAudio();
      tone([
        [988, 784],
        [988, 784],
        [988, 784],
      ]);
    } catch (_) {
      /* the announcement and the row still tell */
    }
    updateSound();
  }
  function updateSound() {
    const b = $("sound");
    const on = !!audio && audio.state === "running";
    b.classList.toggle("warn", !on);
    b.textContent = t(on ? "sound.on" : "sound.off");
  }

  // ---------------------------------------------------------------
  // Signing in and out

  async function onSignin(e) {
    e.preventDefault();
    unlockAudio();
    const token = $("token").value.trim();
    const err = $("signin-error");
    err.textContent = "";
    if (!token) {
      err.textContent = t("signin.empty");
      $("token").focus();
      return;
    }
    $("signin-submit").disabled = true;
    try {
      const me = await EC.http("POST", "/api/session", { token });
      $("token").value = "";
      start(me);
    } catch (x) {
      err.textContent = x.status === 401 ? t("signin.bad") : errorText(x);
      $("token").focus();
      $("token").select();
    } finally {
      $("signin-submit").disabled = false;
    }
  }

  function showSignin(msg) {
    $("console-view").hidden = true;
    $("signin-view").hidden = false;
    for (const id of ["conn", "whoami", "sound", "keys-btn", "signout"]) $(id).hidden = true;
    $("signin-error").textContent = msg || "";
    document.title = t("app.title");
    $("token").focus();
  }

  function start(me) {
    state.me = me;
    PUBLIC.applied.length = 0;
    $("signin-view").hidden = true;
    $("console-view").hidden = false;
    for (const id of ["conn", "whoami", "sound", "keys-btn", "signout"]) $(id).hidden = false;
    renderWho();
    applyRole();
    updateSound();
    selectTab("hotline", false);
    $("queue-hotline").focus();
    loadQueue();
  }

  function renderWho() {
    if (!state.me) return;
    $("whoami").replaceChildren(
      el("span", { class: "op-id", text: state.me.operatorId }),
      " ",
      el("span", { class: "role", text: EC.tv("role.", state.me.role) }),
    );
  }

  function applyRole() {
    document.body.classList.toggle("read-only", !app.can("note") && !app.can("ack"));
    updateActionBar();
  }

  async function signOut() {
    try {
      await EC.http("DELETE", "/api/session");
    } catch (_) {
      /* the cookie may already be gone */
    }
    signedOut("");
  }

  function signedOut(msg) {
    state.gen += 1;
    closeFeed();
    clearTimeout(state.retry);
    state.me = null;
    state.loaded = false;
    state.alerts.clear();
    state.recorded.clear();
    state.gone.clear();
    state.lastSeq = 0;
    state.listTime = Infinity;
    state.selected = Object.fromEntries(QUEUES.map((q) => [q, null]));
    for (const d of document.querySelectorAll("dialog[open]")) d.close();
    EC.record.close();
    EC.forgetElders();
    setConn("reconnecting");
    $("conn").dataset.lastSeq = "0";
    for (const q of QUEUES) $("queue-" + q).tBodies[0].replaceChildren();
    showSignin(msg);
  }

  // ---------------------------------------------------------------
  // The queue and the live feed

  function setConn(s) {
    state.conn = s;
    const c = $("conn");
    c.dataset.state = s;
    $("conn-text").textContent = t(s === "live" ? "conn.live" : "conn.reconnecting");
  }

  /**
   * Opens the feed at the newest event first (the server says which seq
   * that is in its `ready` event), then reads the queue: the queue is a
   * picture at least that new, and the events after it, held while it is
   * read, are applied on top. Nothing in between is missed; an event
   * older than an alert's picture is recognised by its updatedAt.
   */
  function loadQueue() {
    ++state.gen;
    state.loaded = false;
    state.held = [];
    state.lastSeq = 0;
    setConn("reconnecting");
    openFeed(true);
  }

  /** The queue as it is now, once the feed is open after `head`. */
  async function readQueue(head) {
    const gen = state.gen;
    let listed;
    let recorded;
    try {
      // ListAlerts has no queue filter: recorded alerts are found among
      // the resolved ones of the last days, newest first.
      [listed, recorded] = await Promise.all([
        EC.rpcAll(
          "AlertService",
          "ListAlerts",
          { states: ["OPEN", "ACKNOWLEDGED", "DISPATCHED"], pageSize: 1000, language: EC.lang() },
          "alerts",
          20,
        ),
        EC.rpcAll(
          "AlertService",
          "ListAlerts",
          {
            states: ["RESOLVED"],
            raisedFrom: new Date(EC.now() - RECORDED_DAYS * DAY_MS).toISOString(),
            pageSize: 1000,
            language: EC.lang(),
          },
          "alerts",
          RECORDED_PAGES,
        ),
      ]);
    } catch (e) {
      if (gen !== state.gen || !state.me) return;
      if (e.status === 401) return;
      toast(t("err.load", { what: t("queue.title"), msg: errorText(e) }), true);
      // A role that may not read alerts (admin) is told once, not retried.
      if (e.code === "permission_denied") {
        closeFeed();
        return;
      }
      state.retry = setTimeout(() => {
        if (gen === state.gen && state.me) loadQueue();
      }, 3000);
      return;
    }
    if (gen !== state.gen || !state.me) return;
    state.alerts = new Map(listed.map((a) => [a.id, a]));
    state.recorded = new Map(recorded.filter((a) => a.recorded).map((a) => [a.id, a]));
    state.loaded = true;
    state.gone.clear();
    state.lastSeq = head;
    state.listTime = EC.now();
    $("conn").dataset.lastSeq = String(head);
    for (const id of new Set([...listed, ...state.recorded.values()].map((a) => a.elderId)))
      EC.elder(id).then(scheduleRender);
    const held = state.held;
    state.held = [];
    for (const ev of held) applyEvent(ev);
    render();
  }

  function closeFeed() {
    if (state.feed) {
      state.feed.close();
      state.feed = null;
    }
  }

  function openFeed(fromHead) {
    closeFeed();
    clearTimeout(state.retry);
    if (!state.loaded) {
      // A new start at a new head: a read for an older one is void.
      ++state.gen;
      state.held = [];
    }
    const start =
      fromHead || !state.loaded ? "from=head" : "afterSeq=" + encodeURIComponent(String(state.lastSeq));
    const url =
      "/api/eldercare.v1.AlertService/Subscribe?" + start + "&language=" + encodeURIComponent(EC.lang());
    const es = new EventSource(url, { withCredentials: true });
    state.feed = es;
    es.addEventListener("ready", (e) => {
      if (state.feed !== es) return;
      setConn("live");
      if (!state.loaded && state.reading !== state.gen) {
        let head = 0;
        try {
          head = Number(JSON.parse(e.data).afterSeq) || 0;
        } catch (_) {
          head = 0;
        }
        const gen = (state.reading = state.gen);
        readQueue(head).finally(() => {
          if (state.reading === gen) state.reading = 0;
        });
      }
    });
    es.addEventListener("open", () => {
      // The stream is open; "live" once the server says it is ready.
    });
    es.addEventListener("alert", (e) => {
      if (state.feed !== es) return;
      let ev;
      try {
        ev = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      // While the queue is being read, events wait to go on top of it.
      if (!state.loaded) state.held.push(ev);
      else applyEvent(ev);
    });
    es.addEventListener("error", (e) => {
      if (state.feed !== es) return;
      setConn("reconnecting");
      if (e.data) {
        // The server's own error event; the stream ends after it and the
        // browser comes back with the last seq it saw.
        return;
      }
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error, e.g. the session ended).
        state.retry = setTimeout(async () => {
          if (state.feed !== es) return;
          try {
            await EC.http("GET", "/api/session");
          } catch (x) {
            if (x.status === 401) {
              signedOut(t("signin.expired"));
              return;
            }
          }
          if (state.feed === es) openFeed();
        }, 1500);
      }
    });
  }

  /** One event of the feed, applied once, in seq order. */
  function applyEvent(ev) {
    const seq = Number(ev.seq);
    if (!Number.isFinite(seq) || seq <= state.lastSeq) return;
    state.lastSeq = seq;
    PUBLIC.applied.push(seq);
    $("conn").dataset.lastSeq = String(seq);
    const a = ev.alert;
    if (!a || !a.id) return;
    const known = state.alerts.get(a.id);
    const floor = floorOf(a.id);
    if (EC.ms(a.updatedAt) < floor) {
      // An older picture than the one we hold: replayed from before the
      // queue was read, or behind an action's own answer.
    } else if (a.state === "RESOLVED") {
      forget(a);
      if (a.recorded) {
        if (!state.recorded.has(a.id)) {
          EC.elder(a.elderId).then(scheduleRender);
          state.fresh.set(a.id, Date.now());
        }
        state.recorded.set(a.id, a);
      }
    } else {
      state.alerts.set(a.id, a);
      if (!known) {
        EC.elder(a.elderId).then(scheduleRender);
        state.fresh.set(a.id, Date.now());
        maybeRing(ev, a);
      }
    }
    EC.record.onEvent(ev);
    noticeOthers(ev);
    scheduleRender();
  }

  /** The updatedAt (ms) of the newest picture held of alert `id`, if any. */
  function floorOf(id) {
    const held = state.alerts.get(id) || state.recorded.get(id);
    return held ? EC.ms(held.updatedAt) : state.gone.get(id);
  }

  function forget(a) {
    state.alerts.delete(a.id);
    state.recorded.delete(a.id);
    state.gone.set(a.id, EC.ms(a.updatedAt));
    if (state.gone.size > 5000) state.gone.delete(state.gone.keys().next().value);
  }

  /** An action's answer: the alert after it (the feed brings the same). */
  function applyAlert(a) {
    if (!a || !a.id) return;
    if (EC.ms(a.updatedAt) < floorOf(a.id)) return;
    if (a.state === "RESOLVED") {
      forget(a);
      if (a.recorded) state.recorded.set(a.id, a);
    } else state.alerts.set(a.id, a);
    EC.record.onAlert(a);
    scheduleRender();
  }

  function maybeRing(ev, a) {
    if (a.severity !== "CRITICAL" || queueOf(a) !== "hotline" || a.muted || a.state !== "OPEN") return;
    const at = EC.ms(ev.at);
    // History replayed at start is not news.
    if (Number.isFinite(at) && at < state.listTime - 2000) return;
    ring();
    const elder = EC.elderNow.get(a.elderId);
    const text = t("announce.critical", {
      kind: EC.tv("kind.", a.kind),
      who: elder ? elder.name : a.elderId,
      community: a.community || "",
      summary: EC.summaryOf(a),
    });
    announce(text);
    // The name may come a moment later: say it again with the name.
    if (!elder)
      EC.elder(a.elderId).then((e) => {
        if (e) announce(t("announce.critical", { kind: EC.tv("kind.", a.kind), who: e.name, community: a.community || "", summary: EC.summaryOf(a) }));
      });
  }

  /** Tells the operator when someone else acts on the alert in front of them. */
  function noticeOthers(ev) {
    if (!state.me || !ev.actor || ev.actor === state.me.operatorId) return;
    const a = ev.alert;
    if (!a || (a.id !== EC.record.alertId() && a.id !== state.selected[currentQueue()])) return;
    const at = EC.ms(ev.at);
    if (Number.isFinite(at) && at < state.listTime - 2000) return;
    const kind = EC.eventKind(ev.kind);
    const key = EC.has("notice." + kind) ? "notice." + kind : "notice.other";
    toast(t(key, { who: ev.actor, what: EC.tv("ev.", kind), alert: describe(a) }));
  }

  // ---------------------------------------------------------------
  // Drawing the queues

  let renderTimer = null;
  function scheduleRender() {
    if (renderTimer === null) renderTimer = setTimeout(render, 16);
    // Timers are slowed in a background tab: the title (what an operator
    // sees in the tab strip) is kept current at once.
    if (document.hidden) updateTitle();
  }
  function updateTitle() {
    let open = 0;
    for (const a of state.alerts.values()) if (queueOf(a) === "hotline" && a.state === "OPEN") open += 1;
    document.title = (open ? "(" + open + ") " : "") + t("app.title");
  }

  /**
   * The queue the server put the alert on. Only an alert without one the
   * page knows (from a newer server) is shown on the hotline, so that
   * nothing is hidden from everyone.
   */
  function queueOf(a) {
    return QUEUES.includes(a.queue) ? a.queue : "hotline";
  }
  app.queueOf = queueOf;
  function currentQueue() {
    return QUEUES.includes(state.tab) ? state.tab : "hotline";
  }
  function passes(a) {
    const f = state.filter;
    return (!f.district || a.district === f.district) && (!f.community || a.community === f.community);
  }
  function cmp(a, b) {
    // The care queue: what is open first, then what was recorded, newest first.
    const ra = a.state === "RESOLVED";
    const rb = b.state === "RESOLVED";
    if (ra !== rb) return ra ? 1 : -1;
    if (ra) return EC.ms(b.detectedAt) - EC.ms(a.detectedAt) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
    return (
      (EC.SEVERITY_RANK[b.severity] || 0) - (EC.SEVERITY_RANK[a.severity] || 0) ||
      EC.ms(a.detectedAt) - EC.ms(b.detectedAt) ||
      (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
    );
  }
  const rowId = (id) => "row-" + id;

  function render() {
    clearTimeout(renderTimer);
    renderTimer = null;
    if (!state.me) return;
    const now = EC.now();
    pruneRecorded(now);
    const all = [...state.alerts.values(), ...state.recorded.values()];
    updateFilters(all);
    for (const q of QUEUES) {
      const inQ = all.filter((a) => queueOf(a) === q);
      const rows = inQ.filter(passes).sort(cmp);
      renderQueue(q, rows, now);
      const over = inQ.filter((a) => overdue(a, now)).length;
      // The count is of what is to be answered: recorded alerts are not.
      $("count-" + q).textContent = String(inQ.filter((a) => a.state !== "RESOLVED").length);
      const ob = $("over-" + q);
      ob.hidden = over === 0;
      ob.textContent = t("queue.overdueCount", { n: over });
    }
    updateTitle();
    updateActionBar();
  }

  /** Recorded alerts older than the care queue shows are let go. */
  function pruneRecorded(now) {
    const oldest = now - RECORDED_DAYS * DAY_MS;
    for (const [id, a] of state.recorded) if (EC.ms(a.raisedAt) < oldest) state.recorded.delete(id);
  }

  function overdue(a, now) {
    const limit = EC.deadlineS(a);
    return limit > 0 && a.state === "OPEN" && now > EC.ms(a.detectedAt) + limit * 1000;
  }

  function renderQueue(q, rows, now) {
    const table = $("queue-" + q);
    let sel = state.selected[q];
    if (sel && !rows.some((a) => a.id === sel)) {
      // The selected alert left (resolved, or filtered out): take the row
      // that is now where it was.
      const idx = state.order[q].indexOf(sel);
      const next = rows[Math.max(0, Math.min(idx, rows.length - 1))];
      sel = next ? next.id : null;
    }
    if (!sel && rows.length) sel = rows[0].id;
    state.selected[q] = sel;
    state.order[q] = rows.map((a) => a.id);
    EC.put(table.tBodies[0], ...rows.map((a) => row(a, a.id === sel, now, q)));
    if (sel) table.setAttribute("aria-activedescendant", rowId(sel));
    else table.removeAttribute("aria-activedescendant");
    const empty = $("empty-" + q);
    empty.hidden = rows.length > 0;
    const emptyKey = {
      hotline: "queue.emptyHotline",
      operations: "queue.emptyOperations",
      care: "queue.emptyCare",
      provider: "queue.emptyProvider",
      supervision: "queue.emptySupervision",
      follow_up: "queue.emptyFollowUp",
    }[q];
    empty.textContent = state.loaded ? t(emptyKey) : t("queue.loading");
    table.classList.toggle("is-empty", rows.length === 0);
  }

  /**
   * What sets an alert apart beyond its kind: shown by late readings,
   * recorded rather than raised. Badges with their text, in every queue.
   */
  function marks(a) {
    const late = EC.lateMs(a);
    const d = late ? EC.fmtLate(late) : "";
    return [
      late
        ? el("span", { class: "badge late-badge", "data-badge": "late", title: t("badge.lateTitle", { d }), text: t("badge.late", { d }) })
        : null,
      a.recorded ? el("span", { class: "badge recorded-badge", "data-badge": "recorded", text: t("badge.recorded") }) : null,
    ];
  }
  app.marks = marks;

  /** A trend's days and usual range, in the page's language. */
  function trendFactors(a) {
    if (a.kind !== "trend" || !(a.factors || []).length) return null;
    return el(
      "ul",
      { class: "trend-factors", "aria-label": t("trend.factors") },
      a.factors.map((f) => el("li", { text: EC.factorText(f) })),
    );
  }
  app.trendFactors = trendFactors;

  /** "Trend · Time in bed": a trend names its figure. */
  function kindText(a) {
    const k = EC.tv("kind.", a.kind);
    return a.kind === "trend" && a.subject ? k + " · " + EC.tv("metric.", a.subject) : k;
  }
  app.kindText = kindText;

  function row(a, selected, now, q) {
    const elder = EC.elderNow.get(a.elderId);
    const sev = String(a.severity || "").toLowerCase();
    const st = String(a.state || "").toLowerCase();
    const flags = elder
      ? (elder.flags || [])
          .filter((f) => f === "dementia" || f === "lives_alone")
          .map((f) => el("span", { class: "mini-flag", text: EC.tv("flag.", f) }))
      : [];
    const fresh = state.fresh.get(a.id);
    const tr = el(
      "tr",
      {
        id: rowId(a.id),
        class:
          "alert-row sev-" +
          sev +
          (selected ? " selected" : "") +
          (overdue(a, now) ? " overdue" : "") +
          (fresh && Date.now() - fresh < 8000 ? " fresh" : ""),
        "data-alert-id": a.id,
        "data-severity": sev,
        "data-state": st,
        "data-kind": a.kind,
        "data-late-ms": EC.lateMs(a) ? String(EC.lateMs(a)) : null,
        "data-recorded": a.recorded ? "true" : null,
        "aria-selected": selected ? "true" : "false",
      },
      el("td", { class: "c-sev" }, el("span", { class: "badge sev-" + sev, text: EC.tv("severity.", a.severity) })),
      el(
        "td",
        { class: "c-kind" },
        el("span", { class: "kind", text: kindText(a) }),
        el("span", { class: "summary", text: EC.summaryOf(a) }),
        trendFactors(a),
        el("span", { class: "marks" }, marks(a)),
      ),
      el(
        "td",
        { class: "c-elder" },
        el("span", { class: "name", text: elder ? elder.name : a.elderId }),
        flags.length ? el("span", { class: "mini-flags" }, flags) : null,
      ),
      el(
        "td",
        { class: "c-community" },
        el("span", { text: a.community || "—" }),
        a.district ? el("span", { class: "district", text: a.district }) : null,
      ),
      el("td", { class: "c-state" }, el("span", { class: "badge state-" + st, text: EC.tv("state.", a.state) })),
      el("td", { class: "c-age num" }),
      // The care queue and the visits' ones have no deadline, escalations or silences.
      CALM.includes(q) ? null : el("td", { class: "c-deadline num" }),
      CALM.includes(q) ? null : el("td", { class: "c-esc num", text: a.escalations ? String(a.escalations) : "" }),
      CALM.includes(q) ? null : el("td", { class: "c-muted", text: a.muted ? t("queue.muted") : "" }),
    );
    tr._alert = a;
    tickRow(tr, now);
    return tr;
  }

  /** The ticking parts of a row: age and the acknowledgement countdown. */
  function tickRow(tr, now) {
    const a = tr._alert;
    const detected = EC.ms(a.detectedAt);
    const limit = EC.deadlineS(a);
    tr.cells[5].textContent = EC.fmtDuration((now - detected) / 1000);
    const dl = tr.cells[6];
    if (!dl) {
      tr.classList.toggle("overdue", false);
      tickFresh(tr);
      return;
    }
    const ack = EC.ms(a.acknowledgedAt);
    let text;
    let cls = "";
    if (limit === 0) {
      text = "—";
    } else if (a.state === "OPEN") {
      const left = (detected + limit * 1000 - now) / 1000;
      if (left >= 0) {
        text = EC.fmtClock(left);
        cls = left <= 15 ? "soon" : "";
      } else {
        text = t("queue.late", { d: EC.fmtClock(-left) });
        cls = "late";
      }
    } else if (Number.isFinite(ack)) {
      const took = (ack - detected) / 1000;
      text = t("queue.answered", { d: EC.fmtDuration(took) });
      cls = took <= limit ? "met" : "missed";
    } else {
      text = "—";
    }
    if (dl.textContent !== text) dl.textContent = text;
    dl.className = "c-deadline num " + cls;
    tr.classList.toggle("overdue", overdue(a, now));
    tickFresh(tr);
  }
  function tickFresh(tr) {
    if (tr.classList.contains("fresh")) {
      const f = state.fresh.get(tr._alert.id);
      if (!f || Date.now() - f > 8000) {
        tr.classList.remove("fresh");
        state.fresh.delete(tr._alert.id);
      }
    }
  }

  function tick() {
    if (!state.me) return;
    const now = EC.now();
    for (const [id, at] of state.fresh) if (Date.now() - at > 10000) state.fresh.delete(id);
    const overs = Object.fromEntries(QUEUES.map((q) => [q, 0]));
    for (const q of QUEUES) {
      for (const tr of $("queue-" + q).tBodies[0].rows) tickRow(tr, now);
    }
    for (const a of state.alerts.values()) if (overdue(a, now)) overs[queueOf(a)] += 1;
    for (const q of QUEUES) {
      const ob = $("over-" + q);
      ob.hidden = overs[q] === 0;
      const text = t("queue.overdueCount", { n: overs[q] });
      if (ob.textContent !== text) ob.textContent = text;
    }
  }

  // Filters by district and community, from the alerts the queue holds.
  let filterKey = "";
  function updateFilters(all) {
    const districts = [...new Set(all.map((a) => a.district).filter(Boolean))].sort();
    const f = state.filter;
    if (f.district && !districts.includes(f.district)) districts.push(f.district);
    const comms = [
      ...new Set(all.filter((a) => !f.district || a.district === f.district).map((a) => a.community).filter(Boolean)),
    ].sort();
    if (f.community && !comms.includes(f.community)) comms.push(f.community);
    const key = EC.lang() + "|" + districts.join("\u0001") + "|" + comms.join("\u0001");
    if (key === filterKey) return;
    filterKey = key;
    fill($("filter-district"), districts, f.district);
    fill($("filter-community"), comms, f.community);
    EC.stats.setCommunities([...new Set(all.map((a) => a.community).filter(Boolean))].sort());
  }
  function fill(sel, values, chosen) {
    EC.put(sel, el("option", { value: "", text: t("filter.all") }), ...values.map((v) => el("option", { value: v, text: v })));
    sel.value = chosen || "";
  }

  // ---------------------------------------------------------------
  // Selection, the record, tabs

  function selectRow(q, id, opts) {
    const o = opts || {};
    state.selected[q] = id;
    const table = $("queue-" + q);
    for (const tr of table.tBodies[0].rows) {
      const on = tr.dataset.alertId === id;
      tr.setAttribute("aria-selected", on ? "true" : "false");
      tr.classList.toggle("selected", on);
      if (on && o.scroll !== false) tr.scrollIntoView({ block: "nearest" });
    }
    if (id) table.setAttribute("aria-activedescendant", rowId(id));
    updateActionBar();
  }

  function move(delta) {
    const q = currentQueue();
    const ids = state.order[q];
    if (!ids.length) return;
    const i = ids.indexOf(state.selected[q]);
    const n = i < 0 ? 0 : Math.max(0, Math.min(ids.length - 1, i + delta));
    selectRow(q, ids[n]);
    const active = document.activeElement;
    if (!active || active === document.body || !$("record").contains(active)) $("queue-" + q).focus({ preventScroll: true });
    // The record follows the selection at once, so that an action key
    // never acts on another alert than the one highlighted (the record
    // waits a moment before loading, for someone running down the list).
    if (EC.record.isOpen()) EC.record.open(ids[n], { focus: false, follow: true });
    updateActionBar();
  }

  function openSelected() {
    const id = state.selected[currentQueue()];
    if (!id) {
      toast(t("act.noTarget"), true);
      return;
    }
    EC.record.open(id, { focus: true });
    updateActionBar();
  }

  app.afterRecordClosed = function () {
    updateActionBar();
    const q = currentQueue();
    if (!VIEWS.includes(state.tab)) $("queue-" + q).focus({ preventScroll: true });
  };

  function selectTab(name, focus) {
    state.tab = name;
    for (const n of TABS) {
      const tab = $("tab-" + n);
      const on = n === name;
      tab.setAttribute("aria-selected", on ? "true" : "false");
      tab.tabIndex = on ? 0 : -1;
      $("panel-" + n).hidden = !on;
    }
    document.body.dataset.tab = name;
    const view = VIEWS.includes(name);
    $("actions").hidden = view;
    $("filters").hidden = view;
    if (view) EC.record.close();
    if (name === "stats") EC.stats.shown();
    else EC.stats.hidden();
    if (name === "visits") EC.visits.shown();
    if (focus) $("tab-" + name).focus();
    if (state.me) render();
  }

  function onTabKey(e) {
    const i = TABS.indexOf(state.tab);
    let n = null;
    if (e.key === "ArrowRight") n = (i + 1) % TABS.length;
    else if (e.key === "ArrowLeft") n = (i + TABS.length - 1) % TABS.length;
    else if (e.key === "Home") n = 0;
    else if (e.key === "End") n = TABS.length - 1;
    if (n === null) return;
    e.preventDefault();
    selectTab(TABS[n], true);
  }

  // ---------------------------------------------------------------
  // Acting on an alert

  /** The alert the actions apply to: the open record's, else the selected row's. */
  function target() {
    const rid = EC.record.alertId();
    if (rid) return EC.record.alert() || app.alert(rid);
    if (VIEWS.includes(state.tab)) return null;
    const id = state.selected[currentQueue()];
    return id ? app.alert(id) : null;
  }

  function describe(a) {
    const elder = EC.elderNow.get(a.elderId);
    return t("act.describe", {
      kind: kindText(a),
      who: elder ? elder.name : a.elderId,
      state: EC.tv("state.", a.state),
    });
  }

  function updateActionBar() {
    const a = target();
    const tEl = $("act-target");
    tEl.textContent = a ? t("act.target", { what: describe(a) }) : t("act.noTarget");
    for (const k of ACTIONS) $("act-" + k).disabled = !app.can(k) || !a || !fits(k, a);
    $("act-open").disabled = !state.selected[currentQueue()] || VIEWS.includes(state.tab);
    $("act-role-note").hidden = !state.me || app.can("note") || app.can("ack");
  }

  /**
   * Whether action `k` applies to alert `a` at all: a resolved alert (a
   * recorded one) takes notes only; the care queue's never escalate.
   */
  function fits(k, a) {
    if (a.state === "RESOLVED") return k === "note";
    if (k === "escalate") return !CALM.includes(queueOf(a));
    return true;
  }

  async function act(kind) {
    if (!state.me) return;
    if (!app.can(kind)) {
      toast(t(state.me.role === "viewer" ? "act.viewer" : "act.notAllowed", { role: EC.tv("role.", state.me.role) }), true);
      return;
    }
    const a = target();
    if (!a) {
      toast(t("act.noTarget"), true);
      return;
    }
    if (!fits(kind, a)) {
      toast(t("act.notFor", { what: describe(a) }), true);
      return;
    }
    const language = EC.lang();
    switch (kind) {
      case "ack":
        return call("Acknowledge", { alertId: a.id, language }, a, "done.ack").catch(() => {});
      case "escalate":
        return call("Escalate", { alertId: a.id, language }, a, "done.escalate").catch(() => {});
      case "dispatch":
        return openDialog("dlg-dispatch", a);
      case "note":
        return openDialog("dlg-note", a);
      case "resolve":
        return openDialog("dlg-resolve", a);
      case "silence":
        return openDialog("dlg-silence", a);
    }
  }

  async function call(method, msg, a, doneKey) {
    try {
      const res = await EC.rpc("AlertService", method, msg);
      applyAlert(res);
      toast(t(doneKey, { what: describe(res || a) }));
      return res;
    } catch (e) {
      let text = errorText(e);
      if (method === "Acknowledge" && e.code === "failed_precondition") text = await whoAcked(a, text);
      toast(text, true);
      throw e;
    }
  }

  /** Who acknowledged first, from the alert's history, before the server's words. */
  async function whoAcked(a, text) {
    try {
      const full = await EC.rpc("AlertService", "GetAlert", { id: a.id, language: EC.lang() });
      applyAlert(full);
      const h = (full.history || []).filter((x) => EC.eventKind(x.kind) === "acknowledged").pop();
      // The server may name them itself; in English that is enough.
      if (h && !(EC.lang() === "en" && h.actor && text.includes(h.actor))) {
        return t("act.ackedBy", {
          who: h.actor || t("history.system"),
          at: EC.fmtTime(EC.ms(h.at)),
          msg: text,
        });
      }
    } catch (_) {
      /* the server's words alone */
    }
    return text;
  }

  // Dialogs: real <dialog> elements, opened modal (focus stays inside,
  // Escape closes), focus back where it was when they close.

  function openDialog(id, a) {
    const d = $(id);
    d._alertId = a.id;
    d._alert = a;
    d._return = document.activeElement;
    d.querySelector(".dlg-target").textContent = describe(a);
    d.querySelector(".dlg-error").textContent = "";
    const form = d.querySelector("form");
    if (id === "dlg-dispatch") prepDispatch(a);
    if (id === "dlg-note") $("note-text").value = "";
    if (id === "dlg-resolve") prepResolve(a);
    if (id === "dlg-silence") prepSilence(a);
    for (const b of form.querySelectorAll("button")) b.disabled = false;
    d.showModal();
    const first = d.querySelector("[data-autofocus]") || form.querySelector("input, select, textarea");
    if (first) first.focus();
  }

  function onDialogClose(e) {
    const d = e.target;
    const back = d._return;
    d._return = null;
    if (back && document.contains(back) && !back.disabled) back.focus();
    else if (EC.record.isOpen()) $("record-title").focus();
    else $("queue-" + currentQueue()).focus();
  }

  function prepDispatch(a) {
    const elder = EC.elderNow.get(a.elderId);
    $("dispatch-type").value = "FAMILY_CONTACT";
    $("dispatch-name").value = "";
    $("dispatch-phone").value = "";
    $("dispatch-note").value = "";
    const use = $("dispatch-use-contact");
    if (elder && (elder.contactName || elder.contactPhone)) {
      use.hidden = false;
      use.textContent = t("dispatch.useContact", { name: elder.contactName || "", phone: elder.contactPhone || "" });
    } else use.hidden = true;
    dispatchTypeChanged();
  }
  function dispatchTypeChanged() {
    const amb = $("dispatch-type").value === "AMBULANCE_120";
    $("dispatch-name").required = !amb;
    $("dispatch-name-hint").textContent = amb ? t("dispatch.nameOptional") : "";
    $("dispatch-phone").placeholder = amb ? "120" : "";
  }
  async function submitDispatch(e) {
    e.preventDefault();
    const d = $("dlg-dispatch");
    const type = $("dispatch-type").value;
    let phone = $("dispatch-phone").value.replace(/[\s-]/g, "");
    if (!phone && type === "AMBULANCE_120") phone = "120";
    const name = $("dispatch-name").value.trim();
    const err = d.querySelector(".dlg-error");
    if (!name && type !== "AMBULANCE_120") {
      err.textContent = t("dispatch.needName");
      $("dispatch-name").focus();
      return;
    }
    if (!/^\+?[0-9]+$/.test(phone)) {
      err.textContent = t("dispatch.needPhone");
      $("dispatch-phone").focus();
      return;
    }
    const msg = {
      alertId: d._alertId,
      responder: { type, name, phone },
      note: $("dispatch-note").value.trim(),
      language: EC.lang(),
    };
    await submitIn(d, () => call("Dispatch", msg, d._alert, "done.dispatch"));
  }
  async function submitNote(e) {
    e.preventDefault();
    const d = $("dlg-note");
    const note = $("note-text").value.trim();
    if (!note) {
      d.querySelector(".dlg-error").textContent = t("note.empty");
      $("note-text").focus();
      return;
    }
    await submitIn(d, () => call("AddNote", { alertId: d._alertId, note, language: EC.lang() }, d._alert, "done.note"));
  }
  function prepResolve(a) {
    const sel = $("resolve-outcome");
    $("resolve-note").value = "";
    // A follow-up call ends with the elder's answer, and only with it.
    const followUp = a.kind === "follow_up";
    const values = followUp ? EC.FOLLOW_UP_OUTCOMES : OUTCOMES.DISPATCHED;
    EC.put(sel, ...values.map((v) => el("option", { value: v, text: EC.tv("outcome.", v) })));
    if (followUp) {
      sel.value = "satisfied";
      $("resolve-hint").textContent = t("resolve.hint.followUp");
      return;
    }
    const allowed = OUTCOMES[a.state] || OUTCOMES.DISPATCHED;
    for (const o of sel.options) o.disabled = !allowed.includes(o.value);
    const pref = { OPEN: "false_alarm", ACKNOWLEDGED: "handled_by_phone", DISPATCHED: "responder_on_site" }[a.state];
    sel.value = allowed.includes(pref) ? pref : allowed[0];
    $("resolve-hint").textContent = t("resolve.hint." + String(a.state || "").toLowerCase());
    $("resolve-note").value = "";
  }
  /** The follow-up call's outcome, from the record's buttons. */
  app.resolveFollowUp = (a, outcome, note) =>
    call("Resolve", { alertId: a.id, outcome, note, language: EC.lang() }, a, "done.resolve");

  async function submitResolve(e) {
    e.preventDefault();
    const d = $("dlg-resolve");
    const msg = {
      alertId: d._alertId,
      outcome: $("resolve-outcome").value,
      note: $("resolve-note").value.trim(),
      language: EC.lang(),
    };
    await submitIn(d, () => call("Resolve", msg, d._alert, "done.resolve"));
  }
  function localInputValue(ms) {
    const d = new Date(ms);
    const p2 = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + p2(d.getMonth() + 1) + "-" + p2(d.getDate()) + "T" + p2(d.getHours()) + ":" + p2(d.getMinutes());
  }
  function prepSilence(a) {
    const dev = a.subject || a.deviceId;
    const perDevice = PER_DEVICE.includes(a.kind);
    $("silence-kind").textContent = EC.tv("kind.", a.kind);
    const scope = $("silence-scope");
    EC.put(scope,
      el("option", { value: "elder", text: t("silence.scopeElder", { who: (EC.elderNow.get(a.elderId) || {}).name || a.elderId }) }),
      dev ? el("option", { value: "device", text: t("silence.scopeDevice", { id: dev }) }) : null,
    );
    scope.value = perDevice && dev ? "device" : "elder";
    $("silence-reason").value = "";
    const now = Date.now();
    const until = $("silence-until");
    until.min = localInputValue(now + 60 * 1000);
    until.max = localInputValue(now + 31 * 24 * 3600 * 1000 - 60 * 1000);
    until.value = localInputValue(Math.ceil((now + 24 * 3600 * 1000) / 900000) * 900000);
  }
  async function submitSilence(e) {
    e.preventDefault();
    const d = $("dlg-silence");
    const a = d._alert;
    const err = d.querySelector(".dlg-error");
    const reason = $("silence-reason").value.trim();
    if (!reason) {
      err.textContent = t("silence.needReason");
      $("silence-reason").focus();
      return;
    }
    const until = new Date($("silence-until").value);
    if (!Number.isFinite(until.getTime()) || until.getTime() <= Date.now()) {
      err.textContent = t("silence.needUntil");
      $("silence-until").focus();
      return;
    }
    const msg = { kind: a.kind, reason, until: until.toISOString() };
    if ($("silence-scope").value === "device") msg.deviceId = a.subject || a.deviceId;
    else msg.elderId = a.elderId;
    await submitIn(d, async () => {
      try {
        const s = await EC.rpc("AlertService", "CreateSilence", msg);
        toast(t("done.silence", { kind: EC.tv("kind.", a.kind), until: EC.fmtDateTime(EC.ms(s.until)) }));
        EC.record.onSilence(s);
      } catch (x) {
        toast(errorText(x), true);
        throw x;
      }
    });
  }
  /** Runs a dialog's call: closes it when done, keeps it open with the error otherwise. */
  async function submitIn(d, fn) {
    const buttons = d.querySelectorAll("button");
    for (const b of buttons) b.disabled = true;
    const err = d.querySelector(".dlg-error");
    err.textContent = "";
    try {
      await fn();
      d.close();
    } catch (x) {
      err.textContent = errorText(x);
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  }

  function openKeys() {
    const d = $("dlg-keys");
    if (d.open) return;
    d._return = document.activeElement;
    d.showModal();
    d.querySelector("button").focus();
  }

  // ---------------------------------------------------------------
  // Keys

  function onKey(e) {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    if (!state.me) return;
    if (document.querySelector("dialog[open]")) return;
    const tgt = e.target;
    if (tgt && tgt.closest && tgt.closest("input, textarea, select, [contenteditable='true']")) return;
    const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
    if (key === "?") {
      e.preventDefault();
      openKeys();
      return;
    }
    if (key === "Escape") {
      if (EC.record.isOpen()) {
        e.preventDefault();
        EC.record.close();
      }
      return;
    }
    if (VIEWS.includes(state.tab)) {
      // A view's own keys: only the tab digits.
      if (/^[1-8]$/.test(key) && !(tgt && tgt.closest && tgt.closest("input, select, textarea"))) {
        e.preventDefault();
        selectTab(TABS[Number(key) - 1], true);
      }
      return;
    }
    const onControl = tgt && tgt.closest && tgt.closest("button, a, summary, [role='tab']");
    switch (key) {
      case "j":
      case "ArrowDown":
        if (onControl && key === "ArrowDown") return;
        e.preventDefault();
        move(1);
        return;
      case "k":
      case "ArrowUp":
        if (onControl && key === "ArrowUp") return;
        e.preventDefault();
        move(-1);
        return;
      case "Enter":
        if (onControl) return;
        e.preventDefault();
        openSelected();
        return;
      case "a":
        e.preventDefault();
        act("ack");
        return;
      case "d":
        e.preventDefault();
        act("dispatch");
        return;
      case "e":
        e.preventDefault();
        act("escalate");
        return;
      case "n":
        e.preventDefault();
        act("note");
        return;
      case "r":
        e.preventDefault();
        act("resolve");
        return;
      case "s":
        e.preventDefault();
        act("silence");
        return;
      case "1":
      case "2":
      case "3":
      case "4":
      case "5":
      case "6":
      case "7":
      case "8":
        e.preventDefault();
        selectTab(TABS[Number(key) - 1], true);
        return;
    }
  }

  // ---------------------------------------------------------------
  // Language

  function applyLang() {
    EC.applyI18n();
    const b = $("lang");
    const other = EC.lang() === "en" ? "zh-CN" : "en";
    b.textContent = t("lang.other");
    b.setAttribute("lang", other);
    b.setAttribute("aria-label", t("lang.switch"));
    setConn(state.conn);
    updateSound();
    renderWho();
    filterKey = "";
    if (state.me) render();
    updateActionBar();
    EC.stats.rerender();
    EC.visits.rerender();
  }

  function toggleLang() {
    EC.setLang(EC.lang() === "en" ? "zh-CN" : "en");
    try {
      localStorage.setItem("eldercare.lang", EC.lang());
    } catch (_) {
      /* private mode */
    }
    applyLang();
    EC.record.relang();
    // Summaries come in the language asked for: follow the feed in the
    // new one, from where it was.
    if (state.me && state.feed) openFeed();
  }

  // ---------------------------------------------------------------
  // Wiring

  function wire() {
    $("signin").addEventListener("submit", onSignin);
    $("signout").addEventListener("click", signOut);
    $("lang").addEventListener("click", toggleLang);
    $("sound").addEventListener("click", () => {
      unlockAudio();
      tone([[660, 880]]);
    });
    $("keys-btn").addEventListener("click", openKeys);
    for (const n of TABS) $("tab-" + n).addEventListener("click", () => selectTab(n, true));
    $("tabs").addEventListener("keydown", onTabKey);
    for (const q of QUEUES) {
      const table = $("queue-" + q);
      table.tBodies[0].addEventListener("click", (e) => {
        const tr = e.target.closest("tr.alert-row");
        if (!tr) return;
        selectRow(q, tr.dataset.alertId, { scroll: false });
        EC.record.open(tr.dataset.alertId, { focus: true });
        updateActionBar();
      });
    }
    $("filter-district").addEventListener("change", (e) => {
      state.filter.district = e.target.value;
      state.filter.community = "";
      filterKey = "";
      render();
    });
    $("filter-community").addEventListener("change", (e) => {
      state.filter.community = e.target.value;
      render();
    });
    for (const k of ACTIONS) $("act-" + k).addEventListener("click", () => act(k));
    $("act-open").addEventListener("click", openSelected);
    $("record-close").addEventListener("click", () => EC.record.close());
    $("form-dispatch").addEventListener("submit", submitDispatch);
    $("form-note").addEventListener("submit", submitNote);
    $("form-resolve").addEventListener("submit", submitResolve);
    $("form-silence").addEventListener("submit", submitSilence);
    $("dispatch-type").addEventListener("change", dispatchTypeChanged);
    $("dispatch-use-contact").addEventListener("click", () => {
      const d = $("dlg-dispatch");
      const elder = EC.elderNow.get((d._alert || {}).elderId);
      if (!elder) return;
      $("dispatch-type").value = "FAMILY_CONTACT";
      $("dispatch-name").value = elder.contactName || "";
      $("dispatch-phone").value = elder.contactPhone || "";
      dispatchTypeChanged();
      $("dispatch-submit").focus();
    });
    for (const d of document.querySelectorAll("dialog")) {
      d.addEventListener("close", onDialogClose);
      for (const b of d.querySelectorAll("[data-close]")) b.addEventListener("click", () => d.close());
    }
    document.addEventListener("keydown", onKey);
    // Any click or key is a gesture that lets sound play.
    const gesture = () => {
      if (!audio || audio.state !== "running") unlockAudio();
    };
    document.addEventListener("pointerdown", gesture, true);
    document.addEventListener("keydown", gesture, true);
    window.addEventListener("online", () => {
      if (state.me && (!state.feed || state.feed.readyState === EventSource.CLOSED)) openFeed();
    });
    EC.onUnauthenticated = () => {
      if (state.me) signedOut(t("signin.expired"));
    };
  }

  async function boot() {
    let l = "zh-CN";
    try {
      l = localStorage.getItem("eldercare.lang") || "zh-CN";
    } catch (_) {
      /* default */
    }
    EC.setLang(l);
    wire();
    EC.stats.init();
    EC.visits.init();
    applyLang();
    setInterval(tick, 1000);
    try {
      const me = await EC.http("GET", "/api/session");
      start(me);
    } catch (_) {
      showSignin("");
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();

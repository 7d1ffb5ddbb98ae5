// The console's shared helpers: strings, DOM building, times and the
// JSON API. Everything hangs off window.EC (no modules, no globals).
"use strict";
(function () {
  const EC = (window.EC = window.EC || {});

  // ---------------------------------------------------------------
  // Strings (the dictionaries live in i18n.js)

  let lang = "zh-CN";
  EC.lang = () => lang;
  EC.setLang = function (l) {
    lang = l === "en" ? "en" : "zh-CN";
    document.documentElement.lang = lang;
    fmtCache.clear();
  };

  function lookup(l, key) {
    const d = window.I18N && window.I18N[l];
    return d ? d[key] : undefined;
  }

  /** The string `key` in the current language, with {name} filled in. */
  EC.t = function (key, params) {
    let s = lookup(lang, key);
    if (s === undefined) s = lookup("en", key);
    if (s === undefined) return key;
    if (params) {
      s = s.replace(/\{(\w+)\}/g, (m, k) =>
        params[k] === undefined || params[k] === null ? m : String(params[k]),
      );
    }
    return s;
  };
  EC.has = (key) => lookup(lang, key) !== undefined || lookup("en", key) !== undefined;
  /** `prefix + value` translated, or the value itself when unknown. */
  EC.tv = function (prefix, value) {
    if (value === undefined || value === null || value === "") return "";
    const k = prefix + String(value).toLowerCase();
    return EC.has(k) ? EC.t(k) : String(value);
  };

  /** Fills every data-i18n* attribute under root. */
  EC.applyI18n = function (root) {
    const r = root || document;
    for (const n of r.querySelectorAll("[data-i18n]")) n.textContent = EC.t(n.dataset.i18n);
    for (const n of r.querySelectorAll("[data-i18n-label]"))
      n.setAttribute("aria-label", EC.t(n.dataset.i18nLabel));
    for (const n of r.querySelectorAll("[data-i18n-title]")) n.title = EC.t(n.dataset.i18nTitle);
    for (const n of r.querySelectorAll("[data-i18n-placeholder]"))
      n.placeholder = EC.t(n.dataset.i18nPlaceholder);
  };

  // ---------------------------------------------------------------
  // DOM

  EC.$ = (id) => document.getElementById(id);
  /** Replaces node's children with kids, leaving out null, undefined and false. */
  EC.put = (node, ...kids) =>
    node.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));

  function build(node, attrs, children) {
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "class") node.setAttribute("class", v);
        else if (k === "text") node.textContent = v;
        else if (k.startsWith("on") && typeof v === "function")
          node.addEventListener(k.slice(2), v);
        else if (v === true) node.setAttribute(k, "");
        else node.setAttribute(k, String(v));
      }
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }
  /** An HTML element: el("td", {class: "x", "data-a": 1}, "text", child). */
  EC.el = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);
  /** An SVG element, same shape. */
  EC.svg = (tag, attrs, ...children) =>
    build(document.createElementNS("http://www.w3.org/2000/svg", tag), attrs, children);

  // ---------------------------------------------------------------
  // Clock: times on the page are the server's (detection, deadlines).
  // The Date header of each answer bounds the offset to the browser's
  // clock; the offset stays 0 unless the clocks clearly differ.

  let lo = -Infinity;
  let hi = Infinity;
  let offset = 0;
  EC.noteServerDate = function (header, sent, received) {
    const s = Date.parse(header || "");
    if (!Number.isFinite(s)) return;
    // The header is whole seconds: the server's clock was in [s, s+1000)
    // at some moment between sent and received.
    const nlo = s - received;
    const nhi = s + 999 - sent;
    if (nlo > hi || nhi < lo) {
      lo = nlo;
      hi = nhi;
    } else {
      lo = Math.max(lo, nlo);
      hi = Math.min(hi, nhi);
    }
    offset = lo <= 0 && hi >= 0 ? 0 : Math.round((lo + hi) / 2);
  };
  /** Now, by the server's clock (ms). */
  EC.now = () => Date.now() + offset;
  /** An RFC 3339 time (or nothing) in ms; NaN when absent. */
  EC.ms = (ts) => (ts ? Date.parse(ts) : NaN);

  EC.localTz = (function () {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    } catch (_) {
      return "UTC";
    }
  })();

  const fmtCache = new Map();
  function fmt(kind, tz) {
    const key = kind + "|" + (tz || "") + "|" + lang;
    let f = fmtCache.get(key);
    if (!f) {
      const o = { hour12: false, timeZone: tz || undefined };
      if (kind === "time" || kind === "datetime") {
        o.hour = "2-digit";
        o.minute = "2-digit";
        o.second = "2-digit";
      }
      if (kind === "hm") {
        o.hour = "2-digit";
        o.minute = "2-digit";
      }
      if (kind === "datetime" || kind === "date") {
        o.year = "numeric";
        o.month = "2-digit";
        o.day = "2-digit";
      }
      try {
        f = new Intl.DateTimeFormat(lang, o);
      } catch (_) {
        delete o.timeZone;
        f = new Intl.DateTimeFormat(lang, o);
      }
      fmtCache.set(key, f);
    }
    return f;
  }
  EC.fmtTime = (ms, tz) => (Number.isFinite(ms) ? fmt("time", tz).format(ms) : "—");
  EC.fmtHM = (ms, tz) => (Number.isFinite(ms) ? fmt("hm", tz).format(ms) : "—");
  EC.fmtDateTime = (ms, tz) => (Number.isFinite(ms) ? fmt("datetime", tz).format(ms) : "—");

  /** The elder's IANA zone, or the registry's default. */
  EC.elderTz = (elder) => (elder && elder.timezone) || "Asia/Shanghai";
  /** True when the clock on the elder's wall shows something else than ours. */
  EC.tzDiffers = function (tz) {
    if (!tz || tz === EC.localTz) return false;
    const t = EC.now();
    try {
      return fmt("datetime", tz).format(t) !== fmt("datetime", EC.localTz).format(t);
    } catch (_) {
      return false;
    }
  };
  /**
   * A time in the centre's zone, and in the elder's when that differs:
   * "18:02:11" or "18:02:11 (elder's time 19:02:11)".
   */
  EC.fmtBoth = function (ms, tz, withDate) {
    if (!Number.isFinite(ms)) return "—";
    const f = withDate ? EC.fmtDateTime : EC.fmtTime;
    const here = f(ms);
    if (!EC.tzDiffers(tz)) return here;
    return EC.t("time.both", { here, there: f(ms, tz), tz });
  };

  /** A duration in seconds: "45 秒", "2 分 05 秒", "1 小时 02 分". */
  EC.fmtDuration = function (sec) {
    if (!Number.isFinite(sec)) return "—";
    const neg = sec < 0;
    let s = Math.floor(Math.abs(sec));
    const h = Math.floor(s / 3600);
    s -= h * 3600;
    const m = Math.floor(s / 60);
    s -= m * 60;
    const p2 = (n) => String(n).padStart(2, "0");
    let out;
    if (h > 0) out = EC.t("dur.hm", { h, m: p2(m) });
    else if (m > 0) out = EC.t("dur.ms", { m, s: p2(s) });
    else out = EC.t("dur.s", { s });
    return neg ? "-" + out : out;
  };
  /** A countdown as m:ss. */
  EC.fmtClock = function (sec) {
    const neg = sec < 0;
    let s = Math.floor(Math.abs(sec));
    const m = Math.floor(s / 60);
    s -= m * 60;
    return (neg ? "-" : "") + m + ":" + String(s).padStart(2, "0");
  };

  EC.fmtNum = function (n, digits) {
    if (!Number.isFinite(n)) return "—";
    return new Intl.NumberFormat(lang, {
      maximumFractionDigits: digits === undefined ? 1 : digits,
    }).format(n);
  };
  EC.fmtPct = function (share) {
    if (!Number.isFinite(share)) return "—";
    return new Intl.NumberFormat(lang, { style: "percent", maximumFractionDigits: 1 }).format(share);
  };

  // ---------------------------------------------------------------
  // Alerts

  EC.SEVERITY_RANK = { CRITICAL: 4, HIGH: 3, MEDIUM: 2, LOW: 1 };
  /**
   * Seconds to acknowledge an alert in: the alarm-centre standard's 60 s
   * for CRITICAL and 180 s otherwise; 0 (none) for what the server never
   * escalates: LOW maintenance alerts, muted ones and the care queue's.
   */
  EC.deadlineS = (a) =>
    a.muted || a.severity === "LOW" || EC.CALM_QUEUES.includes(a.queue) ? 0 : a.severity === "CRITICAL" ? 60 : 180;
  /** Queues the server never escalates: care managers', providers', supervisors', follow-up calls. */
  EC.CALM_QUEUES = ["care", "provider", "supervision", "follow_up"];
  /** The answers a follow-up call is resolved with, and only it. */
  EC.FOLLOW_UP_OUTCOMES = ["satisfied", "complaint", "no_answer"];
  /**
   * Milliseconds the readings that showed the alert arrived late (a
   * gateway's upload after an outage); 0 when judged live. int64 comes
   * as a string in the JSON mapping.
   */
  EC.lateMs = (a) => {
    const n = Number(a && a.lateMs);
    return Number.isFinite(n) && n > 0 ? n : 0;
  };
  /** A lateness in whole minutes: "35 分钟", "5 h 0 min". */
  EC.fmtLate = function (ms) {
    const total = Math.max(1, Math.round(ms / 60000));
    const h = Math.floor(total / 60);
    const m = total % 60;
    return h > 0 ? EC.t("late.hm", { h, m }) : EC.t("late.min", { m });
  };
  /**
   * A trend alert's factor in the page's language: the server writes
   * "day 2026-11-20: 5.0" and "usual 1.0-3.0 (median 2.0, 28 days)";
   * anything else is shown as it came.
   */
  EC.factorText = function (f) {
    const s = String(f || "");
    let m = /^day (\S+): (.+)$/.exec(s);
    if (m) return EC.t("trend.day", { day: m[1], v: m[2] });
    m = /^usual (.+) \(median (.+), (\d+) days\)$/.exec(s);
    if (m) return EC.t("trend.usual", { range: m[1], median: m[2], n: m[3] });
    return s;
  };
  /** Event kinds as the page names them: RESOLVED_EVENT -> resolved. */
  EC.eventKind = (k) => String(k || "").replace(/_EVENT$/, "").toLowerCase();
  EC.summaryOf = (a) =>
    (lang === "en" ? a.summaryEn : a.summaryZh) || a.summary || a.summaryEn || "";
  /** Reading.json parsed, or {}. */
  EC.body = function (r) {
    try {
      return JSON.parse(r.json || "{}") || {};
    } catch (_) {
      return {};
    }
  };

  // ---------------------------------------------------------------
  // The JSON API

  class ApiError extends Error {
    constructor(code, message, status) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }
  EC.ApiError = ApiError;
  /** Called with the error when any call answers 401. */
  EC.onUnauthenticated = null;

  EC.http = async function (method, path, body) {
    const sent = Date.now();
    let res;
    try {
      const init = { method, credentials: "same-origin", headers: {} };
      if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      res = await fetch(path, init);
    } catch (_) {
      throw new ApiError("unavailable", EC.t("err.network"), 0);
    }
    EC.noteServerDate(res.headers.get("Date"), sent, Date.now());
    let data = null;
    const text = await res.text().catch(() => "");
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!res.ok) {
      const err = new ApiError(
        (data && data.code) || "unknown",
        (data && data.message) || res.statusText || String(res.status),
        res.status,
      );
      if (res.status === 401 && path !== "/api/session" && EC.onUnauthenticated)
        EC.onUnauthenticated(err);
      throw err;
    }
    return data;
  };
  /** One call: EC.rpc("AlertService", "GetAlert", {id}). */
  EC.rpc = (service, method, msg) =>
    EC.http("POST", "/api/eldercare.v1." + service + "/" + method, msg || {});

  /** Every page of a paged list call, up to maxPages. */
  EC.rpcAll = async function (service, method, msg, field, maxPages) {
    const out = [];
    let token = "";
    for (let i = 0; i < (maxPages || 20); i++) {
      const r = await EC.rpc(service, method, Object.assign({}, msg, { pageToken: token }));
      out.push(...((r && r[field]) || []));
      token = (r && r.nextPageToken) || "";
      if (!token) break;
    }
    return out;
  };

  /** The registry's record of an elder, fetched once (null if unknown). */
  const elders = new Map();
  EC.elder = function (id) {
    if (!id) return Promise.resolve(null);
    let p = elders.get(id);
    if (!p) {
      p = EC.rpc("RegistryService", "GetElder", { elderId: id }).catch((e) => {
        // Not found stays unknown; anything else may be asked again.
        if (e.code !== "not_found") elders.delete(id);
        return null;
      });
      elders.set(id, p);
      p.then((v) => {
        if (v) EC.elderNow.set(id, v);
      });
    }
    return p;
  };
  /** Elders already fetched, for drawing without waiting. */
  EC.elderNow = new Map();
  EC.forgetElders = () => {
    elders.clear();
    EC.elderNow.clear();
  };
})();

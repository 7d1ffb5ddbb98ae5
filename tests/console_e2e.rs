//! The hotline console in a real browser: Debian's headless Chromium,
//! driven over WebDriver (its `chromedriver`, through fantoccini), against
//! the real `eldercare` binary, with devices publishing through the stock
//! `mosquitto_pub`. The harness starts chromedriver on a port of its own
//! choosing and ends it, with every browser it started, when the test
//! ends, passed or failed.
//!
//! Chromium and chromedriver are required, never skipped: without them
//! these tests fail saying how to install them (`scripts/test` does). The
//! accessibility check runs axe-core from its npm package, pinned by
//! version and SHA-256 (`scripts/test` fetches the registry tarball with curl).
//!
//! Every wait is a condition polled until a deadline that only turns a
//! hang into a failure; a wait that fails leaves a screenshot and the
//! page's text behind and says where.
//!
//! The page is tested through its stable hooks only (ids, `data-*`,
//! `aria-selected`, `window.eldercareConsole`), never CSS classes (but
//! `alert-row` and `overdue`, which are hooks) or wording.
mod support;

use eldercare_proto::v1 as pb;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// How often a condition in the page is checked again.
const POLL: Duration = Duration::from_millis(50);

/// One browser test at a time: two Chromiums of one test already fill a
/// 2-core machine, and a test measures a latency.
static BROWSERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// axe-core from the npm registry, pinned: the registry's tarball of this
/// version (scripts/test fetches it with curl; keep both in step).
const AXE_VERSION: &str = "4.14.1";
const AXE_SHA256: &str = "e6b0ce02b84d892e2e33e403485e7f3d6c29e2be6df65daf44d89ba564139745";

/// The registry's elders. E3's night (when wandering off is CRITICAL) is
/// set hours away from now, so that its geofence alert is MEDIUM whenever
/// the test runs.
fn elders() -> String {
    let now = chrono::Utc::now();
    let at = |h| (now + chrono::Duration::hours(h)).format("%H:%M");
    format!(
        "elder_id,name,district,community,home_lat,home_lon,safe_radius_m,timezone,night_start,night_end\n\
         E1,王秀英,浦东新区,花木街道,31.2000,121.5000,300,,,\n\
         E2,李建国,浦东新区,花木街道,31.2100,121.5100,300,,,\n\
         E3,Zhang Wei,徐汇区,田林街道,31.1800,121.4300,300,UTC,{},{}\n",
        at(6),
        at(7)
    )
}
// A day's heartbeat: no device_offline alert joins the events counted.
const DEVICES: &str = "device_id,kind,elder_id,room,secret,heartbeat_s\n\
btn-1,sos_button,E1,,s-btn-1,86400\n\
band-1,vital_band,E1,,s-band-1,86400\n\
gps-1,gps_watch,E1,,s-gps-1,86400\n\
btn-2,sos_button,E2,,s-btn-2,86400\n\
btn-3,sos_button,E3,,s-btn-3,86400\n\
gps-3,gps_watch,E3,,s-gps-3,86400\n";

/// A data dir with the registry and a token per role, plus a second
/// operator `op-2`, and the server on it; and op-2's token.
fn start() -> (Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let tokens = Server::issue_tokens(dir.path());
    let op2 = add_token(dir.path(), "op-2", "operator");
    let data = dir.path().to_str().unwrap();
    import_csv(dir.path(), &["--data-dir", data], &elders(), DEVICES);
    (Server::spawn(dir, tokens), op2)
}

/// `kill -9`, then the server again on the same data dir and the same
/// ports (MQTT, gRPC, metrics and the console's), as a supervisor would.
fn kill9_and_restart(mut s: Server) -> Server {
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    let tokens = std::mem::take(&mut s.tokens);
    let addrs = [
        s.mqtt.clone(),
        s.grpc.clone(),
        s.metrics.clone(),
        s.console.clone(),
    ];
    drop(s);
    let s = Server::spawn_on_all(dir, tokens, addrs.each_ref().map(String::as_str));
    assert_eq!(s.console, addrs[3], "the console is back on its port");
    s
}

/// Publishes one message as device `dev` (secret `s-<dev>`) with the stock
/// `mosquitto_pub` at QoS 1: it returns once the server has it.
fn mosquitto_pub(s: &Server, dev: &str, stream: &str, payload: &str) {
    let (host, port) = s.mqtt.rsplit_once(':').unwrap();
    let out = Command::new("mosquitto_pub")
        .args(["-h", host, "-p", port, "-q", "1", "-u", dev])
        .args(["-P", &format!("s-{dev}")])
        .args(["-t", &format!("eldercare/v1/{dev}/{stream}")])
        .args(["-m", payload])
        .output()
        .expect("mosquitto_pub is required for this test: install mosquitto-clients");
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn press_sos(s: &Server, btn: &str) {
    mosquitto_pub(
        s,
        btn,
        "event",
        &format!(r#"{{"ts": {}, "type": "sos"}}"#, now_ms()),
    );
}

/// Readings for E1's record: normal vital signs (no alert) and a GPS fix
/// at home.
fn publish_readings(s: &Server) {
    mosquitto_pub(
        s,
        "band-1",
        "vitals",
        &format!(
            r#"{{"ts": {}, "hr": 72, "spo2": 97, "rr": 16, "temp_c": 36.6, "sys": 128, "dia": 82}}"#,
            now_ms()
        ),
    );
    mosquitto_pub(
        s,
        "gps-1",
        "location",
        &format!(
            r#"{{"ts": {}, "lat": 31.2003, "lon": 121.5004, "accuracy_m": 15}}"#,
            now_ms()
        ),
    );
}

/// The workspace's root directory.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `name` on PATH, or a failure saying how to install it.
fn installed(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: the console's browser tests drive Debian's \
                 Chromium through its ChromeDriver; install both with \
                 `apt-get install chromium chromium-driver` (.ci/run does)"
            )
        })
}

/// chromedriver, on a port it picks itself, in a process group of its
/// own: dropping it ends it and every browser it started.
struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
    profiles: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        // chromedriver now and then exits before it has started (seen
        // under load): tried again, twice, with what it said on stderr
        // kept for the failure.
        let mut said = Vec::new();
        for _ in 0..3 {
            match Driver::try_start() {
                Ok(d) => return d,
                Err(e) => said.push(e),
            }
        }
        panic!("chromedriver did not start: {said:?}");
    }

    fn try_start() -> Result<Driver, String> {
        let chromium = installed("chromium");
        let chromedriver = installed("chromedriver");
        let mut child = Command::new(&chromedriver)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        let mut d = Driver {
            child,
            url: String::new(),
            chromium,
            profiles: tempfile::tempdir().unwrap(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads its output to the end, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                let _ = tx.send(l);
            }
        });
        let (etx, erx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(err).read_to_string(&mut text);
            let _ = etx.send(text);
        });
        let said = "ChromeDriver was started successfully on port ";
        let port = loop {
            match rx.recv_timeout(DEADLINE) {
                Ok(l) => {
                    if let Some(p) = l.strip_prefix(said) {
                        break p.trim_end_matches('.').to_string();
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    // It exited (reaped when `d` drops): what it said on
                    // stderr, for the record.
                    let stderr = erx.recv_timeout(DEADLINE).unwrap_or_default();
                    return Err(format!("exited: {}", stderr.trim()));
                }
                Err(e) => panic!("chromedriver did not say it had started: {e}"),
            }
        };
        d.url = format!("http://127.0.0.1:{port}");
        Ok(d)
    }

    /// A new browser: a WebDriver session with a Chromium and a profile
    /// (so cookies) of its own.
    async fn browser(&self, name: &str) -> Browser {
        let profile = self.profiles.path().join(name);
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    // As root, Chromium runs only without its sandbox.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1280,1000",
                    "--lang=zh-CN",
                    // The console rings for a new alarm without a click first.
                    "--autoplay-policy=no-user-gesture-required",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("a Chromium session from chromedriver: {e}"));
        Browser {
            c,
            name: name.to_string(),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the browsers it started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// One operator's browser.
struct Browser {
    c: Client,
    name: String,
}

/// A row of a queue, as the page marks it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    id: String,
    severity: String,
    state: String,
    kind: String,
    selected: bool,
    overdue: bool,
}

const ROWS: &str =
    "return [...document.querySelectorAll(arguments[0] + ' tr.alert-row')].map(r => ({
    id: r.dataset.alertId, severity: r.dataset.severity, state: r.dataset.state,
    kind: r.dataset.kind, selected: r.getAttribute('aria-selected') === 'true',
    overdue: r.classList.contains('overdue')}));";

/// Whether the element is shown: a `<dialog>` by being open, anything
/// else by being rendered.
const SHOWN: &str = "const e = document.querySelector(arguments[0]);
    return !!e && (typeof e.open === 'boolean' ? e.open && e.checkVisibility() : e.checkVisibility());";

/// Calls the JSON API from the page, as the console's own script does
/// (same origin, the session cookie): `{status, body}`.
const API: &str = "const [path, body] = arguments;
    return fetch(path, {method: 'POST', headers: {'content-type': 'application/json'},
                        body: JSON.stringify(body)})
      .then(async r => ({status: r.status, body: await r.json().catch(() => null)}));";

impl Browser {
    async fn goto(&self, s: &Server) {
        self.c
            .goto(&format!("http://{}/", s.console))
            .await
            .unwrap_or_else(|e| panic!("{}: loading the console: {e}", self.name));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page;
    /// a returned promise is awaited.
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        match self.c.execute(script, args).await {
            Ok(v) => v,
            Err(e) => panic!("{}: script failed: {e}\n{script}", self.name),
        }
    }

    /// Polls `script` until it returns something other than null, false
    /// or undefined, and returns that.
    async fn until(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let t = Instant::now();
        loop {
            let v = self.js(script, args.clone()).await;
            if !(v.is_null() || v == Value::Bool(false)) {
                return v;
            }
            if t.elapsed() > DEADLINE {
                self.fail(&format!("never happened within {DEADLINE:?}: {what}"))
                    .await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Fails the test, leaving a screenshot and the page's text behind.
    async fn fail(&self, why: &str) -> ! {
        let shot = std::env::temp_dir().join(format!(
            "console_e2e-{}-{}.png",
            self.name,
            std::process::id()
        ));
        if let Ok(png) = self.c.screenshot().await {
            let _ = std::fs::write(&shot, png);
        }
        let text = self
            .c
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(|t| t.chars().take(3000).collect::<String>()))
            .unwrap_or_default();
        panic!(
            "{}: {why}\nscreenshot: {}\npage text:\n{text}",
            self.name,
            shot.display()
        );
    }

    /// Calls `POST path` with `body` from the page: (status, answer).
    async fn api(&self, path: &str, body: Value) -> (u64, Value) {
        let r = self.js(API, vec![json!(path), body]).await;
        (r["status"].as_u64().unwrap(), r["body"].clone())
    }

    async fn until_shown(&self, css: &str) {
        self.until(&format!("{css} shown"), SHOWN, vec![json!(css)])
            .await;
    }

    async fn until_hidden(&self, css: &str) {
        self.until(
            &format!("{css} hidden"),
            &format!("return !(function() {{ {SHOWN} }}).apply(null, arguments)"),
            vec![json!(css)],
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(css)],
            )
            .await;
        match v.as_str() {
            Some(t) => t.to_string(),
            None => self.fail(&format!("no {css} in the page")).await,
        }
    }

    /// Presses one key on the keyboard: it goes wherever the focus is.
    async fn press(&self, key: char) {
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        self.c
            .perform_actions(keys)
            .await
            .unwrap_or_else(|e| panic!("{}: pressing {key:?}: {e}", self.name));
    }

    /// Types into the element (WebDriver focuses it first).
    async fn type_into(&self, css: &str, text: &str) {
        let e = match self.c.find(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => self.fail(&format!("no {css}: {e}")).await,
        };
        e.send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("{}: typing into {css}: {e}", self.name));
    }

    async fn click(&self, css: &str) {
        let e = match self.c.find(Locator::Css(css)).await {
            Ok(e) => e,
            Err(e) => self.fail(&format!("no {css}: {e}")).await,
        };
        e.click()
            .await
            .unwrap_or_else(|e| panic!("{}: clicking {css}: {e}", self.name));
    }

    /// Signs in through the form, from the keyboard: the token, then Enter.
    async fn sign_in(&self, s: &Server, token: &str, operator: &str) {
        self.goto(s).await;
        self.until_shown("#signin").await;
        self.type_into("#token", &format!("{token}{}", char::from(Key::Enter)))
            .await;
        self.until(
            &format!("#whoami naming {operator}"),
            "const w = document.querySelector('#whoami');
             return !!w && w.textContent.includes(arguments[0]);",
            vec![json!(operator)],
        )
        .await;
    }

    async fn until_conn(&self, state: &str) {
        self.until(
            &format!("#conn data-state={state}"),
            "const c = document.querySelector('#conn');
             return !!c && c.dataset.state === arguments[0];",
            vec![json!(state)],
        )
        .await;
    }

    async fn rows(&self, queue: &str) -> Vec<Row> {
        let v = self.js(ROWS, vec![json!(format!("#queue-{queue}"))]).await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| Row {
                id: r["id"].as_str().unwrap_or_default().to_string(),
                severity: r["severity"].as_str().unwrap_or_default().to_string(),
                state: r["state"].as_str().unwrap_or_default().to_string(),
                kind: r["kind"].as_str().unwrap_or_default().to_string(),
                selected: r["selected"] == Value::Bool(true),
                overdue: r["overdue"] == Value::Bool(true),
            })
            .collect()
    }

    /// Waits until the hotline queue's row of alert `id` is in `state`
    /// (`None`: until it has left the queue).
    async fn until_row(&self, id: &str, state: Option<&str>) {
        self.until(
            &format!("hotline row {id} in state {state:?}"),
            "const r = document.querySelector(`#queue-hotline tr.alert-row[data-alert-id=\"${arguments[0]}\"]`);
             return arguments[1] === null ? !r : !!r && r.dataset.state === arguments[1];",
            vec![json!(id), json!(state)],
        )
        .await;
    }

    /// `window.eldercareConsole.applied`: every seq the page applied, in order.
    async fn applied(&self) -> Vec<u64> {
        let v = self
            .js("return window.eldercareConsole.applied.map(String)", vec![])
            .await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// Waits until the page has applied event `seq`.
    async fn until_applied(&self, seq: u64) {
        self.until(
            &format!("event {seq} applied"),
            "return window.eldercareConsole.applied.map(String).includes(arguments[0]);",
            vec![json!(seq.to_string())],
        )
        .await;
    }

    /// Moves the hotline queue's selection onto alert `id` with j and k.
    async fn select(&self, id: &str) {
        let selected = "return [...document.querySelectorAll('#queue-hotline tr.alert-row')]
            .findIndex(r => r.getAttribute('aria-selected') === 'true')";
        for _ in 0..10 {
            let rows = self.rows("hotline").await;
            let Some(want) = rows.iter().position(|r| r.id == id) else {
                self.fail(&format!("no row {id} to select: {rows:?}")).await
            };
            let now = rows.iter().position(|r| r.selected);
            if now == Some(want) {
                return;
            }
            self.press(if now.is_some_and(|n| n > want) {
                'k'
            } else {
                'j'
            })
            .await;
            let before = json!(now.map_or(-1, |n| n as i64));
            self.until(
                "the selection to move",
                &format!("return (function() {{ {selected} }})() !== arguments[0]"),
                vec![before],
            )
            .await;
        }
        self.fail(&format!("j/k never selected {id}")).await
    }

    async fn rings(&self) -> u64 {
        self.js("return window.eldercareConsole.rings", vec![])
            .await
            .as_u64()
            .unwrap()
    }

    /// Waits until no toast is shown (they go by themselves).
    async fn until_toast_gone(&self) {
        self.until(
            "the toast gone",
            "const t = document.querySelector('#toast');
             return !t || !t.checkVisibility({opacityProperty: true, visibilityProperty: true});",
            vec![],
        )
        .await;
    }

    /// A screenshot of the viewport, kept as `name.png` for
    /// docs/console.md (see [`screenshots_dir`]).
    async fn screenshot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        let path = screenshots_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    /// Injects axe-core and runs it over the whole page: its serious and
    /// critical violations (rule, impact, help, the first nodes).
    async fn serious_accessibility_violations(&self) -> Vec<Value> {
        let loaded = self
            .js(
                &format!("{};\nreturn window.axe.version;", axe_source()),
                vec![],
            )
            .await;
        assert_eq!(loaded, json!(AXE_VERSION));
        let v = self
            .js(
                "return axe.run(document, {resultTypes: ['violations']}).then(r =>
                   r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                     .map(v => ({id: v.id, impact: v.impact, help: v.help,
                                 nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))})));",
                vec![],
            )
            .await;
        v.as_array().unwrap().clone()
    }

    async fn close(self) {
        let _ = self.c.close().await;
    }
}

/// Where the screenshots go: `docs/console/` when
/// `ELDERCARE_SCREENSHOTS=docs` (to refresh docs/console.md's pictures),
/// else a scratch directory, so that a test run leaves the work tree as it
/// was.
fn screenshots_dir() -> PathBuf {
    let dir = if std::env::var("ELDERCARE_SCREENSHOTS").as_deref() == Ok("docs") {
        root().join("docs/console")
    } else {
        std::env::temp_dir().join("eldercare-console-screenshots")
    };
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// axe.min.js from the pinned npm tarball, its SHA-256 checked.
fn axe_source() -> String {
    let tgz = match std::env::var_os("ELDERCARE_AXE_CORE_TGZ") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .expect("HOME or XDG_CACHE_HOME")
            .join(format!("eldercare/axe-core-{AXE_VERSION}.tgz")),
    };
    let bytes = std::fs::read(&tgz).unwrap_or_else(|e| {
        panic!(
            "axe-core {AXE_VERSION} is needed for the accessibility check ({}: {e}); \
             scripts/test fetches it: curl -fsSL -o {} \
             https://registry.npmjs.org/axe-core/-/axe-core-{AXE_VERSION}.tgz",
            tgz.display(),
            tgz.display()
        )
    });
    let sum = hex(&Sha256::digest(&bytes));
    assert_eq!(
        sum,
        AXE_SHA256,
        "{} is not the pinned axe-core {AXE_VERSION} tarball",
        tgz.display()
    );
    let out = Command::new("tar")
        .arg("-xzOf")
        .arg(&tgz)
        .arg("package/axe.min.js")
        .output()
        .expect("tar");
    assert!(out.status.success(), "unpacking axe.min.js");
    String::from_utf8(out.stdout).unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Opens the live feed in the page with `EventSource`, as the console
/// does, keeping what arrives in `window.__feed`.
const OPEN_FEED: &str = "window.__feed = {ready: null, events: [], ids: [], errors: 0};
    const es = new EventSource('/api/eldercare.v1.AlertService/Subscribe');
    es.addEventListener('ready', e => { window.__feed.ready = JSON.parse(e.data); });
    es.addEventListener('alert', e => {
      window.__feed.ids.push(e.lastEventId);
      window.__feed.events.push(JSON.parse(e.data));
    });
    es.addEventListener('error', () => { window.__feed.errors += 1; });
    window.__es = es;";

/// The first event in the page's feed of `kind` for alert `id` (or of an
/// SOS, when `id` is null).
const FEED_EVENT: &str = "const [kind, id] = arguments;
    return window.__feed.events.find(e => e.kind === kind &&
      (id === null ? e.alert && e.alert.kind === 'sos' : e.alert && e.alert.id === id)) || null;";

/// The server side of the console, from inside a browser: sign-in sets a
/// cookie the page's script cannot read, the live feed arrives as
/// server-sent events through `EventSource` (an SOS published with
/// `mosquitto_pub` shows up in the page, each event with its seq as the
/// SSE id), a viewer's acknowledgement is refused with 403 while a second
/// browser session sees the operator's live; and axe-core runs in the page.
/// Needs nothing of the page's own script.
#[tokio::test]
async fn a_browser_signs_in_follows_the_live_feed_and_a_viewer_is_refused() {
    let _one = BROWSERS.lock().await;
    let (s, _) = start();
    let driver = Driver::start();
    let op = driver.browser("operator").await;
    let viewer = driver.browser("viewer").await;
    op.goto(&s).await;
    viewer.goto(&s).await;

    // Not signed in: the API says so.
    let (status, body) = op
        .api(
            "/api/eldercare.v1.AlertService/ListAlerts",
            json!({"states": ["OPEN"]}),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    let (status, _) = op.api("/api/session", json!({"token": "ect_nope"})).await;
    assert_eq!(status, 401);

    let (status, who) = op
        .api("/api/session", json!({"token": s.tokens["operator"]}))
        .await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who, json!({"operatorId": "op-1", "role": "operator"}));
    let (status, who) = viewer
        .api("/api/session", json!({"token": s.tokens["viewer"]}))
        .await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["role"], "viewer");
    // The token is in an HttpOnly cookie: the page's script cannot read it,
    // yet the browser sends it.
    let cookie = op.js("return document.cookie", vec![]).await;
    assert!(
        !cookie.as_str().unwrap().contains("eldercare_session"),
        "{cookie}"
    );
    let who = op
        .js("return fetch('/api/session').then(r => r.json())", vec![])
        .await;
    assert_eq!(who["operatorId"], "op-1");

    for b in [&op, &viewer] {
        b.js(OPEN_FEED, vec![]).await;
        let ready = b
            .until(
                "the feed's ready event",
                "return window.__feed.ready",
                vec![],
            )
            .await;
        assert_eq!(ready, json!({"afterSeq": 0}));
    }

    let published = Instant::now();
    press_sos(&s, "btn-1");
    let raised = op
        .until(
            "the SOS in the page's feed",
            FEED_EVENT,
            vec![json!("RAISED"), Value::Null],
        )
        .await;
    eprintln!("SOS published -> in the browser: {:?}", published.elapsed());
    let a = &raised["alert"];
    assert_eq!(raised["seq"], "1", "{raised}");
    assert_eq!(
        (
            a["elderId"].as_str(),
            a["severity"].as_str(),
            a["state"].as_str(),
            a["queue"].as_str()
        ),
        (Some("E1"), Some("CRITICAL"), Some("OPEN"), Some("hotline")),
        "{raised}"
    );
    let id = a["id"].as_str().unwrap().to_string();
    let ids = op.js("return window.__feed.ids", vec![]).await;
    assert_eq!(ids, json!(["1"]), "the seq is the SSE event id");
    viewer
        .until(
            "the SOS in the viewer's feed",
            FEED_EVENT,
            vec![json!("RAISED"), json!(id)],
        )
        .await;

    // A viewer may watch, not act: 403, and nothing happened.
    let ack = "/api/eldercare.v1.AlertService/Acknowledge";
    let (status, body) = viewer
        .api(ack, json!({"alertId": id, "note": "viewer tries"}))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("permission_denied")),
        "{body}"
    );
    let (status, _) = viewer
        .api(
            "/api/eldercare.v1.AlertService/Resolve",
            json!({"alertId": id, "outcome": "false_alarm"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, alert) = viewer
        .api("/api/eldercare.v1.AlertService/GetAlert", json!({"id": id}))
        .await;
    assert_eq!((status, alert["state"].as_str()), (200, Some("OPEN")));

    // The operator's acknowledgement reaches the viewer's browser live.
    let (status, alert) = op
        .api(ack, json!({"alertId": id, "note": "calling her daughter"}))
        .await;
    assert_eq!(
        (status, alert["state"].as_str()),
        (200, Some("ACKNOWLEDGED")),
        "{alert}"
    );
    let ev = viewer
        .until(
            "the acknowledgement in the viewer's feed",
            FEED_EVENT,
            vec![json!("ACKNOWLEDGED_EVENT"), json!(id)],
        )
        .await;
    assert_eq!(
        (ev["seq"].as_str(), ev["actor"].as_str()),
        (Some("2"), Some("op-1")),
        "{ev}"
    );
    // Signed out, the cookie is gone and so is the right to act.
    let signed_out = op
        .js(
            "return fetch('/api/session', {method: 'DELETE'}).then(r => r.status)",
            vec![],
        )
        .await;
    assert_eq!(signed_out, 204);
    let (status, _) = op
        .api("/api/eldercare.v1.AlertService/GetAlert", json!({"id": id}))
        .await;
    assert_eq!(status, 401);

    // axe-core runs in the console's page (its CSP allows it), and would
    // find a serious violation if there were one.
    let violations = viewer.serious_accessibility_violations().await;
    assert!(violations.is_empty(), "{violations:#?}");
    viewer
        .js(
            "const i = document.createElement('img'); i.src = 'data:,';
             document.body.appendChild(i);",
            vec![],
        )
        .await;
    let violations = viewer.serious_accessibility_violations().await;
    assert!(
        violations.iter().any(|v| v["id"] == "image-alt"),
        "{violations:#?}"
    );

    op.close().await;
    viewer.close().await;
}

/// Sign-in through the form (a wrong token is refused in the form), the
/// language switch, a reload that keeps the session, and signing out.
#[tokio::test]
async fn signing_in_switching_language_and_signing_out() {
    let _one = BROWSERS.lock().await;
    let (s, _) = start();
    let driver = Driver::start();
    let b = driver.browser("signin").await;
    b.goto(&s).await;
    b.until_shown("#signin").await;
    assert_eq!(b.text("#signin-error").await.trim(), "");
    b.type_into("#token", &format!("ect_wrong{}", char::from(Key::Enter)))
        .await;
    b.until(
        "#signin-error saying why",
        "const e = document.querySelector('#signin-error');
         return !!e && e.checkVisibility() && e.textContent.trim() !== '';",
        vec![],
    )
    .await;

    b.sign_in(&s, &s.tokens["operator"], "op-1").await;
    b.until_hidden("#signin").await;
    let lang = "return document.documentElement.lang";
    assert_eq!(b.js(lang, vec![]).await, "zh-CN");
    b.click("#lang").await;
    assert_eq!(b.js(lang, vec![]).await, "en");
    b.click("#lang").await;
    assert_eq!(b.js(lang, vec![]).await, "zh-CN");

    // The session outlives a reload.
    b.goto(&s).await;
    b.until(
        "#whoami after a reload",
        "const w = document.querySelector('#whoami'); return !!w && w.textContent.includes('op-1');",
        vec![],
    )
    .await;
    b.until_conn("live").await;

    b.click("#signout").await;
    b.until_shown("#signin").await;
    let who = b
        .js("return fetch('/api/session').then(r => r.status)", vec![])
        .await;
    assert_eq!(who, 401);
    b.close().await;
}

/// The issue's "done when": two operators in two browsers; an SOS from
/// `mosquitto_pub` is at the top of the queue within a second and rings;
/// its record shows the person and the readings; it is acknowledged,
/// dispatched, escalated, noted and resolved from the keyboard alone, and
/// the second operator's browser shows each step live; then the server is
/// killed with SIGKILL and started again on the same data and ports, and
/// both browsers come back live having applied every event exactly once.
/// Screenshots of the queue, a record and the statistics along the way.
#[tokio::test]
async fn an_sos_is_answered_from_the_keyboard_seen_live_by_a_second_operator_and_survives_kill_9() {
    let _one = BROWSERS.lock().await;
    let (s, op2_token) = start();
    let op1_token = s.tokens["operator"].clone();
    // The ground truth: every event, by gRPC.
    let mut feed = s.subscribe(0).await;
    let mut seqs = Vec::new();

    // Already in the queues: E3 wandered off (MEDIUM), taken by op-2
    // (acknowledged), and a low battery in the operations queue.
    for _ in 0..2 {
        mosquitto_pub(
            &s,
            "gps-3",
            "location",
            &format!(
                r#"{{"ts": {}, "lat": 31.1950, "lon": 121.4300, "accuracy_m": 20}}"#,
                now_ms()
            ),
        );
    }
    let older = next(&mut feed).await;
    seqs.push(older.seq);
    let older = older.alert.unwrap();
    assert_eq!(
        (older.kind.as_str(), older.severity),
        ("geofence_exit", pb::Severity::Medium as i32)
    );
    let mut grpc2 = grpc_with(&s, &op2_token).await;
    grpc2
        .acknowledge(pb::AlertActionRequest {
            alert_id: older.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    seqs.push(next(&mut feed).await.seq);
    mosquitto_pub(
        &s,
        "gps-1",
        "status",
        &format!(r#"{{"ts": {}, "battery_pct": 12}}"#, now_ms()),
    );
    let battery = next(&mut feed).await;
    seqs.push(battery.seq);
    assert_eq!(battery.alert.as_ref().unwrap().kind, "low_battery");
    publish_readings(&s);

    let driver = Driver::start();
    let a = driver.browser("op-1").await;
    let b = driver.browser("op-2").await;
    a.sign_in(&s, &op1_token, "op-1").await;
    b.sign_in(&s, &op2_token, "op-2").await;
    a.until_conn("live").await;
    b.until_conn("live").await;
    // op-1 works in English (and the screenshots for docs/console.md are
    // in it); op-2 in the default, Chinese.
    a.click("#lang").await;
    assert_eq!(
        a.js("return document.documentElement.lang", vec![]).await,
        "en"
    );
    for br in [&a, &b] {
        br.until(
            "the alerts already open in the queues",
            "return document.querySelectorAll('#queue-hotline tr.alert-row').length === 1 &&
                    document.querySelectorAll('#queue-operations tr.alert-row').length === 1;",
            vec![],
        )
        .await;
    }
    let ops = a.rows("operations").await;
    assert_eq!(
        (ops[0].kind.as_str(), ops[0].severity.as_str()),
        ("low_battery", "low")
    );

    // The SOS: at the top within a second of mosquitto_pub returning, timed
    // in the page itself; and it rings.
    let rings = a.rings().await;
    a.js(
        "window.__topSince = {};
         const note = () => {
           const r = document.querySelector('#queue-hotline tr.alert-row');
           if (r && !(r.dataset.alertId in window.__topSince)) window.__topSince[r.dataset.alertId] = Date.now();
         };
         new MutationObserver(note).observe(document.body, {subtree: true, childList: true, attributes: true});
         note();",
        vec![],
    )
    .await;
    let published_at = now_ms();
    press_sos(&s, "btn-1");
    let ev = next(&mut feed).await;
    seqs.push(ev.seq);
    let sos_seq = ev.seq;
    let id = ev.alert.unwrap().id;
    let on_top = a
        .until(
            "the SOS at the top of the hotline queue",
            "return window.__topSince[arguments[0]] || null",
            vec![json!(id)],
        )
        .await
        .as_i64()
        .unwrap();
    let latency = on_top - published_at;
    eprintln!("mosquitto_pub -> top of the queue: {latency} ms");
    assert!(
        latency <= 1000,
        "the SOS reached the top of the queue {latency} ms after mosquitto_pub"
    );
    let top = a.rows("hotline").await;
    assert_eq!(
        (
            top[0].id.as_str(),
            top[0].severity.as_str(),
            top[0].state.as_str(),
            top[0].kind.as_str()
        ),
        (id.as_str(), "critical", "open", "sos")
    );
    assert_eq!(top.len(), 2);
    a.until(
        "a ring",
        "return window.eldercareConsole.rings > arguments[0]",
        vec![json!(rings)],
    )
    .await;
    b.until_row(&id, Some("open")).await;
    a.screenshot("queue").await;

    // The record, from the keyboard: move the selection onto the SOS, Enter.
    a.select(&id).await;
    a.press(Key::Enter.into()).await;
    a.until(
        "the SOS's record open",
        "const r = document.querySelector('#record');
         return !!r && r.dataset.alertId === arguments[0] && r.checkVisibility();",
        vec![json!(id)],
    )
    .await;
    let person = a.text("#record-person").await;
    assert!(person.contains("王秀英"), "{person}");
    assert!(!a.text("#record-cause").await.trim().is_empty());
    for chart in ["#record-vitals", "#record-gps"] {
        a.until(
            &format!("{chart} drawn"),
            "const c = document.querySelector(arguments[0]);
             return !!c && (c.tagName.toLowerCase() === 'svg' || !!c.querySelector('svg'));",
            vec![json!(chart)],
        )
        .await;
    }
    a.until(
        "the heart rate (72) and SpO2 (97) in the record",
        "const t = document.querySelector('#record').textContent;
         return t.includes('72') && t.includes('97');",
        vec![],
    )
    .await;
    let history_len = |a: pb::Alert| a.history.len();
    let mut grpc1 = s.grpc().await;
    let get = |id: String| pb::GetAlertRequest {
        id,
        ..Default::default()
    };
    let want = history_len(grpc1.get_alert(get(id.clone())).await.unwrap().into_inner());
    let record_history =
        "return document.querySelectorAll('#record-history li[data-kind]').length === arguments[0]";
    a.until(
        "the record's history as the server's",
        record_history,
        vec![json!(want)],
    )
    .await;

    // Acknowledge, dispatch, escalate, a note, resolve: keys only, each
    // step seen by the other operator at once.
    a.press('a').await;
    a.until_row(&id, Some("acknowledged")).await;
    b.until_row(&id, Some("acknowledged")).await;
    let ev = next(&mut feed).await;
    seqs.push(ev.seq);
    assert_eq!(
        (ev.kind, ev.actor.as_str()),
        (pb::AlertEventKind::AcknowledgedEvent as i32, "op-1")
    );
    b.until_applied(ev.seq).await;

    // A dialog closes with Escape, doing nothing.
    a.press('s').await;
    a.until_shown("#dlg-silence").await;
    a.press(Key::Escape.into()).await;
    a.until_hidden("#dlg-silence").await;

    a.press('d').await;
    a.until_shown("#dlg-dispatch").await;
    // A responder type: the next one in the list (whatever it starts at).
    a.type_into("#dispatch-type", &char::from(Key::Down).to_string())
        .await;
    a.type_into("#dispatch-name", "社区网格员 陈").await;
    a.type_into("#dispatch-phone", "13800138000").await;
    a.type_into("#dispatch-submit", &char::from(Key::Enter).to_string())
        .await;
    a.until_hidden("#dlg-dispatch").await;
    a.until_row(&id, Some("dispatched")).await;
    b.until_row(&id, Some("dispatched")).await;
    let ev = next(&mut feed).await;
    seqs.push(ev.seq);
    assert_eq!(ev.kind, pb::AlertEventKind::DispatchedEvent as i32);
    let responder = ev.alert.unwrap().responder.unwrap();
    assert_eq!(
        (responder.name.as_str(), responder.phone.as_str()),
        ("社区网格员 陈", "13800138000")
    );
    assert_ne!(responder.r#type, pb::ResponderType::Unspecified as i32);
    b.until_applied(ev.seq).await;

    a.press('e').await;
    let ev = next(&mut feed).await;
    seqs.push(ev.seq);
    assert_eq!(ev.kind, pb::AlertEventKind::Escalated as i32);
    b.until_applied(ev.seq).await;

    a.press('n').await;
    a.until_shown("#dlg-note").await;
    a.type_into("#note-text", "女儿十分钟后到").await;
    a.type_into("#note-submit", &char::from(Key::Enter).to_string())
        .await;
    a.until_hidden("#dlg-note").await;
    let ev = next(&mut feed).await;
    seqs.push(ev.seq);
    assert_eq!(
        (ev.kind, ev.note.as_str()),
        (pb::AlertEventKind::Note as i32, "女儿十分钟后到")
    );
    b.until_applied(ev.seq).await;
    let want = history_len(grpc1.get_alert(get(id.clone())).await.unwrap().into_inner());
    a.until(
        "the record's history grown with each step",
        record_history,
        vec![json!(want)],
    )
    .await;
    a.until_toast_gone().await;
    a.screenshot("record").await;
    // Further down the record: the readings, the location, the history.
    a.js(
        "const rec = document.querySelector('#record');
         rec.scrollTop += document.querySelector('#record-vitals').getBoundingClientRect().top
                          - rec.getBoundingClientRect().top;",
        vec![],
    )
    .await;
    a.screenshot("record-readings").await;

    a.press('r').await;
    a.until_shown("#dlg-resolve").await;
    // Any outcome goes from DISPATCHED: the next one in the list.
    a.type_into("#resolve-outcome", &char::from(Key::Down).to_string())
        .await;
    a.type_into("#resolve-note", "已送医").await;
    a.type_into("#resolve-submit", &char::from(Key::Enter).to_string())
        .await;
    a.until_hidden("#dlg-resolve").await;
    let ev = next(&mut feed).await;
    seqs.push(ev.seq);
    assert_eq!(ev.kind, pb::AlertEventKind::ResolvedEvent as i32);
    assert_eq!(ev.actor, "op-1");
    assert!(!ev.alert.unwrap().outcome.is_empty());
    a.until_row(&id, None).await;
    b.until_row(&id, None).await;
    b.until_applied(ev.seq).await;

    // A new SOS, live to both; then kill -9.
    press_sos(&s, "btn-2");
    let ev = next(&mut feed).await;
    seqs.push(ev.seq);
    let id2 = ev.alert.unwrap().id;
    a.until_row(&id2, Some("open")).await;
    b.until_row(&id2, Some("open")).await;
    drop(feed);
    drop(grpc1);
    drop(grpc2);
    let s = kill9_and_restart(s);
    a.until_conn("reconnecting").await;
    b.until_conn("reconnecting").await;

    // Back on the same data and ports: while the browsers reconnect, op-2
    // acknowledges by gRPC and notes, and E1 presses again.
    let mut feed = s.subscribe(*seqs.last().unwrap()).await;
    let mut grpc2 = grpc_with(&s, &op2_token).await;
    grpc2
        .acknowledge(pb::AlertActionRequest {
            alert_id: id2.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    grpc2
        .add_note(pb::AlertActionRequest {
            alert_id: id2.clone(),
            note: "已联系".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    press_sos(&s, "btn-1");
    for _ in 0..2 {
        seqs.push(next(&mut feed).await.seq);
    }
    let again = next(&mut feed).await;
    seqs.push(again.seq);
    let id3 = again.alert.unwrap().id;
    let last = *seqs.last().unwrap();
    for br in [&a, &b] {
        br.until_conn("live").await;
        br.until_applied(last).await;
        br.until_row(&id2, Some("acknowledged")).await;
        br.until_row(&id3, Some("open")).await;
        let applied = br.applied().await;
        // Every event from the SOS on (and whatever came before, from the
        // page's start), in order, each exactly once.
        let first = *applied.first().unwrap();
        assert!(first <= sos_seq, "{}: {applied:?}", br.name);
        let want: Vec<u64> = seqs.iter().copied().filter(|&q| q >= first).collect();
        assert_eq!(
            applied, want,
            "{}: the events applied, against the server's",
            br.name
        );
    }
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "the server's seqs are gap-free"
    );

    // The statistics tab.
    a.click("#tab-stats").await;
    a.until_shown("#panel-stats").await;
    a.click("#stats-refresh").await;
    a.until(
        "#stats-charts drawn",
        "const c = document.querySelector('#stats-charts'); return !!c && !!c.querySelector('svg');",
        vec![],
    )
    .await;
    a.until_toast_gone().await;
    a.screenshot("stats").await;

    a.close().await;
    b.close().await;
}

/// A viewer sees the queue and the record, with every action button
/// disabled, and the API refuses the viewer's actions too.
#[tokio::test]
async fn a_viewer_s_actions_are_disabled_and_refused() {
    let _one = BROWSERS.lock().await;
    let (s, _) = start();
    let mut feed = s.subscribe(0).await;
    let driver = Driver::start();
    let v = driver.browser("viewer").await;
    v.sign_in(&s, &s.tokens["viewer"], "view-1").await;
    v.until_conn("live").await;
    press_sos(&s, "btn-1");
    let id = next(&mut feed).await.alert.unwrap().id;
    v.until_row(&id, Some("open")).await;
    v.press('j').await;
    v.until(
        "the SOS selected",
        "const r = document.querySelector(`#queue-hotline tr.alert-row[data-alert-id=\"${arguments[0]}\"]`);
         return !!r && r.getAttribute('aria-selected') === 'true';",
        vec![json!(id)],
    )
    .await;
    v.press(Key::Enter.into()).await;
    v.until_shown("#record").await;
    for button in [
        "#act-ack",
        "#act-dispatch",
        "#act-escalate",
        "#act-note",
        "#act-resolve",
        "#act-silence",
    ] {
        let disabled = v
            .js(
                "const b = document.querySelector(arguments[0]); return !!b && b.disabled === true;",
                vec![json!(button)],
            )
            .await;
        assert_eq!(disabled, true, "{button} disabled for a viewer");
    }
    for (method, body) in [
        ("Acknowledge", json!({"alertId": id})),
        ("Escalate", json!({"alertId": id})),
        ("AddNote", json!({"alertId": id, "note": "x"})),
        ("Resolve", json!({"alertId": id, "outcome": "false_alarm"})),
    ] {
        let (status, body) = v
            .api(&format!("/api/eldercare.v1.AlertService/{method}"), body)
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("permission_denied")),
            "{method}: {body}"
        );
    }
    let alert = s
        .grpc()
        .await
        .get_alert(pb::GetAlertRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(alert.state, pb::AlertState::Open as i32);
    v.close().await;
}

/// axe-core over the console as operators see it: the sign-in form, then
/// the queue with an alert's record open, in both languages. No serious or
/// critical violation.
#[tokio::test]
async fn the_console_has_no_serious_accessibility_violation() {
    let _one = BROWSERS.lock().await;
    let (s, _) = start();
    let mut feed = s.subscribe(0).await;
    publish_readings(&s);
    let driver = Driver::start();
    let b = driver.browser("axe").await;
    b.goto(&s).await;
    b.until_shown("#signin").await;
    let mut found = Vec::new();
    found.extend(b.serious_accessibility_violations().await);
    b.sign_in(&s, &s.tokens["operator"], "op-1").await;
    b.until_conn("live").await;
    press_sos(&s, "btn-1");
    let id = next(&mut feed).await.alert.unwrap().id;
    b.until_row(&id, Some("open")).await;
    b.press('j').await;
    b.press(Key::Enter.into()).await;
    b.until_shown("#record").await;
    found.extend(b.serious_accessibility_violations().await);
    b.click("#lang").await;
    found.extend(b.serious_accessibility_violations().await);
    assert!(found.is_empty(), "{found:#?}");
    b.close().await;
}

/// An AlertService client with `token`.
async fn grpc_with(s: &Server, token: &str) -> support::Client {
    pb::alert_service_client::AlertServiceClient::with_interceptor(
        s.channel().await,
        Bearer(Some(format!("Bearer {token}").parse().unwrap())),
    )
}

/// A night uploaded at once by a home back from an outage: `bed` in bed
/// from 70 min ago, out of bed from 60 min ago (a minute's sleep-sensor
/// reading each), and back in bed `back_after` minutes later when given;
/// 35 min of it in all. Then one reading of now, which says the upload is
/// in (deploy/rules.toml, `[late]`). The device is returned connected:
/// what it queued is sent while it lives.
async fn upload_night(s: &Server, bed: &str, back_after: Option<i64>) -> Device {
    const MIN: i64 = 60_000;
    let d = device(s, bed).await;
    let topic = format!("eldercare/v1/{bed}/sleep");
    let now = now_ms();
    let left = now - 60 * MIN;
    for m in -10..=35 {
        let in_bed = m < 0 || back_after.is_some_and(|b| m >= b);
        let ts = left + m * MIN;
        publish(&d, &topic, format!(r#"{{"ts": {ts}, "in_bed": {in_bed}}}"#)).await;
    }
    let in_bed = back_after.is_some();
    publish(
        &d,
        &topic,
        format!(r#"{{"ts": {}, "in_bed": {in_bed}}}"#, now_ms()),
    )
    .await;
    d
}

/// Readings that arrive late, and the care queue. Two homes upload an
/// hour of their night at once: E4 left her bed an hour ago and is still
/// out of it, raised on the hotline and marked late; E5 was back in bed
/// within the same upload, recorded for the care managers, not raised.
/// The hotline row says how late; the care tab holds the recorded alert
/// with its badges, there live and again after a reload (read from the
/// server); a recorded alert takes notes only. No serious accessibility
/// violation on the care tab, in either language.
#[tokio::test]
async fn late_readings_are_marked_and_a_recorded_episode_is_on_the_care_tab() {
    let _one = BROWSERS.lock().await;
    // E4 and E5 in their night now (UTC, from three hours ago to three
    // hours ahead), each with an under-mattress sleep sensor.
    let now = chrono::Utc::now();
    let at = |h| (now + chrono::Duration::hours(h)).format("%H:%M");
    let elders = format!(
        "{}E4,赵桂兰,浦东新区,花木街道,31.2200,121.5200,300,UTC,{},{}\n\
         E5,孙玉珍,徐汇区,田林街道,31.1900,121.4400,300,UTC,{},{}\n",
        elders(),
        at(-3),
        at(3),
        at(-3),
        at(3)
    );
    let devices = format!(
        "{DEVICES}bed-4,sleep_sensor,E4,bedroom,s-bed-4,86400\n\
         bed-5,sleep_sensor,E5,bedroom,s-bed-5,86400\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = Server::issue_tokens(dir.path());
    let data = dir.path().to_str().unwrap();
    import_csv(dir.path(), &["--data-dir", data], &elders, &devices);
    let s = Server::spawn(dir, tokens);
    let mut feed = s.subscribe(0).await;

    let driver = Driver::start();
    let b = driver.browser("care").await;
    b.sign_in(&s, &s.tokens["operator"], "op-1").await;
    b.until_conn("live").await;

    let _bed4 = upload_night(&s, "bed-4", None).await;
    let _bed5 = upload_night(&s, "bed-5", Some(33)).await;
    let (mut late, mut recorded) = (None, None);
    while late.is_none() || recorded.is_none() {
        let a = next(&mut feed).await.alert.unwrap();
        match a.elder_id.as_str() {
            "E4" => late = Some(a),
            "E5" => recorded = Some(a),
            _ => {}
        }
    }
    let (late, recorded) = (late.unwrap(), recorded.unwrap());
    assert_eq!(
        (
            late.kind.as_str(),
            late.queue.as_str(),
            late.state,
            late.recorded
        ),
        (
            "out_of_bed_too_long",
            "hotline",
            pb::AlertState::Open as i32,
            false
        ),
        "{late:?}"
    );
    // Shown half an hour after the person left the bed, seen 30 min later.
    assert!(
        (25 * 60_000..=35 * 60_000).contains(&late.late_ms),
        "{late:?}"
    );
    assert_eq!(
        (
            recorded.queue.as_str(),
            recorded.state,
            recorded.recorded,
            recorded.outcome.as_str()
        ),
        ("care", pb::AlertState::Resolved as i32, true, "recorded"),
        "{recorded:?}"
    );

    // The hotline row says how late, in whole minutes.
    let badge = "const [q, id] = arguments;
        const r = document.querySelector(`#queue-${q} tr.alert-row[data-alert-id=\"${id}\"]`);
        if (!r) return null;
        const late = r.querySelector('[data-badge=late]');
        const rec = r.querySelector('[data-badge=recorded]');
        return {lateMs: r.dataset.lateMs || null, recorded: r.dataset.recorded || null,
                state: r.dataset.state,
                late: late && late.checkVisibility() ? late.textContent : null,
                rec: rec && rec.checkVisibility() ? rec.textContent : null};";
    let minutes = ((late.late_ms as f64) / 60_000.0).round().to_string();
    let row = b
        .until(
            "the late alert in the hotline queue",
            badge,
            vec![json!("hotline"), json!(late.id)],
        )
        .await;
    assert_eq!(row["lateMs"], json!(late.late_ms.to_string()), "{row}");
    let text = row["late"].as_str().unwrap_or_default();
    assert!(text.contains(&minutes), "{minutes} min in {row}");
    assert_eq!(row["rec"], Value::Null, "{row}");

    // The recorded one is not on the hotline, it is on the care tab; the
    // tab's count is of what is to be answered, so none.
    let on_hotline = "return !!document.querySelector(
        `#queue-hotline tr.alert-row[data-alert-id=\"${arguments[0]}\"]`)";
    assert_eq!(b.js(on_hotline, vec![json!(recorded.id)]).await, false);
    b.click("#tab-care").await;
    b.until_shown("#panel-care").await;
    let row = b
        .until(
            "the recorded alert in the care queue",
            badge,
            vec![json!("care"), json!(recorded.id)],
        )
        .await;
    assert_eq!(
        (row["recorded"].as_str(), row["state"].as_str()),
        (Some("true"), Some("resolved")),
        "{row}"
    );
    assert!(row["rec"].as_str().is_some_and(|t| !t.is_empty()), "{row}");
    assert!(row["late"].as_str().is_some_and(|t| !t.is_empty()), "{row}");
    assert_eq!(b.text("#count-care").await, "0");
    // Selected, it takes a note and nothing else.
    let buttons = "return ['#act-ack', '#act-dispatch', '#act-escalate', '#act-resolve',
        '#act-silence', '#act-note'].map(s => document.querySelector(s).disabled)";
    assert_eq!(
        b.js(buttons, vec![]).await,
        json!([true, true, true, true, true, false])
    );
    let mut found = b.serious_accessibility_violations().await;

    // In English too, the badges in words of their own.
    let zh = row["rec"].clone();
    b.click("#lang").await;
    let en = b
        .until(
            "the recorded badge in English",
            "const r = document.querySelector(`#queue-care tr.alert-row[data-alert-id=\"${arguments[0]}\"] [data-badge=recorded]`);
             return r && r.textContent !== arguments[1] ? r.textContent : null;",
            vec![json!(recorded.id), zh],
        )
        .await;
    assert!(!en.as_str().unwrap().is_empty());
    found.extend(b.serious_accessibility_violations().await);
    assert!(found.is_empty(), "{found:#?}");
    // A trend's factors, as the server writes them, in the page's words.
    let factors = b
        .js(
            "return ['day 2026-11-20: 3', 'usual 0-1 (median 0, 28 days)', 'other']
               .map(f => EC.factorText(f))",
            vec![],
        )
        .await;
    assert_eq!(
        factors,
        json!([
            "2026-11-20: 3",
            "usual range 0-1 (median 0, from 28 days)",
            "other"
        ])
    );

    // After a reload the queues are read from the server: the same.
    b.goto(&s).await;
    b.until_conn("live").await;
    b.click("#tab-care").await;
    b.until(
        "the recorded alert read back into the care queue",
        badge,
        vec![json!("care"), json!(recorded.id)],
    )
    .await;
    let row = b
        .until(
            "the late alert read back into the hotline queue",
            badge,
            vec![json!("hotline"), json!(late.id)],
        )
        .await;
    assert!(row["lateMs"].is_string(), "{row}");
    b.screenshot("care").await;
    b.close().await;
}

/// `HH:MM` (UTC) of `ms`.
fn hhmm(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .format("%H:%M")
        .to_string()
}

/// A carer's visit, from the outside in. E1 has a bathing plan with
/// provider PR1 today, in a window around now; her carer taps in at the
/// button as the entrance sensor sees someone come in, and taps out 50 s
/// later (event times, so nothing waits for the visit to last). The visit
/// is borne out, so it is recorded on the supervision tab, never on the
/// hotline's; the record shows the visit. Its follow-up call is on the
/// follow-up tab, offers the call's three answers only, and is resolved
/// "satisfied" with a note from the record's button. The Visits view
/// then reports PR1's month with that visit and its call, and downloads
/// it as CSV. No serious accessibility violation on the new tabs and the
/// view, in either language.
#[tokio::test]
async fn a_visit_is_supervised_its_follow_up_call_answered_and_its_month_reported() {
    const S: i64 = 1000;
    const MIN: i64 = 60 * S;
    let _one = BROWSERS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.toml"), "[visits]\nmargin_s = 10\n").unwrap();
    // A window from half an hour ago to half an hour ahead, within
    // today (UTC, the elder's zone).
    let now = now_ms();
    let day = now - now.rem_euclid(86_400_000);
    let from = (now - 30 * MIN).max(day);
    let to = (now + 30 * MIN).min(day + 86_400_000 - MIN);
    assert!(
        now - 50 * S >= day && from < to,
        "the visit must be within one day (UTC): run again in a minute"
    );
    let elders = "elder_id,name,phone,district,community,timezone\n\
                  E1,王秀英,13800000001,浦东新区,花木街道,UTC\n";
    let devices = "device_id,kind,elder_id,room,secret,heartbeat_s\n\
                   btn-1,sos_button,E1,,s-btn-1,86400\n\
                   pirent-1,pir,E1,entrance,s-pirent-1,86400\n\
                   pirkit-1,pir,E1,kitchen,s-pirkit-1,86400\n";
    let providers = "provider_id,name,phone\nPR1,Provider One,\n";
    let carers = "carer_id,provider_id,name\nC1,PR1,Carer One\n";
    let plans = format!(
        "plan_id,elder_id,provider_id,days,window_start,window_end,length_min,service\n\
         bath-1,E1,PR1,daily,{},{},1,bathing\n",
        hhmm(from),
        hhmm(to)
    );
    let data = dir.path().to_str().unwrap().to_string();
    import_files(
        dir.path(),
        &["--data-dir", &data],
        &[
            ("elders.csv", elders),
            ("devices.csv", devices),
            ("providers.csv", providers),
            ("carers.csv", carers),
            ("visit_plans.csv", &plans),
        ],
    );
    let tokens = Server::issue_tokens(dir.path());
    let s = Server::spawn(dir, tokens);
    let mut feed = s.subscribe(0).await;

    let driver = Driver::start();
    let b = driver.browser("visits").await;
    b.sign_in(&s, &s.tokens["operator"], "op-1").await;
    b.until_conn("live").await;
    // In English, as the pictures in docs/console.md are.
    b.click("#lang").await;

    let t = now_ms();
    let motion =
        |room: &str, ts: i64| format!(r#"{{"ts": {ts}, "room": "{room}", "motion": true}}"#);
    let tag = |action: &str, ts: i64| {
        format!(r#"{{"ts": {ts}, "type": "visit", "carer": "C1", "action": "{action}"}}"#)
    };
    mosquitto_pub(&s, "pirent-1", "motion", &motion("entrance", t - 55 * S));
    mosquitto_pub(&s, "btn-1", "event", &tag("in", t - 50 * S));
    mosquitto_pub(&s, "pirkit-1", "motion", &motion("kitchen", t - 30 * S));
    mosquitto_pub(&s, "btn-1", "event", &tag("out", t));
    let (mut visit, mut call) = (None, None);
    while visit.is_none() || call.is_none() {
        let a = next(&mut feed).await.alert.unwrap();
        match a.kind.as_str() {
            "visit" => visit = Some(a),
            "follow_up" => call = Some(a),
            _ => {}
        }
    }
    let (visit, call) = (visit.unwrap(), call.unwrap());
    assert_eq!(
        (visit.queue.as_str(), visit.recorded, call.queue.as_str()),
        ("supervision", true, "follow_up"),
        "{visit:?} {call:?}"
    );
    let visit_id = visit.visit.as_ref().unwrap().visit_id.clone();
    assert_eq!(visit_id, visit.subject);

    // The visit is on the supervision tab, not the hotline's, and the
    // hotline counts nothing.
    let in_queue = "const [q, id] = arguments;
        const r = document.querySelector(`#queue-${q} tr.alert-row[data-alert-id=\"${id}\"]`);
        return r ? r.dataset.state : null;";
    let state = b
        .until(
            "the visit on the supervision tab",
            in_queue,
            vec![json!("supervision"), json!(visit.id)],
        )
        .await;
    assert_eq!(state, json!("resolved"));
    b.until(
        "the follow-up call on its tab",
        in_queue,
        vec![json!("follow_up"), json!(call.id)],
    )
    .await;
    for q in ["hotline", "operations", "care"] {
        assert!(b.rows(q).await.is_empty(), "{q}: {:?}", b.rows(q).await);
        assert_eq!(b.text(&format!("#count-{q}")).await, "0", "{q}");
    }
    assert_eq!(b.text("#count-follow_up").await, "1");
    let over = b
        .js(
            "return document.querySelector('#over-hotline').hidden",
            vec![],
        )
        .await;
    assert_eq!(over, Value::Bool(true), "nothing overdue on the hotline");

    // Its record shows the visit: id, the carer, the entrance sign.
    b.click("#tab-supervision").await;
    b.until_shown("#panel-supervision").await;
    b.click(&format!(
        "#queue-supervision tr.alert-row[data-alert-id=\"{}\"] .kind",
        visit.id
    ))
    .await;
    b.until_shown("#record-visit").await;
    let shown = b
        .js(
            "const v = document.querySelector('#record-visit');
             return {id: v.querySelector('[data-visit-id]').dataset.visitId,
                     text: v.textContent,
                     entrance: !!v.querySelector('[data-sign=entrance]'),
                     followUp: document.querySelector('#record-followup').hidden};",
            vec![],
        )
        .await;
    assert_eq!(shown["id"], json!(visit_id), "{shown}");
    assert!(shown["text"].as_str().unwrap().contains("C1"), "{shown}");
    assert_eq!(shown["entrance"], json!(true), "{shown}");
    assert_eq!(shown["followUp"], json!(true), "no call buttons on a visit");
    b.screenshot("supervision").await;
    let mut found = b.serious_accessibility_violations().await;

    // The follow-up call: the resolve dialog offers its three answers only.
    b.click("#tab-follow_up").await;
    b.until_shown("#panel-follow_up").await;
    b.click(&format!(
        "#queue-follow_up tr.alert-row[data-alert-id=\"{}\"] .kind",
        call.id
    ))
    .await;
    b.until_shown("#record-followup").await;
    b.until_shown("#record-visit").await;
    b.click("#act-resolve").await;
    b.until_shown("#dlg-resolve").await;
    let outcomes = b
        .js(
            "return [...document.querySelectorAll('#resolve-outcome option')].map(o => o.value)",
            vec![],
        )
        .await;
    assert_eq!(outcomes, json!(["satisfied", "complaint", "no_answer"]));
    b.click("#dlg-resolve [data-close]").await;
    b.until_hidden("#dlg-resolve").await;
    b.screenshot("follow-up").await;
    found.extend(b.serious_accessibility_violations().await);

    // Answered from the record's button, with a note.
    b.type_into("#followup-note", "bathed, all well").await;
    b.click("#record-followup button[data-outcome=satisfied]")
        .await;
    b.until(
        "the call gone from the follow-up tab",
        "return !document.querySelector(`#queue-follow_up tr.alert-row[data-alert-id=\"${arguments[0]}\"]`)",
        vec![json!(call.id)],
    )
    .await;
    assert_eq!(b.text("#count-follow_up").await, "0");
    let got = grpc_with(&s, &s.tokens["operator"])
        .await
        .get_alert(pb::GetAlertRequest {
            id: call.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (got.state, got.outcome.as_str()),
        (pb::AlertState::Resolved as i32, "satisfied"),
        "{got:?}"
    );
    assert!(
        got.history
            .iter()
            .any(|h| h.actor == "op-1" && h.note == "bathed, all well"),
        "{:?}",
        got.history
    );

    // The month's report, by provider: the visit, its call, the CSV.
    b.click("#tab-visits").await;
    b.until_shown("#panel-visits").await;
    b.until(
        "PR1 to choose",
        "return document.querySelector('#visits-provider').value === 'PR1'",
        vec![],
    )
    .await;
    let month = &visit.visit.as_ref().unwrap().day[..7];
    let default = b
        .js(
            "return document.querySelector('#visits-month').value",
            vec![],
        )
        .await;
    if default != json!(month) {
        // The month turned between the visit and now.
        b.js(
            "document.querySelector('#visits-month').value = arguments[0]",
            vec![json!(month)],
        )
        .await;
    }
    b.click("#visits-refresh").await;
    let row = b
        .until(
            "the visit in the report",
            "const r = document.querySelector(`#visits-rows tr[data-visit-id=\"${arguments[0]}\"]`);
             const c = (k) => document.querySelector(`#visits-summary [data-count=${k}] .card-value`).textContent;
             return r ? {status: r.dataset.status, done: c('done'), planned: c('planned'),
                         followUps: c('followUps'), text: r.textContent} : null;",
            vec![json!(visit_id)],
        )
        .await;
    assert_eq!(
        (
            &row["status"],
            &row["done"],
            &row["planned"],
            &row["followUps"]
        ),
        (&json!("on_time"), &json!("1"), &json!("1"), &json!("1")),
        "{row}"
    );
    b.click("#visits-csv").await;
    let csv = b
        .until(
            "the CSV made",
            "const d = window.eldercareConsole.download; return d ? d.csv : null;",
            vec![],
        )
        .await;
    assert!(csv.as_str().unwrap().contains(&visit_id), "{csv}");
    found.extend(b.serious_accessibility_violations().await);
    b.screenshot("visits").await;
    b.click("#lang").await;
    found.extend(b.serious_accessibility_violations().await);
    assert!(found.is_empty(), "{found:#?}");
    b.close().await;
}

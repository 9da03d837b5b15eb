//! The dashboard in a real browser (headless Chromium through the DevTools protocol): the
//! demo's full scenario replayed, every page loaded and checked against its ground truth,
//! graph → edge → trace clicked through, no console errors, hostile names kept as text,
//! and a screenshot of every page saved.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callwatch_collector::text_attribute as text;
use chromiumoxide::Page;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::log::{EnableParams as LogEnable, EventEntryAdded};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::js_protocol::runtime::{EventConsoleApiCalled, EventExceptionThrown};
use chromiumoxide::page::ScreenshotParams;
use futures::StreamExt;
use serde_json::Value;

use crate::breakers::{breakers_when, write_config};
use crate::common::Server;
use crate::common::requests::now_ns;
use crate::common::samples::sample;
use crate::graph::{CLIENT, MS, SERVER, span, window};

/// A service and an operation named to run script if the page did not escape them.
const HOSTILE_SERVICE: &str = "<script>window.__xss=1</script>";
const HOSTILE_PEER: &str = "<img src=x onerror=\"window.__xss=2\">";

/// Chromium, or `None` (a failure when CI=true: `.ci/run` installs it).
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .into_iter()
        .chain(
            ["chromium", "chromium-browser", "google-chrome"]
                .iter()
                .flat_map(|name| {
                    std::env::var_os("PATH")
                        .map(|path| {
                            std::env::split_paths(&path)
                                .map(|dir| dir.join(name))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default()
                }),
        )
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but Chromium is missing: .ci/run installs the chromium package"
        );
        eprintln!("skipped: Chromium is not installed (set CHROMIUM to its path)");
    }
    found
}

/// Where screenshots go: a test artifact beside the build.
fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A browser tab that remembers every console error, uncaught exception and failed load.
struct Tab {
    page: Page,
    base: String,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Tab {
    async fn open(browser: &Browser, base: String) -> Self {
        let page = browser.new_page("about:blank").await.unwrap();
        page.execute(LogEnable::default()).await.unwrap();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut console = page
            .event_listener::<EventConsoleApiCalled>()
            .await
            .unwrap();
        let mut exceptions = page.event_listener::<EventExceptionThrown>().await.unwrap();
        let mut log = page.event_listener::<EventEntryAdded>().await.unwrap();
        let keep = errors.clone();
        tokio::spawn(async move {
            loop {
                let error = tokio::select! {
                    Some(event) = console.next() => {
                        let kind = format!("{:?}", event.r#type).to_lowercase();
                        (kind == "error" || kind == "assert").then(|| format!("console: {:?}", event.args))
                    }
                    Some(event) = exceptions.next() => Some(format!("exception: {:?}", event.exception_details)),
                    Some(event) = log.next() => {
                        let level = format!("{:?}", event.entry.level).to_lowercase();
                        (level == "error").then(|| format!("log: {} {:?}", event.entry.text, event.entry.url))
                    }
                    else => break,
                };
                if let Some(error) = error {
                    keep.lock().unwrap().push(error);
                }
            }
        });
        Self { page, base, errors }
    }

    async fn visit(&self, path: &str) {
        self.page
            .goto(format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    /// The text of every element `selector` matches.
    async fn texts(&self, selector: &str) -> Vec<String> {
        self.eval(&format!(
            "Array.from(document.querySelectorAll({}), e => e.textContent.trim())",
            serde_json::to_string(selector).unwrap()
        ))
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
    }

    async fn attributes(&self, selector: &str, attribute: &str) -> Vec<String> {
        self.eval(&format!(
            "Array.from(document.querySelectorAll({}), e => e.getAttribute({}))",
            serde_json::to_string(selector).unwrap(),
            serde_json::to_string(attribute).unwrap()
        ))
        .await
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect()
    }

    async fn eval(&self, script: &str) -> Value {
        self.page
            .evaluate(script)
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
            .into_value()
            .unwrap_or(Value::Null)
    }

    async fn path(&self) -> String {
        let url = self.page.url().await.unwrap().unwrap_or_default();
        url.strip_prefix(&self.base).unwrap_or(&url).to_string()
    }

    /// Waits until the page's path starts with `prefix` (after a click).
    async fn wait_for_path(&self, prefix: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let path = self.path().await;
            // While the page changes, its old context is gone: ask again.
            let ready = match self.page.evaluate("document.readyState").await {
                Ok(result) => result.into_value::<String>().unwrap_or_default(),
                Err(_) => String::new(),
            };
            if path.starts_with(prefix) && ready == "complete" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never reached {prefix}: at {path}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot, after checking that no hostile name ran as script on the page.
    async fn screenshot(&self, name: &str) {
        assert_eq!(
            self.eval("typeof window.__xss").await,
            "undefined",
            "{name}"
        );
        let path = screenshot_dir().join(format!("{name}.png"));
        self.page
            .save_screenshot(
                ScreenshotParams::builder()
                    .format(CaptureScreenshotFormat::Png)
                    .full_page(true)
                    .build(),
                &path,
            )
            .await
            .unwrap();
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

/// Spans of a service and a peer whose names are HTML.
async fn post_hostile_spans(server: &Server) {
    let start = now_ns() - 30_000 * MS;
    let trace = 0xd0_u128 << 120 | 1;
    let mut client = span(
        trace,
        1,
        None,
        CLIENT,
        start,
        4 * MS,
        vec![text("peer.service", HOSTILE_PEER)],
    );
    client.name = HOSTILE_PEER.into();
    let mut root = span(trace, 3, None, SERVER, start - MS, 8 * MS, vec![]);
    root.name = HOSTILE_SERVICE.into();
    client.parent_span_id = 3u64.to_be_bytes().to_vec();
    server.post_spans(HOSTILE_SERVICE, vec![root, client]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_works_in_a_browser_with_the_demo_scenario() {
    let Some(chromium) = chromium() else {
        return;
    };
    let file = sample("full");
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(file.with_extension("truth.json")).unwrap())
            .unwrap();
    let expected_breaker = &truth["breakers"][0];
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &expected_breaker["config"], None);
    let server = Server::start(
        &dir.path().join("data"),
        &["--pairing-wait", "1s", "--config", config.to_str().unwrap()],
    );
    server.replay(&file);
    post_hostile_spans(&server).await;
    let transitions = expected_breaker["transitions"].as_array().unwrap().len();
    breakers_when(&server, |b| {
        b["breakers"].as_array().unwrap().iter().any(|b| {
            b["client"] == "order-service"
                && b["server"] == "payment-service"
                && b["inferred_transitions"].as_array().unwrap().len() == transitions
        })
    })
    .await;

    let (mut browser, mut handler) = Browser::launch(
        BrowserConfig::builder()
            .chrome_executable(chromium)
            .no_sandbox()
            .window_size(1400, 1000)
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .user_data_dir(dir.path().join("chromium"))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    let tab = Tab::open(&browser, format!("http://{}", server.http)).await;
    // The recording runs from now into the future: look at the hour either side.
    let range = format!("{}&refresh=off", window());
    let services: Vec<&str> = truth["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "service")
        .map(|n| n["id"].as_str().unwrap())
        .collect();

    // Overview: every service of the truth, and the hostile one as text.
    tab.visit(&format!("/?{range}")).await;
    let mut listed = tab
        .attributes("table.services tr[data-service]", "data-service")
        .await;
    listed.retain(|s| s != HOSTILE_SERVICE);
    let mut want: Vec<String> = services.iter().map(|s| s.to_string()).collect();
    want.sort();
    listed.sort();
    assert_eq!(listed, want, "services on the overview");
    assert!(
        tab.texts("table.services td a")
            .await
            .iter()
            .any(|t| t == HOSTILE_SERVICE),
        "a hostile service name is shown as text"
    );
    tab.screenshot("overview").await;

    // Service map: every node with its kind, every edge, clickable.
    tab.visit(&format!("/graph?{range}")).await;
    for node in truth["nodes"].as_array().unwrap() {
        let selector = format!(
            "svg.map a.node.{}[data-node={}]",
            node["kind"].as_str().unwrap(),
            node["id"]
        );
        assert_eq!(tab.texts(&selector).await.len(), 1, "{selector}");
    }
    let drawn = tab.attributes("svg.map a.edge", "data-edge").await;
    for edge in truth["edges"].as_array().unwrap() {
        let prefix = format!(
            "{} → {} ({}",
            edge["source"].as_str().unwrap(),
            edge["target"].as_str().unwrap(),
            edge["call_type"].as_str().unwrap()
        );
        assert!(
            drawn.iter().any(|d| d.starts_with(&prefix)),
            "{prefix} in {drawn:?}"
        );
    }
    assert!(
        tab.texts("svg.map a.node text")
            .await
            .iter()
            .any(|t| t == HOSTILE_PEER),
        "a hostile peer name is shown as text"
    );
    tab.screenshot("graph").await;

    // graph → edge → trace.
    tab.page
        .find_element("svg.map a.edge[data-edge^='order-service → payment-service'] text")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    tab.wait_for_path("/edges?").await;
    let heading = tab.texts("h1").await.join(" ");
    assert!(
        heading.contains("order-service") && heading.contains("payment-service"),
        "{heading}"
    );
    assert_eq!(
        tab.attributes("table.breakers tr[data-breaker]", "data-breaker")
            .await,
        ["order-service → payment-service"]
    );
    assert!(!tab.texts("table.latency td.num").await.is_empty());
    tab.screenshot("edge").await;
    let trace_links = tab.attributes("a.trace-link", "href").await;
    assert!(!trace_links.is_empty(), "the edge lists example traces");
    tab.page
        .find_element("a.trace-link")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    tab.wait_for_path("/traces/").await;
    let spans = tab.texts(".waterfall details.span summary .label b").await;
    assert!(
        spans.iter().any(|s| s == "order-service") && spans.iter().any(|s| s == "payment-service"),
        "the trace holds both sides of the call: {spans:?}"
    );
    tab.screenshot("trace").await;

    // A service page: operations, instances and versions.
    tab.visit(&format!("/services/order-service?{range}")).await;
    assert_eq!(tab.texts("table.shares").await.len(), 3);
    assert!(tab.texts("figure.chart").await.len() >= 2);
    tab.screenshot("service").await;

    // Breakers: the payment breaker with its inferred transitions on the timeline.
    tab.visit(&format!("/breakers?{range}")).await;
    let row = "table.breakers tr[data-breaker='order-service → payment-service']";
    assert_eq!(tab.texts(row).await.len(), 1);
    assert!(
        !tab.texts(&format!("{row} svg.timeline rect.state.open"))
            .await
            .is_empty(),
        "the timeline shows the breaker open"
    );
    tab.screenshot("breakers").await;

    // Traces: a search finds traces of order-service.
    tab.visit(&format!("/traces?service=order-service&search=1&{range}"))
        .await;
    assert!(!tab.texts("table.traces a.trace-link").await.is_empty());
    tab.screenshot("traces").await;

    // SQL: a table and the CSV download.
    tab.visit("/sql?q=SELECT%20count(*)%20AS%20spans%20FROM%20spans")
        .await;
    assert_eq!(tab.texts("table.result th").await, ["spans"]);
    let csv_href = tab.attributes("a.csv", "href").await;
    let csv = reqwest::get(format!("http://{}{}", server.http, csv_href[0]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("spans\n"), "{csv}");
    assert_eq!(
        csv.lines().nth(1),
        tab.texts("table.result td")
            .await
            .first()
            .map(String::as_str)
    );
    tab.screenshot("sql").await;

    // The hostile service's own page, and nothing ran.
    tab.visit(&format!(
        "/services/{}?{range}",
        crate::common::requests::url_component(HOSTILE_SERVICE)
    ))
    .await;
    assert!(tab.texts("h1").await[0].starts_with(HOSTILE_SERVICE));
    assert_eq!(tab.eval("typeof window.__xss").await, "undefined");

    assert_eq!(tab.errors(), Vec::<String>::new(), "console errors");
    browser.close().await.unwrap();
    events.abort();
    eprintln!("screenshots in {}", screenshot_dir().display());
    server.stop();
}

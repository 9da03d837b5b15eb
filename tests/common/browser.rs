//! Headless Chromium for the dashboard tests: found on the machine (a failure when CI=true),
//! launched at 1400 px wide, and a tab that records every script error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chromiumoxide::Page;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::log::{EnableParams as LogEnable, EventEntryAdded};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::cdp::js_protocol::runtime::{EventConsoleApiCalled, EventExceptionThrown};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use futures::StreamExt;
use serde_json::Value;

/// A headless browser 1400 px wide with its profile in `dir`, and the task that drives it.
pub async fn launch(chromium: PathBuf, dir: &Path) -> (Browser, tokio::task::JoinHandle<()>) {
    let (browser, mut handler) = Browser::launch(
        BrowserConfig::builder()
            .chrome_executable(chromium)
            .no_sandbox()
            .window_size(1400, 1000)
            .viewport(Viewport {
                width: 1400,
                height: 1000,
                ..Viewport::default()
            })
            .arg("--disable-gpu")
            .arg("--disable-dev-shm-usage")
            .user_data_dir(dir.join("chromium"))
            .build()
            .unwrap(),
    )
    .await
    .unwrap();
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    (browser, events)
}

/// Chromium, or `None` (a failure when CI=true: `.ci/run` installs it).
pub fn chromium() -> Option<PathBuf> {
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
pub fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A browser tab that remembers every console error, uncaught exception and failed load.
pub struct Tab {
    pub page: Page,
    pub base: String,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Tab {
    pub async fn open(browser: &Browser, base: String) -> Self {
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

    pub async fn visit(&self, path: &str) {
        self.page
            .goto(format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    /// The text of every element `selector` matches.
    pub async fn texts(&self, selector: &str) -> Vec<String> {
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

    pub async fn attributes(&self, selector: &str, attribute: &str) -> Vec<String> {
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

    pub async fn eval(&self, script: &str) -> Value {
        self.page
            .evaluate(script)
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
            .into_value()
            .unwrap_or(Value::Null)
    }

    /// The pairs of strings `script` returns, as `[[a, b], …]`.
    pub async fn pairs(&self, script: &str) -> Vec<(String, String)> {
        self.eval(script)
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub async fn path(&self) -> String {
        let url = self.page.url().await.unwrap().unwrap_or_default();
        url.strip_prefix(&self.base).unwrap_or(&url).to_string()
    }

    /// Waits until the page's path starts with `prefix` (after a click).
    pub async fn wait_for_path(&self, prefix: &str) {
        let condition = format!(
            "(location.pathname + location.search).startsWith({})",
            serde_json::to_string(prefix).unwrap()
        );
        self.wait_until(&condition, &format!("never reached {prefix}"))
            .await;
    }

    /// Waits until the page has nothing `selector` matches: after submitting a form whose
    /// answer comes at the same path, where [`Tab::wait_for_path`] would not wait.
    pub async fn wait_until_gone(&self, selector: &str) {
        let condition = format!(
            "!document.querySelector({})",
            serde_json::to_string(selector).unwrap()
        );
        self.wait_until(&condition, &format!("{selector} still there"))
            .await;
    }

    /// Waits until the script `condition` is true of a fully loaded page; `what` is the
    /// failure's message.
    async fn wait_until(&self, condition: &str, what: &str) {
        let script = format!("document.readyState === 'complete' && ({condition})");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // While the page changes, its old context is gone: ask again.
            let met = match self.page.evaluate(script.as_str()).await {
                Ok(result) => result.into_value::<bool>().unwrap_or(false),
                Err(_) => false,
            };
            if met {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: at {}",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a screenshot, after checking that no hostile name ran as script on the page.
    pub async fn screenshot(&self, name: &str) {
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

    /// Saves what the window shows (1400 × 1000), not the whole page.
    pub async fn screenshot_view(&self, name: &str) {
        let path = screenshot_dir().join(format!("{name}.png"));
        self.page
            .save_screenshot(
                ScreenshotParams::builder()
                    .format(CaptureScreenshotFormat::Png)
                    .build(),
                &path,
            )
            .await
            .unwrap();
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }
}

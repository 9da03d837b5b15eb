//! The config file (`--config callwatch.toml`): settings too detailed for flags, namely the
//! circuit breaker rules per edge and the webhook that hears of breaker transitions.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use callwatch_query::breakers::BreakersSection;
use callwatch_storage::SegmentLocation;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub breakers: BreakersSection,
    pub webhook: Option<WebhookSection>,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub storage: StorageSection,
}

/// `[storage]`: where segments go (`url`, as `--storage`), and options of its object store
/// by object_store's names, e.g. `aws_endpoint_url`, `aws_allow_http`, `aws_access_key_id`.
#[derive(Clone, Default, Deserialize)]
pub struct StorageSection {
    pub url: Option<String>,
    #[serde(flatten)]
    pub options: std::collections::BTreeMap<String, toml::Value>,
}

impl std::fmt::Debug for StorageSection {
    /// Option values may be secrets: only their names are shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageSection")
            .field("url", &self.url)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl StorageSection {
    /// Where segments go: the `--storage` flag or `url`, with the options; `None` for the
    /// data directory.
    pub fn location(&self, flag: Option<&str>) -> anyhow::Result<Option<SegmentLocation>> {
        let Some(url) = flag.or(self.url.as_deref()) else {
            anyhow::ensure!(
                self.options.is_empty(),
                "[storage] has options but no url (nor is --storage given)"
            );
            return Ok(None);
        };
        let options: Vec<(String, String)> = self
            .options
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    toml::Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect();
        Ok(Some(SegmentLocation::parse(url, &options)?))
    }
}

/// `[auth]`: the tokens that may send and read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

/// `[[auth.tokens]]`: a token by its SHA-256, never the token itself.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    /// `printf %s "$TOKEN" | sha256sum`
    pub sha256: String,
    /// Of `ingest`, `read` and `admin`.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// `[webhook]`: where breaker transitions are POSTed as JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// An `http://` URL.
    pub url: String,
    /// Per attempt (default 5s).
    pub timeout: Option<String>,
    /// Attempts after the first failed one (default 3).
    pub retries: Option<u32>,
    /// Transitions waiting to be sent; beyond it they are dropped and counted (default 1000).
    pub queue: Option<usize>,
}

/// The webhook as it runs.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub url: reqwest::Url,
    pub timeout: Duration,
    pub retries: u32,
    pub queue: usize,
}

impl ConfigFile {
    /// Reads and checks the file; no file is the defaults.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        let config: Self = toml::from_str(&text)
            .with_context(|| format!("in the config file {}", path.display()))?;
        config
            .webhook()
            .with_context(|| format!("in the config file {}", path.display()))?;
        Ok(config)
    }

    pub fn webhook(&self) -> anyhow::Result<Option<Webhook>> {
        let Some(section) = &self.webhook else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(&section.url)
            .with_context(|| format!("[webhook] url = {:?} is not a URL", section.url))?;
        if url.scheme() != "http" {
            anyhow::bail!(
                "[webhook] url = {:?}: only http:// URLs are supported (this build has no TLS)",
                section.url
            );
        }
        let timeout = match &section.timeout {
            Some(text) => humantime::parse_duration(text)
                .with_context(|| format!("[webhook] timeout = {text:?}"))?,
            None => Duration::from_secs(5),
        };
        Ok(Some(Webhook {
            url,
            timeout,
            retries: section.retries.unwrap_or(3),
            queue: section.queue.unwrap_or(1000).max(1),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callwatch_query::breakers::BreakerOptions;

    fn parse(text: &str) -> anyhow::Result<ConfigFile> {
        let config: ConfigFile = toml::from_str(text)?;
        config.webhook()?;
        BreakerOptions::new(&config.breakers, Duration::from_secs(10))
            .map_err(anyhow::Error::msg)?;
        Ok(config)
    }

    #[test]
    fn edges_override_the_default_which_overrides_resilience4j() {
        let config = parse(
            r#"
            [breakers.default]
            minimumNumberOfCalls = 20
            wait_duration_in_open_state = "30s"

            [[breakers.edge]]
            client = "order-service"
            server = "payment-service"
            sliding_window_type = "time_based"
            sliding_window_size = 10

            [webhook]
            url = "http://127.0.0.1:9/hook"
            retries = 1
            "#,
        )
        .unwrap();
        let options = BreakerOptions::new(&config.breakers, Duration::from_secs(10)).unwrap();
        let edge = options.settings_for("order-service", "payment-service");
        assert_eq!(edge.sliding_window_size, 10);
        assert_eq!(edge.minimum_number_of_calls, 20);
        assert_eq!(edge.wait_duration_in_open_state, Duration::from_secs(30));
        let other = options.settings_for("api-gateway", "order-service");
        assert_eq!(other.sliding_window_size, 100, "resilience4j's default");
        assert_eq!(other.failure_rate_threshold, 50.0);
        assert_eq!(config.webhook().unwrap().unwrap().retries, 1);
    }

    #[test]
    fn mistakes_are_named() {
        let error = |text: &str| format!("{:#}", parse(text).unwrap_err());
        assert!(
            error("[breakers.default]\nsliding_window_sise = 3").contains("sliding_window_sise")
        );
        assert!(error("[breakers.default]\nfailure_rate_threshold = 0").contains("failure_rate"));
        assert!(error("[[breakers.edge]]\nclient = \"a\"").contains("client and server"));
        assert!(
            error("[breakers.default]\nwait_duration_in_open_state = \"soon\"").contains("soon")
        );
        assert!(error("[webhook]\nurl = \"https://example.com\"").contains("http://"));
    }
}

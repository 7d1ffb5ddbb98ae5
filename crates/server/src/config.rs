//! Configuration: defaults, then a TOML file (`--config`), then
//! environment variables (`ELDERCARE_*`), then flags; later wins.
use anyhow::Context;
use eldercare_rules::Rules;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Days of telemetry kept on PostgreSQL when nothing says otherwise.
pub const DEFAULT_RETENTION_DAYS: u32 = 400;

#[derive(clap::Args, Debug, Clone)]
pub struct StorageArgs {
    /// Directory of the embedded store (SQLite).
    #[arg(long, env = "ELDERCARE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// PostgreSQL / TimescaleDB URL; when unset the embedded store is used.
    #[arg(long, env = "ELDERCARE_DATABASE_URL")]
    pub database_url: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML configuration file (see deploy/eldercare.toml).
    #[arg(long, env = "ELDERCARE_CONFIG")]
    pub config: Option<PathBuf>,
    /// MQTT listener for devices [default: 127.0.0.1:1883]
    #[arg(long, env = "ELDERCARE_MQTT_ADDR")]
    pub mqtt_addr: Option<SocketAddr>,
    /// gRPC listener for operators [default: 127.0.0.1:50051]
    #[arg(long, env = "ELDERCARE_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// Prometheus metrics at /metrics [default: 127.0.0.1:9464]
    #[arg(long, env = "ELDERCARE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// The hotline console (a browser page) and its JSON API [default: 127.0.0.1:8080]
    #[arg(long, env = "ELDERCARE_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Directory of the embedded store [default: ./data]
    #[arg(long, env = "ELDERCARE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL / TimescaleDB URL
    #[arg(long, env = "ELDERCARE_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Days of telemetry kept on PostgreSQL / TimescaleDB [default: 400]
    #[arg(long, env = "ELDERCARE_RETENTION_DAYS")]
    pub retention_days: Option<u32>,
    /// Rule file (see deploy/rules.toml); reloaded on SIGHUP
    /// [default: every rule at its default]
    #[arg(long, env = "ELDERCARE_RULES")]
    pub rules: Option<PathBuf>,
    /// API tokens file (hashes; `eldercare token add` writes it); reloaded
    /// on SIGHUP [default: <data-dir>/tokens.toml]
    #[arg(long, env = "ELDERCARE_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// `fsync`: a QoS 1 message is acknowledged once it is fsynced to the
    /// intake log; `none`: once written (survives a crash of the process,
    /// not a power loss) [default: fsync]
    #[arg(long, env = "ELDERCARE_DURABILITY", value_parser = parse_durability)]
    pub durability: Option<eldercare_intake::Durability>,
}

fn parse_durability(s: &str) -> Result<eldercare_intake::Durability, String> {
    eldercare_intake::Durability::parse(s)
        .ok_or_else(|| format!("`{s}` is not a durability; use fsync or none"))
}

/// The configuration file's shape; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// MQTT listener for devices.
    mqtt_addr: Option<SocketAddr>,
    /// gRPC listener for operators.
    grpc_addr: Option<SocketAddr>,
    /// Prometheus metrics listener.
    metrics_addr: Option<SocketAddr>,
    /// The hotline console and its JSON API.
    http_addr: Option<SocketAddr>,
    /// Directory of the embedded store.
    data_dir: Option<PathBuf>,
    /// PostgreSQL / TimescaleDB URL.
    database_url: Option<String>,
    /// Days of telemetry kept (PostgreSQL / TimescaleDB).
    retention_days: Option<u32>,
    /// Rule file (thresholds and durations of every rule).
    rules_file: Option<PathBuf>,
    /// API tokens file.
    tokens_file: Option<PathBuf>,
    /// Seconds an OPEN alert may wait for acknowledgement, by severity.
    escalation: Option<eldercare_alerts::Escalation>,
    /// Events buffered per gRPC subscriber.
    subscriber_buffer: Option<usize>,
    /// Seconds a subscriber's buffer may stay full before it is cut off.
    subscriber_stall_s: Option<f64>,
    /// Limits and timers of the MQTT listener (`[mqtt]`).
    mqtt: Option<eldercare_broker::MqttSettings>,
    /// When a device's message counts as kept: `fsync` or `none`.
    durability: Option<eldercare_intake::Durability>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mqtt_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub storage: StorageArgs,
    /// Days of telemetry kept on PostgreSQL; older days are dropped.
    pub retention_days: u32,
    /// Where the rules came from, to reload on SIGHUP.
    pub rules_file: Option<PathBuf>,
    pub rules: Rules,
    /// Bearer tokens of the API, from `tokens_file` (reloaded on SIGHUP).
    pub auth: eldercare_api::Auth,
    pub escalation: eldercare_alerts::Escalation,
    pub subscribers: eldercare_api::Subscribers,
    /// Limits and timers of the MQTT listener.
    pub mqtt: eldercare_broker::MqttSettings,
    /// When a device's message counts as kept (and is acknowledged).
    pub durability: eldercare_intake::Durability,
}

impl Config {
    pub fn load(args: &ServeArgs) -> anyhow::Result<Config> {
        let file: FileConfig = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("invalid config {}", p.display()))?
            }
            None => FileConfig::default(),
        };
        let rules_file = args.rules.clone().or(file.rules_file);
        let data_dir = args
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| "./data".into());
        let tokens_file = args
            .tokens_file
            .clone()
            .or(file.tokens_file)
            .unwrap_or_else(|| data_dir.join("tokens.toml"));
        let auth = eldercare_api::Auth::load(&tokens_file)?;
        if file.subscriber_buffer == Some(0) {
            anyhow::bail!("subscriber_buffer must be at least 1");
        }
        if file
            .subscriber_stall_s
            .is_some_and(|s| !(s > 0.0 && s < 3600.0))
        {
            anyhow::bail!("subscriber_stall_s must be between 0 and 3600 seconds");
        }
        let retention_days = args
            .retention_days
            .or(file.retention_days)
            .unwrap_or(DEFAULT_RETENTION_DAYS);
        if retention_days == 0 {
            anyhow::bail!("retention_days must be at least 1");
        }
        let mqtt = file.mqtt.unwrap_or_default();
        mqtt.validate()?;
        let d = eldercare_api::Subscribers::default();
        Ok(Config {
            mqtt,
            durability: args.durability.or(file.durability).unwrap_or_default(),
            auth,
            escalation: file.escalation.unwrap_or_default(),
            subscribers: eldercare_api::Subscribers {
                buffer: file.subscriber_buffer.unwrap_or(d.buffer),
                stall: file
                    .subscriber_stall_s
                    .map(std::time::Duration::from_secs_f64)
                    .unwrap_or(d.stall),
            },
            mqtt_addr: args
                .mqtt_addr
                .or(file.mqtt_addr)
                .unwrap_or(([127, 0, 0, 1], 1883).into()),
            grpc_addr: args
                .grpc_addr
                .or(file.grpc_addr)
                .unwrap_or(([127, 0, 0, 1], 50051).into()),
            metrics_addr: args
                .metrics_addr
                .or(file.metrics_addr)
                .unwrap_or(([127, 0, 0, 1], 9464).into()),
            http_addr: args
                .http_addr
                .or(file.http_addr)
                .unwrap_or(([127, 0, 0, 1], 8080).into()),
            storage: StorageArgs {
                data_dir,
                database_url: args.database_url.clone().or(file.database_url),
            },
            retention_days,
            rules: match &rules_file {
                Some(p) => Rules::load(p)?,
                None => Rules::defaults(),
            },
            rules_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_config_parses() {
        let f: FileConfig = toml::from_str(include_str!("../../../deploy/eldercare.toml")).unwrap();
        assert_eq!(f.mqtt_addr, Some(([127, 0, 0, 1], 1883).into()));
        assert!(f.rules_file.is_none());
        assert_eq!(f.escalation, Some(eldercare_alerts::Escalation::default()));
        assert_eq!(f.retention_days, Some(DEFAULT_RETENTION_DAYS));
        assert_eq!(
            f.subscriber_buffer,
            Some(eldercare_api::Subscribers::default().buffer)
        );
        assert_eq!(f.mqtt, Some(eldercare_broker::MqttSettings::default()));
        assert_eq!(f.durability, Some(eldercare_intake::Durability::Fsync));
    }
}

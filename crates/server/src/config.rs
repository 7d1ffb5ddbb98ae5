//! Configuration: defaults, then a TOML file (`--config`), then
//! environment variables (`ELDERCARE_*`), then flags; later wins.
use anyhow::Context;
use eldercare_rules::Rules;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

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
    /// MQTT listener for devices, or `off` for none (devices then use
    /// --mqtts-addr only) [default: 127.0.0.1:1883]
    #[arg(long, env = "ELDERCARE_MQTT_ADDR")]
    pub mqtt_addr: Option<ListenAddr>,
    /// MQTT over TLS listener for devices, opened only with --tls-cert
    /// [default: 0.0.0.0:8883]
    #[arg(long, env = "ELDERCARE_MQTTS_ADDR")]
    pub mqtts_addr: Option<SocketAddr>,
    /// Server certificate chain (PEM) for MQTT over TLS and for gRPC, which
    /// is then served over TLS only; reloaded on SIGHUP
    #[arg(long, env = "ELDERCARE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert
    #[arg(long, env = "ELDERCARE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that sign gateways' client certificates; a
    /// device may then log in with a certificate whose Common Name is its
    /// id instead of a password [default: no client certificates]
    #[arg(long, env = "ELDERCARE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
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
    /// NATS servers of a cluster (`nats://a:4222,nats://b:4222`): this
    /// server becomes a member of it (docs/cluster.md); needs
    /// --database-url [default: none, a single node]
    #[arg(long, env = "ELDERCARE_NATS")]
    pub nats: Option<String>,
    /// This member's name in the cluster, unique [default: host name and
    /// process id]
    #[arg(long, env = "ELDERCARE_MEMBER_ID")]
    pub member_id: Option<String>,
    /// How long a member's partition and desk leases run unless renewed:
    /// about the failover time [default: 3000]
    #[arg(long, env = "ELDERCARE_CLUSTER_LEASE_MS")]
    pub cluster_lease_ms: Option<u64>,
    /// Replicas of the cluster's streams [default: 3]
    #[arg(long, env = "ELDERCARE_NATS_REPLICAS")]
    pub nats_replicas: Option<usize>,
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

/// A listener's address, or `off` for no listener at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddr {
    Off,
    At(SocketAddr),
}

impl ListenAddr {
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Off => None,
            ListenAddr::At(a) => Some(a),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenAddr, String> {
        if s == "off" {
            return Ok(ListenAddr::Off);
        }
        s.parse()
            .map(ListenAddr::At)
            .map_err(|_| format!("`{s}` is neither an address (IP:port) nor `off`"))
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ListenAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn parse_durability(s: &str) -> Result<eldercare_intake::Durability, String> {
    eldercare_intake::Durability::parse(s)
        .ok_or_else(|| format!("`{s}` is not a durability; use fsync or none"))
}

/// The configuration file's shape; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// MQTT listener for devices, or "off".
    mqtt_addr: Option<ListenAddr>,
    /// MQTT over TLS listener for devices (only with `[tls]`).
    mqtts_addr: Option<SocketAddr>,
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
    /// NATS servers of a cluster, comma-separated.
    nats: Option<String>,
    /// This member's name in the cluster.
    member_id: Option<String>,
    /// Milliseconds a lease runs unless renewed.
    cluster_lease_ms: Option<u64>,
    /// Replicas of the cluster's streams.
    nats_replicas: Option<usize>,
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
    /// The server's certificate and key, and gateways' CA (`[tls]`).
    tls: Option<FileTls>,
}

/// `[tls]`: PEM files; relative paths are taken from the working
/// directory, as every path here.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct FileTls {
    /// The server's certificate chain.
    cert: Option<PathBuf>,
    /// Its private key.
    key: Option<PathBuf>,
    /// CA certificates that sign gateways' client certificates.
    client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The plain MQTT listener; None when it is off.
    pub mqtt_addr: Option<SocketAddr>,
    /// The MQTT over TLS listener, opened only with `tls`.
    pub mqtts_addr: SocketAddr,
    /// The server's TLS files: with them MQTT over TLS is served on
    /// `mqtts_addr` and gRPC is served over TLS only.
    pub tls: Option<eldercare_tls::TlsFiles>,
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
    /// Membership of a cluster; `None`: a single node.
    pub cluster: Option<eldercare_cluster::ClusterConfig>,
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
        let tls = tls_files(args, file.tls.unwrap_or_default())?;
        let mqtt_addr = args
            .mqtt_addr
            .or(file.mqtt_addr)
            .unwrap_or(ListenAddr::At(([127, 0, 0, 1], 1883).into()))
            .addr();
        if mqtt_addr.is_none() && tls.is_none() {
            anyhow::bail!(
                "mqtt_addr is off and no TLS certificate is given: devices would have no listener \
                 (give --tls-cert and --tls-key, or [tls] cert and key, for MQTT over TLS)"
            );
        }
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
            mqtt_addr,
            mqtts_addr: args
                .mqtts_addr
                .or(file.mqtts_addr)
                .unwrap_or(([0, 0, 0, 0], 8883).into()),
            tls,
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
            cluster: match args.nats.clone().or(file.nats) {
                None => None,
                Some(urls) => Some(eldercare_cluster::ClusterConfig {
                    urls,
                    member: args
                        .member_id
                        .clone()
                        .or(file.member_id)
                        .unwrap_or_else(|| {
                            let host = std::fs::read_to_string("/etc/hostname")
                                .map(|h| h.trim().to_string())
                                .unwrap_or_else(|_| "member".into());
                            format!("{host}-{}", std::process::id())
                        }),
                    lease: std::time::Duration::from_millis(
                        args.cluster_lease_ms
                            .or(file.cluster_lease_ms)
                            .unwrap_or(3000)
                            .max(300),
                    ),
                    replicas: args
                        .nats_replicas
                        .or(file.nats_replicas)
                        .unwrap_or(3)
                        .clamp(1, 5),
                }),
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

/// The TLS files from flags over `[tls]`, key by key. A certificate needs
/// its key and the reverse; gateways' CA needs both.
fn tls_files(args: &ServeArgs, file: FileTls) -> anyhow::Result<Option<eldercare_tls::TlsFiles>> {
    let cert = args.tls_cert.clone().or(file.cert);
    let key = args.tls_key.clone().or(file.key);
    let client_ca = args.tls_client_ca.clone().or(file.client_ca);
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(eldercare_tls::TlsFiles {
            cert,
            key,
            client_ca,
        })),
        (Some(cert), None) => anyhow::bail!(
            "TLS certificate {} given without its private key (--tls-key, or key in [tls])",
            cert.display()
        ),
        (None, Some(key)) => anyhow::bail!(
            "TLS private key {} given without its certificate (--tls-cert, or cert in [tls])",
            key.display()
        ),
        (None, None) => match client_ca {
            Some(ca) => anyhow::bail!(
                "client CA {} given without a server certificate and key (--tls-cert and --tls-key, or cert and key in [tls])",
                ca.display()
            ),
            None => Ok(None),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_config_parses() {
        let f: FileConfig = toml::from_str(include_str!("../../../deploy/eldercare.toml")).unwrap();
        assert_eq!(
            f.mqtt_addr,
            Some(ListenAddr::At(([127, 0, 0, 1], 1883).into()))
        );
        assert_eq!(f.mqtts_addr, Some(([0, 0, 0, 0], 8883).into()));
        assert_eq!(f.tls, None);
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

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// `eldercare serve` with `flags` and, if given, a config file
    /// holding `toml`, over an empty data directory.
    fn load(flags: &[&str], toml: Option<&str>) -> anyhow::Result<Config> {
        use clap::Parser;
        let dir = tempfile::tempdir().unwrap();
        let mut argv = vec!["serve".to_string(), "--data-dir".into()];
        argv.push(dir.path().display().to_string());
        if let Some(toml) = toml {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, toml).unwrap();
            argv.push("--config".into());
            argv.push(path.display().to_string());
        }
        argv.extend(flags.iter().map(|f| f.to_string()));
        Config::load(&Flags::try_parse_from(argv)?.serve)
    }

    fn error(flags: &[&str], toml: Option<&str>) -> String {
        format!("{:#}", load(flags, toml).unwrap_err())
    }

    #[test]
    fn tls_files_come_from_flags_over_the_file_and_need_cert_and_key() {
        let c = load(&[], None).unwrap();
        assert_eq!(c.tls, None);
        assert_eq!(c.mqtt_addr, Some(([127, 0, 0, 1], 1883).into()));
        assert_eq!(c.mqtts_addr, ([0, 0, 0, 0], 8883).into());

        let c = load(
            &["--tls-cert", "flag.pem", "--mqtts-addr", "127.0.0.1:0"],
            Some("mqtts_addr = \"127.0.0.1:18883\"\n[tls]\ncert = \"file.pem\"\nkey = \"file.key\"\nclient_ca = \"gateways.pem\"\n"),
        )
        .unwrap();
        assert_eq!(
            c.tls,
            Some(eldercare_tls::TlsFiles {
                cert: "flag.pem".into(),
                key: "file.key".into(),
                client_ca: Some("gateways.pem".into()),
            })
        );
        assert_eq!(c.mqtts_addr, ([127, 0, 0, 1], 0).into());

        let m = error(&["--tls-cert", "server.pem"], None);
        assert!(
            m.contains("server.pem given without its private key"),
            "{m}"
        );
        let m = error(&[], Some("[tls]\nkey = \"server.key\"\n"));
        assert!(
            m.contains("server.key given without its certificate"),
            "{m}"
        );
        let m = error(&["--tls-client-ca", "gateways.pem"], None);
        assert!(m.contains("client CA gateways.pem given without"), "{m}");
        let m = error(&[], Some("[tls]\ncertificate = \"x.pem\"\n"));
        assert!(m.contains("unknown field `certificate`"), "{m}");
    }

    #[test]
    fn plain_mqtt_can_be_switched_off_when_tls_is_on() {
        let tls = ["--tls-cert", "s.pem", "--tls-key", "s.key"];
        let c = load(&[&tls[..], &["--mqtt-addr", "off"]].concat(), None).unwrap();
        assert_eq!(c.mqtt_addr, None);
        let c = load(&tls, Some("mqtt_addr = \"off\"\n")).unwrap();
        assert_eq!(c.mqtt_addr, None);
        // A flag turns it back on over the file.
        let c = load(
            &[&tls[..], &["--mqtt-addr", "127.0.0.1:0"]].concat(),
            Some("mqtt_addr = \"off\"\n"),
        )
        .unwrap();
        assert_eq!(c.mqtt_addr, Some(([127, 0, 0, 1], 0).into()));

        let m = error(&["--mqtt-addr", "off"], None);
        assert!(m.contains("devices would have no listener"), "{m}");
        let m = error(&["--mqtt-addr", "of"], None);
        assert!(
            m.contains("`of` is neither an address (IP:port) nor `off`"),
            "{m}"
        );
        let m = error(&[], Some("mqtt_addr = \"nowhere\"\n"));
        assert!(m.contains("`nowhere` is neither an address"), "{m}");
    }
}

//! Limits and timers of the public MQTT listener: the `[mqtt]` section of
//! the configuration file (commented reference: `deploy/eldercare.toml`).
use serde::Deserialize;
use std::time::Duration;

/// The `[mqtt]` section; every key optional, defaults below.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSettings {
    /// Seconds a new connection has to deliver its whole CONNECT; a socket
    /// that sends nothing, or half a CONNECT, is closed after this.
    pub connect_timeout_s: f64,
    /// Connections accepted but not yet logged in, at most. Beyond it a
    /// new socket is closed at once (each pending one holds a descriptor).
    pub max_pending_connections: usize,
    /// Largest CONNECT accepted, in bytes (MQTT remaining length): a
    /// login, a client id and a last will are small.
    pub max_connect_bytes: usize,
    /// Largest packet accepted after CONNECT, in bytes (MQTT remaining
    /// length). A larger one closes the connection before it is read. The
    /// protocol's 4 KiB payload limit is enforced (and counted) later.
    pub max_packet_bytes: usize,
    /// Bytes of unfinished packets buffered across all connections. A
    /// connection that cannot get room within `connect_timeout_s` is
    /// closed.
    pub max_buffered_bytes: usize,
    /// Packets per second a device session may send, sustained (token
    /// bucket). Beyond it the session's socket is not read until the
    /// bucket refills (the device is slowed, nothing is dropped).
    pub rate_msgs_per_s: f64,
    /// Packets a device session may send at once above its sustained
    /// rate (the bucket's size).
    pub rate_burst: u32,
    /// A gateway session's sustained rate: this, or `rate_msgs_per_s`
    /// times the devices it speaks for, whichever is larger.
    pub gateway_rate_msgs_per_s: f64,
    /// A gateway session's burst: this, or `rate_burst` times the devices
    /// it speaks for, whichever is larger.
    pub gateway_rate_burst: u32,
    /// A session slowed down for more than half of a window this long
    /// (seconds) is cut off.
    pub rate_cutoff_window_s: f64,
    /// QoS 1 messages of one session waiting for their PUBACK (being made
    /// durable); while it is full the session's socket is not read.
    pub max_inflight: usize,
    /// The longest keep-alive an MQTT 5 session gets, in seconds: a device
    /// asking for none (0) or for more is told this one (Server Keep
    /// Alive) and held to it. 0: whatever the device asks. MQTT 3.1.1 has
    /// no way to be told, so its keep-alive is taken as asked.
    pub max_keep_alive_s: u16,
    /// The longest an MQTT 5 session is kept after its connection, in
    /// seconds (Session Expiry Interval): a device asking for more is told
    /// this one in the CONNACK.
    pub max_session_expiry_s: u32,
}

impl Default for MqttSettings {
    fn default() -> Self {
        MqttSettings {
            connect_timeout_s: 10.0,
            max_pending_connections: 2_000,
            max_connect_bytes: 64 * 1024,
            max_packet_bytes: 256 * 1024,
            max_buffered_bytes: 256 * 1024 * 1024,
            rate_msgs_per_s: 50.0,
            rate_burst: 200,
            gateway_rate_msgs_per_s: 500.0,
            gateway_rate_burst: 2_000,
            rate_cutoff_window_s: 30.0,
            max_inflight: 64,
            max_keep_alive_s: 3_600,
            max_session_expiry_s: 86_400,
        }
    }
}

/// A setting out of its range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("mqtt.{key} = {value}: {why}")]
pub struct SettingsError {
    pub key: &'static str,
    pub value: String,
    pub why: &'static str,
}

impl MqttSettings {
    /// Checks every value, naming the first one out of range.
    pub fn validate(&self) -> Result<(), SettingsError> {
        fn err(key: &'static str, value: impl ToString, why: &'static str) -> SettingsError {
            SettingsError {
                key,
                value: value.to_string(),
                why,
            }
        }
        let secs = |key, v: f64| {
            if v > 0.0 && v <= 86_400.0 {
                Ok(())
            } else {
                Err(err(key, v, "must be above 0 and at most 86400 seconds"))
            }
        };
        secs("connect_timeout_s", self.connect_timeout_s)?;
        secs("rate_cutoff_window_s", self.rate_cutoff_window_s)?;
        for (key, v) in [
            ("rate_msgs_per_s", self.rate_msgs_per_s),
            ("gateway_rate_msgs_per_s", self.gateway_rate_msgs_per_s),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(err(key, v, "must be above 0"));
            }
        }
        for (key, v) in [
            ("rate_burst", self.rate_burst as usize),
            ("gateway_rate_burst", self.gateway_rate_burst as usize),
            ("max_pending_connections", self.max_pending_connections),
            ("max_inflight", self.max_inflight),
        ] {
            if v == 0 {
                return Err(err(key, v, "must be at least 1"));
            }
        }
        // An MQTT remaining length is at most 268,435,455 bytes.
        for (key, v) in [
            ("max_connect_bytes", self.max_connect_bytes),
            ("max_packet_bytes", self.max_packet_bytes),
        ] {
            if !(128..=268_435_455).contains(&v) {
                return Err(err(key, v, "must be between 128 and 268435455 bytes"));
            }
        }
        let largest = self.max_connect_bytes.max(self.max_packet_bytes);
        // The largest frame, its header and one read window beyond it.
        if self.max_buffered_bytes < largest + 8 * 1024 || self.max_buffered_bytes > (1 << 40) {
            return Err(err(
                "max_buffered_bytes",
                self.max_buffered_bytes,
                "must hold the largest packet (max_packet_bytes, max_connect_bytes) and be at most 1 TiB",
            ));
        }
        if self.max_inflight > 65_535 {
            return Err(err(
                "max_inflight",
                self.max_inflight,
                "must be at most 65535 (MQTT packet ids)",
            ));
        }
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout_s)
    }

    pub fn rate_cutoff_window(&self) -> Duration {
        Duration::from_secs_f64(self.rate_cutoff_window_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_bad_value_is_named() {
        MqttSettings::default().validate().unwrap();
        let bad = |f: fn(&mut MqttSettings)| {
            let mut s = MqttSettings::default();
            f(&mut s);
            s.validate().unwrap_err().key
        };
        assert_eq!(bad(|s| s.connect_timeout_s = 0.0), "connect_timeout_s");
        assert_eq!(bad(|s| s.rate_msgs_per_s = f64::NAN), "rate_msgs_per_s");
        assert_eq!(bad(|s| s.rate_burst = 0), "rate_burst");
        assert_eq!(
            bad(|s| s.max_pending_connections = 0),
            "max_pending_connections"
        );
        assert_eq!(bad(|s| s.max_connect_bytes = 10), "max_connect_bytes");
        assert_eq!(bad(|s| s.max_buffered_bytes = 1000), "max_buffered_bytes");
        assert_eq!(bad(|s| s.max_inflight = 70_000), "max_inflight");
    }

    #[test]
    fn a_partial_section_keeps_the_other_defaults_and_unknown_keys_are_refused() {
        let s: MqttSettings = toml_like("connect_timeout_s = 1.5");
        assert_eq!(s.connect_timeout(), Duration::from_millis(1500));
        assert_eq!(s.rate_burst, MqttSettings::default().rate_burst);
        assert!(serde_json::from_str::<MqttSettings>(r#"{"connect_timeout": 1}"#).is_err());
    }

    /// One `key = number` line, through serde (the broker crate has no
    /// TOML parser; the server's config test reads the reference file).
    fn toml_like(line: &str) -> MqttSettings {
        let (k, v) = line.split_once(" = ").unwrap();
        serde_json::from_str(&format!(r#"{{"{k}": {v}}}"#)).unwrap()
    }
}

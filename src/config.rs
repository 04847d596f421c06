//! Configuration of `sightline run`: a TOML file, environment overrides and
//! command-line flags, validated into [`WorkerConfig`].
//!
//! Precedence, lowest first: built-in defaults, the file, the environment
//! (`SIGHTLINE_*`), the flags. `examples/sightline.toml` documents every
//! key.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Everything that can go wrong while reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown or mistyped key.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML reader said, with the position.
        message: String,
    },
    /// A value is missing or out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The config file as written (every key optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Broker connection.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// Topic names.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// Event topics and their formats.
    #[serde(default)]
    pub events: Vec<EventsConfig>,
    /// The HTTP endpoint for metrics and probes.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// How sightings are written.
    #[serde(default)]
    pub matching: MatchingConfig,
    /// Limits of one worker.
    #[serde(default)]
    pub worker: WorkerLimits,
}

/// `[kafka]`: where the brokers are and how to talk to them.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port,host:port`.
    pub brokers: Option<String>,
    /// Consumer group of the event topics. Default "sightline".
    pub group: Option<String>,
    /// Raw librdkafka properties (SASL, SSL, tuning), passed through as
    /// they are. Values of keys that look secret are redacted in logs.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("properties", &Redacted(&self.properties))
            .finish()
    }
}

/// A property map that prints secret values as `***`.
pub struct Redacted<'a>(pub &'a BTreeMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (key, value) in self.0 {
            if is_secret(key) {
                map.entry(key, &"***");
            } else {
                map.entry(key, value);
            }
        }
        map.finish()
    }
}

/// True for librdkafka property names whose values are credentials.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key.pem",
        "jaas",
        "credentials",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `[topics]`: names of the topics a worker reads and writes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Indicators (STIX objects or bundles, key = indicator id, compacted).
    /// Default "stix.indicators".
    pub indicators: Option<String>,
    /// Sightings and their evidence objects (key = object id, compacted).
    /// Default "stix.sightings".
    pub sightings: Option<String>,
    /// Messages that could not be used, with the reason in headers.
    /// Default "sightline.dead-letter".
    pub dead_letter: Option<String>,
}

/// `[[events]]`: one event topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// The topic.
    pub topic: String,
    /// auto (default), stix, ecs, ocsf, zeek or suricata.
    #[serde(default)]
    pub format: Option<String>,
    /// A mapping file for a log format of your own.
    #[serde(default)]
    pub mapping: Option<PathBuf>,
}

/// `[metrics]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `/metrics`, `/health` and `/ready`. Default
    /// "127.0.0.1:9464".
    pub addr: Option<String>,
}

/// `[matching]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchingConfig {
    /// Name of the sensor identity. Default "sightline".
    pub sensor_name: Option<String>,
    /// Fold repeated hits of one indicator on one observable within this
    /// many seconds of event time into one sighting; 0 writes one sighting
    /// per hit. Default 3600.
    pub aggregate_window_seconds: Option<u32>,
}

/// `[worker]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerLimits {
    /// Give up when the indicator topic cannot be read to its end within
    /// this many seconds of start. Default 300.
    pub ready_timeout_seconds: Option<u64>,
    /// Event messages being processed or awaiting broker acknowledgement,
    /// at most, per worker. Default 10,000; at most 1,000,000.
    pub max_in_flight: Option<usize>,
    /// Bytes of those messages (keys and payloads), at most, per worker;
    /// a message larger than the whole budget is taken alone. Default
    /// 256 MiB; at least 1 KiB, at most 1 TiB.
    pub max_in_flight_bytes: Option<u64>,
}

/// Values given on the command line; they win over file and environment.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--brokers`.
    pub brokers: Option<String>,
    /// `--group`.
    pub group: Option<String>,
    /// `--indicators-topic`.
    pub indicators_topic: Option<String>,
    /// `--events-topic` (replaces the `[[events]]` list).
    pub events_topic: Option<String>,
    /// `--format` (for `--events-topic`, or every configured topic).
    pub format: Option<String>,
    /// `--mapping`.
    pub mapping: Option<PathBuf>,
    /// `--sightings-topic`.
    pub sightings_topic: Option<String>,
    /// `--dead-letter-topic`.
    pub dead_letter_topic: Option<String>,
    /// `--metrics-addr`.
    pub metrics_addr: Option<String>,
    /// `--sensor-name`.
    pub sensor_name: Option<String>,
    /// `--aggregate-window`.
    pub aggregate_window_seconds: Option<u32>,
}

/// Largest `max_in_flight` accepted.
pub const MAX_IN_FLIGHT: usize = 1_000_000;

/// Smallest and largest `max_in_flight_bytes` accepted.
pub const IN_FLIGHT_BYTES_RANGE: std::ops::RangeInclusive<u64> = 1 << 10..=1 << 40;

/// The formats an event topic may name.
pub const FORMATS: [&str; 6] = ["auto", "stix", "ecs", "ocsf", "zeek", "suricata"];

/// A validated worker configuration.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Bootstrap servers.
    pub brokers: String,
    /// Consumer group of the event topics.
    pub group: String,
    /// Raw librdkafka properties.
    pub properties: BTreeMap<String, String>,
    /// Indicator topic.
    pub indicators_topic: String,
    /// Sightings topic.
    pub sightings_topic: String,
    /// Dead-letter topic.
    pub dead_letter_topic: String,
    /// Event topics.
    pub events: Vec<EventsConfig>,
    /// Metrics and probes address.
    pub metrics_addr: SocketAddr,
    /// Sensor identity name.
    pub sensor_name: String,
    /// Aggregation window in seconds; 0 for none.
    pub aggregate_window_seconds: u32,
    /// How long to wait for the indicator topic at start.
    pub ready_timeout: Duration,
    /// Most event messages in flight.
    pub max_in_flight: usize,
    /// Most bytes of event messages in flight.
    pub max_in_flight_bytes: u64,
}

impl fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("properties", &Redacted(&self.properties))
            .field("indicators_topic", &self.indicators_topic)
            .field("sightings_topic", &self.sightings_topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("events", &self.events)
            .field("metrics_addr", &self.metrics_addr)
            .field("sensor_name", &self.sensor_name)
            .field("aggregate_window_seconds", &self.aggregate_window_seconds)
            .field("ready_timeout", &self.ready_timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_in_flight_bytes", &self.max_in_flight_bytes)
            .finish()
    }
}

impl RunConfig {
    /// Reads and checks a config file.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Read`] or [`ConfigError::Parse`] (unknown keys are
    /// refused, with their position).
    pub fn from_file(path: &Path) -> Result<RunConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        RunConfig::from_toml(path, &text)
    }

    /// Parses config text; `path` names it in errors.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`].
    pub fn from_toml(path: &Path, text: &str) -> Result<RunConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })
    }

    /// Applies `SIGHTLINE_*` variables from `vars`: `SIGHTLINE_BROKERS`,
    /// `SIGHTLINE_GROUP`, `SIGHTLINE_METRICS_ADDR`, and
    /// `SIGHTLINE_KAFKA__<NAME>`, which sets librdkafka property `<name>`
    /// (lower case, `_` read as `.`: `SIGHTLINE_KAFKA__SASL_PASSWORD` sets
    /// `sasl.password`).
    pub fn apply_env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, value) in vars {
            match name.as_str() {
                "SIGHTLINE_BROKERS" => self.kafka.brokers = Some(value),
                "SIGHTLINE_GROUP" => self.kafka.group = Some(value),
                "SIGHTLINE_METRICS_ADDR" => self.metrics.addr = Some(value),
                _ => {
                    if let Some(property) = name.strip_prefix("SIGHTLINE_KAFKA__") {
                        let key = property.to_ascii_lowercase().replace('_', ".");
                        self.kafka.properties.insert(key, value);
                    }
                }
            }
        }
    }

    /// Applies the flags and checks the result.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the missing or bad value.
    pub fn resolve(self, flags: &Overrides) -> Result<WorkerConfig, ConfigError> {
        let pick = |flag: &Option<String>, file: Option<String>, default: &str| {
            flag.clone().or(file).unwrap_or_else(|| default.to_string())
        };
        let brokers = flags
            .brokers
            .clone()
            .or(self.kafka.brokers)
            .filter(|b| !b.trim().is_empty())
            .ok_or_else(|| {
                ConfigError::Invalid(
                    "no brokers: give --brokers, SIGHTLINE_BROKERS or [kafka] brokers".into(),
                )
            })?;

        let mut events = match &flags.events_topic {
            Some(topic) => vec![EventsConfig {
                topic: topic.clone(),
                format: None,
                mapping: None,
            }],
            None => self.events,
        };
        if events.is_empty() {
            return Err(ConfigError::Invalid(
                "no event topic: give --events-topic or an [[events]] table".into(),
            ));
        }
        for topic in &mut events {
            if flags.format.is_some() {
                topic.format.clone_from(&flags.format);
            }
            if flags.mapping.is_some() {
                topic.mapping.clone_from(&flags.mapping);
            }
            let format = topic.format.get_or_insert_with(|| "auto".into());
            if !FORMATS.contains(&format.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "topic {}: format {format:?} is not one of {}",
                    topic.topic,
                    FORMATS.join(", ")
                )));
            }
        }

        let addr = pick(&flags.metrics_addr, self.metrics.addr, "127.0.0.1:9464");
        let metrics_addr = addr.parse().map_err(|_| {
            ConfigError::Invalid(format!("metrics address {addr:?} is not IP:PORT"))
        })?;
        let max_in_flight = self.worker.max_in_flight.unwrap_or(10_000);
        if max_in_flight == 0 {
            return Err(ConfigError::Invalid(
                "max_in_flight must be at least 1".into(),
            ));
        }
        if max_in_flight > MAX_IN_FLIGHT {
            return Err(ConfigError::Invalid(format!(
                "max_in_flight {max_in_flight} exceeds the limit of {MAX_IN_FLIGHT}"
            )));
        }
        let max_in_flight_bytes = self.worker.max_in_flight_bytes.unwrap_or(256 << 20);
        if !IN_FLIGHT_BYTES_RANGE.contains(&max_in_flight_bytes) {
            return Err(ConfigError::Invalid(format!(
                "max_in_flight_bytes {max_in_flight_bytes} is outside {} to {}",
                IN_FLIGHT_BYTES_RANGE.start(),
                IN_FLIGHT_BYTES_RANGE.end()
            )));
        }
        let config = WorkerConfig {
            brokers,
            group: pick(&flags.group, self.kafka.group, "sightline"),
            properties: self.kafka.properties,
            indicators_topic: pick(
                &flags.indicators_topic,
                self.topics.indicators,
                "stix.indicators",
            ),
            sightings_topic: pick(
                &flags.sightings_topic,
                self.topics.sightings,
                "stix.sightings",
            ),
            dead_letter_topic: pick(
                &flags.dead_letter_topic,
                self.topics.dead_letter,
                "sightline.dead-letter",
            ),
            events,
            metrics_addr,
            sensor_name: pick(&flags.sensor_name, self.matching.sensor_name, "sightline"),
            aggregate_window_seconds: flags
                .aggregate_window_seconds
                .or(self.matching.aggregate_window_seconds)
                .unwrap_or(3600),
            ready_timeout: Duration::from_secs(self.worker.ready_timeout_seconds.unwrap_or(300)),
            max_in_flight,
            max_in_flight_bytes,
        };
        let mut names = vec![&config.indicators_topic, &config.sightings_topic];
        names.push(&config.dead_letter_topic);
        for topic in &config.events {
            if names.contains(&&topic.topic) {
                return Err(ConfigError::Invalid(format!(
                    "topic {} is used twice: event topics must differ from the indicator, \
                     sightings and dead-letter topics and from each other",
                    topic.topic
                )));
            }
            names.push(&topic.topic);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RunConfig, ConfigError> {
        RunConfig::from_toml(Path::new("test.toml"), text)
    }

    #[test]
    fn example_config_parses_and_resolves() {
        let text = include_str!("../examples/sightline.toml");
        let config = parse(text)
            .and_then(|c| c.resolve(&Overrides::default()))
            .unwrap();
        assert_eq!(config.events.len(), 2);
        assert_eq!(config.indicators_topic, "stix.indicators");
        assert_eq!(config.events[1].format.as_deref(), Some("zeek"));
    }

    #[test]
    fn deployment_config_parses_and_resolves() {
        let text = include_str!("../deploy/sightline.toml");
        let config = parse(text)
            .and_then(|c| c.resolve(&Overrides::default()))
            .unwrap();
        assert_eq!(config.brokers, "kafka:9092");
        assert_eq!(config.metrics_addr.port(), 9464);
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let e = parse("[kafka]\nbrokers = \"b:9092\"\nbrokerz = \"x\"\n").unwrap_err();
        let message = e.to_string();
        assert!(message.contains("brokerz"), "{message}");
        assert!(message.contains("test.toml"), "{message}");
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let mut config = parse(
            "[kafka]\nbrokers = \"file:1\"\ngroup = \"g-file\"\n\
             [[events]]\ntopic = \"e\"\nformat = \"ecs\"\n",
        )
        .unwrap();
        config.apply_env([
            ("SIGHTLINE_BROKERS".to_string(), "env:2".to_string()),
            ("SIGHTLINE_GROUP".to_string(), "g-env".to_string()),
            (
                "SIGHTLINE_KAFKA__SASL_PASSWORD".to_string(),
                "hunter2".to_string(),
            ),
        ]);
        let flags = Overrides {
            brokers: Some("flag:3".into()),
            format: Some("zeek".into()),
            ..Overrides::default()
        };
        let resolved = config.resolve(&flags).unwrap();
        assert_eq!(resolved.brokers, "flag:3");
        assert_eq!(resolved.group, "g-env");
        assert_eq!(resolved.events[0].format.as_deref(), Some("zeek"));
        assert_eq!(resolved.properties["sasl.password"], "hunter2");
        let printed = format!("{resolved:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("sasl.password"), "{printed}");
    }

    #[test]
    fn missing_and_bad_values_are_named() {
        let none = parse("").unwrap().resolve(&Overrides::default());
        assert!(none.unwrap_err().to_string().contains("no brokers"));

        let flags = Overrides {
            brokers: Some("b:1".into()),
            events_topic: Some("e".into()),
            format: Some("syslog".into()),
            ..Overrides::default()
        };
        let bad = parse("").unwrap().resolve(&flags).unwrap_err().to_string();
        assert!(bad.contains("\"syslog\""), "{bad}");

        let flags = Overrides {
            brokers: Some("b:1".into()),
            events_topic: Some("stix.sightings".into()),
            ..Overrides::default()
        };
        let twice = parse("").unwrap().resolve(&flags).unwrap_err().to_string();
        assert!(twice.contains("used twice"), "{twice}");
    }

    #[test]
    fn in_flight_limits_are_bounded() {
        let flags = Overrides {
            brokers: Some("b:1".into()),
            events_topic: Some("e".into()),
            ..Overrides::default()
        };
        let resolve = |worker: &str| {
            parse(&format!("[worker]\n{worker}\n"))
                .unwrap()
                .resolve(&flags)
                .map_err(|e| e.to_string())
        };
        let defaults = resolve("").unwrap();
        assert_eq!(defaults.max_in_flight, 10_000);
        assert_eq!(defaults.max_in_flight_bytes, 256 << 20);
        let error = resolve("max_in_flight = 2000000").unwrap_err();
        assert!(error.contains("exceeds the limit of 1000000"), "{error}");
        let error = resolve("max_in_flight_bytes = 100").unwrap_err();
        assert!(
            error.contains("max_in_flight_bytes 100 is outside"),
            "{error}"
        );
        let error = resolve("max_in_flight_bytes = 2000000000000").unwrap_err();
        assert!(error.contains("is outside"), "{error}");
        assert_eq!(
            resolve("max_in_flight_bytes = 1024")
                .unwrap()
                .max_in_flight_bytes,
            1024
        );
    }
}

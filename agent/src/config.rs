//! Agent configuration (`/etc/vigil/vigil.yaml`). Every key has a default,
//! so an empty file or `{}` runs the agent; an unknown key is an error that
//! names the key, so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} (check the path and its permissions)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Host name put on every record; empty means the kernel's hostname.
    pub host: String,
    /// Where the agent keeps its state and, by default, its output.
    pub state_dir: PathBuf,
    /// JSON lines output: a file path, or `-` for stdout. Empty means
    /// `<state_dir>/events.jsonl`.
    pub output: String,
    /// A file output is rotated once it holds this many bytes
    /// (`events.jsonl` → `events.jsonl.1`); 0 never rotates. Flat keys next
    /// to `output` keep `output: PATH` valid in existing configs.
    pub output_max_bytes: u64,
    /// Rotated files kept (`.1` newest … `.N` oldest); 0 keeps none.
    pub output_keep: u32,
    /// What the JSON lines output holds: `native`, `ocsf` (1.5.0) or `ecs`
    /// (8.11). Records a format has no mapping for are left out.
    pub format: crate::sink::format::Format,
    pub flows: FlowConfig,
    pub process_cache: ProcessCacheConfig,
    pub capture: CaptureConfig,
    /// Seconds between `agent_stats` records (0 disables them).
    pub stats_interval_s: u64,
    pub enforce: EnforceConfig,
    pub kafka: KafkaConfig,
    pub detect: crate::detect::config::DetectConfig,
    pub metrics: MetricsConfig,
    pub response: ResponseConfig,
    pub playbooks: PlaybooksConfig,
    pub control: ControlConfig,
    /// Role tags published with this host in `fleet.inventory` (e.g. web,
    /// db, bastion), for fusion's incidents.
    pub roles: Vec<String>,
    /// Which part of the host this agent watches and guards.
    pub scope: ScopeConfig,
    /// `vigil fusion run`: fleet correlation on the same Kafka.
    pub fusion: crate::fusion::config::FusionConfig,
}

/// `host` watches every network namespace; `self` only the one the agent
/// runs in (a container's, or one test host among several on a kernel).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NetnsScope {
    Host,
    #[serde(rename = "self")]
    Own,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ScopeConfig {
    /// `host` (default): events of every network namespace, flows on the
    /// cgroup v2 root, egress blocks on the root cgroup. `self`: the kernel
    /// keeps only this namespace's events, flows and blocks use TC on its
    /// own interfaces; `state_dir`, `enforce.pin_dir` and `control.socket`
    /// left at their defaults get the namespace's inode number.
    pub netns: NetnsScope,
}

impl Default for ScopeConfig {
    fn default() -> Self {
        ScopeConfig {
            netns: NetnsScope::Host,
        }
    }
}

impl ScopeConfig {
    pub fn is_own_netns(&self) -> bool {
        self.netns == NetnsScope::Own
    }
}

impl Config {
    /// Scoped to a network namespace, the paths left at their defaults get
    /// the namespace's inode number, so agents of several namespaces on one
    /// host never share state, pinned maps or a control socket. Paths the
    /// config sets stay as they are. The CLI run in the same namespace
    /// finds the same paths.
    pub fn with_scope_paths(mut self, netns: Option<u32>) -> Config {
        let (Some(ino), true) = (netns, self.scope.is_own_netns()) else {
            return self;
        };
        let d = Config::default();
        if self.state_dir == d.state_dir {
            self.state_dir = d.state_dir.join(format!("netns-{ino}"));
        }
        if self.enforce.pin_dir == d.enforce.pin_dir {
            self.enforce.pin_dir =
                PathBuf::from(format!("{}-netns-{ino}", d.enforce.pin_dir.display()));
        }
        if self.control.socket == d.control.socket {
            self.control.socket = d
                .control
                .socket
                .with_file_name(format!("vigil-netns-{ino}.sock"));
        }
        self
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseConfig {
    /// `dry-run` (default) records what playbooks would do; `enforce` does it.
    pub mode: crate::response::playbook::Mode,
    /// Host changes (block, isolate, kill, quarantine) allowed per minute;
    /// past it steps are recorded as rate-limited, not run.
    pub max_actions_per_minute: usize,
    /// Playbook blocks refused while this many blocks are active.
    pub max_concurrent_blocks: usize,
    /// Path prefixes whose files playbooks never kill or quarantine unless
    /// a step names the file in `allow_protected` (files owned by a Debian
    /// package are protected as well).
    pub protected_prefixes: Vec<String>,
    /// Largest file `quarantine_file` copies (bytes); a larger one is
    /// refused with a failed action and left in place.
    pub quarantine_max_bytes: u64,
    /// Approvals waiting on a person at once; an incident that would ask
    /// for one more is denied with the reason, and counted.
    pub max_pending_approvals: usize,
}

impl Default for ResponseConfig {
    fn default() -> Self {
        ResponseConfig {
            mode: crate::response::playbook::Mode::DryRun,
            max_actions_per_minute: 30,
            max_concurrent_blocks: 1000,
            protected_prefixes: [
                "/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/", "/boot/", "/etc/",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            quarantine_max_bytes: 256 * 1024 * 1024,
            max_pending_approvals: 256,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PlaybooksConfig {
    /// Directory of `*.yaml` playbooks; a missing directory means none.
    pub dir: PathBuf,
}

impl Default for PlaybooksConfig {
    fn default() -> Self {
        PlaybooksConfig {
            dir: PathBuf::from("/usr/share/vigil/playbooks"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// Unix socket for `vigil status/approve/...` (mode 0600, root only);
    /// empty turns it off.
    pub socket: PathBuf,
    /// Connections served at once; more are answered "busy" and closed.
    pub max_connections: usize,
    /// Seconds each read of a request and each write of an answer (or of
    /// one followed alert) may take before the connection is cut.
    pub io_timeout_s: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: PathBuf::from("/run/vigil/vigil.sock"),
            max_connections: 16,
            io_timeout_s: 5,
        }
    }
}

impl ControlConfig {
    pub fn limits(&self) -> crate::service::accept::Limits {
        crate::service::accept::Limits {
            max_connections: self.max_connections,
            io_timeout: std::time::Duration::from_secs(self.io_timeout_s),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` for /metrics and /healthz; empty turns them off.
    pub listen: String,
    /// Connections served at once; more get a 503 and are closed.
    pub max_connections: usize,
    /// Seconds the request head and each write of the answer may take.
    pub io_timeout_s: u64,
    /// Per-program kernel run time (`bpf_stats`) in /metrics. Off by
    /// default: while on, every eBPF program on the host pays for it.
    pub bpf_stats: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9184".to_string(),
            max_connections: 16,
            io_timeout_s: 5,
            bpf_stats: false,
        }
    }
}

impl MetricsConfig {
    pub fn limits(&self) -> crate::service::accept::Limits {
        crate::service::accept::Limits {
            max_connections: self.max_connections,
            io_timeout: std::time::Duration::from_secs(self.io_timeout_s),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: String::new(),
            state_dir: PathBuf::from("/var/lib/vigil"),
            output: String::new(),
            output_max_bytes: 256 * 1024 * 1024,
            output_keep: 4,
            format: crate::sink::format::Format::Native,
            flows: FlowConfig::default(),
            process_cache: ProcessCacheConfig::default(),
            capture: CaptureConfig::default(),
            stats_interval_s: 60,
            enforce: EnforceConfig::default(),
            kafka: KafkaConfig::default(),
            detect: crate::detect::config::DetectConfig::default(),
            metrics: MetricsConfig::default(),
            response: ResponseConfig::default(),
            playbooks: PlaybooksConfig::default(),
            control: ControlConfig::default(),
            roles: Vec::new(),
            scope: ScopeConfig::default(),
            fusion: crate::fusion::config::FusionConfig::default(),
        }
    }
}

/// Which hook counts packets for flow accounting.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FlowAttach {
    /// cgroup_skb on the cgroup v2 root, falling back to TC.
    Auto,
    /// cgroup_skb only: every local socket, in every network namespace.
    Cgroup,
    /// TC clsact on every interface of the agent's network namespace.
    Tc,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FlowConfig {
    /// Capacity of the kernel flow map (LRU: the least recently updated flow
    /// is evicted when full, and counted as lost by the sweep).
    pub max_entries: u32,
    /// Milliseconds between full sweeps of the flow map.
    pub sweep_interval_ms: u64,
    /// A flow still active after this many seconds is emitted and restarted
    /// (CICFlowMeter uses 120 s).
    pub active_timeout_s: u64,
    /// A UDP (or other non-TCP) flow idle this long is emitted.
    pub udp_idle_timeout_s: u64,
    /// A TCP flow idle this long without a close is emitted.
    pub tcp_idle_timeout_s: u64,
    /// After a TCP close whose flow the kernel did not hand over with it,
    /// wait this long for trailing packets before taking it from the map.
    pub close_linger_ms: u64,
    pub attach: FlowAttach,
    /// cgroup v2 directory for cgroup_skb; empty means auto-detect.
    pub cgroup_path: String,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            max_entries: agent_common::maps::FLOWS_MAX_ENTRIES,
            sweep_interval_ms: 1000,
            active_timeout_s: 120,
            udp_idle_timeout_s: 30,
            tcp_idle_timeout_s: 300,
            close_linger_ms: 200,
            attach: FlowAttach::Auto,
            cgroup_path: String::new(),
        }
    }
}

/// Kernel capture sources whose cost falls on the whole host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Watch `openat` for files network-facing processes create or
    /// truncate (`file_write`, the written-then-run alert T1204.002). A
    /// syscall tracepoint puts every syscall of every process on the
    /// kernel's slow path (~60 ns each on the reference machine).
    pub file_writes: bool,
    /// Prefer BTF tracepoints (`tp_btf`) for fork and TCP state changes:
    /// they hand the program the kernel's own structs instead of a trace
    /// record built for every event. Off, the plain tracepoints serve: for
    /// a kernel whose BTF misleads, at their higher cost.
    pub tp_btf: bool,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            file_writes: true,
            tp_btf: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessCacheConfig {
    /// Processes remembered for enrichment; the least recently used is
    /// evicted (and counted) past this.
    pub max_entries: usize,
}

impl Default for ProcessCacheConfig {
    fn default() -> Self {
        ProcessCacheConfig {
            max_entries: 65_536,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EnforceConfig {
    /// Attach the blocklist programs when the daemon starts.
    pub enabled: bool,
    /// bpffs directory for the pinned blocklist maps and program links.
    pub pin_dir: PathBuf,
    /// Interfaces for the XDP blocklist; empty means every non-loopback
    /// interface, including ones that appear later.
    pub interfaces: Vec<String>,
    /// XDP mode: auto (native, generic when the driver refuses), driver or skb.
    pub xdp_mode: String,
    /// Networks the operators manage the host from: never blocked, never isolated away.
    pub management_cidrs: Vec<String>,
    /// Extra resolvers to protect besides those in /etc/resolv.conf.
    pub dns_resolvers: Vec<String>,
    /// Seconds between expiry sweeps and interface rescans in the daemon.
    pub maintenance_interval_s: u64,
    /// Broadest IPv4 block a fleet command or indicator may ask for (a
    /// prefix length: 16 means at most a /16). `vigil blocks add` needs
    /// `--force` past it.
    pub max_prefix_v4: u8,
    /// Broadest IPv6 block a fleet command or indicator may ask for.
    pub max_prefix_v6: u8,
    /// Longest block (seconds) a fleet command or indicator may ask for.
    pub max_ttl_s: u64,
}

impl Default for EnforceConfig {
    fn default() -> Self {
        EnforceConfig {
            enabled: true,
            pin_dir: PathBuf::from("/sys/fs/bpf/vigil"),
            interfaces: Vec::new(),
            xdp_mode: "auto".to_string(),
            management_cidrs: Vec::new(),
            dns_resolvers: Vec::new(),
            maintenance_interval_s: 2,
            max_prefix_v4: 16,
            max_prefix_v6: 32,
            max_ttl_s: 7 * 86_400,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port,…`; empty disables Kafka. Brokers are never blocked.
    pub brokers: String,
    pub topics: KafkaTopics,
    pub telemetry: TelemetryConfig,
    /// Shared secret for the HMAC-SHA256 on `defense.commands` and
    /// `threat.enriched` messages; empty refuses every command.
    pub hmac_key: String,
    /// Commands and indicators older (or newer) than this are refused;
    /// executed ids are remembered (`kafka-seen.json`) this long.
    pub command_max_age_s: u64,
    /// Authenticated commands and indicators that may act per minute (a
    /// budget of their own, apart from `response.max_actions_per_minute`);
    /// past it they are refused as rate-limited. Refusals of authenticated
    /// messages are recorded one by one up to the same number per minute
    /// and summarised past it.
    pub max_commands_per_minute: usize,
    /// Fleet decisions (`threat.enriched`) applied per minute; a separate
    /// budget, large enough for a restarted agent to take up every
    /// decision in force.
    pub max_indicators_per_minute: usize,
    /// How long librdkafka retries a message before reporting failure (it
    /// then stays in the spool and is produced again).
    pub message_timeout_ms: u64,
    pub spool: SpoolSettings,
    /// `ocsf` or `ecs`: also publish every record in that format to the
    /// topics named `<topic>.<format>` (own spool). The topics above keep
    /// native records, which fusion and the agents read. `native` (the
    /// default) publishes nothing more.
    pub format: crate::sink::format::Format,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            topics: KafkaTopics::default(),
            telemetry: TelemetryConfig::default(),
            hmac_key: String::new(),
            command_max_age_s: 300,
            max_commands_per_minute: 60,
            max_indicators_per_minute: 600,
            message_timeout_ms: 30_000,
            spool: SpoolSettings::default(),
            format: crate::sink::format::Format::Native,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaTopics {
    pub events: String,
    pub alerts: String,
    pub actions: String,
    pub commands: String,
    pub enriched: String,
    /// This host's name, addresses and roles (compacted, keyed by host).
    pub inventory: String,
}

impl Default for KafkaTopics {
    fn default() -> Self {
        KafkaTopics {
            events: "security.events".into(),
            alerts: "defense.alerts".into(),
            actions: "defense.actions".into(),
            commands: "defense.commands".into(),
            enriched: "threat.enriched".into(),
            inventory: "fleet.inventory".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Record kinds sent to the events topic (alerts and actions always go).
    pub kinds: Vec<String>,
    /// Fraction of flow records sent (0..1).
    pub flow_sample: f64,
    /// Telemetry records per second; the excess is shed and counted.
    pub max_per_second: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            kinds: [
                "process_exec",
                "net_connect",
                "net_accept",
                "auth_attempt",
                "flow",
                "agent_start",
                "agent_stop",
                "agent_stats",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            flow_sample: 1.0,
            max_per_second: 2000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolSettings {
    /// Bytes on disk under `<state_dir>/spool`.
    pub max_bytes: u64,
    pub segment_bytes: u64,
    /// Telemetry is shed once the spool is this full (0..1), keeping the
    /// rest for alerts and actions.
    pub telemetry_share: f64,
}

impl Default for SpoolSettings {
    fn default() -> Self {
        SpoolSettings {
            max_bytes: 256 * 1024 * 1024,
            segment_bytes: 4 * 1024 * 1024,
            telemetry_share: 0.8,
        }
    }
}

impl Config {
    /// Parses YAML text. `source` names the file in error messages.
    pub fn from_yaml(text: &str, source: &Path) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
                path: source.to_path_buf(),
                message: e.to_string(),
            })?
        };
        config.validate(source)?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text, path)
    }

    fn validate(&self, source: &Path) -> Result<(), ConfigError> {
        let invalid = |message: &str| {
            Err(ConfigError::Invalid {
                path: source.to_path_buf(),
                message: message.to_string(),
            })
        };
        if self.flows.max_entries == 0 {
            return invalid("flows.max_entries must be at least 1");
        }
        if self.flows.sweep_interval_ms == 0 {
            return invalid("flows.sweep_interval_ms must be at least 1");
        }
        if self.process_cache.max_entries == 0 {
            return invalid("process_cache.max_entries must be at least 1");
        }
        for (key, n) in [
            (
                "metrics.max_connections",
                self.metrics.max_connections as u64,
            ),
            ("metrics.io_timeout_s", self.metrics.io_timeout_s),
            (
                "control.max_connections",
                self.control.max_connections as u64,
            ),
            ("control.io_timeout_s", self.control.io_timeout_s),
        ] {
            if n == 0 {
                return invalid(&format!("{key} must be at least 1"));
            }
        }
        if !["auto", "driver", "skb"].contains(&self.enforce.xdp_mode.as_str()) {
            return invalid("enforce.xdp_mode must be auto, driver or skb");
        }
        for c in self
            .enforce
            .management_cidrs
            .iter()
            .chain(&self.enforce.dns_resolvers)
        {
            if let Err(e) = c.parse::<crate::enforce::cidr::Cidr>() {
                return invalid(&format!("enforce: {e}"));
            }
        }
        // A prefix is compared as text: without its trailing slash, /usr
        // would also protect /usrdata; a relative one protects nothing.
        if let Some(p) = self
            .response
            .protected_prefixes
            .iter()
            .find(|p| !p.starts_with('/') || !p.ends_with('/'))
        {
            return invalid(&format!(
                "response.protected_prefixes: `{p}` must be an absolute directory ending in /"
            ));
        }
        for s in &self.detect.brute_force.services {
            if !s.starts_with('/') {
                return invalid(&format!(
                    "detect.brute_force.services: `{s}` must be an absolute executable path"
                ));
            }
        }
        if self.response.quarantine_max_bytes == 0 {
            return invalid("response.quarantine_max_bytes must be at least 1");
        }
        if self.enforce.max_prefix_v4 > 32 {
            return invalid("enforce.max_prefix_v4 must be a prefix length from 0 to 32");
        }
        if self.enforce.max_prefix_v6 > 128 {
            return invalid("enforce.max_prefix_v6 must be a prefix length from 0 to 128");
        }
        if self.enforce.max_ttl_s == 0 {
            return invalid("enforce.max_ttl_s must be at least 1");
        }
        if self.kafka.max_indicators_per_minute == 0 {
            return invalid("kafka.max_indicators_per_minute must be at least 1");
        }
        if self.kafka.max_commands_per_minute == 0 {
            return invalid("kafka.max_commands_per_minute must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.kafka.telemetry.flow_sample) {
            return invalid("kafka.telemetry.flow_sample must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&self.kafka.spool.telemetry_share) {
            return invalid("kafka.spool.telemetry_share must be between 0 and 1");
        }
        if self.kafka.spool.segment_bytes < 4096
            || self.kafka.spool.max_bytes < self.kafka.spool.segment_bytes
        {
            return invalid(
                "kafka.spool: segment_bytes must be at least 4096 and at most max_bytes",
            );
        }
        if !self.kafka.brokers.is_empty() && self.kafka.hmac_key.is_empty() {
            tracing::warn!(
                "kafka.hmac_key is empty: fleet commands and indicators will be refused"
            );
        }
        Ok(())
    }

    /// The config as `check-config` prints it: secrets replaced.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        if !c.kafka.hmac_key.is_empty() {
            c.kafka.hmac_key = "<redacted>".to_string();
        }
        c
    }

    /// The output path after defaults: `None` means stdout.
    pub fn output_path(&self) -> Option<PathBuf> {
        match self.output.as_str() {
            "-" => None,
            "" => Some(self.state_dir.join("events.jsonl")),
            p => Some(PathBuf::from(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_yaml(text, Path::new("test.yaml"))
    }

    #[test]
    fn output_formats_parse_and_a_wrong_one_is_named() {
        use crate::sink::format::Format;
        let c = parse("format: ocsf\nkafka:\n  format: ecs\n").expect("valid");
        assert_eq!((c.format, c.kafka.format), (Format::Ocsf, Format::Ecs));
        assert_eq!(parse("").expect("defaults").format, Format::Native);
        let e = parse("format: cef\n")
            .expect_err("unknown format")
            .to_string();
        assert!(e.contains("cef") && e.contains("ocsf"), "{e}");
    }

    #[test]
    fn empty_and_braces_mean_defaults() {
        assert_eq!(parse("").expect("empty"), Config::default());
        assert_eq!(parse("{}").expect("braces"), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("flows:\n  sweep_intervall_ms: 5\n").expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("sweep_intervall_ms"), "{msg}");
        assert!(msg.contains("test.yaml"), "{msg}");
    }

    #[test]
    fn values_override_defaults() {
        let c =
            parse("output: \"-\"\nflows:\n  udp_idle_timeout_s: 2\n  attach: tc\n").expect("parse");
        assert_eq!(c.output_path(), None);
        assert_eq!(c.flows.udp_idle_timeout_s, 2);
        assert_eq!(c.flows.attach, FlowAttach::Tc);
        assert_eq!(c.flows.active_timeout_s, 120);
    }

    #[test]
    fn scoped_agents_get_their_own_default_paths_and_keep_set_ones() {
        let host = Config::default().with_scope_paths(Some(4026531840));
        assert_eq!(
            host,
            Config::default(),
            "whole-host agents keep the defaults"
        );
        let scoped = parse("scope:\n  netns: self\n").expect("parse");
        let s = scoped.clone().with_scope_paths(Some(4026532001));
        assert_eq!(
            s.state_dir,
            PathBuf::from("/var/lib/vigil/netns-4026532001")
        );
        assert_eq!(
            s.enforce.pin_dir,
            PathBuf::from("/sys/fs/bpf/vigil-netns-4026532001")
        );
        assert_eq!(
            s.control.socket,
            PathBuf::from("/run/vigil/vigil-netns-4026532001.sock")
        );
        assert_eq!(
            s.output_path(),
            Some(PathBuf::from(
                "/var/lib/vigil/netns-4026532001/events.jsonl"
            ))
        );
        let set = parse("scope:\n  netns: self\nstate_dir: /srv/v\n").expect("parse");
        assert_eq!(
            set.with_scope_paths(Some(7)).state_dir,
            PathBuf::from("/srv/v")
        );
    }

    #[test]
    fn default_output_is_under_state_dir() {
        assert_eq!(
            Config::default().output_path(),
            Some(PathBuf::from("/var/lib/vigil/events.jsonl"))
        );
    }

    #[test]
    fn invalid_values_are_refused() {
        assert!(parse("flows:\n  max_entries: 0\n").is_err());
        assert!(parse("flows: [1, 2]\n").is_err());
        let e = parse("control:\n  max_connections: 0\n").expect_err("zero cap");
        assert!(e.to_string().contains("control.max_connections"), "{e}");
        assert!(parse("metrics:\n  io_timeout_s: 0\n").is_err());
        assert!(parse("enforce:\n  max_prefix_v4: 33\n").is_err());
        assert!(parse("enforce:\n  max_prefix_v6: 129\n").is_err());
        assert!(parse("enforce:\n  max_ttl_s: 0\n").is_err());
        assert!(parse("kafka:\n  max_commands_per_minute: 0\n").is_err());
    }

    #[test]
    fn protected_prefixes_and_auth_services_must_be_absolute() {
        let err = parse("response:\n  protected_prefixes: [/usr]\n").expect_err("no slash");
        assert!(err.to_string().contains("`/usr`"), "{err}");
        assert!(parse("response:\n  protected_prefixes: [opt/]\n").is_err());
        assert!(parse("response:\n  protected_prefixes: [/opt/app/]\n").is_ok());
        let err = parse("detect:\n  brute_force:\n    services: [sshd]\n").expect_err("relative");
        assert!(
            err.to_string().contains("detect.brute_force.services"),
            "{err}"
        );
    }

    #[test]
    fn the_hmac_key_is_redacted_and_nothing_else_changes() {
        let c =
            parse("kafka:\n  hmac_key: s3cret-fleet-key\n  brokers: \"k:9092\"\n").expect("parse");
        let r = c.redacted();
        assert_eq!(r.kafka.hmac_key, "<redacted>");
        let shown = serde_yaml::to_string(&r).expect("yaml");
        assert!(!shown.contains("s3cret-fleet-key"), "{shown}");
        let mut back = r.clone();
        back.kafka.hmac_key = c.kafka.hmac_key.clone();
        assert_eq!(back, c);
        assert_eq!(Config::default().redacted(), Config::default());
    }
}

#[cfg(test)]
mod shipped {
    use super::*;

    #[test]
    fn packaged_config_parses_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/vigil.yaml");
        let text = std::fs::read_to_string(&path).expect("packaging/vigil.yaml");
        let c = Config::from_yaml(&text, &path).expect("parses");
        assert_eq!(
            c,
            Config::default(),
            "packaging/vigil.yaml drifted from the defaults"
        );
    }

    /// Every key path under `prefix` in a tree; arrays and scalars are leaves.
    fn json_paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        match v.as_object() {
            Some(map) => {
                for (k, child) in map {
                    json_paths(child, &format!("{prefix}{k}."), out);
                }
            }
            None => out.push(prefix.trim_end_matches('.').to_string()),
        }
    }

    fn yaml_paths(v: &serde_yaml::Value, prefix: &str, out: &mut Vec<String>) {
        match v.as_mapping() {
            Some(map) => {
                for (k, child) in map {
                    let k = k.as_str().unwrap_or("?");
                    yaml_paths(child, &format!("{prefix}{k}."), out);
                }
            }
            None => out.push(prefix.trim_end_matches('.').to_string()),
        }
    }

    /// The packaged config is the reference operators read: every key the
    /// agent knows must be spelled out there, not only those that parse.
    #[test]
    fn packaged_config_lists_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/vigil.yaml");
        let text = std::fs::read_to_string(&path).expect("packaging/vigil.yaml");
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML");
        let mut shipped = Vec::new();
        yaml_paths(&yaml, "", &mut shipped);
        let defaults = serde_json::to_value(Config::default()).expect("serialise the defaults");
        let mut known = Vec::new();
        json_paths(&defaults, "", &mut known);
        assert!(known.len() > 50, "too few keys found: {known:?}");
        let missing: Vec<&String> = known.iter().filter(|k| !shipped.contains(k)).collect();
        assert!(
            missing.is_empty(),
            "packaging/vigil.yaml lacks {} key(s) (add each with its default and a comment):\n  {}",
            missing.len(),
            missing
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
}

//! Sigma's field names over our records: which fields each log source
//! offers (a rule naming any other is skipped, not silently never true) and
//! the event view the rule engine reads (docs/sigma.md has the table).

use std::borrow::Cow;
use std::collections::HashMap;

use rsigma_eval::{Event, EventValue};

use crate::record::{Conn, FileWrite, ProcessExec};

/// The Sigma log source categories vigil evaluates, each fed by one kind
/// of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// `process_exec` records.
    ProcessCreation,
    /// `net_connect` and `net_accept` records.
    NetworkConnection,
    /// `file_write` records.
    FileEvent,
}

impl Category {
    pub const ALL: [Category; 3] = [
        Category::ProcessCreation,
        Category::NetworkConnection,
        Category::FileEvent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::ProcessCreation => "process_creation",
            Category::NetworkConnection => "network_connection",
            Category::FileEvent => "file_event",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The Sigma fields its records carry. `DestinationHostname` is left
    /// out: no record names the host a socket was resolved from, so a rule
    /// on it could never be true.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Category::ProcessCreation => &[
                "Image",
                "CommandLine",
                "ParentImage",
                "ParentCommandLine",
                "User",
                "LogonId",
                "CurrentDirectory",
                "ProcessId",
                "ParentProcessId",
            ],
            Category::NetworkConnection => &[
                "Image",
                "ProcessId",
                "User",
                "DestinationIp",
                "DestinationPort",
                "SourceIp",
                "SourcePort",
                "Initiated",
                "Protocol",
            ],
            Category::FileEvent => &["TargetFilename", "Image", "ProcessId"],
        }
    }
}

/// User names by uid (from the passwd database the loader read); a uid
/// without a name is given as its number.
pub type Users = HashMap<u32, String>;

fn user(users: &Users, uid: u32) -> EventValue<'_> {
    match users.get(&uid) {
        Some(name) => EventValue::Str(Cow::Borrowed(name.as_str())),
        None => EventValue::Str(Cow::Owned(uid.to_string())),
    }
}

/// One record as Sigma fields. Absent values are left out, so `Field: null`
/// and `|exists` behave as Sigma means them.
pub struct SigmaEvent<'a> {
    fields: Vec<(&'static str, EventValue<'a>)>,
}

fn s(v: &str) -> EventValue<'_> {
    EventValue::Str(Cow::Borrowed(v))
}

/// The command line as one string: arguments joined by spaces, as
/// SigmaHQ's Linux rules expect (auditd's `proctitle` and Sysmon for Linux
/// give it so).
pub fn command_line(argv: &[String]) -> String {
    argv.join(" ")
}

impl<'a> SigmaEvent<'a> {
    pub fn process(e: &'a ProcessExec, users: &'a Users) -> SigmaEvent<'a> {
        let mut fields = Vec::with_capacity(9);
        fields.push(("Image", s(&e.exe)));
        fields.push((
            "CommandLine",
            EventValue::Str(Cow::Owned(command_line(&e.argv))),
        ));
        if let Some(p) = &e.parent_exe {
            fields.push(("ParentImage", s(p)));
        }
        if let Some(p) = &e.parent_cmdline {
            fields.push(("ParentCommandLine", s(p)));
        }
        fields.push(("User", user(users, e.uid)));
        if let Some(auid) = e.auid {
            fields.push(("LogonId", EventValue::Int(auid.into())));
        }
        if let Some(cwd) = &e.cwd {
            fields.push(("CurrentDirectory", s(cwd)));
        }
        fields.push(("ProcessId", EventValue::Int(e.pid.into())));
        fields.push(("ParentProcessId", EventValue::Int(e.ppid.into())));
        SigmaEvent { fields }
    }

    /// `initiated`: a connect (true) or an accept (false).
    pub fn connection(c: &'a Conn, initiated: bool, users: &'a Users) -> SigmaEvent<'a> {
        let mut fields = Vec::with_capacity(9);
        if let Some(exe) = &c.exe {
            fields.push(("Image", s(exe)));
        }
        if let Some(pid) = c.pid {
            fields.push(("ProcessId", EventValue::Int(pid.into())));
        }
        if let Some(uid) = c.uid {
            fields.push(("User", user(users, uid)));
        }
        // Our records name the local end `src` and the peer `dst`; Sigma's
        // Source is the side that opened the connection.
        let (src, dst) = if initiated {
            ((c.src_ip, c.src_port), (c.dst_ip, c.dst_port))
        } else {
            ((c.dst_ip, c.dst_port), (c.src_ip, c.src_port))
        };
        fields.push(("SourceIp", EventValue::Str(Cow::Owned(src.0.to_string()))));
        fields.push(("SourcePort", EventValue::Int(src.1.into())));
        fields.push((
            "DestinationIp",
            EventValue::Str(Cow::Owned(dst.0.to_string())),
        ));
        fields.push(("DestinationPort", EventValue::Int(dst.1.into())));
        fields.push(("Initiated", s(if initiated { "true" } else { "false" })));
        fields.push(("Protocol", s(c.proto)));
        SigmaEvent { fields }
    }

    pub fn file(w: &'a FileWrite) -> SigmaEvent<'a> {
        let mut fields = Vec::with_capacity(3);
        fields.push(("TargetFilename", s(&w.path)));
        if let Some(exe) = &w.exe {
            fields.push(("Image", s(exe)));
        }
        fields.push(("ProcessId", EventValue::Int(w.pid.into())));
        SigmaEvent { fields }
    }

    /// The fields as JSON, for an alert's evidence.
    pub fn json(&self) -> serde_json::Value {
        Event::to_json(self)
    }
}

impl Event for SigmaEvent<'_> {
    fn get_field(&self, path: &str) -> Option<EventValue<'_>> {
        self.fields
            .iter()
            .find(|(k, _)| *k == path)
            .map(|(_, v)| v.clone())
    }

    fn any_string_value(&self, pred: &dyn Fn(&str) -> bool) -> bool {
        self.fields.iter().any(|(_, v)| match v {
            EventValue::Str(s) => pred(s),
            _ => false,
        })
    }

    fn all_string_values(&self) -> Vec<Cow<'_, str>> {
        self.fields
            .iter()
            .filter_map(|(_, v)| match v {
                EventValue::Str(s) => Some(Cow::Borrowed(s.as_ref())),
                _ => None,
            })
            .collect()
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_json()))
                .collect(),
        )
    }

    fn top_level_keys(&self) -> Option<Vec<Cow<'_, str>>> {
        Some(self.fields.iter().map(|(k, _)| Cow::Borrowed(*k)).collect())
    }
}

//! Small helpers every component may use: clocks, record ids and atomic
//! state files. Nothing here depends on another module of the agent.

pub mod clock;
pub mod id;
pub mod statefile;

/// Shells worth a reverse-shell check at exec.
pub fn is_shell(exe: &str) -> bool {
    matches!(
        exe.rsplit('/').next().unwrap_or(""),
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "ash" | "busybox" | "fish"
    )
}

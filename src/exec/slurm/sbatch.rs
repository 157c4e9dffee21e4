//! Slurm's commands, as the driver uses them: `sbatch` to submit, `squeue` to see
//! which jobs are alive, `scontrol show job` for how one ended, `scancel`. Each
//! failure says which command failed and what it printed.

use std::collections::HashMap;
use std::process::Command;

/// Runs a Slurm command; its stdout, or an error naming it with its stderr.
fn slurm(program: &str, args: &[String]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("`{program}` is not on PATH: `--executor slurm` needs Slurm's client commands (sbatch, squeue, scontrol, scancel) on this machine")
        } else {
            format!("cannot run `{program}`: {e}")
        }
    })?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether Slurm's client commands are here (`sbatch --version` runs).
pub fn available() -> Result<(), String> {
    slurm("sbatch", &["--version".to_string()]).map(|_| ())
}

/// Submits a job running the shell command `wrap`; returns its id.
pub fn submit(args: &[String], wrap: &str) -> Result<String, String> {
    let mut all = vec!["--parsable".to_string()];
    all.extend(args.iter().cloned());
    all.push("--wrap".to_string());
    all.push(wrap.to_string());
    let out = slurm("sbatch", &all)?;
    // `--parsable` prints `id` or `id;cluster`.
    let id = out.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("sbatch printed no job id: {out:?}"));
    }
    Ok(id)
}

/// The state (`PENDING`, `RUNNING`, ...) of each of `ids` that Slurm still
/// schedules; a job missing from the answer has ended.
pub fn alive(ids: &[String]) -> Result<HashMap<String, String>, String> {
    let mut states = HashMap::new();
    for chunk in ids.chunks(500) {
        let args = vec![
            "-h".to_string(),
            "-o".to_string(),
            "%i %T".to_string(),
            "-j".to_string(),
            chunk.join(","),
        ];
        // squeue fails for a list of ids all of which have left its memory; any
        // other failure (slurmctld unreachable) is retried, never read as "ended".
        let mut tries = 0;
        let out = loop {
            match slurm("squeue", &args) {
                Ok(out) => break out,
                Err(e) if e.contains("Invalid job id") => break String::new(),
                Err(e) if tries >= 5 => return Err(e),
                Err(_) => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_secs(2));
                }
            }
        };
        for line in out.lines() {
            let mut parts = line.split_whitespace();
            if let (Some(id), Some(state)) = (parts.next(), parts.next()) {
                // A completing job's script has ended: what it made is in the cache.
                let ended = matches!(
                    state,
                    "COMPLETING"
                        | "COMPLETED"
                        | "FAILED"
                        | "CANCELLED"
                        | "TIMEOUT"
                        | "NODE_FAIL"
                        | "OUT_OF_MEMORY"
                        | "PREEMPTED"
                        | "BOOT_FAIL"
                        | "DEADLINE"
                );
                if !ended {
                    states.insert(id.to_string(), state.to_string());
                }
            }
        }
    }
    Ok(states)
}

/// How an ended job ended, e.g. `FAILED (exit code 1:0)`, from `scontrol`
/// (which remembers a job for `MinJobAge` seconds) or else `sacct`.
pub fn how_it_ended(id: &str) -> Option<String> {
    let field = |text: &str, name: &str| -> Option<String> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .map(str::to_string)
    };
    if let Ok(out) = slurm(
        "scontrol",
        &["show".into(), "job".into(), "-o".into(), id.to_string()],
    ) {
        if let Some(state) = field(&out, "JobState") {
            let reason = field(&out, "Reason").filter(|r| r != "None");
            let code = field(&out, "ExitCode").unwrap_or_default();
            return Some(match reason {
                Some(r) => format!("{state} (exit code {code}, reason {r})"),
                None => format!("{state} (exit code {code})"),
            });
        }
    }
    let out = slurm(
        "sacct",
        &[
            "-n".into(),
            "-X".into(),
            "-P".into(),
            "-o".into(),
            "State,ExitCode".into(),
            "-j".into(),
            id.to_string(),
        ],
    )
    .ok()?;
    let line = out.lines().next()?.trim().to_string();
    let (state, code) = line.split_once('|')?;
    Some(format!("{state} (exit code {code})"))
}

/// Cancels jobs (those already ended are ignored by Slurm).
pub fn cancel(ids: &[String]) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    slurm("scancel", ids).map(|_| ())
}

/// `text` quoted for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,+@%".contains(c))
    {
        return text.to_string();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

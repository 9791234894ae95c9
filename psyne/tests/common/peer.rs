//! Peer processes for the cross-process tests: the test binary started again in a role, its
//! report lines collected by a thread, killed and reaped when dropped (a failed test leaves no
//! process behind); unique shared-memory names and their removal.
//!
//! Each test binary includes this file with `#[path = "common/peer.rs"] mod peer;` and has one
//! `#[test]` function (the child entry) that does nothing unless the role variables it reads are
//! set. Not every binary uses every helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a peer may take to say something or to exit before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A shared-memory name no other test (or test run) uses: `psyne-{prefix}-{pid}-{tag}-{n}`.
pub fn unique(prefix: &str, tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "psyne-{prefix}-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes a shared name when dropped, whatever object it holds (a no-op if the creator's end
/// removed it already).
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if psyne::transport::shm::remove(&self.0).is_err() {
            let _ = std::fs::remove_file(format!("/dev/shm/{}", self.0));
        }
    }
}

/// A peer process: this test binary running one child test, with environment variables that
/// give it its role.
pub struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Peer {
    /// Starts this test binary running only the test `child_test` (the child entry), with the
    /// variables `env`. Every line the child prints to stdout is collected (the harness may
    /// print `test NAME ... ` before the child's own text on the same line).
    pub fn spawn(child_test: &str, env: &[(&str, String)]) -> Peer {
        let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
        cmd.args(["--exact", child_test, "--nocapture", "--test-threads=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn the test binary as a peer");
        let out = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        // Drains the pipe for the child's whole life, so it never blocks writing.
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    // Nobody listens any more: keep draining.
                    continue;
                }
            }
        });
        Peer { child, lines }
    }

    /// Waits (at most [`PATIENCE`]) for a line containing `word`, skipping others; returns what
    /// follows `word` on it, trimmed. Panics if the child exits or stays silent.
    pub fn wait_for(&self, word: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(at) = line.find(word) {
                        return line[at + word.len()..].trim().to_owned();
                    }
                }
                Err(e) => panic!("peer {} did not say {word:?}: {e}", self.pid()),
            }
        }
    }

    /// Waits for the next line containing `marker` (others are skipped), which must go on with
    /// `word`: returns the rest of it, trimmed. Panics on any other report, on exit or silence.
    pub fn expect(&self, marker: &str, word: &str) -> String {
        let report = self.wait_for(marker);
        match report.strip_prefix(word) {
            Some(rest) => rest.trim().to_owned(),
            None => panic!("peer said {report:?}, expected {word}"),
        }
    }

    /// Waits for the child's `READY` line (it has done its setup).
    pub fn ready(&self) {
        self.wait_for("READY");
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL without reaping: until [`Self::finish`] (or the drop) the child is a
    /// zombie, which Psyne must already count as dead.
    pub fn sigkill(&mut self) {
        self.child.kill().expect("SIGKILL the peer");
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(mut self) {
        self.sigkill();
        self.child.wait().expect("reap the peer");
    }

    /// SIGKILLs the child after `delay`, on another thread, without reaping it; the handle
    /// returns the moment the signal was sent and the peer.
    pub fn kill_after(self, delay: Duration) -> JoinHandle<(Instant, Peer)> {
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            let mut peer = self;
            peer.sigkill();
            (Instant::now(), peer)
        })
    }

    /// Waits (at most [`PATIENCE`]) for the child to exit on its own; its status.
    pub fn finish(mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "peer {} did not exit",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

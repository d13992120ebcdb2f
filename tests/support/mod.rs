//! Starting the real `ciclo serve` binary for end-to-end tests: on port 0, in a temporary data
//! folder, read back its address and admin token, and stop it with SIGTERM or SIGKILL.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub url: String,
    pub token: String,
    pub data: PathBuf,
    out: Option<BufReader<ChildStdout>>,
}

impl Server {
    /// Starts `ciclo serve` on 127.0.0.1:0 with `data` and `processes`, and waits until it
    /// prints its address.
    pub fn start(data: &Path, processes: &Path) -> Server {
        Server::start_with(data, processes, &[])
    }

    pub fn start_with(data: &Path, processes: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(data, processes, extra, &[])
    }

    /// As `start_with`, with environment variables for the server only (tests must not
    /// change their own environment: other tests run in the same process).
    pub fn start_with_env(
        data: &Path,
        processes: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ciclo"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .arg("--data")
            .arg(data)
            .arg("--processes")
            .arg(processes)
            .args(extra)
            .env("CICLO_LOG", "warn")
            .env_remove("CICLO_CONFIG")
            .env_remove("CICLO_ERP_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("ciclo serve starts");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut url = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut line = String::new();
        while url.is_none() {
            assert!(
                Instant::now() < deadline,
                "the server did not print its address"
            );
            line.clear();
            let n = out.read_line(&mut line).expect("server output");
            assert!(n > 0, "the server stopped before listening");
            if let Some(rest) = line.trim().strip_prefix("listening on ") {
                url = Some(rest.to_string());
            }
        }
        let token = std::fs::read_to_string(data.join("admin-token"))
            .expect("admin token written")
            .trim()
            .to_string();
        Server {
            child,
            url: url.unwrap_or_default(),
            token,
            data: data.to_path_buf(),
            out: Some(out),
        }
    }

    /// Sends SIGTERM and waits for the exit (at most `bound`).
    pub fn terminate(mut self, bound: Duration) -> std::process::ExitStatus {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: sending a signal to our own child process, which we have not reaped yet.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        // Drain stdout so the server never blocks on a full pipe while stopping.
        if let Some(mut out) = self.out.take() {
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut out, &mut std::io::sink());
            });
        }
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not stop within {bound:?} after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary folder with the given process files.
pub fn processes(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("process file");
    }
    dir
}

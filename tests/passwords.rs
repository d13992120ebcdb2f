//! Passwords for the pages as an operator sets them: `password_env` for users of ciclo.toml,
//! and `ciclo user password` through the running server or on a data folder. Each is checked
//! by signing in to the real server over HTTP.

mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Server, processes};

/// Signs in with the form (its CSRF cookie and hidden field, as a browser does) and says
/// whether the server accepted: a 303 to the inbox with a session cookie.
async fn signs_in(url: &str, name: &str, password: &str) -> bool {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http.get(format!("{url}/sign-in")).send().await.unwrap();
    let cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ciclo_csrf="))
        .and_then(|c| c.split(';').next())
        .expect("a CSRF cookie")
        .to_string();
    let text = form.text().await.unwrap();
    let marker = "name=\"_csrf\" value=\"";
    let start = text.find(marker).expect("a _csrf field") + marker.len();
    let csrf = &text[start..start + text[start..].find('"').unwrap()];
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let answer = http
        .post(format!("{url}/sign-in"))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", url)
        .body(format!(
            "_csrf={}&name={}&password={}",
            enc(csrf),
            enc(name),
            enc(password)
        ))
        .send()
        .await
        .unwrap();
    answer.status() == 303
        && answer
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|v| v.to_str().unwrap_or("").starts_with("ciclo_session="))
}

fn set_password(args: &[&str], password: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ciclo"))
        .args(["user", "password"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_and_cli_set_passwords_let_people_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let procs = processes(&[]);
    let config = dir.path().join("ciclo.toml");
    std::fs::write(
        &config,
        "[[users]]\nname = \"anna\"\ngroups = [\"sales\"]\npassword_env = \"ANNA_PW\"\n\n[[users]]\nname = \"bruno\"\n",
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();

    // A configured password variable that is not set stops the start, naming it.
    let out = Command::new(env!("CARGO_BIN_EXE_ciclo"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config", config_arg])
        .arg("--data")
        .arg(&data)
        .arg("--processes")
        .arg(procs.path())
        .env_remove("ANNA_PW")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ANNA_PW"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let server = Server::start_with_env(
        &data,
        procs.path(),
        &["--config", config_arg],
        &[("ANNA_PW", "anna's long password")],
    );
    assert!(signs_in(&server.url, "anna", "anna's long password").await);
    assert!(!signs_in(&server.url, "bruno", "anything at all").await);

    // Through the running server: bruno gets a password; a short one and an unknown user are
    // refused with exit 1.
    let remote = [
        "--server",
        server.url.as_str(),
        "--token",
        server.token.as_str(),
    ];
    let out = set_password(&[&["bruno"], &remote[..]].concat(), "bruno's long password");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(signs_in(&server.url, "bruno", "bruno's long password").await);
    let out = set_password(&[&["bruno"], &remote[..]].concat(), "short");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 10"));
    let out = set_password(&[&["nobody"], &remote[..]].concat(), "a long password");
    assert_ne!(out.status.code(), Some(0));
    server.terminate(Duration::from_secs(30));

    // On the data folder with no server: the new password works at the next start, the old
    // one no longer does; the configured one is kept for anna.
    let out = set_password(
        &["bruno", "--data", data.to_str().unwrap()],
        "bruno's new password",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = Server::start_with_env(
        &data,
        procs.path(),
        &["--config", config_arg],
        &[("ANNA_PW", "anna's long password")],
    );
    assert!(signs_in(&server.url, "bruno", "bruno's new password").await);
    assert!(!signs_in(&server.url, "bruno", "bruno's long password").await);
    assert!(signs_in(&server.url, "anna", "anna's long password").await);
    server.terminate(Duration::from_secs(30));
}

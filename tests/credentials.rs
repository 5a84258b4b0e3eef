//! Secrets from files: a bearer token (`INVENTORY_TOKEN_FILE`, or the
//! systemd credential `$CREDENTIALS_DIRECTORY/inventory-token`), a
//! basic-auth password (`INVENTORY_PASSWORD_FILE`), their rotation on
//! SIGHUP, the start-up errors (exit 78 naming variable and path), the
//! origin rule on redirects, and that no secret ever shows.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(20);
const TOKEN: &str = "Tok3n-Secret-4f1c9a";
const PASSWORD: &str = "Pa55word-Secret-77b2";

fn write(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
}

fn once(cmd: &AgentCmd) -> RunOutput {
    cmd.clone().arg("--once").run(T)
}

/// The `Authorization` header of every request the server answered.
fn auth_headers(srv: &Server) -> Vec<Option<String>> {
    srv.requests()
        .iter()
        .map(|r| r.header("authorization").map(str::to_string))
        .collect()
}

fn bearer(t: &str) -> Option<String> {
    Some(format!("Bearer {t}"))
}

#[test]
fn a_token_file_is_sent_as_a_bearer_token_without_its_newline() {
    let dir = TestDir::new("cred-token");
    let srv = Server::start("inv", Reply::list(&["a", "b"]));
    let token = dir.join("token");
    write(&token, &format!("{TOKEN}\n"));
    let cmd = AgentCmd::new(&dir)
        .inventory(&srv)
        .env("INVENTORY_TOKEN_FILE", token.display().to_string());
    let out = once(&cmd);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(auth_headers(&srv), vec![bearer(TOKEN)]);
    assert!(!out.stderr.contains(TOKEN), "{}", out.describe());
}

/// The request buffer is sized from the request: the largest token and a
/// long URL still go out whole.
#[test]
fn the_largest_token_and_a_long_url_are_sent_whole() {
    let dir = TestDir::new("cred-big");
    let srv = Server::start("inv", Reply::list(&["a"]));
    let token = dir.join("token");
    let big = "t".repeat(64 * 1024);
    write(&token, &big);
    let url = format!("{}?pad={}", srv.url(), "p".repeat(16 * 1024));
    let cmd = AgentCmd::new(&dir)
        .env("INVENTORY_URL", url)
        .env("INVENTORY_TOKEN_FILE", token.display().to_string());
    let out = once(&cmd);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(auth_headers(&srv), vec![bearer(&big)]);
}

#[test]
fn the_credentials_directory_supplies_the_token_unless_a_file_is_named() {
    let dir = TestDir::new("cred-dir");
    let creds = dir.join("credentials");
    fs::create_dir(&creds).unwrap();
    write(&creds.join("inventory-token"), "from-credentials-dir\n");
    let srv = Server::start("inv", Reply::list(&["a"]));
    let cmd = AgentCmd::new(&dir)
        .inventory(&srv)
        .env("CREDENTIALS_DIRECTORY", creds.display().to_string());
    let out = once(&cmd);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(auth_headers(&srv), vec![bearer("from-credentials-dir")]);

    // An explicit file wins.
    let token = dir.join("explicit");
    write(&token, TOKEN);
    let out = once(
        &cmd.clone()
            .env("INVENTORY_TOKEN_FILE", token.display().to_string()),
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(auth_headers(&srv).last(), Some(&bearer(TOKEN)));

    // "none" sends nothing, even with a credential there.
    let out = once(&cmd.clone().env("INVENTORY_TOKEN_FILE", "none"));
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(auth_headers(&srv).last(), Some(&None));

    // A credentials directory without the token is no error.
    fs::remove_file(creds.join("inventory-token")).unwrap();
    let out = once(&cmd);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(auth_headers(&srv).last(), Some(&None));
}

#[test]
fn sighup_reads_a_rotated_token_and_keeps_the_old_one_when_it_cannot() {
    let dir = TestDir::new("cred-rotate");
    let srv = Server::start("inv", Reply::list(&["a"]));
    let token = dir.join("token");
    write(&token, "first-token-1111\n");
    let mut agent = AgentCmd::new(&dir)
        .inventory(&srv)
        .env("INVENTORY_TOKEN_FILE", token.display().to_string())
        .spawn();
    assert!(srv.wait_for_requests(1, T), "{}", agent.stderr());

    write(&token, "second-token-2222\n");
    agent.signal(Signal::SIGHUP);
    assert!(srv.wait_for_requests(2, T), "{}", agent.stderr());
    assert_eq!(
        auth_headers(&srv),
        vec![bearer("first-token-1111"), bearer("second-token-2222")]
    );

    // Gone: the old value stays, and a warning names variable and path.
    fs::remove_file(&token).unwrap();
    agent.log_skip();
    agent.signal(Signal::SIGHUP);
    assert!(srv.wait_for_requests(3, T), "{}", agent.stderr());
    assert_eq!(auth_headers(&srv)[2], bearer("second-token-2222"));
    let log = agent.log_new();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("INVENTORY_TOKEN_FILE"))
        .unwrap_or_else(|| panic!("no warning:\n{log}"));
    assert!(warning.contains(&token.display().to_string()), "{warning}");
    assert!(agent.is_alive());
    assert!(!agent.stderr().contains("second-token-2222"));
}

#[test]
fn a_password_file_completes_the_user_of_the_url() {
    let dir = TestDir::new("cred-password");
    let srv = Server::start("inv", Reply::list(&["a"]));
    let pw = dir.join("password");
    write(&pw, &format!("{PASSWORD}\n"));
    let url = format!("http://svc-user@127.0.0.1:{}/inventory", srv.port());
    let cmd = AgentCmd::new(&dir)
        .env("INVENTORY_URL", &url)
        .env("INVENTORY_PASSWORD_FILE", pw.display().to_string());
    let out = once(&cmd);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let basic = base64(format!("svc-user:{PASSWORD}").as_bytes());
    assert_eq!(auth_headers(&srv), vec![Some(format!("Basic {basic}"))]);
    assert!(!out.stderr.contains(PASSWORD), "{}", out.describe());
    assert!(!out.stderr.contains(&basic), "{}", out.describe());
}

#[test]
fn a_password_file_needs_a_user_and_no_password_in_the_url() {
    let dir = TestDir::new("cred-pw-url");
    let pw = dir.join("password");
    write(&pw, PASSWORD);
    for url in [
        "http://127.0.0.1:9/inventory",
        "http://u:inline-pw-9999@127.0.0.1:9/inventory",
    ] {
        for arg in ["--once", "--check-config"] {
            let out = AgentCmd::new(&dir)
                .env("INVENTORY_URL", url)
                .env("INVENTORY_PASSWORD_FILE", pw.display().to_string())
                .arg(arg)
                .run(T);
            assert_eq!(out.code(), Some(78), "{url} {arg}: {}", out.describe());
            assert!(
                out.stderr.contains("INVENTORY_PASSWORD_FILE: "),
                "{}",
                out.describe()
            );
            assert!(!out.stderr.contains("inline-pw-9999"), "{}", out.describe());
            assert!(!out.stderr.contains(PASSWORD), "{}", out.describe());
        }
    }
    // A token and a user name in the URL are two credentials.
    let token = dir.join("token");
    write(&token, TOKEN);
    let out = AgentCmd::new(&dir)
        .env("INVENTORY_URL", "http://u@127.0.0.1:9/inventory")
        .env("INVENTORY_TOKEN_FILE", token.display().to_string())
        .arg("--once")
        .run(T);
    assert_eq!(out.code(), Some(78), "{}", out.describe());
    assert!(
        out.stderr.contains("INVENTORY_TOKEN_FILE: "),
        "{}",
        out.describe()
    );
}

#[test]
fn unusable_files_are_configuration_errors_naming_variable_and_path() {
    let dir = TestDir::new("cred-bad");
    let empty = dir.join("empty");
    write(&empty, "");
    let newline = dir.join("newline");
    write(&newline, "\n");
    let missing = dir.join("missing");
    let a_dir = dir.join("a-dir");
    fs::create_dir(&a_dir).unwrap();
    let fifo = dir.join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let not_pem = dir.join("not.pem");
    write(
        &not_pem,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    );
    let big = dir.join("big");
    write(&big, &"x".repeat(64 * 1024 + 1));
    let srv = Server::start("inv", Reply::list(&["a"]));
    let cases = [
        ("INVENTORY_TOKEN_FILE", &missing, "No such file"),
        ("INVENTORY_TOKEN_FILE", &empty, "empty"),
        ("INVENTORY_TOKEN_FILE", &newline, "empty"),
        ("INVENTORY_TOKEN_FILE", &a_dir, "directory"),
        ("INVENTORY_TOKEN_FILE", &fifo, "FIFO"),
        ("INVENTORY_TOKEN_FILE", &big, "larger than"),
        ("INVENTORY_CA_FILE", &missing, "No such file"),
        ("INVENTORY_CA_FILE", &empty, "empty"),
        ("INVENTORY_CA_FILE", &not_pem, "PEM"),
        ("INVENTORY_CA_FILE", &fifo, "FIFO"),
    ];
    for (var, path, why) in cases {
        let shown = path.display().to_string();
        for arg in ["--once", "--check-config", ""] {
            let mut cmd = AgentCmd::new(&dir).inventory(&srv).env(var, &shown);
            if !arg.is_empty() {
                cmd = cmd.arg(arg);
            }
            // The daemon, too, stops at once (a FIFO never blocks it).
            let out = cmd.run(Duration::from_secs(5));
            assert_eq!(
                out.code(),
                Some(78),
                "{var}={shown} {arg}: {}",
                out.describe()
            );
            let line = out
                .stderr
                .lines()
                .find(|l| l.contains("invalid configuration"))
                .unwrap_or_else(|| panic!("{var} {arg}: {}", out.describe()));
            assert!(line.contains(&format!("{var}: ")), "{line}");
            assert!(line.contains(&shown), "{line}");
            assert!(line.contains(why), "{why}: {line}");
        }
    }
    assert_eq!(srv.total(), 0, "a request went out");
}

#[test]
fn the_token_stays_with_its_origin_across_redirects() {
    let dir = TestDir::new("cred-redirect");
    let token = dir.join("token");
    write(&token, TOKEN);
    let elsewhere = Server::start("elsewhere", Reply::list(&["other"]));
    let home = Server::start("home", Reply::redirect(elsewhere.url()));
    let cmd = AgentCmd::new(&dir)
        .inventory(&home)
        .env("INVENTORY_TOKEN_FILE", token.display().to_string());
    let out = once(&cmd);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(auth_headers(&home), vec![bearer(TOKEN)]);
    assert_eq!(
        auth_headers(&elsewhere),
        vec![None],
        "another port got the token"
    );

    // A redirect within the origin keeps it.
    let same = Server::start("same", Reply::list(&["a"]));
    same.push_once(Reply::redirect("/moved"));
    let out = once(&cmd.clone().inventory(&same));
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let reqs = same.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].target, "/moved");
    assert_eq!(auth_headers(&same), vec![bearer(TOKEN), bearer(TOKEN)]);
}

#[test]
fn secrets_never_show_in_logs_status_print_or_check_config() {
    let dir = TestDir::new("cred-leak");
    let srv = Server::start("inv", Reply::list(&["a", "b"]));
    let token = dir.join("token");
    write(&token, TOKEN);
    let pw = dir.join("password");
    write(&pw, PASSWORD);
    let notify = NotifySocket::new(&dir);
    let token_cmd = AgentCmd::new(&dir)
        .inventory(&srv)
        .env("LOG_LEVEL", "trace")
        .env("INVENTORY_TOKEN_FILE", token.display().to_string());
    let url = format!("http://svc-user@127.0.0.1:{}/inventory", srv.port());
    let pw_cmd = AgentCmd::new(&dir)
        .env("INVENTORY_URL", &url)
        .env("LOG_LEVEL", "trace")
        .env("INVENTORY_PASSWORD_FILE", pw.display().to_string());
    let basic = base64(format!("svc-user:{PASSWORD}").as_bytes());
    let leaks = |what: &str, text: &str| {
        for s in [TOKEN, PASSWORD, basic.as_str()] {
            assert!(!text.contains(s), "{what} shows a secret:\n{text}");
        }
    };
    for cmd in [&token_cmd, &pw_cmd] {
        for arg in ["--once", "--print", "--check-config"] {
            let out = cmd.clone().arg(arg).run(T);
            assert_eq!(out.code(), Some(0), "{arg}: {}", out.describe());
            leaks(arg, &out.stdout);
            leaks(arg, &out.stderr);
        }
        let check = cmd.clone().arg("--check-config").run(T);
        assert!(
            check.stdout.contains(&token.display().to_string())
                || check.stdout.contains(&pw.display().to_string()),
            "{}",
            check.describe()
        );
    }
    // The daemon, at trace level, with STATUS= lines.
    let agent = token_cmd.clone().notify(&notify).spawn();
    assert!(
        notify.wait_for("READY=1", T).is_some(),
        "{}",
        agent.stderr()
    );
    agent.signal(Signal::SIGHUP);
    assert!(srv.wait_for_requests(2 + 4, T), "{}", agent.stderr());
    std::thread::sleep(Duration::from_millis(300));
    leaks("the daemon's log", &agent.stderr());
    leaks("sd_notify", &notify.dump());
    assert!(agent.stderr().contains("TRACE"), "no trace logging at all");
}

#[test]
#[ignore = "needs root"]
fn as_root_a_symlinked_token_file_is_refused() {
    require_root();
    let dir = TestDir::new("cred-link");
    let real = dir.join("real-token");
    write(&real, TOKEN);
    let link = dir.join("token");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let srv = Server::start("inv", Reply::list(&["a"]));
    for var in ["INVENTORY_TOKEN_FILE", "INVENTORY_CA_FILE"] {
        let out = once(
            &AgentCmd::new(&dir)
                .inventory(&srv)
                .env(var, link.display().to_string()),
        );
        assert_eq!(out.code(), Some(78), "{}", out.describe());
        assert!(out.stderr.contains("symbolic link"), "{}", out.describe());
        assert!(
            out.stderr.contains(&format!("{var}: ")),
            "{}",
            out.describe()
        );
    }
    // A link on the way to the file, too.
    let sub = dir.join("sub");
    fs::create_dir(&sub).unwrap();
    write(&sub.join("token"), TOKEN);
    let via = dir.join("via");
    std::os::unix::fs::symlink(&sub, &via).unwrap();
    let out = once(&AgentCmd::new(&dir).inventory(&srv).env(
        "INVENTORY_TOKEN_FILE",
        via.join("token").display().to_string(),
    ));
    assert_eq!(out.code(), Some(78), "{}", out.describe());
    assert!(out.stderr.contains("symbolic link"), "{}", out.describe());
    // The message points at the token's setting, not at another one.
    assert!(!out.stderr.contains("TARGETS_FILE"), "{}", out.describe());
    let dotdot = sub.join("..").join("sub").join("token");
    let out = once(
        &AgentCmd::new(&dir)
            .inventory(&srv)
            .env("INVENTORY_TOKEN_FILE", dotdot.display().to_string()),
    );
    assert_eq!(out.code(), Some(78), "{}", out.describe());
    assert!(out.stderr.contains("`..`"), "{}", out.describe());
    assert!(!out.stderr.contains("TARGETS_FILE"), "{}", out.describe());
    // In the credentials directory the file is still not followed.
    let creds = dir.join("creds");
    fs::create_dir(&creds).unwrap();
    std::os::unix::fs::symlink(&real, creds.join("inventory-token")).unwrap();
    let out = once(
        &AgentCmd::new(&dir)
            .inventory(&srv)
            .env("CREDENTIALS_DIRECTORY", creds.display().to_string()),
    );
    assert_eq!(out.code(), Some(78), "{}", out.describe());
    assert_eq!(srv.total(), 0);
}

#[test]
#[ignore = "needs root"]
fn a_root_only_token_is_read_before_the_privilege_drop() {
    require_root();
    let dir = TestDir::new("cred-drop");
    let token = dir.join("token");
    write(&token, TOKEN);
    fs::set_permissions(&token, fs::Permissions::from_mode(0o400)).unwrap();
    let creds = dir.join("creds");
    fs::create_dir(&creds).unwrap();
    fs::set_permissions(&creds, fs::Permissions::from_mode(0o500)).unwrap();
    write(&creds.join("inventory-token"), "credential-token-5555");
    let srv = Server::start("inv", Reply::list(&["a"]));
    let out_dir = TestDir::new("cred-drop-out");
    let base = AgentCmd::new(&out_dir)
        .inventory(&srv)
        .env("RUN_AS_USER", "nobody");
    let agent = base
        .clone()
        .env("INVENTORY_TOKEN_FILE", token.display().to_string())
        .spawn();
    assert!(srv.wait_for_requests(1, T), "{}", agent.stderr());
    assert!(
        agent.stderr().contains("Dropped privileges to nobody"),
        "{}",
        agent.stderr()
    );
    assert_eq!(auth_headers(&srv), vec![bearer(TOKEN)]);
    // On SIGHUP the service user cannot read it again: the old one stays.
    agent.signal(Signal::SIGHUP);
    assert!(srv.wait_for_requests(2, T), "{}", agent.stderr());
    assert_eq!(auth_headers(&srv)[1], bearer(TOKEN));
    assert!(
        agent.wait_for_log(0, T, |l| l.contains("Keeping the value read before")),
        "{}",
        agent.stderr()
    );
    drop(agent);
    // The same for a systemd credential.
    let mut agent = base
        .env("CREDENTIALS_DIRECTORY", creds.display().to_string())
        .spawn();
    assert!(srv.wait_for_requests(3, T), "{}", agent.stderr());
    assert_eq!(auth_headers(&srv)[2], bearer("credential-token-5555"));
    // Out of the service user's reach: a reload keeps it and says so.
    agent.signal(Signal::SIGHUP);
    assert!(srv.wait_for_requests(4, T), "{}", agent.stderr());
    assert_eq!(auth_headers(&srv)[3], bearer("credential-token-5555"));
    assert!(
        agent.wait_for_log(0, T, |l| l.contains("restart to change it")),
        "{}",
        agent.stderr()
    );
    assert!(agent.is_alive());
}

//! TLS: an HTTPS inventory on loopback with a
//! certificate chain made by the `openssl` CLI.
//!
//! - With `SSL_CERT_FILE` pointing at the test CA, the fetch succeeds.
//! - An unknown CA, a wrong host name and an expired certificate each fail
//!   the cycle with an error that says which; the old file is kept.
//! - Nothing ever falls back to plain HTTP: the HTTPS port answers a
//!   plaintext request with a trap list, a plain-HTTP server holds another
//!   trap, and an HTTPS redirect to `http://` is refused.
//! - Through `HTTPS_PROXY` the request is tunnelled with CONNECT.
//! - `INVENTORY_CA_FILE` trusts a private CA without `SSL_CERT_FILE`; a
//!   server that demands a client certificate accepts the one from
//!   `INVENTORY_CLIENT_CERT`/`INVENTORY_CLIENT_KEY` and refuses a client
//!   without; one of the two alone, or a file that is no PEM, is exit 78;
//!   SIGHUP reads a replaced CA file.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const T: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

fn openssl(dir: &Path, args: &[&str]) {
    require_tool("openssl", "openssl");
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Two CAs (`ca`, trusted by the tests, and `rogue`) and leaf
    /// certificates: `good` (127.0.0.1, 127.0.0.2), `wrong-host`
    /// (wrong.example only), `expired` (2020), `rogue-leaf` (127.0.0.1,
    /// signed by the rogue CA).
    fn make(dir: &Path) -> Pki {
        let d = dir.join("pki");
        fs::create_dir_all(&d).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        for ca in ["ca", "rogue"] {
            let (key, pem, subj) = (
                format!("{ca}.key"),
                format!("{ca}.pem"),
                format!("/CN=sd-updater test {ca} CA"),
            );
            let mut a = vec!["req", "-x509"];
            a.extend(ec);
            a.extend([
                "-keyout",
                &key,
                "-out",
                &pem,
                "-days",
                "3650",
                "-subj",
                &subj,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
            openssl(&d, &a);
        }
        let ext = |name: &str, san: &str| {
            fs::write(
                d.join(format!("{name}.ext")),
                format!(
                    "subjectAltName={san}\nbasicConstraints=CA:FALSE\n\
                     keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                ),
            )
            .unwrap();
        };
        let csr = |name: &str, cn: &str| {
            let mut a = vec!["req"];
            a.extend(ec);
            let (key, out, subj) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("/CN={cn}"),
            );
            a.extend(["-keyout", &key, "-out", &out, "-subj", &subj]);
            openssl(&d, &a);
        };
        let sign = |name: &str, ca: &str| {
            openssl(
                &d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "30",
                    "-sha256",
                    "-extfile",
                    &format!("{name}.ext"),
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        };
        csr("good", "127.0.0.1");
        ext("good", "IP:127.0.0.1,IP:127.0.0.2");
        sign("good", "ca");
        csr("wrong-host", "wrong.example");
        ext("wrong-host", "DNS:wrong.example");
        sign("wrong-host", "ca");
        csr("rogue-leaf", "127.0.0.1");
        ext("rogue-leaf", "IP:127.0.0.1");
        sign("rogue-leaf", "rogue");
        // An expired certificate needs a start date in the past: `openssl
        // ca` can set one (x509 -req cannot before OpenSSL 3.4).
        csr("expired", "127.0.0.1");
        ext("expired", "IP:127.0.0.1");
        fs::write(d.join("index.txt"), "").unwrap();
        fs::write(d.join("serial"), "1000\n").unwrap();
        fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca=test\n[test]\ndatabase=index.txt\nnew_certs_dir=.\n\
             certificate=ca.pem\nprivate_key=ca.key\nserial=serial\ndefault_md=sha256\n\
             policy=any\nunique_subject=no\ncopy_extensions=none\n[any]\ncommonName=supplied\n",
        )
        .unwrap();
        openssl(
            &d,
            &[
                "ca",
                "-batch",
                "-config",
                "ca.cnf",
                "-notext",
                "-startdate",
                "20200101000000Z",
                "-enddate",
                "20200201000000Z",
                "-extfile",
                "expired.ext",
                "-in",
                "expired.csr",
                "-out",
                "expired.pem",
            ],
        );
        // A client certificate for mutual TLS, signed by the test CA.
        csr("client", "sd-updater test client");
        fs::write(
            d.join("client.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        sign("client", "ca");
        Pki { dir: d }
    }

    /// `config("good")`, demanding a client certificate from the test CA.
    fn mtls_config(&self) -> Arc<rustls::ServerConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.ca()).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.dir.join("good.pem"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_file(self.dir.join("good.key")).unwrap();
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)
                .unwrap(),
        )
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn config(&self, leaf: &str) -> Arc<rustls::ServerConfig> {
        let mut chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(self.dir.join(format!("{leaf}.pem")))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let ca = if leaf == "rogue-leaf" { "rogue" } else { "ca" };
        chain.extend(
            CertificateDer::pem_file_iter(self.dir.join(format!("{ca}.pem")))
                .unwrap()
                .map(Result::unwrap),
        );
        let key = PrivateKeyDer::from_pem_file(self.dir.join(format!("{leaf}.key"))).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        )
    }
}

// ---------------------------------------------------------------------------
// HTTPS server
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Record {
    /// Request targets served over TLS.
    tls_requests: Vec<String>,
    /// Handshakes that failed, with rustls' error.
    handshake_errors: Vec<String>,
    /// Plaintext requests on the TLS port.
    plaintext: Vec<String>,
}

/// An HTTPS server on 127.0.0.1 that answers every request with one
/// response. A connection that does not start with a TLS handshake is
/// recorded and answered in plain HTTP with the `trap` list, so a fallback
/// to plain HTTP would change the targets file.
struct Https {
    addr: SocketAddr,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Https {
    fn start(config: Arc<rustls::ServerConfig>, response: Vec<u8>, trap: Vec<u8>) -> Https {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, st) = (record.clone(), stop.clone());
        let (response, trap) = (Arc::new(response), Arc::new(trap));
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let (cfg, rec, st) = (config.clone(), rec.clone(), st.clone());
                let (response, trap) = (response.clone(), trap.clone());
                thread::spawn(move || serve(tcp, cfg, &rec, &st, &response, &trap));
            }
        });
        Https {
            addr,
            record,
            stop,
            acceptor: Some(acceptor),
        }
    }

    fn url(&self, host: &str) -> String {
        format!("https://{host}:{}/inventory", self.addr.port())
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap()
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    rec: &Mutex<Record>,
    stop: &AtomicBool,
    response: &[u8],
    trap: &[u8],
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
    let mut first = [0u8; 1];
    match tcp.peek(&mut first) {
        Ok(1) => {}
        _ => return,
    }
    if first[0] != 0x16 {
        let mut tcp = tcp;
        let head = read_head(&mut tcp, stop).unwrap_or_default();
        rec.lock()
            .unwrap()
            .plaintext
            .push(String::from_utf8_lossy(&head).into_owned());
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            trap.len()
        )
        .into_bytes();
        out.extend_from_slice(trap);
        let _ = tcp.write_all(&out);
        return;
    }
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    // Drive the handshake first, so that a refused certificate shows up
    // as a handshake error.
    while tls.conn.is_handshaking() {
        if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
            rec.lock().unwrap().handshake_errors.push(e.to_string());
            return;
        }
    }
    let Some(head) = read_head(&mut tls, stop) else {
        return;
    };
    let (_, target, _) = parse_head(&head);
    rec.lock().unwrap().tls_requests.push(target);
    let _ = tls.write_all(response);
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let mut sink = [0u8; 256];
    let _ = tls.read(&mut sink);
}

fn http_response(code: u16, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

struct Case {
    _dir: TestDir,
    pki: Pki,
    good: GoodList,
    trap: GoodList,
}

fn case(tag: &str) -> Case {
    let dir = TestDir::new(tag);
    let pki = Pki::make(dir.path());
    Case {
        pki,
        good: GoodList::numbered("tls", 25),
        trap: GoodList::numbered("plaintext_trap", 3),
        _dir: dir,
    }
}

/// Runs `--once` against `url` with SSL_CERT_FILE set to the test CA and
/// the targets file seeded with `old`; returns (exit code, log, file).
fn once(c: &Case, url: &str, env: &[(&str, &str)]) -> (Option<i32>, String, Vec<u8>) {
    let dir = TestDir::new("tls-once");
    let ca = c.pki.ca().display().to_string();
    let mut spawn = AgentCmd::for_url(&dir, url)
        .arg("--once")
        .env("SSL_CERT_FILE", &ca)
        .env("RETRY_ATTEMPTS", "1");
    for (k, v) in env {
        spawn = spawn.env(k, v);
    }
    let file = spawn.targets_file();
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, b"old content\n").unwrap();
    let RunOutput {
        status: st,
        stderr: log,
        ..
    } = spawn.run(T);
    (st.and_then(|s| s.code()), log, fs::read(&file).unwrap())
}

#[test]
fn https_with_the_test_ca_succeeds() {
    let c = case("tls-ok");
    let srv = Https::start(
        c.pki.config("good"),
        http_response(200, "", &c.good.body),
        c.trap.body.to_vec(),
    );
    let (code, log, file) = once(&c, &srv.url("127.0.0.1"), &[]);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(file, *c.good.rendered, "{log}");
    let r = srv.record();
    assert_eq!(r.tls_requests, vec!["/inventory"]);
    assert!(r.plaintext.is_empty());
}

/// The three trust failures, each with a word that says which, and none
/// of the other two words.
#[test]
fn https_trust_failures_say_which_and_keep_the_old_file() {
    let c = case("tls-bad");
    let plain = Server::start("plain-trap", Reply::ok(&c.trap.body));
    let kinds: [(&str, &str, &str); 4] = [
        ("unknown CA", "rogue-leaf", "unknown ?issuer"),
        ("wrong host name", "wrong-host", "not ?valid ?for ?name"),
        ("expired certificate", "expired", "expired"),
        // With no SSL_CERT_FILE the test CA is unknown to the system store.
        ("test CA not in the system store", "good", "unknown ?issuer"),
    ];
    let words = ["unknown ?issuer", "not ?valid ?for ?name", "expired"];
    for (what, leaf, word) in kinds {
        let srv = Https::start(
            c.pki.config(leaf),
            http_response(200, "", &c.good.body),
            c.trap.body.to_vec(),
        );
        let url = srv.url("127.0.0.1");
        let (code, log, file) = if what.contains("system store") {
            let dir = TestDir::new("tls-sys");
            let spawn = AgentCmd::for_url(&dir, &url).arg("--once");
            let f = spawn.targets_file();
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(&f, b"old content\n").unwrap();
            let RunOutput {
                status: st,
                stderr: log,
                ..
            } = spawn.run(T);
            (st.and_then(|s| s.code()), log, fs::read(&f).unwrap())
        } else {
            once(&c, &url, &[])
        };
        assert_eq!(code, Some(1), "{what}: --once must fail\n{log}");
        assert_eq!(file, b"old content\n", "{what}: old file changed\n{log}");
        let original = log
            .lines()
            .find(|l| l.contains("Failed to fetch inventory"))
            .unwrap_or_else(|| panic!("{what}: no failure logged\n{log}"));
        let line = original.to_ascii_lowercase().replace(['_', '-'], " ");
        let says = |w: &str| {
            let w = w.replace(" ?", "");
            line.replace(' ', "").contains(&w)
        };
        assert!(says(word), "{what}: the error does not say so: {line}");
        for other in words.iter().filter(|w| **w != word) {
            assert!(
                !says(other),
                "{what}: the error also says {other:?}: {line}"
            );
        }
        // The server thread records the failed handshake on its own time.
        wait_for(Duration::from_secs(2), || {
            !srv.record().handshake_errors.is_empty()
        });
        let r = srv.record();
        assert!(
            r.tls_requests.is_empty(),
            "{what}: a request went through: {:?}",
            r.tls_requests
        );
        assert!(
            !r.handshake_errors.is_empty(),
            "{what}: the handshake did not fail on the server side either"
        );
        assert!(
            r.plaintext.is_empty(),
            "{what}: fell back to plain HTTP on the TLS port: {:?}",
            r.plaintext
        );
        // The trust failure is not a reason to retry.
        assert_eq!(r.handshake_errors.len(), 1, "{what}: retried");
        report(
            "faults.txt",
            &format!(
                "TLS {what}: cycle failed, old file kept, no retry, no plain HTTP; logged: {}",
                original.split(" - ").last().unwrap_or(original)
            ),
        );
    }
    assert_eq!(plain.total(), 0, "something fetched over plain HTTP");
}

#[test]
fn https_never_falls_back_to_plain_http() {
    let c = case("tls-nofb");
    let plain = Server::start("plain-trap", Reply::ok(&c.trap.body));
    let plain_url = plain.url();

    // 1. An https redirect to http:// is refused.
    let srv = Https::start(
        c.pki.config("good"),
        http_response(302, &format!("Location: {plain_url}\r\n"), b""),
        c.trap.body.to_vec(),
    );
    let (code, log, file) = once(&c, &srv.url("127.0.0.1"), &[]);
    assert_eq!(code, Some(1), "a redirect to http:// was followed\n{log}");
    assert_eq!(file, b"old content\n");
    assert_eq!(plain.total(), 0, "the agent fetched the http:// redirect");
    assert_eq!(srv.record().tls_requests.len(), 1);

    // 2. A TLS failure is not followed by a plaintext attempt on the same
    //    port (the TLS port would answer it with the trap list), nor on
    //    the default port of http.
    let srv = Https::start(
        c.pki.config("rogue-leaf"),
        http_response(200, "", &c.good.body),
        c.trap.body.to_vec(),
    );
    let (code, log, file) = once(&c, &srv.url("127.0.0.1"), &[("RETRY_ATTEMPTS", "2")]);
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(file, b"old content\n", "{log}");
    assert!(
        srv.record().plaintext.is_empty(),
        "plaintext request on the TLS port: {:?}",
        srv.record().plaintext
    );

    // 3. The daemon, through several cycles of a failing https inventory.
    let dir = TestDir::new("tls-daemon");
    let notify = NotifySocket::new(&dir);
    let spawn = AgentCmd::for_url(&dir, &srv.url("127.0.0.1"))
        .notify(&notify)
        .env("SSL_CERT_FILE", c.pki.ca().display().to_string());
    let mut agent = spawn.spawn();
    assert!(notify.wait_for("READY=1", T).is_some());
    for _ in 0..3 {
        agent.signal(Signal::SIGHUP);
        assert!(notify.wait_for("READY=1", T).is_some(), "{}", agent.log());
    }
    assert!(agent.alive());
    assert!(!spawn.targets_file().exists(), "{}", agent.log());
    assert!(srv.record().plaintext.is_empty());
    assert_eq!(plain.total(), 0);
}

#[test]
fn https_through_a_connect_proxy() {
    let c = case("tls-proxy");
    let srv = Https::start(
        c.pki.config("good"),
        http_response(200, "", &c.good.body),
        c.trap.body.to_vec(),
    );
    let proxy = Proxy::start(srv.addr);
    // Nothing listens on 127.0.0.2: only the proxy can reach the server.
    let url = srv.url("127.0.0.2");
    let (code, log, file) = once(&c, &url, &[("HTTPS_PROXY", &proxy.url())]);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(file, *c.good.rendered);
    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, "CONNECT");
    assert_eq!(reqs[0].target, format!("127.0.0.2:{}", srv.addr.port()));
    assert!(srv.record().plaintext.is_empty());
}

// ---------------------------------------------------------------------------
// Proxy schemes with https inventories
// ---------------------------------------------------------------------------

/// What the TLS proxy saw: `CONNECT target` and `Proxy-Authorization`.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// A CONNECT proxy that speaks TLS to the agent (certificate `good`),
/// records the CONNECT target and `Proxy-Authorization`, and tunnels to
/// `upstream`, whatever the target names.
struct TlsProxy {
    addr: SocketAddr,
    seen: Seen,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl TlsProxy {
    fn start(config: Arc<rustls::ServerConfig>, upstream: SocketAddr) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(tcp) = conn else { continue };
                let (cfg, seen3, stop3) = (config.clone(), seen2.clone(), stop2.clone());
                thread::spawn(move || tls_tunnel(tcp, cfg, upstream, &seen3, &stop3));
            }
        });
        TlsProxy {
            addr,
            seen,
            stop,
            acceptor: Some(acceptor),
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn tls_tunnel(
    tcp: TcpStream,
    config: Arc<rustls::ServerConfig>,
    upstream: SocketAddr,
    seen: &Mutex<Vec<(String, Option<String>)>>,
    stop: &AtomicBool,
) {
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(20)));
    let conn = rustls::ServerConnection::new(config).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let Some(head) = read_head(&mut tls, stop) else {
        return;
    };
    let (method, target, headers) = parse_head(&head);
    let auth = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.clone());
    seen.lock()
        .unwrap()
        .push((format!("{method} {target}"), auth));
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = up.set_read_timeout(Some(Duration::from_millis(20)));
    if tls
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .and_then(|()| tls.flush())
        .is_err()
    {
        return;
    }
    // One thread pumps both ways, polling with short read timeouts.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 16 * 1024];
    let timeout = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    while std::time::Instant::now() < deadline && !stop.load(Ordering::SeqCst) {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if up.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if timeout(&e) => {}
            Err(_) => break,
        }
        match up.read(&mut buf) {
            Ok(0) => {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                break;
            }
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|()| tls.flush()).is_err() {
                    break;
                }
            }
            Err(e) if timeout(&e) => {}
            Err(_) => break,
        }
    }
}

/// `https://` proxies work (ureq speaks TLS to them with the same trust
/// store), and their credentials are sent percent-decoded.
#[test]
fn an_https_proxy_is_used() {
    let c = case("tls-hproxy");
    let inv = Server::start("good", Reply::ok(&c.good.body));
    let proxy = TlsProxy::start(c.pki.config("good"), inv.addr());
    // Nothing listens on 127.0.0.2: only the proxy can reach the inventory.
    let url = format!("http://127.0.0.2:{}/inventory", inv.port());
    let proxy_url = format!("https://pu:s%2Fcr3t@127.0.0.1:{}", proxy.addr.port());
    let (code, log, file) = once(&c, &url, &[("HTTP_PROXY", &proxy_url)]);
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(file, *c.good.rendered, "{log}");
    let seen = proxy.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, format!("CONNECT 127.0.0.2:{}", inv.port()));
    assert_eq!(seen[0].1.as_deref(), Some("Basic cHU6cy9jcjN0"));
    assert!(
        !log.contains("s%2Fcr3t") && !log.contains("s/cr3t"),
        "{log}"
    );
}

#[test]
fn socks_in_the_https_proxy_variables_is_ignored_with_a_warning() {
    let c = case("tls-socks");
    let srv = Https::start(
        c.pki.config("good"),
        http_response(200, "", &c.good.body),
        c.trap.body.to_vec(),
    );
    for var in ["HTTPS_PROXY", "https_proxy"] {
        let value = "socks5h://pu:Sock-Secr3t@127.0.0.1:1080";
        let (code, log, file) = once(&c, &srv.url("127.0.0.1"), &[(var, value)]);
        assert_eq!(code, Some(0), "{var}: {log}");
        assert_eq!(file, *c.good.rendered, "{var}");
        assert!(
            log.contains(&format!(
                "Ignoring invalid proxy setting {var}=socks5h://pu:***@127.0.0.1:1080"
            )),
            "{var}: {log}"
        );
        assert!(
            !log.contains("Sock-Secr3t") && !log.contains("panicked"),
            "{log}"
        );
    }
}

#[test]
fn a_private_ca_file_is_trusted_instead_of_the_system_store() {
    let c = case("tls-cafile");
    let srv = Https::start(
        c.pki.config("good"),
        http_response(200, "", &c.good.body),
        c.trap.body.to_vec(),
    );
    let ca = c.pki.ca().display().to_string();
    let dir = TestDir::new("tls-cafile-run");
    let cmd = AgentCmd::for_url(&dir, &srv.url("127.0.0.1")).arg("--once");
    // Without it the test CA is unknown: the system store is used.
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.to_ascii_lowercase().contains("unknown"),
        "{}",
        out.describe()
    );
    let out = cmd.clone().env("INVENTORY_CA_FILE", &ca).run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(fs::read(cmd.targets_file()).unwrap(), *c.good.rendered);
    // The CA file replaces the system store: a server of the rogue CA fails.
    let rogue = Https::start(
        c.pki.config("rogue-leaf"),
        http_response(200, "", &c.good.body),
        c.trap.body.to_vec(),
    );
    let out = AgentCmd::for_url(&dir, &rogue.url("127.0.0.1"))
        .arg("--once")
        .env("INVENTORY_CA_FILE", &ca)
        .run(T);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
}

#[test]
fn mutual_tls_uses_the_client_certificate_and_fails_without_it() {
    let c = case("tls-mtls");
    let srv = Https::start(
        c.pki.mtls_config(),
        http_response(200, "", &c.good.body),
        c.trap.body.to_vec(),
    );
    let url = srv.url("127.0.0.1");
    let ca = c.pki.ca().display().to_string();
    let cert = c.pki.dir.join("client.pem").display().to_string();
    let key = c.pki.dir.join("client.key").display().to_string();

    let dir = TestDir::new("tls-mtls-no");
    let out = AgentCmd::for_url(&dir, &url)
        .arg("--once")
        .env("INVENTORY_CA_FILE", &ca)
        .run(T);
    assert_eq!(
        out.code(),
        Some(1),
        "without a client certificate: {}",
        out.describe()
    );
    assert!(srv.record().tls_requests.is_empty());

    let dir = TestDir::new("tls-mtls-yes");
    let cmd = AgentCmd::for_url(&dir, &url)
        .arg("--once")
        .env("INVENTORY_CA_FILE", &ca)
        .env("INVENTORY_CLIENT_CERT", &cert)
        .env("INVENTORY_CLIENT_KEY", &key);
    let out = cmd.run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(fs::read(cmd.targets_file()).unwrap(), *c.good.rendered);
    assert_eq!(srv.record().tls_requests, vec!["/inventory"]);
    // The key never shows, not even at trace level.
    let pem = fs::read_to_string(&key).unwrap();
    let body_line = pem.lines().nth(1).unwrap();
    let out = cmd.clone().env("LOG_LEVEL", "trace").run(T);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert!(!out.stderr.contains(body_line), "{}", out.describe());
}

#[test]
fn client_certificate_settings_are_checked_at_start_up() {
    let c = case("tls-mtls-cfg");
    let dir = TestDir::new("tls-mtls-cfg-run");
    let cert = c.pki.dir.join("client.pem").display().to_string();
    let key = c.pki.dir.join("client.key").display().to_string();
    let not_pem = dir.join("not.pem");
    fs::write(&not_pem, "hello\n").unwrap();
    let not_pem = not_pem.display().to_string();
    let base = AgentCmd::for_url(&dir, "https://127.0.0.1:9/inventory");
    // The variables set, the variable the error names, the path it shows.
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 5] = [
        (
            &[("INVENTORY_CLIENT_CERT", &cert)],
            "INVENTORY_CLIENT_CERT",
            "INVENTORY_CLIENT_KEY",
        ),
        (
            &[("INVENTORY_CLIENT_KEY", &key)],
            "INVENTORY_CLIENT_KEY",
            "INVENTORY_CLIENT_CERT",
        ),
        (
            &[("INVENTORY_CA_FILE", &not_pem)],
            "INVENTORY_CA_FILE",
            &not_pem,
        ),
        (
            &[
                ("INVENTORY_CLIENT_CERT", &not_pem),
                ("INVENTORY_CLIENT_KEY", &key),
            ],
            "INVENTORY_CLIENT_CERT",
            &not_pem,
        ),
        // A certificate is not a key.
        (
            &[
                ("INVENTORY_CLIENT_CERT", &cert),
                ("INVENTORY_CLIENT_KEY", &cert),
            ],
            "INVENTORY_CLIENT_KEY",
            &cert,
        ),
    ];
    for (env, var, shown) in cases {
        for arg in ["--once", "--check-config"] {
            let mut cmd = base.clone().arg(arg);
            for (k, v) in env {
                cmd = cmd.env(k, v);
            }
            let out = cmd.run(T);
            assert_eq!(out.code(), Some(78), "{env:?} {arg}: {}", out.describe());
            let line = out
                .stderr
                .lines()
                .find(|l| l.contains("invalid configuration"));
            let line = line.unwrap_or_else(|| panic!("{env:?}: {}", out.describe()));
            assert!(line.contains(&format!("{var}: ")), "{line}");
            assert!(line.contains(shown), "{line}");
            assert!(!out.stderr.contains("PRIVATE KEY"), "{}", out.describe());
        }
    }
}

#[test]
fn sighup_reads_a_replaced_ca_file() {
    let c = case("tls-ca-reload");
    let srv = Https::start(
        c.pki.config("good"),
        http_response(200, "", &c.good.body),
        c.trap.body.to_vec(),
    );
    let dir = TestDir::new("tls-ca-reload-run");
    let ca = dir.join("ca.pem");
    fs::copy(c.pki.dir.join("rogue.pem"), &ca).unwrap();
    let agent = AgentCmd::new(&dir)
        .env("INVENTORY_URL", srv.url("127.0.0.1"))
        .env("INVENTORY_CA_FILE", ca.display().to_string())
        .spawn();
    assert!(
        agent.wait_for_log(0, T, |l| l.contains("Failed to fetch inventory")),
        "{}",
        agent.stderr()
    );
    fs::copy(c.pki.ca(), &ca).unwrap();
    agent.signal(Signal::SIGHUP);
    assert!(
        wait_for(T, || fs::read(agent.targets_file()).ok().as_ref()
            == Some(&*c.good.rendered)),
        "{}",
        agent.stderr()
    );
    assert!(
        agent.stderr().contains("TLS files changed"),
        "{}",
        agent.stderr()
    );
}

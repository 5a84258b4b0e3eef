//! Secrets and TLS material from files: a bearer token, a basic-auth
//! password, a CA bundle and a client certificate with its key. They are
//! read at start-up, as root before the privilege drop, and again on
//! SIGHUP where the service user can still read them. Errors name the
//! variable and the path, never what the file holds.

use std::fmt;
use std::path::{Path, PathBuf};

use ureq::tls::{parse_pem, Certificate, ClientCert, PemItem, PrivateKey};

use crate::source::url::{base64, InventoryUrl};
use crate::sys::logging;
use crate::sys::paths::{read_regular, Trust};

/// Cap on a token or password file: far above any real credential.
pub const SECRET_LIMIT: u64 = 64 * 1024;
/// Cap on a PEM file: room for a large CA bundle (the Mozilla one is
/// about 220 KiB).
pub const PEM_LIMIT: u64 = 1024 * 1024;

/// The name of the token in `$CREDENTIALS_DIRECTORY` (systemd's
/// `LoadCredential=inventory-token:...`).
pub const CREDENTIAL_NAME: &str = "inventory-token";

/// One file named by a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    pub var: &'static str,
    pub path: PathBuf,
    /// In `$CREDENTIALS_DIRECTORY`, which systemd set up: its directories
    /// are trusted, the file itself is still opened without following a
    /// symbolic link.
    pub trusted_dir: bool,
}

impl SecretFile {
    pub fn new(var: &'static str, path: &Path) -> SecretFile {
        SecretFile {
            var,
            path: path.to_path_buf(),
            trusted_dir: false,
        }
    }

    fn read(&self, trust: Trust, limit: u64) -> Result<Vec<u8>, LoadError> {
        let trust = if self.trusted_dir { Trust::Any } else { trust };
        let bytes =
            read_regular(&self.path, trust, limit).map_err(|e| self.error(e.to_string()))?;
        if bytes.is_empty() {
            return Err(self.error(format!("{} is empty", self.path.display())));
        }
        Ok(bytes)
    }

    fn error(&self, message: String) -> LoadError {
        LoadError {
            var: self.var,
            message,
        }
    }
}

/// The files the settings name; `None` where a setting is unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    pub token: Option<SecretFile>,
    pub password: Option<SecretFile>,
    pub ca: Option<SecretFile>,
    pub client_cert: Option<SecretFile>,
    pub client_key: Option<SecretFile>,
}

/// A file that could not be used: which variable, and why (with the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub var: &'static str,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.var, self.message)
    }
}

/// What the files hold. `Debug` shows which are present, never a value.
#[derive(Clone, Default)]
pub struct Loaded {
    pub token: Option<String>,
    pub password: Option<String>,
    pub ca: Option<Vec<Certificate<'static>>>,
    pub client: Option<ClientCert>,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca", &self.ca.as_ref().map(Vec::len))
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl Files {
    /// The settings that contradict each other or the URL.
    pub fn check(&self, url: &InventoryUrl) -> Result<(), LoadError> {
        if let Some(p) = &self.password {
            if url.user().is_none() {
                return Err(p.error(
                    "INVENTORY_URL names no user: a password file is the password of \
                     the user in https://user@host/..."
                        .into(),
                ));
            }
            if url.has_password() {
                return Err(p.error(
                    "INVENTORY_URL holds a password too: give it in one place only".into(),
                ));
            }
        }
        if let Some(t) = &self.token {
            if url.user().is_some() {
                return Err(t.error(format!(
                    "{} is a bearer token, but INVENTORY_URL has a user name for basic \
                     authentication: use one or the other",
                    t.path.display()
                )));
            }
        }
        match (&self.client_cert, &self.client_key) {
            (Some(c), None) => Err(c.error(
                "INVENTORY_CLIENT_KEY is not set: mutual TLS needs the certificate and its key"
                    .into(),
            )),
            (None, Some(k)) => Err(k.error(
                "INVENTORY_CLIENT_CERT is not set: mutual TLS needs the certificate and its key"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    /// Reads every file; the first failure is the error. As root, `trust`
    /// is strict: no symbolic link, no directory another user could change.
    pub fn load(&self, trust: Trust) -> Result<Loaded, LoadError> {
        let loaded = Loaded {
            token: self
                .token
                .as_ref()
                .map(|f| read_secret(f, trust))
                .transpose()?,
            password: self
                .password
                .as_ref()
                .map(|f| read_secret(f, trust))
                .transpose()?,
            ca: self.ca.as_ref().map(|f| read_ca(f, trust)).transpose()?,
            client: match (&self.client_cert, &self.client_key) {
                (Some(c), Some(k)) => Some(read_client(c, k, trust)?),
                _ => None,
            },
        };
        loaded.register();
        Ok(loaded)
    }

    /// Reads the files again (on SIGHUP): what cannot be read keeps its old
    /// value, with a warning naming the variable and the path. Returns
    /// whether the TLS material changed.
    pub fn reload(&self, trust: Trust, loaded: &mut Loaded) -> bool {
        fn keep<T>(f: &SecretFile, r: Result<T, LoadError>) -> Option<T> {
            let hint = if f.trusted_dir {
                " (a LoadCredential= credential is read at start only: restart to change it)"
            } else {
                ""
            };
            r.map_err(|e| log::warn!("Keeping the value read before: {e}{hint}"))
                .ok()
        }
        if let Some(t) = self
            .token
            .as_ref()
            .and_then(|f| keep(f, read_secret(f, trust)))
        {
            loaded.token = Some(t);
        }
        if let Some(p) = self
            .password
            .as_ref()
            .and_then(|f| keep(f, read_secret(f, trust)))
        {
            loaded.password = Some(p);
        }
        let mut tls = false;
        if let Some(ca) = self.ca.as_ref().and_then(|f| keep(f, read_ca(f, trust))) {
            tls |= loaded.ca.as_deref().map(ders) != Some(ders(&ca));
            loaded.ca = Some(ca);
        }
        if let (Some(c), Some(k)) = (&self.client_cert, &self.client_key) {
            if let Some(client) = keep(c, read_client(c, k, trust)) {
                tls |= loaded.client.as_ref().map(client_der) != Some(client_der(&client));
                loaded.client = Some(client);
            }
        }
        loaded.register();
        tls
    }
}

impl Loaded {
    /// Hands the secrets to the logger, which masks them from then on.
    fn register(&self) {
        for s in self.token.iter().chain(&self.password) {
            logging::register_secret(s);
        }
    }

    /// The `Authorization` value for the inventory's origin: the bearer
    /// token, or the URL's user with the password from its file, or what
    /// the URL itself holds.
    pub fn authorization(&self, url: &InventoryUrl) -> Option<String> {
        if let Some(t) = &self.token {
            return Some(format!("Bearer {t}"));
        }
        if let (Some(p), Some(user)) = (&self.password, url.user()) {
            let basic = base64(format!("{user}:{p}").as_bytes());
            logging::register_secret(&basic);
            return Some(format!("Basic {basic}"));
        }
        url.authorization().map(str::to_string)
    }
}

fn ders(certs: &[Certificate<'static>]) -> Vec<Vec<u8>> {
    certs.iter().map(|c| c.der().to_vec()).collect()
}

fn client_der(c: &ClientCert) -> (Vec<Vec<u8>>, Vec<u8>) {
    (ders(c.certs()), c.private_key().der().to_vec())
}

/// A token or password: one line, the trailing newline trimmed, no other
/// control character or space (a header value cannot hold them safely).
fn read_secret(f: &SecretFile, trust: Trust) -> Result<String, LoadError> {
    let bytes = f.read(trust, SECRET_LIMIT)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| f.error(format!("{} is not UTF-8 text", f.path.display())))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(f.error(format!(
            "{} is empty (a trailing newline is not a value)",
            f.path.display()
        )));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(f.error(format!(
            "{} holds a line break or another control character: it must hold one line \
             (only a trailing newline is trimmed)",
            f.path.display()
        )));
    }
    if f.var == "INVENTORY_TOKEN_FILE" && value.chars().any(|c| c == ' ' || !c.is_ascii()) {
        return Err(f.error(format!(
            "{} holds a space or a non-ASCII character, which a bearer token cannot",
            f.path.display()
        )));
    }
    Ok(value.to_string())
}

/// The PEM items of a file; any that does not parse makes it invalid. The
/// parser's own message is left out: it may quote the file.
fn pem_items(f: &SecretFile, trust: Trust) -> Result<Vec<PemItem<'static>>, LoadError> {
    let bytes = f.read(trust, PEM_LIMIT)?;
    parse_pem(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| f.error(format!("{} is not valid PEM", f.path.display())))
}

fn certificates(f: &SecretFile, trust: Trust) -> Result<Vec<Certificate<'static>>, LoadError> {
    let certs: Vec<_> = pem_items(f, trust)?
        .into_iter()
        .filter_map(|item| match item {
            PemItem::Certificate(c) => Some(c),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(f.error(format!(
            "{} is not valid PEM: it holds no certificate (-----BEGIN CERTIFICATE-----)",
            f.path.display()
        )));
    }
    Ok(certs)
}

fn read_ca(f: &SecretFile, trust: Trust) -> Result<Vec<Certificate<'static>>, LoadError> {
    certificates(f, trust)
}

fn read_client(cert: &SecretFile, key: &SecretFile, trust: Trust) -> Result<ClientCert, LoadError> {
    let chain = certificates(cert, trust)?;
    let keys: Vec<PrivateKey<'static>> = pem_items(key, trust)?
        .into_iter()
        .filter_map(|item| match item {
            PemItem::PrivateKey(k) => Some(k),
            _ => None,
        })
        .collect();
    match keys.len() {
        1 => Ok(ClientCert::new_with_certs(
            &chain,
            keys.into_iter()
                .next()
                .ok_or_else(|| key.error(String::new()))?,
        )),
        0 => Err(key.error(format!(
            "{} is not valid PEM: it holds no private key",
            key.path.display()
        ))),
        _ => Err(key.error(format!(
            "{} holds more than one private key",
            key.path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sdu-cred-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn secrets_are_one_line_with_the_newline_trimmed() {
        let d = dir("secret");
        let f = |name: &str, body: &[u8]| {
            let p = d.join(name);
            std::fs::write(&p, body).unwrap();
            read_secret(&SecretFile::new("INVENTORY_TOKEN_FILE", &p), Trust::Any)
        };
        assert_eq!(f("a", b"tok-123\n").unwrap(), "tok-123");
        assert_eq!(f("b", b"tok-123\r\n").unwrap(), "tok-123");
        for (name, body, why) in [
            ("c", &b""[..], "is empty"),
            ("d", b"\n", "is empty"),
            ("e", b"a\nb", "one line"),
            ("f", b"a b", "space"),
            ("g", b"\xff", "UTF-8"),
        ] {
            let e = f(name, body).unwrap_err();
            assert_eq!(e.var, "INVENTORY_TOKEN_FILE");
            assert!(e.message.contains(why), "{name}: {e}");
            assert!(
                e.message.contains(&d.join(name).display().to_string()),
                "{e}"
            );
        }
        let e = f("big", &vec![b'a'; SECRET_LIMIT as usize + 1]).unwrap_err();
        assert!(e.message.contains("larger than"), "{e}");
        let e = read_secret(
            &SecretFile::new("INVENTORY_PASSWORD_FILE", &d.join("missing")),
            Trust::Any,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("INVENTORY_PASSWORD_FILE: "),
            "{e}"
        );
        assert!(e.message.contains("missing"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn settings_that_contradict_the_url_are_refused() {
        let file = |var| Some(SecretFile::new(var, Path::new("/x")));
        let url = |u| InventoryUrl::parse(u).unwrap();
        let pw = Files {
            password: file("INVENTORY_PASSWORD_FILE"),
            ..Files::default()
        };
        assert!(pw.check(&url("https://u@h/x")).is_ok());
        for bad in [
            "https://h/x",
            "https://u:p@h/x",
            "https://@h/x",
            "https://:p@h/x",
            "file:///x.json",
        ] {
            assert_eq!(
                pw.check(&url(bad)).unwrap_err().var,
                "INVENTORY_PASSWORD_FILE"
            );
        }
        let token = Files {
            token: file("INVENTORY_TOKEN_FILE"),
            ..Files::default()
        };
        assert!(token.check(&url("https://h/x")).is_ok());
        assert!(token.check(&url("https://u@h/x")).is_err());
        let half = Files {
            client_key: file("INVENTORY_CLIENT_KEY"),
            ..Files::default()
        };
        assert_eq!(
            half.check(&url("https://h/x")).unwrap_err().var,
            "INVENTORY_CLIENT_KEY"
        );
    }

    #[test]
    fn debug_shows_no_secret() {
        let l = Loaded {
            token: Some("Tok-Debug-123".into()),
            password: Some("Pw-Debug-123".into()),
            ..Loaded::default()
        };
        let shown = format!("{l:?}");
        assert!(!shown.contains("Debug-123"), "{shown}");
    }
}

//! A real OpenLDAP `slapd` for the directory tests: started as the test's own process on a
//! free loopback port, with a generated slapd.conf (mdb database in the test's directory;
//! schemas core, cosine, inetorgperson, nis, misc) and an LDIF loaded by `slapadd`. No
//! system service or file is touched; the process is killed when the handle drops.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::fixtures::{ok, time_until};

/// The suffix of the test directory.
pub const SUFFIX: &str = "dc=example,dc=org";
/// Its administrator (the rootdn) and password.
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PASSWORD: &str = "directory-secret";

pub struct Slapd {
    pub port: u16,
    /// The ldaps:// port, when started with a TLS certificate.
    pub tls_port: Option<u16>,
    pub dir: PathBuf,
    child: Child,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Slapd {
    /// Loads `ldif` (entries below [`SUFFIX`]; the suffix entry itself is added here) and
    /// starts slapd on a free loopback port.
    pub fn start(dir: &Path, ldif: &str) -> Slapd {
        Self::start_with(dir, ldif, None)
    }

    /// As [`Slapd::start`], and with `tls` (certificate and key PEM files) also on an
    /// ldaps:// port and for StartTLS.
    pub fn start_with(dir: &Path, ldif: &str, tls: Option<(&Path, &Path)>) -> Slapd {
        Self::launch(dir, ldif, tls, super::dead_port())
    }

    /// As [`Slapd::start`], on the port given (one a test named in certificates before).
    pub fn start_on(dir: &Path, ldif: &str, port: u16) -> Slapd {
        Self::launch(dir, ldif, None, port)
    }

    fn launch(dir: &Path, ldif: &str, tls: Option<(&Path, &Path)>, port: u16) -> Slapd {
        let db = dir.join("db");
        std::fs::create_dir_all(&db).unwrap();
        let conf = dir.join("slapd.conf");
        let schema = "/etc/ldap/schema";
        let text = format!(
            "include {schema}/core.schema\n\
             include {schema}/cosine.schema\n\
             include {schema}/inetorgperson.schema\n\
             include {schema}/nis.schema\n\
             include {schema}/misc.schema\n\
             pidfile {dir}/slapd.pid\n\
             argsfile {dir}/slapd.args\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             sizelimit unlimited\n\
             database mdb\n\
             maxsize 104857600\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PASSWORD}\n\
             directory {db}\n\
             access to * by * read\n",
            dir = dir.display(),
            db = db.display(),
        );
        // Global TLS settings go before the first database.
        let text = match tls {
            Some((cert, key)) => text.replacen(
                "sizelimit unlimited\n",
                &format!(
                    "sizelimit unlimited\nTLSCertificateFile {}\nTLSCertificateKeyFile {}\n",
                    cert.display(),
                    key.display()
                ),
                1,
            ),
            None => text,
        };
        std::fs::write(&conf, text).unwrap();
        let data = dir.join("data.ldif");
        let full = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\n\
             o: Example\n\n{ldif}"
        );
        std::fs::write(&data, full).unwrap();
        let out = Command::new("slapadd")
            .arg("-q")
            .arg("-f")
            .arg(&conf)
            .arg("-l")
            .arg(&data)
            .output()
            .expect("slapadd runs (apt-get install slapd)");
        ok("slapadd", &out);
        let tls_port = tls.map(|_| super::dead_port());
        let mut urls = format!("ldap://127.0.0.1:{port}/ ldapi://{}", ldapi_path(dir));
        if let Some(p) = tls_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        let log = std::fs::File::create(dir.join("slapd.log")).unwrap();
        let child = Command::new("slapd")
            .arg("-f")
            .arg(&conf)
            .arg("-h")
            .arg(urls)
            // -d keeps it in the foreground, a child of the test.
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("slapd starts (apt-get install slapd)");
        let mut s = Slapd {
            port,
            tls_port,
            dir: dir.to_owned(),
            child,
        };
        let up = time_until(Duration::from_secs(20), || {
            [Some(port), tls_port]
                .into_iter()
                .flatten()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok())
        });
        if up.is_none() || s.child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(dir.join("slapd.log")).unwrap_or_default();
            panic!("slapd did not start on port {port}:\n{log}");
        }
        s
    }

    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// Its ldaps:// URL (started with TLS).
    pub fn ldaps_url(&self) -> String {
        format!(
            "ldaps://127.0.0.1:{}",
            self.tls_port.expect("slapd started with TLS")
        )
    }

    /// Its Unix socket (where SASL EXTERNAL knows the test's user by its credentials).
    pub fn ldapi_url(&self) -> String {
        format!("ldapi://{}", ldapi_path(&self.dir))
    }
}

/// The ldapi socket's path, percent-encoded as an LDAP URL host.
fn ldapi_path(dir: &Path) -> String {
    dir.join("ldapi").display().to_string().replace('/', "%2F")
}

/// An LDIF line `name:: base64` for a binary value.
pub fn ldif_binary(name: &str, value: &[u8]) -> String {
    use base64::Engine;
    format!(
        "{name}:: {}\n",
        base64::engine::general_purpose::STANDARD.encode(value)
    )
}

/// An LDAP URL (RFC 4516) for the entry `dn` on 127.0.0.1:`port`, naming `attribute`: the
/// DN's commas and spaces percent-encoded, as a certificate carries it.
pub fn ldap_url(port: u16, dn: &str, attribute: &str) -> String {
    format!(
        "ldap://127.0.0.1:{port}/{}?{attribute}",
        dn.replace(' ', "%20").replace(',', "%2C")
    )
}

/// An LDIF entry `dn` of `classes`, named `cn`, holding one binary `attribute`.
pub fn ldif_entry(dn: &str, classes: &[&str], cn: &str, attribute: &str, value: &[u8]) -> String {
    let mut text = format!("dn: {dn}\n");
    for c in classes {
        text.push_str(&format!("objectClass: {c}\n"));
    }
    text.push_str(&format!("cn: {cn}\n"));
    text.push_str(&ldif_binary(attribute, value));
    text.push('\n');
    text
}

//! `smime-agent neomutt ...`: the commands NeoMutt's (and Mutt's) `smime_*_command` hooks
//! run, with the agent in OpenSSL's place and no wrapper scripts. Each speaks what NeoMutt
//! reads (ncrypt/smime.c): bare DER on stdout, nothing on stderr on success (NeoMutt shows
//! any stderr text and waits for a key), `Verification successful` as the first stderr line
//! of a good verification, the passphrase NeoMutt asked for as the first line of stdin.
//!
//! Keys are named by address: `neomutt keyring` writes the `.index` NeoMutt reads, one line
//! per address (the agent's own certificates, the configured identities, the contacts), and
//! the file names NeoMutt then passes (`%c`, `%k`: `<dir>/<address>`) are mapped back to the
//! address, whose certificate the agent chooses. Only addresses made of characters that are
//! inert in a shell command line are listed: NeoMutt pastes `%c` into `sh -c` unquoted, and
//! a contact's certificate is written by someone else.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Subcommand;
use smime_agent::certs::CertFacts;
use smime_agent::smime::verify as cms_verify;
use smime_agent_proto::{
    DecryptParams, EncryptParams, SignFormat, SignParams, SignatureStatus, ValidationMode,
    VerifyParams, VerifyStatus,
};
use zeroize::Zeroizing;

use smime_agent_proto::client::{BlockingClient, ClientError};

use super::pin::{PinAnswerer, first_line};
use super::{connect, connect_with, fail, local_fail, verify_summary};

/// The first line of a good verification, as OpenSSL writes it and NeoMutt compares it.
const VERIFIED: &str = "Verification successful";
/// Most bytes read from stdin for the passphrase line.
const MAX_PIN_LINE: u64 = 1024;

#[derive(Subcommand)]
pub enum NeomuttCommand {
    /// smime_sign_command: a detached signature (DER) of --in on stdout.
    Sign {
        /// The digest NeoMutt names in micalg (%d); refused unless the policy allows it.
        #[arg(long, value_name = "ALG")]
        digest: Option<String>,
        /// The signing key's file as NeoMutt names it (%c or %k): its file name is the
        /// signer's address.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The MIME entity to sign (%f).
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// smime_verify_command: a signed part (%f) and its detached signature (%s).
    Verify {
        #[arg(long, value_name = "FILE")]
        signature: PathBuf,
        #[arg(long, value_name = "FILE")]
        content: PathBuf,
    },
    /// smime_verify_opaque_command: an opaque SignedData (%s, DER); its content on stdout.
    VerifyOpaque {
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// smime_encrypt_command: an EnvelopedData (DER) of --in for the recipients (%c).
    Encrypt {
        /// The content cipher NeoMutt was told to use (%a: aes256, aes128, ...); refused
        /// unless the policy allows it.
        #[arg(long, value_name = "ALG")]
        cipher: Option<String>,
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// The recipients' certificate files as NeoMutt names them (%c): each file name is
        /// an address.
        #[arg(value_name = "CERT", required = true)]
        recipients: Vec<PathBuf>,
    },
    /// smime_decrypt_command: the envelope (%f, DER) opened, one layer: an inner signature
    /// is left for NeoMutt to verify and show.
    Decrypt {
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// smime_pk7out_command: the SignedData of a signed message (%f), PEM.
    Pk7out {
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// smime_get_cert_command: the certificates in a SignedData (%f), PEM.
    GetCert {
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// smime_get_signer_cert_command: the signer's certificate of a message (%f) into %c.
    SignerCert {
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        #[arg(long = "out", value_name = "FILE")]
        output: PathBuf,
    },
    /// smime_get_cert_email_command: the addresses of a certificate (%f), one per line.
    CertEmail {
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
    },
    /// Write the key index NeoMutt reads (DIR/.index) and print DIR, for
    /// `set smime_certificates=`...``.
    Keyring {
        /// Where (default: $XDG_DATA_HOME/smime-agent/neomutt).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// The agent's configuration (for the identities and the contacts directory).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the address to sign as (the first [[identity]], else the first address of a
    /// signing certificate on a token), for `set smime_default_key=`...``.
    DefaultKey {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

pub fn run(socket: &Path, cmd: NeomuttCommand) -> ExitCode {
    match cmd {
        NeomuttCommand::Sign { digest, key, input } => sign(socket, digest, &key, &input),
        NeomuttCommand::Verify { signature, content } => {
            verify(socket, &content, Some(&signature), false)
        }
        NeomuttCommand::VerifyOpaque { input } => verify(socket, &input, None, true),
        NeomuttCommand::Encrypt {
            cipher,
            input,
            recipients,
        } => encrypt(socket, cipher, &input, &recipients),
        NeomuttCommand::Decrypt { input } => decrypt(socket, &input),
        NeomuttCommand::Pk7out { input } => pk7out(&input),
        NeomuttCommand::GetCert { input } => get_cert(&input),
        NeomuttCommand::SignerCert { input, output } => signer_cert(&input, &output),
        NeomuttCommand::CertEmail { input } => cert_email(&input),
        NeomuttCommand::Keyring { dir, config } => keyring(socket, dir, config),
        NeomuttCommand::DefaultKey { config } => default_key(socket, config),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ExitCode> {
    std::fs::read(path)
        .map_err(|e| local_fail(format!("cannot read {what} {}: {e}", path.display())))
}

fn write_stdout(data: &[u8]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(data).and_then(|_| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => local_fail(format!("cannot write the result: {e}")),
    }
}

/// Whether `id` can stand in a shell command line unquoted and names an address.
fn shell_safe_address(id: &str) -> bool {
    let Some((local, domain)) = id.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._+-".contains(&b))
}

/// The address a key file NeoMutt names stands for (its file name).
fn address_of(file: &Path) -> Result<String, ExitCode> {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if shell_safe_address(name) {
        Ok(name.to_owned())
    } else {
        Err(local_fail(format!(
            "the key id \"{}\" is not an address: smime-agent names keys by address (set \
             smime_default_key to your address, and let `smime-agent neomutt keyring` write \
             the index)",
            name.escape_debug()
        )))
    }
}

/// The passphrase NeoMutt wrote on stdin (its first line). Empty: the agent's own PIN
/// source (pinentry, a PIN pad) asks instead.
fn stdin_pin() -> Result<Option<Zeroizing<String>>, ExitCode> {
    let mut buf = Zeroizing::new(Vec::with_capacity(256));
    if let Err(e) = std::io::stdin().take(MAX_PIN_LINE).read_to_end(&mut buf) {
        return Err(local_fail(format!("cannot read the PIN from stdin: {e}")));
    }
    let pin = first_line(&buf, "stdin").map_err(local_fail)?;
    Ok((!pin.is_empty()).then_some(pin))
}

/// Runs `call` on a connection that answers PIN prompts with the passphrase NeoMutt wrote
/// on stdin (the agent asks this command for it, whatever its PIN source), or, when that
/// was empty, leaves them to the agent's own PIN source.
fn with_pin<T>(
    socket: &Path,
    call: impl FnOnce(&mut BlockingClient, &mut PinAnswerer) -> Result<T, ClientError>,
) -> Result<T, ExitCode> {
    let pin = stdin_pin()?;
    let from_client = pin.is_some();
    let mut answer = PinAnswerer::fixed(pin);
    connect_with(socket, true, from_client)
        .and_then(|mut c| call(&mut c, &mut answer))
        .map_err(|e| fail(&e))
}

fn sign(socket: &Path, digest: Option<String>, key: &Path, input: &Path) -> ExitCode {
    let signer = match address_of(key) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let content = match read(input, "the message") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = with_pin(socket, |c, answer| {
        c.sign(
            SignParams {
                signer,
                content: content.into(),
                format: Some(SignFormat::Detached),
                digest,
            },
            &mut |ev| answer.on_event(ev),
        )
    });
    match result {
        Ok(r) => write_stdout(&r.mime.0),
        Err(code) => code,
    }
}

/// Verification for NeoMutt: the verdict as OpenSSL's first stderr line, the agent's
/// account of each signer after it (NeoMutt shows it under the message), and for an
/// opaque signature the content on stdout when the signatures hold.
fn verify(socket: &Path, input: &Path, signature: Option<&Path>, opaque: bool) -> ExitCode {
    let content = match read(input, "the message") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let signature = match signature.map(|s| read(s, "the signature")).transpose() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let params = VerifyParams {
        content: content.into(),
        signature: signature.map(Into::into),
        validation: ValidationMode::Wait,
    };
    let r = match connect(socket, false).and_then(|mut c| c.verify(params)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Verification failure");
            return fail(&e);
        }
    };
    let signatures_valid = r
        .layers
        .iter()
        .flat_map(|l| &l.signers)
        .all(|s| s.signature.status == SignatureStatus::Valid);
    if opaque && signatures_valid {
        let code = write_stdout(&r.content.0);
        if code != ExitCode::SUCCESS {
            return code;
        }
    }
    let good = r.status == VerifyStatus::Valid;
    eprintln!(
        "{}",
        if good {
            VERIFIED
        } else {
            "Verification failure"
        }
    );
    for line in verify_summary(&r.layers, r.status) {
        eprintln!("smime-agent: {line}");
    }
    if good {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_AGENT_ERROR)
    }
}

/// NeoMutt's cipher names (OpenSSL's `-aes256`) in the agent's.
fn cipher_name(alg: &str) -> String {
    match alg.to_ascii_lowercase().as_str() {
        "aes128" | "aes-128-cbc" => "aes128-cbc".to_owned(),
        "aes256" | "aes-256-cbc" => "aes256-cbc".to_owned(),
        "aes-128-gcm" => "aes128-gcm".to_owned(),
        "aes-256-gcm" => "aes256-gcm".to_owned(),
        other => other.to_owned(),
    }
}

fn encrypt(
    socket: &Path,
    cipher: Option<String>,
    input: &Path,
    recipients: &[PathBuf],
) -> ExitCode {
    let mut to = vec![];
    for r in recipients {
        match address_of(r) {
            Ok(a) => to.push(a),
            Err(code) => return code,
        }
    }
    let content = match read(input, "the message") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = connect(socket, false).and_then(|mut c| {
        c.encrypt(EncryptParams {
            recipients: to,
            content: content.into(),
            algorithm: cipher.as_deref().map(cipher_name),
            der: true,
            ..Default::default()
        })
    });
    match result {
        // Warnings stay unsaid: NeoMutt would stop at "Press any key" for each send.
        Ok(r) => write_stdout(&r.mime.0),
        Err(e) => fail(&e),
    }
}

fn decrypt(socket: &Path, input: &Path) -> ExitCode {
    let content = match read(input, "the message") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = with_pin(socket, |c, answer| {
        c.decrypt(
            DecryptParams {
                content: content.into(),
                outer_only: true,
            },
            &mut |ev| answer.on_event(ev),
        )
    });
    match result {
        Ok(r) => write_stdout(&r.mime.0),
        Err(code) => code,
    }
}

fn pem(label: &str, der: &[u8]) -> Result<String, ExitCode> {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der)
        .map_err(|e| local_fail(format!("cannot write PEM: {e}")))
}

/// The SignedData of a signed message, as OpenSSL's `smime -pk7out` writes it.
fn pk7out(input: &Path) -> ExitCode {
    let message = match read(input, "the message") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let der = match smime_agent::smime::mime::read(&message) {
        Ok(smime_agent::smime::mime::Smime::ClearSigned { signature, .. }) => signature,
        Ok(
            smime_agent::smime::mime::Smime::SignedData(d)
            | smime_agent::smime::mime::Smime::Pkcs7(d),
        ) => d,
        Ok(_) => return local_fail("the message is not signed (no S/MIME signature in it)"),
        Err(e) => return local_fail(format!("cannot read the message: {e}")),
    };
    match pem("PKCS7", &der) {
        Ok(text) => write_stdout(text.as_bytes()),
        Err(code) => code,
    }
}

/// The certificates a SignedData carries, PEM, as `openssl pkcs7 -print_certs` writes them.
fn get_cert(input: &Path) -> ExitCode {
    let cms = match read(input, "the signature") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let certs = match cms_verify::carried_certificates(&cms) {
        Ok(c) if !c.is_empty() => c,
        Ok(_) => return local_fail("the signature carries no certificate"),
        Err(e) => return local_fail(format!("cannot read the signature: {e}")),
    };
    let mut out = String::new();
    for der in &certs {
        match pem("CERTIFICATE", der) {
            Ok(p) => out.push_str(&p),
            Err(code) => return code,
        }
    }
    write_stdout(out.as_bytes())
}

/// The first signer's certificate of a signed message (its outermost signed layer), PEM,
/// as `openssl smime -verify -noverify -signer` writes it: NeoMutt compares its addresses
/// with From. The signature itself is not judged here (`verify` does that).
fn signer_cert(input: &Path, output: &Path) -> ExitCode {
    let message = match read(input, "the message") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let layers = match cms_verify::verify_layers(&message, SystemTime::now()) {
        Ok(l) => l,
        Err(e) => return local_fail(format!("cannot read the signed message: {e}")),
    };
    let Some(cert) = layers
        .first()
        .and_then(|l| l.signers.iter().find_map(|s| s.cert.as_ref()))
    else {
        return local_fail("the message does not carry its signer's certificate");
    };
    let text = match pem("CERTIFICATE", &cert.der) {
        Ok(t) => t,
        Err(code) => return code,
    };
    match std::fs::write(output, text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => local_fail(format!("cannot write {}: {e}", output.display())),
    }
}

/// Every address of a certificate (subject emailAddress and subjectAltName rfc822Name),
/// one per line, as `openssl x509 -noout -email` writes them.
fn cert_email(input: &Path) -> ExitCode {
    let bytes = match read(input, "the certificate") {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(der) = smime_agent::trust::certs_from_bytes(&bytes)
        .into_iter()
        .next()
    else {
        return local_fail("no certificate in the file");
    };
    let cert = match CertFacts::from_der(&der) {
        Ok(c) => c,
        Err(e) => return local_fail(format!("cannot read the certificate: {e}")),
    };
    let mut seen: Vec<String> = vec![];
    for e in cert.all_emails() {
        if !seen.iter().any(|s| s.eq_ignore_ascii_case(e)) {
            seen.push(e.to_owned());
        }
    }
    let mut out = String::new();
    for e in &seen {
        out.push_str(e);
        out.push('\n');
    }
    write_stdout(out.as_bytes())
}

fn default_dir() -> Option<PathBuf> {
    Some(smime_agent_proto::paths::data_dir()?.join("neomutt"))
}

/// One index entry: what NeoMutt may do with the key of an address.
struct Entry {
    address: String,
    sign: bool,
    encrypt: bool,
}

/// The addresses of the user's identities and token certificates (which sign and
/// decrypt), and of the contacts (encrypted to).
fn entries(socket: &Path, config: Option<&Path>) -> Result<Vec<Entry>, String> {
    let (cfg, _) = smime_agent::config::Config::load(config).map_err(|e| e.to_string())?;
    let mut list: Vec<Entry> = vec![];
    let mut add = |address: &str, sign: bool| {
        let address = address.to_ascii_lowercase();
        match list.iter_mut().find(|e| e.address == address) {
            Some(e) => e.sign |= sign,
            None => list.push(Entry {
                address,
                sign,
                encrypt: true,
            }),
        }
    };
    for i in &cfg.identity {
        add(&i.address, true);
    }
    // The agent's certificates, when it is running (else the identities stand alone).
    if let Ok(mut c) = connect(socket, false)
        && let Ok(certs) = c.list_certs(false)
    {
        for cert in &certs.certificates {
            for e in &cert.emails {
                add(e, true);
            }
        }
    }
    let contacts = smime_agent::contacts::Contacts::new(cfg.contacts.dir.clone());
    for a in contacts.addresses() {
        add(&a, false);
    }
    Ok(list)
}

fn keyring(socket: &Path, dir: Option<PathBuf>, config: Option<PathBuf>) -> ExitCode {
    let Some(dir) = dir.or_else(default_dir) else {
        return local_fail("no --dir, and neither XDG_DATA_HOME nor HOME is set");
    };
    let list = match entries(socket, config.as_deref()) {
        Ok(l) => l,
        Err(e) => return local_fail(format!("cannot read the configuration: {e}")),
    };
    // NeoMutt's index line: mailbox, key id, label, issuer id, trust, purposes. The key id
    // is the address; the issuer "?" (the agent builds chains); trust "t": the agent
    // validates every certificate it uses, whatever NeoMutt believes.
    let mut text = String::new();
    let mut unsafe_count = 0;
    for e in &list {
        if !shell_safe_address(&e.address) {
            unsafe_count += 1;
            continue;
        }
        let purposes = match (e.sign, e.encrypt) {
            (true, true) => "se",
            (true, false) => "s",
            _ => "e",
        };
        text.push_str(&format!(
            "{a} {a} {label} ? t {purposes}\n",
            a = e.address,
            label = if e.sign { "own" } else { "contact" }
        ));
    }
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(".index.tmp");
        std::fs::write(&tmp, &text)?;
        std::fs::rename(&tmp, dir.join(".index"))
    };
    if let Err(e) = write() {
        return local_fail(format!("cannot write {}/.index: {e}", dir.display()));
    }
    if unsafe_count > 0 {
        eprintln!(
            "smime-agent: left {unsafe_count} address(es) out of the index: they hold characters \
             a shell would interpret"
        );
    }
    println!("{}", dir.display());
    ExitCode::SUCCESS
}

fn default_key(socket: &Path, config: Option<PathBuf>) -> ExitCode {
    let list = match entries(socket, config.as_deref()) {
        Ok(l) => l,
        Err(e) => return local_fail(format!("cannot read the configuration: {e}")),
    };
    match list
        .iter()
        .find(|e| e.sign && shell_safe_address(&e.address))
    {
        Some(e) => {
            println!("{}", e.address);
            ExitCode::SUCCESS
        }
        None => local_fail(
            "no identity configured and no signing certificate on a token: set \
             smime_default_key to your address",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_inert_addresses_are_key_ids() {
        assert!(shell_safe_address("alice@example.org"));
        assert!(shell_safe_address("a.b+tag_x-y@mail.example.org"));
        for bad in [
            "alice",
            "@example.org",
            "alice@",
            "a@b@c",
            "$(id)@evil.example",
            "a`id`@x.example",
            "a b@x.example",
            "a;rm@x.example",
            "o'brien@x.example",
            "a@x.example\n",
        ] {
            assert!(!shell_safe_address(bad), "{bad:?}");
        }
    }

    #[test]
    fn cipher_names_follow_openssl() {
        assert_eq!(cipher_name("aes256"), "aes256-cbc");
        assert_eq!(cipher_name("AES128"), "aes128-cbc");
        assert_eq!(cipher_name("des3"), "des3");
    }
}

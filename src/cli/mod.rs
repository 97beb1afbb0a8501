//! The command line's client side: connect, ask, print. Everything real happens in the
//! agent; these functions only move bytes and talk to the person at the terminal.

mod neomutt;
mod pin;
mod serve;
mod status;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use smime_agent_proto::client::{BlockingClient, ClientError};
use smime_agent_proto::{
    CertInfo, CertificateStatus, Event, HelloParams, MessageLayer, PROTOCOL_VERSION, PinentryEnv,
    Purpose, SenderStatus, SignFormat, SignParams, SignatureStatus, SignedLayer, ValidateFor,
    ValidateParams, ValidationMode, ValidityStatus, VerifyParams, VerifyStatus, WhichParams,
};

pub use neomutt::{NeomuttCommand, run as neomutt};
pub use pin::PinArgs;
pub use serve::serve;
use status::cert_line;
pub use status::{certs, status};

/// Exit status for errors the agent reported.
const EXIT_AGENT_ERROR: u8 = 1;
/// Exit status for usage, file and connection errors.
const EXIT_LOCAL_ERROR: u8 = 2;

fn fail(e: &ClientError) -> ExitCode {
    match e {
        ClientError::Agent(body) => {
            eprintln!("smime-agent: {}: {}", body.code, body.message);
            ExitCode::from(EXIT_AGENT_ERROR)
        }
        other => {
            eprintln!("smime-agent: {other}");
            ExitCode::from(EXIT_LOCAL_ERROR)
        }
    }
}

fn local_fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("smime-agent: {msg}");
    ExitCode::from(EXIT_LOCAL_ERROR)
}

/// Where a pinentry started for us should ask: our terminal and display.
fn pinentry_env() -> PinentryEnv {
    PinentryEnv::of_this_process()
}

fn connect(socket: &Path, pin_prompt: bool) -> Result<BlockingClient, ClientError> {
    connect_with(socket, pin_prompt, false)
}

/// `pin_from_client`: the command holds the PIN (`--pin-fd`), so the agent asks it
/// whatever its PIN source (pinentry could find no terminal under a mail client's pipes).
fn connect_with(
    socket: &Path,
    pin_prompt: bool,
    pin_from_client: bool,
) -> Result<BlockingClient, ClientError> {
    BlockingClient::connect(
        socket,
        HelloParams {
            version: PROTOCOL_VERSION,
            client: Some(format!("smime-agent-cli {}", env!("CARGO_PKG_VERSION"))),
            pin_prompt,
            pin_from_client,
            pinentry: Some(pinentry_env()),
        },
    )
}

fn print_json<T: serde::Serialize>(v: &T) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => local_fail(e),
    }
}

fn read_input(input: Option<&Path>) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![];
    match input {
        Some(p) => buf = std::fs::read(p)?,
        None => {
            std::io::stdin().read_to_end(&mut buf)?;
        }
    }
    Ok(buf)
}

fn write_output(output: Option<&Path>, data: &[u8]) -> std::io::Result<()> {
    match output {
        Some(p) => std::fs::write(p, data),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(data)?;
            out.flush()
        }
    }
}

pub fn sign(
    socket: &Path,
    signer: String,
    opaque: bool,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    pin: PinArgs,
    json: bool,
) -> ExitCode {
    let content = match read_input(input.as_deref()) {
        Ok(c) => c,
        Err(e) => return local_fail(format!("cannot read the message: {e}")),
    };
    let pin_from_client = pin.given_on_fd();
    let mut answer = pin::PinAnswerer::new(pin);
    let result = connect_with(socket, true, pin_from_client).and_then(|mut c| {
        c.sign(
            SignParams {
                signer,
                content: content.into(),
                format: opaque.then_some(SignFormat::Opaque),
                ..Default::default()
            },
            &mut |ev| answer.on_event(ev),
        )
    });
    let signed = match result {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if json {
        return print_json(&signed);
    }
    if let Err(e) = write_output(output.as_deref(), &signed.mime.0) {
        return local_fail(format!("cannot write the signed message: {e}"));
    }
    eprintln!(
        "smime-agent: signed with {} (serial {}, token \"{}\"): {}",
        signed.certificate.subject,
        signed.certificate.serial,
        signed.certificate.token.label,
        signed.why
    );
    ExitCode::SUCCESS
}

pub fn reload(socket: &Path, json: bool) -> ExitCode {
    let r = match connect(socket, false).and_then(|mut c| c.reload()) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if json {
        return print_json(&r);
    }
    println!(
        "reloaded {}",
        r.config
            .as_deref()
            .unwrap_or("(no configuration file: the defaults)")
    );
    if !r.restart_needed.is_empty() {
        println!(
            "changed, and applied only when the agent restarts: {}",
            r.restart_needed.join(", ")
        );
    }
    ExitCode::SUCCESS
}

pub fn watch(socket: &Path, json: bool) -> ExitCode {
    let mut client = match connect(socket, false) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Err(e) = client.subscribe() {
        return fail(&e);
    }
    let mut out = std::io::stdout();
    loop {
        let ev = match client.next_event() {
            Ok(ev) => ev,
            Err(ClientError::Closed) => {
                eprintln!("smime-agent: the agent stopped");
                return ExitCode::SUCCESS;
            }
            Err(e) => return fail(&e),
        };
        let line = if json {
            serde_json::to_string(&ev).unwrap_or_default()
        } else {
            event_line(&ev)
        };
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            // The reader of our output went away (e.g. `| head`).
            return ExitCode::SUCCESS;
        }
    }
}

fn event_line(ev: &Event) -> String {
    match ev {
        Event::TokenInserted(t) => format!(
            "token_inserted \"{}\" serial {} ({}{}) {} certificate(s){}",
            t.token.label,
            t.token.serial,
            if t.hardware { "hardware" } else { "software" },
            if t.removable { ", removable" } else { "" },
            t.certificates,
            if t.slot.is_empty() {
                String::new()
            } else {
                format!(" in {}", t.slot)
            }
        ),
        Event::TokenRemoved(t) => format!(
            "token_removed \"{}\" serial {}",
            t.token.label, t.token.serial
        ),
        Event::ReaderAdded(r) => format!("reader_added \"{}\"", r.reader),
        Event::ReaderRemoved(r) => format!("reader_removed \"{}\"", r.reader),
        Event::PinNeeded(p) => format!("pin_needed \"{}\"", p.token.label),
        Event::ValidationDone(v) => format!("validation_done {:?}", v.status),
    }
}

pub fn rescan(socket: &Path, json: bool) -> ExitCode {
    let r = match connect(socket, false).and_then(|mut c| c.rescan()) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if json {
        return print_json(&r);
    }
    for t in &r.inserted {
        println!("inserted \"{}\" serial {}", t.label, t.serial);
    }
    for t in &r.removed {
        println!("removed \"{}\" serial {}", t.label, t.serial);
    }
    for s in &r.skipped {
        println!("skipped {s}");
    }
    if r.inserted.is_empty() && r.removed.is_empty() {
        println!("no change");
    }
    ExitCode::SUCCESS
}

pub fn forget(socket: &Path, json: bool) -> ExitCode {
    match connect(socket, false).and_then(|mut c| c.forget()) {
        Ok(r) if json => print_json(&r),
        Ok(r) => {
            println!("forgot the PINs of {} token(s)", r.tokens.len());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// What `validate` asks beyond the certificate and what builds its path.
pub struct ValidateAsk<'a> {
    /// The validation time; now when `None`.
    pub at: Option<String>,
    /// The address the certificate must carry.
    pub address: Option<String>,
    /// `sign`, `encrypt` or `path`; either use when `None`.
    pub fitness: Option<&'a str>,
}

pub fn validate(
    socket: &Path,
    file: &Path,
    chain: &[PathBuf],
    crls: &[PathBuf],
    ask: ValidateAsk<'_>,
    json: bool,
) -> ExitCode {
    let ValidateAsk {
        at,
        address,
        fitness,
    } = ask;
    let fitness = match fitness {
        None => None,
        Some("sign") => Some(ValidateFor::Sign),
        Some("encrypt") => Some(ValidateFor::Encrypt),
        Some("path") => Some(ValidateFor::Path),
        Some(other) => {
            return local_fail(format!(
                "--for {other}: say sign, encrypt or path (the path alone, without the S/MIME profile)"
            ));
        }
    };
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
    let certificate = match read(file) {
        Ok(c) => c,
        Err(e) => return local_fail(e),
    };
    let mut chain_bytes = vec![];
    for p in chain {
        match read(p) {
            Ok(c) => chain_bytes.push(c.into()),
            Err(e) => return local_fail(e),
        }
    }
    let mut crl_bytes = vec![];
    for p in crls {
        match read(p) {
            Ok(c) => crl_bytes.push(crl_der(c).into()),
            Err(e) => return local_fail(e),
        }
    }
    let params = ValidateParams {
        certificate: certificate.into(),
        chain: chain_bytes,
        crls: crl_bytes,
        time: at,
        policy: None,
        address,
        fitness,
    };
    let r = match connect(socket, false).and_then(|mut c| c.validate(params)) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let valid = r.status == ValidityStatus::Valid;
    if json {
        let code = print_json(&r);
        if code != ExitCode::SUCCESS {
            return code;
        }
    } else {
        let subject = r
            .chain
            .first()
            .map(|c| c.subject.as_str())
            .unwrap_or("the certificate");
        println!(
            "{}: {subject} (as of {})",
            if valid { "valid" } else { "INVALID" },
            r.time
        );
        for reason in &r.reasons {
            println!("  reason ({}): {}", reason.code, reason.message);
        }
        for w in &r.warnings {
            println!("  warning: {w}");
        }
        println!("chain:");
        for c in &r.chain {
            println!(
                "  {} | serial {} | {} .. {} | {}",
                c.subject, c.serial, c.not_before, c.not_after, c.source
            );
        }
        println!("revocation: {}", r.revocation.status);
        for c in &r.revocation.checks {
            let mut line = format!("  {}: {}", c.subject, c.status);
            if let Some(i) = &c.crl_issuer {
                line.push_str(&format!(" | CRL of {i}"));
            } else if let (Some("ocsp"), Some(u)) = (c.method.as_deref(), &c.url) {
                line.push_str(&format!(" | OCSP {u}"));
            }
            if let Some(n) = &c.next_update {
                line.push_str(&format!(" until {n}"));
            }
            if let Some(s) = &c.source {
                line.push_str(&format!(" ({s})"));
            }
            if let Some(r) = &c.reason {
                line.push_str(&format!(" | {r}"));
            }
            println!("{line}");
        }
    }
    if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_AGENT_ERROR)
    }
}

/// A CRL file as DER (PEM files are decoded).
fn crl_der(bytes: Vec<u8>) -> Vec<u8> {
    if !bytes.windows(10).any(|w| w == b"-----BEGIN") {
        return bytes;
    }
    smime_agent::trust::crl::pem_to_der(&bytes).unwrap_or(bytes)
}

pub fn which(socket: &Path, address: String, purpose: &str, json: bool) -> ExitCode {
    let purpose = match purpose {
        "sign" => Purpose::Sign,
        "encrypt" => Purpose::Encrypt,
        _ => Purpose::Decrypt,
    };
    let r = match connect(socket, false).and_then(|mut c| c.which(WhichParams { address, purpose }))
    {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if json {
        let code = print_json(&r);
        if code != ExitCode::SUCCESS {
            return code;
        }
    } else {
        println!("{} for {}:", r.address, r.purpose.as_str());
        if r.candidates.is_empty() {
            println!("  no certificate of a present token matches the address");
        }
        for c in &r.candidates {
            println!(
                "  [{}] {} (by {}) | token \"{}\"",
                c.status,
                cert_line(&c.certificate),
                c.matched_by,
                c.certificate.token.label
            );
        }
        match &r.chosen {
            Some(c) => {
                println!(
                    "chosen: {} | serial {} | token \"{}\"",
                    c.subject, c.serial, c.token.label
                );
                println!("  why: {}", c.why);
                for w in &c.warnings {
                    println!("  warning: {w}");
                }
            }
            None => println!("chosen: none"),
        }
        if !r.rejected.is_empty() {
            println!("rejected:");
        }
        for x in &r.rejected {
            println!(
                "  {} | serial {} | token \"{}\": {} ({})",
                x.subject, x.serial, x.token.label, x.reason, x.code
            );
        }
        if let Some(rc) = &r.recipient {
            println!("as a recipient:");
            for f in &rc.found {
                let list = f
                    .list
                    .as_ref()
                    .map(|l| format!(" | member of {l}"))
                    .unwrap_or_default();
                println!(
                    "  {}: {} | serial {} | source {}{list}",
                    f.address, f.subject, f.serial, f.source
                );
            }
            for m in &rc.without_certificate {
                println!("  {}: no usable certificate: {}", m.address, m.reason);
            }
        }
    }
    let as_recipient = r
        .recipient
        .as_ref()
        .is_some_and(|rc| !rc.found.is_empty() && rc.without_certificate.is_empty());
    if r.chosen.is_some() || as_recipient {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_AGENT_ERROR)
    }
}

fn read_cert_files(files: &[PathBuf]) -> Result<Vec<smime_agent_proto::Base64Bytes>, String> {
    let mut out = vec![];
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        let ders = smime_agent::trust::certs_from_bytes(&bytes);
        if ders.is_empty() {
            return Err(format!("{}: no certificate in it", f.display()));
        }
        out.extend(ders.into_iter().map(Into::into));
    }
    Ok(out)
}

pub struct ComposeArgs {
    pub sign: bool,
    pub encrypt: bool,
    pub allow_unencrypted: bool,
    pub certs: Vec<PathBuf>,
    pub input: Option<PathBuf>,
    pub output: Option<PathBuf>,
}

pub fn compose(socket: &Path, a: ComposeArgs, pin: PinArgs, json: bool) -> ExitCode {
    let content = match read_input(a.input.as_deref()) {
        Ok(c) => c,
        Err(e) => return local_fail(format!("cannot read the message: {e}")),
    };
    let certificates = match read_cert_files(&a.certs) {
        Ok(c) => c,
        Err(e) => return local_fail(e),
    };
    let pin_from_client = pin.given_on_fd();
    let mut answer = pin::PinAnswerer::new(pin);
    let result = connect_with(socket, true, pin_from_client).and_then(|mut c| {
        c.compose(
            smime_agent_proto::ComposeParams {
                content: content.into(),
                sign: a.sign,
                encrypt: a.encrypt,
                allow_unencrypted: a.allow_unencrypted,
                certificates,
            },
            &mut |ev| answer.on_event(ev),
        )
    });
    let r = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if json {
        return print_json(&r);
    }
    if r.messages.len() > 1 && a.output.is_none() {
        return local_fail(format!(
            "the message became {} messages (one per Bcc recipient); write them with --out FILE",
            r.messages.len()
        ));
    }
    for (i, m) in r.messages.iter().enumerate() {
        let path = a.output.as_ref().map(|o| {
            if i == 0 {
                o.clone()
            } else {
                PathBuf::from(format!("{}.{i}", o.display()))
            }
        });
        if let Err(e) = write_output(path.as_deref(), &m.mime.0) {
            return local_fail(format!("cannot write the message: {e}"));
        }
        if let Some(p) = &path {
            eprintln!(
                "smime-agent: {} for {}",
                p.display(),
                m.recipients.join(", ")
            );
        }
    }
    for w in &r.warnings {
        eprintln!("smime-agent: warning: {w}");
    }
    eprintln!(
        "smime-agent: {}{}{}",
        if r.signed { "signed" } else { "not signed" },
        if r.encrypted {
            ", encrypted"
        } else {
            ", not encrypted"
        },
        if r.triple_wrapped {
            " (triple-wrapped)"
        } else {
            ""
        }
    );
    ExitCode::SUCCESS
}

pub fn encrypt(
    socket: &Path,
    to: Vec<String>,
    cert_files: Vec<PathBuf>,
    from: Option<String>,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    json: bool,
) -> ExitCode {
    let content = match read_input(input.as_deref()) {
        Ok(c) => c,
        Err(e) => return local_fail(format!("cannot read the message: {e}")),
    };
    let certificates = match read_cert_files(&cert_files) {
        Ok(c) => c,
        Err(e) => return local_fail(e),
    };
    let result = connect(socket, false).and_then(|mut c| {
        c.encrypt(smime_agent_proto::EncryptParams {
            recipients: to,
            certificates,
            sender: from,
            content: content.into(),
            ..Default::default()
        })
    });
    let r = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if json {
        return print_json(&r);
    }
    if let Err(e) = write_output(output.as_deref(), &r.mime.0) {
        return local_fail(format!("cannot write the encrypted message: {e}"));
    }
    for w in &r.warnings {
        eprintln!("smime-agent: warning: {w}");
    }
    let to: Vec<String> = r
        .recipients
        .iter()
        .map(|x| format!("{} ({}, {})", x.address, x.source, x.key_transport))
        .collect();
    eprintln!(
        "smime-agent: encrypted with {} for {}",
        r.algorithm,
        to.join(", ")
    );
    ExitCode::SUCCESS
}

pub fn decrypt(
    socket: &Path,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    pin: PinArgs,
    json: bool,
) -> ExitCode {
    let content = match read_input(input.as_deref()) {
        Ok(c) => c,
        Err(e) => return local_fail(format!("cannot read the message: {e}")),
    };
    let pin_from_client = pin.given_on_fd();
    let mut answer = pin::PinAnswerer::new(pin);
    let result = connect_with(socket, true, pin_from_client).and_then(|mut c| {
        c.decrypt(
            smime_agent_proto::DecryptParams {
                content: content.into(),
                ..Default::default()
            },
            &mut |ev| answer.on_event(ev),
        )
    });
    let r = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if json {
        // The exit status says whether the signatures inside hold, as without --json.
        let code = print_json(&r);
        return match r.signatures {
            Some(status) if status != VerifyStatus::Valid => ExitCode::from(EXIT_AGENT_ERROR),
            _ => code,
        };
    }
    if let Err(e) = write_output(output.as_deref(), &r.mime.0) {
        return local_fail(format!("cannot write the decrypted message: {e}"));
    }
    eprintln!(
        "smime-agent: decrypted with the key of {} (serial {}, token \"{}\"){}",
        r.certificate.subject,
        r.certificate.serial,
        r.certificate.token.label,
        if r.authenticated {
            ""
        } else {
            "; the content is not integrity-protected (AES-CBC): trust it only if it is signed"
        }
    );
    // A signed message (triple-wrapped, or signed then encrypted): its signatures too, and
    // the exit status says whether they hold, as `verify`'s does.
    let signed: Vec<SignedLayer> = r
        .layers
        .iter()
        .filter_map(|l| match l {
            MessageLayer::Signed(s) => Some(s.clone()),
            MessageLayer::Encrypted(_) => None,
        })
        .collect();
    match r.signatures {
        None => ExitCode::SUCCESS,
        Some(status) => {
            for line in verify_summary(&signed, status) {
                eprintln!("smime-agent: {line}");
            }
            if status == VerifyStatus::Valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_AGENT_ERROR)
            }
        }
    }
}

/// `verify`: exit 0 only when every signature and every signer certificate is valid. The
/// signed content goes to `output` (stdout without `--json`) when every signature is valid,
/// whatever the certificates' status: the content is then exactly what was signed.
pub fn verify(
    socket: &Path,
    input: Option<PathBuf>,
    output: Option<PathBuf>,
    json: bool,
) -> ExitCode {
    let content = match read_input(input.as_deref()) {
        Ok(c) => c,
        Err(e) => return local_fail(format!("cannot read the message: {e}")),
    };
    let params = VerifyParams {
        content: content.into(),
        validation: ValidationMode::Wait,
        ..Default::default()
    };
    let r = match connect(socket, false).and_then(|mut c| c.verify(params)) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let signatures_valid = r
        .layers
        .iter()
        .flat_map(|l| &l.signers)
        .all(|s| s.signature.status == SignatureStatus::Valid);
    if signatures_valid
        && (output.is_some() || !json)
        && let Err(e) = write_output(output.as_deref(), &r.content.0)
    {
        return local_fail(format!("cannot write the signed content: {e}"));
    }
    if json {
        let code = print_json(&r);
        if code != ExitCode::SUCCESS {
            return code;
        }
    } else {
        for line in verify_summary(&r.layers, r.status) {
            eprintln!("smime-agent: {line}");
        }
    }
    if r.status == VerifyStatus::Valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_AGENT_ERROR)
    }
}

/// The person's view of signed layers (a `verify` result, the signed layers `decrypt`
/// read): one line per signer, then the verdict.
fn verify_summary(layers: &[SignedLayer], status: VerifyStatus) -> Vec<String> {
    let mut lines = vec![];
    let mut first_problem: Option<String> = None;
    let several_layers = layers.len() > 1;
    for (n, layer) in layers.iter().enumerate() {
        for s in &layer.signers {
            let who = match &s.signer {
                Some(c) if !c.emails.is_empty() => {
                    format!(
                        "{} <{}> (serial {})",
                        c.subject,
                        c.emails.join(", "),
                        c.serial
                    )
                }
                Some(c) => format!("{} (serial {})", c.subject, c.serial),
                None => s.signer_id.clone(),
            };
            let place = if several_layers {
                format!("layer {}, signer {}", n + 1, s.index + 1)
            } else {
                format!("signer {}", s.index + 1)
            };
            let signature = match s.signature.status {
                SignatureStatus::Valid => "good signature".to_owned(),
                SignatureStatus::Invalid => {
                    let why = format!(
                        "{}: {}",
                        s.signature.code.as_deref().unwrap_or("invalid"),
                        s.signature.reason.as_deref().unwrap_or("")
                    );
                    first_problem.get_or_insert_with(|| format!("{place}: {why}"));
                    format!("BAD SIGNATURE ({why})")
                }
            };
            let reasons = || {
                s.certificate
                    .reasons
                    .iter()
                    .map(|r| format!("{}: {}", r.code, r.message))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let certificate = match s.certificate.status {
                CertificateStatus::Valid => "certificate valid".to_owned(),
                CertificateStatus::Pending => "certificate not validated yet".to_owned(),
                CertificateStatus::Invalid | CertificateStatus::Unknown => {
                    let what = if s.certificate.status == CertificateStatus::Invalid {
                        "CERTIFICATE INVALID"
                    } else {
                        "CERTIFICATE UNKNOWN"
                    };
                    first_problem.get_or_insert_with(|| format!("{place}: {}", reasons()));
                    format!("{what} ({})", reasons())
                }
            };
            let when = s
                .signing_time
                .as_deref()
                .map(|t| format!(", signed {t}"))
                .unwrap_or_default();
            lines.push(format!(
                "{place}: {signature} from {who}{when} ({}, {}); {certificate}",
                s.signature_algorithm, s.digest_algorithm
            ));
            for w in s.warnings.iter().chain(&s.certificate.warnings) {
                lines.push(format!("  warning: {w}"));
            }
            if let Some(m) = &s.sender {
                let cert_has = match &s.signer {
                    Some(c) if !c.emails.is_empty() => c.emails.join(", "),
                    Some(_) => "no address".to_owned(),
                    None => "(no certificate)".to_owned(),
                };
                let expected = if m.addresses.is_empty() {
                    "(no readable address)".to_owned()
                } else {
                    m.addresses.join(", ")
                };
                match m.status {
                    SenderStatus::Match => lines.push(format!(
                        "  sender: {} matches the certificate",
                        m.matched.as_deref().unwrap_or(&expected)
                    )),
                    SenderStatus::Mismatch => {
                        let line = format!(
                            "SENDER MISMATCH: the message is from {expected}, the certificate has {cert_has}"
                        );
                        lines.push(format!("  {line}"));
                        if !layer.signers.iter().any(|o| {
                            o.sender
                                .as_ref()
                                .is_some_and(|m| m.status == SenderStatus::Match)
                        }) {
                            first_problem.get_or_insert_with(|| format!("{place}: {line}"));
                        }
                    }
                }
            }
        }
    }
    lines.push(match (status, first_problem) {
        (VerifyStatus::Valid, _) => {
            "verified: every signature and every signer's certificate is valid".to_owned()
        }
        (_, Some(p)) => format!("NOT verified: {p}"),
        (_, None) => "NOT verified".to_owned(),
    });
    lines
}

pub fn config(defaults: bool, path: Option<PathBuf>) -> ExitCode {
    if defaults {
        print!("{}", smime_agent::config::DEFAULT_CONFIG_TOML);
        return ExitCode::SUCCESS;
    }
    match smime_agent::config::Config::load(path.as_deref()) {
        Ok((_, Some(p))) => {
            println!("{}: ok", p.display());
            ExitCode::SUCCESS
        }
        Ok((_, None)) => {
            println!("no configuration file; the defaults apply");
            ExitCode::SUCCESS
        }
        Err(e) => local_fail(e),
    }
}

//! Asking a person for a PIN through a pinentry program (the Assuan protocol).
//!
//! Owns: running the configured pinentry, telling it where to ask (the client's terminal or
//! display, as gpg-agent does with `OPTION ttyname=`...), what to say (`SETTITLE`,
//! `SETDESC`, `SETPROMPT`, `SETERROR`) and reading the PIN (`GETPIN`); and, for a PIN-pad
//! reader, a notice (`MESSAGE`) that stays up while the reader waits for the PIN. Written by hand:
//! the Assuan subset a pinentry speaks is a dozen lines of text, and no maintained crate
//! offers it as a client.

use std::process::Stdio;
use std::time::Duration;

use smime_agent_proto::{PinRetries, PinentryEnv};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use zeroize::Zeroizing;

use super::pin::{Notice, PinError, PinRequest, SecretPin};

/// Longest line read from pinentry (a PIN of 255 bytes, percent-escaped, fits).
const MAX_LINE: u64 = 4096;

/// Assuan's error code for "Operation cancelled" (GPG_ERR_CANCELED with source pinentry).
const ERR_CANCELED: u32 = 99;

/// Runs `program` and asks it for the PIN described by `req`.
pub async fn ask(
    program: &str,
    env: &PinentryEnv,
    req: &PinRequest,
    timeout: Duration,
) -> Result<SecretPin, PinError> {
    let mut child = spawn(program)?;
    let result = tokio::time::timeout(timeout, converse(&mut child, env, req, timeout)).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    match result {
        Ok(r) => r,
        Err(_) => Err(PinError::Timeout(timeout.as_secs())),
    }
}

/// Runs `program` to show `req`'s "type it on the reader" notice until the returned
/// [`Notice`] is dropped or `timeout` passes.
pub fn notice(
    program: &str,
    env: &PinentryEnv,
    req: &PinRequest,
    timeout: Duration,
) -> Result<Notice, PinError> {
    let mut child = spawn(program)?;
    let env = env.clone();
    let text = format!(
        "{} Type it on the reader's keypad now.",
        req.description()
            .replacen("Please enter the PIN", "The PIN is needed", 1)
    );
    let task = tokio::spawn(async move {
        let _ = tokio::time::timeout(timeout, show_message(&mut child, &env, &text, timeout)).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
    });
    // Aborted, the task drops the child, which kills it (kill_on_drop) and lets tokio reap it.
    Ok(Notice::new(task.abort_handle()))
}

fn spawn(program: &str) -> Result<Child, PinError> {
    Command::new(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| PinError::Unavailable(format!("cannot run pinentry {program:?}: {e}")))
}

struct Assuan {
    tx: ChildStdin,
    rx: BufReader<ChildStdout>,
}

/// One reply: the data lines (decoded) and the final OK, or the ERR code and text.
enum Reply {
    Ok(Zeroizing<Vec<u8>>),
    Err(u32, String),
}

impl Assuan {
    async fn read_line(&mut self) -> Result<Zeroizing<Vec<u8>>, PinError> {
        // Room for the longest line up front: a buffer that grew would leave freed, unwiped
        // copies of a PIN behind.
        let mut line = Zeroizing::new(Vec::with_capacity(MAX_LINE as usize));
        let n = (&mut self.rx)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| PinError::Unavailable(format!("pinentry: {e}")))?;
        if n == 0 {
            return Err(PinError::Unavailable("pinentry exited".into()));
        }
        if line.last() != Some(&b'\n') {
            return Err(PinError::Unavailable(
                "pinentry sent an overlong line".into(),
            ));
        }
        line.pop();
        Ok(line)
    }

    async fn command(&mut self, cmd: &str) -> Result<Reply, PinError> {
        self.tx
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| PinError::Unavailable(format!("pinentry: {e}")))?;
        self.tx
            .flush()
            .await
            .map_err(|e| PinError::Unavailable(format!("pinentry: {e}")))?;
        self.reply().await
    }

    async fn reply(&mut self) -> Result<Reply, PinError> {
        // As for lines: allocated once, never grown (data past it is refused).
        let mut data = Zeroizing::new(Vec::with_capacity(MAX_LINE as usize));
        loop {
            let line = self.read_line().await?;
            if line.as_slice() == b"OK" || line.starts_with(b"OK ") {
                return Ok(Reply::Ok(data));
            }
            if let Some(rest) = line.strip_prefix(b"D ") {
                if data.len() + rest.len() > MAX_LINE as usize {
                    return Err(PinError::Unavailable(
                        "pinentry sent more data than a PIN".into(),
                    ));
                }
                percent_decode_into(rest, &mut data);
                continue;
            }
            if let Some(rest) = line.strip_prefix(b"ERR ") {
                let text = String::from_utf8_lossy(rest).into_owned();
                let code: u32 = text
                    .split_whitespace()
                    .next()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return Ok(Reply::Err(code & 0xFFFF, text));
            }
            // S (status), # (comment) and INQUIRE lines: nothing to do for a pinentry.
            if line.starts_with(b"INQUIRE") {
                self.tx
                    .write_all(b"CAN\n")
                    .await
                    .map_err(|e| PinError::Unavailable(format!("pinentry: {e}")))?;
            }
        }
    }

    /// A setting command whose failure is not fatal (older pinentries lack some options).
    async fn set(&mut self, cmd: &str) -> Result<(), PinError> {
        match self.command(cmd).await? {
            Reply::Ok(_) => Ok(()),
            Reply::Err(code, _) if code == ERR_CANCELED => Err(PinError::Cancelled),
            Reply::Err(..) => Ok(()),
        }
    }
}

/// Connects to a started pinentry: its greeting, where to show itself, the timeout, the
/// title and `description`.
async fn open(
    child: &mut Child,
    env: &PinentryEnv,
    description: &str,
    timeout: Duration,
) -> Result<Assuan, PinError> {
    let (Some(tx), Some(rx)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(PinError::Unavailable("pinentry has no pipes".into()));
    };
    let mut a = Assuan {
        tx,
        rx: BufReader::new(rx),
    };
    match a.reply().await? {
        Reply::Ok(_) => {}
        Reply::Err(_, t) => return Err(PinError::Unavailable(format!("pinentry: {t}"))),
    }
    if let Some(t) = &env.ttyname {
        a.set(&format!("OPTION ttyname={}", escape(t))).await?;
    }
    if let Some(t) = &env.ttytype {
        a.set(&format!("OPTION ttytype={}", escape(t))).await?;
    }
    if let Some(d) = &env.display {
        a.set(&format!("OPTION display={}", escape(d))).await?;
    }
    a.set(&format!("SETTIMEOUT {}", timeout.as_secs())).await?;
    a.set("SETTITLE smime-agent").await?;
    a.set(&format!("SETDESC {}", escape(description))).await?;
    Ok(a)
}

/// Shows `text` until the person dismisses it (or the caller drops this future).
async fn show_message(
    child: &mut Child,
    env: &PinentryEnv,
    text: &str,
    timeout: Duration,
) -> Result<(), PinError> {
    let mut a = open(child, env, text, timeout).await?;
    a.set("MESSAGE").await?;
    let _ = a.command("BYE").await;
    Ok(())
}

async fn converse(
    child: &mut Child,
    env: &PinentryEnv,
    req: &PinRequest,
    timeout: Duration,
) -> Result<SecretPin, PinError> {
    let mut a = open(child, env, &req.description(), timeout).await?;
    a.set("SETPROMPT PIN:").await?;
    match req.retries {
        PinRetries::FinalTry => {
            a.set("SETERROR Last try: a wrong PIN locks the token")
                .await?
        }
        PinRetries::Low => a.set("SETERROR Few tries left").await?,
        _ => {}
    }
    let pin = match a.command("GETPIN").await? {
        Reply::Ok(data) => data,
        Reply::Err(code, _) if code == ERR_CANCELED => return Err(PinError::Cancelled),
        Reply::Err(_, text) => return Err(PinError::Unavailable(format!("pinentry: {text}"))),
    };
    let _ = a.command("BYE").await;
    if pin.is_empty() {
        return Err(PinError::Cancelled);
    }
    SecretPin::new(&pin).ok_or_else(|| {
        PinError::Unavailable("the PIN is longer than 255 bytes or contains NUL".into())
    })
}

/// Assuan escapes `%`, CR and LF in arguments and data as `%XX`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

fn percent_decode_into(src: &[u8], out: &mut Vec<u8>) {
    let hexval = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut i = 0;
    while i < src.len() {
        if src[i] == b'%'
            && i + 2 < src.len()
            && let (Some(h), Some(l)) = (hexval(src[i + 1]), hexval(src[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(src[i]);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_decodes() {
        assert_eq!(escape("50% of\nlines"), "50%25 of%0Alines");
        let mut out = vec![];
        percent_decode_into(b"12%2534%0A%zz%", &mut out);
        assert_eq!(out, b"12%34\n%zz%");
    }
}

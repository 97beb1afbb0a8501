//! The bytes a server may send on one connection, bounded before ldap3 sees them.
//!
//! ldap3 reads each LDAP message whole before handing it on, so a hostile server could make
//! the agent hold one endless attribute value in memory for as long as the search timeout
//! lets it send. Here the agent connects to the server itself and hands ldap3 one end of a
//! private loopback connection; a task copies between the two and closes both once the
//! server has sent more than the budget (TLS, when the URL asks for it, runs in ldap3 over
//! this, so the budget counts the bytes on the wire).
//!
//! Owns: the relay and its budget. Must not touch: LDAP itself (the directory and LDAP
//! distribution points use it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Whether a relay's budget was used up (the connection then ended).
#[derive(Debug, Clone, Default)]
pub struct Overrun(Arc<AtomicBool>);

impl Overrun {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Connects to `host:port` and returns the loopback end for ldap3, with the flag its relay
/// sets when the server sends more than `budget` bytes.
pub async fn connect(
    host: &str,
    port: u16,
    budget: u64,
) -> std::io::Result<(std::net::TcpStream, Overrun)> {
    let server = TcpStream::connect((host, port)).await?;
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let ours = TcpStream::connect(listener.local_addr()?).await?;
    let expected = ours.local_addr()?;
    // Only our own connection is taken: another local process that got in first is dropped.
    let theirs = loop {
        let (s, peer) = listener.accept().await?;
        if peer == expected {
            break s;
        }
    };
    drop(listener);
    let overrun = Overrun::default();
    tokio::spawn(pump(server, theirs, budget, overrun.clone()));
    Ok((ours.into_std()?, overrun))
}

/// Copies both ways until either side ends or the server passes the budget.
async fn pump(server: TcpStream, local: TcpStream, budget: u64, overrun: Overrun) {
    let (mut from_server, mut to_server) = server.into_split();
    let (mut from_local, mut to_local) = local.into_split();
    let up = tokio::io::copy(&mut from_local, &mut to_server);
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0u64;
        loop {
            let n = from_server.read(&mut buf).await?;
            if n == 0 {
                return to_local.shutdown().await;
            }
            total += n as u64;
            if total > budget {
                overrun.0.store(true, Ordering::Relaxed);
                return Ok(());
            }
            to_local.write_all(&buf[..n]).await?;
        }
    };
    // Whichever side ends first ends both: dropping the halves closes the sockets.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

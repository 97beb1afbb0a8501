//! `smime-agent serve`: run the agent, in the foreground or in the background.
//!
//! In the background the command starts itself again (`--foreground --daemon-child`) in a
//! new session with its log going to a file, waits until the child says its socket is
//! ready, prints the socket line and returns, as ssh-agent does. Re-executing avoids
//! forking a process that may already run threads.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::process::{Command, ExitCode, Stdio};

use smime_agent::agent;
use smime_agent::config::Config;

use crate::ServeArgs;

pub fn serve(args: ServeArgs) -> ExitCode {
    let (config, config_path) = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smime-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let socket = agent::socket_path(args.socket.as_deref(), &config);
    if !args.foreground {
        return spawn_background(&args, &config_path, &socket);
    }
    agent::init_logging(&config);
    let daemon_child = args.daemon_child;
    let result = agent::run(config, config_path, socket, move |path| {
        let mut out = std::io::stdout().lock();
        let _ = agent::print_socket_env(&mut out, path);
        drop(out);
        if daemon_child {
            // The parent reads until end of file: close our end now.
            smime_agent::sys::close_stdout();
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("smime-agent: {e}");
            ExitCode::from(1)
        }
    }
}

fn spawn_background(
    args: &ServeArgs,
    config_path: &Option<std::path::PathBuf>,
    socket: &std::path::Path,
) -> ExitCode {
    let log_path = args
        .log_file
        .clone()
        .unwrap_or_else(|| socket.with_file_name("agent.log"));
    if let Err(e) = smime_agent::server::prepare_socket_path(socket) {
        eprintln!("smime-agent: {e}");
        return ExitCode::from(1);
    }
    // Private whatever the umask: the log names the user's certificates and programs.
    let log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "smime-agent: cannot open the log {}: {e}",
                log_path.display()
            );
            return ExitCode::from(1);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("smime-agent: cannot find my own executable: {e}");
            return ExitCode::from(1);
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--foreground")
        .arg("--daemon-child")
        .arg("--socket")
        .arg(socket);
    if let Some(c) = config_path {
        cmd.arg("--config").arg(c);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
    smime_agent::sys::in_new_session(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("smime-agent: cannot start the agent: {e}");
            return ExitCode::from(1);
        }
    };
    let mut printed = false;
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout().lock();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = writeln!(stdout, "{line}");
            printed = true;
        }
        let _ = stdout.flush();
    }
    if printed {
        return ExitCode::SUCCESS;
    }
    let _ = child.wait();
    eprintln!(
        "smime-agent: the agent did not start; see {}",
        log_path.display()
    );
    ExitCode::from(1)
}

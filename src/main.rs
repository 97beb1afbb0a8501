//! The `smime-agent` command: `serve` runs the agent; the other subcommands are thin
//! clients of a running agent (see `cli/`).

#![deny(unsafe_code)]

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "smime-agent",
    version,
    about = "Smart card / PKCS#11 S/MIME agent: signs mail with keys that never leave their token",
    long_about = "Smart card / PKCS#11 S/MIME agent.\n\n\
        `smime-agent serve` runs the agent; the other commands talk to it over its socket \
        (SMIME_AGENT_SOCK, else the default path). Configuration: \
        $XDG_CONFIG_HOME/smime-agent/config.toml (see `smime-agent config --defaults`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent (in the background unless --foreground).
    Serve(ServeArgs),
    /// Show the agent, its modules, tokens and certificates.
    Status {
        /// Print the agent's JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// List the certificates of the keys on present tokens.
    Certs {
        /// Print the agent's JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Sign a MIME entity (headers, empty line, body) as ADDRESS.
    Sign {
        /// Print the agent's answer as JSON on stdout (the message in it, base64) and
        /// write nothing else.
        #[arg(long)]
        json: bool,
        /// The signer's e-mail address.
        #[arg(long, value_name = "ADDRESS")]
        signer: String,
        /// Opaque signature (application/pkcs7-mime) instead of multipart/signed.
        #[arg(long)]
        opaque: bool,
        /// Read the MIME entity from FILE instead of stdin.
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// Write the signed entity to FILE instead of stdout.
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        pin: cli::PinArgs,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Verify a signed message (multipart/signed or application/pkcs7-mime): every
    /// signature and each signer's certificate. Exits 0 only when all are valid; the signed
    /// content goes to --out (stdout without --json) when every signature is valid.
    Verify {
        /// Read the signed message from FILE instead of stdin.
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// Write the signed content to FILE instead of stdout.
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Print the agent's JSON answer on stdout (the summary is not printed).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Print token and reader events as they happen (card inserted, removed, ...).
    Watch {
        /// One JSON event per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Look for tokens now (re-initializing modules that cannot report new ones).
    Rescan {
        /// Print the agent's JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Validate a certificate (chain to a trusted root, validity, revocation). Exits 0 only
    /// when it is valid.
    Validate {
        /// The certificate, PEM or DER.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Intermediate certificates to build the chain with (PEM, any number in one file).
        #[arg(long, value_name = "FILE")]
        chain: Vec<PathBuf>,
        /// CRLs to use before fetching any (DER or PEM).
        #[arg(long, value_name = "FILE")]
        crl: Vec<PathBuf>,
        /// Validation time, RFC 3339 UTC (2024-05-01T12:00:00Z) or a date; default now.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// The certificate must carry this mail address.
        #[arg(long, value_name = "A")]
        address: Option<String>,
        /// What it must be fit for: sign, encrypt (default: either), or path (RFC 5280
        /// path validation alone, without the S/MIME profile).
        #[arg(long = "for", value_name = "USE", value_parser = ["sign", "encrypt", "path"])]
        fitness: Option<String>,
        /// Print the agent's JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Show which certificate the agent would use for an address, and why; every candidate
    /// and the reason each rejected one was rejected; with --for encrypt, also the address
    /// as a recipient (contacts, directory, lists) and the source of each certificate. Exits
    /// 0 when one would be used.
    Which {
        /// The e-mail address.
        #[arg(long, value_name = "A")]
        address: String,
        /// The operation.
        #[arg(long = "for", value_name = "OP", value_parser = ["sign", "encrypt", "decrypt"])]
        purpose: String,
        /// Print the agent's JSON answer.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Wipe every cached PIN and log every token out.
    Forget {
        /// Print the agent's answer as JSON on stdout (the message in it, base64) and
        /// write nothing else.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Encrypt a MIME entity to recipients (and to the sender, who must be able to read it).
    Encrypt {
        /// Print the agent's answer as JSON on stdout (the message in it, base64) and
        /// write nothing else.
        #[arg(long)]
        json: bool,
        /// A recipient's address (repeat for each).
        #[arg(long = "to", value_name = "ADDRESS", required = true)]
        to: Vec<String>,
        /// A recipient certificate file, PEM or DER (repeat; looked at before the contacts).
        #[arg(long = "cert", value_name = "FILE")]
        certs: Vec<PathBuf>,
        /// The sender's address (default: the first [[identity]] of the configuration).
        #[arg(long, value_name = "ADDRESS")]
        from: Option<String>,
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Turn a complete message (From, To, Cc, Bcc, ...) into the message(s) to send, signed
    /// and/or encrypted as asked and as the policy requires.
    Compose {
        /// Print the agent's answer as JSON on stdout (the message in it, base64) and
        /// write nothing else.
        #[arg(long)]
        json: bool,
        /// Sign (the policy's always_sign signs anyway).
        #[arg(long)]
        sign: bool,
        /// Encrypt (the policy's always_encrypt encrypts anyway).
        #[arg(long)]
        encrypt: bool,
        /// Send unencrypted when some recipients have no certificate (not with always_encrypt).
        #[arg(long)]
        allow_unencrypted: bool,
        /// A recipient certificate file, PEM or DER (repeat).
        #[arg(long = "cert", value_name = "FILE")]
        certs: Vec<PathBuf>,
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        /// Where to write the message; further messages (one per Bcc recipient when
        /// encrypting) go to FILE.1, FILE.2, ...
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        pin: cli::PinArgs,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Decrypt an S/MIME message with one of your keys.
    Decrypt {
        /// Print the agent's answer as JSON on stdout (the message in it, base64) and
        /// write nothing else.
        #[arg(long)]
        json: bool,
        #[arg(long = "in", value_name = "FILE")]
        input: Option<PathBuf>,
        #[arg(long = "out", value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        pin: cli::PinArgs,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// The commands NeoMutt's smime_*_command hooks run (see
    /// contrib/neomutt/smime-agent.neomuttrc): OpenSSL's conventions, the agent's keys.
    Neomutt {
        #[command(subcommand)]
        command: cli::NeomuttCommand,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Make the agent read its configuration file again (as SIGHUP does); the settings
    /// apply to every request from now on, cached PINs and tokens stay.
    Reload {
        /// Print the agent's answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Write the manual pages (smime-agent.1 and one per command) into a directory.
    Man {
        /// The directory to write them into (made if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions {
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Check a configuration file, or print the default one.
    Config {
        /// Print the default configuration, commented.
        #[arg(long)]
        defaults: bool,
        /// The configuration file to check (default: the standard location).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct ServeArgs {
    /// Configuration file (default: $XDG_CONFIG_HOME/smime-agent/config.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Socket path (default: [agent] socket, else $XDG_RUNTIME_DIR/smime-agent/agent.sock).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Stay in the foreground and log to stderr.
    #[arg(long)]
    foreground: bool,
    /// Where the background agent logs (default: agent.log beside the socket).
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Internal: set by the parent when it starts the background agent.
    #[arg(long, hide = true)]
    daemon_child: bool,
}

#[derive(Args)]
pub struct ConnArgs {
    /// The agent's socket (default: $SMIME_AGENT_SOCK, else the default path).
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

impl ConnArgs {
    fn path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(smime_agent_proto::paths::client_socket_path)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => cli::serve(args),
        Command::Status { json, conn } => cli::status(&conn.path(), json),
        Command::Certs { json, conn } => cli::certs(&conn.path(), json),
        Command::Sign {
            signer,
            opaque,
            input,
            output,
            pin,
            json,
            conn,
        } => cli::sign(&conn.path(), signer, opaque, input, output, pin, json),
        Command::Verify {
            input,
            output,
            json,
            conn,
        } => cli::verify(&conn.path(), input, output, json),
        Command::Watch { json, conn } => cli::watch(&conn.path(), json),
        Command::Rescan { json, conn } => cli::rescan(&conn.path(), json),
        Command::Forget { json, conn } => cli::forget(&conn.path(), json),
        Command::Validate {
            file,
            chain,
            crl,
            at,
            address,
            fitness,
            json,
            conn,
        } => cli::validate(
            &conn.path(),
            &file,
            &chain,
            &crl,
            cli::ValidateAsk {
                at,
                address,
                fitness: fitness.as_deref(),
            },
            json,
        ),
        Command::Which {
            address,
            purpose,
            json,
            conn,
        } => cli::which(&conn.path(), address, &purpose, json),
        Command::Encrypt {
            to,
            certs,
            from,
            input,
            output,
            json,
            conn,
        } => cli::encrypt(&conn.path(), to, certs, from, input, output, json),
        Command::Compose {
            sign,
            encrypt,
            allow_unencrypted,
            certs,
            input,
            output,
            pin,
            json,
            conn,
        } => cli::compose(
            &conn.path(),
            cli::ComposeArgs {
                sign,
                encrypt,
                allow_unencrypted,
                certs,
                input,
                output,
            },
            pin,
            json,
        ),
        Command::Decrypt {
            input,
            output,
            pin,
            json,
            conn,
        } => cli::decrypt(&conn.path(), input, output, pin, json),
        Command::Neomutt { command, conn } => cli::neomutt(&conn.path(), command),
        Command::Reload { json, conn } => cli::reload(&conn.path(), json),
        Command::Config { defaults, config } => cli::config(defaults, config),
        Command::Man { dir } => man_pages(&dir),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "smime-agent",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}

/// The manual pages, from the same definitions as `--help`: smime-agent.1, and
/// smime-agent-COMMAND.1 for each command.
fn man_pages(dir: &std::path::Path) -> ExitCode {
    use clap::CommandFactory;
    let write = || -> std::io::Result<usize> {
        std::fs::create_dir_all(dir)?;
        let cmd = Cli::command();
        let mut pages = vec![("smime-agent".to_owned(), cmd.clone())];
        for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
            let name = format!("smime-agent-{}", sub.get_name());
            let page = sub
                .clone()
                .display_name(name.clone())
                .bin_name(format!("smime-agent {}", sub.get_name()));
            pages.push((name, page));
        }
        for (name, page) in &pages {
            let mut out = Vec::new();
            clap_mangen::Man::new(page.clone()).render(&mut out)?;
            std::fs::write(dir.join(format!("{name}.1")), out)?;
        }
        Ok(pages.len())
    };
    match write() {
        Ok(n) => {
            eprintln!("smime-agent: wrote {n} manual pages to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "smime-agent: cannot write the manual pages to {}: {e}",
                dir.display()
            );
            ExitCode::from(2)
        }
    }
}

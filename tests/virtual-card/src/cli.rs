//! The two commands: `virtual-piv-card` (one card, in the foreground) and `card-rig` (a
//! private pcscd and cards as background processes, state in a directory).
//!
//! `card-rig` keeps in `DIR`: `rig.state` (pcscd's pid, ports), `cards/NAME.card` (a card
//! process's pid and reader), `cards/NAME.pin-state` (its PIN counter, kept after removal,
//! and its count of PIN VERIFYs since insertion; see [`crate::pin`]), `cards/NAME.log` and
//! `pcscd.log`. A pid is only signalled after checking that its command line is still the
//! one the rig started, so a stale file never kills a stranger.
//!
//! The card processes of `card-rig` run with `--reconnect`: when pcscd dies they wait for
//! their reader, and `card-rig start-pcscd` brings pcscd back on the same socket and ports.

use std::fs;
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::card::{CardConfig, PivCard};
use crate::keypad::Keypad;
use crate::keys::SlotSpec;
use crate::pcscd::{self, Lifetime, PcscdOptions, RigLayout};
use crate::pin;
use crate::vpcd::{self, Event, Remover, VpcdLink};
use crate::{RigError, valid_card_name};

/// Everything one card needs: the arguments of `virtual-piv-card` and of `card-rig card`.
#[derive(Debug, Args)]
pub struct CardArgs {
    /// The vpcd reader's TCP port on 127.0.0.1.
    #[arg(long)]
    pub port: u16,
    /// The application PIN (1-8 characters; PIV cards use 6-8 digits).
    #[arg(long, env = "VIRTUAL_PIV_PIN", hide_env_values = true)]
    pub pin: String,
    /// Tries before the PIN blocks.
    #[arg(long, default_value_t = 3)]
    pub pin_tries: u8,
    /// File that keeps the PIN counter across runs (created when missing).
    #[arg(long)]
    pub pin_state: Option<PathBuf>,
    /// Key slot: `9a|9c|9d|9e=KEY:CERT` (key PKCS#8/PKCS#1/SEC1, PEM or DER; cert PEM or
    /// DER). Repeat for more slots.
    #[arg(long = "slot", required = true)]
    pub slots: Vec<String>,
    /// Card name, for logs and the default GUID.
    #[arg(long, default_value = "card")]
    pub name: String,
    /// The CHUID GUID as 32 hex digits (OpenSC's token serial number comes from it).
    /// Default: derived from the name and certificates.
    #[arg(long)]
    pub guid: Option<String>,
    /// How long to keep trying to reach the reader.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,
    /// Created when the reader has taken the card.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Log every APDU to stderr.
    #[arg(long)]
    pub trace: bool,
    /// A slow card: hold the answer to every private-key operation (GENERAL AUTHENTICATE
    /// with a key: signature, decryption, ECDH) this many milliseconds.
    #[arg(long)]
    pub op_delay_ms: Option<u64>,
    /// When the reader goes away (pcscd stopped or killed), connect again (short backoff)
    /// until the process is stopped, instead of exiting.
    #[arg(long)]
    pub reconnect: bool,
}

impl CardArgs {
    fn config(&self) -> Result<CardConfig, String> {
        let slots = self
            .slots
            .iter()
            .map(|s| s.parse::<SlotSpec>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let guid = self.guid.as_deref().map(parse_guid).transpose()?;
        Ok(CardConfig {
            pin: self.pin.clone(),
            pin_tries: self.pin_tries,
            pin_state_file: self.pin_state.clone(),
            guid,
            name: self.name.clone(),
            slots,
            op_delay: self.op_delay_ms.map(Duration::from_millis),
            fault_file: None,
        })
    }
}

fn parse_guid(hex: &str) -> Result<[u8; 16], String> {
    let bad = || format!("--guid {hex:?}: expected 32 hex digits");
    if hex.len() != 32 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut guid = [0u8; 16];
    for (i, byte) in guid.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(guid)
}

/// `virtual-piv-card`: one virtual PIV card, connected to a vpcd reader until the reader
/// goes away or the process is stopped (which pulls the card).
#[derive(Debug, Parser)]
#[command(name = "virtual-piv-card", version)]
pub struct VirtualPivCardCli {
    #[command(flatten)]
    pub card: CardArgs,
}

/// Entry point of `virtual-piv-card`.
pub fn virtual_piv_card_main() -> ExitCode {
    let cli = VirtualPivCardCli::parse();
    run_card(&cli.card)
}

fn run_card(args: &CardArgs) -> ExitCode {
    let name = args.name.clone();
    let fail = |msg: String| {
        let _ = writeln!(io::stderr(), "virtual-piv-card {name}: {msg}");
        ExitCode::FAILURE
    };
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let mut card = match PivCard::new(&config) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let link = match VpcdLink::connect(args.port, Duration::from_secs(args.connect_timeout)) {
        Ok(l) => l,
        Err(e) => {
            return fail(format!(
                "cannot reach the reader on 127.0.0.1:{}: {e}; is pcscd with vpcd running?",
                args.port
            ));
        }
    };
    let slots: Vec<String> = card
        .slots()
        .map(|(s, subj)| format!("{s}={subj}"))
        .collect();
    log(
        &name,
        &format!(
            "connected to 127.0.0.1:{}; slots {}; PIN tries left {}",
            args.port,
            slots.join(", "),
            card.pin_tries_left()
        ),
    );
    let ready_file = args.ready_file.clone();
    let trace = args.trace;
    let on_event = |event: Event<'_>| match event {
        Event::FirstContact => {
            log(&name, "the reader took the card");
            if let Some(path) = &ready_file
                && let Err(e) = fs::write(path, b"ready\n")
            {
                log(&name, &format!("cannot write {}: {e}", path.display()));
            }
        }
        Event::Holding(delay) => log(
            &name,
            &format!("holding the answer to a private-key operation for {delay:?}"),
        ),
        Event::ReaderLost(error) => log(
            &name,
            &match error {
                Some(e) => format!("the reader went away ({e}); waiting for it to come back"),
                None => "the reader went away; waiting for it to come back".to_owned(),
            },
        ),
        Event::Control(c) if trace => log(&name, &format!("control {c:02X}")),
        Event::Apdu { command, response } if trace => {
            log(&name, &format!("> {}", vpcd::hex(command)));
            log(&name, &format!("< {}", vpcd::hex(response)));
        }
        _ => {}
    };
    // Never pulled from inside: the process ends when it is stopped.
    let remover = Remover::new();
    if args.reconnect {
        return match vpcd::keep_inserted(args.port, Some(link), &mut card, &remover, on_event) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(format!("connection to the reader failed: {e}")),
        };
    }
    let mut link = link;
    match vpcd::serve(&mut link, &mut card, &remover, on_event) {
        Ok(()) => {
            log(&name, "the reader closed the connection; card removed");
            ExitCode::SUCCESS
        }
        Err(e) => fail(format!("connection to the reader failed: {e}")),
    }
}

fn log(name: &str, msg: &str) {
    // stderr may be a closed pipe; a card must not die of its logging.
    let _ = writeln!(io::stderr(), "virtual-piv-card {name}: {msg}");
}

/// `card-rig`: a private pcscd with virtual readers, and virtual PIV cards to insert and
/// pull. State lives in DIR; daemons run in the background.
#[derive(Debug, Parser)]
#[command(name = "card-rig", version)]
pub struct CardRigCli {
    #[command(subcommand)]
    pub command: RigCommand,
}

#[derive(Debug, Subcommand)]
pub enum RigCommand {
    /// Start a private pcscd with virtual readers; print the PCSCLITE_CSOCK_NAME export.
    Up {
        dir: PathBuf,
        /// Number of readers, numbered from 0 (rounded up to even).
        #[arg(long, default_value_t = 2)]
        readers: u8,
        /// Run pcscd with --debug --apdu (into DIR/pcscd.log).
        #[arg(long)]
        pcscd_debug: bool,
        /// Give the readers PIN pads (the ifd-pinpad reader library, built when missing):
        /// OpenSC then asks for PINs on the reader; type them with `card-rig keypad`.
        #[arg(long)]
        pinpad: bool,
    },
    /// Insert a card into a reader (it stays in until `remove` or `down`).
    Insert {
        dir: PathBuf,
        name: String,
        /// Reader number.
        #[arg(long, default_value_t = 0)]
        reader: u8,
        /// The card's PIN.
        #[arg(long, env = "VIRTUAL_PIV_PIN", hide_env_values = true)]
        pin: String,
        /// Tries before the PIN blocks.
        #[arg(long, default_value_t = 3)]
        pin_tries: u8,
        /// Key slot: `9a|9c|9d|9e=KEY:CERT`. Repeat for more slots.
        #[arg(long = "slot", required = true)]
        slots: Vec<String>,
        /// Log the card's APDUs into DIR/cards/NAME.log.
        #[arg(long)]
        trace: bool,
        /// A slow card: hold the answer to every private-key operation (signature,
        /// decryption, ECDH) this many milliseconds, so it can be pulled meanwhile.
        #[arg(long)]
        op_delay_ms: Option<u64>,
    },
    /// Pull a card out (inserting it again keeps its PIN counter).
    Remove { dir: PathBuf, name: String },
    /// Type a PIN on a PIN-pad reader's keypad (rigs started with `up --pinpad`): waits
    /// until the reader asks, types, and waits until the reader took it.
    Keypad {
        dir: PathBuf,
        /// Reader number.
        #[arg(long, default_value_t = 0)]
        reader: u8,
        /// The keys to type (default: $VIRTUAL_PIV_PIN).
        #[arg(
            env = "VIRTUAL_PIV_PIN",
            hide_env_values = true,
            required_unless_present = "cancel"
        )]
        keys: Option<String>,
        /// Press Cancel instead of typing.
        #[arg(long, conflicts_with = "keys")]
        cancel: bool,
        /// Seconds to wait for the reader to ask.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Kill pcscd with SIGKILL, as if it crashed; the cards stay in and wait for it.
    KillPcscd { dir: PathBuf },
    /// Start pcscd again after kill-pcscd: same socket, same reader ports; waits until the
    /// cards are back in their readers.
    StartPcscd { dir: PathBuf },
    /// kill-pcscd (if it runs), then start-pcscd.
    RestartPcscd { dir: PathBuf },
    /// Pull every card and stop pcscd.
    Down { dir: PathBuf },
    /// Show readers and cards.
    Status { dir: PathBuf },
    /// Print the PCSCLITE_CSOCK_NAME export again.
    Env { dir: PathBuf },
    /// Run one card in the foreground (what `insert` starts in the background).
    #[command(hide = true)]
    Card(CardArgs),
}

/// Entry point of `card-rig`.
pub fn card_rig_main() -> ExitCode {
    let cli = CardRigCli::parse();
    let result = match cli.command {
        RigCommand::Card(args) => return run_card(&args),
        RigCommand::Up {
            dir,
            readers,
            pcscd_debug,
            pinpad,
        } => up(&dir, readers, pcscd_debug, pinpad),
        RigCommand::Insert {
            dir,
            name,
            reader,
            pin,
            pin_tries,
            slots,
            trace,
            op_delay_ms,
        } => insert(
            &dir,
            &name,
            &InsertOptions {
                reader,
                pin: &pin,
                pin_tries,
                slots: &slots,
                trace,
                op_delay_ms,
            },
        ),
        RigCommand::Remove { dir, name } => remove(&dir, &name),
        RigCommand::Keypad {
            dir,
            reader,
            keys,
            cancel,
            timeout,
        } => keypad(&dir, reader, keys.as_deref().filter(|_| !cancel), timeout),
        RigCommand::KillPcscd { dir } => kill_pcscd(&dir),
        RigCommand::StartPcscd { dir } => start_pcscd(&dir),
        RigCommand::RestartPcscd { dir } => {
            if let Ok((layout, state)) = RigState::load(&dir) {
                kill_rig_pcscd(&layout, &state);
            }
            start_pcscd(&dir)
        }
        RigCommand::Down { dir } => down(&dir),
        RigCommand::Status { dir } => status(&dir),
        RigCommand::Env { dir } => RigState::load_any(&dir).map(|(layout, _)| print_env(&layout)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "card-rig: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `DIR/rig.state`: which pcscd serves this directory, on which ports.
struct RigState {
    pcscd_pid: u32,
    base_port: u16,
    readers: u8,
    isolated: bool,
    /// pcscd runs with --debug --apdu (kept for start-pcscd).
    debug: bool,
    /// The PIN-pad reader library, when the readers have PIN pads.
    pinpad: Option<PathBuf>,
}

impl RigState {
    fn path(layout: &RigLayout) -> PathBuf {
        layout.dir.join("rig.state")
    }

    fn save(&self, layout: &RigLayout) -> Result<(), RigError> {
        let mut text = format!(
            "pcscd-pid {}\nbase-port {}\nreaders {}\nisolated {}\npcscd-debug {}\n",
            self.pcscd_pid, self.base_port, self.readers, self.isolated, self.debug
        );
        if let Some(lib) = &self.pinpad {
            text.push_str(&format!("pinpad {}\n", lib.display()));
        }
        let path = Self::path(layout);
        fs::write(&path, text).map_err(|e| RigError::io(format!("writing {}", path.display()), e))
    }

    /// The running rig in `dir`: `NotRunning` when there is none, `PcscdNotRunning` when
    /// its pcscd is gone (killed).
    fn load(dir: &Path) -> Result<(RigLayout, RigState), RigError> {
        let (layout, state) = Self::load_any(dir)?;
        if !state.pcscd_runs(&layout) {
            return Err(RigError::PcscdNotRunning);
        }
        Ok((layout, state))
    }

    /// The rig in `dir`, whether its pcscd runs or not; `NotRunning` when there is none.
    fn load_any(dir: &Path) -> Result<(RigLayout, RigState), RigError> {
        let layout = RigLayout::new(dir).map_err(|_| RigError::NotRunning(dir.to_owned()))?;
        let path = Self::path(&layout);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(RigError::NotRunning(layout.dir.clone()));
            }
            Err(e) => return Err(RigError::io(format!("reading {}", path.display()), e)),
        };
        let fields = parse_fields(&text);
        let bad = |what: &str| RigError::BadState {
            path: path.clone(),
            reason: format!("no valid {what}; run `card-rig down` and `up` again"),
        };
        let state = RigState {
            pcscd_pid: field(&fields, "pcscd-pid").ok_or_else(|| bad("pcscd-pid"))?,
            // Ports and reader numbers are added up later: a hand-edited file must not
            // make that overflow.
            base_port: field(&fields, "base-port")
                .filter(|p: &u16| *p <= u16::MAX - 256)
                .ok_or_else(|| bad("base-port"))?,
            readers: field(&fields, "readers")
                .filter(|r: &u8| (2..=254).contains(r) && r.is_multiple_of(2))
                .ok_or_else(|| bad("readers"))?,
            isolated: field(&fields, "isolated").unwrap_or(false),
            debug: field(&fields, "pcscd-debug").unwrap_or(false),
            pinpad: field(&fields, "pinpad"),
        };
        Ok((layout, state))
    }

    fn pcscd_runs(&self, layout: &RigLayout) -> bool {
        pcscd::process_alive(self.pcscd_pid)
            && cmdline_has(self.pcscd_pid, &layout.conf_dir().to_string_lossy())
    }
}

/// `DIR/cards/NAME.card`: a running card process.
struct CardRecord {
    pid: u32,
    reader: u8,
    /// The PIN's retry limit, shown while the counter file does not exist yet.
    pin_tries: u8,
}

impl CardRecord {
    fn path(layout: &RigLayout, name: &str) -> PathBuf {
        layout.cards_dir().join(format!("{name}.card"))
    }

    /// The record of `name` if its process still runs; a stale record is deleted.
    fn load_live(layout: &RigLayout, name: &str) -> Option<CardRecord> {
        let path = Self::path(layout, name);
        let text = fs::read_to_string(&path).ok()?;
        let fields = parse_fields(&text);
        let record = CardRecord {
            pid: field(&fields, "pid")?,
            reader: field(&fields, "reader")?,
            pin_tries: field(&fields, "pin-tries").unwrap_or(3),
        };
        if record.is_alive(layout, name) {
            Some(record)
        } else {
            let _ = fs::remove_file(&path);
            None
        }
    }

    fn is_alive(&self, layout: &RigLayout, name: &str) -> bool {
        pcscd::process_alive(self.pid)
            && cmdline_has(self.pid, &ready_file(layout, name).to_string_lossy())
    }

    /// Every live card of the rig, by name.
    fn all_live(layout: &RigLayout) -> Vec<(String, CardRecord)> {
        let Ok(dir) = fs::read_dir(layout.cards_dir()) else {
            return Vec::new();
        };
        let mut cards: Vec<_> = dir
            .filter_map(|e| {
                let file = e.ok()?.file_name();
                let name = file.to_str()?.strip_suffix(".card")?.to_owned();
                let record = CardRecord::load_live(layout, &name)?;
                Some((name, record))
            })
            .collect();
        cards.sort_by_key(|(_, r)| r.reader);
        cards
    }
}

fn ready_file(layout: &RigLayout, name: &str) -> PathBuf {
    layout.cards_dir().join(format!("{name}.ready"))
}

fn parse_fields(text: &str) -> Vec<(&str, &str)> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

fn field<T: std::str::FromStr>(fields: &[(&str, &str)], key: &str) -> Option<T> {
    fields.iter().find(|(k, _)| *k == key)?.1.parse().ok()
}

/// Whether one argument of `pid`'s command line is exactly `arg`.
fn cmdline_has(pid: u32, arg: &str) -> bool {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        .unwrap_or(false)
}

fn print_env(layout: &RigLayout) {
    println!(
        "PCSCLITE_CSOCK_NAME={}; export PCSCLITE_CSOCK_NAME",
        shell_quote(&layout.csock().to_string_lossy())
    );
}

fn shell_quote(s: &str) -> String {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn up(dir: &Path, readers: u8, debug: bool, pinpad: bool) -> Result<(), RigError> {
    fs::create_dir_all(dir).map_err(|e| RigError::io(format!("creating {}", dir.display()), e))?;
    if let Ok((layout, _)) = RigState::load(dir) {
        return Err(RigError::AlreadyRunning(layout.dir));
    }
    let layout = RigLayout::new(dir)?;
    fs::create_dir_all(layout.cards_dir())
        .map_err(|e| RigError::io(format!("creating {}", layout.cards_dir().display()), e))?;
    // Cards of an earlier rig in this directory lost their reader with its pcscd.
    for (name, record) in CardRecord::all_live(&layout) {
        stop_process(record.pid);
        let _ = fs::remove_file(CardRecord::path(&layout, &name));
    }
    let pinpad = if pinpad {
        Some(crate::pinpad_library()?)
    } else {
        None
    };
    let started = pcscd::start(
        &layout,
        &PcscdOptions {
            readers,
            debug,
            lifetime: Lifetime::Detached,
            timeout: Duration::from_secs(10),
            pinpad: pinpad.clone(),
        },
    )?;
    let state = RigState {
        pcscd_pid: started.child.id(),
        base_port: started.base_port,
        readers: started.readers,
        isolated: started.isolated,
        debug,
        pinpad,
    };
    state.save(&layout)?;
    eprintln!(
        "card-rig: pcscd {} runs with readers 0-{} on ports {}-{}{}; log {}",
        state.pcscd_pid,
        state.readers - 1,
        state.base_port,
        state.base_port + u16::from(state.readers) - 1,
        if state.isolated {
            " (private /run/pcscd, no USB readers)"
        } else {
            ""
        },
        layout.pcscd_log().display()
    );
    print_env(&layout);
    Ok(())
}

/// The options of `card-rig insert`.
struct InsertOptions<'a> {
    reader: u8,
    pin: &'a str,
    pin_tries: u8,
    slots: &'a [String],
    trace: bool,
    op_delay_ms: Option<u64>,
}

fn insert(dir: &Path, name: &str, options: &InsertOptions<'_>) -> Result<(), RigError> {
    let &InsertOptions {
        reader,
        pin,
        pin_tries,
        slots,
        trace,
        op_delay_ms,
    } = options;
    let (layout, state) = RigState::load(dir)?;
    if !valid_card_name(name) {
        return Err(RigError::BadCardName(name.to_owned()));
    }
    if reader >= state.readers {
        return Err(RigError::NoSuchReader {
            reader,
            last: state.readers - 1,
        });
    }
    let live = CardRecord::all_live(&layout);
    if live.iter().any(|(n, _)| n == name) {
        return Err(RigError::CardAlreadyInserted(name.to_owned()));
    }
    if let Some((other, _)) = live.iter().find(|(_, r)| r.reader == reader) {
        return Err(RigError::ReaderBusy {
            reader,
            card: other.clone(),
        });
    }
    // Load the card here first, so a bad key or certificate is reported to the caller.
    let config = CardConfig {
        pin: pin.to_owned(),
        pin_tries,
        pin_state_file: Some(layout.pin_state(name)),
        guid: None,
        name: name.to_owned(),
        slots: slots
            .iter()
            .map(|s| s.parse::<SlotSpec>())
            .collect::<Result<Vec<_>, _>>()?,
        op_delay: op_delay_ms.map(Duration::from_millis),
        fault_file: None,
    };
    let card = PivCard::new(&config)?;
    let tries_left = card.pin_tries_left();
    drop(card);

    let port = state.base_port + u16::from(reader);
    let ready = ready_file(&layout, name);
    let _ = fs::remove_file(&ready);
    let log_path = layout.cards_dir().join(format!("{name}.log"));
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| RigError::io(format!("opening {}", log_path.display()), e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| RigError::io(format!("opening {}", log_path.display()), e))?;
    let exe = std::env::current_exe().map_err(|e| RigError::io("finding card-rig itself", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("card")
        .arg("--port")
        .arg(port.to_string())
        .arg("--name")
        .arg(name)
        .arg("--pin-tries")
        .arg(pin_tries.to_string())
        .arg("--pin-state")
        .arg(layout.pin_state(name))
        .arg("--ready-file")
        .arg(&ready)
        .arg("--reconnect");
    if let Some(ms) = op_delay_ms {
        cmd.arg("--op-delay-ms").arg(ms.to_string());
    }
    // Paths made absolute: the card runs from wherever, and `remove` matches its cmdline.
    for spec in &config.slots {
        let abs = |p: &Path| fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let mut arg = std::ffi::OsString::from(format!("{}=", spec.slot));
        arg.push(abs(&spec.key));
        arg.push(":");
        arg.push(abs(&spec.cert));
        cmd.arg("--slot").arg(arg);
    }
    if trace {
        cmd.arg("--trace");
    }
    // The PIN goes through the environment, not the command line `ps` shows.
    cmd.env("VIRTUAL_PIV_PIN", pin)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Its own process group: a Ctrl-C meant for the caller does not pull the card.
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| RigError::io(format!("starting card {name:?}"), e))?;
    let record = CardRecord {
        pid: child.id(),
        reader,
        pin_tries,
    };
    let record_path = CardRecord::path(&layout, name);
    fs::write(
        &record_path,
        format!(
            "pid {}\nreader {}\npin-tries {}\n",
            record.pid, record.reader, record.pin_tries
        ),
    )
    .map_err(|e| RigError::io(format!("writing {}", record_path.display()), e))?;

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ready.exists() {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let _ = fs::remove_file(&record_path);
            return Err(RigError::io(
                format!("card {name:?}"),
                io::Error::other(format!(
                    "the card process exited ({status}); see {}",
                    log_path.display()
                )),
            ));
        }
        if Instant::now() >= deadline {
            stop_process(record.pid);
            let _ = child.wait();
            let _ = fs::remove_file(&record_path);
            return Err(RigError::CardNotSeen {
                port,
                seconds: 10,
                log: log_path,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "card-rig: card {name} is in reader {reader} (port {port}), PIN tries left {tries_left}; \
         log {}",
        log_path.display()
    );
    Ok(())
}

fn remove(dir: &Path, name: &str) -> Result<(), RigError> {
    let layout = RigLayout::new(dir).map_err(|_| RigError::NotRunning(dir.to_owned()))?;
    let record = CardRecord::load_live(&layout, name)
        .ok_or_else(|| RigError::CardNotInserted(name.to_owned()))?;
    stop_process(record.pid);
    let _ = fs::remove_file(CardRecord::path(&layout, name));
    let _ = fs::remove_file(ready_file(&layout, name));
    eprintln!("card-rig: card {name} pulled from reader {}", record.reader);
    Ok(())
}

fn down(dir: &Path) -> Result<(), RigError> {
    let layout = RigLayout::new(dir).map_err(|_| RigError::NotRunning(dir.to_owned()))?;
    for (name, record) in CardRecord::all_live(&layout) {
        stop_process(record.pid);
        let _ = fs::remove_file(CardRecord::path(&layout, &name));
        let _ = fs::remove_file(ready_file(&layout, &name));
    }
    let stopped = match RigState::load(dir) {
        Ok((_, state)) => {
            stop_process(state.pcscd_pid);
            true
        }
        Err(_) => false,
    };
    let _ = fs::remove_file(RigState::path(&layout));
    let _ = fs::remove_file(layout.csock());
    if stopped {
        eprintln!(
            "card-rig: stopped; logs and PIN counters stay in {}",
            layout.dir.display()
        );
    } else {
        eprintln!(
            "card-rig: no pcscd was running for {}",
            layout.dir.display()
        );
    }
    Ok(())
}

fn keypad(dir: &Path, reader: u8, keys: Option<&str>, timeout: u64) -> Result<(), RigError> {
    let (layout, state) = RigState::load(dir)?;
    if state.pinpad.is_none() {
        return Err(RigError::NoPinPad);
    }
    if reader >= state.readers {
        return Err(RigError::NoSuchReader {
            reader,
            last: state.readers - 1,
        });
    }
    let keypad = Keypad::new(&layout, state.base_port + u16::from(reader));
    let timeout = Duration::from_secs(timeout);
    keypad.wait_for_prompt(reader, timeout)?;
    match keys {
        Some(keys) => {
            keypad.type_keys(keys)?;
            keypad.wait_taken(reader, timeout)?;
            eprintln!("card-rig: reader {reader} took the PIN");
        }
        None => {
            keypad.cancel()?;
            eprintln!("card-rig: Cancel pressed on reader {reader}");
        }
    }
    Ok(())
}

fn status(dir: &Path) -> Result<(), RigError> {
    let (layout, state) = RigState::load_any(dir)?;
    if state.pcscd_runs(&layout) {
        println!(
            "pcscd {} socket {}{}{}",
            state.pcscd_pid,
            layout.csock().display(),
            if state.isolated { " (isolated)" } else { "" },
            if state.pinpad.is_some() {
                "; readers with PIN pads"
            } else {
                ""
            }
        );
    } else {
        println!(
            "pcscd not running (killed?; `card-rig start-pcscd {}` brings it back) socket {}",
            layout.dir.display(),
            layout.csock().display()
        );
    }
    let cards = CardRecord::all_live(&layout);
    for reader in 0..state.readers {
        let port = state.base_port + u16::from(reader);
        match cards.iter().find(|(_, r)| r.reader == reader) {
            Some((name, record)) => {
                let pin = match pin::read_state_file(&layout.pin_state(name)) {
                    Ok(Some(f)) => format!(
                        "PIN tries left {}, PIN VERIFYs since insertion {}",
                        f.tries_left, f.verifies
                    ),
                    Ok(None) => format!("PIN tries left {}", record.pin_tries),
                    Err(e) => e.to_string(),
                };
                println!(
                    "reader {reader} (port {port}): card {name} (pid {}, {pin})",
                    record.pid
                );
            }
            None => println!("reader {reader} (port {port}): empty"),
        }
    }
    Ok(())
}

fn kill_pcscd(dir: &Path) -> Result<(), RigError> {
    let (layout, state) = RigState::load(dir)?;
    kill_rig_pcscd(&layout, &state);
    eprintln!(
        "card-rig: pcscd {} killed; the cards wait for their readers (`card-rig start-pcscd {}`)",
        state.pcscd_pid,
        layout.dir.display()
    );
    Ok(())
}

/// SIGKILL to the rig's pcscd (checked to be it), and wait until it is gone.
fn kill_rig_pcscd(layout: &RigLayout, state: &RigState) {
    if !state.pcscd_runs(layout) {
        return;
    }
    pcscd::kill_pid(state.pcscd_pid);
    let deadline = Instant::now() + Duration::from_secs(2);
    while pcscd::process_alive(state.pcscd_pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn start_pcscd(dir: &Path) -> Result<(), RigError> {
    let (layout, state) = RigState::load_any(dir)?;
    if state.pcscd_runs(&layout) {
        return Err(RigError::PcscdAlreadyRunning);
    }
    // Each card writes its ready file again when the new pcscd's reader takes it.
    let cards = CardRecord::all_live(&layout);
    for (name, _) in &cards {
        let _ = fs::remove_file(ready_file(&layout, name));
    }
    let start = Instant::now();
    let started = pcscd::start_on(
        &layout,
        &PcscdOptions {
            readers: state.readers,
            debug: state.debug,
            lifetime: Lifetime::Detached,
            timeout: Duration::from_secs(10),
            pinpad: state.pinpad.clone(),
        },
        state.base_port,
    )?;
    let state = RigState {
        pcscd_pid: started.child.id(),
        isolated: started.isolated,
        ..state
    };
    state.save(&layout)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    for (name, record) in &cards {
        while !ready_file(&layout, name).exists() {
            if Instant::now() >= deadline {
                return Err(RigError::CardNotSeen {
                    port: state.base_port + u16::from(record.reader),
                    seconds: 10,
                    log: layout.cards_dir().join(format!("{name}.log")),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let names: Vec<&str> = cards.iter().map(|(n, _)| n.as_str()).collect();
    eprintln!(
        "card-rig: pcscd {} runs again on ports {}-{}; {} back in {} ms",
        state.pcscd_pid,
        state.base_port,
        state.base_port + u16::from(state.readers) - 1,
        if names.is_empty() {
            "no cards".to_owned()
        } else {
            format!("cards {}", names.join(", "))
        },
        start.elapsed().as_millis()
    );
    Ok(())
}

/// SIGTERM, then SIGKILL after two seconds; returns when the process is gone.
fn stop_process(pid: u32) {
    pcscd::terminate_pid(pid);
    let deadline = Instant::now() + Duration::from_secs(2);
    while pcscd::process_alive(pid) {
        if Instant::now() >= deadline {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill() has no memory effects; the pid was checked by the caller.
                #[allow(unsafe_code)]
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

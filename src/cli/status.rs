//! `status` and `certs`: what the agent has, printed for people (or as JSON).

use std::path::Path;
use std::process::ExitCode;

use super::*;

pub fn status(socket: &Path, json: bool) -> ExitCode {
    let result = connect(socket, false).and_then(|mut c| c.status());
    let st = match result {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if json {
        return print_json(&st);
    }
    println!(
        "smime-agent {} (pid {}, up {} s), socket {}",
        st.agent.version, st.agent.pid, st.agent.uptime_secs, st.agent.socket
    );
    println!("modules:");
    if st.modules.is_empty() {
        println!("  (none configured)");
    }
    for m in &st.modules {
        match (&m.library, &m.error) {
            (_, Some(e)) => println!("  {} [{}]: ERROR {e}", m.path, m.kind),
            (Some(l), None) => println!("  {} [{}]: {l}", m.path, m.kind),
            (None, None) => println!("  {} [{}]", m.path, m.kind),
        }
    }
    if st.readers.watched {
        println!("readers:");
        if let Some(e) = &st.readers.error {
            println!("  ({e})");
        } else if st.readers.readers.is_empty() {
            println!("  (none attached)");
        }
        for r in &st.readers.readers {
            println!(
                "  {}: {}",
                r.name,
                if r.card_present {
                    "card present"
                } else {
                    "empty"
                }
            );
        }
    }
    println!("tokens:");
    if st.tokens.is_empty() {
        println!("  (none present)");
    }
    for t in &st.tokens {
        println!(
            "  \"{}\" serial {} ({}, {}{}), PIN {}, tries {}",
            t.token.label,
            t.token.serial,
            t.model,
            if t.hardware { "hardware" } else { "software" },
            if t.removable { ", removable" } else { "" },
            if t.pin.protected_path {
                "on reader keypad"
            } else if t.pin.cached {
                "cached"
            } else {
                "not cached"
            },
            match t.pin.retries {
                smime_agent_proto::PinRetries::Ok => "ok",
                smime_agent_proto::PinRetries::Low => "low",
                smime_agent_proto::PinRetries::FinalTry => "FINAL TRY",
                smime_agent_proto::PinRetries::Locked => "LOCKED",
            },
        );
        for c in &t.certificates {
            println!("    {}", cert_line(c));
        }
    }
    println!("trust:");
    println!(
        "  {} anchor(s), {} distrusted, {} local intermediate(s)",
        st.trust.anchors, st.trust.untrusted, st.trust.intermediates
    );
    for p in &st.trust.problems {
        println!("  problem: {p}");
    }
    println!(
        "CRL cache{}: {} CRL(s), {} download(s) since start",
        st.crl_cache
            .dir
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default(),
        st.crl_cache.crls.len(),
        st.crl_cache.fetches
    );
    for c in &st.crl_cache.crls {
        println!(
            "  {} | thisUpdate {} | nextUpdate {}{} | {} entr{} | {}",
            c.issuer,
            c.this_update,
            c.next_update.as_deref().unwrap_or("(none)"),
            if c.current { "" } else { " (expired)" },
            c.entries,
            if c.entries == 1 { "y" } else { "ies" },
            c.url
        );
    }
    ExitCode::SUCCESS
}

pub(super) fn cert_line(c: &CertInfo) -> String {
    format!(
        "{} | serial {} | {} | {} | until {}",
        c.subject,
        c.serial,
        c.key,
        if c.key_usage.is_empty() {
            "any usage".to_owned()
        } else {
            c.key_usage.join(",")
        },
        c.not_after
    )
}

pub fn certs(socket: &Path, json: bool) -> ExitCode {
    let list = match connect(socket, false).and_then(|mut c| c.list_certs(false)) {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    if json {
        return print_json(&list);
    }
    for c in &list.certificates {
        println!("{} | token \"{}\"", cert_line(c), c.token.label);
    }
    ExitCode::SUCCESS
}

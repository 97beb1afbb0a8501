//! The manual pages and shell completions, generated from the command-line definitions:
//! `man -l` renders every page, and bash takes the completion script.

mod common;

use std::process::Command;

use common::*;

#[test]
fn every_command_has_a_manual_page_that_man_renders() {
    let dir = tempdir();
    let out = Command::new(agent_bin())
        .arg("man")
        .arg(dir.path())
        .output()
        .unwrap();
    ok("smime-agent man", &out);
    for name in [
        "smime-agent",
        "smime-agent-sign",
        "smime-agent-verify",
        "smime-agent-serve",
    ] {
        let page = dir.path().join(format!("{name}.1"));
        let out = Command::new("man")
            .arg("-l")
            .arg(&page)
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        ok(&format!("man {name}"), &out);
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{name}:\n{text}"
        );
    }
    let sign = std::fs::read_to_string(dir.path().join("smime-agent-sign.1")).unwrap();
    assert!(
        sign.contains("\\-\\-signer") && sign.contains("smime\\-agent sign"),
        "{sign}"
    );
}

#[test]
fn bash_takes_the_completion_script_and_completes_commands() {
    let script = format!(
        "source <({} completions bash) && complete -p smime-agent && \
         COMP_WORDS=(smime-agent si); COMP_CWORD=1; COMP_LINE='smime-agent si'; COMP_POINT=14; \
         _smime__agent smime-agent si smime-agent; echo \"${{COMPREPLY[@]}}\"",
        agent_bin().display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    ok("bash", &out);
    assert!(
        text.contains("complete") && text.contains("smime-agent"),
        "{text}"
    );
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.split_whitespace().any(|w| w == "sign")),
        "{text}"
    );
}

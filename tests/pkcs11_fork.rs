//! Fork safety of the PKCS#11 module, as PKCS#11 2.40 section 5.1 asks: a child process
//! created after C_Initialize finds the module not initialized (its parent's connections and
//! threads are not its own) until it initializes it itself. One test in this file: it forks.

mod common;

use common::*;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error, RvError};

#[test]
fn a_child_after_fork_must_initialize_the_module_itself() {
    let dir = tempdir();
    let (_hsm, agent) = softhsm_agent(
        dir.path(),
        "alice",
        &["alice-sign-ec"],
        AgentSpec::default(),
    );
    // SAFETY of set_var: the only test of this binary, before any thread of ours starts.
    unsafe { std::env::set_var(smime_agent_proto::SOCKET_ENV, &agent.socket) };
    let module = agent_bin()
        .parent()
        .unwrap()
        .join("libsmime_agent_pkcs11.so");
    let p11 = Pkcs11::new(&module).expect("load the module");
    p11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .expect("C_Initialize");
    assert_eq!(p11.get_slots_with_token().unwrap().len(), 1);

    // SAFETY: the child only calls into the module (which takes its own locks, none held by
    // another thread now) and then _exit()s, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        let code = match p11.get_slots_with_token() {
            Err(Error::Pkcs11(RvError::CryptokiNotInitialized, _)) => 0,
            Ok(_) => 10,
            Err(_) => 11,
        };
        // SAFETY: ends the child without running the parent's destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status),
        "the child ended by a signal: {status}"
    );
    assert_eq!(
        libc::WEXITSTATUS(status),
        0,
        "the child saw the parent's module as its own (10) or failed otherwise (11)"
    );
    // The parent's module is untouched by the child.
    assert_eq!(p11.get_slots_with_token().unwrap().len(), 1);
    p11.finalize().expect("C_Finalize");
}

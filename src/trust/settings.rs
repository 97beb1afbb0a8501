//! How certval is set up for one validation: its PKI environment (the RFC 5280 checks and
//! algorithms) and the path settings (time of interest, the RFC 5280 6.1.1 policy inputs,
//! whether revocation is checked).
//!
//! Owns: those settings. Must not touch: the paths (`build.rs`), CRLs (`revocation.rs`).

use std::time::{SystemTime, UNIX_EPOCH};

use certval::{CertificationPathSettings, PkiEnvironment, TimeOfInterest};

use super::dsa::DsaVerifier;
use super::validation::PolicyInputs;

/// The environment, with DSA verification that knows the path's inherited DSA parameters.
pub(super) fn environment_with(dsa: DsaVerifier) -> PkiEnvironment {
    let mut pe = PkiEnvironment::new();
    pe.populate_5280_pki_environment();
    pe.add_verify_signature_message_callback(dsa);
    pe
}

pub(super) fn settings(
    time: SystemTime,
    policy: &PolicyInputs,
    check_revocation: bool,
) -> CertificationPathSettings {
    let mut cps = CertificationPathSettings::new();
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if let Ok(toi) = TimeOfInterest::from_unix_secs(secs) {
        cps.set_time_of_interest(toi);
    }
    if !policy.initial_policy_set.is_empty() {
        cps.set_initial_policy_set(policy.initial_policy_set.clone());
    }
    cps.set_initial_explicit_policy_indicator(policy.initial_explicit_policy);
    cps.set_initial_policy_mapping_inhibit_indicator(policy.initial_policy_mapping_inhibit);
    cps.set_initial_inhibit_any_policy_indicator(policy.initial_inhibit_any_policy);
    // Paths are built only to anchors of the agent's own trust store, so certval need not
    // look the anchor up again in a store of its own.
    cps.set_require_ta_store(false);
    cps.set_check_revocation_status(check_revocation);
    cps.set_check_crls(true);
    cps
}

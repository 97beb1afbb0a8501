//! RFC 5280 section 6.3 for one certificate over the CRLs at hand, where certval's CRL model
//! stops: a CRL signed by another key of the CA or by a separate CRL issuer (whose own
//! certificate must come from the path's CAs, carry cRLSign, be current and not be revoked),
//! distribution points and their names (full and relative to the CRL issuer), reason
//! partitions (`onlySomeReasons` with the reasons mask until every reason is covered), indirect
//! CRLs (`cRLIssuer`, the `certificateIssuer` entry extension), and delta CRLs (their entries
//! first, `removeFromCRL` taking a certificate off hold).
//!
//! Written by hand, and why: certval (the path validator) handles a CRL of the issuer's own
//! key and scope, and no other maintained crate on the der 0.8 line processes CRLs at all.
//! `revocation.rs` asks this module only about the certificates certval leaves undetermined
//! (or holds), and hands the answers back to certval as cached statuses, so the outcome of
//! the path still comes from one place.
//!
//! Owns: the status of one certificate from CRLs. Must not touch: fetching, caching, OCSP,
//! the outcome of the path.

use std::time::SystemTime;

use const_oid::db::rfc5280::{
    ID_CE_AUTHORITY_KEY_IDENTIFIER, ID_CE_BASIC_CONSTRAINTS, ID_CE_CERTIFICATE_ISSUER,
    ID_CE_CRL_DISTRIBUTION_POINTS, ID_CE_CRL_NUMBER, ID_CE_CRL_REASONS, ID_CE_DELTA_CRL_INDICATOR,
    ID_CE_FRESHEST_CRL, ID_CE_HOLD_INSTRUCTION_CODE, ID_CE_INVALIDITY_DATE, ID_CE_ISSUER_ALT_NAME,
    ID_CE_ISSUING_DISTRIBUTION_POINT, ID_CE_KEY_USAGE,
};
use der::asn1::{BitString, ObjectIdentifier};
use der::{Decode, Encode};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::certificate::{CertificateInner, Raw};
use x509_cert::crl::CertificateList;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::crl::CrlReason;
use x509_cert::ext::pkix::crl::dp::{DistributionPoint, IssuingDistributionPoint, Reasons};
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName, GeneralNames};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::name::Name;

/// How deep the check of a CRL signer's own certificate may recurse (the signer of the
/// CRL that covers the signer, ...): signers of signers.
const MAX_DEPTH: usize = 2;

/// A CRL at hand, parsed once.
pub struct Crl {
    pub der: Vec<u8>,
    pub list: CertificateList<Raw>,
}

impl Crl {
    pub fn parse(der: &[u8]) -> Option<Crl> {
        Some(Crl {
            list: CertificateList::<Raw>::from_der(der).ok()?,
            der: der.to_vec(),
        })
    }

    fn extension(&self, oid: ObjectIdentifier) -> Option<&Extension> {
        self.list
            .tbs_cert_list
            .crl_extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == oid)
    }

    fn number(&self) -> Option<Vec<u8>> {
        let e = self.extension(ID_CE_CRL_NUMBER)?;
        der::asn1::Uint::from_der(e.extn_value.as_bytes())
            .ok()
            .map(|u| u.as_bytes().to_vec())
    }

    /// The base CRL number of a delta CRL.
    fn base(&self) -> Option<Vec<u8>> {
        let e = self.extension(ID_CE_DELTA_CRL_INDICATOR)?;
        der::asn1::Uint::from_der(e.extn_value.as_bytes())
            .ok()
            .map(|u| u.as_bytes().to_vec())
    }

    fn idp(&self) -> Result<Option<IssuingDistributionPoint>, ()> {
        match self.extension(ID_CE_ISSUING_DISTRIBUTION_POINT) {
            None => Ok(None),
            Some(e) => IssuingDistributionPoint::from_der(e.extn_value.as_bytes())
                .map(Some)
                .map_err(|_| ()),
        }
    }

    fn current(&self, toi: u64) -> bool {
        let t = &self.list.tbs_cert_list;
        t.this_update.to_unix_duration().as_secs() <= toi
            && t.next_update
                .is_some_and(|n| toi <= n.to_unix_duration().as_secs())
    }

    /// Every critical extension, of the CRL and of its entries, is one this module knows.
    fn extensions_understood(&self) -> bool {
        const CRL: &[ObjectIdentifier] = &[
            ID_CE_CRL_NUMBER,
            ID_CE_DELTA_CRL_INDICATOR,
            ID_CE_ISSUING_DISTRIBUTION_POINT,
            ID_CE_AUTHORITY_KEY_IDENTIFIER,
            ID_CE_ISSUER_ALT_NAME,
            ID_CE_FRESHEST_CRL,
        ];
        const ENTRY: &[ObjectIdentifier] = &[
            ID_CE_CRL_REASONS,
            ID_CE_INVALIDITY_DATE,
            ID_CE_CERTIFICATE_ISSUER,
            ID_CE_HOLD_INSTRUCTION_CODE,
        ];
        let t = &self.list.tbs_cert_list;
        t.crl_extensions
            .iter()
            .flatten()
            .all(|e| !e.critical || CRL.contains(&e.extn_id))
            && t.revoked_certificates.iter().flatten().all(|rc| {
                rc.crl_entry_extensions
                    .iter()
                    .flatten()
                    .all(|e| !e.critical || ENTRY.contains(&e.extn_id))
            })
    }

    /// The entry for `serial` of `issuer`, with the reason (RFC 5280 5.3: the certificate
    /// issuer of an indirect CRL's entries is the CRL issuer until an entry names another).
    /// `Err` when an entry's certificate issuer cannot be read: nothing after it can be
    /// placed, so the CRL cannot say a certificate is not on it.
    fn entry(
        &self,
        serial: &[u8],
        issuer: &Name,
        indirect: bool,
    ) -> Result<Option<(SystemTime, CrlReason)>, ()> {
        let mut current = self.list.tbs_cert_list.issuer.clone();
        for rc in self
            .list
            .tbs_cert_list
            .revoked_certificates
            .iter()
            .flatten()
        {
            let exts = rc.crl_entry_extensions.iter().flatten();
            if indirect
                && let Some(e) = exts.clone().find(|e| e.extn_id == ID_CE_CERTIFICATE_ISSUER)
            {
                match GeneralNames::from_der(e.extn_value.as_bytes())
                    .ok()
                    .and_then(|names| directory_name(&names))
                {
                    Some(n) => current = n,
                    None => return Err(()),
                }
            }
            if rc.serial_number.as_bytes() == serial && certval::compare_names(&current, issuer) {
                let reason = exts
                    .clone()
                    .find(|e| e.extn_id == ID_CE_CRL_REASONS)
                    .and_then(|e| CrlReason::from_der(e.extn_value.as_bytes()).ok())
                    .unwrap_or(CrlReason::Unspecified);
                return Ok(Some((rc.revocation_date.to_system_time(), reason)));
            }
        }
        Ok(None)
    }
}

/// What the CRLs at hand say of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Good,
    Revoked { at: SystemTime },
    Undetermined(String),
}

/// A signature check: the signed bytes, the signature, its algorithm, the key.
pub type Verify<'a> =
    dyn Fn(&[u8], &BitString, &AlgorithmIdentifierOwned, &SubjectPublicKeyInfoOwned) -> bool + 'a;

/// What a status is judged with.
pub struct Context<'a> {
    /// Every CRL at hand (the request's and the fetched), complete and delta.
    pub crls: &'a [Crl],
    /// The anchor and the path's CAs, from the anchor down: the certificate at path
    /// position `p` (0: the one the anchor issued) may take a CRL signer's certificate only
    /// from the first `p + 1` of them, its issuer and those above (RFC 5280 6.3.3 (f): the
    /// same anchor, and never a CA that its own status would vouch for).
    pub vouchers: &'a [&'a CertificateInner<Raw>],
    /// Other certificates at hand that may sign CRLs (the request's chain, the local store).
    pub others: &'a [&'a CertificateInner<Raw>],
    /// The time of interest, seconds since the epoch.
    pub toi: u64,
    pub verify: &'a Verify<'a>,
    /// Signature checks done and their outcomes: a message can bring dozens of CRLs and
    /// certificates all in one name, and each check is a public-key operation.
    pub work: Work,
}

/// The signature checks of one judgement: remembered by object and key, and at most
/// [`MAX_CHECKS`] of them (then no more signers are found: the status stays undetermined).
#[derive(Default)]
pub struct Work {
    done: std::cell::RefCell<std::collections::HashMap<CheckId, bool>>,
    count: std::cell::Cell<usize>,
}

/// A signature check: where the signed object is (address, length) and the key's DER.
type CheckId = (usize, usize, Vec<u8>);

/// Most signature checks one validation's CRL processing makes.
pub const MAX_CHECKS: usize = 2048;

/// The status of the certificate at path position `pos` (0: the one the anchor issued),
/// `cert`, issued by `issuer` (the path's certificate before it, or the anchor), by RFC 5280
/// 6.3.3.
pub fn status(
    ctx: &Context<'_>,
    pos: usize,
    cert: &CertificateInner<Raw>,
    issuer: &CertificateInner<Raw>,
) -> Status {
    let vouchers = &ctx.vouchers[..(pos + 1).min(ctx.vouchers.len())];
    status_at(ctx, vouchers, cert, issuer, &[])
}

/// A CRL signer whose own status is being judged further up: its name and key.
type Pending<'a> = (&'a Name, &'a SubjectPublicKeyInfoOwned);

/// `pending`: the CRL signers whose own status is being judged further up (an indirect CRL
/// issuer's CRL may cover its own certificate, RFC 5280 5.2.5): a CRL in one's name, signed
/// with its key, is read as from that signer, whose own entry then decides.
fn status_at(
    ctx: &Context<'_>,
    vouchers: &[&CertificateInner<Raw>],
    cert: &CertificateInner<Raw>,
    issuer: &CertificateInner<Raw>,
    pending: &[Pending<'_>],
) -> Status {
    const ALL: u16 = Reasons::KeyCompromise as u16
        | Reasons::CaCompromise as u16
        | Reasons::AffiliationChanged as u16
        | Reasons::Superseded as u16
        | Reasons::CessationOfOperation as u16
        | Reasons::CertificateHold as u16
        | Reasons::PrivilegeWithdrawn as u16
        | Reasons::AaCompromise as u16;
    let tbs = cert.tbs_certificate();
    let cert_issuer = tbs.issuer();
    let serial = tbs.serial_number().as_bytes();
    let is_ca = extension::<BasicConstraints>(cert, ID_CE_BASIC_CONSTRAINTS).is_some_and(|b| b.ca);
    let mut dps: Vec<DistributionPoint> = extension::<x509_cert::ext::pkix::CrlDistributionPoints>(
        cert,
        ID_CE_CRL_DISTRIBUTION_POINTS,
    )
    .map(|d| d.0)
    .unwrap_or_default();
    if dps.is_empty() {
        // No distribution point: the issuer's CRLs for its whole scope.
        dps.push(DistributionPoint {
            distribution_point: None,
            reasons: None,
            crl_issuer: None,
        });
    }
    let mut mask: u16 = 0;
    let mut why: Vec<String> = vec![];
    for dp in &dps {
        for crl in newest_first(ctx.crls) {
            if mask == ALL {
                break;
            }
            let Ok(idp) = crl.idp() else { continue };
            if !crl.current(ctx.toi) || !crl.extensions_understood() {
                continue;
            }
            let crl_issuer = &crl.list.tbs_cert_list.issuer;
            let indirect = idp.as_ref().is_some_and(|i| i.indirect_crl);
            // (b)(1) The CRL's issuer: the certificate's, or a cRLIssuer of the
            // distribution point on an indirect CRL.
            match &dp.crl_issuer {
                Some(names) => {
                    let named = names.iter().any(|n| {
                        matches!(n, GeneralName::DirectoryName(d) if certval::compare_names(d, crl_issuer))
                    });
                    if !(named && indirect) {
                        continue;
                    }
                }
                None => {
                    if !certval::compare_names(crl_issuer, cert_issuer) {
                        continue;
                    }
                }
            }
            // (b)(2) The CRL's scope.
            if let Some(idp) = &idp {
                if let Some(idp_name) = &idp.distribution_point {
                    let idp_names = full_names(idp_name, crl_issuer);
                    let dp_names = match (&dp.distribution_point, &dp.crl_issuer) {
                        (Some(n), _) => {
                            let base = dp
                                .crl_issuer
                                .as_ref()
                                .and_then(directory_name)
                                .unwrap_or_else(|| cert_issuer.clone());
                            full_names(n, &base)
                        }
                        (None, Some(names)) => names.clone(),
                        (None, None) => vec![],
                    };
                    if !idp_names
                        .iter()
                        .any(|a| dp_names.iter().any(|b| same_name(a, b)))
                    {
                        continue;
                    }
                }
                if (idp.only_contains_user_certs && is_ca)
                    || (idp.only_contains_ca_certs && !is_ca)
                    || idp.only_contains_attribute_certs
                {
                    continue;
                }
            }
            // (c), (d) The reasons it covers that are still to be covered.
            let idp_reasons = idp
                .as_ref()
                .and_then(|i| i.only_some_reasons)
                .map_or(ALL, |r| r.bits());
            let dp_reasons = dp.reasons.map_or(ALL, |r| r.bits());
            let interim = idp_reasons & dp_reasons & ALL;
            if interim & !mask == 0 {
                continue;
            }
            // (f), (g) Who signed it, and whether that signer may.
            let Some(key) = signer(ctx, vouchers, crl, issuer, pending) else {
                why.push(format!(
                    "a CRL of {} is signed by no key the path vouches for with cRLSign",
                    crl_issuer
                ));
                continue;
            };
            let unreadable =
                || format!("a CRL of {crl_issuer} names a certificate issuer that cannot be read");
            // (a), (h), (i) A delta CRL of this one, when one is at hand: its entries first.
            let mut cert_status: Option<(SystemTime, CrlReason)> = None;
            match delta_for(ctx, crl, &key) {
                Delta::None => {}
                Delta::Stale => {
                    why.push(format!(
                        "the delta CRL of {crl_issuer} at hand is not current"
                    ));
                    continue;
                }
                Delta::Found(d) => match d.entry(serial, cert_issuer, indirect) {
                    Ok(e) => cert_status = e,
                    Err(()) => {
                        why.push(unreadable());
                        continue;
                    }
                },
            }
            // (j) The complete CRL.
            if cert_status.is_none() {
                match crl.entry(serial, cert_issuer, indirect) {
                    Ok(e) => cert_status = e,
                    Err(()) => {
                        why.push(unreadable());
                        continue;
                    }
                }
            }
            match cert_status {
                // (k) Taken off hold.
                Some((_, CrlReason::RemoveFromCRL)) | None => {}
                Some((at, _)) => return Status::Revoked { at },
            }
            mask |= interim;
        }
    }
    if mask == ALL {
        Status::Good
    } else if why.is_empty() {
        Status::Undetermined(format!(
            "no CRL at hand covers {} for every reason (RFC 5280 6.3.3)",
            tbs.subject()
        ))
    } else {
        Status::Undetermined(why.join("; "))
    }
}

/// The complete CRLs at hand, the newest first: an older CRL still current (one a message
/// replays, say) does not stand before a newer one that may list the certificate.
fn newest_first(crls: &[Crl]) -> Vec<&Crl> {
    let mut v: Vec<&Crl> = crls.iter().filter(|c| c.base().is_none()).collect();
    v.sort_by_key(|c| std::cmp::Reverse(c.list.tbs_cert_list.this_update.to_unix_duration()));
    v
}

enum Delta<'a> {
    None,
    Stale,
    Found(&'a Crl),
}

/// The delta CRL at hand for `complete`: same issuer, same scope, signed by the same key,
/// based on a CRL no newer than it; the newest current one.
fn delta_for<'a>(
    ctx: &'a Context<'_>,
    complete: &Crl,
    key: &SubjectPublicKeyInfoOwned,
) -> Delta<'a> {
    let Some(number) = complete.number() else {
        return Delta::None;
    };
    let scope = complete
        .extension(ID_CE_ISSUING_DISTRIBUTION_POINT)
        .map(|e| e.extn_value.as_bytes().to_vec());
    let mut stale = false;
    let mut best: Option<&Crl> = None;
    for d in ctx.crls {
        let Some(base) = d.base() else { continue };
        if !certval::compare_names(
            &d.list.tbs_cert_list.issuer,
            &complete.list.tbs_cert_list.issuer,
        ) || d
            .extension(ID_CE_ISSUING_DISTRIBUTION_POINT)
            .map(|e| e.extn_value.as_bytes().to_vec())
            != scope
            || uint_gt(&base, &number)
            // RFC 5280 5.2.4: a delta CRL is newer than the complete CRL it updates.
            || !d.number().is_some_and(|n| uint_gt(&n, &number))
            || !d.extensions_understood()
            || !signed_by(ctx, d, key)
        {
            continue;
        }
        if !d.current(ctx.toi) {
            stale = true;
            continue;
        }
        if best.is_none_or(|b| {
            uint_gt(
                &d.number().unwrap_or_default(),
                &b.number().unwrap_or_default(),
            )
        }) {
            best = Some(d);
        }
    }
    match (best, stale) {
        (Some(d), _) => Delta::Found(d),
        (None, true) => Delta::Stale,
        (None, false) => Delta::None,
    }
}

/// The key that signed `crl` and may sign CRLs for the certificate: the path issuer's own,
/// or a certificate with the CRL issuer's name and cRLSign that one of the path's CAs (or the
/// anchor) issued, current and not revoked itself.
fn signer(
    ctx: &Context<'_>,
    vouchers: &[&CertificateInner<Raw>],
    crl: &Crl,
    issuer: &CertificateInner<Raw>,
    pending: &[Pending<'_>],
) -> Option<SubjectPublicKeyInfoOwned> {
    let crl_issuer = &crl.list.tbs_cert_list.issuer;
    if certval::compare_names(issuer.tbs_certificate().subject(), crl_issuer)
        && may_sign_crls(issuer)
        && signed_by(ctx, crl, issuer.tbs_certificate().subject_public_key_info())
    {
        return Some(issuer.tbs_certificate().subject_public_key_info().clone());
    }
    if let Some((_, key)) = pending
        .iter()
        .find(|(name, key)| certval::compare_names(name, crl_issuer) && signed_by(ctx, crl, key))
    {
        return Some((*key).clone());
    }
    if pending.len() >= MAX_DEPTH {
        return None;
    }
    for cand in ctx.others.iter().chain(vouchers.iter()) {
        let t = cand.tbs_certificate();
        if !certval::compare_names(t.subject(), crl_issuer)
            || !may_sign_crls(cand)
            || !valid_at(cand, ctx.toi)
            || !extensions_understood(cand)
        {
            continue;
        }
        // Its own certificate first (checked once per certificate, however many CRLs ask):
        // issued by the anchor or a CA of the path above the certificate (the same anchor as
        // the certificate's, RFC 5280 6.3.3 (f)). Only then is the CRL's signature checked
        // with its key, so certificates nobody vouches for cost no CRL checks.
        let Some(at) = vouchers.iter().position(|v| {
            certval::compare_names(v.tbs_certificate().subject(), t.issuer())
                && cert_signed_by(ctx, cand, v.tbs_certificate().subject_public_key_info())
        }) else {
            continue;
        };
        if !signed_by(ctx, crl, t.subject_public_key_info()) {
            continue;
        }
        // And not revoked, judged with only the CAs above its issuer.
        let mut deeper = pending.to_vec();
        deeper.push((t.subject(), t.subject_public_key_info()));
        if status_at(ctx, &vouchers[..=at], cand, vouchers[at], &deeper) == Status::Good {
            return Some(t.subject_public_key_info().clone());
        }
    }
    None
}

/// Every critical extension of a CRL signer's certificate is one a path validator knows
/// (RFC 5280 4.2): one it does not is never a CRL signer here.
fn extensions_understood(cert: &CertificateInner<Raw>) -> bool {
    use const_oid::db::rfc5280::{
        ID_CE_CERTIFICATE_POLICIES, ID_CE_EXT_KEY_USAGE, ID_CE_INHIBIT_ANY_POLICY,
        ID_CE_NAME_CONSTRAINTS, ID_CE_POLICY_CONSTRAINTS, ID_CE_POLICY_MAPPINGS,
        ID_CE_SUBJECT_ALT_NAME, ID_CE_SUBJECT_KEY_IDENTIFIER,
    };
    const KNOWN: &[ObjectIdentifier] = &[
        ID_CE_KEY_USAGE,
        ID_CE_BASIC_CONSTRAINTS,
        ID_CE_CERTIFICATE_POLICIES,
        ID_CE_POLICY_MAPPINGS,
        ID_CE_POLICY_CONSTRAINTS,
        ID_CE_INHIBIT_ANY_POLICY,
        ID_CE_NAME_CONSTRAINTS,
        ID_CE_SUBJECT_ALT_NAME,
        ID_CE_ISSUER_ALT_NAME,
        ID_CE_EXT_KEY_USAGE,
        ID_CE_AUTHORITY_KEY_IDENTIFIER,
        ID_CE_SUBJECT_KEY_IDENTIFIER,
        ID_CE_CRL_DISTRIBUTION_POINTS,
        ID_CE_FRESHEST_CRL,
    ];
    cert.tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .all(|e| !e.critical || KNOWN.contains(&e.extn_id))
}

/// Whether a certificate's key may sign CRLs: no key usage, or one with cRLSign.
fn may_sign_crls(cert: &CertificateInner<Raw>) -> bool {
    match cert
        .tbs_certificate()
        .extensions()
        .and_then(|e| e.iter().find(|e| e.extn_id == ID_CE_KEY_USAGE))
    {
        None => true,
        Some(e) => KeyUsage::from_der(e.extn_value.as_bytes())
            .is_ok_and(|ku| ku.0.contains(KeyUsages::CRLSign)),
    }
}

fn valid_at(cert: &CertificateInner<Raw>, toi: u64) -> bool {
    let v = cert.tbs_certificate().validity();
    v.not_before.to_unix_duration().as_secs() <= toi
        && toi <= v.not_after.to_unix_duration().as_secs()
}

/// Whether the signed object `der` (a certificate or a CRL) verifies with `key`.
/// Remembered by where the CRL is (one of the context's, which live as long as the context;
/// taking `&Crl` keeps a temporary buffer, whose address could be reused, out) and by the
/// key's bits (keys may be copies).
fn signed_by(ctx: &Context<'_>, crl: &Crl, key: &SubjectPublicKeyInfoOwned) -> bool {
    let der = &crl.der;
    let id = (der.as_ptr() as usize, der.len(), key_id(key));
    ctx.work.check(id, || {
        certval::DeferDecodeSigned::from_der(der)
            .is_ok_and(|s| (ctx.verify)(&s.tbs_field, &s.signature, &s.signature_algorithm, key))
    })
}

/// Whether `cert` (a certificate of the context) was signed with `key`.
fn cert_signed_by(
    ctx: &Context<'_>,
    cert: &CertificateInner<Raw>,
    key: &SubjectPublicKeyInfoOwned,
) -> bool {
    let id = (
        cert as *const CertificateInner<Raw> as usize,
        0,
        key_id(key),
    );
    ctx.work.check(id, || {
        cert.to_der().is_ok_and(|der| {
            certval::DeferDecodeSigned::from_der(&der).is_ok_and(|s| {
                (ctx.verify)(&s.tbs_field, &s.signature, &s.signature_algorithm, key)
            })
        })
    })
}

/// A key as the checks remember it: its algorithm and bits, DER (`None`: not remembered).
fn key_id(key: &SubjectPublicKeyInfoOwned) -> Option<Vec<u8>> {
    key.to_der().ok()
}

impl Work {
    /// The remembered outcome of check `id`, else `run` it (within the budget).
    /// Whether the budget ran out: then some signer may not have been found, and the
    /// caller must not take an undetermined status for one that could be allowed.
    pub fn exhausted(&self) -> bool {
        self.count.get() >= MAX_CHECKS
    }

    fn check(&self, id: (usize, usize, Option<Vec<u8>>), run: impl FnOnce() -> bool) -> bool {
        let id = match id {
            (a, b, Some(k)) => Some((a, b, k)),
            _ => None,
        };
        if let Some(done) = id
            .as_ref()
            .and_then(|id| self.done.borrow().get(id).copied())
        {
            return done;
        }
        if self.count.get() >= MAX_CHECKS {
            return false;
        }
        self.count.set(self.count.get() + 1);
        let ok = run();
        if let Some(id) = id {
            self.done.borrow_mut().insert(id, ok);
        }
        ok
    }
}

fn extension<T: for<'a> Decode<'a>>(
    cert: &CertificateInner<Raw>,
    oid: ObjectIdentifier,
) -> Option<T> {
    let e = cert
        .tbs_certificate()
        .extensions()?
        .iter()
        .find(|e| e.extn_id == oid)?;
    T::from_der(e.extn_value.as_bytes()).ok()
}

/// The names a distribution point name stands for: its full names, or the CRL issuer's
/// name with the relative name appended.
fn full_names(name: &DistributionPointName, base: &Name) -> Vec<GeneralName> {
    match name {
        DistributionPointName::FullName(names) => names.clone(),
        DistributionPointName::NameRelativeToCRLIssuer(rdn) => {
            // Name and RDNSequence share an encoding; x509-cert builds a Name from a
            // sequence only through it (or its `hazmat` feature).
            let mut seq: x509_cert::name::RdnSequence = base.clone().into();
            seq.push(rdn.clone());
            seq.to_der()
                .ok()
                .and_then(|d| Name::from_der(&d).ok())
                .map(|n| vec![GeneralName::DirectoryName(n)])
                .unwrap_or_default()
        }
    }
}

fn same_name(a: &GeneralName, b: &GeneralName) -> bool {
    match (a, b) {
        (GeneralName::DirectoryName(x), GeneralName::DirectoryName(y)) => {
            certval::compare_names(x, y)
        }
        _ => a == b,
    }
}

/// The first directory name of a GeneralNames.
fn directory_name(names: &GeneralNames) -> Option<Name> {
    names.iter().find_map(|n| match n {
        GeneralName::DirectoryName(d) => Some(d.clone()),
        _ => None,
    })
}

/// `a > b` for unsigned big-endian integers as DER `Uint` bytes.
fn uint_gt(a: &[u8], b: &[u8]) -> bool {
    let a = strip(a);
    let b = strip(b);
    a.len() > b.len() || (a.len() == b.len() && a > b)
}

fn strip(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    &v[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_checks_are_remembered_and_bounded() {
        let work = Work::default();
        let mut runs = 0;
        for _ in 0..3 {
            assert!(work.check((1, 2, Some(vec![3])), || {
                runs += 1;
                true
            }));
        }
        assert_eq!(runs, 1, "a check is made once");
        for i in 0..MAX_CHECKS {
            work.check((i + 10, 0, Some(vec![])), || true);
        }
        assert!(
            !work.check((usize::MAX, 0, Some(vec![])), || true),
            "past the budget no signer is found"
        );
        assert!(work.check((1, 2, Some(vec![3])), || false), "remembered");
    }

    #[test]
    fn crl_numbers_compare_as_unsigned_integers() {
        assert!(uint_gt(&[2], &[1]));
        assert!(!uint_gt(&[1], &[1]));
        assert!(uint_gt(&[1, 0], &[0xff]));
        assert!(!uint_gt(&[0, 0xff], &[1, 0]));
        assert!(!uint_gt(&[], &[0]));
    }

    #[test]
    fn a_relative_distribution_point_name_extends_the_crl_issuer() {
        let base: Name = "CN=Test CA,O=Test Certificates 2011,C=US".parse().unwrap();
        let rdn: Name = "CN=CRL1".parse().unwrap();
        let rdn = rdn.iter_rdn().next().unwrap().clone();
        let names = full_names(&DistributionPointName::NameRelativeToCRLIssuer(rdn), &base);
        let want: Name = "CN=CRL1,CN=Test CA,O=Test Certificates 2011,C=US"
            .parse()
            .unwrap();
        assert_eq!(names.len(), 1);
        assert!(same_name(&names[0], &GeneralName::DirectoryName(want)));
    }
}

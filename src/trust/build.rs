//! Path building: the candidate paths from a certificate to a trust anchor through a pool of
//! intermediates, depth-first by issuer name with key identifier matches first, bounded in
//! candidates, depth and steps; and the certificates whose issuer is nowhere in the pool
//! (AIA may have it).
//!
//! Written by hand, and why: certval's own path builder (`CertSource::find_all_partial_paths`)
//! precomputes every partial path of a whole, indexed store, which suits a fixed PKI read once
//! but not a pool that changes with every message (its intermediates) and every card; a
//! depth-first search by issuer name (certval's RFC 5280 name comparison), preferring key
//! identifier matches, is a few dozen lines.
//!
//! Owns: the search and its bounds. Must not touch: judging a path (signatures, validity,
//! constraints: certval, called from `path.rs`), fetching (`aia.rs`), revocation.

use std::sync::Arc;

use certval::PDVCertificate;
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, SubjectKeyIdentifier};

use super::validation::{ChainLink, link};
use super::{Anchor, CertOrigin, PoolCert};

/// Candidate paths validated at most per request.
const MAX_CANDIDATES: usize = 8;
/// Longest path (intermediates) searched.
const MAX_DEPTH: usize = 8;
/// Issuer look-ups per search, so a pool built to branch cannot make the search explode.
const MAX_STEPS: usize = 256;

fn akid(c: &PDVCertificate) -> Option<Vec<u8>> {
    let (_, a) = c
        .decoded()
        .tbs_certificate()
        .get_extension::<AuthorityKeyIdentifier>()
        .ok()??;
    a.key_identifier.map(|k| k.as_bytes().to_vec())
}

fn skid(c: &PDVCertificate) -> Option<Vec<u8>> {
    let (_, s) = c
        .decoded()
        .tbs_certificate()
        .get_extension::<SubjectKeyIdentifier>()
        .ok()??;
    Some(s.0.as_bytes().to_vec())
}

/// How well `issuer` fits as the issuer of a certificate with key identifier `akid`:
/// 0 matching key identifiers, 1 unknown, 2 different (tried last).
fn key_id_rank(akid: &Option<Vec<u8>>, issuer: &PDVCertificate) -> u8 {
    match (akid, skid(issuer)) {
        (Some(a), Some(s)) if *a == s => 0,
        (Some(_), Some(_)) => 2,
        _ => 1,
    }
}

/// A candidate path: the anchor, and the intermediates from the anchor's side down.
pub(super) struct Candidate {
    pub(super) anchor: Arc<Anchor>,
    pub(super) intermediates: Vec<Arc<PoolCert>>,
}

struct Search<'a> {
    pool: &'a [Arc<PoolCert>],
    anchors: &'a [Arc<Anchor>],
    out: Vec<Candidate>,
    /// Certificates whose issuer is nowhere at hand (AIA may have it).
    dangling: Vec<PDVCertificate>,
    steps: usize,
}

impl Search<'_> {
    fn dfs(&mut self, cur: &PDVCertificate, cur_sha: [u8; 32], path: &mut Vec<usize>) {
        if self.out.len() >= MAX_CANDIDATES || path.len() > MAX_DEPTH || self.steps >= MAX_STEPS {
            return;
        }
        self.steps += 1;
        let issuer = cur.decoded().tbs_certificate().issuer();
        let akid = akid(cur);
        let mut found = false;

        let mut anchors: Vec<&Arc<Anchor>> = self
            .anchors
            .iter()
            .filter(|a| {
                certval::compare_names(a.cert.decoded().tbs_certificate().subject(), issuer)
            })
            .collect();
        anchors.sort_by_key(|a| key_id_rank(&akid, &a.cert));
        for a in anchors {
            found = true;
            if self.out.len() < MAX_CANDIDATES {
                self.out.push(Candidate {
                    anchor: a.clone(),
                    intermediates: path.iter().rev().map(|i| self.pool[*i].clone()).collect(),
                });
            }
        }

        let mut issuers: Vec<usize> = (0..self.pool.len())
            .filter(|i| {
                let p = &self.pool[*i];
                p.sha256 != cur_sha
                    && !path.contains(i)
                    && certval::compare_names(p.cert.decoded().tbs_certificate().subject(), issuer)
            })
            .collect();
        issuers.sort_by_key(|i| key_id_rank(&akid, &self.pool[*i].cert));
        for i in issuers {
            found = true;
            path.push(i);
            // The pool outlives the search: borrowed, not cloned.
            let pool = self.pool;
            self.dfs(&pool[i].cert, pool[i].sha256, path);
            path.pop();
        }
        if !found {
            self.dangling.push(cur.clone());
        }
    }
}

pub(super) fn search(
    target: &PDVCertificate,
    target_sha: [u8; 32],
    pool: &[Arc<PoolCert>],
    anchors: &[Arc<Anchor>],
) -> (Vec<Candidate>, Vec<PDVCertificate>) {
    let mut s = Search {
        pool,
        anchors,
        out: vec![],
        dangling: vec![],
        steps: 0,
    };
    s.dfs(target, target_sha, &mut vec![]);
    (s.out, s.dangling)
}

pub(super) fn chain_of(target: &PDVCertificate, c: &Candidate) -> Vec<ChainLink> {
    let mut chain = vec![link(target, CertOrigin::Request)];
    chain.extend(
        c.intermediates
            .iter()
            .rev()
            .map(|p| link(&p.cert, p.origin)),
    );
    chain.push(link(&c.anchor.cert, CertOrigin::Anchor));
    chain
}

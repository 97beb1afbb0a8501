//! `validate`: is a certificate valid now (or at a given time) and fit for S/MIME (for
//! signing, encryption or either, and for an address when one is asked), and why not.

use std::time::{SystemTime, UNIX_EPOCH};

use smime_agent_proto::{ValidateFor, ValidateParams, ValidateResult};

use super::{OpContext, OpError};
use crate::certs::profile::{Fitness, ProfileRequest};
use crate::trust::{PolicyInputs, ValidationRequest, certs_from_bytes};

/// Parses an RFC 3339 UTC time (`2024-05-01T12:00:00Z`, `+00:00` also accepted) or a date
/// (`2024-05-01`, midnight UTC).
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("{s:?} is not an RFC 3339 UTC time such as 2024-05-01T12:00:00Z");
    let s = s.trim();
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    // Each field parses at its own width: "2023-257-01" is refused, not read as January.
    let num = |x: &str| x.parse::<u8>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d.as_slice() else {
        return Err(bad());
    };
    let (h, mi, se) = match time {
        None => (0, 0, 0),
        Some(t) => {
            let t = t
                .strip_suffix('Z')
                .or_else(|| t.strip_suffix('z'))
                .or_else(|| t.strip_suffix("+00:00"))
                .ok_or_else(bad)?;
            let t = t.split('.').next().unwrap_or(t);
            let p: Vec<&str> = t.split(':').collect();
            let [h, mi, se] = p.as_slice() else {
                return Err(bad());
            };
            (num(h)?, num(mi)?, num(se)?)
        }
    };
    let y = y.parse::<u16>().map_err(|_| bad())?;
    let dt = der::DateTime::new(y, num(mo)?, num(da)?, h, mi, se).map_err(|_| bad())?;
    Ok(UNIX_EPOCH + dt.unix_duration())
}

pub async fn validate(ctx: &OpContext<'_>, p: ValidateParams) -> Result<ValidateResult, OpError> {
    let cert = certs_from_bytes(&p.certificate.0)
        .into_iter()
        .next()
        .ok_or_else(|| OpError::BadRequest("certificate: no certificate in it".into()))?;
    let chain = p
        .chain
        .iter()
        .flat_map(|c| certs_from_bytes(&c.0))
        .collect();
    let crls = p.crls.into_iter().map(|c| c.0).collect();
    let time = match &p.time {
        Some(t) => parse_time(t).map_err(OpError::BadRequest)?,
        None => SystemTime::now(),
    };
    if let Some(a) = &p.address {
        crate::certs::address::check_address(a)
            .map_err(|e| OpError::BadRequest(format!("address: {e}")))?;
    }
    let policy = p.policy.unwrap_or_default();
    let snapshot = ctx.services.store.snapshot();
    let v = ctx
        .services
        .trust
        .validate(&ValidationRequest {
            cert,
            chain,
            crls,
            token_certs: snapshot.certs().map(|c| c.facts().der.clone()).collect(),
            time: Some(time),
            policy: PolicyInputs {
                initial_policy_set: policy.initial_policy_set,
                initial_explicit_policy: policy.initial_explicit_policy,
                initial_policy_mapping_inhibit: policy.initial_policy_mapping_inhibit,
                initial_inhibit_any_policy: policy.initial_inhibit_any_policy,
            },
            for_send: false,
            profile: ProfileRequest {
                fitness: match p.fitness {
                    Some(ValidateFor::Sign) => Fitness::Sign,
                    Some(ValidateFor::Encrypt) => Fitness::Encrypt,
                    None | Some(ValidateFor::Path) => Fitness::Either,
                },
                address: p.address,
            },
            path_only: p.fitness == Some(ValidateFor::Path),
        })
        .await;
    if v.problems.first().map(|p| p.code) == Some(crate::trust::ProblemCode::Malformed) {
        return Err(OpError::BadRequest(format!("certificate: {}", v.reason())));
    }
    Ok(super::report::to_result(&v, time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_parse() {
        let t = parse_time("2023-11-14T22:13:20Z").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        assert_eq!(
            parse_time("2023-11-14").unwrap(),
            UNIX_EPOCH + Duration::from_secs(1_699_920_000)
        );
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2023-13-01T00:00:00Z").is_err());
        assert!(parse_time("2023-257-01").is_err());
        assert!(parse_time("2023-01-01T256:00:00Z").is_err());
        assert!(parse_time("2023-11-14T22:13:20+02:00").is_err());
    }
}

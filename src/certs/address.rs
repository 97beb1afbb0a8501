//! Mail addresses as the agent accepts and compares them.

/// A plausible addr-spec: one `@`, non-empty local part and domain, no spaces or brackets.
pub fn check_address(a: &str) -> Result<(), String> {
    let ok = match a.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !a.chars().any(|c| c.is_whitespace() || "<>,;\"".contains(c))
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{a:?} is not an e-mail address"))
    }
}

/// Compares addresses as mail clients do: the whole address case-insensitively (the
/// domain is case-insensitive by RFC 5321; local parts are in practice).
pub fn same_address(a: &str, b: &str) -> bool {
    a.trim().eq_ignore_ascii_case(b.trim())
}

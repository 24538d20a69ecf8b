//! Who a connection is: a Kafka principal (`User:alice`), from SASL or from a client
//! certificate's subject through mapping rules like Kafka's `ssl.principal.mapping.rules`.

use std::fmt;

use regex::Regex;

/// The principal of a connection that has not authenticated (plaintext or TLS without a
/// client certificate), as Kafka names it.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// A principal in Kafka's `Type:name` form; Herald only has users.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal(String);

impl Principal {
    /// The user principal `User:<name>`.
    pub fn user(name: &str) -> Principal {
        Principal(format!("User:{name}"))
    }

    /// The anonymous principal.
    pub fn anonymous() -> Principal {
        Principal(ANONYMOUS.to_string())
    }

    /// The principal as Kafka writes it (`User:alice`).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One of Kafka's `ssl.principal.mapping.rules`: `DEFAULT` (the whole distinguished name) or
/// `RULE:pattern/replacement/[LU]`, where the pattern must match the whole name.
#[derive(Debug, Clone)]
enum Rule {
    Default,
    Replace {
        pattern: Regex,
        replacement: String,
        case: Option<char>,
    },
}

/// The parsed mapping rules; the first rule whose pattern matches decides.
///
/// ```
/// use herald_broker::auth::PrincipalMapping;
/// let rules = PrincipalMapping::parse("RULE:^CN=([^,]+),.*$/$1/L,DEFAULT").unwrap();
/// assert_eq!(rules.map("CN=Alice,O=Acme,C=FR"), "alice");
/// assert_eq!(rules.map("O=Acme"), "O=Acme");
/// ```
#[derive(Debug, Clone)]
pub struct PrincipalMapping {
    rules: Vec<Rule>,
}

/// Why mapping rules do not parse.
#[derive(Debug, thiserror::Error)]
#[error("ssl_principal_mapping_rules: {0}")]
pub struct MappingError(String);

impl PrincipalMapping {
    /// Parses a comma-separated list of rules (Kafka's syntax; `/` and `,` inside a pattern
    /// or replacement are escaped with a backslash).
    pub fn parse(text: &str) -> Result<PrincipalMapping, MappingError> {
        let mut rules = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("RULE:") {
                let (pattern, after) = until_slash(after)
                    .ok_or_else(|| MappingError(format!("rule `{rest}` has no replacement")))?;
                let (replacement, after) = until_slash(after)
                    .ok_or_else(|| MappingError(format!("rule `{rest}` is not closed by /")))?;
                let (case, after) = match after.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &after[1..]),
                    _ => (None, after),
                };
                let anchored = format!("^(?:{pattern})$");
                let pattern = Regex::new(&anchored)
                    .map_err(|error| MappingError(format!("pattern `{pattern}`: {error}")))?;
                rules.push(Rule::Replace {
                    pattern,
                    replacement,
                    case,
                });
                rest = after;
            } else {
                return Err(MappingError(format!("unexpected `{rest}`")));
            }
            rest = rest.trim_start();
            match rest.strip_prefix(',') {
                Some(after) => rest = after.trim_start(),
                None if rest.is_empty() => {}
                None => return Err(MappingError(format!("expected `,` before `{rest}`"))),
            }
        }
        if rules.is_empty() {
            rules.push(Rule::Default);
        }
        Ok(PrincipalMapping { rules })
    }

    /// The user name for a certificate subject; the whole name when no rule matches.
    pub fn map(&self, subject: &str) -> String {
        for rule in &self.rules {
            match rule {
                Rule::Default => return subject.to_string(),
                Rule::Replace {
                    pattern,
                    replacement,
                    case,
                } => {
                    if pattern.is_match(subject) {
                        let mapped = pattern.replace(subject, replacement.as_str()).into_owned();
                        return match case {
                            Some('L') => mapped.to_lowercase(),
                            Some('U') => mapped.to_uppercase(),
                            _ => mapped,
                        };
                    }
                }
            }
        }
        subject.to_string()
    }
}

/// Splits at the first unescaped `/`, unescaping `\/` and `\,` on the way.
fn until_slash(text: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped @ ('/' | ','))) => out.push(escaped),
                Some((_, other)) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '/' => return Some((out, &text[index + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// The subject of a DER certificate as RFC 2253 writes it (`CN=alice,OU=eng,O=Acme`: last
/// RDN first, as Java's `X500Principal.getName()` gives Kafka), or `None` if it does not parse.
pub(crate) fn certificate_subject(der: &[u8]) -> Option<String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut parts = Vec::new();
    for rdn in certificate
        .subject()
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let attributes: Vec<String> = rdn
            .iter()
            .map(|attribute| {
                let oid = attribute.attr_type().to_id_string();
                let key = match oid.as_str() {
                    "2.5.4.3" => "CN".to_string(),
                    "2.5.4.6" => "C".to_string(),
                    "2.5.4.7" => "L".to_string(),
                    "2.5.4.8" => "ST".to_string(),
                    "2.5.4.9" => "STREET".to_string(),
                    "2.5.4.10" => "O".to_string(),
                    "2.5.4.11" => "OU".to_string(),
                    "0.9.2342.19200300.100.1.25" => "DC".to_string(),
                    "0.9.2342.19200300.100.1.1" => "UID".to_string(),
                    _ => oid,
                };
                let value = attribute.as_str().unwrap_or("");
                format!("{key}={}", escape_rfc2253(value))
            })
            .collect();
        parts.push(attributes.join("+"));
    }
    Some(parts.join(","))
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (index, c) in value.chars().enumerate() {
        let edge = index == 0 && (c == ' ' || c == '#');
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') || edge {
            out.push('\\');
        }
        out.push(c);
    }
    if out.ends_with(' ') {
        out.insert(out.len() - 1, '\\');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_apply_in_order_and_escapes_are_kept() {
        let rules = PrincipalMapping::parse(
            r"RULE:^CN=(.*?)\,OU=ops.*$/ops-$1/U, RULE:^CN=(.*?),.*$/$1/,DEFAULT",
        )
        .unwrap();
        assert_eq!(rules.map("CN=bob,OU=ops,O=x"), "OPS-BOB");
        assert_eq!(rules.map("CN=carol,O=x"), "carol");
        assert_eq!(rules.map("O=x"), "O=x");
        assert!(PrincipalMapping::parse("RULE:abc").is_err());
        assert!(PrincipalMapping::parse("RULE:(/x/").is_err());
        assert!(PrincipalMapping::parse("NONSENSE").is_err());
        assert_eq!(PrincipalMapping::parse("").unwrap().map("CN=a"), "CN=a");
    }

    #[test]
    fn subjects_read_like_java_prints_them() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CountryName, "FR");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        assert_eq!(
            certificate_subject(certificate.der()).unwrap(),
            r"CN=alice,O=Acme\, Inc,C=FR"
        );
    }
}

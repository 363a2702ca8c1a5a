//! The `x509` identity of a client certificate: its subject DN as ZooKeeper's `X509AuthenticationProvider`
//! names it, `X500Principal.getName()` (RFC 2253).
//!
//! Only the certificate's subject is read, by a small DER walk (the chain itself was verified by rustls):
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial INTEGER,
//!     signature SEQUENCE, issuer Name, validity SEQUENCE, subject Name, ... }, ... }
//! Name ::= SEQUENCE OF SET OF SEQUENCE { type OBJECT IDENTIFIER, value ANY }
//! ```
//!
//! RFC 2253 writes the RDNs last first, joined by `,`, the values of one RDN by `+`; the attribute types Java
//! names (CN, C, L, ST, O, OU, STREET, DC, UID) by name and every other one as its dotted OID with the value's
//! DER in hex (`1.2.840.113549.1.9.1=#16...`, as Java does for emailAddress).
//!
//! # Invariants
//! Every length is checked against what remains; nothing here panics or recurses on hostile input.

/// Why a certificate's subject could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed certificate: {0}")]
pub struct Malformed(&'static str);

/// The subject DN of a DER certificate, as ZooKeeper's x509 auth id.
pub fn subject_dn(cert: &[u8]) -> Result<String, Malformed> {
    let (cert, _) = element(cert, SEQUENCE)?;
    let (mut tbs, _) = element(cert, SEQUENCE)?;
    if tbs.first() == Some(&0xa0) {
        tbs = skip(tbs)?; // version
    }
    for _ in 0..4 {
        tbs = skip(tbs)?; // serial, signature, issuer, validity
    }
    let (mut name, _) = element(tbs, SEQUENCE)?;
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (mut set, rest) = element(name, SET)?;
        name = rest;
        let mut values = Vec::new();
        while !set.is_empty() {
            let (ava, rest) = element(set, SEQUENCE)?;
            set = rest;
            values.push(attribute(ava)?);
        }
        rdns.push(values.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;

/// One `type=value`.
fn attribute(ava: &[u8]) -> Result<String, Malformed> {
    let (oid, value) = element(ava, OID)?;
    let oid = dotted(oid)?;
    let name = match oid.as_str() {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return Ok(format!("{oid}=#{}", hex(value))),
    };
    let tag = *value.first().ok_or(Malformed("an attribute without a value"))?;
    let (text, _) = element(value, tag)?;
    let text = match tag {
        // UTF8String, PrintableString, TeletexString (as Latin-1, as Java reads it), IA5String.
        0x0c | 0x13 | 0x16 => String::from_utf8_lossy(text).into_owned(),
        0x14 => text.iter().map(|&b| char::from(b)).collect(),
        // BMPString: UTF-16BE.
        0x1e => String::from_utf16_lossy(
            &text.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect::<Vec<_>>(),
        ),
        _ => return Ok(format!("{name}=#{}", hex(value))),
    };
    Ok(format!("{name}={}", escape(&text)))
}

/// RFC 2253 section 2.4's escapes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let last = text.chars().count().saturating_sub(1);
    for (i, c) in text.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OID's dotted form.
fn dotted(oid: &[u8]) -> Result<String, Malformed> {
    let mut arcs: Vec<u64> = Vec::new();
    let mut arc: u64 = 0;
    for &b in oid {
        arc = arc.checked_mul(128).ok_or(Malformed("an OID arc too large"))? | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (arc / 40).min(2);
                arcs.push(first);
                arcs.push(arc - first * 40);
            } else {
                arcs.push(arc);
            }
            arc = 0;
        }
    }
    if arcs.is_empty() || oid.last().is_some_and(|b| b & 0x80 != 0) {
        return Err(Malformed("a truncated OID"));
    }
    Ok(arcs.iter().map(u64::to_string).collect::<Vec<_>>().join("."))
}

/// The contents of the element at the start of `der`, which must have tag `tag`, and what follows it.
fn element(der: &[u8], tag: u8) -> Result<(&[u8], &[u8]), Malformed> {
    let (found, contents, rest) = tlv(der)?;
    if found != tag {
        return Err(Malformed("an unexpected tag"));
    }
    Ok((contents, rest))
}

/// What follows the element at the start of `der`.
fn skip(der: &[u8]) -> Result<&[u8], Malformed> {
    tlv(der).map(|(_, _, rest)| rest)
}

/// Tag, contents and rest (DER: one-byte tags, definite lengths of at most four bytes).
fn tlv(der: &[u8]) -> Result<(u8, &[u8], &[u8]), Malformed> {
    let short = Malformed("a truncated element");
    let (&tag, der) = der.split_first().ok_or(short.clone())?;
    let (&first, mut der) = der.split_first().ok_or(short.clone())?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || der.len() < n {
            return Err(Malformed("a bad length"));
        }
        let len = der[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        der = &der[n..];
        len
    };
    if der.len() < len {
        return Err(short);
    }
    Ok((tag, &der[..len], &der[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DER of `SEQUENCE { tag(contents) ... }` pieces, for hand-built certificates.
    fn tlv_of(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(u8::try_from(contents.len()).unwrap());
        } else {
            out.push(0x82);
            out.extend_from_slice(&u16::try_from(contents.len()).unwrap().to_be_bytes());
        }
        out.extend_from_slice(contents);
        out
    }

    fn ava(oid: &[u8], tag: u8, value: &str) -> Vec<u8> {
        let seq = [tlv_of(OID, oid), tlv_of(tag, value.as_bytes())].concat();
        tlv_of(SET, &tlv_of(SEQUENCE, &seq))
    }

    fn cert_with_subject(rdns: &[Vec<u8>]) -> Vec<u8> {
        let name = tlv_of(SEQUENCE, &rdns.concat());
        let tbs = [
            tlv_of(0xa0, &tlv_of(0x02, &[2])),
            tlv_of(0x02, &[1]),
            tlv_of(SEQUENCE, &[]),
            tlv_of(SEQUENCE, &[]),
            tlv_of(SEQUENCE, &[]),
            name,
        ]
        .concat();
        tlv_of(SEQUENCE, &tlv_of(SEQUENCE, &tbs))
    }

    #[test]
    fn the_subject_reads_last_rdn_first_as_java_does() {
        let cert = cert_with_subject(&[
            ava(&[0x55, 4, 6], 0x13, "US"),
            ava(&[0x55, 4, 10], 0x0c, "Ensemble, Inc"),
            ava(&[0x55, 4, 3], 0x0c, "client1"),
            ava(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 1, 9, 1], 0x16, "a@b"),
        ]);
        assert_eq!(subject_dn(&cert).unwrap(), "1.2.840.113549.1.9.1=#1603614062,CN=client1,O=Ensemble\\, Inc,C=US");
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        let cert = cert_with_subject(&[ava(&[0x55, 4, 3], 0x0c, "client1")]);
        for cut in 0..cert.len() {
            let _ = subject_dn(&cert[..cut]);
        }
        assert!(subject_dn(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(subject_dn(&[0x30, 0x89, 1]).is_err());
    }

    #[test]
    fn escapes_follow_rfc_2253() {
        assert_eq!(escape(" #a+b "), "\\ #a\\+b\\ ");
        assert_eq!(escape("#x"), "\\#x");
    }
}

//! Path validation, as ZooKeeper's `PathUtils.validatePath` does it.
//!
//! Rules: the path starts with `/`; `/` alone is the root; otherwise it must not end with `/`, must not hold an
//! empty segment (`//`), a `.` or `..` segment, a NUL, or a character in U+0001..U+001F, U+007F..U+009F,
//! U+D800..U+F8FF, U+FFF0..U+FFFF. ZooKeeper checks UTF-16 code units, so every character above U+FFFF (a
//! surrogate pair) is refused as well.

/// Why a path is invalid (the server reports every one of these as `BadArguments`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Invalid path string \"{path}\" caused by {reason}")]
pub struct InvalidPath {
    /// The path.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks `path`; for a sequential create, as ZooKeeper does, the path with a digit appended.
pub fn validate_path(path: &str, sequential: bool) -> Result<(), InvalidPath> {
    if sequential {
        return validate(&format!("{path}1"));
    }
    validate(path)
}

fn validate(path: &str) -> Result<(), InvalidPath> {
    // ZooKeeper checks UTF-16 code units (Java chars), and the positions it reports count them. An ASCII path's
    // bytes are its code units: no copy needed.
    if path.is_ascii() {
        let bytes = path.as_bytes();
        return validate_units(path, bytes.len(), |i| u16::from(bytes[i]));
    }
    let chars: Vec<u16> = path.encode_utf16().collect();
    validate_units(path, chars.len(), |i| chars[i])
}

/// Checks the `len` UTF-16 code units of `path`, `at(i)` being the i-th.
fn validate_units(path: &str, len: usize, at: impl Fn(usize) -> u16) -> Result<(), InvalidPath> {
    let fail = |reason: String| Err(InvalidPath { path: path.to_owned(), reason });
    if len == 0 {
        return fail("Path length must be > 0".into());
    }
    if at(0) != u16::from(b'/') {
        return fail("Path must start with / character".into());
    }
    if len == 1 {
        return Ok(());
    }
    if at(len - 1) == u16::from(b'/') {
        return fail("Path must not end with / character".into());
    }
    let (slash, dot) = (u16::from(b'/'), u16::from(b'.'));
    let segment_end = |i: usize| i + 1 == len || at(i + 1) == slash;
    for i in 1..len {
        let (c, last) = (at(i), at(i - 1));
        let reason = if c == 0 {
            "null character not allowed"
        } else if c == slash && last == slash {
            "empty node name specified"
        } else if c == dot && (last == slash || (last == dot && i >= 2 && at(i - 2) == slash)) && segment_end(i) {
            "relative paths not allowed"
        } else if matches!(c, 0x0001..=0x001f | 0x007f..=0x009f | 0xd800..=0xf8ff | 0xfff0..=0xffff) {
            "invalid character"
        } else {
            continue;
        };
        return fail(format!("{reason} @{i}"));
    }
    Ok(())
}

/// The parent of a valid, non-root path (`/a/b` -> `/a`, `/a` -> `/`).
pub fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

/// The last segment of a valid, non-root path.
pub fn name(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// The path of `child` under `parent`.
pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths() {
        for p in ["/", "/a", "/a/b", "/...", "/.a", "/a.", "/a/..b", "/zookeeper", "/é/ü", "/a b"] {
            assert_eq!(validate_path(p, false), Ok(()), "{p}");
        }
        assert_eq!(validate_path("/a/", true), Ok(()), "a sequential parent path may end with /");
    }

    #[test]
    fn invalid_paths_say_why_like_zookeeper() {
        let cases = [
            ("", "Path length must be > 0"),
            ("a", "Path must start with / character"),
            ("/a/", "Path must not end with / character"),
            ("//a", "empty node name specified @1"),
            ("/a//b", "empty node name specified @3"),
            ("/.", "relative paths not allowed @1"),
            ("/a/..", "relative paths not allowed @4"),
            ("/a/./b", "relative paths not allowed @3"),
            ("/a\0", "null character not allowed @2"),
            ("/a\u{1}", "invalid character @2"),
            ("/\u{7f}", "invalid character @1"),
            ("/\u{e000}", "invalid character @1"),
            ("/\u{fff5}", "invalid character @1"),
            ("/\u{1F600}", "invalid character @1"),
        ];
        for (path, reason) in cases {
            let err = validate_path(path, false).unwrap_err();
            assert!(err.reason == reason, "{path:?}: got {:?}, want {reason:?}", err.reason);
        }
    }

    #[test]
    fn parent_and_name() {
        assert_eq!((parent("/a"), name("/a")), ("/", "a"));
        assert_eq!((parent("/a/b/c"), name("/a/b/c")), ("/a/b", "c"));
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}

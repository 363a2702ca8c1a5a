//! JAAS login configuration files (`java.security.auth.login.config`), as Java's `ConfigFile` reads them:
//!
//! ```text
//! Server {
//!        org.apache.zookeeper.server.auth.DigestLoginModule required
//!        user_super="adminsecret"
//!        user_bob="bobsecret";
//! };
//! // line comments and /* block comments */ anywhere between tokens
//! ```
//!
//! A file is sections; a section is a name and, in braces, login module entries, each a class name, a flag
//! (`required`, `requisite`, `sufficient`, `optional`, any case) and `key=value` options (a value quoted, with
//! `\` escaping the next character, or a bare word) ended by `;`; the closing brace is followed by `;`. A
//! section named twice is refused, as Java refuses it. Any error names its line. Java's `${property}`
//! expansion in values is not done: a value is taken as written.
//!
//! # Limits
//! The file is read whole, once, at start, and must be under [`MAX_FILE_LEN`]; parsing is one pass over it.

use std::path::{Path, PathBuf};

/// The largest JAAS file read (a few users take a few hundred bytes).
pub const MAX_FILE_LEN: u64 = 1 << 20;

/// A JAAS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JaasError {
    /// It could not be read.
    #[error("JAAS file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// It is not a JAAS configuration.
    #[error("JAAS file {path}, line {line}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// How a login module's failure counts (Java's `LoginModuleControlFlag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// `required`.
    Required,
    /// `requisite`.
    Requisite,
    /// `sufficient`.
    Sufficient,
    /// `optional`.
    Optional,
}

/// One login module line of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The login module's class name.
    pub module: String,
    /// Its flag.
    pub flag: Flag,
    /// Its options in file order (a key given twice: the last one counts, as in Java's map).
    pub options: Vec<(String, String)>,
    /// The line the entry starts on.
    pub line: usize,
}

/// A named section (`Server`, `Client`, `QuorumServer`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Its name.
    pub name: String,
    /// Its entries.
    pub entries: Vec<Entry>,
    /// The line its name is on.
    pub line: usize,
}

/// A parsed JAAS file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jaas {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// Its sections in file order.
    pub sections: Vec<Section>,
}

impl Jaas {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Jaas, JaasError> {
        let io = |source| JaasError::Io { path: path.to_path_buf(), source };
        let len = std::fs::metadata(path).map_err(io)?.len();
        if len > MAX_FILE_LEN {
            return Err(io(std::io::Error::other(format!("{len} bytes, over the limit of {MAX_FILE_LEN}"))));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Jaas::parse(path, &text)
    }

    /// Parses the text of a JAAS file read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Jaas, JaasError> {
        let tokens =
            tokenize(text).map_err(|(line, message)| JaasError::Syntax { path: path.into(), line, message })?;
        let mut parser = Parser { tokens, at: 0, last_line: text.lines().count().max(1) };
        let sections =
            parser.sections().map_err(|(line, message)| JaasError::Syntax { path: path.into(), line, message })?;
        Ok(Jaas { path: path.to_path_buf(), sections })
    }

    /// The section named `name`.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    Quoted(String),
    Punct(char),
}

type Failure = (usize, String);

/// Splits the text into words, quoted strings and `{ } ; =`, dropping white space and comments.
fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, Failure> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let start = line;
                chars.next();
                let mut previous = ' ';
                loop {
                    match chars.next() {
                        Some('/') if previous == '*' => break,
                        Some(c) => {
                            line += usize::from(c == '\n');
                            previous = c;
                        }
                        None => return Err((start, "a /* comment is not closed".into())),
                    }
                }
            }
            '{' | '}' | ';' | '=' => tokens.push((line, Token::Punct(c))),
            '"' => {
                let start = line;
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => {
                                line += usize::from(c == '\n');
                                value.push(c);
                            }
                            None => return Err((start, "a quoted value is not closed".into())),
                        },
                        Some(c) => {
                            line += usize::from(c == '\n');
                            value.push(c);
                        }
                        None => return Err((start, "a quoted value is not closed".into())),
                    }
                }
                tokens.push((start, Token::Quoted(value)));
            }
            c if is_word_char(c) => {
                let mut word = String::from(c);
                while let Some(&c) = chars.peek() {
                    if !is_word_char(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push((line, Token::Word(word)));
            }
            other => return Err((line, format!("unexpected character {other:?}"))),
        }
    }
    Ok(tokens)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '$' | '-' | '*' | '.' | '/' | ':' | '@' | '+')
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    at: usize,
    /// Where the text ends, for "expected ..., found the end of the file".
    last_line: usize,
}

impl Parser {
    fn peek(&self) -> Option<&(usize, Token)> {
        self.tokens.get(self.at)
    }

    fn next(&mut self, expected: &str) -> Result<(usize, Token), Failure> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token.ok_or_else(|| (self.last_line, format!("expected {expected}, found the end of the file")))
    }

    fn word(&mut self, expected: &str) -> Result<(usize, String), Failure> {
        match self.next(expected)? {
            (line, Token::Word(word)) => Ok((line, word)),
            (line, other) => Err((line, format!("expected {expected}, found {}", describe(&other)))),
        }
    }

    fn punct(&mut self, c: char) -> Result<(), Failure> {
        match self.next(&format!("'{c}'"))? {
            (_, Token::Punct(p)) if p == c => Ok(()),
            (line, other) => Err((line, format!("expected '{c}', found {}", describe(&other)))),
        }
    }

    fn sections(&mut self) -> Result<Vec<Section>, Failure> {
        let mut sections: Vec<Section> = Vec::new();
        while self.peek().is_some() {
            let (line, name) = self.word("a section name")?;
            if let Some(first) = sections.iter().find(|s| s.name == name) {
                return Err((line, format!("section {name} is given twice (first on line {})", first.line)));
            }
            self.punct('{')?;
            let mut entries = Vec::new();
            while !matches!(self.peek(), Some((_, Token::Punct('}')))) {
                entries.push(self.entry()?);
            }
            self.punct('}')?;
            self.punct(';')?;
            sections.push(Section { name, entries, line });
        }
        Ok(sections)
    }

    fn entry(&mut self) -> Result<Entry, Failure> {
        let (line, module) = self.word("a login module class name")?;
        let (flag_line, flag) = self.word("a flag (required, requisite, sufficient or optional)")?;
        let flag = match flag.to_ascii_lowercase().as_str() {
            "required" => Flag::Required,
            "requisite" => Flag::Requisite,
            "sufficient" => Flag::Sufficient,
            "optional" => Flag::Optional,
            _ => {
                return Err((flag_line, format!("invalid flag {flag:?}: required, requisite, sufficient or optional")))
            }
        };
        let mut options = Vec::new();
        loop {
            match self.next("an option or ';'")? {
                (_, Token::Punct(';')) => break,
                (_, Token::Word(key)) => {
                    self.punct('=')?;
                    let value = match self.next("an option value")? {
                        (_, Token::Word(v) | Token::Quoted(v)) => v,
                        (line, other) => {
                            return Err((line, format!("expected a value for {key}, found {}", describe(&other))))
                        }
                    };
                    options.push((key, value));
                }
                (line, other) => return Err((line, format!("expected an option or ';', found {}", describe(&other)))),
            }
        }
        Ok(Entry { module, flag, options, line })
    }
}

fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => format!("{w:?}"),
        Token::Quoted(q) => format!("the quoted value {q:?}"),
        Token::Punct(p) => format!("'{p}'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Jaas, JaasError> {
        Jaas::parse(Path::new("jaas.conf"), text)
    }

    fn line_of(text: &str) -> (usize, String) {
        match parse(text) {
            Err(JaasError::Syntax { line, message, .. }) => (line, message),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn zookeepers_example_parses() {
        let text = "/* ZooKeeper's documentation */\nServer {\n  org.apache.zookeeper.server.auth.DigestLoginModule required\n  \
                    user_super=\"adminsecret\"\n  user_bob=\"b\\\"s\\\\\"; // bob\n};\nClient {\n  \
                    org.apache.zookeeper.server.auth.DigestLoginModule REQUIRED username=bob password=\"bobsecret\";\n};\n";
        let jaas = parse(text).unwrap();
        let server = jaas.section("Server").unwrap();
        assert_eq!(server.line, 2);
        assert_eq!(
            server.entries,
            vec![Entry {
                module: "org.apache.zookeeper.server.auth.DigestLoginModule".into(),
                flag: Flag::Required,
                options: vec![("user_super".into(), "adminsecret".into()), ("user_bob".into(), "b\"s\\".into())],
                line: 3,
            }]
        );
        assert_eq!(jaas.section("Client").unwrap().entries[0].options[0], ("username".into(), "bob".into()));
        assert!(jaas.section("server").is_none(), "section names are case-sensitive");
        assert_eq!(parse("").unwrap().sections, vec![]);
    }

    #[test]
    fn malformed_files_name_the_line() {
        let m = "org.apache.zookeeper.server.auth.DigestLoginModule";
        assert_eq!(line_of(&format!("Server {{\n {m} required\n user_a=\"x\"\n}};")).0, 4, "no ';' after the entry");
        assert_eq!(line_of(&format!("Server {{\n {m} mandatory user_a=\"x\";\n}};")).0, 2);
        assert_eq!(line_of(&format!("Server {{\n {m} required user_a=\"x;\n}};\n")).0, 2, "open quote");
        assert_eq!(line_of(&format!("Server {{\n {m} required user_a=\"x\";\n}}\n")).0, 3, "no ';' after the brace");
        assert_eq!(line_of(&format!("Server {{\n {m} required user_a;\n}};")).0, 2);
        assert_eq!(line_of("Server {\n};\n/* never closed\n").0, 3);
        assert_eq!(line_of("Server {\n};\nServer {\n};").1, "section Server is given twice (first on line 1)");
        assert_eq!(line_of("Server {\n a required x=\"1\" ! ;\n};").0, 2);
        assert_eq!(line_of("{").0, 1);
    }
}

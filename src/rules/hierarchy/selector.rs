//! Parser for the Kubernetes label-selector string grammar (`a=b, c!=d, e in (f,g), h notin (i),
//! j, !k`) into kube's own [`Selector`], which does the matching. No I/O.
//!
//! kube-core 5 has `Selector`/`Expression` and their matcher but no string parser, so this is
//! the small piece that is missing. Two entry points:
//! * [`parse`]: the grammar of apimachinery's `labels.Parse` (`!=` included, as `notin`).
//! * [`parse_label_selector`]: what HNC actually evaluates for `select`, i.e. `labels.Parse`
//!   followed by `metav1.ParseToLabelSelector` + `LabelSelectorAsSelector`, which refuses `!=`
//!   (a `LabelSelector` has no such operator), `>` and `<`, and puts `a=b` into `matchLabels`,
//!   where a later `a=c` replaces an earlier one.
//!
//! In both, keys must be qualified names and values label values.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Expression, Selector};

/// Why a selector string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("found {found:?}, expected {expected}")]
    Unexpected { found: String, expected: &'static str },
    #[error("invalid label key {key:?}: {problem}")]
    InvalidKey { key: String, problem: String },
    #[error("invalid label value {value:?} for key {key:?}: {problem}")]
    InvalidValue {
        key: String,
        value: String,
        problem: String,
    },
    #[error("operator {operator:?} is not supported in label selectors{hint}")]
    Unsupported { operator: String, hint: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    End,
}

impl Token {
    fn text(&self) -> String {
        match self {
            Token::Ident(s) => s.clone(),
            Token::Not => "!".into(),
            Token::Eq => "=".into(),
            Token::DoubleEq => "==".into(),
            Token::NotEq => "!=".into(),
            Token::Gt => ">".into(),
            Token::Lt => "<".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::Comma => ",".into(),
            Token::End => "end of string".into(),
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

/// Splits the input like apimachinery's lexer: identifiers run until whitespace or a special
/// symbol; `!=` and `==` are taken greedily over `!` and `=`.
fn lex(input: &str) -> Vec<Token> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if is_special(c) {
            let next = chars.get(i + 1).copied();
            let (token, width) = match (c, next) {
                ('!', Some('=')) => (Token::NotEq, 2),
                ('=', Some('=')) => (Token::DoubleEq, 2),
                ('!', _) => (Token::Not, 1),
                ('=', _) => (Token::Eq, 1),
                ('>', _) => (Token::Gt, 1),
                ('<', _) => (Token::Lt, 1),
                ('(', _) => (Token::Open, 1),
                (')', _) => (Token::Close, 1),
                _ => (Token::Comma, 1),
            };
            tokens.push(token);
            i += width;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !is_special(chars[i]) {
            i += 1;
        }
        tokens.push(Token::Ident(chars[start..i].iter().collect()));
    }
    tokens.push(Token::End);
    tokens
}

/// One parsed requirement before it is folded into `matchLabels` / `matchExpressions`.
enum Requirement {
    Equal(String, String),
    NotEqual(String, String),
    Other(Expression),
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let token = self.peek().clone();
        self.pos += 1;
        token
    }

    fn requirements(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut out = Vec::new();
        if *self.peek() == Token::End {
            return Ok(out);
        }
        loop {
            out.push(self.requirement()?);
            match self.next() {
                Token::End => return Ok(out),
                Token::Comma => {
                    if !matches!(self.peek(), Token::Ident(_) | Token::Not) {
                        return Err(unexpected(self.peek(), "an identifier after ','"));
                    }
                }
                other => return Err(unexpected(&other, "',' or end of string")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let negated = *self.peek() == Token::Not;
        if negated {
            self.pos += 1;
        }
        let key = match self.next() {
            Token::Ident(key) => key,
            other => return Err(unexpected(&other, "an identifier")),
        };
        validate_key(&key)?;
        if negated {
            return Ok(Requirement::Other(Expression::DoesNotExist(key)));
        }
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(Requirement::Other(Expression::Exists(key)));
        }
        match self.next() {
            Token::Eq | Token::DoubleEq => {
                let value = self.exact_value(&key)?;
                Ok(Requirement::Equal(key, value))
            }
            Token::NotEq => {
                let value = self.exact_value(&key)?;
                Ok(Requirement::NotEqual(key, value))
            }
            Token::Ident(word) if word == "in" => {
                let values = self.values(&key)?;
                Ok(Requirement::Other(Expression::In(key, values)))
            }
            Token::Ident(word) if word == "notin" => {
                let values = self.values(&key)?;
                Ok(Requirement::Other(Expression::NotIn(key, values)))
            }
            op @ (Token::Gt | Token::Lt) => Err(SelectorError::Unsupported {
                operator: op.text(),
                hint: "",
            }),
            other => Err(unexpected(&other, "one of =, ==, !=, in, notin")),
        }
    }

    fn exact_value(&mut self, key: &str) -> Result<String, SelectorError> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(String::new());
        }
        match self.next() {
            Token::Ident(value) => validate_value(key, value),
            other => Err(unexpected(&other, "a value")),
        }
    }

    /// `( v1, v2 )`; an empty item (`()`, `(a,)`) is the empty value, as apimachinery has it.
    fn values(&mut self, key: &str) -> Result<BTreeSet<String>, SelectorError> {
        match self.next() {
            Token::Open => {}
            other => return Err(unexpected(&other, "'('")),
        }
        let mut values = BTreeSet::new();
        let mut current = String::new();
        loop {
            match self.next() {
                Token::Ident(value) if current.is_empty() => current = value,
                Token::Comma => {
                    values.insert(validate_value(key, std::mem::take(&mut current))?);
                }
                Token::Close => {
                    values.insert(validate_value(key, current)?);
                    return Ok(values);
                }
                other => return Err(unexpected(&other, "',' or ')' or a value")),
            }
        }
    }
}

fn unexpected(found: &Token, expected: &'static str) -> SelectorError {
    SelectorError::Unexpected {
        found: found.text(),
        expected,
    }
}

/// Parses a selector string with the full `labels.Parse` grammar (`a!=b` means "not a=b",
/// absent included). The empty (or blank) string selects everything, which
/// [`Selector::selects_all`] reports.
pub fn parse(input: &str) -> Result<Selector, SelectorError> {
    fold(requirements(input)?, true)
}

/// Parses a selector string exactly as HNC evaluates its `select` annotation, through a
/// `LabelSelector`: `!=` is refused there (use `notin`).
pub fn parse_label_selector(input: &str) -> Result<Selector, SelectorError> {
    fold(requirements(input)?, false)
}

fn requirements(input: &str) -> Result<Vec<Requirement>, SelectorError> {
    Parser {
        tokens: lex(input),
        pos: 0,
    }
    .requirements()
}

fn fold(requirements: Vec<Requirement>, allow_not_equal: bool) -> Result<Selector, SelectorError> {
    let mut match_labels = BTreeMap::new();
    let mut expressions = Vec::new();
    for requirement in requirements {
        match requirement {
            Requirement::Equal(key, value) => {
                match_labels.insert(key, value);
            }
            Requirement::NotEqual(key, value) if allow_not_equal => {
                expressions.push(Expression::NotIn(key, BTreeSet::from([value])));
            }
            Requirement::NotEqual(..) => {
                return Err(SelectorError::Unsupported {
                    operator: "!=".into(),
                    hint: " (a LabelSelector has no '!='); write `key notin (value)` instead",
                });
            }
            Requirement::Other(expression) => expressions.push(expression),
        }
    }
    let equals = match_labels
        .into_iter()
        .map(|(key, value)| Expression::Equal(key, value));
    Ok(equals.chain(expressions).collect())
}

/// Whether `s` is a DNS-1123 label: what a namespace name must be.
pub fn dns1123_label_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        return Some("must not be empty".into());
    }
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let ok_inner = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    let ok_ends = !s.starts_with('-') && !s.ends_with('-');
    if ok_inner && ok_ends {
        None
    } else {
        Some(
            "must consist of lower case alphanumeric characters or '-', and must start and end \
             with an alphanumeric character"
                .into(),
        )
    }
}

fn dns1123_subdomain_problem(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("prefix must be no more than 253 characters".into());
    }
    s.split('.')
        .find_map(dns1123_label_problem)
        .map(|problem| format!("prefix {problem}"))
}

/// A label name (the part after an optional `prefix/`), and a label value when non-empty.
fn label_name_problem(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let inner_ok = s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'));
    let ends_ok = s.chars().next().is_some_and(alnum) && s.chars().last().is_some_and(alnum);
    if inner_ok && ends_ok {
        None
    } else {
        Some(
            "must consist of alphanumeric characters, '-', '_' or '.', and must start and end \
             with an alphanumeric character"
                .into(),
        )
    }
}

fn validate_key(key: &str) -> Result<(), SelectorError> {
    let problem = match key.split_once('/') {
        Some(("", _)) => Some("prefix part must be non-empty".into()),
        Some((_, name)) if name.contains('/') => Some("must have at most one '/'".into()),
        Some((prefix, name)) => dns1123_subdomain_problem(prefix).or_else(|| name_problem(name)),
        None => name_problem(key),
    };
    match problem {
        Some(problem) => Err(SelectorError::InvalidKey {
            key: key.into(),
            problem,
        }),
        None => Ok(()),
    }
}

fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    label_name_problem(name).map(|problem| format!("name part {problem}"))
}

fn validate_value(key: &str, value: String) -> Result<String, SelectorError> {
    if value.is_empty() {
        return Ok(value);
    }
    match label_name_problem(&value) {
        Some(problem) => Err(SelectorError::InvalidValue {
            key: key.into(),
            value,
            problem,
        }),
        None => Ok(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::SelectorExt;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn grammar_matches_like_apimachinery() {
        let l = labels(&[("env", "prod"), ("tier", "web"), ("x.tree.example.io/depth", "1")]);
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("   ", true),
            ("env=prod", true),
            ("env==prod", true),
            ("env=dev", false),
            ("env!=dev", true),
            ("missing!=dev", true),
            ("env in (prod, dev)", true),
            ("env in (dev)", false),
            ("env notin (dev)", true),
            ("missing notin (dev)", true),
            ("env", true),
            ("missing", false),
            ("!missing", true),
            ("!env", false),
            ("env=prod,tier=web", true),
            ("env=prod, tier=db", false),
            ("x.tree.example.io/depth", true),
            ("!x.tree.example.io/depth", false),
            ("env=", false),
            ("missing=", false),
            ("missing in ()", false),
            // a later `a=` replaces an earlier one in matchLabels, as in ParseToLabelSelector
            ("env=dev,env=prod", true),
        ];
        for (input, want) in cases {
            let selector = parse(input).unwrap_or_else(|e| unreachable!("{input}: {e}"));
            assert_eq!(selector.matches(&l), *want, "{input:?}");
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            "$foo",
            "env=prod,",
            ",env",
            "env in prod",
            "env in (prod",
            "env=pr od",
            "env > 1",
            "env < 1",
            "!env=prod",
            "-bad",
            "a/b/c",
            "/a",
            "a/",
            "Bad_Prefix/a",
            "env=-x",
            "env notin (a,-b)",
            "env (a)",
        ];
        for input in cases {
            assert!(parse(input).is_err(), "{input:?} should be refused");
        }
        assert_eq!(
            parse("env > 1"),
            Err(SelectorError::Unsupported {
                operator: ">".into(),
                hint: ""
            })
        );
    }

    #[test]
    fn not_equal_only_outside_label_selectors() {
        let l = labels(&[("env", "prod")]);
        assert!(parse("env!=dev").is_ok_and(|s| s.matches(&l)));
        assert!(parse("env!=prod").is_ok_and(|s| !s.matches(&l)));
        let refused = parse_label_selector("env!=dev");
        assert!(
            matches!(&refused, Err(SelectorError::Unsupported { operator, .. }) if operator == "!="),
            "{refused:?}"
        );
        assert!(parse_label_selector("env notin (dev)").is_ok_and(|s| s.matches(&l)));
        assert!(parse_label_selector("env=prod,!x").is_ok_and(|s| s.matches(&l)));
    }

    #[test]
    fn empty_selects_all() {
        assert!(parse("").is_ok_and(|s| s.selects_all()));
        assert!(parse("a").is_ok_and(|s| !s.selects_all()));
    }

    #[test]
    fn dns_labels() {
        assert_eq!(dns1123_label_problem("team-a1"), None);
        for bad in ["", "Team", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert!(dns1123_label_problem(bad).is_some(), "{bad:?}");
        }
    }
}

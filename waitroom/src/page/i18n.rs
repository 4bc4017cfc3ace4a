//! The page's words and the buyer's language.
//!
//! Each language is a [Project Fluent](https://projectfluent.org) file named by its language
//! tag: English (`en`) and Korean (`ko`) are compiled in from `waitroom/locales/`, and
//! `waitroom.locales_dir` may name a directory of more (`fr.ftl`, `pt-BR.ftl`; a file named like
//! a built-in language replaces its words). Every file is parsed and checked once, at start:
//! English is the reference, and every other language has each of its messages, no other, with
//! the same `{ $variables }`; a file that does not parse or does not match refuses the start,
//! naming the file and the message. Each message is then formatted once into plain text in
//! which `{ $n }` stays `{n}`, for `waiting.js` to fill in (so selectors and functions, which
//! would need the value, are refused); a request only looks texts up.
//!
//! A request's language: `lang` of the query string when it names a loaded language, else the
//! `Accept-Language` entry with the highest q-value that does (the first of equals), else
//! English. A tag names a loaded language when it is its tag (in any case, `_` for `-`), when
//! it starts with it (`ko-KR` names `ko`), or when it has its primary subtag (`pt` names
//! `pt-BR`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use fluent_bundle::{FluentArgs, FluentBundle, FluentResource};
use fluent_syntax::ast;
use serde::ser::{Serialize, SerializeMap, Serializer};
use unic_langid::LanguageIdentifier;

/// The config key of the operator's language files, named in their errors.
pub const LOCALES_DIR_KEY: &str = "waitroom.locales_dir";

/// The built-in languages, English (the reference and the fallback) first.
pub const BUILTIN: [(&str, &str); 2] = [
    ("en", include_str!("../../locales/en.ftl")),
    ("ko", include_str!("../../locales/ko.ftl")),
];

/// One language: its tag and every message of the page in it.
#[derive(Debug)]
pub struct Language {
    code: String,
    /// The messages' keys, in English's order (shared by every language).
    keys: Arc<[String]>,
    /// The texts, in the order of `keys`.
    texts: Vec<String>,
}

impl Language {
    /// The language tag (`en`, `ko`, `pt-BR`).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The text of the message at `index` (see [`Languages::index_of`]).
    pub fn text(&self, index: usize) -> Option<&str> {
        self.texts.get(index).map(String::as_str)
    }

    /// The text of the message `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        let index = self.keys.iter().position(|k| k == key)?;
        self.text(index)
    }

    /// Every message as `(key, text)`, in English's order.
    pub fn messages(&self) -> impl Iterator<Item = (&str, &str)> {
        self.keys
            .iter()
            .map(String::as_str)
            .zip(self.texts.iter().map(String::as_str))
    }
}

/// The messages of one language, serialised as a JSON object `{key: text}` in English's order.
pub(super) struct Strings<'a>(pub(super) &'a Language);

impl Serialize for Strings<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.texts.len()))?;
        for (key, text) in self.0.messages() {
            map.serialize_entry(key, text)?;
        }
        map.end()
    }
}

/// Every language the page speaks.
#[derive(Debug)]
pub struct Languages {
    keys: Arc<[String]>,
    english: Language,
    /// Korean, then the operator's languages by file name.
    others: Vec<Language>,
}

impl Languages {
    /// The built-in languages only.
    pub fn builtin() -> anyhow::Result<Self> {
        Self::load(None)
    }

    /// The built-in languages and the `.ftl` files of `dir` (the value of
    /// `waitroom.locales_dir`); the error names the key, the file and what is wrong.
    pub fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let [(_, english_source), korean] = BUILTIN;
        let reference = compile("en", english_source)
            .map_err(|e| anyhow::anyhow!("the built-in `locales/en.ftl`: {e}"))?;
        let keys: Arc<[String]> = reference.iter().map(|m| m.key.clone()).collect();
        let english = Language {
            code: "en".to_owned(),
            keys: Arc::clone(&keys),
            texts: reference.iter().map(|m| m.text.clone()).collect(),
        };
        let mut languages = Self {
            keys,
            english,
            others: Vec::new(),
        };
        let (code, source) = korean;
        let korean = languages
            .translation(code, source, &reference)
            .map_err(|e| anyhow::anyhow!("the built-in `locales/{code}.ftl`: {e}"))?;
        languages.others.push(korean);
        if let Some(dir) = dir {
            for (path, code) in ftl_files(dir)? {
                let in_file = |e: String| {
                    anyhow::anyhow!("config key `{LOCALES_DIR_KEY}`: `{}`: {e}", path.display())
                };
                let source = std::fs::read_to_string(&path)
                    .map_err(|e| in_file(format!("cannot read it: {e}")))?;
                let language = languages
                    .translation(&code, &source, &reference)
                    .map_err(in_file)?;
                languages.insert(language);
            }
        }
        Ok(languages)
    }

    /// `source` in language `code`, checked against English (`reference`).
    fn translation(
        &self,
        code: &str,
        source: &str,
        reference: &[Compiled],
    ) -> Result<Language, String> {
        let mut messages = compile(code, source)?;
        let mut problems = Vec::new();
        let mut texts = Vec::with_capacity(reference.len());
        for wanted in reference {
            match messages.iter().position(|m| m.key == wanted.key) {
                None => problems.push(format!("lacks the message `{}`", wanted.key)),
                Some(at) => {
                    let message = messages.swap_remove(at);
                    if message.variables != wanted.variables {
                        problems.push(format!(
                            "the message `{}` has the variables {} where English has {}",
                            message.key,
                            list(&message.variables),
                            list(&wanted.variables),
                        ));
                    }
                    texts.push(message.text);
                }
            }
        }
        for extra in messages {
            problems.push(format!(
                "has the message `{}`, which English does not have (a typo?)",
                extra.key
            ));
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        Ok(Language {
            code: code.to_owned(),
            keys: Arc::clone(&self.keys),
            texts,
        })
    }

    /// Adds `language`, or replaces the one with its tag.
    fn insert(&mut self, language: Language) {
        if language.code == self.english.code {
            self.english = language;
        } else if let Some(known) = self.others.iter_mut().find(|l| l.code == language.code) {
            *known = language;
        } else {
            self.others.push(language);
        }
    }

    /// Every message key, in English's order.
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// Where `key` is among [`keys`](Self::keys).
    pub fn index_of(&self, key: &str) -> Option<usize> {
        self.keys.iter().position(|k| k == key)
    }

    /// Every language, English first.
    pub fn iter(&self) -> impl Iterator<Item = &Language> {
        std::iter::once(&self.english).chain(&self.others)
    }

    /// English, the fallback.
    pub fn english(&self) -> &Language {
        &self.english
    }

    /// The language the page's language link leads to: Korean from English, English from any
    /// other.
    pub fn other(&self, language: &Language) -> &Language {
        if language.code == self.english.code {
            self.others
                .iter()
                .find(|l| l.code == "ko")
                .unwrap_or(&self.english)
        } else {
            &self.english
        }
    }

    /// The page's language: `lang` of the query string when it names a loaded language, else
    /// the `Accept-Language` entry with the highest q-value that does (the first of equals),
    /// else English.
    pub fn choose(&self, query: Option<&str>, accept_language: Option<&str>) -> &Language {
        query
            .and_then(|q| self.in_query(q))
            .or_else(|| accept_language.and_then(|h| self.in_accept_language(h)))
            .unwrap_or(&self.english)
    }

    fn in_query(&self, query: &str) -> Option<&Language> {
        query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(key, _)| *key == "lang")
            .find_map(|(_, value)| self.find(value))
    }

    /// RFC 9110 §12.5.4: `ko-KR, ko;q=0.9, en;q=0.5`. Entries with q=0 or an unreadable q are
    /// skipped; `*` adds nothing (English is the default anyway).
    fn in_accept_language(&self, header: &str) -> Option<&Language> {
        let mut best: Option<(f32, &Language)> = None;
        for entry in header.split(',') {
            let mut parts = entry.split(';');
            let tag = parts.next().unwrap_or_default().trim();
            let mut q = 1.0_f32;
            for param in parts {
                let Some((name, value)) = param.split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("q") {
                    q = match value.trim().parse::<f32>() {
                        Ok(v) if (0.0..=1.0).contains(&v) => v,
                        _ => 0.0,
                    };
                }
            }
            let Some(language) = self.find(tag) else {
                continue;
            };
            if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
                best = Some((q, language));
            }
        }
        best.map(|(_, language)| language)
    }

    /// The loaded language that `tag` names: the same tag, else the longest loaded tag it
    /// starts with (`ko-KR`: `ko`), else the first with its primary subtag (`pt`: `pt-BR`).
    pub fn find(&self, tag: &str) -> Option<&Language> {
        let tag = tag.replace('_', "-").to_ascii_lowercase();
        let primary = tag.split('-').next().unwrap_or_default();
        if primary.is_empty() {
            return None;
        }
        let code = |l: &&Language| l.code.to_ascii_lowercase();
        self.iter()
            .find(|l| code(l) == tag)
            .or_else(|| {
                self.iter()
                    .filter(|l| tag.starts_with(&format!("{}-", code(l))))
                    .max_by_key(|l| l.code.len())
            })
            .or_else(|| {
                self.iter()
                    .find(|l| code(l).split('-').next() == Some(primary))
            })
    }
}

/// The `.ftl` files of `dir` by name, each with the language tag its name gives.
fn ftl_files(dir: &Path) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "config key `{LOCALES_DIR_KEY}`: cannot read the directory `{}`",
            dir.display()
        )
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| {
                format!(
                    "config key `{LOCALES_DIR_KEY}`: cannot read the directory `{}`",
                    dir.display()
                )
            })?
            .path();
        if path.extension().is_none_or(|ext| ext != "ftl") || path.is_dir() {
            continue;
        }
        let tag = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .and_then(|stem| stem.parse::<LanguageIdentifier>().ok())
            .map(|tag| tag.to_string())
            .filter(|tag| tag != "und")
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "config key `{LOCALES_DIR_KEY}`: `{}`: the file's name is not a language tag \
                     (such as `fr.ftl` or `pt-BR.ftl`)",
                    path.display()
                )
            })?;
        files.push((path, tag));
    }
    files.sort();
    for pair in files.windows(2) {
        if let [(first, a), (second, b)] = pair
            && a == b
        {
            anyhow::bail!(
                "config key `{LOCALES_DIR_KEY}`: `{}` and `{}` are both for the language `{a}`",
                first.display(),
                second.display()
            );
        }
    }
    Ok(files)
}

/// One message of a file, formatted.
#[derive(Debug)]
struct Compiled {
    key: String,
    /// The names of its `{ $variables }`.
    variables: BTreeSet<String>,
    /// Its text, each `{ $name }` written `{name}`.
    text: String,
}

/// Parses the Fluent `source` of language `code` and formats each message, in file order. The
/// error lists every problem: the line of a syntax error, or the message it is in.
fn compile(code: &str, source: &str) -> Result<Vec<Compiled>, String> {
    let lang: LanguageIdentifier = code
        .parse()
        .map_err(|_| format!("`{code}` is not a language tag"))?;
    let resource = FluentResource::try_new(source.to_owned()).map_err(|(_, errors)| {
        errors
            .iter()
            .map(|e| {
                // The start of the entry that failed, else where the parser stopped.
                let at = e.slice.as_ref().map_or(e.pos.start, |slice| slice.start);
                let line = source
                    .get(..at)
                    .map_or(0, |before| before.matches('\n').count() + 1);
                format!("line {line}: {e}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let mut bundle = FluentBundle::new(vec![lang]);
    bundle.set_use_isolating(false);
    bundle.add_resource(&resource).map_err(|errors| {
        errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let mut problems = Vec::new();
    let mut messages = Vec::new();
    for entry in resource.entries() {
        let body = match entry {
            ast::Entry::Message(message) => {
                let key = message.id.name;
                if !message.attributes.is_empty() {
                    problems.push(format!(
                        "the message `{key}` has attributes (`.name = …`), which the page does not use"
                    ));
                }
                let Some(pattern) = &message.value else {
                    problems.push(format!("the message `{key}` has no text"));
                    continue;
                };
                Some((key, pattern))
            }
            ast::Entry::Term(term) => {
                if let Err(e) = plain(&term.value, &mut BTreeSet::new()) {
                    problems.push(format!("the term `-{}` {e}", term.id.name));
                }
                None
            }
            _ => None,
        };
        let Some((key, pattern)) = body else {
            continue;
        };
        let mut variables = BTreeSet::new();
        if let Err(e) = plain(pattern, &mut variables) {
            problems.push(format!("the message `{key}` {e}"));
            continue;
        }
        let mut args = FluentArgs::new();
        for name in &variables {
            args.set(name.clone(), format!("{{{name}}}"));
        }
        let mut errors = Vec::new();
        let text = bundle.format_pattern(pattern, Some(&args), &mut errors);
        if !errors.is_empty() {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            problems.push(format!("the message `{key}`: {}", errors.join(", ")));
        }
        if text.trim().is_empty() {
            problems.push(format!("the message `{key}` has no text"));
        }
        messages.push(Compiled {
            key: key.to_owned(),
            variables,
            text: text.into_owned(),
        });
    }
    if problems.is_empty() {
        Ok(messages)
    } else {
        Err(problems.join("; "))
    }
}

/// Checks that `pattern` is text with placeables the page can format ahead of time (variables,
/// literals, message and term references), and collects its variables' names.
fn plain(pattern: &ast::Pattern<&str>, variables: &mut BTreeSet<String>) -> Result<(), String> {
    fn inline(
        expression: &ast::InlineExpression<&str>,
        variables: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        match expression {
            ast::InlineExpression::VariableReference { id } => {
                variables.insert(id.name.to_owned());
                Ok(())
            }
            ast::InlineExpression::StringLiteral { .. }
            | ast::InlineExpression::NumberLiteral { .. }
            | ast::InlineExpression::MessageReference { .. }
            | ast::InlineExpression::TermReference { .. } => Ok(()),
            ast::InlineExpression::Placeable { expression } => match expression.as_ref() {
                ast::Expression::Inline(expression) => inline(expression, variables),
                ast::Expression::Select { .. } => Err(UNSUPPORTED.to_owned()),
            },
            ast::InlineExpression::FunctionReference { .. } => Err(UNSUPPORTED.to_owned()),
        }
    }
    for element in &pattern.elements {
        match element {
            ast::PatternElement::TextElement { .. } => {}
            ast::PatternElement::Placeable { expression } => match expression {
                ast::Expression::Inline(expression) => inline(expression, variables)?,
                ast::Expression::Select { .. } => return Err(UNSUPPORTED.to_owned()),
            },
        }
    }
    Ok(())
}

const UNSUPPORTED: &str = "uses a selector (`->`) or a function: the page's texts are made once, \
     before any value is known (waiting.js fills `{ $name }` in), so use plain text and variables";

/// `{a, b}` for an error message.
fn list(names: &BTreeSet<String>) -> String {
    let names: Vec<String> = names.iter().map(|n| format!("`{{ ${n} }}`")).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use dropline_core::http::error::ErrorCode;

    use super::*;
    use crate::page::assets::SCRIPT;

    #[test]
    fn the_query_wins_then_accept_language_by_q_then_english() -> anyhow::Result<()> {
        let languages = Languages::builtin()?;
        let cases: &[(Option<&str>, Option<&str>, &str)] = &[
            (Some("lang=ko"), Some("en"), "ko"),
            (Some("x=1&lang=EN"), Some("ko"), "en"),
            (Some("lang=fr"), Some("ko-KR,ko;q=0.9"), "ko"),
            (Some("lang="), None, "en"),
            (None, Some("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7"), "ko"),
            (None, Some("en;q=0.5, ko;q=0.8"), "ko"),
            (None, Some("ko;q=0.5, en;q=0.8"), "en"),
            (None, Some("fr-CH, fr;q=0.9, ko;q=0.1"), "ko"),
            (None, Some("ko;q=0, fr"), "en"),
            (None, Some("ko;q=abc"), "en"),
            (None, Some("ko;q=2"), "en"),
            (None, Some("en, ko"), "en"),
            (None, Some("ko , en"), "ko"),
            (None, Some("KO;Q=0.3"), "ko"),
            (None, Some("*"), "en"),
            (None, Some(""), "en"),
            (None, Some(";;,,=q"), "en"),
            (None, None, "en"),
        ];
        for (query, accept, want) in cases {
            assert_eq!(
                languages.choose(*query, *accept).code(),
                *want,
                "query {query:?}, Accept-Language {accept:?}"
            );
        }
        Ok(())
    }

    /// The test that fails when a built-in language lacks a message of English, has one that
    /// English does not (a typo), or changes its `{ $variables }`; and when a file does not parse.
    #[test]
    fn every_built_in_language_has_every_message_of_english_and_no_other() -> anyhow::Result<()> {
        let [(_, english), _] = BUILTIN;
        let reference = compile("en", english).map_err(anyhow::Error::msg)?;
        assert!(
            reference.len() > 100,
            "{} messages in en.ftl",
            reference.len()
        );
        let languages = Languages::builtin()?;
        for (code, source) in BUILTIN {
            if let Err(e) = languages.translation(code, source, &reference) {
                panic!("locales/{code}.ftl: {e}");
            }
        }
        Ok(())
    }

    #[test]
    fn every_string_exists_in_both_languages_once() -> anyhow::Result<()> {
        let languages = Languages::builtin()?;
        let (en, ko) = (languages.english(), languages.other(languages.english()));
        assert_eq!(ko.code(), "ko");
        let mut seen = std::collections::HashSet::new();
        for ((key, en), (ko_key, ko)) in en.messages().zip(ko.messages()) {
            assert_eq!(key, ko_key);
            assert!(seen.insert(key), "duplicate key {key}");
            assert!(!en.trim().is_empty(), "{key} lacks English");
            assert!(!ko.trim().is_empty(), "{key} lacks Korean");
            // The same {placeholders} in both.
            let names = |s: &str| {
                let mut v: Vec<String> = s
                    .split('{')
                    .skip(1)
                    .filter_map(|p| p.split_once('}').map(|(n, _)| n.to_owned()))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(names(en), names(ko), "{key}");
        }
        assert_eq!(seen.len(), languages.keys().len());
        Ok(())
    }

    #[test]
    fn every_key_the_script_uses_is_in_the_catalog() -> anyhow::Result<()> {
        let languages = Languages::builtin()?;
        // Literal keys: t('key' …), not setText('…').
        let mut keys: Vec<String> = Vec::new();
        let bytes = SCRIPT.as_bytes();
        for (at, _) in SCRIPT.match_indices("t('") {
            let before = at.checked_sub(1).map(|i| bytes[i]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
                continue;
            }
            let rest = &SCRIPT[at + 3..];
            if let Some(end) = rest.find('\'') {
                let key = &rest[..end];
                // `t('err_' + code)` and friends build the key: checked below.
                if !key.ends_with('_') {
                    keys.push(key.to_owned());
                }
            }
        }
        assert!(keys.len() > 20, "found only {keys:?}");
        // Keys the script builds from a state, an order status or an error code.
        for prefix_state in ["sold_out", "closed", "missing"] {
            keys.push(format!("{prefix_state}_title"));
            keys.push(format!("{prefix_state}_body"));
        }
        for state in [
            "scheduled",
            "paused",
            "waiting",
            "entered",
            "waitlisted",
            "not_won",
            "forfeited",
            "claimed",
        ] {
            keys.push(format!("{state}_title"));
            keys.push(format!("{state}_body"));
        }
        for status in ["held", "paying", "paid", "failed", "expired", "cancelled"] {
            keys.push(format!("order_{status}"));
        }
        for status in ["paid", "failed", "expired", "cancelled"] {
            keys.push(format!("result_{status}"));
        }
        for key in ["retry_queue_full", "retry_rate_limited", "retry_busy"] {
            keys.push(key.to_owned());
        }
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::NotAdmitted,
            ErrorCode::EmailNotVerified,
            ErrorCode::NotFound,
            ErrorCode::InvalidCode,
            ErrorCode::InvalidCredentials,
            ErrorCode::IdempotencyKeyReused,
            ErrorCode::SoldOut,
            ErrorCode::LimitExceeded,
            ErrorCode::SaleNotOpen,
            ErrorCode::InvalidState,
            ErrorCode::EmailTaken,
            ErrorCode::RateLimited,
            ErrorCode::QueueFull,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::PowRequired,
            ErrorCode::PowInvalid,
            ErrorCode::EntriesClosed,
        ] {
            keys.push(format!("err_{}", code.as_str()));
        }
        for key in keys {
            assert!(
                languages.index_of(&key).is_some(),
                "the catalog lacks `{key}`"
            );
        }
        Ok(())
    }

    /// English's file with `edit` applied to its lines.
    fn english_with(edit: impl Fn(&str) -> Option<String>) -> String {
        let [(_, english), _] = BUILTIN;
        english
            .lines()
            .filter_map(edit)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_language_file_that_does_not_match_english_says_which_message() -> anyhow::Result<()> {
        let [(_, english), _] = BUILTIN;
        let reference = compile("en", english).map_err(anyhow::Error::msg)?;
        let languages = Languages::builtin()?;
        let cases = [
            (
                english_with(|l| (!l.starts_with("footer =")).then(|| l.to_owned())),
                "lacks the message `footer`",
            ),
            (
                english_with(|l| Some(l.replace("sign_out =", "sing_out ="))),
                "has the message `sing_out`, which English does not have",
            ),
            (
                english_with(|l| Some(l.replace("{ $n } ahead", "{ $count } ahead"))),
                "the message `people_ahead` has the variables `{ $count }` where English has `{ $n }`",
            ),
            (
                english_with(|l| {
                    Some(l.replace("page_title = Waiting room", "page_title = Wait {"))
                }),
                "line 12: ",
            ),
            (
                english_with(|l| {
                    Some(l.replace(
                        "{ $n } ahead of you",
                        "{ $n ->\n    [one] one person\n   *[other] { $n } people\n} ahead",
                    ))
                }),
                "the message `people_ahead` uses a selector",
            ),
            (
                english_with(|l| Some(l.replace("Sign out", "{ -brand } out"))),
                "the message `sign_out`: Resolver error: Unknown term: -brand",
            ),
            (
                format!("{english}\nfooter = again"),
                "Attempt to override an existing message: \"footer\"",
            ),
        ];
        for (source, want) in cases {
            match languages.translation("fr", &source, &reference) {
                Ok(_) => panic!("accepted a file that should say {want:?}"),
                Err(e) => assert!(e.contains(want), "`{e}` lacks `{want}`"),
            }
        }
        // Terms and literals are fine.
        let source = english_with(|l| {
            Some(match l {
                "footer = Powered by Dropline" => {
                    "-brand = Dropline\nfooter = Powered by { -brand }{ \"\" }".to_owned()
                }
                _ => l.to_owned(),
            })
        });
        let french = languages
            .translation("fr", &source, &reference)
            .map_err(anyhow::Error::msg)?;
        assert_eq!(french.get("footer"), Some("Powered by Dropline"));
        assert_eq!(
            french.get("verify_intro"),
            Some("We sent a six-digit code to {email}.")
        );
        Ok(())
    }

    #[test]
    fn the_operators_directory_adds_languages_and_a_bad_file_stops_the_start() -> anyhow::Result<()>
    {
        let dir = std::env::temp_dir().join(format!("dl-locales-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let french = english_with(|l| {
            Some(match l.split_once(" = ") {
                Some(("page_title", _)) => "page_title = Salle d'attente".to_owned(),
                Some(("other_lang_name", _)) => "other_lang_name = English".to_owned(),
                _ => l.to_owned(),
            })
        });
        std::fs::write(dir.join("fr.ftl"), &french)?;
        std::fs::write(dir.join("pt_br.ftl"), &french)?;
        std::fs::write(dir.join("README.txt"), "not a language")?;
        let languages = Languages::load(Some(&dir))?;
        let codes: Vec<&str> = languages.iter().map(Language::code).collect();
        assert_eq!(codes, ["en", "ko", "fr", "pt-BR"]);
        // (why, query, Accept-Language, the language chosen)
        let cases = [
            ("the query names it", "lang=fr", "ko", "fr"),
            ("a region of it", "lang=FR-ca", "", "fr"),
            ("by q-value", "", "fr-CH, fr;q=0.9, en;q=0.8", "fr"),
            (
                "the best that is loaded",
                "",
                "de, fr;q=0.5, ko;q=0.4",
                "fr",
            ),
            ("the primary subtag", "", "pt", "pt-BR"),
            ("any case", "", "pt-br", "pt-BR"),
            ("the built-ins still", "", "ko-KR,ko;q=0.9,fr;q=0.8", "ko"),
            ("nothing loaded: English", "lang=de", "de", "en"),
        ];
        for (why, query, accept, want) in cases {
            let chosen = languages.choose(Some(query), Some(accept)).code();
            assert_eq!(
                chosen, want,
                "{why}: query {query:?}, Accept-Language {accept:?}"
            );
        }
        let fr = languages.choose(Some("lang=fr"), None);
        assert_eq!(fr.get("page_title"), Some("Salle d'attente"));
        assert_eq!(languages.other(fr).code(), "en");

        // A file without a message, a name that is no language tag, no directory at all.
        std::fs::write(
            dir.join("de.ftl"),
            english_with(|l| (!l.starts_with("card_hint =")).then(|| l.to_owned())),
        )?;
        let error = |dir: &Path| {
            Languages::load(Some(dir))
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default()
        };
        let e = error(&dir);
        for want in [LOCALES_DIR_KEY, "de.ftl", "lacks the message `card_hint`"] {
            assert!(e.contains(want), "`{e}` lacks `{want}`");
        }
        std::fs::remove_file(dir.join("de.ftl"))?;
        std::fs::write(dir.join("not a tag.ftl"), &french)?;
        let e = error(&dir);
        assert!(
            e.contains("not a tag.ftl") && e.contains("not a language tag"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir)?;
        let e = error(&dir);
        assert!(
            e.contains(LOCALES_DIR_KEY) && e.contains("cannot read"),
            "{e}"
        );
        Ok(())
    }
}

//! The page template: parsing an HTML file with `{{placeholders}}` (the table is in the
//! [`page`](super) module doc) once at start, and rendering it per request with every value
//! escaped for where it goes (HTML text and attributes, or the JSON block for `waiting.js`).

use super::i18n::{Language, Languages, Strings};
use super::stripe::StripePage;

/// The built-in template (see the placeholder table in the module doc).
pub const BUILTIN_TEMPLATE: &str = include_str!("../../assets/waiting.html");

/// What `waiting.js` reads from `{{config_json}}`.
#[derive(serde::Serialize)]
struct PageConfig<'a> {
    sale_id: &'a str,
    api_base_url: &'a str,
    lang: &'a str,
    /// The proof-of-work worker's URL (`/w/assets/pow.js?v=…`).
    pow_worker_src: &'a str,
    /// The Stripe step (`provider`, `publishable_key`, `js_url`); absent with the simulated
    /// provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    payment: Option<&'a StripePage>,
    strings: Strings<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Lang,
    OtherLang,
    OtherLangHref,
    SaleId,
    ApiBaseUrl,
    Nonce,
    StylesheetHref,
    ScriptSrc,
    ConfigJson,
    Text(usize),
}

impl Slot {
    fn parse(name: &str, languages: &Languages) -> Option<Self> {
        Some(match name {
            "lang" => Self::Lang,
            "other_lang" => Self::OtherLang,
            "other_lang_href" => Self::OtherLangHref,
            "sale_id" => Self::SaleId,
            "api_base_url" => Self::ApiBaseUrl,
            "nonce" => Self::Nonce,
            "stylesheet_href" => Self::StylesheetHref,
            "script_src" => Self::ScriptSrc,
            "config_json" => Self::ConfigJson,
            _ => Self::Text(languages.index_of(name.strip_prefix("t:")?)?),
        })
    }
}

#[derive(Debug)]
enum Part {
    Literal(String),
    Slot(Slot),
}

/// A parsed page template: literal HTML and placeholders.
#[derive(Debug)]
pub struct Template {
    parts: Vec<Part>,
    literal_len: usize,
}

/// The values of one rendering.
#[derive(Debug)]
pub struct Values<'a> {
    /// The page's language, and the one its language link leads to.
    pub lang: &'a Language,
    pub other_lang: &'a Language,
    pub sale_id: &'a str,
    pub api_base_url: &'a str,
    pub nonce: &'a str,
    pub stylesheet_href: &'a str,
    pub script_src: &'a str,
    /// The proof-of-work worker's URL, for `config_json`.
    pub pow_worker_src: &'a str,
    /// The Stripe step, for `config_json` (`None`: the simulated card picker).
    pub payment: Option<&'a StripePage>,
}

impl Template {
    /// Parses `source`; the error says what is wrong and on which line.
    /// `t:KEY` must name a message of `languages`.
    pub fn parse(source: &str, languages: &Languages) -> Result<Self, String> {
        let line_of = |offset: usize| source[..offset].matches('\n').count() + 1;
        let mut parts = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        let mut literal_len = 0;
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                return Err(format!(
                    "line {}: `{{{{` without a closing `}}}}`",
                    line_of(offset + open)
                ));
            };
            let name = after[..close].trim();
            let slot = Slot::parse(name, languages).ok_or_else(|| {
                format!(
                    "line {}: unknown placeholder `{{{{{name}}}}}` (known: lang, other_lang, other_lang_href, sale_id, api_base_url, nonce, stylesheet_href, script_src, config_json, t:KEY with a KEY of the page's strings)",
                    line_of(offset + open)
                )
            })?;
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
                literal_len += open;
            }
            parts.push(Part::Slot(slot));
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            literal_len += rest.len();
            parts.push(Part::Literal(rest.to_owned()));
        }
        let template = Self { parts, literal_len };
        for (slot, name) in [
            (Slot::ConfigJson, "config_json"),
            (Slot::ScriptSrc, "script_src"),
        ] {
            if !template.has(slot) {
                return Err(format!(
                    "the template lacks the required placeholder `{{{{{name}}}}}`"
                ));
            }
        }
        Ok(template)
    }

    fn has(&self, slot: Slot) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, Part::Slot(s) if *s == slot))
    }

    /// The page for `values`, every value escaped for where it goes.
    pub fn render(&self, values: &Values<'_>) -> String {
        let lang = values.lang;
        let config = PageConfig {
            sale_id: values.sale_id,
            api_base_url: values.api_base_url,
            lang: lang.code(),
            pow_worker_src: values.pow_worker_src,
            payment: values.payment,
            strings: Strings(lang),
        };
        // Serialising strings into a String cannot fail; an empty object keeps the page alive.
        let config_json = serde_json::to_string(&config).unwrap_or_else(|_| "{}".to_owned());
        let mut out = String::with_capacity(self.literal_len + config_json.len() + 512);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Slot(slot) => match *slot {
                    Slot::Lang => escape_html_into(&mut out, lang.code()),
                    Slot::OtherLang => escape_html_into(&mut out, values.other_lang.code()),
                    Slot::OtherLangHref => {
                        out.push_str("?lang=");
                        escape_html_into(&mut out, values.other_lang.code());
                    }
                    Slot::SaleId => escape_html_into(&mut out, values.sale_id),
                    Slot::ApiBaseUrl => escape_html_into(&mut out, values.api_base_url),
                    Slot::Nonce => escape_html_into(&mut out, values.nonce),
                    Slot::StylesheetHref => escape_html_into(&mut out, values.stylesheet_href),
                    Slot::ScriptSrc => escape_html_into(&mut out, values.script_src),
                    Slot::ConfigJson => escape_script_json_into(&mut out, &config_json),
                    Slot::Text(index) => {
                        if let Some(text) = lang.text(index) {
                            escape_html_into(&mut out, text);
                        }
                    }
                },
            }
        }
        out
    }
}

/// Escapes for HTML text and quoted attribute values.
pub fn escape_html_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
}

/// Makes JSON safe inside `<script type="application/json">`: no `</script>`, no `<!--`, no
/// entity, and no U+2028/2029 (line ends to older JavaScript parsers). Each replacement is a
/// JSON escape with the same meaning, so `JSON.parse` reads the original value.
pub fn escape_script_json_into(out: &mut String, json: &str) {
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(languages: &'a Languages, sale_id: &'a str) -> Values<'a> {
        let ko = languages.choose(Some("lang=ko"), None);
        Values {
            lang: ko,
            other_lang: languages.other(ko),
            sale_id,
            api_base_url: "https://api.example",
            nonce: "abc",
            stylesheet_href: "/w/assets/waiting.css?v=1",
            script_src: "/w/assets/waiting.js?v=1",
            pow_worker_src: "/w/assets/pow.js?v=1",
            payment: None,
        }
    }

    #[test]
    fn the_builtin_template_renders_in_both_languages() -> anyhow::Result<()> {
        let languages = Languages::builtin()?;
        let template = Template::parse(BUILTIN_TEMPLATE, &languages).map_err(anyhow::Error::msg)?;
        let mut v = values(&languages, "0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10");
        let ko = template.render(&v);
        assert!(ko.contains(r#"<html lang="ko">"#));
        assert!(ko.contains("<title>대기실</title>"));
        assert!(ko.contains(r#"href="?lang=en""#));
        assert!(!ko.contains("{{"), "every placeholder is filled");
        v.lang = languages.english();
        v.other_lang = languages.other(v.lang);
        let en = template.render(&v);
        assert!(en.contains("<title>Waiting room</title>"));
        assert!(en.contains(r#"src="/w/assets/waiting.js?v=1""#));
        Ok(())
    }

    #[test]
    fn values_are_escaped_for_html_and_for_the_json_block() -> Result<(), String> {
        let languages = Languages::builtin().map_err(|e| e.to_string())?;
        let nasty = "\"><script>alert('x')</script>&\u{2028}";
        let template = Template::parse(
            "<p title=\"{{sale_id}}\">{{ sale_id }}</p>\
             <script type=\"application/json\">{{config_json}}</script>\
             <script src=\"{{script_src}}\"></script>",
            &languages,
        )?;
        let html = template.render(&values(&languages, nasty));
        assert!(html.contains(
            "<p title=\"&quot;&gt;&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;\u{2028}\">"
        ));
        let json_start = html.find("application/json\">").ok_or("no json")? + 18;
        let json_end = json_start + html[json_start..].find("</script>").ok_or("no end")?;
        let json = &html[json_start..json_end];
        for bad in ["<", ">", "&", "\u{2028}"] {
            assert!(!json.contains(bad), "{bad:?} left in {json}");
        }
        let parsed: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        assert_eq!(parsed["sale_id"], nasty, "JSON.parse gives the value back");
        assert_eq!(parsed["lang"], "ko");
        assert_eq!(parsed["api_base_url"], "https://api.example");
        assert_eq!(parsed["strings"]["page_title"], "대기실");
        Ok(())
    }

    #[test]
    fn a_bad_template_says_what_and_where() -> anyhow::Result<()> {
        let languages = Languages::builtin()?;
        let cases = [
            (
                "{{config_json}}{{script_src}}\n{{nope}}",
                "line 2: unknown placeholder `{{nope}}`",
            ),
            (
                "{{config_json}}{{script_src}}{{t:nope}}",
                "unknown placeholder `{{t:nope}}`",
            ),
            (
                "{{config_json}}\n\n{{script_src",
                "line 3: `{{` without a closing `}}`",
            ),
            ("{{script_src}}", "required placeholder `{{config_json}}`"),
            ("{{config_json}}", "required placeholder `{{script_src}}`"),
        ];
        for (source, want) in cases {
            match Template::parse(source, &languages) {
                Ok(_) => panic!("{source:?} was accepted"),
                Err(e) => assert!(e.contains(want), "{source:?}: `{e}` lacks `{want}`"),
            }
        }
        Ok(())
    }
}

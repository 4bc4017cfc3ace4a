//! The waiting page: `GET /w/{sale_id}` and its two assets.
//!
//! The page is plain HTML, CSS and JavaScript compiled into the binary (`assets/`), with no
//! framework, no build step and nothing from a CDN. The HTML is a template rendered per request
//! in the buyer's language (`?lang=ko|en`, else `Accept-Language` by q-value, else English);
//! the script reads the sale id, the api's address and the strings of that language from a JSON
//! block the server puts into the page, then signs in, joins, polls and buys (see
//! `assets/waiting.js`).
//!
//! Routes: `GET /w/{sale_id}` (HTML; a sale id that is not a UUID is 404 `not_found` in the
//! contract's JSON shape), `GET /w/assets/waiting.js` and `GET /w/assets/waiting.css`. The page
//! links the assets as `…?v=<fingerprint>`: such a request is cached for a year (`immutable`),
//! a bare one for five minutes, and both answer `If-None-Match` with 304.
//!
//! Config: `waitroom.api_base_url` (empty: the api is on the page's own origin; otherwise an
//! `http(s)://` URL, which the Content-Security-Policy also allows to be called) and
//! `waitroom.page_template_file` (an HTML file replacing the built-in template). The template is
//! read and checked once, in [`routes`]: an unreadable file, an unknown placeholder or a missing
//! required one stops the start with an error naming the key.
//!
//! # Template placeholders
//!
//! `{{name}}` anywhere in the file (spaces inside the braces are allowed). Every value is
//! escaped for HTML text and double- or single-quoted attribute values, except `config_json`,
//! which is escaped for a `<script type="application/json">` element.
//!
//! | placeholder | value |
//! | --- | --- |
//! | `{{config_json}}` | **required**: the page's settings for `waiting.js` (`sale_id`, `api_base_url`, `lang`, `strings`); put it in `<script id="dl-config" type="application/json">` |
//! | `{{script_src}}` | **required**: URL of `waiting.js`, for `<script src defer>` |
//! | `{{stylesheet_href}}` | URL of `waiting.css` |
//! | `{{lang}}` / `{{other_lang}}` | `en` or `ko`: the page's language and the other one |
//! | `{{other_lang_href}}` | a link to this page in the other language (`?lang=…`) |
//! | `{{sale_id}}` | the sale id (canonical UUID) |
//! | `{{api_base_url}}` | `waitroom.api_base_url` as configured (may be empty) |
//! | `{{nonce}}` | a per-response CSP nonce: `<script nonce="{{nonce}}">` / `<style nonce="{{nonce}}">` let a custom template inline code |
//! | `{{t:KEY}}` | the string KEY of the catalog below in the page's language |
//!
//! The script finds elements by id (`view-signin`, `signin-form`, `position`, `progress`, …, as
//! in `assets/waiting.html`) and skips those a custom template leaves out; the simplest custom
//! template is a copy of the built-in one with other words, colours or markup around the ids.
//!
//! Responses carry a strict Content-Security-Policy (scripts and styles from the waitroom or with
//! the nonce, fetches to the waitroom and the api origin only, no framing, forms never submitted
//! natively), `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, and the HTML
//! `Cache-Control: no-store` (it carries the nonce) with `Vary: Accept-Language`.

use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dropline_core::config::WaitroomConfig;
use dropline_core::http::error::{ApiError, ErrorCode};
use serde::ser::{Serialize, SerializeMap, Serializer};
use uuid::Uuid;

/// The config key of a custom template, named in every template error.
const TEMPLATE_KEY: &str = "waitroom.page_template_file";
const API_BASE_URL_KEY: &str = "waitroom.api_base_url";

/// The built-in template (see the placeholder table in the module doc).
pub const BUILTIN_TEMPLATE: &str = include_str!("../assets/waiting.html");
const SCRIPT: &str = include_str!("../assets/waiting.js");
const STYLESHEET: &str = include_str!("../assets/waiting.css");

pub const SCRIPT_PATH: &str = "/w/assets/waiting.js";
pub const STYLESHEET_PATH: &str = "/w/assets/waiting.css";

/// Cache lifetime of an asset requested with the current fingerprint (`?v=`): it never changes.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Cache lifetime of an asset requested without it (an old page, a custom template).
const SHORT: &str = "public, max-age=300";

/// The routes of the waiting page, with the template loaded and checked.
pub fn routes(config: &WaitroomConfig) -> anyhow::Result<Router> {
    let state = Arc::new(PageState::new(config)?);
    Ok(Router::new()
        .route("/w/{sale_id}", get(waiting_page))
        .route(SCRIPT_PATH, get(script))
        .route(STYLESHEET_PATH, get(stylesheet))
        .with_state(state))
}

// ---------------------------------------------------------------------------------------------
// Language

/// The languages of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ko,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Ko => "ko",
        }
    }

    pub fn other(self) -> Self {
        match self {
            Self::En => Self::Ko,
            Self::Ko => Self::En,
        }
    }

    /// `en` or `ko`, any case, with or without a region (`ko-KR`).
    fn from_tag(tag: &str) -> Option<Self> {
        let primary = tag.split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("ko") {
            Some(Self::Ko)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Self::En)
        } else {
            None
        }
    }
}

/// The page's language: `lang` of the query string when it is `ko` or `en`, else the
/// `Accept-Language` entry with the highest q-value that we speak (the first of equals), else
/// English.
pub fn choose_lang(query: Option<&str>, accept_language: Option<&str>) -> Lang {
    query
        .and_then(lang_from_query)
        .or_else(|| accept_language.and_then(lang_from_accept_language))
        .unwrap_or(Lang::En)
}

fn lang_from_query(query: &str) -> Option<Lang> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| *key == "lang")
        .find_map(|(_, value)| Lang::from_tag(value))
}

/// RFC 9110 §12.5.4: `ko-KR, ko;q=0.9, en;q=0.5`. Entries with q=0 or an unreadable q are
/// skipped; `*` adds nothing (English is the default anyway).
fn lang_from_accept_language(header: &str) -> Option<Lang> {
    let mut best: Option<(f32, Lang)> = None;
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
        let Some(lang) = Lang::from_tag(tag) else {
            continue;
        };
        if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
            best = Some((q, lang));
        }
    }
    best.map(|(_, lang)| lang)
}

// ---------------------------------------------------------------------------------------------
// Strings

/// One string of the page in both languages.
#[derive(Debug)]
pub struct Message {
    pub key: &'static str,
    pub en: &'static str,
    pub ko: &'static str,
}

impl Message {
    pub fn get(&self, lang: Lang) -> &'static str {
        match lang {
            Lang::En => self.en,
            Lang::Ko => self.ko,
        }
    }
}

const fn m(key: &'static str, en: &'static str, ko: &'static str) -> Message {
    Message { key, en, ko }
}

/// Every string of the page. `{name}` is filled in by the script. `err_<code>` words an error
/// code of the contract (in English the page shows the server's own message instead).
pub const MESSAGES: &[Message] = &[
    m("page_title", "Waiting room", "대기실"),
    m("skip_to_content", "Skip to content", "본문으로 건너뛰기"),
    m("nav_label", "Page options", "페이지 설정"),
    m("other_lang_name", "한국어", "English"),
    m("sign_out", "Sign out", "로그아웃"),
    m("loading", "Loading…", "불러오는 중…"),
    m(
        "noscript",
        "This page needs JavaScript to hold your place in line.",
        "대기열 순서를 유지하려면 JavaScript가 필요합니다.",
    ),
    m("footer", "Powered by Dropline", "Dropline 제공"),
    // sign-in, sign-up, verification
    m(
        "signin_title",
        "Sign in to join the line",
        "로그인하고 줄 서기",
    ),
    m(
        "signin_intro",
        "You need an account to get a place in line.",
        "대기열에 들어가려면 계정이 필요합니다.",
    ),
    m("email", "E-mail", "이메일"),
    m("password", "Password", "비밀번호"),
    m("name", "Name", "이름"),
    m("signin_submit", "Sign in", "로그인"),
    m("signup_prompt", "No account yet?", "계정이 없으신가요?"),
    m("signup_link", "Create one", "회원가입"),
    m("signin_prompt", "Already registered?", "이미 가입하셨나요?"),
    m("signin_link", "Sign in", "로그인"),
    m("signup_title", "Create an account", "회원가입"),
    m("password_hint", "8 to 128 characters.", "8~128자."),
    m("signup_submit", "Create account", "가입하기"),
    m("verify_title", "Check your e-mail", "이메일을 확인하세요"),
    m(
        "verify_intro",
        "We sent a six-digit code to {email}.",
        "{email}(으)로 6자리 코드를 보냈습니다.",
    ),
    m(
        "verify_intro_plain",
        "We sent you a six-digit code by e-mail.",
        "이메일로 6자리 코드를 보냈습니다.",
    ),
    m("code", "Six-digit code", "6자리 코드"),
    m("verify_submit", "Verify", "인증하기"),
    m("resend", "Send a new code", "코드 다시 받기"),
    m(
        "code_resent",
        "If the address has an account, a new code is on its way.",
        "가입된 주소라면 새 코드가 곧 도착합니다.",
    ),
    m(
        "session_expired",
        "Your session has ended. Please sign in again.",
        "세션이 만료되었습니다. 다시 로그인해 주세요.",
    ),
    m("signed_out", "You are signed out.", "로그아웃되었습니다."),
    // the line
    m("waiting_title", "You are in line", "대기 중입니다"),
    m(
        "waiting_body",
        "Keep this page open. You move on by yourself when it is your turn.",
        "이 페이지를 열어 두세요. 차례가 되면 자동으로 넘어갑니다.",
    ),
    m(
        "scheduled_title",
        "The sale has not opened yet",
        "아직 판매가 시작되지 않았습니다",
    ),
    m(
        "scheduled_body",
        "Everyone who arrives before the opening is put in a random order when the sale opens, so there is no need to refresh.",
        "오픈 전에 들어온 분들은 오픈 시각에 무작위로 순서가 정해집니다. 새로고침할 필요가 없습니다.",
    ),
    m(
        "paused_title",
        "The line is paused",
        "대기열이 잠시 멈췄습니다",
    ),
    m(
        "paused_body",
        "Admission is paused for a moment. You keep your place.",
        "입장이 잠시 중단되었습니다. 순서는 그대로 유지됩니다.",
    ),
    m("opens_in", "Opens in", "오픈까지"),
    m("opening_now", "Opening…", "곧 오픈합니다…"),
    m("position_label", "Your place in line", "내 대기 순서"),
    m("people_ahead", "{n} ahead of you", "앞에 {n}명"),
    m("next_in_line", "You are next", "다음 차례입니다"),
    m("eta_label", "Estimated wait", "예상 대기 시간"),
    m("eta_now", "any moment now", "곧 입장"),
    m("eta_under_minute", "less than a minute", "1분 이내"),
    m("eta_minutes", "about {n} min", "약 {n}분"),
    m("eta_hours", "about {h} h {m} min", "약 {h}시간 {m}분"),
    m("progress_label", "Progress", "진행률"),
    m("progress_value", "{p}%", "{p}%"),
    m("updated_at", "Updated {time}", "{time} 업데이트"),
    m(
        "announce_position",
        "You are number {n} in line. Estimated wait: {eta}.",
        "현재 {n}번째입니다. 예상 대기 시간: {eta}.",
    ),
    m("leave", "Leave the line", "대기열 나가기"),
    m("try_again", "Try again", "다시 시도"),
    m("left_title", "You left the line", "대기열에서 나왔습니다"),
    m(
        "left_body",
        "Your place was given up. If you join again, you go to the back of the line.",
        "순서를 포기했습니다. 다시 들어오면 맨 뒤에 서게 됩니다.",
    ),
    m("rejoin", "Join the line again", "다시 줄 서기"),
    m("sold_out_title", "Sold out", "품절"),
    m(
        "sold_out_body",
        "Everything has been sold. Thank you for waiting.",
        "모든 수량이 판매되었습니다. 기다려 주셔서 감사합니다.",
    ),
    m(
        "closed_title",
        "The sale has ended",
        "판매가 종료되었습니다",
    ),
    m(
        "closed_body",
        "This sale is closed. Thank you for your interest.",
        "이 판매는 종료되었습니다. 관심 가져 주셔서 감사합니다.",
    ),
    m("missing_title", "No such sale", "존재하지 않는 판매입니다"),
    m(
        "missing_body",
        "Check the link you followed.",
        "접속한 링크를 확인해 주세요.",
    ),
    m(
        "retry_network",
        "Cannot reach the server. Trying again in {s} s…",
        "서버에 연결할 수 없습니다. {s}초 후 다시 시도합니다…",
    ),
    m(
        "retry_busy",
        "The waiting room is busy. Trying again in {s} s…",
        "대기실이 혼잡합니다. {s}초 후 다시 시도합니다…",
    ),
    m(
        "retry_rate_limited",
        "Too many requests. Trying again in {s} s…",
        "요청이 너무 많습니다. {s}초 후 다시 시도합니다…",
    ),
    m(
        "retry_queue_full",
        "The line is full right now. Trying again in {s} s…",
        "지금은 대기열이 가득 찼습니다. {s}초 후 다시 시도합니다…",
    ),
    // purchase
    m("buy_title", "It is your turn", "입장 차례입니다"),
    m(
        "admitted_announce",
        "It is your turn. You can order now.",
        "입장 차례입니다. 지금 주문할 수 있습니다.",
    ),
    m("pass_left_label", "Time left to order:", "주문 가능 시간:"),
    m("quantity", "Quantity", "수량"),
    m("card_label", "Test card", "테스트 카드"),
    m("card_ok", "Approved", "승인"),
    m("card_fail", "Declined", "거절"),
    m(
        "card_slow",
        "No answer (times out)",
        "응답 없음 (시간 초과)",
    ),
    m(
        "card_hint",
        "Payments are simulated: no real card is charged.",
        "결제는 모의 결제입니다. 실제 카드는 청구되지 않습니다.",
    ),
    m("order_submit", "Order and pay", "주문하고 결제하기"),
    m("pay_submit", "Pay", "결제하기"),
    m("ordering", "Placing your order…", "주문하는 중…"),
    m("paying", "Paying…", "결제하는 중…"),
    m("order_status_label", "Order:", "주문 상태:"),
    m("order_amount", "{n} × · {amount}", "{n}개 · {amount}"),
    m("order_held", "reserved", "재고 확보됨"),
    m("order_paying", "payment in progress", "결제 진행 중"),
    m("order_paid", "paid", "결제 완료"),
    m("order_failed", "payment failed", "결제 실패"),
    m("order_expired", "reservation expired", "예약 만료"),
    m("order_cancelled", "cancelled", "취소됨"),
    m(
        "hold_left",
        "Reserved for you for {time}",
        "{time} 동안 확보되어 있습니다",
    ),
    m(
        "result_paid",
        "Paid. Your order is confirmed. Thank you!",
        "결제가 완료되어 주문이 확정되었습니다. 감사합니다!",
    ),
    m(
        "result_failed",
        "The payment did not go through and the items went back on sale. You may try again while your pass lasts.",
        "결제가 완료되지 않아 상품이 다시 판매로 돌아갔습니다. 입장 시간이 남아 있으면 다시 시도할 수 있습니다.",
    ),
    m(
        "result_expired",
        "The reservation expired before payment. You may try again while your pass lasts.",
        "결제 전에 예약이 만료되었습니다. 입장 시간이 남아 있으면 다시 시도할 수 있습니다.",
    ),
    m(
        "result_cancelled",
        "The order was cancelled.",
        "주문이 취소되었습니다.",
    ),
    m(
        "orders_unavailable",
        "Ordering is not available yet. Keep this page open and try again in a moment.",
        "아직 주문할 수 없습니다. 이 페이지를 열어 둔 채 잠시 후 다시 시도해 주세요.",
    ),
    m(
        "pass_expired",
        "Your time to order has run out.",
        "주문 가능 시간이 끝났습니다.",
    ),
    // errors
    m(
        "err_network",
        "Cannot reach the server. Check your connection and try again.",
        "서버에 연결할 수 없습니다. 연결을 확인하고 다시 시도해 주세요.",
    ),
    m(
        "err_generic",
        "Something went wrong. Please try again.",
        "문제가 발생했습니다. 다시 시도해 주세요.",
    ),
    m(
        "err_fill_in",
        "Please fill in every field.",
        "모든 항목을 입력해 주세요.",
    ),
    m(
        "err_code_format",
        "The code has six digits.",
        "코드는 숫자 6자리입니다.",
    ),
    m(
        "err_bad_request",
        "Please check what you entered.",
        "입력한 내용을 확인해 주세요.",
    ),
    m(
        "err_unauthorized",
        "Please sign in again.",
        "다시 로그인해 주세요.",
    ),
    m(
        "err_forbidden",
        "This is not allowed.",
        "허용되지 않은 요청입니다.",
    ),
    m(
        "err_not_admitted",
        "Your pass is no longer valid. Join the line again.",
        "입장 권한이 더 이상 유효하지 않습니다. 다시 줄을 서 주세요.",
    ),
    m(
        "err_email_not_verified",
        "Your e-mail address is not verified yet.",
        "이메일 주소가 아직 인증되지 않았습니다.",
    ),
    m("err_not_found", "Not found.", "찾을 수 없습니다."),
    m(
        "err_invalid_code",
        "The code is wrong or has expired.",
        "코드가 틀렸거나 만료되었습니다.",
    ),
    m(
        "err_invalid_credentials",
        "Wrong e-mail or password.",
        "이메일 또는 비밀번호가 올바르지 않습니다.",
    ),
    m(
        "err_idempotency_key_reused",
        "This order attempt was already used. Please try again.",
        "이미 사용된 주문 요청입니다. 다시 시도해 주세요.",
    ),
    m("err_sold_out", "Sold out.", "품절되었습니다."),
    m(
        "err_limit_exceeded",
        "You have reached the limit per buyer.",
        "1인당 구매 한도에 도달했습니다.",
    ),
    m(
        "err_sale_not_open",
        "The sale is not open.",
        "판매 중이 아닙니다.",
    ),
    m(
        "err_invalid_state",
        "That is not possible right now.",
        "지금은 할 수 없는 작업입니다.",
    ),
    m(
        "err_email_taken",
        "This e-mail address is already registered.",
        "이미 가입된 이메일 주소입니다.",
    ),
    m(
        "err_rate_limited",
        "Too many attempts. Please wait a moment.",
        "시도가 너무 많습니다. 잠시 후 다시 시도해 주세요.",
    ),
    m(
        "err_queue_full",
        "The waiting room is full. Please try again shortly.",
        "대기실이 가득 찼습니다. 잠시 후 다시 시도해 주세요.",
    ),
    m(
        "err_unavailable",
        "Temporarily unavailable. Please try again shortly.",
        "일시적으로 이용할 수 없습니다. 잠시 후 다시 시도해 주세요.",
    ),
    m(
        "err_internal",
        "Something went wrong on our side.",
        "서버에 문제가 발생했습니다.",
    ),
];

fn message_index(key: &str) -> Option<usize> {
    MESSAGES.iter().position(|message| message.key == key)
}

/// The catalog in one language, serialised as a JSON object `{key: text}`.
struct Strings(Lang);

impl Serialize for Strings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(MESSAGES.len()))?;
        for message in MESSAGES {
            map.serialize_entry(message.key, message.get(self.0))?;
        }
        map.end()
    }
}

/// What `waiting.js` reads from `{{config_json}}`.
#[derive(serde::Serialize)]
struct PageConfig<'a> {
    sale_id: &'a str,
    api_base_url: &'a str,
    lang: &'static str,
    strings: Strings,
}

// ---------------------------------------------------------------------------------------------
// Template

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
    fn parse(name: &str) -> Option<Self> {
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
            _ => Self::Text(message_index(name.strip_prefix("t:")?)?),
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
    pub lang: Lang,
    pub sale_id: &'a str,
    pub api_base_url: &'a str,
    pub nonce: &'a str,
    pub stylesheet_href: &'a str,
    pub script_src: &'a str,
}

impl Template {
    /// Parses `source`; the error says what is wrong and on which line.
    pub fn parse(source: &str) -> Result<Self, String> {
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
            let slot = Slot::parse(name).ok_or_else(|| {
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
            strings: Strings(lang),
        };
        // Serialising strings into a String cannot fail; an empty object keeps the page alive.
        let config_json = serde_json::to_string(&config).unwrap_or_else(|_| "{}".to_owned());
        let mut out = String::with_capacity(self.literal_len + config_json.len() + 512);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Slot(slot) => match *slot {
                    Slot::Lang => out.push_str(lang.code()),
                    Slot::OtherLang => out.push_str(lang.other().code()),
                    Slot::OtherLangHref => {
                        let _ = write!(out, "?lang={}", lang.other().code());
                    }
                    Slot::SaleId => escape_html_into(&mut out, values.sale_id),
                    Slot::ApiBaseUrl => escape_html_into(&mut out, values.api_base_url),
                    Slot::Nonce => escape_html_into(&mut out, values.nonce),
                    Slot::StylesheetHref => escape_html_into(&mut out, values.stylesheet_href),
                    Slot::ScriptSrc => escape_html_into(&mut out, values.script_src),
                    Slot::ConfigJson => escape_script_json_into(&mut out, &config_json),
                    Slot::Text(index) => {
                        if let Some(message) = MESSAGES.get(index) {
                            escape_html_into(&mut out, message.get(lang));
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

// ---------------------------------------------------------------------------------------------
// State and handlers

/// A static asset with its content fingerprint.
#[derive(Debug)]
pub(crate) struct Asset {
    body: &'static str,
    content_type: &'static str,
    version: String,
    etag: HeaderValue,
    pub(crate) versioned_url: String,
}

impl Asset {
    pub(crate) fn new(
        path: &str,
        body: &'static str,
        content_type: &'static str,
    ) -> anyhow::Result<Self> {
        let version = format!("{:016x}", fnv1a(body.as_bytes()));
        let etag = HeaderValue::from_str(&format!("\"{version}\""))?;
        Ok(Self {
            body,
            content_type,
            versioned_url: format!("{path}?v={version}"),
            version,
            etag,
        })
    }

    pub(crate) fn respond(&self, query: Option<&str>, headers: &HeaderMap) -> Response {
        let current = query.is_some_and(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .any(|(key, value)| key == "v" && value == self.version)
        });
        let cache = HeaderValue::from_static(if current { IMMUTABLE } else { SHORT });
        let fresh = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/").as_bytes() == self.etag.as_bytes()
            });
        let mut response = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            let mut r = self.body.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
            r
        };
        let h = response.headers_mut();
        h.insert(header::CACHE_CONTROL, cache);
        h.insert(header::ETAG, self.etag.clone());
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

/// FNV-1a, 64 bits: a content fingerprint for cache busting, not a security measure.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[derive(Debug)]
struct PageState {
    template: Template,
    api_base_url: String,
    /// The api's origin for `connect-src`, when it is not the page's own.
    api_origin: Option<String>,
    script: Asset,
    stylesheet: Asset,
}

impl PageState {
    fn new(config: &WaitroomConfig) -> anyhow::Result<Self> {
        let (api_base_url, api_origin) = api_base_url(&config.api_base_url)?;
        let template = match &config.page_template_file {
            None => Template::parse(BUILTIN_TEMPLATE)
                .map_err(|e| anyhow::anyhow!("the built-in waiting page template: {e}"))?,
            Some(path) => {
                let source = std::fs::read_to_string(path).with_context(|| {
                    format!(
                        "config key `{TEMPLATE_KEY}`: cannot read `{}`",
                        path.display()
                    )
                })?;
                Template::parse(&source).map_err(|e| {
                    anyhow::anyhow!("config key `{TEMPLATE_KEY}`: `{}`: {e}", path.display())
                })?
            }
        };
        Ok(Self {
            template,
            api_base_url,
            api_origin,
            script: Asset::new(SCRIPT_PATH, SCRIPT, "text/javascript; charset=utf-8")?,
            stylesheet: Asset::new(STYLESHEET_PATH, STYLESHEET, "text/css; charset=utf-8")?,
        })
    }

    fn content_security_policy(&self, nonce: &str) -> String {
        let api = self
            .api_origin
            .as_deref()
            .map(|origin| format!(" {origin}"))
            .unwrap_or_default();
        format!(
            "default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; \
             img-src 'self' data:; connect-src 'self'{api}; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'"
        )
    }
}

/// `waitroom.api_base_url` without a trailing `/`, and its origin when it has one.
pub(crate) fn api_base_url(raw: &str) -> anyhow::Result<(String, Option<String>)> {
    let trimmed = raw.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok((String::new(), None));
    }
    let invalid = |why: &str| {
        anyhow::anyhow!(
            "config key `{API_BASE_URL_KEY}`: expected empty or an http(s):// URL without query or fragment, got `{raw}` ({why})"
        )
    };
    let url = url::Url::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("scheme"));
    }
    if url.host_str().is_none() {
        return Err(invalid("no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL"));
    }
    Ok((trimmed.to_owned(), Some(url.origin().ascii_serialization())))
}

async fn waiting_page(
    State(page): State<Arc<PageState>>,
    sale: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(sale_id) = sale.ok().and_then(|Path(raw)| Uuid::parse_str(&raw).ok()) else {
        return ApiError::new(
            ErrorCode::NotFound,
            "no such sale: a sale id is a UUID such as 0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10",
        )
        .into_response();
    };
    let accept_language = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    let lang = choose_lang(query.as_deref(), accept_language);
    let nonce = format!("{:032x}", rand::random::<u128>());
    let sale_id = sale_id.hyphenated().to_string();
    let html = page.template.render(&Values {
        lang,
        sale_id: &sale_id,
        api_base_url: &page.api_base_url,
        nonce: &nonce,
        stylesheet_href: &page.stylesheet.versioned_url,
        script_src: &page.script.versioned_url,
    });
    let csp = page.content_security_policy(&nonce);
    let mut response = html.into_response();
    let h = response.headers_mut();
    html_headers(h, &csp);
    h.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
    h.insert(
        header::CONTENT_LANGUAGE,
        HeaderValue::from_static(lang.code()),
    );
    response
}

/// The headers every HTML page of the waitroom carries: HTML, never cached, no sniffing, no
/// referrer, no framing, and its Content-Security-Policy `csp`.
pub(crate) fn html_headers(h: &mut HeaderMap, csp: &str) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(value) = HeaderValue::from_str(csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, value);
    }
}

async fn script(
    State(page): State<Arc<PageState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    page.script.respond(query.as_deref(), &headers)
}

async fn stylesheet(
    State(page): State<Arc<PageState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    page.stylesheet.respond(query.as_deref(), &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_wins_then_accept_language_by_q_then_english() {
        let cases: &[(Option<&str>, Option<&str>, Lang)] = &[
            (Some("lang=ko"), Some("en"), Lang::Ko),
            (Some("x=1&lang=EN"), Some("ko"), Lang::En),
            (Some("lang=fr"), Some("ko-KR,ko;q=0.9"), Lang::Ko),
            (Some("lang="), None, Lang::En),
            (None, Some("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7"), Lang::Ko),
            (None, Some("en;q=0.5, ko;q=0.8"), Lang::Ko),
            (None, Some("ko;q=0.5, en;q=0.8"), Lang::En),
            (None, Some("fr-CH, fr;q=0.9, ko;q=0.1"), Lang::Ko),
            (None, Some("ko;q=0, fr"), Lang::En),
            (None, Some("ko;q=abc"), Lang::En),
            (None, Some("ko;q=2"), Lang::En),
            (None, Some("en, ko"), Lang::En),
            (None, Some("ko , en"), Lang::Ko),
            (None, Some("KO;Q=0.3"), Lang::Ko),
            (None, Some("*"), Lang::En),
            (None, Some(""), Lang::En),
            (None, Some(";;,,=q"), Lang::En),
            (None, None, Lang::En),
        ];
        for (query, accept, want) in cases {
            assert_eq!(
                choose_lang(*query, *accept),
                *want,
                "query {query:?}, Accept-Language {accept:?}"
            );
        }
    }

    #[test]
    fn every_string_exists_in_both_languages_once() {
        let mut seen = std::collections::HashSet::new();
        for message in MESSAGES {
            assert!(seen.insert(message.key), "duplicate key {}", message.key);
            assert!(
                !message.en.trim().is_empty(),
                "{} lacks English",
                message.key
            );
            assert!(
                !message.ko.trim().is_empty(),
                "{} lacks Korean",
                message.key
            );
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
            assert_eq!(names(message.en), names(message.ko), "{}", message.key);
        }
    }

    #[test]
    fn every_key_the_script_uses_is_in_the_catalog() {
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
        for state in ["scheduled", "paused", "waiting"] {
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
        ] {
            keys.push(format!("err_{}", code.as_str()));
        }
        for key in keys {
            assert!(message_index(&key).is_some(), "the catalog lacks `{key}`");
        }
    }

    fn values(sale_id: &str) -> Values<'_> {
        Values {
            lang: Lang::Ko,
            sale_id,
            api_base_url: "https://api.example",
            nonce: "abc",
            stylesheet_href: "/w/assets/waiting.css?v=1",
            script_src: "/w/assets/waiting.js?v=1",
        }
    }

    #[test]
    fn the_builtin_template_renders_in_both_languages() -> Result<(), String> {
        let template = Template::parse(BUILTIN_TEMPLATE)?;
        let mut v = values("0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10");
        let ko = template.render(&v);
        assert!(ko.contains(r#"<html lang="ko">"#));
        assert!(ko.contains("<title>대기실</title>"));
        assert!(ko.contains(r#"href="?lang=en""#));
        assert!(!ko.contains("{{"), "every placeholder is filled");
        v.lang = Lang::En;
        let en = template.render(&v);
        assert!(en.contains("<title>Waiting room</title>"));
        assert!(en.contains(r#"src="/w/assets/waiting.js?v=1""#));
        Ok(())
    }

    #[test]
    fn values_are_escaped_for_html_and_for_the_json_block() -> Result<(), String> {
        let nasty = "\"><script>alert('x')</script>&\u{2028}";
        let template = Template::parse(
            "<p title=\"{{sale_id}}\">{{ sale_id }}</p>\
             <script type=\"application/json\">{{config_json}}</script>\
             <script src=\"{{script_src}}\"></script>",
        )?;
        let html = template.render(&values(nasty));
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
    fn a_bad_template_says_what_and_where() {
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
            match Template::parse(source) {
                Ok(_) => panic!("{source:?} was accepted"),
                Err(e) => assert!(e.contains(want), "{source:?}: `{e}` lacks `{want}`"),
            }
        }
    }

    #[test]
    fn api_base_url_is_checked_and_gives_the_csp_origin() -> anyhow::Result<()> {
        assert_eq!(api_base_url("")?, (String::new(), None));
        assert_eq!(
            api_base_url("http://127.0.0.1:8081/")?,
            (
                "http://127.0.0.1:8081".to_owned(),
                Some("http://127.0.0.1:8081".to_owned())
            )
        );
        assert_eq!(
            api_base_url("https://shop.example/dropline")?.1.as_deref(),
            Some("https://shop.example")
        );
        for bad in [
            "ftp://x",
            "not a url",
            "https://x/?a=1",
            "https://u:p@x",
            "javascript:alert(1)",
        ] {
            let e = api_base_url(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.contains(API_BASE_URL_KEY)),
                "{bad}: {e:?}"
            );
        }
        Ok(())
    }

    fn config(api_base_url: &str, template: Option<&std::path::Path>) -> WaitroomConfig {
        WaitroomConfig {
            listen: "127.0.0.1:0".into(),
            abandon_after_seconds: 120,
            admission_window_seconds: 600,
            max_queue_length: 0,
            join_per_ip_per_minute: 1,
            join_per_user_per_minute: 1,
            status_per_ip_per_minute: 1,
            status_per_user_per_minute: 1,
            admit_tick_ms: 100,
            lease_seconds: 3,
            reap_interval_ms: 1000,
            run_admitter: false,
            api_base_url: api_base_url.into(),
            page_template_file: template.map(std::path::Path::to_path_buf),
        }
    }

    async fn get(
        router: &Router,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, HeaderMap, String)> {
        use tower::ServiceExt;
        let mut request = axum::http::Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = router
            .clone()
            .oneshot(request.body(axum::body::Body::empty())?)
            .await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
        Ok((status, headers, String::from_utf8(body.to_vec())?))
    }

    fn header(headers: &HeaderMap, name: header::HeaderName) -> &str {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn the_page_is_served_in_the_chosen_language_with_a_strict_policy() -> anyhow::Result<()>
    {
        let router = routes(&config("http://127.0.0.1:8081", None))?;
        let sale = "0190C2A4-7E5B-7CC3-9F1E-2B8D4F6A9C10";
        let (status, headers, body) = get(
            &router,
            &format!("/w/{sale}"),
            &[("accept-language", "ko-KR,ko;q=0.9,en;q=0.8")],
        )
        .await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header(&headers, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header(&headers, header::CONTENT_LANGUAGE), "ko");
        assert_eq!(header(&headers, header::CACHE_CONTROL), "no-store");
        assert!(body.contains(r#"<html lang="ko">"#));
        assert!(
            body.contains(r#""sale_id":"0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10""#),
            "the canonical id goes to the script"
        );
        assert!(body.contains(r#""api_base_url":"http://127.0.0.1:8081""#));
        let csp = header(&headers, header::CONTENT_SECURITY_POLICY);
        assert!(
            csp.contains("connect-src 'self' http://127.0.0.1:8081;"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("script-src 'self' 'nonce-"), "{csp}");

        let (_, headers, body) = get(
            &router,
            &format!("/w/{sale}?lang=en"),
            &[("accept-language", "ko")],
        )
        .await?;
        assert_eq!(header(&headers, header::CONTENT_LANGUAGE), "en");
        assert!(body.contains("<title>Waiting room</title>"));
        Ok(())
    }

    #[tokio::test]
    async fn a_bad_sale_id_is_a_contract_404() -> anyhow::Result<()> {
        let router = routes(&config("", None))?;
        for uri in ["/w/not-a-sale", "/w/%3Cscript%3E", "/w/%FF%FE", "/w/assets"] {
            let (status, headers, body) = get(&router, uri, &[]).await?;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(header(&headers, header::CONTENT_TYPE), "application/json");
            let error: serde_json::Value = serde_json::from_str(&body)?;
            assert_eq!(error["error"]["code"], "not_found", "{uri}: {body}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn assets_have_types_fingerprints_and_revalidate() -> anyhow::Result<()> {
        let router = routes(&config("", None))?;
        let (_, _, page) = get(&router, "/w/0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10", &[]).await?;
        for (path, content_type) in [
            (SCRIPT_PATH, "text/javascript; charset=utf-8"),
            (STYLESHEET_PATH, "text/css; charset=utf-8"),
        ] {
            let start = page
                .find(&format!("{path}?v="))
                .ok_or_else(|| anyhow::anyhow!("the page does not link {path}"))?;
            let end = start + page[start..].find('"').unwrap_or_default();
            let versioned = &page[start..end];
            let (status, headers, body) = get(&router, versioned, &[]).await?;
            assert_eq!(status, StatusCode::OK);
            assert!(!body.is_empty());
            assert_eq!(header(&headers, header::CONTENT_TYPE), content_type);
            assert_eq!(header(&headers, header::CACHE_CONTROL), IMMUTABLE);
            assert_eq!(header(&headers, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            let etag = header(&headers, header::ETAG).to_owned();

            let (_, headers, _) = get(&router, path, &[]).await?;
            assert_eq!(
                header(&headers, header::CACHE_CONTROL),
                SHORT,
                "no fingerprint"
            );
            let (status, _, body) = get(&router, path, &[("if-none-match", &etag)]).await?;
            assert_eq!(status, StatusCode::NOT_MODIFIED);
            assert!(body.is_empty());
        }
        Ok(())
    }

    #[test]
    fn a_custom_template_is_used_and_a_broken_one_stops_the_start() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("dl-page-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let good = dir.join("good.html");
        std::fs::write(
            &good,
            "<main>{{t:waiting_title}} {{sale_id}}</main>\
             <script type=\"application/json\" id=\"dl-config\">{{config_json}}</script>\
             <script nonce=\"{{nonce}}\">/* inline */</script><script src=\"{{script_src}}\"></script>",
        )?;
        assert!(routes(&config("", Some(&good))).is_ok());

        let broken = dir.join("broken.html");
        std::fs::write(&broken, "{{config_json}}{{script_src}}{{waiting_title}}")?;
        let missing = dir.join("missing.html");
        for (path, want) in [
            (&broken, "unknown placeholder `{{waiting_title}}`"),
            (&missing, "cannot read"),
        ] {
            let error = routes(&config("", Some(path)))
                .err()
                .map(|e| format!("{e:#}"))
                .unwrap_or_default();
            assert!(error.contains(TEMPLATE_KEY), "{error}");
            assert!(error.contains(want), "{error}");
        }
        let error = routes(&config("mailto:x", None))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains(API_BASE_URL_KEY), "{error}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }

    #[tokio::test]
    async fn a_custom_template_gets_the_nonce_of_its_policy() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("dl-page-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("t.html");
        std::fs::write(
            &file,
            "<script nonce=\"{{nonce}}\"></script>{{config_json}}{{script_src}}",
        )?;
        let router = routes(&config("", Some(&file)))?;
        let (_, headers, body) =
            get(&router, "/w/0190c2a4-7e5b-7cc3-9f1e-2b8d4f6a9c10", &[]).await?;
        let nonce = body
            .strip_prefix("<script nonce=\"")
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default();
        assert_eq!(nonce.len(), 32, "{body}");
        let csp = header(&headers, header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains(&format!("'nonce-{nonce}'")), "{csp}");
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}

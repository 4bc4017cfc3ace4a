//! The page's words and the buyer's language: the catalog of every string of the page in
//! English and Korean, and the choice of a language from `?lang=` and `Accept-Language`.

use serde::ser::{Serialize, SerializeMap, Serializer};

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

pub(super) fn message_index(key: &str) -> Option<usize> {
    MESSAGES.iter().position(|message| message.key == key)
}

/// The catalog in one language, serialised as a JSON object `{key: text}`.
pub(super) struct Strings(pub(super) Lang);

impl Serialize for Strings {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(MESSAGES.len()))?;
        for message in MESSAGES {
            map.serialize_entry(message.key, message.get(self.0))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use dropline_core::error::ErrorCode;

    use super::*;
    use crate::page::assets::SCRIPT;

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
}

### The waiting page's words in Korean (한국어). The keys and the `{ $name }` values are those
### of en.ftl, which says what they are.

## The page

page_title = 대기실
skip_to_content = 본문으로 건너뛰기
nav_label = 페이지 설정
other_lang_name = English
sign_out = 로그아웃
loading = 불러오는 중…
noscript = 대기열 순서를 유지하려면 JavaScript가 필요합니다.
footer = Dropline 제공

## Sign-in, sign-up, verification

signin_title = 로그인하고 줄 서기
signin_intro = 대기열에 들어가려면 계정이 필요합니다.
email = 이메일
password = 비밀번호
name = 이름
signin_submit = 로그인
signup_prompt = 계정이 없으신가요?
signup_link = 회원가입
signin_prompt = 이미 가입하셨나요?
signin_link = 로그인
signup_title = 회원가입
password_hint = 8~128자.
signup_submit = 가입하기
verify_title = 이메일을 확인하세요
verify_intro = { $email }(으)로 6자리 코드를 보냈습니다.
verify_intro_plain = 이메일로 6자리 코드를 보냈습니다.
code = 6자리 코드
verify_submit = 인증하기
resend = 코드 다시 받기
code_resent = 가입된 주소라면 새 코드가 곧 도착합니다.
session_expired = 세션이 만료되었습니다. 다시 로그인해 주세요.
signed_out = 로그아웃되었습니다.

## The line

waiting_title = 대기 중입니다
waiting_body = 이 페이지를 열어 두세요. 차례가 되면 자동으로 넘어갑니다.
scheduled_title = 아직 판매가 시작되지 않았습니다
scheduled_body = 오픈 전에 들어온 분들은 오픈 시각에 무작위로 순서가 정해집니다. 새로고침할 필요가 없습니다.
paused_title = 대기열이 잠시 멈췄습니다
paused_body = 입장이 잠시 중단되었습니다. 순서는 그대로 유지됩니다.
entered_title = 추첨에 응모했습니다
entered_body = 응모가 접수되었습니다. 응모가 마감되면 추첨합니다. 이 페이지를 열어 두거나 그때 다시 오세요.
waitlisted_title = 대기 명단에 있습니다
waitlisted_body = 먼저 당첨되지는 않았습니다. 당첨자가 제시간에 구매하지 않으면 다음 순번에게 기회가 갑니다.
opens_in = 오픈까지
opening_now = 곧 오픈합니다…
position_label = 내 대기 순서
people_ahead = 앞에 { $n }명
next_in_line = 다음 차례입니다
eta_label = 예상 대기 시간
eta_now = 곧 입장
eta_under_minute = 1분 이내
eta_minutes = 약 { $n }분
eta_hours = 약 { $h }시간 { $m }분
progress_label = 진행률
progress_value = { $p }%
updated_at = { $time } 업데이트
announce_position = 현재 { $n }번째입니다. 예상 대기 시간: { $eta }.
pow_title = 대기열 입장을 준비하고 있습니다
group_label = 내 그룹
code_title = 사전 판매: 입장 코드가 필요합니다
code_body = 사전 판매가 끝날 때까지는 입장 코드가 있는 분만 대기열에 들어올 수 있습니다. 코드를 입력해 주세요.
code_label = 입장 코드
code_submit = 이 코드로 입장
code_invalid = 이 판매에 쓸 수 없는 코드입니다. 확인 후 다시 입력해 주세요.
code_used = 이미 사용된 코드입니다.
pow_body = 자동화 프로그램이 자리를 대량으로 차지하기 어렵도록 브라우저가 잠시 계산을 합니다. 몇 초 걸리니 이 페이지를 열어 두세요.
pow_label = 계산 중
pow_progress = { $p }%
pow_failed = 브라우저에서 계산을 마치지 못했습니다. 다시 시도해 주세요.
leave = 대기열 나가기
try_again = 다시 시도
left_title = 대기열에서 나왔습니다
left_body = 순서를 포기했습니다. 다시 들어오면 맨 뒤에 서게 됩니다.
rejoin = 다시 줄 서기
sold_out_title = 품절
sold_out_body = 모든 수량이 판매되었습니다. 기다려 주셔서 감사합니다.
not_won_title = 이번에는 당첨되지 않았습니다
not_won_body = 추첨이 끝났고 응모하신 항목은 당첨되지 않았습니다. 참여해 주셔서 감사합니다.
forfeited_title = 당첨 기회가 만료되었습니다
forfeited_body = 구매 기한이 지나 다음 순번에게 기회가 넘어갔습니다.
claimed_title = 구매를 완료했습니다
claimed_body = 당첨 상품을 구매했습니다. 확인 메일을 보내 드렸습니다.
closed_title = 판매가 종료되었습니다
closed_body = 이 판매는 종료되었습니다. 관심 가져 주셔서 감사합니다.
missing_title = 존재하지 않는 판매입니다
missing_body = 접속한 링크를 확인해 주세요.
retry_network = 서버에 연결할 수 없습니다. { $s }초 후 다시 시도합니다…
retry_busy = 대기실이 혼잡합니다. { $s }초 후 다시 시도합니다…
retry_rate_limited = 요청이 너무 많습니다. { $s }초 후 다시 시도합니다…
retry_queue_full = 지금은 대기열이 가득 찼습니다. { $s }초 후 다시 시도합니다…

## Purchase

buy_title = 입장 차례입니다
admitted_announce = 입장 차례입니다. 지금 주문할 수 있습니다.
pass_left_label = 주문 가능 시간:
quantity = 수량
card_label = 테스트 카드
card_ok = 승인
card_fail = 거절
card_slow = 응답 없음 (시간 초과)
card_hint = 결제는 모의 결제입니다. 실제 카드는 청구되지 않습니다.
stripe_card_label = 카드
stripe_hint = 카드 정보는 결제 대행사 Stripe로 바로 전송되며, 이 상점은 카드 정보를 볼 수 없습니다.
stripe_loading = 보안 카드 입력란을 불러오는 중…
stripe_unavailable = 카드 입력란을 불러오지 못했습니다. 페이지를 새로 고쳐 다시 시도해 주세요.
stripe_card_error = 카드를 사용할 수 없습니다: { $reason }
payment_label = 결제:
payment_processing = 처리 중
payment_requires_action = 카드사 인증 대기 중
payment_approved = 승인됨
payment_declined = 거절됨
payment_declined_reason = 거절됨 ({ $reason })
payment_refunded = 환불됨
payment_authenticate = 카드사 인증 창에서 결제를 확인해 주세요.
payment_redirect = 결제를 확인하러 카드사 페이지로 이동합니다…
order_submit = 주문하고 결제하기
pay_submit = 결제하기
ordering = 주문하는 중…
paying = 결제하는 중…
order_status_label = 주문 상태:
order_amount = { $n }개 · { $amount }
order_held = 재고 확보됨
order_paying = 결제 진행 중
order_paid = 결제 완료
order_failed = 결제 실패
order_expired = 예약 만료
order_cancelled = 취소됨
hold_left = { $time } 동안 확보되어 있습니다
result_paid = 결제가 완료되어 주문이 확정되었습니다. 감사합니다!
result_failed = 결제가 완료되지 않아 상품이 다시 판매로 돌아갔습니다. 입장 시간이 남아 있으면 다시 시도할 수 있습니다.
result_expired = 결제 전에 예약이 만료되었습니다. 입장 시간이 남아 있으면 다시 시도할 수 있습니다.
result_cancelled = 주문이 취소되었습니다.
result_refunded = 주문을 완료할 수 없어 결제 금액 전액이 환불되었습니다.
orders_unavailable = 아직 주문할 수 없습니다. 이 페이지를 열어 둔 채 잠시 후 다시 시도해 주세요.
pass_expired = 주문 가능 시간이 끝났습니다.

## Errors: `err_<code>` words an error code of the api (the English page shows the
## server's own message instead)

err_network = 서버에 연결할 수 없습니다. 연결을 확인하고 다시 시도해 주세요.
err_generic = 문제가 발생했습니다. 다시 시도해 주세요.
err_fill_in = 모든 항목을 입력해 주세요.
err_code_format = 코드는 숫자 6자리입니다.
err_bad_request = 입력한 내용을 확인해 주세요.
err_unauthorized = 다시 로그인해 주세요.
err_forbidden = 허용되지 않은 요청입니다.
err_not_admitted = 입장 권한이 더 이상 유효하지 않습니다. 다시 줄을 서 주세요.
err_email_not_verified = 이메일 주소가 아직 인증되지 않았습니다.
err_not_found = 찾을 수 없습니다.
err_invalid_code = 코드가 틀렸거나 만료되었습니다.
err_invalid_credentials = 이메일 또는 비밀번호가 올바르지 않습니다.
err_idempotency_key_reused = 이미 사용된 주문 요청입니다. 다시 시도해 주세요.
err_sold_out = 품절되었습니다.
err_limit_exceeded = 1인당 구매 한도에 도달했습니다.
err_sale_not_open = 판매 중이 아닙니다.
err_entries_closed = 이 추첨의 응모가 마감되었습니다.
err_invalid_state = 지금은 할 수 없는 작업입니다.
err_email_taken = 이미 가입된 이메일 주소입니다.
err_rate_limited = 시도가 너무 많습니다. 잠시 후 다시 시도해 주세요.
err_queue_full = 대기실이 가득 찼습니다. 잠시 후 다시 시도해 주세요.
err_unavailable = 일시적으로 이용할 수 없습니다. 잠시 후 다시 시도해 주세요.
err_internal = 서버에 문제가 발생했습니다.
err_pow_required = 이 판매는 먼저 브라우저의 짧은 계산이 필요합니다. 다시 시도해 주세요.
err_pow_invalid = 계산 결과가 받아들여지지 않았습니다. 다시 시도해 주세요.

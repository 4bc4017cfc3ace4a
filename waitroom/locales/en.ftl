### The waiting page's words in English: the reference for every other language.
###
### `key = text`, one message each. The keys are fixed: the page template asks for them
### (`{{t:key}}`) and so does waiting.js, by name. Another language's file has every key of
### this file and no other. `{ $name }` is filled in by the page's script in the buyer's
### browser (a number, a time, an e-mail address): keep each one a message has, wherever your
### language needs it. `other_lang_name` names the language that the page's language link
### leads to (Korean from the English page, English from every other one), in that language.

## The page

page_title = Waiting room
skip_to_content = Skip to content
nav_label = Page options
other_lang_name = 한국어
sign_out = Sign out
loading = Loading…
noscript = This page needs JavaScript to hold your place in line.
footer = Powered by Dropline

## Sign-in, sign-up, verification

signin_title = Sign in to join the line
signin_intro = You need an account to get a place in line.
email = E-mail
password = Password
name = Name
signin_submit = Sign in
signup_prompt = No account yet?
signup_link = Create one
signin_prompt = Already registered?
signin_link = Sign in
signup_title = Create an account
password_hint = 8 to 128 characters.
signup_submit = Create account
verify_title = Check your e-mail
verify_intro = We sent a six-digit code to { $email }.
verify_intro_plain = We sent you a six-digit code by e-mail.
code = Six-digit code
verify_submit = Verify
resend = Send a new code
code_resent = If the address has an account, a new code is on its way.
session_expired = Your session has ended. Please sign in again.
signed_out = You are signed out.

## The line

waiting_title = You are in line
waiting_body = Keep this page open. You move on by yourself when it is your turn.
scheduled_title = The sale has not opened yet
scheduled_body = Everyone who arrives before the opening is put in a random order when the sale opens, so there is no need to refresh.
paused_title = The line is paused
paused_body = Admission is paused for a moment. You keep your place.
entered_title = You are in the draw
entered_body = Your entry is in. The draw is made when entries close; keep this page open or come back then.
waitlisted_title = You are on the waiting list
waitlisted_body = You were not drawn first. If a winner does not buy in time, the next on the list gets the chance.
opens_in = Opens in
opening_now = Opening…
position_label = Your place in line
people_ahead = { $n } ahead of you
next_in_line = You are next
eta_label = Estimated wait
eta_now = any moment now
eta_under_minute = less than a minute
eta_minutes = about { $n } min
eta_hours = about { $h } h { $m } min
progress_label = Progress
progress_value = { $p }%
updated_at = Updated { $time }
announce_position = You are number { $n } in line. Estimated wait: { $eta }.
pow_title = Getting your place ready
pow_body = Your browser is doing a short calculation that makes grabbing places in bulk costly for scripts. It takes a few seconds; keep this page open.
pow_label = Calculating
pow_progress = { $p }%
pow_failed = Your browser could not finish the calculation. Please try again.
group_label = Your group
code_title = Presale: access code needed
code_body = Until the presale ends, only buyers with an access code can join the line. Enter yours below.
code_label = Access code
code_submit = Join with this code
code_invalid = This code is not valid for this sale. Check it and try again.
code_used = This code has already been used.
leave = Leave the line
try_again = Try again
left_title = You left the line
left_body = Your place was given up. If you join again, you go to the back of the line.
rejoin = Join the line again
sold_out_title = Sold out
sold_out_body = Everything has been sold. Thank you for waiting.
not_won_title = Not drawn this time
not_won_body = The draw is over and your entry was not drawn. Thank you for taking part.
forfeited_title = Your win has lapsed
forfeited_body = The time to buy has passed, so the chance went to the next on the list.
claimed_title = You bought it
claimed_body = Your win is claimed. The confirmation is in your e-mail.
closed_title = The sale has ended
closed_body = This sale is closed. Thank you for your interest.
missing_title = No such sale
missing_body = Check the link you followed.
retry_network = Cannot reach the server. Trying again in { $s } s…
retry_busy = The waiting room is busy. Trying again in { $s } s…
retry_rate_limited = Too many requests. Trying again in { $s } s…
retry_queue_full = The line is full right now. Trying again in { $s } s…

## Purchase

buy_title = It is your turn
admitted_announce = It is your turn. You can order now.
pass_left_label = Time left to order:
quantity = Quantity
card_label = Test card
card_ok = Approved
card_fail = Declined
card_slow = No answer (times out)
card_hint = Payments are simulated: no real card is charged.
stripe_card_label = Card
stripe_hint = Your card details go straight to Stripe, the payment provider; this shop never sees them.
stripe_loading = Loading the secure card form…
stripe_unavailable = The card form could not be loaded. Reload the page to try again.
stripe_card_error = The card could not be used: { $reason }
payment_label = Payment:
payment_processing = processing
payment_requires_action = waiting for your bank's confirmation
payment_approved = approved
payment_declined = declined
payment_declined_reason = declined ({ $reason })
payment_refunded = refunded
payment_authenticate = Confirm the payment in your bank's window.
payment_redirect = Taking you to your bank to confirm the payment…
order_submit = Order and pay
pay_submit = Pay
ordering = Placing your order…
paying = Paying…
order_status_label = Order:
order_amount = { $n } × · { $amount }
order_held = reserved
order_paying = payment in progress
order_paid = paid
order_failed = payment failed
order_expired = reservation expired
order_cancelled = cancelled
hold_left = Reserved for you for { $time }
result_paid = Paid. Your order is confirmed. Thank you!
result_failed = The payment did not go through and the items went back on sale. You may try again while your pass lasts.
result_expired = The reservation expired before payment. You may try again while your pass lasts.
result_cancelled = The order was cancelled.
result_refunded = The order could not be completed, and your payment was refunded in full.
orders_unavailable = Ordering is not available yet. Keep this page open and try again in a moment.
pass_expired = Your time to order has run out.

## Errors: `err_<code>` words an error code of the api (the English page shows the
## server's own message instead)

err_network = Cannot reach the server. Check your connection and try again.
err_generic = Something went wrong. Please try again.
err_fill_in = Please fill in every field.
err_code_format = The code has six digits.
err_bad_request = Please check what you entered.
err_unauthorized = Please sign in again.
err_forbidden = This is not allowed.
err_not_admitted = Your pass is no longer valid. Join the line again.
err_email_not_verified = Your e-mail address is not verified yet.
err_not_found = Not found.
err_invalid_code = The code is wrong or has expired.
err_invalid_credentials = Wrong e-mail or password.
err_idempotency_key_reused = This order attempt was already used. Please try again.
err_sold_out = Sold out.
err_limit_exceeded = You have reached the limit per buyer.
err_sale_not_open = The sale is not open.
err_entries_closed = Entries for this draw are closed.
err_invalid_state = That is not possible right now.
err_email_taken = This e-mail address is already registered.
err_rate_limited = Too many attempts. Please wait a moment.
err_queue_full = The waiting room is full. Please try again shortly.
err_unavailable = Temporarily unavailable. Please try again shortly.
err_internal = Something went wrong on our side.
err_pow_required = This sale asks your browser for a short calculation first. Please try again.
err_pow_invalid = The calculation was not accepted. Please try again.

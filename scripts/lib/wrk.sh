# wrk scripts shared by scripts/bench, bench-ab, profile-join and profile-orders: each sends a
# different request every time, built by scripts/lib/wrk-requests.lua (why: see there).
# Source it after setting repo_root.
#
#   wrk_join_script FILE TOKENS OFFSET   bodyless joins, each line of TOKENS (access tokens) sent
#                                        once, from line OFFSET + 1 on (a second run of a pair
#                                        starts where the first cannot reach), then round again
#   wrk_pow_join_script FILE JOINS OFFSET
#                                        joins with proof of work: each line of JOINS
#                                        ("<access token>\t<JSON body with a solved challenge>",
#                                        as `mint-joins` writes them) sent once, from line
#                                        OFFSET + 1 on, then round again; each request's own part
#                                        is joined when the file is read, so a request costs wrk
#                                        one join of two strings, as a bodyless join does
#   wrk_orders_script FILE BUYERS SALE   POST /api/orders of one unit of SALE, the buyers of
#                                        BUYERS (lines "<access token>\t<pass>") in turn, every
#                                        request a new Idempotency-Key "k<ORDERS_RUN>-<n>"
#                                        (ORDERS_RUN, default 0, tells the runs of one file apart:
#                                        a key seen before would be answered from its stored order)

wrk_join_script() {
    cat >"$1" <<EOF
dofile("${repo_root}/scripts/lib/wrk-requests.lua")
local tokens = {}
for line in io.lines("$2") do tokens[#tokens + 1] = line end
local i = $3
local head, tail
init = function()
    head = request_head("POST") .. "Authorization: Bearer "
    tail = "\r\n" .. request_end()
end
request = function()
    i = i + 1
    if i > #tokens then i = 1 end
    return head .. tokens[i] .. tail
end
EOF
}

wrk_pow_join_script() {
    cat >"$1" <<EOF
dofile("${repo_root}/scripts/lib/wrk-requests.lua")
local joins = {}
for line in io.lines("$2") do
    local token, body = line:match("([^\t]+)\t(.+)")
    joins[#joins + 1] = token .. "\r\n" .. request_end(body)
end
local i = $3
local head
init = function()
    head = request_head("POST", { ["Content-Type"] = "application/json" }) .. "Authorization: Bearer "
end
request = function()
    i = i + 1
    if i > #joins then i = 1 end
    return head .. joins[i]
end
EOF
}

wrk_orders_script() {
    cat >"$1" <<EOF
dofile("${repo_root}/scripts/lib/wrk-requests.lua")
-- Each buyer's two headers, joined once.
local buyers = {}
for line in io.lines("$2") do
    local token, pass = line:match("([^\t]+)\t([^\t]+)")
    buyers[#buyers + 1] = "Authorization: Bearer " .. token .. "\r\nDropline-Pass: " .. pass .. "\r\n"
end
local i = 0
local head, key, tail
init = function()
    head = request_head("POST", { ["Content-Type"] = "application/json" })
    key = "Idempotency-Key: k" .. (os.getenv("ORDERS_RUN") or "0") .. "-"
    tail = "\r\n" .. request_end('{"sale_id":"$3","quantity":1}')
end
request = function()
    i = i + 1
    return head .. buyers[(i % #buyers) + 1] .. key .. i .. tail
end
EOF
}

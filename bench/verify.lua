-- wrk script for the sandbox throughput benchmark: POST /otp/verify for an
-- otp created before the run (OTP_ID / OTP_CODE from the environment,
-- set by bench/sandbox_wrk.sh).
local id = os.getenv("OTP_ID") or "otp_missing"
local code = os.getenv("OTP_CODE") or "000000"

wrk.method = "POST"
wrk.body = '{"otp_id":"' .. id .. '","otp":"' .. code .. '"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Token contiguity_sk_bench_token"

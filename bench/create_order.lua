-- wrk script: POST /v1/orders, one unit of a random SKU among BENCH-0..BENCH-(N-1), a random
-- customer, no idempotency key (every request is a new order).
local skus = tonumber(os.getenv("ORDO_BENCH_SKUS") or "100")
local template = '{"customer_id":"bench-%d","currency":"USD","items":[{"sku":"BENCH-%d","quantity":1}],'
  .. '"shipping_address":{"name":"Bench Customer","line1":"1 Bench Road","city":"Bangkok",'
  .. '"postal_code":"10110","country":"TH"},"contact":{"email":"bench@example.com"}}'
local headers = { ["Content-Type"] = "application/json" }

request = function()
  local body = string.format(template, math.random(1000), math.random(skus) - 1)
  return wrk.format("POST", "/v1/orders", headers, body)
end

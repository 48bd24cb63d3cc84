-- wrk script for the intake figures of `python -m bench`: every request is a distinct DLU
-- (another person: local id and INS matricule with its key) with its own Idempotency-Key.
-- The bench writes the environment: BENCH_TEMPLATE (a file holding the JSON request body with
-- the placeholders __LOCAL_ID__ and __MATRICULE__), BENCH_API_KEY, BENCH_RUN (a prefix making
-- keys unique across runs).
local template_path = os.getenv("BENCH_TEMPLATE")
local api_key = os.getenv("BENCH_API_KEY")
local run = os.getenv("BENCH_RUN") or "run"
local f = assert(io.open(template_path, "r"))
local template = f:read("*a")
f:close()

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("thread_id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

function init(args)
   counter = 0
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. api_key
end

-- NIR: "2380375" (sex, year, month, department 75) + 6 digits (commune + order) + 2-digit key
local function matricule(n)
   local first13 = string.format("2380375%06d", n % 1000000)
   local key = 97 - math.fmod(tonumber(first13), 97)
   return first13 .. string.format("%02d", key)
end

function request()
   counter = counter + 1
   local n = thread_id * 100000 + counter
   local local_id = string.format("B%s-%d-%d", run, thread_id, counter)
   local body = template:gsub("__LOCAL_ID__", local_id):gsub("__MATRICULE__", matricule(n))
   wrk.headers["Idempotency-Key"] = local_id
   return wrk.format(nil, "/v1/submissions", nil, body)
end

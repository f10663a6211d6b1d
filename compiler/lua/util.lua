-- util: error collection, schema checking of YAML nodes, affine index expressions,
-- and a small code buffer. Shared by the driver and every layer module.
local M = {}

---------------------------------------------------------------------------
-- Errors. A user error is a table {node=, msg=}; the driver collects them and
-- reports "file:line:col: msg" with the source line and a caret.
---------------------------------------------------------------------------
local Errors = {}
Errors.__index = Errors

function M.errors(max)
  return setmetatable({list = {}, max = max or 20}, Errors)
end

-- Every error is kept (up to a safety cap); the reporter sorts them by position
-- and prints the first `max`.
function Errors:add(node, msg)
  if #self.list < 10000 then
    self.list[#self.list + 1] = {line = node and node.line or 1, col = node and node.col or 1, msg = msg}
  end
end

function Errors:count() return #self.list end

-- A raised user error (aborts the current layer only).
function M.fail(node, msg)
  error({user = true, node = node, msg = msg}, 0)
end

---------------------------------------------------------------------------
-- Node helpers. Nodes come from the C host: {t="map"|"seq"|"str", line, col, v, plain}
---------------------------------------------------------------------------
-- A short, printable rendering of a node for messages: 3, "abc", [1, 2, 3], null,
-- a mapping with 2 keys.
local function describe(node, depth)
  depth = depth or 0
  if node == nil then return "nothing" end
  if node.t == "map" then
    if depth > 0 then return "{...}" end
    return #node.v == 1 and "a mapping with 1 key" or string.format("a mapping with %d keys", #node.v)
  end
  if node.t == "seq" then
    if depth > 0 then return "[...]" end
    local parts = {}
    for i, item in ipairs(node.v) do
      if i > 6 then parts[#parts + 1] = "..."; break end
      parts[#parts + 1] = describe(item, depth + 1)
    end
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  if node.plain and (node.v == "" or node.v == "~" or node.v == "null") then return "null" end
  local v = node.v
  if #v > 40 then v = v:sub(1, 37) .. "..." end
  v = v:gsub("[%c\128-\255]", "?")
  return node.plain and v or ('"' .. v:gsub('"', '\\"') .. '"')
end
M.describe = describe

function M.is_null(node)
  return node.t == "str" and node.plain and (node.v == "" or node.v == "~" or node.v == "null" or node.v == "Null" or node.v == "NULL")
end

-- Strict integer: decimal digits with optional sign, nothing else.
function M.to_int(node)
  if node.t ~= "str" or not node.plain then return nil end
  local s = node.v
  if not s:match("^[-+]?%d+$") then return nil end
  if #s:gsub("^[-+]?0*", "") > 15 then return nil, "too_large" end
  return math.tointeger(tonumber(s))
end

M.INT_MAX = 1 << 28 -- no count, size or extent in a spec is larger

function M.to_number(node)
  if node.t ~= "str" or not node.plain then return nil end
  local s = node.v
  if not (s:match("^[-+]?%d+%.?%d*[eE][-+]?%d+$") or s:match("^[-+]?%d*%.?%d+$")
          or s:match("^[-+]?%d+%.$") or s:match("^[-+]?%d*%.?%d+[eE][-+]?%d+$")) then
    return nil
  end
  local x = tonumber(s)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return nil end
  if math.abs(x) > 3.4028234663852886e38 then return nil, "is outside the float32 range" end
  if x ~= 0 and string.unpack("<f", string.pack("<f", x)) == 0 then
    return nil, "underflows to 0 in float32"
  end
  return x + 0.0
end

function M.to_bool(node)
  if node.t ~= "str" or not node.plain then return nil end
  local v = node.v
  if v == "true" or v == "True" or v == "TRUE" then return true end
  if v == "false" or v == "False" or v == "FALSE" then return false end
  return nil
end

-- Map node -> ordered key list and lookup, reporting duplicate and non-string keys.
function M.map_entries(node, what, errs)
  local by, order = {}, {}
  for _, kv in ipairs(node.v) do
    local k = kv.k
    if k.t ~= "str" then
      errs:add(k, string.format("%s: keys must be plain names, got %s", what or "spec", describe(k)))
    elseif by[k.v] then
      errs:add(k, string.format("%s: duplicate key (first at line %d)", what and (what .. "." .. k.v) or k.v,
        by[k.v].key.line))
    else
      by[k.v] = {key = k, val = kv.v}
      order[#order + 1] = k.v
    end
  end
  return by, order
end

---------------------------------------------------------------------------
-- Schema checking. A schema is a list of {key, type, default=, required=,
-- check=function(value, node) -> errmsg|nil}. Types:
--   posint, nonneg, int2 (positive int or [a, b]), nonneg2, padding (nonneg2 or
--   valid/same/full), bool, number, number_or_null, string, enum (with values=)
---------------------------------------------------------------------------
local function bounded(v, err)
  if err == "too_large" or (v and v > M.INT_MAX) then
    return nil, string.format("is too large (at most %s)", M.commas(M.INT_MAX))
  end
  return v
end
local function pair_of(node, conv, allow_zero)
  local function one(n)
    local v = bounded(conv(n))
    if v == nil or v < (allow_zero and 0 or 1) then return nil end
    return v
  end
  if node.t == "seq" then
    if #node.v ~= 2 then return nil end
    local a, b = one(node.v[1]), one(node.v[2])
    if a and b then return {a, b} end
    return nil
  end
  local v = one(node)
  if v then return {v, v} end
  return nil
end

local types = {}
types.posint = {expect = "a positive integer", conv = function(n)
  local v, err = bounded(M.to_int(n))
  if err then return nil, err end
  return v and v >= 1 and v or nil
end}
types.nonneg = {expect = "a non-negative integer", conv = function(n)
  local v, err = bounded(M.to_int(n))
  if err then return nil, err end
  return v and v >= 0 and v or nil
end}
types.int2 = {expect = "a positive integer or [h, w]", conv = function(n) return pair_of(n, M.to_int, false) end}
types.nonneg2 = {expect = "a non-negative integer or [h, w]", conv = function(n) return pair_of(n, M.to_int, true) end}
types.padding = {expect = "a non-negative integer, [h, w], valid, same or full", conv = function(n)
  if n.t == "str" and n.plain and (n.v == "valid" or n.v == "same" or n.v == "full") then return n.v end
  return pair_of(n, M.to_int, true)
end}
types.bool = {expect = "true or false", conv = M.to_bool}
types.number = {expect = "a number", conv = M.to_number}
types.number_or_null = {expect = "a number or null", conv = function(n)
  if M.is_null(n) then return "null" end
  return M.to_number(n)
end}
types.name = {expect = "a C identifier of lowercase letters, digits and _ ([a-z_][a-z0-9_]*)", conv = function(n)
  if n.t ~= "str" or not n.v:match("^[a-z_][a-z0-9_]*$") then return nil end
  if #n.v > 48 then return nil, string.format("is %d characters long (at most 48)", #n.v) end
  if n.v:sub(1, 1) == "_" then return nil, "starts with _ (C reserves such identifiers)" end
  if n.v == "cg" or n.v:sub(1, 3) == "cg_" then return nil, "is reserved (cg and cg_* belong to the cnngen runtime)" end
  for _, h in ipairs({"cnngen", "data", "diverge", "npy", "sgd", "train", "util", "weights"}) do
    if n.v == h then -- NAME.h beside the runtime's headers: one would hide the other
      return nil, string.format("is reserved (%s.h is a header of the cnngen runtime)", h)
    end
  end
  return n.v
end}
M.types = types

-- Check map node `node` (or nil for "no options") against schema; returns a table
-- of values with defaults filled in. `what` prefixes messages ("conv2d").
function M.check_schema(node, schema, what, errs)
  local out, ok = {}, true
  local function label(key) return what and (what .. "." .. key) or key end
  local by = {}
  if node ~= nil then
    if node.t ~= "map" then
      if not M.is_null(node) then
        errs:add(node, string.format("%s: expected a mapping of options, got %s", what or "spec", describe(node)))
        return nil
      end
    else
      local order
      local nerr = errs:count()
      by, order = M.map_entries(node, what, errs)
      if errs:count() > nerr then ok = false end
      local known = {}
      for _, f in ipairs(schema) do known[f.key] = true end
      for _, k in ipairs(order) do
        if not known[k] then
          local names = {}
          for _, f in ipairs(schema) do names[#names + 1] = f.key end
          local hint = #names == 0 and string.format("%s takes no options", what)
            or ("expected one of: " .. table.concat(names, ", "))
          errs:add(by[k].key, string.format("%s: unknown key '%s' (%s)", what or "spec", k, hint))
          ok = false
        end
      end
    end
  end
  for _, f in ipairs(schema) do
    local e = by[f.key]
    if e == nil then
      if f.required then
        errs:add(node, string.format("%s: required (%s)", label(f.key), f.expect or (types[f.type] and types[f.type].expect) or "a value"))
        ok = false
      else
        out[f.key] = f.default
      end
    else
      local ty = types[f.type]
      local v, why
      if f.type == "enum" then
        if e.val.t == "str" then
          for _, c in ipairs(f.values) do if c == e.val.v then v = c end end
        end
      else
        v, why = ty.conv(e.val)
      end
      local expect = f.expect or (ty and ty.expect) or ("one of " .. table.concat(f.values or {}, ", "))
      if v == nil then
        if why then
          errs:add(e.val, string.format("%s: %s %s", label(f.key), describe(e.val), why))
        else
          errs:add(e.val, string.format("%s: expected %s, got %s", label(f.key), expect, describe(e.val)))
        end
        ok = false
      else
        local msg = f.check and f.check(v, e.val)
        if not msg and f.check and math.type(v) == "float" then
          -- the generated code holds it as a float: the rounded value must pass as well
          local r = string.unpack("<f", string.pack("<f", v))
          msg = f.check(r, e.val)
          if msg then msg = string.format("%s (it rounds to %.9g in float32)", msg, r) end
        end
        if msg then
          errs:add(e.val, string.format("%s: %s, got %s", label(f.key), msg, describe(e.val)))
          ok = false
        else
          out[f.key] = v
          out["@" .. f.key] = e.val -- keep the node for later messages
        end
      end
    end
  end
  return ok and out or nil
end

---------------------------------------------------------------------------
-- Affine index expressions: {c = const, vars...}; fmt folds constants.
---------------------------------------------------------------------------
local Aff = {}
Aff.__index = Aff
function M.aff(c, terms)
  local a = setmetatable({c = c or 0, t = {}}, Aff)
  for k, v in pairs(terms or {}) do a.t[k] = v end
  return a
end
function Aff:add(other)
  local r = M.aff(self.c, self.t)
  if type(other) == "number" then r.c = r.c + other; return r end
  r.c = r.c + other.c
  for k, v in pairs(other.t) do r.t[k] = (r.t[k] or 0) + v end
  return r
end
-- add coef * var, where var is a name (loop variable) or a number (unrolled value)
function Aff:term(var, coef)
  local r = M.aff(self.c, self.t)
  if coef == 0 then return r end
  if type(var) == "number" then r.c = r.c + var * coef
  else r.t[var] = (r.t[var] or 0) + coef end
  return r
end
function Aff:scale(k)
  local r = M.aff(self.c * k)
  for name, v in pairs(self.t) do r.t[name] = v * k end
  return r
end
function Aff:is_const() return next(self.t) == nil end
function Aff:__tostring()
  local names = {}
  for k, v in pairs(self.t) do if v ~= 0 then names[#names + 1] = k end end
  -- largest stride first: "oy*14 + ox", "col*150 + ci*25"
  table.sort(names, function(a, b)
    local ca, cb = math.abs(self.t[a]), math.abs(self.t[b])
    if ca ~= cb then return ca > cb end
    return a < b
  end)
  local parts = {}
  for _, k in ipairs(names) do
    local v = self.t[k]
    local s = (v == 1) and k or (v == -1 and "-" .. k) or string.format("%s*%d", k, v)
    parts[#parts + 1] = s
  end
  local s = table.concat(parts, " + "):gsub("%+ %-", "- ")
  if self.c ~= 0 or s == "" then
    if s == "" then s = tostring(self.c)
    elseif self.c > 0 then s = s .. " + " .. self.c
    else s = s .. " - " .. (-self.c) end
  end
  return s
end

---------------------------------------------------------------------------
-- Code buffer with indentation.
---------------------------------------------------------------------------
local Code = {}
Code.__index = Code
-- max: stop with error(M.TOO_LONG) past that many lines (for measuring candidates)
M.TOO_LONG = {}
function M.code(max) return setmetatable({lines = {}, ind = 0, max = max}, Code) end
function Code:line(fmt, ...)
  if self.max and #self.lines >= self.max then error(M.TOO_LONG, 0) end
  local s = select("#", ...) > 0 and string.format(fmt, ...) or fmt
  local pad = string.rep("    ", self.ind)
  self.lines[#self.lines + 1] = (s == "" and "" or pad .. s:gsub("\n", "\n" .. pad))
end
function Code:open(fmt, ...) self:line(fmt, ...); self.ind = self.ind + 1 end
function Code:close(s) self.ind = self.ind - 1; self:line(s or "}") end
function Code:text() return table.concat(self.lines, "\n") .. "\n" end

-- Emit a loop (or, when `unroll` or lo == hi, a constant) and call body(v) with the
-- loop variable name or the constant value.
function M.loop(C, var, lo, hi, unroll, body)
  if hi < lo then return end
  if unroll or lo == hi then
    for v = lo, hi do body(v) end
  else
    C:open("for (int %s = %d; %s < %d; %s++) {", var, lo, var, hi + 1, var)
    body(var)
    C:close()
  end
end

-- The largest divisor of n that is at most cap (tile sizes that divide an extent).
-- A register tile's multiply-adds, one line per row p: a<p>_<v> += <x(p)> * <w><v> for
-- v = 0 .. nv - 1 (x(p) the row's scalar operand, w the loaded vectors' name)
function M.fma_rows(C, np, nv, x, w)
  for p = 0, np - 1 do
    local f = {}
    for v = 0, nv - 1 do f[#f + 1] = string.format("a%d_%d += %s * %s%d;", p, v, x(p), w, v) end
    C:line(table.concat(f, " "))
  end
end

function M.largest_divisor(n, cap)
  for d = math.min(n, cap), 1, -1 do if n % d == 0 then return d end end
  return 1
end

-- Mark the next loop parallel when the layer has enough work to share.
function M.par(C, L)
  if L.parallel then C:line("CG_PARALLEL_FOR") end
end

-- Whole blocks of step, then the last partial one: for (var = 0; var < full; var += step)
-- body(var, step), then { body(full, n - full) }, every size a generation-time constant.
-- par: the layer, when the loop of two or more whole blocks is the threads' (M.par)
function M.blocks(C, var, n, step, par, body)
  local full = n - n % step
  if full > 0 then
    if par and full > step then M.par(C, par) end
    C:open("for (int %s = 0; %s < %d; %s += %d) {", var, var, full, var, step)
    body(var, step)
    C:close()
  end
  if n > full then
    C:open("{")
    body(tostring(full), n - full)
    C:close()
  end
end

-- A loop that OpenMP may split across threads (CG_PARALLEL_FOR is empty without
-- -fopenmp). Only loops whose iterations write disjoint memory are marked.
function M.ploop(C, var, lo, hi, parallel, body)
  if hi > lo and parallel then C:line("CG_PARALLEL_FOR") end
  M.loop(C, var, lo, hi, false, body)
end

-- C float literal that round-trips a float32-representable value.
function M.flt(x)
  local s
  for digits = 6, 9 do -- the shortest form that reads back as the same float32
    s = string.format("%." .. digits .. "g", x)
    if string.unpack("<f", string.pack("<f", tonumber(s))) == string.unpack("<f", string.pack("<f", x)) then break end
  end
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s .. "f"
end

-- s with control characters (C0, DEL, C1) written as \xNN: text from a spec or a path
-- printed on a terminal must not carry escape sequences
function M.printable(s)
  s = tostring(s):gsub("[%c\127]", function(c) return string.format("\\x%02x", c:byte()) end)
  return (s:gsub("\194([\128-\159])", function(c) return string.format("\\xc2\\x%02x", c:byte()) end))
end

-- a * b for non-negative integers, saturating at math.maxinteger (no wrap-around: a
-- shape product that overflows stays larger than every limit it is compared with)
function M.mul(a, b)
  if a ~= 0 and b > math.maxinteger // a then return math.maxinteger end
  return a * b
end

function M.commas(n)
  if n == math.maxinteger then return "9,223,372,036,854,775,807 or more" end
  local s = tostring(math.tointeger(n) or n)
  local r = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (r:gsub("^,", ""))
end

-- FNV-1a 64-bit, as 16 hex digits.
function M.fnv1a(s)
  local h = -3750763034362895579 -- 0xcbf29ce484222325
  for i = 1, #s do
    h = h ~ s:byte(i)
    h = h * 1099511628211
  end
  return string.format("%016x", h)
end

return M

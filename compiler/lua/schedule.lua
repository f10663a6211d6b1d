-- Schedules: how a layer's passes are computed, apart from what they compute.
--
-- A layer module's shape rule and emitters say *what* a layer computes; its
-- `candidates(L, T)` returns the legal *hows*, each a plain record:
--
--   {name = "cv+dx:wv",                 -- the key wisdom files use
--    layout = "nchw" | "lanes",         -- activations at the layer's edges
--    fwd = {form = "cv", tile = {TV = 1, TP = 12}},
--    dw  = {form = "cv", tile = {...}}, -- parameter gradients (and dx when not apart)
--    dx  = {form = "wv", tile = {...}, apart = true},  -- apart: a pass of its own
--    parallel = true,                   -- threads share the layer's loops
--    act = "relu",                      -- an activation fused into the forward's
--                                       -- stores (fuse.lua; set after the choice)
--    dmask = "relu"}                    -- its derivative in the dx stores (fuse.lua)
--
-- the module's heuristic choice first. `choose` picks one per layer, from the wisdom
-- (timings recorded on this machine by `cnngen --tune`) when it has the layer's
-- signature, else the first; the planner, the emitters, the generated comments, the
-- descriptor and `--summary` all read the record it returns, and nothing re-derives it.
local M = {}

-- What the generated code runs on: floats per vector of the generated code (one
-- register: 16 for AVX-512, 8 for AVX2) and the accumulators a register tile may
-- hold: AVX-512 has 32 vector registers (24 accumulators leave room for the loaded
-- vectors and broadcasts), AVX2 16 (12 accumulators).
M.TARGETS = {
  avx512 = {isa = "avx512", vec = 16, acc = 24},
  avx2 = {isa = "avx2", vec = 8, acc = 12},
  generic = {isa = "generic", vec = 8, acc = 6},
}

-- the target of this machine, from the CPU flags the kernel reports
function M.native()
  local f = io.open("/proc/cpuinfo", "r")
  local flags = ""
  if f then
    for line in f:lines() do
      if line:match("^flags") then flags = line; break end
    end
    f:close()
  end
  if flags:match("%savx512f%s") or flags:match("%savx512f$") then return "avx512" end
  if flags:match("%savx2%s") or flags:match("%savx2$") then return "avx2" end
  return "generic"
end

function M.cpu_model()
  local f = io.open("/proc/cpuinfo", "r")
  if not f then return "unknown" end
  local model = "unknown"
  for line in f:lines() do
    local m = line:match("^model name%s*:%s*(.-)%s*$")
    if m then model = m; break end
  end
  f:close()
  return model
end

function M.target(name)
  if name == nil or name == "native" then name = M.native() end
  return M.TARGETS[name]
end

local function dims(s)
  local t = {}
  for i, v in ipairs(s) do t[i] = tostring(v) end
  return table.concat(t, "x")
end

-- A layer's signature: everything its schedules depend on (shapes, geometry, batch).
function M.signature(L)
  local parts = {L.kind, "in" .. dims(L.in_shape), "out" .. dims(L.out_shape), "b" .. L.batch}
  local g = L.geom
  if g then
    parts[#parts + 1] = string.format("k%dx%d", g.h.K, g.w.K)
    parts[#parts + 1] = string.format("s%dx%d", g.h.S, g.w.S)
    parts[#parts + 1] = string.format("d%dx%d", g.h.D, g.w.D)
    parts[#parts + 1] = string.format("p%d,%dx%d,%d", g.h.lo, g.h.hi, g.w.lo, g.w.hi)
  end
  if L.groups and L.groups > 1 then parts[#parts + 1] = "g" .. L.groups end
  return table.concat(parts, ":")
end

local function tile_str(t, pad)
  if pad then return (pad == "w" and "+padw" or "+pad") .. tile_str(t) end
  if not t or next(t) == nil then return "" end
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local p = {}
  for _, k in ipairs(keys) do p[#p + 1] = k .. "=" .. tostring(t[k]) end
  return "[" .. table.concat(p, ",") .. "]"
end

-- one line: "cv+dx:wv: fwd cv[TP=12,TV=1] dw cv[TPR=24,TV=1] dx wv[TC=6,TX=1] 2 threads"
function M.describe(S)
  local p = {S.name .. ":"}
  p[#p + 1] = "fwd " .. S.fwd.form .. tile_str(S.fwd.tile, S.fwd.pad) .. (S.act and ("+" .. S.act) or "")
    .. (S.fwd_add and ("+" .. S.fwd_add) or "")
  -- the derivative of a relu fused into the dx stores (fuse.lua)
  local dm = S.dmask and ("+" .. S.dmask .. "'") or ""
  if S.dw then p[#p + 1] = "dw " .. S.dw.form .. tile_str(S.dw.tile, S.dw.pad) .. ((S.dx and S.dx.apart) and "" or dm) end
  if S.dx then
    if S.dx.apart then p[#p + 1] = "dx " .. S.dx.form .. tile_str(S.dx.tile, S.dx.pad) .. dm else p[#p + 1] = "dx with dw" end
  end
  if S.parallel then p[#p + 1] = "threaded" end
  return table.concat(p, " ")
end

-- Wisdom: one line a choice, "isa<TAB>signature<TAB>candidate name<TAB>comment".
-- The CPU model goes in a comment line at the top; lines of another ISA are ignored.
function M.read_wisdom(path)
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local w = {}
  local n = 0
  for line in f:lines() do
    n = n + 1
    if not (line:match("^%s*$") or line:match("^#")) then
      local isa, sig, name = line:match("^([%w_]+)\t([^\t]+)\t([^\t]+)")
      if not isa then
        f:close()
        return nil, string.format("%s:%d: expected 'isa<TAB>signature<TAB>schedule', got %q", path, n, line:sub(1, 60))
      end
      w[isa .. "\t" .. sig] = name
    end
  end
  f:close()
  return w
end

-- The schedule of one layer: the wisdom's choice for its signature when it names a
-- legal candidate, else the module's heuristic choice (its first candidate).
-- Register budgets the tuner tries besides the target's own: a candidate whose tiles
-- differ under another budget is offered as "NAME@ACC" (unless it says variants = false).
M.ACC_VARIANTS = {6, 12, 24}

local function candidates(L, T)
  local cands = L.mod.candidates(L, T)
  local seen = {}
  for _, c in ipairs(cands) do seen[M.describe(c)] = true end
  for _, a in ipairs(M.ACC_VARIANTS) do
    if a ~= T.acc then
      for _, c in ipairs(L.mod.candidates(L, {isa = T.isa, vec = T.vec, acc = a})) do
        local key = M.describe(c)
        if not seen[key] and c.variants ~= false then
          seen[key] = true
          c.name = c.name .. "@" .. a
          cands[#cands + 1] = c
        end
      end
    end
  end
  return cands
end

-- A wisdom line may also compose a layer's passes from three candidates, "F|W|X":
-- the forward of F, the parameter gradients of W, dx of X (the tuner times every
-- candidate's passes apart and keeps the fastest of each). Legal when the three share
-- the layout, W and X compute dx in a pass of its own (else W = X), and the module
-- accepts the mix (its compose_ok; kinds without one take no mixes).
local function compose(L, cands, want)
  local f, w, x = want:match("^([^|]+)|([^|]+)|([^|]+)$")
  if not f or not L.mod.compose_ok then return nil end
  local by = {}
  for _, c in ipairs(cands) do by[c.name] = c end
  local F, W, X = by[f], by[w], by[x]
  if not (F and W and X) or F.layout ~= W.layout or F.layout ~= X.layout then return nil end
  if W ~= X and not (W.dx and W.dx.apart and X.dx and X.dx.apart) then return nil end
  local S = {name = want, layout = F.layout, fwd = F.fwd, dw = W.dw, dx = X.dx, parallel = L.parallel}
  if not L.mod.compose_ok(L, S) then return nil end
  return S
end

-- Without wisdom: the first candidate whose code fits the budget (lines(S) counts
-- them by emitting it), else the smallest.
function M.choose(L, T, wisdom, budget, lines)
  local cands = candidates(L, T)
  for _, c in ipairs(cands) do c.parallel = L.parallel end
  if wisdom then
    local want = wisdom[T.isa .. "\t" .. M.signature(L)]
    for _, c in ipairs(cands) do
      if c.name == want then c.from_wisdom = true; return c, cands end
    end
    local mix = want and compose(L, cands, want)
    if mix then mix.from_wisdom = true; return mix, cands end
  end
  if #cands == 1 then return cands[1], cands end
  local best, bestn
  for _, c in ipairs(cands) do
    if c.name:find("@", 1, true) then break end -- other register budgets: the tuner's to try
    local n = lines(c)
    if n <= budget then return c, cands end
    if not bestn or n < bestn then best, bestn = c, n end
  end
  best.over_budget = bestn
  return best, cands
end

-- A single-form record for kinds whose every pass has one form.
function M.simple(L, form, tile)
  return {name = form, layout = L.lanes_layout and "lanes" or "nchw", fwd = {form = form, tile = tile or {}},
    dw = {form = form, tile = tile or {}}, dx = {form = form, apart = false}}
end

return M

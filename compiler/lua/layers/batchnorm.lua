-- batchnorm: PyTorch's BatchNorm1d (input [F] or [C, L]) or BatchNorm2d ([C, H, W]).
-- Training: batch mean and biased variance normalise; running_mean/var are updated
-- as exponential moving averages with the unbiased variance (cumulative average
-- when momentum is null); num_batches_tracked counts steps. Inference: running stats.
-- Saved for backward (scratch S): mean[C], rstd[C].
local util = require("util")
local sched = require("schedule")
local fuse = require("fuse")
local M = {kinds = {"batchnorm"}}

function M.schema(kind)
  return {
    {key = "eps", type = "number", default = 1e-5, check = function(v) return v <= 0 and "must be positive" or nil end},
    {key = "momentum", type = "number_or_null", default = 0.1,
     check = function(v) return v ~= "null" and (v < 0 or v > 1) and "must be in [0, 1] or null" or nil end},
  }
end

function M.shape(L)
  local s = L.in_shape
  L.channels = s[1]
  L.spatial = 1
  for i = 2, #s do L.spatial = L.spatial * s[i] end
  L.out_shape = s
  L.torch = (#s == 3) and "BatchNorm2d" or "BatchNorm1d"
end

function M.tensors(L)
  local c = L.channels
  return {
    {suffix = "weight", shape = {c}, init = "one"},
    {suffix = "bias", shape = {c}, init = "zero"},
    {suffix = "running_mean", shape = {c}, kind = "buffer", init = "zero"},
    {suffix = "running_var", shape = {c}, kind = "buffer", init = "one"},
    {suffix = "num_batches_tracked", shape = {}, kind = "counter", init = "zero"},
  }
end

function M.macs(L) return 0 end
function M.scratch(L) return 2 * L.channels end

-- the forward's stores go through fuse.s (fuse.lua)
function M.fuses_act(L) return true end
-- and may add an add's other input r, the add's activation after it (fuse.plan_add)
function M.fuses_add(L) return true end

-- the stored value of normalized expression e: through the fused activation, or e +
-- the add's other input (element expression r) through the add's
local function store_expr(L, e, r)
  if L.fwd_add then return fuse.s(L.fwd_add, string.format("%s + %s", e, r)) end
  return fuse.s(L, e)
end
-- the forward's arguments (the caller orders them: cnngen.lua's ARG_ORDER)
local function fwd_args(L)
  local a = {"P", "B", "S", "x", "y", "nb", "training"}
  if L.fwd_add then a[#a + 1] = "r" end
  return a
end

function M.candidates(L, T) return {sched.simple(L, L.lanes_layout and "lanes" or "loop")} end

-- loop over the batch and the spatial positions of channel c, element xc[i]
local function over_channel(C, L, body)
  C:open("for (int n = 0; n < nb; n++) {")
  body(string.format("(size_t)n * %d + c * %d", L.in_size, L.spatial))
  C:close()
end

local function spatial(C, L, stmt)
  if L.spatial == 1 then
    local one = stmt:gsub("%[i%]", "[0]")
    C:line("%s", one)
  else
    C:line("for (int i = 0; i < %d; i++) %s", L.spatial, stmt)
  end
end

function M.forward(L, C, ctx)
  local c = L.channels
  C:line("const float *restrict gamma = %s, *restrict beta = %s;", L.t.weight, L.t.bias)
  C:line("float *restrict rmean = %s, *restrict rvar = %s, *restrict nbt = %s;",
    L.t.running_mean, L.t.running_var, L.t.num_batches_tracked)
  C:line("const int m = nb * %d; /* values per channel */", L.spatial)
  C:open("if (training) {")
  C:line("nbt[0] += 1.0f;")
  if L.opt.momentum == "null" then
    C:line("const float f = 1.0f / nbt[0]; /* momentum null: cumulative average */")
  else
    C:line("const float f = %s;", util.flt(L.opt.momentum))
  end
  C:open("for (int c = 0; c < %d; c++) {", c)
  C:line("double s = 0.0, v = 0.0;")
  over_channel(C, L, function(base)
    C:line("const float *restrict xc = x + %s;", base)
    spatial(C, L, "s += xc[i];")
  end)
  C:line("const double mean = s / m;")
  over_channel(C, L, function(base)
    C:line("const float *restrict xc = x + %s;", base)
    spatial(C, L, "{ const double d = xc[i] - mean; v += d * d; }")
  end)
  C:line("const double var = v / m;")
  C:line("S[c] = (float)mean;")
  C:line("S[%d + c] = (float)(1.0 / sqrt(var + %s));", c, string.format("%.17g", L.opt.eps))
  C:line("rmean[c] = (1.0f - f) * rmean[c] + f * (float)mean;")
  C:line("rvar[c] = (1.0f - f) * rvar[c] + f * (float)(m > 1 ? var * m / (m - 1) : var);")
  C:close()
  C:close()
  C:open("else {")
  C:open("for (int c = 0; c < %d; c++) {", c)
  C:line("S[c] = rmean[c];")
  C:line("S[%d + c] = 1.0f / sqrtf(rvar[c] + %s);", c, util.flt(L.opt.eps))
  C:close()
  C:close()
  C:open("for (int c = 0; c < %d; c++) {", c)
  C:line("const float mean = S[c], a = S[%d + c] * gamma[c], b = beta[c];", c)
  over_channel(C, L, function(base)
    C:line("const float *restrict xc = x + %s;", base)
    C:line("float *restrict yc = y + %s;", base)
    if L.fwd_add then C:line("const float *restrict rc = r + %s;", base) end
    spatial(C, L, "yc[i] = " .. store_expr(L, "(xc[i] - mean) * a + b", "rc[i]") .. ";")
  end)
  C:close()
  return fwd_args(L)
end

function M.backward(L, C, ctx)
  local c = L.channels
  C:line("const float *restrict gamma = %s;", L.t.weight)
  C:line("float *restrict ggamma = %s, *restrict gbeta = %s;", L.t_grad.weight, L.t_grad.bias)
  C:line("const int m = nb * %d;", L.spatial)
  C:open("for (int c = 0; c < %d; c++) {", c)
  C:line("const float mean = S[c], rstd = S[%d + c];", c)
  C:line("double sdy = 0.0, sdyx = 0.0;")
  over_channel(C, L, function(base)
    C:line("const float *restrict xc = x + %s;", base)
    C:line("const float *restrict dyc = dy + %s;", base)
    spatial(C, L, "{ sdy += dyc[i]; sdyx += dyc[i] * ((xc[i] - mean) * rstd); }")
  end)
  C:line("ggamma[c] += (float)sdyx;")
  C:line("gbeta[c] += (float)sdy;")
  C:line("const double k = (double)gamma[c] * rstd / m;")
  over_channel(C, L, function(base)
    C:line("const float *restrict xc = x + %s;", base)
    C:line("const float *restrict dyc = dy + %s;", base)
    C:line("float *restrict dxc = dx + %s;", base)
    spatial(C, L, "dxc[i] = (float)(k * ((double)m * dyc[i] - sdy - ((double)xc[i] - mean) * rstd * sdyx));")
  end)
  C:close()
  return {"P", "G", "S", "x", "dy", "dx", "nb"}
end


-- Batch-innermost: channel c is [spatial][R]; statistics over the nb real lanes only
-- (a 0/1 lane mask), and dx is zero on the padded lanes so they never reach a parameter
-- gradient. Sums run in vector registers per lane and are combined in double.
-- The mask is floats read with VLOAD, not an array of cg_v: the threads' loops read it
-- from this frame, and clang 14's outlined OpenMP bodies load a captured cg_v array
-- with aligned moves although cg_v is declared aligned(4) (SIGSEGV at batch 64).
local function mask_decl(C, NV, V)
  C:line("float mask[%d];", NV * V)
  C:line("for (int l = 0; l < %d; l++) mask[l] = l < nb ? 1.0f : 0.0f;", NV * V)
end

-- for (s) for (v): body with `xv` style loads named by the caller
local function over_channel_vec(C, L, R, V, NV, body)
  C:open("for (int s = 0; s < %d; s++) {", L.spatial)
  C:open("for (int v = 0; v < %d; v++) {", NV)
  body(string.format("s * %d + v * %d", R, V))
  C:close()
  C:close()
end

-- Per channel c, the two moments of x about a shift k: one pass, about a value of the
-- channel (lane 0 holds a sample), so the sums stay of the order of the spread and
-- var = E[d^2] - E[d]^2 loses nothing to cancellation when the mean is far from zero.
-- Declares xc, k, s1 = sum(x - k) and s2 = sum((x - k)^2) over the valid lanes.
local function channel_moments(C, L, R, V, NV)
  C:line("const float *restrict xc = x + (size_t)c * %d;", L.spatial * R)
  C:line("const float k = xc[0];")
  C:line("cg_v acc[%d], acc2[%d];", NV, NV)
  C:line("for (int v = 0; v < %d; v++) acc[v] = acc2[v] = vsplat(0.0f);", NV)
  over_channel_vec(C, L, R, V, NV, function(at)
    C:line("const cg_v dv = (VLOAD(xc + %s) - k) * VLOAD(mask + v * %d);", at, V)
    C:line("acc[v] += dv; acc2[v] += dv * dv;")
  end)
  C:line("double s1 = 0.0, s2 = 0.0;")
  C:line("for (int v = 0; v < %d; v++) { s1 += vsum(acc[v]); s2 += vsum(acc2[v]); }", NV)
end

-- The batch's mean and 1/std into S, the running averages updated (unbiased variance
-- over `count` values); fmean, var and f are the caller's.
local function set_stats(C, L, count)
  local c = L.channels
  C:line("S[c] = fmean;")
  C:line("S[%d + c] = (float)(1.0 / sqrt(var + %s));", c, string.format("%.17g", L.opt.eps))
  C:line("rmean[c] = (1.0f - f) * rmean[c] + f * fmean;")
  C:line("rvar[c] = (1.0f - f) * rvar[c] + f * (float)(%s > 1 ? var * %s / (%s - 1) : var);", count, count, count)
end

-- Per channel c, sdy = sum dy and sdyx = sum dy * x_hat, added to beta's and gamma's
-- gradients. dy is zero on padded lanes, so the sums need no mask. with_dx: dxc too.
local function dy_sums(C, L, R, V, NV, with_dx)
  C:line("const float mean = S[c], rstd = S[%d + c];", L.channels)
  C:line("const float *restrict xc = x + (size_t)c * %d;", L.spatial * R)
  C:line("const float *restrict dyc = dy + (size_t)c * %d;", L.spatial * R)
  if with_dx then C:line("float *restrict dxc = dx + (size_t)c * %d;", L.spatial * R) end
  C:line("cg_v ady[%d], adyx[%d];", NV, NV)
  C:line("for (int v = 0; v < %d; v++) ady[v] = adyx[v] = vsplat(0.0f);", NV)
  over_channel_vec(C, L, R, V, NV, function(at)
    C:line("const cg_v d = VLOAD(dyc + %s);", at)
    C:line("ady[v] += d;")
    C:line("adyx[v] += d * ((VLOAD(xc + %s) - mean) * rstd);", at)
  end)
  C:line("double sdy = 0.0, sdyx = 0.0;")
  C:line("for (int v = 0; v < %d; v++) { sdy += vsum(ady[v]); sdyx += vsum(adyx[v]); }", NV)
  C:line("ggamma[c] += (float)sdyx;")
  C:line("gbeta[c] += (float)sdy;")
end

-- dx = k * (fm * dy - fsdy - x_hat * fsdyx), zero on the padded lanes (k, fm, fsdy and
-- fsdyx are the caller's: the batch's or the team's count and sums).
local function dx_store(C, L, R, V, NV)
  over_channel_vec(C, L, R, V, NV, function(at)
    C:line("VSTORE(dxc + %s, k * (fm * VLOAD(dyc + %s) - fsdy - (VLOAD(xc + %s) - mean) * rstd * fsdyx) * VLOAD(mask + v * %d));", at, at, at, V)
  end)
end

-- A team's replica (the generator's --team, cnngen.h's cg_team): each posts its
-- channels' count, mean and sum of squared deviations (3 doubles a channel), and after the
-- sync every replica combines the rows in rank order (Chan et al.'s pairwise update, the
-- same bits on every replica), sets S and the running statistics, and normalises. Opens
-- `if (team) {` ... `} else {`: the caller's single-replica code follows, and closes it.
local function team_forward_stats(C, L, R, V, NV, normalize)
  local c = L.channels
  C:open("if (team) {")
  C:line("double *xch = cg_team_xch(team); /* [team->size][team->slot]: other threads write it, not restrict */")
  C:line("double *mine = xch + (size_t)team->rank * team->slot;")
  util.par(C, L)
  C:open("for (int c = 0; c < %d; c++) {", c)
  channel_moments(C, L, R, V, NV)
  C:line("mine[3 * c] = m;")
  C:line("mine[3 * c + 1] = m > 0 ? k + s1 / m : 0.0;")
  C:line("mine[3 * c + 2] = m > 0 ? fmax(s2 - s1 * s1 / m, 0.0) : 0.0;")
  C:close()
  C:line("cg_team_sync(team);")
  util.par(C, L)
  C:open("for (int c = 0; c < %d; c++) {", c)
  C:line("const float *restrict xc = x + (size_t)c * %d;", L.spatial * R)
  C:line("double n = 0.0, tmean = 0.0, m2 = 0.0;")
  C:open("for (int t = 0; t < team->size; t++) {")
  C:line("const double *row = xch + (size_t)t * team->slot + 3 * c;")
  C:line("if (row[0] <= 0.0) continue;")
  C:line("const double nn = n + row[0], d = row[1] - tmean;")
  C:line("tmean += d * row[0] / nn;")
  C:line("m2 += row[2] + d * d * n * row[0] / nn;")
  C:line("n = nn;")
  C:close()
  C:line("const double var = n > 0 ? m2 / n : 0.0;")
  C:line("const float fmean = (float)tmean;")
  set_stats(C, L, "n")
  normalize()
  C:close()
  C:close()
  C:open("else {")
end

-- A team's replica: its own sums go into its gamma/beta gradients (the caller adds the
-- replicas' parts), and dx takes the team's sums and count (3 doubles a channel).
local function team_backward(C, L, R, V, NV)
  local c = L.channels
  C:open("if (team) {")
  C:line("double *xch = cg_team_xch(team); /* [team->size][team->slot]: other threads write it, not restrict */")
  C:line("double *mine = xch + (size_t)team->rank * team->slot;")
  util.par(C, L)
  C:open("for (int c = 0; c < %d; c++) {", c)
  dy_sums(C, L, R, V, NV, false)
  C:line("mine[3 * c] = m;")
  C:line("mine[3 * c + 1] = sdy;")
  C:line("mine[3 * c + 2] = sdyx;")
  C:close()
  C:line("cg_team_sync(team);")
  util.par(C, L)
  C:open("for (int c = 0; c < %d; c++) {", c)
  C:line("const float mean = S[c], rstd = S[%d + c];", c)
  C:line("const float *restrict xc = x + (size_t)c * %d;", L.spatial * R)
  C:line("const float *restrict dyc = dy + (size_t)c * %d;", L.spatial * R)
  C:line("float *restrict dxc = dx + (size_t)c * %d;", L.spatial * R)
  C:line("double n = 0.0, sdy = 0.0, sdyx = 0.0;")
  C:open("for (int t = 0; t < team->size; t++) {")
  C:line("const double *row = xch + (size_t)t * team->slot + 3 * c;")
  C:line("n += row[0], sdy += row[1], sdyx += row[2];")
  C:close()
  C:line("const float k = n > 0 ? (float)(gamma[c] * rstd / n) : 0.0f, fm = (float)n, fsdy = (float)sdy, fsdyx = (float)sdyx;")
  dx_store(C, L, R, V, NV)
  C:close()
  C:close()
  C:open("else {")
end

-- Training normalises channel c right after its statistics, while the channel (spatial x
-- lanes floats: 200 KB for ResNet-20's 16x28x28 at batch 64) is still in the core's cache.
function M.forward_lanes(L, C, ctx)
  local c, R, V = L.channels, ctx.lanes, ctx.vec
  local NV = R // V
  local function normalize()
    C:open("{")
    C:line("const float mean = S[c], a = S[%d + c] * gamma[c], bc = beta[c];", c)
    C:line("float *restrict yc = y + (size_t)c * %d;", L.spatial * R)
    if L.fwd_add then C:line("const float *restrict rc = r + (size_t)c * %d;", L.spatial * R) end
    C:line("for (int i = 0; i < %d; i++) yc[i] = %s;", L.spatial * R, store_expr(L, "(xc[i] - mean) * a + bc", "rc[i]"))
    C:close()
  end
  C:line("const float *restrict gamma = %s, *restrict beta = %s;", L.t.weight, L.t.bias)
  C:line("float *restrict rmean = %s, *restrict rvar = %s, *restrict nbt = %s;",
    L.t.running_mean, L.t.running_var, L.t.num_batches_tracked)
  C:line("const int m = nb * %d; /* values per channel */", L.spatial)
  C:open("if (training) {")
  mask_decl(C, NV, V)
  C:line("nbt[0] += 1.0f;")
  if L.opt.momentum == "null" then
    C:line("const float f = 1.0f / nbt[0]; /* momentum null: cumulative average */")
  else
    C:line("const float f = %s;", util.flt(L.opt.momentum))
  end
  if ctx.team then team_forward_stats(C, L, R, V, NV, normalize) end
  util.par(C, L)
  C:open("for (int c = 0; c < %d; c++) {", c)
  channel_moments(C, L, R, V, NV)
  C:line("const double dm = s1 / m, var = fmax(s2 / m - dm * dm, 0.0);")
  C:line("const float fmean = (float)(k + dm);")
  set_stats(C, L, "m")
  normalize()
  C:close()
  if ctx.team then C:close() end
  C:close()
  C:open("else {")
  util.par(C, L)
  C:open("for (int c = 0; c < %d; c++) {", c)
  C:line("S[c] = rmean[c];")
  C:line("S[%d + c] = 1.0f / sqrtf(rvar[c] + %s);", c, util.flt(L.opt.eps))
  C:line("const float *restrict xc = x + (size_t)c * %d;", L.spatial * R)
  normalize()
  C:close()
  C:close()
  local a = fwd_args(L)
  if ctx.team then a[#a + 1] = "team" end
  return a
end

function M.backward_lanes(L, C, ctx)
  local c, R, V = L.channels, ctx.lanes, ctx.vec
  local NV = R // V
  C:line("const float *restrict gamma = %s;", L.t.weight)
  C:line("float *restrict ggamma = %s, *restrict gbeta = %s;", L.t_grad.weight, L.t_grad.bias)
  C:line("const int m = nb * %d;", L.spatial)
  mask_decl(C, NV, V)
  if ctx.team then team_backward(C, L, R, V, NV) end
  util.par(C, L)
  C:open("for (int c = 0; c < %d; c++) {", c)
  dy_sums(C, L, R, V, NV, true)
  C:line("const float k = gamma[c] * rstd / m, fm = (float)m, fsdy = (float)sdy, fsdyx = (float)sdyx;")
  dx_store(C, L, R, V, NV)
  C:close()
  if ctx.team then
    C:close()
    return {"P", "G", "S", "x", "dy", "dx", "nb", "team"}
  end
  return {"P", "G", "S", "x", "dy", "dx", "nb"}
end

return M

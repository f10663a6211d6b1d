/* libFuzzer harness: YAML bytes -> cnngen's front end (libyaml parse, validation, shape
 * inference, memory plan: cnngen.load in compiler/lua/cnngen.lua), nothing written.
 * Built with compiler/main.c -DCNNGEN_FUZZ (no main; cnngen_state / cnngen_check_text).
 *
 * Oracle: a Lua runtime error (what the binary reports as "internal error", exit 3) aborts;
 * a rejected spec must carry at least one error, each with a message and a line:col inside
 * the text; an accepted spec carries none.
 * Coverage: the generator runs in the Lua VM, which libFuzzer cannot see, so a line hook
 * feeds (chunk, line) pairs into libFuzzer's extra counters. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

lua_State *cnngen_state(void);
int cnngen_check_text(lua_State *L, const char *text, size_t len);

#define NCOUNTERS (1 << 16)
__attribute__((used, section("__libfuzzer_extra_counters"))) static uint8_t lua_cov[NCOUNTERS];

static void line_hook(lua_State *L, lua_Debug *ar)
{
    if (!lua_getinfo(L, "S", ar))
        return;
    /* chunk names are interned strings: the pointer identifies the module */
    uintptr_t h = ((uintptr_t)ar->source >> 4) * 2654435761u ^ (uintptr_t)ar->currentline * 40503u;
    uint8_t *c = &lua_cov[(h ^ (h >> 16)) & (NCOUNTERS - 1)];
    if (*c < 255)
        (*c)++;
}

/* Lua heap capped (a spec must be rejected long before it needs this much) */
static size_t lua_bytes;
enum { LUA_HEAP_LIMIT = 1024u << 20 };
static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    if (!ptr)
        osize = 0;
    if (nsize == 0) {
        free(ptr);
        lua_bytes -= osize;
        return NULL;
    }
    if (nsize > osize && lua_bytes + (nsize - osize) > LUA_HEAP_LIMIT)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p)
        lua_bytes += nsize - osize;
    return p;
}

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = cnngen_state();
    if (!L) {
        fprintf(stderr, "fuzz_spec: cannot load the generator\n");
        abort();
    }
    /* the state was made by luaL_newstate (malloc based); switch to the capped allocator,
     * counting what is already allocated */
    lua_gc(L, LUA_GCCOLLECT);
    lua_bytes = (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB);
    void *ud;
    lua_Alloc old = lua_getallocf(L, &ud);
    (void)old;
    lua_setallocf(L, limited_alloc, NULL);
    if (!getenv("FUZZ_SPEC_NO_LUA_COVERAGE"))
        lua_sethook(L, line_hook, LUA_MASKLINE, 0);
    return 0;
}

static void fail(const char *what, const uint8_t *data, size_t size)
{
    fprintf(stderr, "fuzz_spec: %s\n--- input (%zu bytes) ---\n%.*s\n---\n", what, size,
            (int)(size > 4000 ? 4000 : size), (const char *)data);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int rc = cnngen_check_text(L, (const char *)data, size);
    if (rc == 3) {
        const char *m = lua_tostring(L, -1);
        fprintf(stderr, "fuzz_spec: internal error: %s\n", m ? m : "?");
        fail("Lua error in the front end", data, size);
    }
    /* stack: traceback, errs, spec|nil */
    /* lines as YAML counts them: LF, CR, CRLF, and UTF-8 NEL, LS, PS */
    long lines = 1;
    for (size_t i = 0; i < size; i++) {
        if (data[i] == '\n' || (data[i] == '\r' && (i + 1 == size || data[i + 1] != '\n')))
            lines++;
        else if (data[i] == 0xC2 && i + 1 < size && data[i + 1] == 0x85)
            lines++;
        else if (data[i] == 0xE2 && i + 2 < size && data[i + 1] == 0x80 &&
                 (data[i + 2] == 0xA8 || data[i + 2] == 0xA9))
            lines++;
    }
    lua_getfield(L, -2, "list");
    lua_Integer n = luaL_len(L, -1);
    if (rc == 0 && n != 0)
        fail("accepted spec with errors", data, size);
    if (rc == 1 && n == 0)
        fail("rejected spec without an error message", data, size);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_getfield(L, -1, "line");
        lua_getfield(L, -2, "col");
        lua_getfield(L, -3, "msg");
        int isnum;
        lua_Integer line = lua_tointegerx(L, -3, &isnum);
        lua_Integer col = lua_tointegerx(L, -2, NULL);
        const char *msg = lua_tostring(L, -1);
        if (!isnum || line < 1 || col < 1 || line > lines + 1)
            fail("error position outside the text", data, size);
        if (!msg || !*msg)
            fail("empty error message", data, size);
        lua_pop(L, 4);
    }
    lua_settop(L, 0);
    return 0;
}

/* cnngen: the host. Parses YAML with libyaml (keeping line and column of every node)
 * and runs the code generator, Lua 5.4 compiled into this executable.
 * All policy (CLI, validation, shapes, emission) lives in compiler/lua/. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <yaml.h>

#include "version.h"
#ifndef CNNGEN_FUZZ
#include "npy.h" /* runtime/npy.c, linked in for --inference --weights / --norm */
#endif

extern const struct { const char *name, *path, *src; size_t len; } cnngen_lua_sources[];

#ifndef CNNGEN_MAX_NODES /* tests/fuzz lowers it: alias bombs stay cheap to reject */
#define CNNGEN_MAX_NODES 200000
#endif
enum { MAX_DEPTH = 64, MAX_NODES = CNNGEN_MAX_NODES };

typedef struct {
    yaml_document_t *doc;
    long nodes;
    const char *err;
    yaml_mark_t err_mark;
} convert_ctx;

static void set_pos(lua_State *L, yaml_mark_t m)
{
    lua_pushinteger(L, (lua_Integer)m.line + 1);
    lua_setfield(L, -2, "line");
    lua_pushinteger(L, (lua_Integer)m.column + 1);
    lua_setfield(L, -2, "col");
}

/* Push node as {t="map"|"seq"|"str", line, col, v=...}; maps keep order as
 * v = {{k=node, v=node}, ...}. Returns 0 and sets ctx->err on a limit. */
static int push_node(lua_State *L, convert_ctx *ctx, yaml_node_t *node, int depth)
{
    if (depth > MAX_DEPTH || ++ctx->nodes > MAX_NODES) {
        ctx->err = depth > MAX_DEPTH ? "YAML nested too deeply (recursive alias?)"
                                     : "YAML document too large (alias expansion?)";
        ctx->err_mark = node->start_mark;
        return 0;
    }
    luaL_checkstack(L, 8, "yaml");
    lua_createtable(L, 0, 5);
    set_pos(L, node->start_mark);
    switch (node->type) {
    case YAML_SCALAR_NODE:
        lua_pushliteral(L, "str");
        lua_setfield(L, -2, "t");
        lua_pushlstring(L, (const char *)node->data.scalar.value, node->data.scalar.length);
        lua_setfield(L, -2, "v");
        lua_pushboolean(L, node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE);
        lua_setfield(L, -2, "plain");
        break;
    case YAML_SEQUENCE_NODE: {
        lua_pushliteral(L, "seq");
        lua_setfield(L, -2, "t");
        lua_newtable(L);
        lua_Integer i = 1;
        for (yaml_node_item_t *it = node->data.sequence.items.start;
             it < node->data.sequence.items.top; it++) {
            if (!push_node(L, ctx, yaml_document_get_node(ctx->doc, *it), depth + 1))
                return 0;
            lua_rawseti(L, -2, i++);
        }
        lua_setfield(L, -2, "v");
        break;
    }
    case YAML_MAPPING_NODE: {
        lua_pushliteral(L, "map");
        lua_setfield(L, -2, "t");
        lua_newtable(L);
        lua_Integer i = 1;
        for (yaml_node_pair_t *p = node->data.mapping.pairs.start;
             p < node->data.mapping.pairs.top; p++) {
            lua_createtable(L, 0, 2);
            if (!push_node(L, ctx, yaml_document_get_node(ctx->doc, p->key), depth + 1))
                return 0;
            lua_setfield(L, -2, "k");
            if (!push_node(L, ctx, yaml_document_get_node(ctx->doc, p->value), depth + 1))
                return 0;
            lua_setfield(L, -2, "v");
            lua_rawseti(L, -2, i++);
        }
        lua_setfield(L, -2, "v");
        break;
    }
    default:
        ctx->err = "empty YAML node";
        ctx->err_mark = node->start_mark;
        return 0;
    }
    return 1;
}

/* Push nil, message, line, col for a libyaml failure. Reader errors (bad UTF-8,
 * control characters) carry a byte offset instead of a mark: count lines ourselves. */
static int push_yaml_error(lua_State *L, const yaml_parser_t *parser, const char *text, size_t len)
{
    const char *problem = parser->problem ? parser->problem : "invalid YAML";
    size_t line = parser->problem_mark.line, col = parser->problem_mark.column;
    size_t at = parser->problem_mark.index;
    if (parser->error == YAML_READER_ERROR) {
        at = parser->problem_offset < len ? parser->problem_offset : len;
        line = col = 0;
        for (size_t i = 0; i < at; i++) {
            if (text[i] == '\n') {
                line++;
                col = 0;
            } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
                col++;
            }
        }
    }
    lua_pushnil(L);
    if (parser->error == YAML_SCANNER_ERROR && at < len && text[at] == '\t')
        lua_pushliteral(L, "invalid YAML: tabs are not allowed for indentation (use spaces)");
    else if (parser->context)
        lua_pushfstring(L, "invalid YAML: %s %s", problem, parser->context);
    else
        lua_pushfstring(L, "invalid YAML: %s", problem);
    lua_pushinteger(L, (lua_Integer)line + 1);
    lua_pushinteger(L, (lua_Integer)col + 1);
    return 4;
}

/* cnngen_c.parse_yaml(text) -> root node | nil, message, line, col */
static int l_parse_yaml(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return luaL_error(L, "libyaml: out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        int r = push_yaml_error(L, &parser, text, len);
        yaml_parser_delete(&parser);
        return r;
    }
    int nret;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) { /* a stream holds exactly one document */
        yaml_document_t next;
        if (!yaml_parser_load(&parser, &next)) {
            int r = push_yaml_error(L, &parser, text, len);
            yaml_document_delete(&doc);
            yaml_parser_delete(&parser);
            return r;
        }
        yaml_node_t *second = yaml_document_get_root_node(&next);
        if (second) {
            lua_pushnil(L);
            lua_pushliteral(L, "invalid YAML: expected a single document, found a second one");
            lua_pushinteger(L, (lua_Integer)next.start_mark.line + 1);
            lua_pushinteger(L, (lua_Integer)next.start_mark.column + 1);
            yaml_document_delete(&next);
            yaml_document_delete(&doc);
            yaml_parser_delete(&parser);
            return 4;
        }
        yaml_document_delete(&next);
    }
    if (!root) {
        lua_pushnil(L);
        lua_pushliteral(L, "empty document: expected a mapping with name, input and layers");
        lua_pushinteger(L, 1);
        lua_pushinteger(L, 1);
        nret = 4;
    } else {
        convert_ctx ctx = {&doc, 0, NULL, {0, 0, 0}};
        int top = lua_gettop(L);
        if (push_node(L, &ctx, root, 0)) {
            nret = 1;
        } else {
            lua_settop(L, top);
            lua_pushnil(L);
            lua_pushstring(L, ctx.err);
            lua_pushinteger(L, (lua_Integer)ctx.err_mark.line + 1);
            lua_pushinteger(L, (lua_Integer)ctx.err_mark.column + 1);
            nret = 4;
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return nret;
}

/* cnngen_c.mkdir_p(path) -> the directories it created, outermost first (to remove them
 * again if writing fails) | nil, message naming the path. Like mkdir -p: existing
 * directories are fine; on failure the ones created here are removed again. */
static int l_mkdir_p(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    char *p = lua_newuserdatauv(L, len + 1, 0);
    memcpy(p, path, len + 1);
    lua_newtable(L);
    lua_Integer made = 0;
    int err = 0;
    for (size_t i = 1; i <= len && !err; i++) {
        if (i < len && p[i] != '/')
            continue;
        if (i < len && p[i - 1] == '/')
            continue; /* "a//b" */
        char c = p[i];
        p[i] = 0;
        struct stat st;
        if (mkdir(p, 0777) == 0) {
            lua_pushstring(L, p);
            lua_rawseti(L, -2, ++made);
        } else if (errno != EEXIST) {
            err = errno;
        } else if (stat(p, &st) != 0) {
            err = errno;
        } else if (!S_ISDIR(st.st_mode)) {
            err = ENOTDIR;
        }
        p[i] = c;
    }
    if (err) {
        for (lua_Integer k = made; k >= 1; k--) {
            lua_rawgeti(L, -1, k);
            rmdir(lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        lua_pushnil(L);
        lua_pushfstring(L, "%s: cannot create the output directory: %s", path, strerror(err));
        return 2;
    }
    return 1;
}
#ifndef CNNGEN_FUZZ
/* cnngen_c.read_npz(path) -> {[key] = {dtype = "<f4", shape = {...}, data = {...}}} | nil, message.
 * Values are read as the trainer reads them: each rounded to float32 (counters exactly). */
static int l_read_npz(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    cg_npz z;
    cg_err err;
    if (cg_npz_read(path, &z, &err) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, err.msg);
        return 2;
    }
    lua_createtable(L, 0, z.n);
    for (int k = 0; k < z.n; k++) {
        const cg_array *a = &z.arrays[k];
        lua_createtable(L, 0, 3);
        lua_pushstring(L, cg_dtype_descr(a->dtype));
        lua_setfield(L, -2, "dtype");
        lua_createtable(L, a->ndim, 0);
        for (int d = 0; d < a->ndim; d++) {
            lua_pushinteger(L, (lua_Integer)a->shape[d]);
            lua_rawseti(L, -2, d + 1);
        }
        lua_setfield(L, -2, "shape");
        luaL_checkstack(L, 4, "npz");
        lua_createtable(L, (int)(a->count < 1u << 30 ? a->count : 0), 0);
        int is_int = cg_dtype_is_int(a->dtype);
        for (size_t i = 0; i < a->count; i++) {
            double v = cg_array_get(a, i);
            lua_pushnumber(L, is_int ? v : (double)(float)v);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, -2, "data");
        lua_setfield(L, -2, z.keys[k]);
    }
    cg_npz_free(&z);
    return 1;
}
#endif

static int l_searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    for (int i = 0; cnngen_lua_sources[i].name; i++) {
        if (strcmp(cnngen_lua_sources[i].name, name) == 0) {
            char chunk[300];
            snprintf(chunk, sizeof chunk, "@%s", cnngen_lua_sources[i].path);
            if (luaL_loadbuffer(L, cnngen_lua_sources[i].src, cnngen_lua_sources[i].len, chunk))
                return lua_error(L);
            lua_pushstring(L, name);
            return 2;
        }
    }
    lua_pushfstring(L, "\n\tno embedded module '%s'", name);
    return 1;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

/* Standard libraries, the embedded modules and cnngen_c; pushes require("cnngen"). */
static void setup(lua_State *L)
{
    luaL_openlibs(L);
    /* embedded modules come first among the searchers: no .lua files needed */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    lua_pushcfunction(L, l_searcher);
    lua_rawseti(L, -2, 2); /* replace the file searcher: never load from disk */
    lua_pop(L, 2);
    lua_newtable(L);
    lua_pushcfunction(L, l_parse_yaml);
    lua_setfield(L, -2, "parse_yaml");
    lua_pushcfunction(L, l_mkdir_p);
    lua_setfield(L, -2, "mkdir_p");
#ifndef CNNGEN_FUZZ
    lua_pushcfunction(L, l_read_npz);
    lua_setfield(L, -2, "read_npz");
#endif
    lua_pushstring(L, CNNGEN_VERSION);
    lua_setfield(L, -2, "version");
    lua_setglobal(L, "cnngen_c");
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cnngen");
    lua_call(L, 1, 1);
}

#ifndef CNNGEN_FUZZ
static int pmain(lua_State *L)
{
    int argc = (int)lua_tointeger(L, 1);
    char **argv = (char **)lua_touserdata(L, 2);
    setup(L);
    lua_getfield(L, -1, "main");
    lua_newtable(L);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_call(L, 1, 1);
    return 1;
}
#endif

#ifdef CNNGEN_FUZZ
/* ---- in-memory front end for tests/fuzz/fuzz_spec.c (-DCNNGEN_FUZZ: no main) ---- */
static int psetup(lua_State *L)
{
    setup(L);
    lua_setglobal(L, "cnngen_module");
    return 0;
}

/* A Lua state with the generator loaded; NULL on failure. */
lua_State *cnngen_state(void)
{
    lua_State *L = luaL_newstate();
    if (!L)
        return NULL;
    lua_pushcfunction(L, psetup);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        lua_close(L);
        return NULL;
    }
    return L;
}

static int pcheck(lua_State *L)
{
    const char *text = (const char *)lua_touserdata(L, 1);
    size_t len = (size_t)lua_tointeger(L, 2);
    lua_getglobal(L, "cnngen_module");
    lua_getfield(L, -1, "load");
    lua_pushlstring(L, text, len);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "util");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "errors");
    lua_remove(L, -2);
    lua_pushinteger(L, 20);
    lua_call(L, 1, 1);
    lua_pushvalue(L, -1);
    lua_insert(L, -4); /* errs below load, text, errs */
    lua_call(L, 2, 1);
    return 2; /* errs, spec or nil */
}

/* cnngen's front end on an in-memory spec: YAML parse, validation, shape inference and the
 * memory plan (cnngen.load), nothing written. Returns 0 valid, 1 rejected (the errors table
 * table and the spec or nil are left on top), 3 internal error (message on top). */
int cnngen_check_text(lua_State *L, const char *text, size_t len)
{
    lua_pushcfunction(L, traceback);
    lua_pushcfunction(L, pcheck);
    lua_pushlightuserdata(L, (void *)text);
    lua_pushinteger(L, (lua_Integer)len);
    if (lua_pcall(L, 2, 2, -4) != LUA_OK)
        return 3;
    return lua_isnil(L, -1) ? 1 : 0;
}

#else
int main(int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "cnngen: cannot create Lua state\n");
        return 3;
    }
    lua_pushcfunction(L, traceback);
    lua_pushcfunction(L, pmain);
    lua_pushinteger(L, argc);
    lua_pushlightuserdata(L, argv);
    int rc;
    if (lua_pcall(L, 2, 1, 1) != LUA_OK) {
        fprintf(stderr, "cnngen: internal error: %s\n", lua_tostring(L, -1));
        rc = 3;
    } else {
        rc = (int)lua_tointeger(L, -1);
    }
    lua_close(L);
    return rc;
}
#endif

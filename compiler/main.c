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

/* Limits applied while parsing (events, not yaml_parser_load: nesting, node count and
 * alias expansion are refused as soon as they are exceeded, so a deeply nested or
 * alias-bombed file costs time and memory in proportion to the limit, not to its size). */
#ifndef CNNGEN_MAX_ALIAS_NODES
#define CNNGEN_MAX_ALIAS_NODES 10000
#endif
enum { MAX_ALIAS_NODES = CNNGEN_MAX_ALIAS_NODES };

typedef struct {
    int is_map, key_next;  /* mapping: the next child is a key */
    lua_Integer count;     /* children (sequence) or pairs (mapping) so far */
    char *anchor;          /* anchor of this collection (owned), or NULL */
    long nodes_at_start;   /* ctx.nodes when it opened: its size once closed */
    int height;            /* levels below it so far */
} frame;

typedef struct {
    long nodes, alias_nodes;
    int anchors;           /* absolute stack index of {name = {node, nodes, height}} */
    const char *err;
    yaml_mark_t err_mark;
} build_ctx;

static void set_pos(lua_State *L, yaml_mark_t m)
{
    lua_pushinteger(L, (lua_Integer)m.line + 1);
    lua_setfield(L, -2, "line");
    lua_pushinteger(L, (lua_Integer)m.column + 1);
    lua_setfield(L, -2, "col");
}

static int fail_at(build_ctx *ctx, const char *msg, yaml_mark_t m)
{
    ctx->err = msg;
    ctx->err_mark = m;
    return 0;
}

/* Count n more nodes at depth (limits: MAX_NODES in all, MAX_DEPTH levels). */
static int count_nodes(build_ctx *ctx, long n, int depth, yaml_mark_t m)
{
    if (depth > MAX_DEPTH)
        return fail_at(ctx, "YAML nested too deeply (recursive alias?)", m);
    ctx->nodes += n;
    if (ctx->nodes > MAX_NODES)
        return fail_at(ctx, "YAML document too large (alias expansion?)", m);
    return 1;
}

/* Deep copy of the node table at idx (an alias's target: a tree of plain tables). */
static void copy_tree(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 6, "yaml");
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pushvalue(L, -2);
        if (lua_type(L, -2) == LUA_TTABLE)
            copy_tree(L, -2);
        else
            lua_pushvalue(L, -2);
        lua_rawset(L, -5);
        lua_pop(L, 1);
    }
}

/* The finished node on top of the stack goes into its parent (frames[depth - 1]), or
 * stays as the root. Stack per open collection: node table, its v table, and for a
 * mapping whose key is done, the pair {k = key}. */
static void attach(lua_State *L, frame *frames, int depth, int height)
{
    if (depth == 0)
        return;
    frame *p = &frames[depth - 1];
    if (height + 1 > p->height)
        p->height = height + 1;
    if (!p->is_map) {
        lua_rawseti(L, -2, ++p->count);
    } else if (p->key_next) {
        lua_createtable(L, 0, 2);
        lua_insert(L, -2);
        lua_setfield(L, -2, "k");
        p->key_next = 0;
    } else {
        lua_setfield(L, -2, "v");
        lua_rawseti(L, -2, ++p->count);
        p->key_next = 1;
    }
}

/* Remember the node on top of the stack under anchor (if any). */
static void set_anchor(lua_State *L, build_ctx *ctx, const char *anchor, long nodes, int height)
{
    if (!anchor)
        return;
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, -2);
    lua_setfield(L, -2, "node");
    lua_pushinteger(L, nodes);
    lua_setfield(L, -2, "nodes");
    lua_pushinteger(L, height);
    lua_setfield(L, -2, "height");
    lua_setfield(L, ctx->anchors, anchor);
}

static void new_node(lua_State *L, const char *type, yaml_mark_t m)
{
    luaL_checkstack(L, 8, "yaml");
    lua_createtable(L, 0, 5);
    set_pos(L, m);
    lua_pushstring(L, type);
    lua_setfield(L, -2, "t");
}

/* Builds the document's root node on the stack from parse events:
 * {t="map"|"seq"|"str", line, col, v=...}; maps keep order as v = {{k=node, v=node}, ...}.
 * Returns 1 (root on top), 0 (ctx->err set), -1 (libyaml error: the parser says),
 * 2 (empty stream). */
static int build(lua_State *L, yaml_parser_t *parser, build_ctx *ctx, frame *frames)
{
    int depth = 0, docs = 0, have_root = 0, rc = -1;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(parser, &ev))
            return -1;
        int done = 0;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            rc = have_root ? 1 : 2;
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                rc = fail_at(ctx, "invalid YAML: expected a single document, found a second one", ev.start_mark);
                done = 1;
            }
            break;
        case YAML_SCALAR_EVENT:
            if (!count_nodes(ctx, 1, depth, ev.start_mark)) {
                rc = 0, done = 1;
                break;
            }
            new_node(L, "str", ev.start_mark);
            lua_pushlstring(L, (const char *)ev.data.scalar.value, ev.data.scalar.length);
            lua_setfield(L, -2, "v");
            lua_pushboolean(L, ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE);
            lua_setfield(L, -2, "plain");
            set_anchor(L, ctx, (const char *)ev.data.scalar.anchor, 1, 0);
            attach(L, frames, depth, 0);
            have_root |= depth == 0;
            break;
        case YAML_ALIAS_EVENT: {
            lua_getfield(L, ctx->anchors, (const char *)ev.data.alias.anchor);
            if (lua_isnil(L, -1)) { /* undefined, or its own collection is still open */
                int open = 0;
                for (int d = 0; d < depth; d++)
                    open |= frames[d].anchor && strcmp(frames[d].anchor, (const char *)ev.data.alias.anchor) == 0;
                lua_pop(L, 1);
                rc = fail_at(ctx, open ? "YAML nested too deeply (recursive alias?)" : "invalid YAML: found undefined alias",
                             ev.start_mark);
                done = 1;
                break;
            }
            lua_getfield(L, -1, "nodes");
            long n = (long)lua_tointeger(L, -1);
            lua_getfield(L, -2, "height");
            int h = (int)lua_tointeger(L, -1);
            lua_pop(L, 2);
            ctx->alias_nodes += n;
            if (!count_nodes(ctx, n, depth + h, ev.start_mark)) {
                lua_pop(L, 1);
                rc = 0, done = 1;
                break;
            }
            if (ctx->alias_nodes > MAX_ALIAS_NODES) {
                lua_pop(L, 1);
                rc = fail_at(ctx, "YAML aliases expand to too many nodes (alias expansion?)", ev.start_mark);
                done = 1;
                break;
            }
            lua_getfield(L, -1, "node");
            copy_tree(L, -1);
            lua_remove(L, -2);
            lua_remove(L, -2);
            attach(L, frames, depth, h);
            have_root |= depth == 0;
            break;
        }
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            if (!count_nodes(ctx, 1, depth + 1, ev.start_mark)) {
                rc = 0, done = 1;
                break;
            }
            int is_map = ev.type == YAML_MAPPING_START_EVENT;
            const yaml_char_t *a = is_map ? ev.data.mapping_start.anchor : ev.data.sequence_start.anchor;
            frame *f = &frames[depth++];
            *f = (frame){is_map, 1, 0, a ? strdup((const char *)a) : NULL, ctx->nodes - 1, 0};
            new_node(L, is_map ? "map" : "seq", ev.start_mark);
            lua_newtable(L);
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT: {
            frame *f = &frames[--depth];
            lua_setfield(L, -2, "v");
            set_anchor(L, ctx, f->anchor, ctx->nodes - f->nodes_at_start, f->height);
            free(f->anchor);
            f->anchor = NULL;
            attach(L, frames, depth, f->height);
            have_root |= depth == 0;
            break;
        }
        default:
            break;
        }
        yaml_event_delete(&ev);
        if (done)
            return rc;
    }
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
    if (!yaml_parser_initialize(&parser))
        return luaL_error(L, "libyaml: out of memory");
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    frame frames[MAX_DEPTH + 2];
    memset(frames, 0, sizeof frames);
    lua_newtable(L);
    build_ctx ctx = {0, 0, lua_gettop(L), NULL, {0, 0, 0}};
    int top = lua_gettop(L);
    int r = build(L, &parser, &ctx, frames);
    for (int d = 0; d < MAX_DEPTH + 2; d++)
        free(frames[d].anchor);
    int nret;
    if (r == 1) {
        nret = 1;
    } else if (r == -1) {
        lua_settop(L, top);
        nret = push_yaml_error(L, &parser, text, len);
    } else {
        lua_settop(L, top);
        lua_pushnil(L);
        if (r == 2)
            lua_pushliteral(L, "empty document: expected a mapping with name, input and layers");
        else
            lua_pushstring(L, ctx.err);
        lua_pushinteger(L, r == 2 ? 1 : (lua_Integer)ctx.err_mark.line + 1);
        lua_pushinteger(L, r == 2 ? 1 : (lua_Integer)ctx.err_mark.column + 1);
        nret = 4;
    }
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

/* Recursive-descent JSON parser used to read scenario files (RFC 8259 subset: everything a
 * scenario needs, including \u escapes and surrogate pairs; nesting is capped to keep a
 * malformed file from exhausting the stack). */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

struct parser {
    const char *text;
    size_t len;
    size_t pos;
    char *err;
    size_t err_len;
    int failed;
};

static void fail(struct parser *p, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = 1;
    size_t line = 1, col = 1;
    for (size_t i = 0; i < p->pos && i < p->len; i++) {
        if (p->text[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->err_len, "line %zu column %zu: %s", line, col, msg);
}

static void skip_space(struct parser *p)
{
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            p->pos++;
        else
            break;
    }
}

static struct json *new_node(struct parser *p, enum json_type type)
{
    struct json *node = calloc(1, sizeof *node);
    if (!node)
        fail(p, "out of memory");
    else
        node->type = type;
    return node;
}

/* Append one UTF-8 encoded code point to buf. */
static size_t put_utf8(char *buf, unsigned long cp)
{
    if (cp < 0x80) {
        buf[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        buf[0] = (char)(0xC0 | (cp >> 6));
        buf[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        buf[0] = (char)(0xE0 | (cp >> 12));
        buf[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    buf[0] = (char)(0xF0 | (cp >> 18));
    buf[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    buf[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    buf[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int read_hex4(struct parser *p, unsigned long *out)
{
    if (p->pos + 4 > p->len) {
        fail(p, "truncated \\u escape");
        return 0;
    }
    unsigned long v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->text[p->pos++];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned long)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned long)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned long)(c - 'A' + 10);
        else {
            fail(p, "bad hex digit in \\u escape");
            return 0;
        }
    }
    *out = v;
    return 1;
}

/* Parses a string starting at the opening quote; returns a malloc'd NUL-terminated copy. */
static char *parse_string_raw(struct parser *p)
{
    p->pos++; /* opening quote */
    /* Escapes never make the text longer, so the remaining input bounds the output. */
    size_t start = p->pos;
    size_t cap = 16;
    while (start < p->len && p->text[start] != '"') {
        if (p->text[start] == '\\')
            start++;
        start++;
        cap++;
    }
    char *out = malloc(cap + 4);
    if (!out) {
        fail(p, "out of memory");
        return NULL;
    }
    size_t n = 0;
    while (1) {
        if (p->pos >= p->len) {
            fail(p, "unterminated string");
            free(out);
            return NULL;
        }
        unsigned char c = (unsigned char)p->text[p->pos++];
        if (c == '"')
            break;
        if (c < 0x20) {
            fail(p, "control character in string");
            free(out);
            return NULL;
        }
        if (c != '\\') {
            out[n++] = (char)c;
            continue;
        }
        if (p->pos >= p->len) {
            fail(p, "unterminated escape");
            free(out);
            return NULL;
        }
        char e = p->text[p->pos++];
        switch (e) {
        case '"': out[n++] = '"'; break;
        case '\\': out[n++] = '\\'; break;
        case '/': out[n++] = '/'; break;
        case 'b': out[n++] = '\b'; break;
        case 'f': out[n++] = '\f'; break;
        case 'n': out[n++] = '\n'; break;
        case 'r': out[n++] = '\r'; break;
        case 't': out[n++] = '\t'; break;
        case 'u': {
            unsigned long cp;
            if (!read_hex4(p, &cp)) {
                free(out);
                return NULL;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF && p->pos + 6 <= p->len &&
                p->text[p->pos] == '\\' && p->text[p->pos + 1] == 'u') {
                size_t save = p->pos;
                p->pos += 2;
                unsigned long low;
                if (!read_hex4(p, &low)) {
                    free(out);
                    return NULL;
                }
                if (low >= 0xDC00 && low <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                else
                    p->pos = save;
            }
            /* A \uXXXX escape is six input bytes and at most four output bytes. */
            n += put_utf8(out + n, cp);
            break;
        }
        default:
            fail(p, "unknown escape \\%c", e);
            free(out);
            return NULL;
        }
    }
    out[n] = '\0';
    return out;
}

static struct json *parse_value(struct parser *p, int depth);

static struct json *parse_number(struct parser *p)
{
    size_t start = p->pos;
    int integer = 1;
    if (p->text[p->pos] == '-')
        p->pos++;
    if (p->pos >= p->len || p->text[p->pos] < '0' || p->text[p->pos] > '9') {
        fail(p, "bad number");
        return NULL;
    }
    while (p->pos < p->len) {
        char c = p->text[p->pos];
        if (c >= '0' && c <= '9') {
            p->pos++;
        } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
            integer = 0;
            p->pos++;
        } else {
            break;
        }
    }
    size_t n = p->pos - start;
    char buf[64];
    if (n >= sizeof buf) {
        fail(p, "number too long");
        return NULL;
    }
    memcpy(buf, p->text + start, n);
    buf[n] = '\0';
    char *end;
    errno = 0;
    double d = strtod(buf, &end);
    if (*end != '\0' || !isfinite(d)) {
        fail(p, "bad number '%s'", buf);
        return NULL;
    }
    struct json *node = new_node(p, JSON_NUMBER);
    if (!node)
        return NULL;
    node->number = d;
    node->negative = d < 0;
    if (integer) {
        const char *digits = buf[0] == '-' ? buf + 1 : buf;
        errno = 0;
        unsigned long long m = strtoull(digits, &end, 10);
        if (errno == ERANGE) {
            integer = 0;
        } else {
            node->magnitude = m;
            node->negative = buf[0] == '-' && m != 0;
        }
    }
    node->is_integer = integer;
    return node;
}

static int grow(struct parser *p, struct json *node, size_t *cap, int with_keys)
{
    if (node->count < *cap)
        return 1;
    size_t ncap = *cap ? *cap * 2 : 8;
    struct json **items = realloc(node->items, ncap * sizeof *items);
    if (!items) {
        fail(p, "out of memory");
        return 0;
    }
    node->items = items;
    if (with_keys) {
        char **keys = realloc(node->keys, ncap * sizeof *keys);
        if (!keys) {
            fail(p, "out of memory");
            return 0;
        }
        node->keys = keys;
    }
    *cap = ncap;
    return 1;
}

/* The node freed, for a parse that failed. */
static struct json *abandon(struct json *node)
{
    json_free(node);
    return NULL;
}

/* After an array item or object member: 1 past a ',' (another follows), 0 past the container's
 * closing character, -1 (and the parse failed) on anything else. */
static int next_item(struct parser *p, char close, const char *container)
{
    skip_space(p);
    if (p->pos < p->len && (p->text[p->pos] == ',' || p->text[p->pos] == close))
        return p->text[p->pos++] == ',';
    fail(p, "expected ',' or '%c' in %s", close, container);
    return -1;
}

/* Past the opening character: 1 when the container is empty (its closing character next,
 * consumed), 0 when items follow. */
static int empty_container(struct parser *p, char close)
{
    p->pos++;
    skip_space(p);
    if (p->pos < p->len && p->text[p->pos] == close) {
        p->pos++;
        return 1;
    }
    return 0;
}

/* An object member's key and the ':' after it; NULL (the parse failed) when there is none. */
static char *parse_key(struct parser *p)
{
    skip_space(p);
    if (p->pos >= p->len || p->text[p->pos] != '"') {
        fail(p, "expected a string key in object");
        return NULL;
    }
    char *key = parse_string_raw(p);
    if (!key)
        return NULL;
    skip_space(p);
    if (p->pos >= p->len || p->text[p->pos] != ':') {
        fail(p, "expected ':' after key \"%s\"", key);
        free(key);
        return NULL;
    }
    p->pos++;
    return key;
}

/* An array, or an object (its members' keys in node->keys beside their values). */
static struct json *parse_container(struct parser *p, int depth, int object)
{
    char close = object ? '}' : ']';
    struct json *node = new_node(p, object ? JSON_OBJECT : JSON_ARRAY);
    if (!node || empty_container(p, close))
        return node;
    size_t cap = 0;
    int more;
    do {
        char *key = NULL;
        if (object && !(key = parse_key(p)))
            return abandon(node);
        struct json *value = parse_value(p, depth + 1);
        if (!value || !grow(p, node, &cap, object)) {
            free(key);
            json_free(value);
            return abandon(node);
        }
        if (object)
            node->keys[node->count] = key;
        node->items[node->count++] = value;
    } while ((more = next_item(p, close, object ? "object" : "array")) > 0);
    return more == 0 ? node : abandon(node);
}

static int match_word(struct parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->pos + n <= p->len && memcmp(p->text + p->pos, word, n) == 0) {
        p->pos += n;
        return 1;
    }
    return 0;
}

static struct json *parse_value(struct parser *p, int depth)
{
    if (depth > MAX_DEPTH) {
        fail(p, "nesting deeper than %d", MAX_DEPTH);
        return NULL;
    }
    skip_space(p);
    if (p->pos >= p->len) {
        fail(p, "unexpected end of input");
        return NULL;
    }
    char c = p->text[p->pos];
    if (c == '{')
        return parse_container(p, depth, 1);
    if (c == '[')
        return parse_container(p, depth, 0);
    if (c == '"') {
        char *s = parse_string_raw(p);
        if (!s)
            return NULL;
        struct json *node = new_node(p, JSON_STRING);
        if (!node) {
            free(s);
            return NULL;
        }
        node->string = s;
        return node;
    }
    if (c == '-' || (c >= '0' && c <= '9'))
        return parse_number(p);
    if (match_word(p, "true")) {
        struct json *node = new_node(p, JSON_BOOL);
        if (node)
            node->boolean = 1;
        return node;
    }
    if (match_word(p, "false"))
        return new_node(p, JSON_BOOL);
    if (match_word(p, "null"))
        return new_node(p, JSON_NULL);
    fail(p, "unexpected character '%c'", c);
    return NULL;
}

struct json *json_parse(const char *text, size_t len, char *err, size_t err_len)
{
    struct parser p = {text, len, 0, err, err_len, 0};
    if (err_len)
        err[0] = '\0';
    struct json *root = parse_value(&p, 0);
    if (!root)
        return NULL;
    skip_space(&p);
    if (p.pos != p.len) {
        fail(&p, "trailing characters after the document");
        json_free(root);
        return NULL;
    }
    return root;
}

void json_free(struct json *node)
{
    if (!node)
        return;
    for (size_t i = 0; i < node->count; i++) {
        json_free(node->items[i]);
        if (node->keys)
            free(node->keys[i]);
    }
    free(node->items);
    free(node->keys);
    free(node->string);
    free(node);
}

const struct json *json_get(const struct json *object, const char *key)
{
    if (!object || object->type != JSON_OBJECT)
        return NULL;
    /* Last duplicate wins, as in most JSON readers (Python's json included). */
    for (size_t i = object->count; i-- > 0;) {
        if (strcmp(object->keys[i], key) == 0)
            return object->items[i];
    }
    return NULL;
}

int json_is_null(const struct json *node)
{
    return !node || node->type == JSON_NULL;
}

int json_to_u64(const struct json *node, unsigned long long *out)
{
    if (!node)
        return 0;
    if (node->type == JSON_BOOL) {
        *out = node->boolean ? 1 : 0;
        return 1;
    }
    if (node->type != JSON_NUMBER || node->negative)
        return 0;
    if (node->is_integer)
        *out = node->magnitude;
    else if (node->number >= 18446744073709551615.0)
        *out = ~0ULL;
    else
        *out = (unsigned long long)floor(node->number);
    return 1;
}

int json_to_i64(const struct json *node, long long *out)
{
    if (!node)
        return 0;
    if (node->type == JSON_BOOL) {
        *out = node->boolean ? 1 : 0;
        return 1;
    }
    if (node->type != JSON_NUMBER)
        return 0;
    if (node->is_integer && node->magnitude <= 9223372036854775807ULL)
        *out = node->negative ? -(long long)node->magnitude : (long long)node->magnitude;
    else
        *out = (long long)trunc(node->number);
    return 1;
}

/* A small JSON reader for the simulated NVML's scenario files: parse a whole document into a
 * tree, look fields up by name, free the tree. No third-party code, no global state. */
#ifndef FAKE_NVML_JSON_H
#define FAKE_NVML_JSON_H

#include <stddef.h>

enum json_type { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT };

struct json {
    enum json_type type;
    int boolean;                /* JSON_BOOL */
    double number;              /* JSON_NUMBER, always set */
    int is_integer;             /* JSON_NUMBER written without fraction or exponent */
    int negative;               /* JSON_NUMBER below zero */
    unsigned long long magnitude; /* JSON_NUMBER integer: absolute value, exact up to 2^64-1 */
    char *string;               /* JSON_STRING, NUL-terminated UTF-8 */
    size_t count;               /* JSON_ARRAY / JSON_OBJECT: number of items */
    struct json **items;        /* JSON_ARRAY / JSON_OBJECT values */
    char **keys;                /* JSON_OBJECT keys, parallel to items */
};

/* Parse text[0..len). Returns the tree, or NULL with a message (line and column) in err. */
struct json *json_parse(const char *text, size_t len, char *err, size_t err_len);
void json_free(struct json *node);

/* Object member by key; NULL when node is not an object or has no such key. */
const struct json *json_get(const struct json *object, const char *key);
/* True for a missing member and for an explicit null. */
int json_is_null(const struct json *node);
/* Non-negative integral value (booleans count as 0/1; fractions are truncated). */
int json_to_u64(const struct json *node, unsigned long long *out);
int json_to_i64(const struct json *node, long long *out);

#endif

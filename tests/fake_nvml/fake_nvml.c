/* Simulated NVML for rigwatch's tests: a libnvidia-ml.so.1 that answers NVML's C API from a
 * JSON scenario file (FAKE_NVML_SCENARIO) instead of a GPU. The real pynvml loads it through
 * its normal search when LD_LIBRARY_PATH points here. See README.md for the scenario format
 * and the semantics of errors, hangs, lost cards and Xid events. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "json.h"
#include "nvml_types.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_DEVICES 64
#define UUID_LEN 96
#define RELOAD_CHECK_NS 100000000LL   /* look at the scenario file at most every 100 ms */
#define EVENT_POLL_MS 50              /* how often a blocked event wait re-reads the scenario */
#define PCIE_SAMPLE_MS 20             /* the real call samples the link for about this long */
#define EVENT_SET_MAGIC 0x45564e54u

/* ---------------------------------------------------------------------------------------
 * State. Everything below is guarded by g_lock; sleeps (hang_ms, event waits, the PCIe
 * sample) happen with the lock released so one slow call never blocks another thread. */

struct fake_device {
    char uuid[UUID_LEN]; /* identity captured at init; empty: matched by list position */
    unsigned position;   /* index in the device list at init */
    int lost_latched;    /* set once the card reads as lost; cleared by re-initialisation */
};

struct xid_cursor {
    char key[UUID_LEN];
    size_t delivered; /* how many of the card's xid_events this process has seen */
};

struct registration {
    unsigned slot;
    unsigned long long mask;
};

struct fake_event_set {
    unsigned magic;
    unsigned count;
    struct registration regs[MAX_DEVICES];
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_refcount;                       /* nvmlInit minus nvmlShutdown */
static struct fake_device g_slots[MAX_DEVICES];
static unsigned g_slot_count;                /* devices enumerated at the last init */
static const struct json *g_slot_dev[MAX_DEVICES]; /* each slot's entry in g_scenario */
static struct json *g_scenario;              /* last scenario that parsed */
static char g_path[4096];
static long long g_last_check_ns = -1;
static struct xid_cursor g_xid[MAX_DEVICES * 4];
static unsigned g_xid_count;

/* What the scenario file looked like when last read: a change to any of these re-parses. */
static struct {
    int valid;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    struct timespec ctime;
    int stat_errno;
} g_seen;

static void lock(void) { pthread_mutex_lock(&g_lock); }
static void unlock(void) { pthread_mutex_unlock(&g_lock); }

static void log_line(const char *fmt, ...)
{
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fake-nvml: %s\n", buf);
    fflush(stderr);
}

static long long monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static void sleep_ms(unsigned long long ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

/* ---------------------------------------------------------------------------------------
 * Scenario loading */

static const struct json *scenario_devices(void)
{
    const struct json *devices = json_get(g_scenario, "devices");
    return devices && devices->type == JSON_ARRAY ? devices : NULL;
}

static const char *device_uuid(const struct json *dev)
{
    const struct json *uuid = json_get(dev, "uuid");
    return uuid && uuid->type == JSON_STRING ? uuid->string : NULL;
}

/* Points every enumerated slot at its card in the current scenario (NULL: card gone). */
static void resolve_slots(void)
{
    const struct json *devices = scenario_devices();
    for (unsigned i = 0; i < g_slot_count; i++) {
        g_slot_dev[i] = NULL;
        if (!devices)
            continue;
        if (g_slots[i].uuid[0]) {
            for (size_t j = 0; j < devices->count; j++) {
                const char *uuid = device_uuid(devices->items[j]);
                if (uuid && strcmp(uuid, g_slots[i].uuid) == 0) {
                    g_slot_dev[i] = devices->items[j];
                    break;
                }
            }
        } else if (g_slots[i].position < devices->count) {
            g_slot_dev[i] = devices->items[g_slots[i].position];
        }
    }
}

static const char *type_name(enum json_type t)
{
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return names[t];
}

/* Warns (does not reject) when a known field has a type the library cannot use: the call that
 * reads it then answers NOT_SUPPORTED, which would otherwise be a silent surprise. */
static void check_field(int dev, const struct json *obj, const char *key, enum json_type want)
{
    const struct json *v = json_get(obj, key);
    if (json_is_null(v) || v->type == want || (want == JSON_NUMBER && v->type == JSON_BOOL))
        return;
    log_line("scenario: device %d field \"%s\" has type %s, expected %s; its call answers "
             "NOT_SUPPORTED", dev, key, type_name(v->type), type_name(want));
}

static void validate_scenario(const struct json *root)
{
    static const char *numbers[] = {
        "temperature_c", "temperature_slowdown_c", "temperature_shutdown_c",
        "memory_temperature_c", "power_mw", "power_limit_mw", "energy_mj",
        "utilization_gpu_percent", "utilization_memory_percent", "encoder_percent",
        "decoder_percent", "memory_total_bytes", "memory_used_bytes", "pstate",
        "clock_event_reasons", "recovery_action", NULL};
    static const char *objects[] = {"clocks_mhz", "max_clocks_mhz", "pcie", "ecc",
                                    "remapped_rows", "errors", "hang_ms", NULL};
    static const char *arrays[] = {"fan_speeds_percent", "processes", "xid_events", NULL};
    static const char *strings[] = {"name", "uuid", "pci_bus_id", "serial", NULL};
    const struct json *devices = json_get(root, "devices");
    if (!json_is_null(devices) && devices->type != JSON_ARRAY) {
        log_line("scenario: \"devices\" has type %s, expected array; no devices",
                 type_name(devices->type));
        return;
    }
    for (size_t i = 0; devices && i < devices->count; i++) {
        const struct json *dev = devices->items[i];
        if (dev->type != JSON_OBJECT) {
            log_line("scenario: device %zu has type %s, expected object", i, type_name(dev->type));
            continue;
        }
        for (int k = 0; numbers[k]; k++)
            check_field((int)i, dev, numbers[k], JSON_NUMBER);
        for (int k = 0; objects[k]; k++)
            check_field((int)i, dev, objects[k], JSON_OBJECT);
        for (int k = 0; arrays[k]; k++)
            check_field((int)i, dev, arrays[k], JSON_ARRAY);
        for (int k = 0; strings[k]; k++)
            check_field((int)i, dev, strings[k], JSON_STRING);
    }
}

static int same_time(struct timespec a, struct timespec b)
{
    return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

/* Re-reads the scenario when the file changed (at most every 100 ms unless forced). A file
 * that cannot be read or parsed keeps the last good state and is reported once. */
static void reload_if_changed(int force)
{
    long long now = monotonic_ns();
    if (!force && g_last_check_ns >= 0 && now - g_last_check_ns < RELOAD_CHECK_NS)
        return;
    g_last_check_ns = now;
    if (force || !g_path[0]) {
        const char *env = getenv("FAKE_NVML_SCENARIO");
        if (!env || !env[0]) {
            if (g_path[0] || !g_seen.stat_errno)
                log_line("FAKE_NVML_SCENARIO is not set: no driver to simulate");
            g_path[0] = '\0';
            g_seen.stat_errno = -1;
            return;
        }
        if (strcmp(env, g_path) != 0) {
            copy_str(g_path, sizeof g_path, env);
            g_seen.valid = 0;
        }
    }
    struct stat st;
    if (stat(g_path, &st) != 0) {
        if (g_seen.stat_errno != errno)
            log_line("cannot stat scenario %s: %s (keeping the last good state)", g_path,
                     strerror(errno));
        g_seen.stat_errno = errno;
        return;
    }
    g_seen.stat_errno = 0;
    if (g_seen.valid && g_seen.dev == st.st_dev && g_seen.ino == st.st_ino &&
        g_seen.size == st.st_size && same_time(g_seen.mtime, st.st_mtim) &&
        same_time(g_seen.ctime, st.st_ctim))
        return;
    g_seen.valid = 1;
    g_seen.dev = st.st_dev;
    g_seen.ino = st.st_ino;
    g_seen.size = st.st_size;
    g_seen.mtime = st.st_mtim;
    g_seen.ctime = st.st_ctim;

    FILE *f = fopen(g_path, "rb");
    if (!f) {
        log_line("cannot open scenario %s: %s (keeping the last good state)", g_path,
                 strerror(errno));
        return;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *text = malloc(cap);
    while (text) {
        if (len == cap) {
            char *bigger = realloc(text, cap * 2);
            if (!bigger) {
                free(text);
                text = NULL;
                break;
            }
            text = bigger;
            cap *= 2;
        }
        size_t n = fread(text + len, 1, cap - len, f);
        if (n == 0)
            break;
        len += n;
    }
    fclose(f);
    if (!text) {
        log_line("out of memory reading scenario %s", g_path);
        return;
    }
    char err[300];
    struct json *root = json_parse(text, len, err, sizeof err);
    free(text);
    if (!root) {
        log_line("scenario %s does not parse (%s); keeping the last good state", g_path, err);
        return;
    }
    if (root->type != JSON_OBJECT) {
        log_line("scenario %s is not a JSON object; keeping the last good state", g_path);
        json_free(root);
        return;
    }
    validate_scenario(root);
    json_free(g_scenario);
    g_scenario = root;
    resolve_slots();
}

/* ---------------------------------------------------------------------------------------
 * Error names, function-name keys, per-call gates */

static const struct {
    const char *name;
    nvmlReturn_t code;
    const char *text;
} k_errors[] = {
    {"SUCCESS", NVML_SUCCESS, "Success"},
    {"UNINITIALIZED", NVML_ERROR_UNINITIALIZED, "Uninitialized"},
    {"INVALID_ARGUMENT", NVML_ERROR_INVALID_ARGUMENT, "Invalid Argument"},
    {"NOT_SUPPORTED", NVML_ERROR_NOT_SUPPORTED, "Not Supported"},
    {"NO_PERMISSION", NVML_ERROR_NO_PERMISSION, "Insufficient Permissions"},
    {"ALREADY_INITIALIZED", NVML_ERROR_ALREADY_INITIALIZED, "Already Initialized"},
    {"NOT_FOUND", NVML_ERROR_NOT_FOUND, "Not Found"},
    {"INSUFFICIENT_SIZE", NVML_ERROR_INSUFFICIENT_SIZE, "Insufficient Size"},
    {"INSUFFICIENT_POWER", NVML_ERROR_INSUFFICIENT_POWER, "Insufficient External Power"},
    {"DRIVER_NOT_LOADED", NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded"},
    {"TIMEOUT", NVML_ERROR_TIMEOUT, "Timeout"},
    {"IRQ_ISSUE", NVML_ERROR_IRQ_ISSUE, "Interrupt Request Issue"},
    {"LIBRARY_NOT_FOUND", NVML_ERROR_LIBRARY_NOT_FOUND, "NVML Shared Library Not Found"},
    {"FUNCTION_NOT_FOUND", NVML_ERROR_FUNCTION_NOT_FOUND, "Function Not Found"},
    {"CORRUPTED_INFOROM", NVML_ERROR_CORRUPTED_INFOROM, "Corrupted infoROM"},
    {"GPU_IS_LOST", NVML_ERROR_GPU_IS_LOST, "GPU is lost"},
    {"RESET_REQUIRED", NVML_ERROR_RESET_REQUIRED, "GPU requires restart"},
    {"OPERATING_SYSTEM", NVML_ERROR_OPERATING_SYSTEM, "The operating system has blocked the request."},
    {"LIB_RM_VERSION_MISMATCH", NVML_ERROR_LIB_RM_VERSION_MISMATCH, "RM has detected an NVML/RM version mismatch."},
    {"IN_USE", NVML_ERROR_IN_USE, "In use by another client"},
    {"MEMORY", NVML_ERROR_MEMORY, "Insufficient Memory"},
    {"NO_DATA", NVML_ERROR_NO_DATA, "No data"},
    {"VGPU_ECC_NOT_SUPPORTED", NVML_ERROR_VGPU_ECC_NOT_SUPPORTED, "ECC is not supported on vGPU"},
    {"INSUFFICIENT_RESOURCES", NVML_ERROR_INSUFFICIENT_RESOURCES, "Insufficient resources"},
    {"FREQ_NOT_SUPPORTED", NVML_ERROR_FREQ_NOT_SUPPORTED, "Frequency not supported"},
    {"ARGUMENT_VERSION_MISMATCH", NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "Argument version mismatch"},
    {"DEPRECATED", NVML_ERROR_DEPRECATED, "Deprecated"},
    {"NOT_READY", NVML_ERROR_NOT_READY, "Not ready"},
    {"GPU_NOT_FOUND", NVML_ERROR_GPU_NOT_FOUND, "GPU not found"},
    {"INVALID_STATE", NVML_ERROR_INVALID_STATE, "Invalid state"},
    {"RESET_TYPE_NOT_SUPPORTED", NVML_ERROR_RESET_TYPE_NOT_SUPPORTED, "Reset type not supported"},
    {"UNKNOWN", NVML_ERROR_UNKNOWN, "Unknown Error"},
};

/* An error named in a scenario ("NO_PERMISSION", "NVML_ERROR_NO_PERMISSION" or a number). */
static nvmlReturn_t error_from_json(const struct json *v)
{
    long long code;
    if (v && v->type == JSON_NUMBER && json_to_i64(v, &code))
        return (nvmlReturn_t)code;
    if (!v || v->type != JSON_STRING)
        return NVML_ERROR_UNKNOWN;
    const char *name = v->string;
    if (strncmp(name, "NVML_ERROR_", 11) == 0)
        name += 11;
    for (size_t i = 0; i < sizeof k_errors / sizeof k_errors[0]; i++) {
        if (strcasecmp(name, k_errors[i].name) == 0)
            return k_errors[i].code;
    }
    return NVML_ERROR_UNKNOWN;
}

/* The key form used for errors{} and hang_ms{}: version suffix dropped ("_v2"), and the old
 * "ClocksThrottleReasons" spelling folded into "ClocksEventReasons", so either name matches. */
static void canonical_name(const char *in, char *out, size_t cap)
{
    copy_str(out, cap, in);
    char *p = strstr(out, "ClocksThrottleReasons");
    if (p) {
        char rest[256];
        copy_str(rest, sizeof rest, p + strlen("ClocksThrottleReasons"));
        snprintf(p, cap - (size_t)(p - out), "ClocksEventReasons%s", rest);
    }
    size_t n = strlen(out);
    size_t i = n;
    while (i > 0 && out[i - 1] >= '0' && out[i - 1] <= '9')
        i--;
    if (i < n && i >= 2 && out[i - 1] == 'v' && out[i - 2] == '_')
        out[i - 2] = '\0';
}

/* The entry of table (errors{} or hang_ms{}) naming fn (already canonical), or NULL. */
static const struct json *lookup_fn(const struct json *table, const char *fn)
{
    if (!table || table->type != JSON_OBJECT)
        return NULL;
    char key[256];
    for (size_t i = table->count; i-- > 0;) {
        canonical_name(table->keys[i], key, sizeof key);
        if (strcmp(key, fn) == 0)
            return table->items[i];
    }
    return NULL;
}

static unsigned long long hang_for(const struct json *owner, const char *fn)
{
    unsigned long long ms = 0;
    const struct json *v = lookup_fn(json_get(owner, "hang_ms"), fn);
    if (!json_is_null(v) && !json_to_u64(v, &ms))
        ms = 0;
    return ms;
}

static nvmlReturn_t error_for(const struct json *owner, const char *fn)
{
    const struct json *v = lookup_fn(json_get(owner, "errors"), fn);
    if (json_is_null(v))
        return NVML_SUCCESS;
    return error_from_json(v);
}

static int is_true(const struct json *v)
{
    unsigned long long u;
    return v && (v->type == JSON_BOOL || v->type == JSON_NUMBER) && json_to_u64(v, &u) && u;
}

static int slot_of(nvmlDevice_t device)
{
    if (!device)
        return -1;
    uintptr_t p = (uintptr_t)device, base = (uintptr_t)g_slots;
    if (p < base || p >= base + sizeof g_slots || (p - base) % sizeof g_slots[0])
        return -1;
    unsigned idx = (unsigned)((p - base) / sizeof g_slots[0]);
    return idx < g_slot_count ? (int)idx : -1;
}

/* Takes the lock for a call. NVML_SUCCESS with the lock HELD (the scenario re-read if it
 * changed), or UNINITIALIZED with the lock released. */
static nvmlReturn_t lock_initialised(void)
{
    lock();
    if (g_refcount <= 0) {
        unlock();
        return NVML_ERROR_UNINITIALIZED;
    }
    reload_if_changed(0);
    return NVML_SUCCESS;
}

/* The scenario's hang_ms{} for fn under owner: sleeps with the lock released, then takes it
 * again as lock_initialised does (nvmlShutdown may have run meanwhile). */
static nvmlReturn_t wait_out_hang(const struct json *owner, const char *fn)
{
    unsigned long long hang = hang_for(owner, fn);
    if (!hang)
        return NVML_SUCCESS;
    unlock();
    sleep_ms(hang);
    return lock_initialised();
}

/* The scenario's errors{} for fn under owner; the lock stays HELD only when there is none. */
static nvmlReturn_t scripted_error(const struct json *owner, const char *fn)
{
    nvmlReturn_t err = error_for(owner, fn);
    if (err != NVML_SUCCESS)
        unlock();
    return err;
}

/* Gate for a per-device call. On success returns NVML_SUCCESS with the lock HELD and *dev set;
 * the caller answers and unlocks. Otherwise returns the error with the lock released.
 * Order: initialised, valid handle, hang (lock released), lost, errors{}. */
static nvmlReturn_t device_enter(nvmlDevice_t device, const char *fn, const struct json **dev,
                                 unsigned *index)
{
    nvmlReturn_t rc = lock_initialised();
    if (rc != NVML_SUCCESS)
        return rc;
    int slot = slot_of(device);
    if (slot < 0) {
        unlock();
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    rc = wait_out_hang(g_slot_dev[slot], fn);
    if (rc != NVML_SUCCESS)
        return rc;
    const struct json *d = g_slot_dev[slot];
    if (!d || is_true(json_get(d, "lost")))
        g_slots[slot].lost_latched = 1;
    if (g_slots[slot].lost_latched) {
        unlock();
        return NVML_ERROR_GPU_IS_LOST;
    }
    rc = scripted_error(d, fn);
    if (rc != NVML_SUCCESS)
        return rc;
    *dev = d;
    *index = (unsigned)slot;
    return NVML_SUCCESS;
}

/* Gate for a system-wide call: top-level hang_ms{} and errors{} apply. Lock HELD on success. */
static nvmlReturn_t system_enter(const char *fn)
{
    nvmlReturn_t rc = lock_initialised();
    if (rc == NVML_SUCCESS)
        rc = wait_out_hang(g_scenario, fn);
    return rc == NVML_SUCCESS ? scripted_error(g_scenario, fn) : rc;
}

/* Answers rc from the calling function, releasing the lock. */
#define ANSWER(rc)   \
    do {             \
        unlock();    \
        return (rc); \
    } while (0)

/* Returns gate's error from the calling function; goes on (lock HELD) when it succeeded. */
#define GATE(gate)                   \
    do {                             \
        nvmlReturn_t gate_ = (gate); \
        if (gate_ != NVML_SUCCESS)   \
            return gate_;            \
    } while (0)

/* Opens a per-device call: the gate, then INVALID_ARGUMENT unless args_ok (the caller's
 * pointers and values are usable; 1 where the call checks them later). Declares dev (the
 * card's scenario entry) and dev_index. */
#define DEVICE_CALL(fn, args_ok)                        \
    const struct json *dev;                             \
    unsigned dev_index;                                 \
    GATE(device_enter(device, (fn), &dev, &dev_index)); \
    (void)dev_index;                                    \
    if (!(args_ok))                                     \
        ANSWER(NVML_ERROR_INVALID_ARGUMENT)

/* Opens a system-wide call the same way. */
#define SYSTEM_CALL(fn, args_ok) \
    GATE(system_enter(fn));      \
    if (!(args_ok))              \
        ANSWER(NVML_ERROR_INVALID_ARGUMENT)

/* Field readers: 0 when the field is absent, null or of the wrong type (NOT_SUPPORTED). */
static int u64_at(const struct json *obj, const char *key, unsigned long long *out)
{
    const struct json *v = json_get(obj, key);
    return !json_is_null(v) && json_to_u64(v, out);
}

static int u64_at2(const struct json *obj, const char *outer, const char *key,
                   unsigned long long *out)
{
    return u64_at(json_get(obj, outer), key, out);
}

static const char *str_at(const struct json *obj, const char *key)
{
    const struct json *v = json_get(obj, key);
    return v && v->type == JSON_STRING ? v->string : NULL;
}

/* Answers *out from obj's key, converted to *out's type; NOT_SUPPORTED when it is absent. */
#define ANSWER_U64(obj, key, out)             \
    do {                                      \
        unsigned long long value_;            \
        if (!u64_at((obj), (key), &value_))   \
            ANSWER(NVML_ERROR_NOT_SUPPORTED); \
        *(out) = value_;                      \
        ANSWER(NVML_SUCCESS);                 \
    } while (0)

static nvmlReturn_t put_string(char *buf, unsigned int length, const char *value)
{
    if (!buf)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(value) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buf, value, strlen(value) + 1);
    return NVML_SUCCESS;
}

/* One unsigned-int answer from a device field (or a field of a nested object). */
static nvmlReturn_t uint_field(nvmlDevice_t device, const char *fn, const char *outer,
                               const char *key, unsigned int *out)
{
    DEVICE_CALL(fn, out);
    ANSWER_U64(outer ? json_get(dev, outer) : dev, key, out);
}

/* ---------------------------------------------------------------------------------------
 * Init, shutdown, errors */

static nvmlReturn_t do_init(void)
{
    lock();
    if (g_refcount > 0) {
        g_refcount++;
        unlock();
        return NVML_SUCCESS;
    }
    reload_if_changed(1);
    if (!g_scenario) {
        unlock();
        return NVML_ERROR_DRIVER_NOT_LOADED;
    }
    const struct json *init_error = json_get(g_scenario, "init_error");
    if (!json_is_null(init_error)) {
        nvmlReturn_t err = error_from_json(init_error);
        if (err != NVML_SUCCESS) {
            unlock();
            return err;
        }
    }
    unsigned long long hang = hang_for(g_scenario, "nvmlInit");
    if (hang) {
        unlock();
        sleep_ms(hang);
        lock();
        if (g_refcount > 0) {
            g_refcount++;
            unlock();
            return NVML_SUCCESS;
        }
    }
    /* Enumerate: the device list as it is now fixes the count and the index of each card
     * until the next init, and clears every "lost" latch. */
    const struct json *devices = scenario_devices();
    g_slot_count = 0;
    for (size_t i = 0; devices && i < devices->count && g_slot_count < MAX_DEVICES; i++) {
        /* A card on the bus that the driver never brought up: NVML does not count it. */
        if (is_true(json_get(devices->items[i], "uncounted")))
            continue;
        struct fake_device *slot = &g_slots[g_slot_count++];
        copy_str(slot->uuid, sizeof slot->uuid, device_uuid(devices->items[i]));
        slot->position = (unsigned)i;
        slot->lost_latched = 0;
    }
    if (devices && devices->count > MAX_DEVICES)
        log_line("scenario lists %zu devices; only the first %d exist", devices->count,
                 MAX_DEVICES);
    resolve_slots();
    g_refcount = 1;
    unlock();
    return NVML_SUCCESS;
}

EXPORT nvmlReturn_t nvmlInit_v2(void) { return do_init(); }
EXPORT nvmlReturn_t nvmlInit(void) { return do_init(); }
EXPORT nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    (void)flags;
    return do_init();
}

EXPORT nvmlReturn_t nvmlShutdown(void)
{
    lock();
    if (g_refcount <= 0) {
        unlock();
        return NVML_ERROR_UNINITIALIZED;
    }
    g_refcount--;
    unlock();
    return NVML_SUCCESS;
}

EXPORT const char *nvmlErrorString(nvmlReturn_t result)
{
    for (size_t i = 0; i < sizeof k_errors / sizeof k_errors[0]; i++) {
        if (k_errors[i].code == result)
            return k_errors[i].text;
    }
    return "Unknown Error";
}

/* ---------------------------------------------------------------------------------------
 * System queries */

EXPORT nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    SYSTEM_CALL("nvmlSystemGetDriverVersion", 1);
    const char *v = str_at(g_scenario, "driver_version");
    if (!v)
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    ANSWER(put_string(version, length, v));
}

static nvmlReturn_t cuda_version(const char *fn, int *out)
{
    SYSTEM_CALL(fn, out);
    long long v;
    const struct json *node = json_get(g_scenario, "cuda_driver_version");
    if (json_is_null(node) || !json_to_i64(node, &v))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *out = (int)v;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v)
{
    return cuda_version("nvmlSystemGetCudaDriverVersion", v);
}
EXPORT nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v)
{
    return cuda_version("nvmlSystemGetCudaDriverVersion", v);
}

/* NVML's own version string is the CUDA major version followed by the driver version. */
EXPORT nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    SYSTEM_CALL("nvmlSystemGetNVMLVersion", 1);
    const char *explicit_version = str_at(g_scenario, "nvml_version");
    if (explicit_version)
        ANSWER(put_string(version, length, explicit_version));
    const char *driver = str_at(g_scenario, "driver_version");
    long long cuda = 0;
    if (!driver || !json_to_i64(json_get(g_scenario, "cuda_driver_version"), &cuda))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    char buf[128];
    snprintf(buf, sizeof buf, "%lld.%s", cuda / 1000, driver);
    ANSWER(put_string(version, length, buf));
}

EXPORT nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length)
{
    SYSTEM_CALL("nvmlSystemGetProcessName", name && length != 0);
    char path[64], comm[256] = "";
    snprintf(path, sizeof path, "/proc/%u/comm", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        ANSWER(NVML_ERROR_NOT_FOUND);
    if (!fgets(comm, sizeof comm, f))
        comm[0] = '\0';
    fclose(f);
    comm[strcspn(comm, "\n")] = '\0';
    ANSWER(put_string(name, length, comm));
}

static nvmlReturn_t device_count(unsigned int *count)
{
    SYSTEM_CALL("nvmlDeviceGetCount", count);
    *count = g_slot_count;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) { return device_count(count); }
EXPORT nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return device_count(count); }

/* ---------------------------------------------------------------------------------------
 * Handles and identity */

static nvmlReturn_t handle_by_index(unsigned int index, nvmlDevice_t *out)
{
    GATE(lock_initialised());
    if (!out || index >= g_slot_count)
        ANSWER(NVML_ERROR_INVALID_ARGUMENT);
    unlock();
    nvmlDevice_t device = &g_slots[index];
    DEVICE_CALL("nvmlDeviceGetHandleByIndex", 1);
    *out = device;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *out)
{
    return handle_by_index(index, out);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *out)
{
    return handle_by_index(index, out);
}

/* Finds the slot whose card has the given string field equal to value; -1 when none. */
static int find_slot_by(const char *key, const char *value)
{
    for (unsigned i = 0; i < g_slot_count; i++) {
        const char *v = str_at(g_slot_dev[i], key);
        if (v && value && strcasecmp(v, value) == 0)
            return (int)i;
    }
    return -1;
}

static nvmlReturn_t handle_by(const char *key, const char *value, const char *fn,
                              nvmlDevice_t *out)
{
    GATE(lock_initialised());
    if (!out || !value)
        ANSWER(NVML_ERROR_INVALID_ARGUMENT);
    int slot = find_slot_by(key, value);
    if (slot < 0)
        ANSWER(NVML_ERROR_NOT_FOUND);
    unlock();
    nvmlDevice_t device = &g_slots[slot];
    DEVICE_CALL(fn, 1);
    *out = device;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *out)
{
    return handle_by("uuid", uuid, "nvmlDeviceGetHandleByUUID", out);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *bus_id, nvmlDevice_t *out)
{
    return handle_by("pci_bus_id", bus_id, "nvmlDeviceGetHandleByPciBusId", out);
}
EXPORT nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *bus_id, nvmlDevice_t *out)
{
    return handle_by("pci_bus_id", bus_id, "nvmlDeviceGetHandleByPciBusId", out);
}

static nvmlReturn_t string_field(nvmlDevice_t device, const char *fn, const char *key, char *buf,
                                 unsigned int length)
{
    DEVICE_CALL(fn, 1);
    const char *v = str_at(dev, key);
    if (!v)
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    ANSWER(put_string(buf, length, v));
}

EXPORT nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    return string_field(device, "nvmlDeviceGetName", "name", name, length);
}
EXPORT nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    return string_field(device, "nvmlDeviceGetUUID", "uuid", uuid, length);
}
EXPORT nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length)
{
    return string_field(device, "nvmlDeviceGetSerial", "serial", serial, length);
}

EXPORT nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    DEVICE_CALL("nvmlDeviceGetIndex", index);
    *index = dev_index;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minor)
{
    DEVICE_CALL("nvmlDeviceGetMinorNumber", minor);
    unsigned long long v;
    *minor = u64_at(dev, "minor_number", &v) ? (unsigned)v : dev_index;
    ANSWER(NVML_SUCCESS);
}

/* "DDDDDDDD:BB:DD.F" (domain may have fewer digits) into its numeric parts. */
static int parse_bus_id(const char *s, unsigned *domain, unsigned *bus, unsigned *dev,
                        unsigned *fn)
{
    return s && sscanf(s, "%x:%x:%x.%x", domain, bus, dev, fn) == 4;
}

static nvmlReturn_t pci_info(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    DEVICE_CALL("nvmlDeviceGetPciInfo", pci);
    const char *bus_id = str_at(dev, "pci_bus_id");
    unsigned domain, bus, slot, function;
    if (!parse_bus_id(bus_id, &domain, &bus, &slot, &function))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    memset(pci, 0, sizeof *pci);
    pci->domain = domain;
    pci->bus = bus;
    pci->device = slot;
    unsigned long long v;
    pci->pciDeviceId = u64_at(dev, "pci_device_id", &v) ? (unsigned)v : 0x268410DEu;
    pci->pciSubSystemId = u64_at(dev, "pci_subsystem_id", &v) ? (unsigned)v : 0;
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.%X", domain & 0xFFFF,
             bus, slot, function);
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%X", domain, bus, slot, function);
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    return pci_info(device, pci);
}
EXPORT nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci)
{
    return pci_info(device, pci);
}

/* ---------------------------------------------------------------------------------------
 * Temperatures, fans */

EXPORT nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensor,
                                             unsigned int *temp)
{
    DEVICE_CALL("nvmlDeviceGetTemperature", temp && sensor == NVML_TEMPERATURE_GPU);
    ANSWER_U64(dev, "temperature_c", temp);
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_v1_t *temp)
{
    DEVICE_CALL("nvmlDeviceGetTemperatureV", temp);
    if (temp->version != nvmlTemperature_v1)
        ANSWER(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    if (temp->sensorType != NVML_TEMPERATURE_GPU)
        ANSWER(NVML_ERROR_INVALID_ARGUMENT);
    long long v;
    const struct json *node = json_get(dev, "temperature_c");
    if (json_is_null(node) || !json_to_i64(node, &v))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    temp->temperature = (int)v;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device,
                                                      nvmlTemperatureThresholds_t which,
                                                      unsigned int *temp)
{
    DEVICE_CALL("nvmlDeviceGetTemperatureThreshold", temp);
    const char *key;
    switch (which) {
    case NVML_TEMPERATURE_THRESHOLD_SHUTDOWN: key = "temperature_shutdown_c"; break;
    case NVML_TEMPERATURE_THRESHOLD_SLOWDOWN: key = "temperature_slowdown_c"; break;
    case NVML_TEMPERATURE_THRESHOLD_MEM_MAX: key = "temperature_memory_max_c"; break;
    case NVML_TEMPERATURE_THRESHOLD_GPU_MAX: key = "temperature_gpu_max_c"; break;
    default:
        if ((unsigned)which >= 8)
            ANSWER(NVML_ERROR_INVALID_ARGUMENT);
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    }
    ANSWER_U64(dev, key, temp);
}

static const struct json *fan_list(const struct json *dev)
{
    const struct json *fans = json_get(dev, "fan_speeds_percent");
    return fans && fans->type == JSON_ARRAY ? fans : NULL;
}

EXPORT nvmlReturn_t nvmlDeviceGetNumFans(nvmlDevice_t device, unsigned int *count)
{
    DEVICE_CALL("nvmlDeviceGetNumFans", count);
    const struct json *fans = fan_list(dev);
    if (!fans)
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *count = (unsigned)fans->count;
    ANSWER(NVML_SUCCESS);
}

static nvmlReturn_t fan_speed(nvmlDevice_t device, unsigned int fan, unsigned int *speed,
                              int check_range)
{
    DEVICE_CALL("nvmlDeviceGetFanSpeed", speed);
    const struct json *fans = fan_list(dev);
    if (!fans)
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    if (fan >= fans->count)
        ANSWER(check_range ? NVML_ERROR_INVALID_ARGUMENT : NVML_ERROR_NOT_SUPPORTED);
    unsigned long long v;
    if (json_is_null(fans->items[fan]) || !json_to_u64(fans->items[fan], &v))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *speed = (unsigned)v;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed)
{
    return fan_speed(device, 0, speed, 0);
}
EXPORT nvmlReturn_t nvmlDeviceGetFanSpeed_v2(nvmlDevice_t device, unsigned int fan,
                                             unsigned int *speed)
{
    return fan_speed(device, fan, speed, 1);
}

/* ---------------------------------------------------------------------------------------
 * Power and energy */

EXPORT nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *mw)
{
    return uint_field(device, "nvmlDeviceGetPowerUsage", NULL, "power_mw", mw);
}
EXPORT nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *mw)
{
    return uint_field(device, "nvmlDeviceGetEnforcedPowerLimit", NULL, "power_limit_mw", mw);
}
EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *mw)
{
    return uint_field(device, "nvmlDeviceGetPowerManagementLimit", NULL, "power_limit_mw", mw);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t device,
                                                             unsigned int *mw)
{
    DEVICE_CALL("nvmlDeviceGetPowerManagementDefaultLimit", mw);
    unsigned long long v;
    if (!u64_at(dev, "power_default_limit_mw", &v) && !u64_at(dev, "power_limit_mw", &v))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *mw = (unsigned)v;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device,
                                                                 unsigned int *min_mw,
                                                                 unsigned int *max_mw)
{
    DEVICE_CALL("nvmlDeviceGetPowerManagementLimitConstraints", min_mw && max_mw);
    unsigned long long lo, hi;
    if (!u64_at(dev, "power_min_limit_mw", &lo) || !u64_at(dev, "power_max_limit_mw", &hi))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *min_mw = (unsigned)lo;
    *max_mw = (unsigned)hi;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPowerManagementMode(nvmlDevice_t device,
                                                     nvmlEnableState_t *mode)
{
    DEVICE_CALL("nvmlDeviceGetPowerManagementMode", mode);
    unsigned long long v;
    *mode = u64_at(dev, "power_limit_mw", &v) ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device,
                                                        unsigned long long *mj)
{
    DEVICE_CALL("nvmlDeviceGetTotalEnergyConsumption", mj);
    ANSWER_U64(dev, "energy_mj", mj);
}

/* ---------------------------------------------------------------------------------------
 * Utilisation and memory */

EXPORT nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *util)
{
    DEVICE_CALL("nvmlDeviceGetUtilizationRates", util);
    unsigned long long gpu, mem;
    if (!u64_at(dev, "utilization_gpu_percent", &gpu) ||
        !u64_at(dev, "utilization_memory_percent", &mem))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    util->gpu = (unsigned)gpu;
    util->memory = (unsigned)mem;
    ANSWER(NVML_SUCCESS);
}

/* The sampling periods real cards report for the codec engines, in microseconds. */
#define CODEC_SAMPLING_PERIOD_US 167000u

static nvmlReturn_t codec_util(nvmlDevice_t device, const char *fn, const char *key,
                               unsigned int *util, unsigned int *period_us)
{
    DEVICE_CALL(fn, util && period_us);
    unsigned long long v;
    if (!u64_at(dev, key, &v))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *util = (unsigned)v;
    *period_us = CODEC_SAMPLING_PERIOD_US;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetEncoderUtilization(nvmlDevice_t device, unsigned int *util,
                                                    unsigned int *period_us)
{
    return codec_util(device, "nvmlDeviceGetEncoderUtilization", "encoder_percent", util,
                      period_us);
}
EXPORT nvmlReturn_t nvmlDeviceGetDecoderUtilization(nvmlDevice_t device, unsigned int *util,
                                                    unsigned int *period_us)
{
    return codec_util(device, "nvmlDeviceGetDecoderUtilization", "decoder_percent", util,
                      period_us);
}

static int memory_values(const struct json *dev, unsigned long long *total,
                         unsigned long long *used)
{
    if (!u64_at(dev, "memory_total_bytes", total) || !u64_at(dev, "memory_used_bytes", used))
        return 0;
    if (*used > *total)
        *used = *total;
    return 1;
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    DEVICE_CALL("nvmlDeviceGetMemoryInfo", memory);
    unsigned long long total, used;
    if (!memory_values(dev, &total, &used))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    /* As real drivers answer the first version: the memory the driver reserves counts as used
     * (an idle H200 reads 615 MiB used here and 0 through _v2 and nvidia-smi). */
    unsigned long long reserved = 0;
    if (u64_at(dev, "memory_reserved_bytes", &reserved) && reserved > total - used)
        reserved = total - used;
    memory->total = total;
    memory->used = used + reserved;
    memory->free = total - used - reserved;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    DEVICE_CALL("nvmlDeviceGetMemoryInfo", memory);
    unsigned long long has_v2 = 1;
    if (u64_at(dev, "memory_info_v2", &has_v2) && !has_v2)
        ANSWER(NVML_ERROR_FUNCTION_NOT_FOUND); /* a driver from before the second version */
    if (memory->version != nvmlMemory_v2)
        ANSWER(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    unsigned long long total, used;
    if (!memory_values(dev, &total, &used))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    unsigned long long reserved = 0;
    if (u64_at(dev, "memory_reserved_bytes", &reserved) && reserved > total - used)
        reserved = total - used;
    memory->total = total;
    memory->reserved = reserved;
    memory->used = used;
    memory->free = total - used - reserved;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetBAR1MemoryInfo(nvmlDevice_t device, nvmlBAR1Memory_t *bar1)
{
    DEVICE_CALL("nvmlDeviceGetBAR1MemoryInfo", bar1);
    unsigned long long total, used;
    if (!u64_at(dev, "bar1_total_bytes", &total) || !u64_at(dev, "bar1_used_bytes", &used))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    if (used > total)
        used = total;
    bar1->total = total;
    bar1->used = used;
    bar1->free = total - used;
    ANSWER(NVML_SUCCESS);
}

/* ---------------------------------------------------------------------------------------
 * Clocks, performance state, clock event reasons */

static const char *clock_key(nvmlClockType_t type)
{
    switch (type) {
    case NVML_CLOCK_GRAPHICS: return "graphics";
    case NVML_CLOCK_SM: return "sm";
    case NVML_CLOCK_MEM: return "memory";
    case NVML_CLOCK_VIDEO: return "video";
    default: return NULL;
    }
}

static nvmlReturn_t clock_from(nvmlDevice_t device, const char *fn, const char *table,
                               nvmlClockType_t type, unsigned int *mhz)
{
    const char *key = clock_key(type);
    DEVICE_CALL(fn, mhz && key);
    ANSWER_U64(json_get(dev, table), key, mhz);
}

EXPORT nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, nvmlClockType_t type,
                                           unsigned int *mhz)
{
    return clock_from(device, "nvmlDeviceGetClockInfo", "clocks_mhz", type, mhz);
}
EXPORT nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, nvmlClockType_t type,
                                              unsigned int *mhz)
{
    return clock_from(device, "nvmlDeviceGetMaxClockInfo", "max_clocks_mhz", type, mhz);
}
EXPORT nvmlReturn_t nvmlDeviceGetClock(nvmlDevice_t device, nvmlClockType_t type,
                                       nvmlClockId_t id, unsigned int *mhz)
{
    if (id == NVML_CLOCK_ID_CURRENT)
        return clock_from(device, "nvmlDeviceGetClock", "clocks_mhz", type, mhz);
    if (id == NVML_CLOCK_ID_CUSTOMER_BOOST_MAX)
        return clock_from(device, "nvmlDeviceGetClock", "max_clocks_mhz", type, mhz);
    DEVICE_CALL("nvmlDeviceGetClock", 1);
    ANSWER((unsigned)id > 3 ? NVML_ERROR_INVALID_ARGUMENT : NVML_ERROR_NOT_SUPPORTED);
}

static nvmlReturn_t pstate(nvmlDevice_t device, const char *fn, nvmlPstates_t *state)
{
    DEVICE_CALL(fn, state);
    ANSWER_U64(dev, "pstate", state);
}

EXPORT nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, nvmlPstates_t *state)
{
    return pstate(device, "nvmlDeviceGetPerformanceState", state);
}
EXPORT nvmlReturn_t nvmlDeviceGetPowerState(nvmlDevice_t device, nvmlPstates_t *state)
{
    return pstate(device, "nvmlDeviceGetPowerState", state);
}

/* Every reason bit NVML defines up to display clocks (0x1 .. 0x100). */
#define ALL_CLOCK_EVENT_REASONS 0x1FFULL

static nvmlReturn_t event_reasons(nvmlDevice_t device, const char *fn, int supported,
                                  unsigned long long *reasons)
{
    DEVICE_CALL(fn, reasons);
    unsigned long long v;
    if (!u64_at(dev, "clock_event_reasons", &v))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    if (supported && !u64_at(dev, "supported_clock_event_reasons", &v))
        v = ALL_CLOCK_EVENT_REASONS;
    *reasons = v;
    ANSWER(NVML_SUCCESS);
}

/* Each query under its name and under the older ...ThrottleReasons one (the same call, which
 * drivers still export); errors and hangs are set up under the EventReasons name. */
#define EVENT_REASONS(name, fn, supported)                                              \
    EXPORT nvmlReturn_t name(nvmlDevice_t device, unsigned long long *reasons)          \
    {                                                                                   \
        return event_reasons(device, fn, supported, reasons);                           \
    }
EVENT_REASONS(nvmlDeviceGetCurrentClocksEventReasons, "nvmlDeviceGetCurrentClocksEventReasons", 0)
EVENT_REASONS(nvmlDeviceGetCurrentClocksThrottleReasons, "nvmlDeviceGetCurrentClocksEventReasons", 0)
EVENT_REASONS(nvmlDeviceGetSupportedClocksEventReasons, "nvmlDeviceGetSupportedClocksEventReasons", 1)
EVENT_REASONS(nvmlDeviceGetSupportedClocksThrottleReasons, "nvmlDeviceGetSupportedClocksEventReasons",
              1)

/* ---------------------------------------------------------------------------------------
 * PCIe */

EXPORT nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t device, unsigned int *gen)
{
    return uint_field(device, "nvmlDeviceGetCurrPcieLinkGeneration", "pcie", "gen", gen);
}
EXPORT nvmlReturn_t nvmlDeviceGetMaxPcieLinkGeneration(nvmlDevice_t device, unsigned int *gen)
{
    return uint_field(device, "nvmlDeviceGetMaxPcieLinkGeneration", "pcie", "max_gen", gen);
}
EXPORT nvmlReturn_t nvmlDeviceGetGpuMaxPcieLinkGeneration(nvmlDevice_t device,
                                                          unsigned int *gen)
{
    return uint_field(device, "nvmlDeviceGetGpuMaxPcieLinkGeneration", "pcie", "max_gen", gen);
}
EXPORT nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t device, unsigned int *width)
{
    return uint_field(device, "nvmlDeviceGetCurrPcieLinkWidth", "pcie", "width", width);
}
EXPORT nvmlReturn_t nvmlDeviceGetMaxPcieLinkWidth(nvmlDevice_t device, unsigned int *width)
{
    return uint_field(device, "nvmlDeviceGetMaxPcieLinkWidth", "pcie", "max_width", width);
}
EXPORT nvmlReturn_t nvmlDeviceGetPcieReplayCounter(nvmlDevice_t device, unsigned int *count)
{
    return uint_field(device, "nvmlDeviceGetPcieReplayCounter", "pcie", "replay_counter",
                      count);
}

/* Like the real call, this samples the link: it takes about 20 ms (lock released). */
EXPORT nvmlReturn_t nvmlDeviceGetPcieThroughput(nvmlDevice_t device,
                                                nvmlPcieUtilCounter_t counter,
                                                unsigned int *kbps)
{
    const char *key = counter == NVML_PCIE_UTIL_TX_BYTES   ? "tx_kbps"
                      : counter == NVML_PCIE_UTIL_RX_BYTES ? "rx_kbps"
                                                           : NULL;
    DEVICE_CALL("nvmlDeviceGetPcieThroughput", kbps && key);
    unsigned long long v;
    if (!u64_at2(dev, "pcie", key, &v))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    unlock();
    sleep_ms(PCIE_SAMPLE_MS);
    *kbps = (unsigned)v;
    return NVML_SUCCESS;
}

/* ---------------------------------------------------------------------------------------
 * ECC and row remapping */

EXPORT nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t device, nvmlEnableState_t *current,
                                         nvmlEnableState_t *pending)
{
    DEVICE_CALL("nvmlDeviceGetEccMode", current && pending);
    const struct json *ecc = json_get(dev, "ecc");
    if (!ecc || ecc->type != JSON_OBJECT)
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *current = NVML_FEATURE_ENABLED;
    *pending = NVML_FEATURE_ENABLED;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device,
                                                nvmlMemoryErrorType_t error_type,
                                                nvmlEccCounterType_t counter_type,
                                                unsigned long long *count)
{
    DEVICE_CALL("nvmlDeviceGetTotalEccErrors",
                count && (unsigned)error_type <= 1 && (unsigned)counter_type <= 1);
    static const char *keys[2][2] = {{"corrected_volatile", "corrected_aggregate"},
                                     {"uncorrected_volatile", "uncorrected_aggregate"}};
    ANSWER_U64(json_get(dev, "ecc"), keys[error_type][counter_type], count);
}

EXPORT nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corr,
                                              unsigned int *unc, unsigned int *pending,
                                              unsigned int *failure)
{
    DEVICE_CALL("nvmlDeviceGetRemappedRows", corr && unc && pending && failure);
    unsigned long long c, u, p, f;
    if (!u64_at2(dev, "remapped_rows", "correctable", &c) ||
        !u64_at2(dev, "remapped_rows", "uncorrectable", &u) ||
        !u64_at2(dev, "remapped_rows", "pending", &p) ||
        !u64_at2(dev, "remapped_rows", "failure", &f))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *corr = (unsigned)c;
    *unc = (unsigned)u;
    *pending = p ? 1 : 0;
    *failure = f ? 1 : 0;
    ANSWER(NVML_SUCCESS);
}

/* ---------------------------------------------------------------------------------------
 * Field values */

static void field_value(const struct json *dev, nvmlFieldValue_t *fv, long long now_us)
{
    unsigned long long v;
    fv->timestamp = now_us;
    fv->latencyUsec = 0;
    fv->nvmlReturn = NVML_SUCCESS;
    memset(&fv->value, 0, sizeof fv->value);
    switch (fv->fieldId) {
    case NVML_FI_DEV_MEMORY_TEMP:
        if (u64_at(dev, "memory_temperature_c", &v)) {
            fv->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
            fv->value.uiVal = (unsigned)v;
            return;
        }
        break;
    case NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION:
        if (u64_at(dev, "energy_mj", &v)) {
            fv->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
            fv->value.ullVal = v;
            return;
        }
        break;
    case NVML_FI_DEV_POWER_AVERAGE:
    case NVML_FI_DEV_POWER_INSTANT:
        if (u64_at(dev, "power_mw", &v)) {
            fv->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
            fv->value.uiVal = (unsigned)v;
            return;
        }
        break;
    case NVML_FI_DEV_PCIE_REPLAY_COUNTER:
        if (u64_at2(dev, "pcie", "replay_counter", &v)) {
            fv->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
            fv->value.ullVal = v;
            return;
        }
        break;
    case NVML_FI_DEV_GET_GPU_RECOVERY_ACTION:
        if (u64_at(dev, "recovery_action", &v)) {
            fv->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
            fv->value.uiVal = (unsigned)v;
            return;
        }
        break;
    case NVML_FI_DEV_ECC_CURRENT:
    case NVML_FI_DEV_ECC_PENDING: {
        const struct json *ecc = json_get(dev, "ecc");
        if (ecc && ecc->type == JSON_OBJECT) {
            fv->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
            fv->value.uiVal = 1;
            return;
        }
        break;
    }
    default:
        break;
    }
    fv->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
    fv->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
}

EXPORT nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int count,
                                             nvmlFieldValue_t *values)
{
    DEVICE_CALL("nvmlDeviceGetFieldValues", values && count >= 0);
    long long now = realtime_us();
    for (int i = 0; i < count; i++)
        field_value(dev, &values[i], now);
    ANSWER(NVML_SUCCESS);
}

/* ---------------------------------------------------------------------------------------
 * Processes */

static const struct json *process_list(const struct json *dev)
{
    const struct json *procs = json_get(dev, "processes");
    return procs && procs->type == JSON_ARRAY ? procs : NULL;
}

static int process_is(const struct json *proc, const char *kind)
{
    const char *k = str_at(proc, "kind");
    return strcmp(k ? k : "compute", kind) == 0;
}

/* NVML's two-call protocol: a short (or NULL) buffer answers INSUFFICIENT_SIZE with the count
 * needed; no processes at all answers SUCCESS with a count of 0. */
static nvmlReturn_t running_processes(nvmlDevice_t device, const char *fn, const char *kind,
                                      unsigned int *count, void *infos, int version)
{
    DEVICE_CALL(fn, count);
    const struct json *procs = process_list(dev);
    if (!procs)
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    unsigned needed = 0;
    for (size_t i = 0; i < procs->count; i++)
        needed += process_is(procs->items[i], kind);
    if (needed == 0) {
        *count = 0;
        ANSWER(NVML_SUCCESS);
    }
    if (!infos || *count < needed) {
        *count = needed;
        ANSWER(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    unsigned n = 0;
    for (size_t i = 0; i < procs->count; i++) {
        const struct json *proc = procs->items[i];
        if (!process_is(proc, kind))
            continue;
        unsigned long long pid = 0, mem;
        u64_at(proc, "pid", &pid);
        if (!u64_at(proc, "used_memory_bytes", &mem))
            mem = NVML_VALUE_NOT_AVAILABLE_ULL;
        if (version == 1) {
            nvmlProcessInfo_v1_t *out = (nvmlProcessInfo_v1_t *)infos + n;
            out->pid = (unsigned)pid;
            out->usedGpuMemory = mem;
        } else {
            nvmlProcessInfo_v2_t *out = (nvmlProcessInfo_v2_t *)infos + n;
            out->pid = (unsigned)pid;
            out->usedGpuMemory = mem;
            out->gpuInstanceId = NVML_NO_INSTANCE_ID;
            out->computeInstanceId = NVML_NO_INSTANCE_ID;
        }
        n++;
    }
    *count = n;
    ANSWER(NVML_SUCCESS);
}

#define PROCESS_CALLS(Name, fn, kind)                                                         \
    EXPORT nvmlReturn_t Name##_v3(nvmlDevice_t device, unsigned int *count,                   \
                                  nvmlProcessInfo_v2_t *infos)                                \
    {                                                                                         \
        return running_processes(device, fn, kind, count, infos, 2);                          \
    }                                                                                         \
    EXPORT nvmlReturn_t Name##_v2(nvmlDevice_t device, unsigned int *count,                   \
                                  nvmlProcessInfo_v2_t *infos)                                \
    {                                                                                         \
        return running_processes(device, fn, kind, count, infos, 2);                          \
    }                                                                                         \
    EXPORT nvmlReturn_t Name(nvmlDevice_t device, unsigned int *count,                        \
                             nvmlProcessInfo_v1_t *infos)                                     \
    {                                                                                         \
        return running_processes(device, fn, kind, count, infos, 1);                          \
    }

PROCESS_CALLS(nvmlDeviceGetComputeRunningProcesses, "nvmlDeviceGetComputeRunningProcesses",
              "compute")
PROCESS_CALLS(nvmlDeviceGetGraphicsRunningProcesses, "nvmlDeviceGetGraphicsRunningProcesses",
              "graphics")
PROCESS_CALLS(nvmlDeviceGetMPSComputeRunningProcesses,
              "nvmlDeviceGetMPSComputeRunningProcesses", "mps")

/* One sample per process that has sm_util_percent; no samples answers NOT_FOUND as NVML does
 * when nothing ran since lastSeenTimeStamp. */
EXPORT nvmlReturn_t nvmlDeviceGetProcessUtilization(nvmlDevice_t device,
                                                    nvmlProcessUtilizationSample_t *samples,
                                                    unsigned int *count,
                                                    unsigned long long last_seen_us)
{
    DEVICE_CALL("nvmlDeviceGetProcessUtilization", count);
    const struct json *procs = process_list(dev);
    if (!procs)
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    long long now = realtime_us();
    unsigned needed = 0;
    for (size_t i = 0; i < procs->count; i++) {
        unsigned long long v;
        needed += u64_at(procs->items[i], "sm_util_percent", &v);
    }
    if (needed == 0 || (unsigned long long)now <= last_seen_us) {
        *count = 0;
        ANSWER(NVML_ERROR_NOT_FOUND);
    }
    if (!samples || *count < needed) {
        *count = needed;
        ANSWER(NVML_ERROR_INSUFFICIENT_SIZE);
    }
    unsigned n = 0;
    for (size_t i = 0; i < procs->count; i++) {
        const struct json *proc = procs->items[i];
        unsigned long long sm, pid = 0, v;
        if (!u64_at(proc, "sm_util_percent", &sm))
            continue;
        u64_at(proc, "pid", &pid);
        nvmlProcessUtilizationSample_t *s = &samples[n++];
        s->pid = (unsigned)pid;
        s->timeStamp = (unsigned long long)now;
        s->smUtil = (unsigned)sm;
        s->memUtil = u64_at(proc, "mem_util_percent", &v) ? (unsigned)v : 0;
        s->encUtil = u64_at(proc, "enc_util_percent", &v) ? (unsigned)v : 0;
        s->decUtil = u64_at(proc, "dec_util_percent", &v) ? (unsigned)v : 0;
    }
    *count = n;
    ANSWER(NVML_SUCCESS);
}

/* ---------------------------------------------------------------------------------------
 * Modes a consumer card reports (for tools such as nvitop) */

static nvmlReturn_t enable_state(nvmlDevice_t device, const char *fn, const char *key,
                                 int default_value, nvmlEnableState_t *out)
{
    DEVICE_CALL(fn, out);
    const struct json *v = json_get(dev, key);
    if (v && v->type == JSON_NULL)
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *out = (v ? is_true(v) : default_value) ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t *mode)
{
    return enable_state(device, "nvmlDeviceGetPersistenceMode", "persistence_mode", 1, mode);
}
EXPORT nvmlReturn_t nvmlDeviceGetDisplayMode(nvmlDevice_t device, nvmlEnableState_t *mode)
{
    return enable_state(device, "nvmlDeviceGetDisplayMode", "display_active", 0, mode);
}
EXPORT nvmlReturn_t nvmlDeviceGetDisplayActive(nvmlDevice_t device, nvmlEnableState_t *mode)
{
    return enable_state(device, "nvmlDeviceGetDisplayActive", "display_active", 0, mode);
}

EXPORT nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major,
                                                       int *minor)
{
    DEVICE_CALL("nvmlDeviceGetCudaComputeCapability", major && minor);
    unsigned long long ma = 8, mi = 9;
    u64_at(dev, "compute_capability_major", &ma);
    u64_at(dev, "compute_capability_minor", &mi);
    *major = (int)ma;
    *minor = (int)mi;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *is_mig)
{
    DEVICE_CALL("nvmlDeviceIsMigDeviceHandle", is_mig);
    *is_mig = 0;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count)
{
    DEVICE_CALL("nvmlDeviceGetMaxMigDeviceCount", count);
    *count = 0;
    ANSWER(NVML_SUCCESS);
}

/* ---------------------------------------------------------------------------------------
 * Events (Xid) */

static struct xid_cursor *xid_cursor_for(unsigned slot)
{
    char key[UUID_LEN];
    if (g_slots[slot].uuid[0])
        copy_str(key, sizeof key, g_slots[slot].uuid);
    else
        snprintf(key, sizeof key, "#%u", g_slots[slot].position);
    for (unsigned i = 0; i < g_xid_count; i++) {
        if (strcmp(g_xid[i].key, key) == 0)
            return &g_xid[i];
    }
    if (g_xid_count == sizeof g_xid / sizeof g_xid[0])
        return NULL;
    struct xid_cursor *c = &g_xid[g_xid_count++];
    copy_str(c->key, sizeof c->key, key);
    c->delivered = 0;
    return c;
}

static const struct json *xid_list(const struct json *dev)
{
    const struct json *xids = json_get(dev, "xid_events");
    return xids && xids->type == JSON_ARRAY ? xids : NULL;
}

static int valid_set(nvmlEventSet_t set)
{
    return set && set->magic == EVENT_SET_MAGIC;
}

EXPORT nvmlReturn_t nvmlEventSetCreate(nvmlEventSet_t *set)
{
    SYSTEM_CALL("nvmlEventSetCreate", set);
    struct fake_event_set *s = calloc(1, sizeof *s);
    if (!s)
        ANSWER(NVML_ERROR_MEMORY);
    s->magic = EVENT_SET_MAGIC;
    *set = s;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlEventSetFree(nvmlEventSet_t set)
{
    lock();
    if (g_refcount <= 0)
        ANSWER(NVML_ERROR_UNINITIALIZED);
    if (!valid_set(set))
        ANSWER(NVML_ERROR_INVALID_ARGUMENT);
    set->magic = 0;
    free(set);
    ANSWER(NVML_SUCCESS);
}

/* Xid events are the only kind the scenario produces; the others are accepted so a caller
 * registering a common mask does not fail. */
#define SUPPORTED_EVENT_TYPES \
    (nvmlEventTypeXidCriticalError | nvmlEventTypePState | nvmlEventTypeClock)

EXPORT nvmlReturn_t nvmlDeviceGetSupportedEventTypes(nvmlDevice_t device,
                                                     unsigned long long *types)
{
    DEVICE_CALL("nvmlDeviceGetSupportedEventTypes", types);
    if (!xid_list(dev))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *types = SUPPORTED_EVENT_TYPES;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types,
                                             nvmlEventSet_t set)
{
    DEVICE_CALL("nvmlDeviceRegisterEvents", valid_set(set));
    if (!xid_list(dev) || (types & ~SUPPORTED_EVENT_TYPES))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    for (unsigned i = 0; i < set->count; i++) {
        if (set->regs[i].slot == dev_index) {
            set->regs[i].mask |= types;
            ANSWER(NVML_SUCCESS);
        }
    }
    if (set->count == MAX_DEVICES)
        ANSWER(NVML_ERROR_INSUFFICIENT_RESOURCES);
    set->regs[set->count].slot = dev_index;
    set->regs[set->count].mask = types;
    set->count++;
    ANSWER(NVML_SUCCESS);
}

/* The next undelivered Xid on any card registered in set, in card order; lock held. */
static int next_xid(nvmlEventSet_t set, unsigned *slot_out, unsigned long long *code_out)
{
    for (unsigned i = 0; i < set->count; i++) {
        unsigned slot = set->regs[i].slot;
        if (!(set->regs[i].mask & nvmlEventTypeXidCriticalError) || slot >= g_slot_count)
            continue;
        const struct json *xids = xid_list(g_slot_dev[slot]);
        struct xid_cursor *cursor = xid_cursor_for(slot);
        if (!xids || !cursor)
            continue;
        /* A list rewritten shorter starts over from its new end. */
        if (cursor->delivered > xids->count)
            cursor->delivered = xids->count;
        while (cursor->delivered < xids->count) {
            unsigned long long code;
            const struct json *item = xids->items[cursor->delivered++];
            if (json_to_u64(item, &code)) {
                *slot_out = slot;
                *code_out = code;
                return 1;
            }
        }
    }
    return 0;
}

static nvmlReturn_t event_wait(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int timeout_ms,
                               int version)
{
    long long deadline = monotonic_ns() + (long long)timeout_ms * 1000000LL;
    while (1) {
        lock();
        if (g_refcount <= 0)
            ANSWER(NVML_ERROR_UNINITIALIZED);
        if (!valid_set(set) || !data)
            ANSWER(NVML_ERROR_INVALID_ARGUMENT);
        reload_if_changed(0);
        unsigned slot;
        unsigned long long code;
        if (next_xid(set, &slot, &code)) {
            data->device = &g_slots[slot];
            data->eventType = nvmlEventTypeXidCriticalError;
            data->eventData = code;
            if (version == 2) {
                data->gpuInstanceId = NVML_NO_INSTANCE_ID;
                data->computeInstanceId = NVML_NO_INSTANCE_ID;
            }
            ANSWER(NVML_SUCCESS);
        }
        unlock();
        long long left_ns = deadline - monotonic_ns();
        if (left_ns <= 0)
            return NVML_ERROR_TIMEOUT;
        long long step_ms = left_ns / 1000000LL + 1;
        sleep_ms((unsigned long long)(step_ms < EVENT_POLL_MS ? step_ms : EVENT_POLL_MS));
    }
}

EXPORT nvmlReturn_t nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data,
                                        unsigned int timeout_ms)
{
    return event_wait(set, data, timeout_ms, 2);
}
EXPORT nvmlReturn_t nvmlEventSetWait(nvmlEventSet_t set, nvmlEventData_v1_t *data,
                                     unsigned int timeout_ms)
{
    return event_wait(set, (nvmlEventData_t *)data, timeout_ms, 1);
}

/* ---------------------------------------------------------------------------------------
 * GPM: Hopper's profiling metrics. A card supports them when its scenario entry has a "gpm"
 * object; nvmlGpmMetricsGet answers each requested metric from that object (the scenario's
 * value at the moment of the request, for the pair of samples given), NOT_SUPPORTED for a
 * metric it does not hold. Samples are checked as NVML checks them: allocated here, taken on
 * one card, the second later than the first. */

#define GPM_SAMPLE_MAGIC 0x47504d31u

struct fake_gpm_sample {
    unsigned magic;
    int taken;
    unsigned slot;
    long long at_ns;
};

static const struct {
    unsigned id;
    const char *key;
} GPM_KEYS[] = {
    {1, "graphics_util"},     {2, "sm_util"},          {3, "sm_occupancy"},
    {4, "integer_util"},      {5, "any_tensor_util"},  {6, "dfma_tensor_util"},
    {7, "hmma_tensor_util"},  {9, "imma_tensor_util"}, {10, "dram_bw_util"},
    {11, "fp64_util"},        {12, "fp32_util"},       {13, "fp16_util"},
    {20, "pcie_tx_per_sec"},  {21, "pcie_rx_per_sec"}, {60, "nvlink_total_rx_per_sec"},
    {61, "nvlink_total_tx_per_sec"},
};

static const struct json *gpm_of(const struct json *dev)
{
    const struct json *gpm = json_get(dev, "gpm");
    return gpm && gpm->type == JSON_OBJECT ? gpm : NULL;
}

static int gpm_sample_ok(const struct fake_gpm_sample *sample)
{
    return sample && sample->magic == GPM_SAMPLE_MAGIC;
}

EXPORT nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t device, nvmlGpmSupport_t *support)
{
    DEVICE_CALL("nvmlGpmQueryDeviceSupport", support);
    if (support->version != NVML_GPM_SUPPORT_VERSION)
        ANSWER(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    support->isSupportedDevice = gpm_of(dev) != NULL;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *sample)
{
    SYSTEM_CALL("nvmlGpmSampleAlloc", sample);
    struct fake_gpm_sample *made = calloc(1, sizeof *made);
    if (!made)
        ANSWER(NVML_ERROR_MEMORY);
    made->magic = GPM_SAMPLE_MAGIC;
    *sample = made;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t sample)
{
    SYSTEM_CALL("nvmlGpmSampleFree", gpm_sample_ok(sample));
    sample->magic = 0;
    free(sample);
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t device, nvmlGpmSample_t sample)
{
    DEVICE_CALL("nvmlGpmSampleGet", gpm_sample_ok(sample));
    if (!gpm_of(dev))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    sample->taken = 1;
    sample->slot = dev_index;
    sample->at_ns = monotonic_ns();
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *request)
{
    SYSTEM_CALL("nvmlGpmMetricsGet", request);
    if (request->version != NVML_GPM_METRICS_GET_VERSION)
        ANSWER(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    const struct fake_gpm_sample *first = request->sample1, *second = request->sample2;
    if (!gpm_sample_ok(first) || !gpm_sample_ok(second) || !first->taken || !second->taken ||
        first->slot != second->slot || second->at_ns <= first->at_ns ||
        first->slot >= g_slot_count)
        ANSWER(NVML_ERROR_INVALID_ARGUMENT);
    const struct json *gpm = gpm_of(g_slot_dev[first->slot]);
    if (!gpm)
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    for (unsigned i = 0; i < request->numMetrics; i++) {
        nvmlGpmMetric_t *metric = &request->metrics[i];
        metric->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        metric->value = 0;
        for (size_t k = 0; k < sizeof GPM_KEYS / sizeof GPM_KEYS[0]; k++) {
            if (GPM_KEYS[k].id != metric->metricId)
                continue;
            const struct json *v = json_get(gpm, GPM_KEYS[k].key);
            if (v && v->type == JSON_NUMBER) {
                metric->value = v->number;
                metric->nvmlReturn = NVML_SUCCESS;
            }
        }
    }
    ANSWER(NVML_SUCCESS);
}

/* ---------------------------------------------------------------------------------------
 * Identity, modes and health beyond the readings: VBIOS, board part number, InfoROM versions,
 * compute and MIG mode, application clocks, retired pages, encoder statistics, NVLink. Each
 * answers NOT_SUPPORTED when its scenario field is absent or null, as a card without it does. */

EXPORT nvmlReturn_t nvmlDeviceGetVbiosVersion(nvmlDevice_t device, char *version,
                                              unsigned int length)
{
    return string_field(device, "nvmlDeviceGetVbiosVersion", "vbios_version", version, length);
}

EXPORT nvmlReturn_t nvmlDeviceGetBoardPartNumber(nvmlDevice_t device, char *part,
                                                 unsigned int length)
{
    return string_field(device, "nvmlDeviceGetBoardPartNumber", "board_part_number", part,
                        length);
}

EXPORT nvmlReturn_t nvmlDeviceGetInforomImageVersion(nvmlDevice_t device, char *version,
                                                     unsigned int length)
{
    return string_field(device, "nvmlDeviceGetInforomImageVersion", "inforom_image_version",
                        version, length);
}

EXPORT nvmlReturn_t nvmlDeviceGetInforomVersion(nvmlDevice_t device, int object, char *version,
                                                unsigned int length)
{
    DEVICE_CALL("nvmlDeviceGetInforomVersion", version);
    static const char *const OBJECTS[] = {"oem", "ecc", "power"}; /* nvmlInforomObject_t */
    if (object < 0 || object > 2)
        ANSWER(NVML_ERROR_INVALID_ARGUMENT);
    const char *v = str_at(json_get(dev, "inforom_versions"), OBJECTS[object]);
    if (!v)
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    ANSWER(put_string(version, length, v));
}

EXPORT nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t device, nvmlComputeMode_t *mode)
{
    DEVICE_CALL("nvmlDeviceGetComputeMode", mode);
    unsigned long long v = 0; /* NVML_COMPUTEMODE_DEFAULT when the scenario says nothing */
    const struct json *given = json_get(dev, "compute_mode");
    if (given && given->type == JSON_NULL)
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    if (given)
        u64_at(dev, "compute_mode", &v);
    *mode = (nvmlComputeMode_t)v;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current,
                                         unsigned int *pending)
{
    DEVICE_CALL("nvmlDeviceGetMigMode", current && pending);
    unsigned long long cur, pend; /* MIG is a datacenter feature: absent, NOT_SUPPORTED */
    if (!u64_at2(dev, "mig_mode", "current", &cur) || !u64_at2(dev, "mig_mode", "pending", &pend))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *current = (unsigned)cur;
    *pending = (unsigned)pend;
    ANSWER(NVML_SUCCESS);
}

static nvmlReturn_t applications_clock(nvmlDevice_t device, const char *fn, const char *key,
                                       int type, unsigned int *mhz)
{
    DEVICE_CALL(fn, mhz && clock_key((nvmlClockType_t)type));
    unsigned long long v;
    if (!u64_at2(dev, key, clock_key((nvmlClockType_t)type), &v))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *mhz = (unsigned)v;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetApplicationsClock(nvmlDevice_t device, int type,
                                                   unsigned int *mhz)
{
    return applications_clock(device, "nvmlDeviceGetApplicationsClock",
                              "applications_clocks_mhz", type, mhz);
}

EXPORT nvmlReturn_t nvmlDeviceGetDefaultApplicationsClock(nvmlDevice_t device, int type,
                                                          unsigned int *mhz)
{
    return applications_clock(device, "nvmlDeviceGetDefaultApplicationsClock",
                              "default_applications_clocks_mhz", type, mhz);
}

/* Retired pages (before Ampere; newer cards remap rows instead): NVML's two-call protocol,
 * the count first, then that many addresses (made up, distinct). */
EXPORT nvmlReturn_t nvmlDeviceGetRetiredPages(nvmlDevice_t device, int cause,
                                              unsigned int *count, unsigned long long *addresses)
{
    DEVICE_CALL("nvmlDeviceGetRetiredPages", count && (cause == 0 || cause == 1));
    unsigned long long n;
    if (!u64_at2(dev, "retired_pages", cause == 0 ? "single_bit" : "double_bit", &n))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    if (!addresses || *count < n) {
        *count = (unsigned)n;
        ANSWER(n ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS);
    }
    for (unsigned long long i = 0; i < n; i++)
        addresses[i] = 0x100000ULL * (i + 1) + (unsigned long long)cause;
    *count = (unsigned)n;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(nvmlDevice_t device,
                                                           nvmlEnableState_t *pending)
{
    DEVICE_CALL("nvmlDeviceGetRetiredPagesPendingStatus", pending);
    unsigned long long v;
    if (!u64_at2(dev, "retired_pages", "pending", &v))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *pending = v ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetEncoderStats(nvmlDevice_t device, unsigned int *sessions,
                                              unsigned int *fps, unsigned int *latency_us)
{
    DEVICE_CALL("nvmlDeviceGetEncoderStats", sessions && fps && latency_us);
    unsigned long long s, f, l;
    if (!u64_at2(dev, "encoder_stats", "sessions", &s) ||
        !u64_at2(dev, "encoder_stats", "fps", &f) ||
        !u64_at2(dev, "encoder_stats", "latency_us", &l))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    *sessions = (unsigned)s;
    *fps = (unsigned)f;
    *latency_us = (unsigned)l;
    ANSWER(NVML_SUCCESS);
}

/* NVLink: "nvlinks" lists the card's links, each {"up": bool, "replay", "recovery",
 * "crc_flit", "crc_data": counts}; no list: NOT_SUPPORTED; a link past it: INVALID_ARGUMENT. */
static const struct json *nvlink(const struct json *dev, unsigned link, nvmlReturn_t *rc)
{
    const struct json *links = json_get(dev, "nvlinks");
    if (!links || links->type != JSON_ARRAY) {
        *rc = NVML_ERROR_NOT_SUPPORTED;
        return NULL;
    }
    if (link >= links->count) {
        *rc = NVML_ERROR_INVALID_ARGUMENT;
        return NULL;
    }
    *rc = NVML_SUCCESS;
    return links->items[link];
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link,
                                             nvmlEnableState_t *active)
{
    DEVICE_CALL("nvmlDeviceGetNvLinkState", active);
    nvmlReturn_t rc;
    const struct json *l = nvlink(dev, link, &rc);
    if (!l)
        ANSWER(rc);
    *active = is_true(json_get(l, "up")) ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    ANSWER(NVML_SUCCESS);
}

EXPORT nvmlReturn_t nvmlDeviceGetNvLinkErrorCounter(nvmlDevice_t device, unsigned int link,
                                                    int counter, unsigned long long *value)
{
    DEVICE_CALL("nvmlDeviceGetNvLinkErrorCounter", value);
    static const char *const COUNTERS[] = {"replay", "recovery", "crc_flit", "crc_data"};
    if (counter < 0 || counter > 3)
        ANSWER(NVML_ERROR_INVALID_ARGUMENT);
    nvmlReturn_t rc;
    const struct json *l = nvlink(dev, link, &rc);
    if (!l)
        ANSWER(rc);
    if (!u64_at(l, COUNTERS[counter], value))
        ANSWER(NVML_ERROR_NOT_SUPPORTED);
    ANSWER(NVML_SUCCESS);
}

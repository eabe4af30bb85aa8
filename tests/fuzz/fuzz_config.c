/* The configuration parsers of lib/ps and the transports: EFPS_SERVERS and
 * the other EFPS_* / launcher variables through efps_ps_config_resolve, the
 * server list split (ps_count_servers, ps_server_entry) and host:port
 * parsing (efps__tp_parse_addr).
 * Input: values separated by newlines, one per variable of vars[] in order;
 * an empty line leaves that variable unset. */
#include "fuzz.h"

#include "lib/ps/ps_int.h"
#include "transport/transport_int.h"

#include <dlfcn.h>
#include <netdb.h>
#include <string.h>

static const char *const vars[] = {
    "EFPS_SERVERS",
    "EFPS_ROLE",
    "EFPS_RANK",
    "EFPS_NUM_WORKERS",
    "EFPS_COMPRESSOR",
    "EFPS_BLOCK",
    "EFPS_PARTITION_BYTES",
    "EFPS_TIMEOUT_MS",
    "EFPS_BIND",
    "OMPI_COMM_WORLD_RANK",
    "OMPI_COMM_WORLD_SIZE",
    "EFPS_TRANSPORT",
    "EFPS_SECRET",
};
#define NVARS (sizeof(vars) / sizeof(vars[0]))

/* Names are never looked up while fuzzing (no traffic leaves the machine):
 * getaddrinfo here takes numeric hosts only, then does what libc does. */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
    static gai_fn real;
    if (real == NULL)
        real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    struct addrinfo h = hints != NULL ? *hints : (struct addrinfo){0};
    h.ai_flags |= AI_NUMERICHOST;
    return real(node, service, &h, res);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* only what the input sets */
    for (char **e = environ; *e != NULL;)
        if (strncmp(*e, "EFPS_", 5) == 0 || strncmp(*e, "OMPI_", 5) == 0 ||
            strncmp(*e, "SLURM_", 6) == 0 || strncmp(*e, "RANK=", 5) == 0 ||
            strncmp(*e, "WORLD_SIZE=", 11) == 0) {
            char name[256];
            size_t len = strcspn(*e, "=");
            snprintf(name, sizeof(name), "%.*s", (int)len, *e);
            unsetenv(name);
        } else {
            e++;
        }
    return 0;
}

static void check_list(const char *list)
{
    int n = ps_count_servers(list);
    if (n < 1)
        abort();
    for (int i = 0; i < n && i < 64; i++) {
        char entry[256];
        ps_server_entry(list, i, entry, sizeof(entry));
        struct sockaddr_storage ss;
        socklen_t len;
        efps__tp_parse_addr(entry, false, &ss, &len);
        efps__tp_parse_addr(entry, true, &ss, &len);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    char *p = text;
    for (size_t i = 0; i < NVARS; i++) {
        char *nl = p != NULL ? strchr(p, '\n') : NULL;
        if (nl != NULL)
            *nl = '\0';
        if (p != NULL && *p != '\0')
            setenv(vars[i], p, 1);
        else
            unsetenv(vars[i]);
        p = nl != NULL ? nl + 1 : NULL;
    }
    efps_ps_config_t out;
    if (efps_ps_config_resolve(NULL, &out) == EFPS_OK) {
        check_list(out.servers);
        if (out.bind != NULL) {
            struct sockaddr_storage ss;
            socklen_t len;
            efps__tp_parse_addr(out.bind, true, &ss, &len);
        }
    }
    free(text);
    return 0;
}

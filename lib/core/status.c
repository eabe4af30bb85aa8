/* Status codes: messages and names from the one X-macro in core.h. */
#include "efps/core.h"

const char *efps_strerror(efps_status_t status)
{
    switch (status) {
#define MSG(name, value, msg)                                                                      \
    case EFPS_##name:                                                                              \
        return msg;
        EFPS_STATUS_MAP(MSG)
#undef MSG
    }
    return "unknown status";
}

const char *efps_status_name(efps_status_t status)
{
    switch (status) {
#define NAME(name, value, msg)                                                                     \
    case EFPS_##name:                                                                              \
        return "EFPS_" #name;
        EFPS_STATUS_MAP(NAME)
#undef NAME
    }
    return "EFPS_UNKNOWN";
}

/* The version of this build of the library (efps/version.h is generated). */
#include "efps/core.h"

const char *efps_version(void)
{
    return EFPS_VERSION_STRING;
}

unsigned efps_version_number(void)
{
    return EFPS_VERSION_NUMBER;
}

/* The wire protocol version, for efps-info and for programs that check a
 * cluster before starting it (peers of different versions refuse each other). */
#include "ps_int.h"

unsigned efps_ps_protocol_version(void)
{
    return PS_PROTO_VERSION;
}
